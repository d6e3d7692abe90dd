"""`rk apply --wait`: live progress until every applied object is rolled out or ready.

- `Board` is the display, pure: one line per object, in the order applied. On a terminal
  (`tty`) the whole board is drawn once and then redrawn in place with ANSI cursor moves
  whenever a line changes; elsewhere (a pipe, a CI log) a line is printed only when an
  object's state changes, so a log reads as a history, not a flood.
- `wait_ready` drives it: each object not yet done is read again every `POLL` seconds
  (kubectl's rollout status watches; a read every half second of the few objects one
  apply wrote is cheaper than a watch per kind and survives a master's failover the
  same way every other request does) and judged by `check` (readiness.status's words),
  until all are done or `timeout` passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import kinds
from raftkube.client import errors, rest

Obj = dict[str, Any]
POLL = 0.5  # seconds between reads of one object
UP = "\x1b[{}A"  # cursor up N lines
CLEAR = "\x1b[2K"  # erase the whole line

# (kind, live object) -> (done, message); raises WaitFailed when it can never be ready.
Check = Callable[[kinds.Kind, Obj], tuple[bool, str]]


class WaitFailed(errors.ClientError):
    """An object will not become ready (a failed Job): waiting longer cannot help."""


@dataclass
class Line:
    ref: str
    message: str = "waiting"
    done: bool = False


@dataclass
class Board:
    tty: bool
    lines: list[Line] = field(default_factory=list)
    _drawn: int = 0  # lines drawn last time (tty)

    def add(self, ref: str) -> None:
        self.lines.append(Line(ref))

    def update(self, ref: str, *, message: str, done: bool) -> bool:
        """Set one object's state; whether it changed."""
        for line in self.lines:
            if line.ref == ref:
                changed = (line.message, line.done) != (message, done)
                line.message, line.done = message, done
                return changed
        raise KeyError(ref)

    def text(self, line: Line) -> str:
        if not self.tty:
            return f"{line.ref}: {line.message}"
        return f"{'✓' if line.done else '…'} {line.ref}: {line.message}"

    def draw(self, changed: Sequence[str] | None = None) -> str:
        """What to write now. On a tty: the board, over the one drawn before; else the
        lines of `changed` (every line when None)."""
        if not self.tty:
            wanted = [line for line in self.lines if changed is None or line.ref in changed]
            return "".join(self.text(line) + "\n" for line in wanted)
        out = UP.format(self._drawn) if self._drawn else ""
        out += "".join(f"\r{CLEAR}{self.text(line)}\n" for line in self.lines)
        self._drawn = len(self.lines)
        return out

    def pending(self) -> list[Line]:
        return [line for line in self.lines if not line.done]


@dataclass(frozen=True)
class Target:
    kind: kinds.Kind
    namespace: str
    name: str
    ref: str


async def wait_ready(client: rest.RestClient, targets: Sequence[Target], *, timeout: float,
                     check: Check, write: Callable[[str], None], tty: bool,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
                     ) -> list[Line]:
    """Until every target is done or `timeout` seconds pass; the lines not done (empty
    when all are). A failed object (WaitFailed) ends the wait at once with that error."""
    board = Board(tty=tty)
    for t in targets:
        board.add(t.ref)
    deadline = clock() + timeout
    first = True
    while True:
        changed = []
        # by position, not by ref: each target has its own line even where refs repeat
        for t, line in zip(targets, board.lines, strict=True):
            if line.done:
                continue
            try:
                obj = await client.get(t.kind, t.namespace, t.name)
            except errors.ApiError as e:
                if e.code != 404:
                    raise
                done, message = False, "not found (yet)"
            else:
                done, message = check(t.kind, obj)
            if (line.message, line.done) != (message, done):
                line.message, line.done = message, done
                changed.append(line.ref)
        if first or changed:
            write(board.draw(None if first else changed))
            first = False
        left = deadline - clock()
        if not board.pending() or left <= 0:
            return board.pending()
        await sleep(min(POLL, left))
