"""Placeholder with the checker's interface (replaced by branch `lin`): checks nothing."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Op:
    client: int
    key: str
    kind: Literal["put", "get", "cas"]
    value: str | None = None
    expected: str | None = None
    result: str | bool | None = None
    invoked: float = 0.0
    completed: float | None = None
@dataclass
class Verdict:
    linearizable: bool | None
    key: str | None
    history: list[dict[str, Any]]
    keys: int
    ops: int
    explanation: str
def check(ops: Iterable[Op], *, timeout: float = 30.0) -> Verdict:
    ops = list(ops)
    return Verdict(None, None, [], len({o.key for o in ops}), len(ops), "placeholder: not checked")
