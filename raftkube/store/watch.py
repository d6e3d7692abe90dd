"""The local watch hub: fans applied events out to this master's watchers.

Events reach the hub in revision order from the apply thread (through the event loop).
A watcher is created under the state lock: it is given the history from its start
revision up to the state's revision at that instant, and the hub's live stream takes over
from the next revision, so there is neither a gap nor a duplicate between the two. A
watcher that cannot keep up is cancelled rather than allowed to grow without bound; it
re-watches from its last revision, as an etcd client does after a cancel.

Shaped for thousands of watchers on one master (10,000 REST watches once starved the
Raft tick of the process's CPU):
- watchers of the same key range form a group, and each event is matched against a
  range once per group, not once per watcher;
- a watcher may be routed (`Route`): it is offered only the events whose objects have
  its value under a name (a REST watch of `spec.nodeName=n7` is offered the pods that are
  or were on n7), worked out once per event and name, as Kubernetes' watch cache indexes
  its watchers by `spec.nodeName`. 1,000 node agents each watching their own pods made
  every pod event 1,000 deliveries, each decoding nothing but matching a selector; now it
  is one or two;
- a consumer may give its watcher a `sink`, which writes a revision's events straight to
  its client from inside the hub's fan-out: no task wakes per watcher and per event, and
  nothing is allocated for it (bytes are shared, see apiserver/fanout.py). A sink whose
  client is behind refuses, and the events queue up for the consumer, which writes them
  with back-pressure and lets the sink take over again once the queue is empty;
- otherwise a watcher's queue is a plain list and one future, woken once per delivery
  however many revisions it holds, and a consumer that falls behind takes them all in
  one batch;
- published revisions are fanned out once per event-loop turn, so revisions that arrive
  while the loop is busy go out together, one write per watcher;
- a long fan-out lets the Raft tick thread have the GIL now and then (`Pacer`);
- no timer per watcher: a consumer states when it next wants to be woken without events
  (`due`: a bookmark, a progress notice, a deadline) and whether its client is still
  there (`alive`), and one `pulse_forever` task looks at every watcher a few times a
  second and wakes only those that are due or gone.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkube.store import state as st

MAX_BACKLOG = 10_000  # revisions a watcher may fall behind before it is cancelled

# Writes revisions straight to a watcher's client; False when the client is behind.
Sink = Callable[[list[tuple[int, list[st.Event]]]], bool]
# The values an event's objects have under a route's name (both the new and the previous
# object's); None when it cannot tell, and then every watcher routed by that name has it.
Router = Callable[[st.Event], "set[str] | None"]


# The reason a watch ends when its server stops: the stream is ended cleanly (no last
# line), and the client watches again from its last revision on another server.
SHUTTING_DOWN = "raftkube: the server is shutting down"


@dataclass(frozen=True)
class Route:
    """Offer a watcher only the events whose objects have `value` under `name`, as
    `router` reads them. The consumer still filters what it is offered: a route may
    offer more than the watcher wants, never less."""

    name: str
    value: str
    router: Router


@dataclass
class Batch:
    """Everything a watcher receives at once: events of whole revisions, or a signal.
    No events and no cancel reason: a pulse (something may be due)."""

    events: list[tuple[int, list[st.Event]]] = field(default_factory=list)
    progress_revision: int = 0
    cancel_reason: str = ""
    compact_revision: int = 0


class _Group:
    """The watchers of one key range, and the last revision published to them."""

    def __init__(self, key: bytes, end: bytes) -> None:
        self.key = key
        self.end = end
        self.published = 0
        self.members: dict[int, Watcher] = {}
        self.plain: dict[int, Watcher] = {}  # the members offered every event
        self.routers: dict[str, Router] = {}
        self.routed: dict[tuple[str, str], dict[int, Watcher]] = {}

    def join(self, w: Watcher) -> None:
        self.members[w.id] = w
        route = w.route
        if route is None:
            self.plain[w.id] = w
            return
        self.routers.setdefault(route.name, route.router)
        self.routed.setdefault((route.name, route.value), {})[w.id] = w

    def leave(self, w: Watcher) -> None:
        self.members.pop(w.id, None)
        route = w.route
        if route is None:
            self.plain.pop(w.id, None)
            return
        at = (route.name, route.value)
        routed = self.routed.get(at)
        if routed is not None:
            routed.pop(w.id, None)
            if not routed:
                del self.routed[at]
                if not any(name == route.name for name, _value in self.routed):
                    self.routers.pop(route.name, None)

    def offer(self, picks: list[tuple[int, list[st.Event]]], now: float,
              pacer: Pacer) -> None:
        """Revisions in this group's range to its members: every one to the plain
        members, and to the routed ones those with their value."""
        for w in list(self.plain.values()):
            w.deliver(picks, now)
            pacer.step()
        for name, router in list(self.routers.items()):
            by_value: dict[str, list[tuple[int, list[st.Event]]]] = {}
            everyone: list[tuple[int, list[st.Event]]] = []
            for revision, events in picks:
                for ev in events:
                    try:
                        values = router(ev)
                    except Exception:  # noqa: BLE001 - unreadable: offered to all of them
                        values = None
                    if values is None:
                        everyone.append((revision, [ev]))
                        continue
                    for value in values:
                        _append(by_value.setdefault(value, []), revision, ev)
            for (routed_name, value), routed in list(self.routed.items()):
                if routed_name != name:
                    continue
                entries = by_value.get(value)
                if everyone:
                    entries = _merge(entries or [], everyone)
                if not entries:
                    continue
                for w in list(routed.values()):
                    w.deliver(entries, now)
                    pacer.step()


def _append(entries: list[tuple[int, list[st.Event]]], revision: int, ev: st.Event) -> None:
    if entries and entries[-1][0] == revision:
        entries[-1][1].append(ev)
    else:
        entries.append((revision, [ev]))


def _merge(a: list[tuple[int, list[st.Event]]], b: list[tuple[int, list[st.Event]]]
           ) -> list[tuple[int, list[st.Event]]]:
    """Two runs of revisions as one, in revision order (each event in one run only)."""
    out: list[tuple[int, list[st.Event]]] = []
    for revision, events in sorted(a + b, key=lambda entry: entry[0]):
        for ev in events:
            _append(out, revision, ev)
    return out


class Watcher:
    def __init__(self, hub: WatchHub, watch_id: int, group: _Group,
                 next_revision: int, route: Route | None = None) -> None:
        self.hub = hub
        self.id = watch_id
        self.group = group
        self.route = route
        self.key = group.key
        self.end = group.end
        self._next_revision = next_revision
        self.pending: list[tuple[int, list[st.Event]]] = []
        self.cancelled = False
        self._signal: Batch | None = None  # a cancellation, delivered after pending
        self._waiter: asyncio.Future[None] | None = None
        self._pulsed = False
        # Set by the consumer: when to wake it without events, how to tell whether its
        # client is still connected, and how to write events straight to it.
        self.due = math.inf
        self.alive: Callable[[], bool] | None = None
        self.sink: Sink | None = None
        self.delivered_at = 0.0  # when the sink last wrote (monotonic)

    @property
    def next_revision(self) -> int:
        """The first revision this watcher has not been offered (revisions published to
        its group without events for it count as offered)."""
        return max(self._next_revision, self.group.published + 1)

    @property
    def backlog(self) -> int:
        return len(self.pending)

    def offer(self, revision: int, picked: list[st.Event]) -> None:
        """Events of `revision` in this watcher's range (the hub filtered them)."""
        self.deliver([(revision, picked)], time.monotonic())

    def deliver(self, entries: list[tuple[int, list[st.Event]]], now: float) -> None:
        """Revisions (in order, filtered to this watcher's range): through the sink if it
        takes them, else onto the queue."""
        if self.cancelled:
            return
        first = self.next_revision
        if len(entries) > 1 or entries[0][0] < first:
            # Only what is new, each revision once, in order: a snapshot's replay of what
            # it skipped overlaps the revisions applied after it.
            fresh = []
            for e in entries:
                if e[0] >= first:
                    fresh.append(e)
                    first = e[0] + 1
            if not fresh:
                return
            entries = fresh
        self._next_revision = entries[-1][0] + 1
        if self.sink is not None and not self.pending:
            try:
                if self.sink(entries):
                    self.delivered_at = now
                    return
            except Exception:  # noqa: BLE001 - one watcher must not stop the fan-out
                # Its handler meets the same error on the queue, where it belongs.
                self.sink = None
        self.pending.extend(entries)
        if len(self.pending) > MAX_BACKLOG:
            self.cancel("raftkube: watcher fell too far behind; re-watch from its revision")
            return
        self._wake()

    def cancel(self, reason: str, compact_revision: int = 0) -> None:
        if self.cancelled:
            return
        self.cancelled = True
        self.sink = None
        self._signal = Batch(cancel_reason=reason, compact_revision=compact_revision)
        self.hub.remove(self)
        self._wake()

    def pulse(self) -> None:
        self._pulsed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_batch(self) -> Batch:
        """Every pending revision at once; else the cancellation; else, once woken by a
        pulse, an empty batch."""
        while not self.pending and self._signal is None and not self._pulsed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        self._pulsed = False
        if self.pending:
            self.hub.pacer.step()
            batch = Batch(events=self.pending)
            self.pending = []
            return batch
        if self._signal is not None:
            return self._signal
        return Batch()

    def close(self) -> None:
        self.cancelled = True
        self.sink = None
        self.hub.remove(self)


