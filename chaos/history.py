"""What a chaos run saw: every client operation with its outcome, and every fault.

Times are `time.monotonic()` seconds; `History.start` is the run's zero, so that the
report and the plot speak of seconds since the start. Outcomes are Jepsen's: `ok` (the
server acknowledged it), `fail` (it certainly did not happen: the connection was refused,
or the server refused it before proposing it), `info` (unknown: the answer timed out or
the connection broke after the request was sent, so it may have happened, now or later).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Outcome = Literal["ok", "fail", "info"]


@dataclass
class Sample:
    """One client operation, for the plot and the failover figures."""

    kind: str  # put, get, cas, fenced-put, http
    server: str
    invoked: float
    completed: float
    outcome: Outcome
    error: str = ""


@dataclass
class Fault:
    kind: str  # kill, pause, partition, ...
    target: str  # a member, several (comma-separated) or "all"
    began: float
    healed_at: float | None = None
    note: str = ""
    converged: float | None = None  # seconds from the fault until every member caught up

    def healed(self, note: str = "") -> None:
        self.healed_at = time.monotonic()
        if note:
            self.note = note


@dataclass
class Faults:
    """The faults of one run, in the order they began."""

    items: list[Fault] = field(default_factory=list)

    def begin(self, kind: str, target: str, note: str = "") -> Fault:
        fault = Fault(kind, target, time.monotonic(), note=note)
        self.items.append(fault)
        return fault


@dataclass
class History:
    start: float = field(default_factory=time.monotonic)
    samples: list[Sample] = field(default_factory=list)

    def record(self, kind: str, server: str, invoked: float, outcome: Outcome,
               error: str = "") -> None:
        self.samples.append(Sample(kind, server, invoked, time.monotonic(), outcome, error))

    def relative(self, t: float) -> float:
        return round(t - self.start, 4)

    def as_rows(self) -> list[dict[str, Any]]:
        return [{**asdict(s), "invoked": self.relative(s.invoked),
                 "completed": self.relative(s.completed)} for s in self.samples]
