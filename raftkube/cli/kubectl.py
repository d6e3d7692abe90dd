"""kubectl's commands in `rk`, gathered: each lives in its own module and is added here.

`register(group)` adds them to a click group (`rk`'s `main`). The clock is an argument
so that tests see fixed AGE columns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import click

from raftkube.cli import (
    apply,
    create,
    delete,
    describe,
    diff,
    discovery,
    edit,
    get,
    labels,
    nodes,
    patch,
    rollout,
    wait,
)
from raftkube.cli.session import utcnow

MODULES = (apply, get, delete, describe, discovery, create, edit, patch, labels, diff,
           rollout, wait, nodes)


def register(group: click.Group, *, clock: Callable[[], datetime] = utcnow) -> None:
    """Add every kubectl-like command to `group`; `clock` is what AGE is measured from."""
    for module in MODULES:
        for command in module.commands(clock):
            group.add_command(command)
