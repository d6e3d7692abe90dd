"""The cloud loops, made for the leader's task group.

`rk master --cloud-provider NAME` loads the provider once at start (provider.load) and
adds `loops(ctx)` to the leader's loops (cli/master.py): they start and stop with the
scheduler and the other controllers, share their informers, client (stamped with the
leader's term) and event recorder, and run the same out of process.
"""

from __future__ import annotations

from typing import Any

from raftkube.cloud import context, node, service


def loops(ctx: context.Context) -> list[Any]:
    return [service.ServiceController(ctx), node.NodeController(ctx)]
