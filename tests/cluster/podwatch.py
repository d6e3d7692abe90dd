"""What a rolling update promises, checked at every revision of the store.

`Pods` watches one app's pods through an informer (each write is one watch event,
delivered in order, so its handlers see every state the store went through) and checks
that there are never more than `most` pods that are not going away and, once armed,
never fewer than `least` of them ready. `call` retries a test's own request through an
election or a conflict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import conditions
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError, ClientError

Obj = dict[str, Any]


@dataclass
class Pods:
    """Counts of one app's pods at every revision, and the bounds they broke."""

    app: str
    most: int
    least: int = 0
    armed: bool = False
    peak: int = 0
    low: int | None = None
    broken: list[str] = field(default_factory=list)

    def attach(self, informer: inf.Informer) -> None:
        informer.add_handler(inf.Handler(add=lambda p: self._check(informer, p),
                                         update=lambda _o, p: self._check(informer, p),
                                         delete=lambda p: self._check(informer, p)))

    def counts(self, informer: inf.Informer) -> tuple[int, int]:
        live = [p for p in informer.cache.list()
                if (p["metadata"].get("labels") or {}).get("app") == self.app
                and not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        return len(live), sum(1 for p in live if conditions.is_true(p, "Ready"))

    def _check(self, informer: inf.Informer, pod: Obj) -> None:
        if (pod["metadata"].get("labels") or {}).get("app") != self.app:
            return
        total, ready = self.counts(informer)
        at = pod["metadata"].get("resourceVersion")
        self.peak = max(self.peak, total)
        if total > self.most:
            self.broken.append(f"{total} pods > {self.most} at revision {at}")
        if self.armed:
            self.low = ready if self.low is None else min(self.low, ready)
            if ready < self.least:
                self.broken.append(f"{ready} ready < {self.least} at revision {at}")


async def call(attempt: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    """Retry a test's own request through outages and conflicts until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except ClientError as e:
            if time.monotonic() > deadline:
                raise
            if isinstance(e, ApiError) and e.code not in (409, 500, 503):
                raise
            await asyncio.sleep(0.1)
