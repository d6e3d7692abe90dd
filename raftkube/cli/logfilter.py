"""A logging filter that lets a repeated line through a few times per window, not always.

Under attack or overload the same line repeats at the rate of the attack: asyncio's
"socket.accept() out of system resource" with its traceback filled 178 MB in a minute and
a half when descriptors ran out, and a line per dropped peer or refused connection would
do the same. Lines are grouped by logger, level and the message's format string (its first
line: asyncio puts details on the next ones); each group may log `burst` lines per `window`
seconds, the first of them with its traceback and the others without; the first line
after a quiet spell says how many were left out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

MAX_GROUPS = 1000  # groups remembered; beyond that, stale ones are forgotten


@dataclass
class _Group:
    started: float
    passed: int = 0
    dropped: int = 0


class RepeatFilter(logging.Filter):
    def __init__(self, *, burst: int = 5, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        self._groups: dict[tuple[str, int, str], _Group] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg).split("\n", 1)[0])
        now = self.clock()
        group = self._groups.get(key)
        left_out = 0
        if group is None or now - group.started >= self.window:
            left_out = group.dropped if group is not None else 0
            group = _Group(started=now)
            if len(self._groups) >= MAX_GROUPS:
                self._forget(now)
            self._groups[key] = group
        if group.passed >= self.burst:
            group.dropped += 1
            return False
        group.passed += 1
        if group.passed > 1 and record.exc_info:
            record.msg, record.args = record.getMessage() + " (traceback as above)", None
            record.exc_info = record.exc_text = None
        if left_out:
            record.msg, record.args = (
                record.getMessage() + f" ({left_out} similar lines were not logged)", None)
        return True

    def _forget(self, now: float) -> None:
        for key, group in list(self._groups.items()):
            if now - group.started >= self.window:
                del self._groups[key]
        if len(self._groups) >= MAX_GROUPS:
            self._groups.clear()


def install(*, burst: int = 5, window: float = 10.0) -> None:
    """Put the filter on every handler of the root logger (after basicConfig)."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter(burst=burst, window=window))
