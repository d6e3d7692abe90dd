"""The local watch hub: fans applied events out to this master's watchers.

Events reach the hub in revision order from the apply thread (through the event loop).
A watcher is created under the state lock: it is given the history from its start
revision up to the state's revision at that instant, and the hub's live stream takes over
from the next revision, so there is neither a gap nor a duplicate between the two. A
watcher that cannot keep up is cancelled rather than allowed to grow without bound; it
re-watches from its last revision, as an etcd client does after a cancel.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from raftkube.store import state as st

MAX_BACKLOG = 10_000  # revisions a watcher may fall behind before it is cancelled


@dataclass
class Batch:
    """Everything a watcher receives at once: events of whole revisions, or a signal."""

    events: list[tuple[int, list[st.Event]]] = field(default_factory=list)
    progress_revision: int = 0
    cancel_reason: str = ""
    compact_revision: int = 0


class Watcher:
    def __init__(self, hub: WatchHub, watch_id: int, key: bytes, end: bytes,
                 next_revision: int) -> None:
        self.hub = hub
        self.id = watch_id
        self.key = key
        self.end = end
        self.next_revision = next_revision
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.backlog = 0
        self.cancelled = False

    def offer(self, revision: int, events: list[st.Event]) -> None:
        if self.cancelled or revision < self.next_revision:
            return
        picked = [ev for ev in events if st.in_range(ev.kv.key, self.key, self.end)]
        self.next_revision = revision + 1
        if not picked:
            return
        self.backlog += 1
        if self.backlog > MAX_BACKLOG:
            self.cancel("raftkube: watcher fell too far behind; re-watch from its revision")
            return
        self.queue.put_nowait(Batch(events=[(revision, picked)]))

    def cancel(self, reason: str, compact_revision: int = 0) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.queue.put_nowait(Batch(cancel_reason=reason, compact_revision=compact_revision))
        self.hub.remove(self)

    async def next_batch(self, timeout: float) -> Batch | None:
        try:
            batch = await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None
        self.backlog = max(0, self.backlog - len(batch.events))
        # Merge whatever else is queued so a busy stream sends fewer, larger messages.
        while not self.queue.empty() and not batch.cancel_reason:
            more = self.queue.get_nowait()
            self.backlog = max(0, self.backlog - len(more.events))
            if more.cancel_reason:
                self.queue.put_nowait(more)
                break
            batch.events.extend(more.events)
        return batch

    def close(self) -> None:
        self.cancelled = True
        self.hub.remove(self)


class WatchHub:
    def __init__(self) -> None:
        self._watchers: dict[int, Watcher] = {}
        self._ids = itertools.count(1)

    def add(self, key: bytes, end: bytes, next_revision: int) -> Watcher:
        w = Watcher(self, next(self._ids), key, end, next_revision)
        self._watchers[w.id] = w
        return w

    def remove(self, w: Watcher) -> None:
        self._watchers.pop(w.id, None)

    def publish(self, revision: int, events: list[st.Event]) -> None:
        for w in list(self._watchers.values()):
            w.offer(revision, events)

    def cancel_all(self, reason: str, compact_revision: int) -> None:
        for w in list(self._watchers.values()):
            w.cancel(reason, compact_revision)

    def __len__(self) -> int:
        return len(self._watchers)
