"""A queue of keys for level-triggered reconcilers, as client-go's workqueue.

Watch handlers only `add` a key (`namespace/name`); workers `get` one, reconcile it from
the cache, and say `done`. The queue guarantees what makes that correct and cheap:

- a key is queued at most once, however often it is added before a worker takes it;
- a key is never handed to two workers at once: added while it is being processed, it
  is marked dirty and queued again when its worker says `done`;
- a key that failed is retried after a per-key exponential back-off (5 ms doubling, to
  a cap), bounded overall by a token bucket, until a success `forget`s its failures;
- `add_after` delays a key (a timed re-check, such as minReadySeconds);
- `get` always gives the event loop a turn, even with keys waiting: a reconcile that
  awaits nothing and adds its own key again (a deadline already passed) would otherwise
  keep its worker from ever suspending, freezing every other task of the process,
  the informers that would bring the change it waits for among them. Callers make such
  re-adds rare: a timed re-check is due no sooner than the condition it waits for.

Delays run on the event loop's clock; the back-off arithmetic is pure and takes `now`.
Workers that end shut their queue down, so that no timer of theirs outlives them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class ShutDown(Exception):
    """The queue was shut down: the worker should return."""


class Backoff:
    """Per-key exponential back-off: `base * 2**failures`, at most `cap` seconds."""

    def __init__(self, *, base: float = 0.005, cap: float = 30.0) -> None:
        self.base = base
        self.cap = cap
        self._failures: dict[str, int] = {}

    def when(self, key: str) -> float:
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        delay: float = self.base * 2.0 ** min(n, 62)
        return min(delay, self.cap)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)


class TokenBucket:
    """`qps` tokens a second, `burst` at most: the delay before the next retry may run."""

    def __init__(self, *, qps: float = 10.0, burst: int = 100) -> None:
        self.qps = qps
        self.burst = burst
        self._tokens = float(burst)
        self._last = 0.0

    def reserve(self, now: float) -> float:
        if self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.qps)
        self._last = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps


class WorkQueue:
    def __init__(self, *, backoff: Backoff | None = None,
                 bucket: TokenBucket | None = None, name: str = "") -> None:
        self.name = name
        self.backoff = backoff or Backoff()
        self.bucket = bucket or TokenBucket()
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()  # queued, or to be queued again once processed
        self._processing: set[str] = set()
        self._waiting: dict[str, tuple[float, asyncio.TimerHandle]] = {}
        self._ready = asyncio.Event()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, key: str) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return  # queued again by done()
        self._queue.append(key)
        self._ready.set()

    def add_after(self, key: str, delay: float) -> None:
        """Add `key` once `delay` seconds have passed (at once if <= 0); a key already
        waiting keeps the earlier of its two times."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        at = loop.time() + delay
        waiting = self._waiting.get(key)
        if waiting is not None:
            if waiting[0] <= at:
                return
            waiting[1].cancel()
        self._waiting[key] = (at, loop.call_at(at, self._due, key))

    def _due(self, key: str) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    def add_rate_limited(self, key: str) -> None:
        """Retry `key` after its back-off (and the overall bucket's) delay."""
        now = asyncio.get_running_loop().time()
        self.add_after(key, max(self.backoff.when(key), self.bucket.reserve(now)))

    def forget(self, key: str) -> None:
        """`key` succeeded: its next failure starts the back-off from the beginning."""
        self.backoff.forget(key)

    def requeues(self, key: str) -> int:
        return self.backoff.failures(key)

    async def get(self) -> str:
        await asyncio.sleep(0)  # a turn for every other task, whether or not we wait
        while not self._queue:
            if self._shutting_down:
                raise ShutDown
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def shutdown(self) -> None:
        self._shutting_down = True
        for _at, handle in self._waiting.values():
            handle.cancel()
        self._waiting.clear()
        self._ready.set()


async def run_workers(queue: WorkQueue, reconcile: Callable[[str], Awaitable[None]], *,
                      workers: int = 1) -> None:
    """Take keys until cancelled: success forgets a key's failures, an exception logs and
    retries it with back-off. Reconcilers are idempotent, so a retry is always safe."""

    async def worker() -> None:
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            try:
                await reconcile(key)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - any failure is retried with back-off
                level = logging.INFO if queue.requeues(key) < 5 else logging.WARNING
                log.log(level, "%s: %s failed (retry %d): %s", queue.name or "queue", key,
                        queue.requeues(key) + 1, e)
                queue.add_rate_limited(key)
            else:
                queue.forget(key)
            finally:
                queue.done(key)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(workers):
                group.create_task(worker())
    finally:
        queue.shutdown()  # its timers go with its workers (a leader's loops end by cancel)