class Pacer:
    """Lets other threads have the GIL during a long fan-out.

    The Raft tick thread makes a dozen short system calls a tick, and after each must win
    the GIL back from the event loop. While the loop fans an event out to thousands of
    watchers it never blocks, so every one of those hand-overs waits for the interpreter's
    switch interval and for the OS to run the waiting thread: under 10,000 watch streams
    a tick took hundreds of ms. So after `work` seconds of uninterrupted deliveries the
    loop thread sleeps `rest` seconds, the GIL released: the tick gets a window however
    busy the loop is, at a cost of rest / (work + rest) of the fan-out's speed, and only
    while it is saturated (a pause in deliveries longer than `idle` starts a new run).
    """

    def __init__(self, *, work: float = 0.004, rest: float = 0.001, idle: float = 0.002,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.work = work
        self.rest = rest
        self.idle = idle
        self.clock = clock
        self.sleep = sleep
        self._run_started = 0.0
        self._last = -math.inf
        self.rests = 0

    def step(self) -> None:
        now = self.clock()
        if now - self._last > self.idle:
            self._run_started = now
        elif now - self._run_started >= self.work:
            self.sleep(self.rest)  # the GIL is released while sleeping
            self.rests += 1
            now = self.clock()
            self._run_started = now
        self._last = now


class WatchHub:
    def __init__(self) -> None:
        self.pacer = Pacer()
        self._watchers: dict[int, Watcher] = {}
        self._groups: dict[tuple[bytes, bytes], _Group] = {}
        self._ids = itertools.count(1)
        self._queue: list[tuple[int, list[st.Event]]] = []
        self._flush_scheduled = False

    def add(self, key: bytes, end: bytes, next_revision: int, *,
            route: Route | None = None) -> Watcher:
        group = self._groups.get((key, end))
        if group is None:
            group = self._groups[(key, end)] = _Group(key, end)
        w = Watcher(self, next(self._ids), group, next_revision, route)
        self._watchers[w.id] = w
        group.join(w)
        return w

    def remove(self, w: Watcher) -> None:
        if self._watchers.pop(w.id, None) is None:
            return
        group = w.group
        group.leave(w)
        if not group.members and self._groups.get((group.key, group.end)) is group:
            del self._groups[(group.key, group.end)]

    def publish(self, revision: int, events: list[st.Event]) -> None:
        """Queue a revision for the fan-out at the end of this event-loop turn (at once
        outside a loop). Watchers opened meanwhile start after it: they skip it."""
        self._queue.append((revision, events))
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        queued, self._queue = self._queue, []
        queue: list[tuple[int, list[st.Event]]] = []
        for entry in queued:  # ascending, each revision once (see Watcher.deliver)
            if not queue or entry[0] > queue[-1][0]:
                queue.append(entry)
        if not queue:
            return
        now = time.monotonic()
        pacer = self.pacer
        for group in list(self._groups.values()):
            key, end = group.key, group.end
            picks = []
            for revision, events in queue:
                picked = [ev for ev in events if st.in_range(ev.kv.key, key, end)]
                if picked:
                    picks.append((revision, picked))
            if picks:
                group.offer(picks, now, pacer)
            group.published = max(group.published, queue[-1][0])

    def cancel_all(self, reason: str, compact_revision: int) -> None:
        for w in list(self._watchers.values()):
            w.cancel(reason, compact_revision)

    def pulse(self, now: float | None = None) -> int:
        """Wake the watchers that are due or whose client has gone; how many."""
        now = time.monotonic() if now is None else now
        woken = 0
        for w in list(self._watchers.values()):
            if w._waiter is None:
                continue  # busy sending: it looks at its clock when it is done
            if w.due <= now or (w.alive is not None and not w.alive()):
                w.pulse()
                woken += 1
        return woken

    async def pulse_forever(self, every: float) -> None:
        """The one timer of every watcher on this master."""
        while True:
            await asyncio.sleep(every)
            self.pulse()

    def __len__(self) -> int:
        return len(self._watchers)
