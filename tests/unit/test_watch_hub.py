"""The watch hub's fan-out (store/watch.py) and its shared encodings (apiserver/fanout.py):
every event once and in order whichever path it takes (the sink, the queue, a mix), one
match per key range, one write per watcher per loop turn, the pulse, the pacer, the GC
policy's freezing."""

from __future__ import annotations

import asyncio
import gc

import pytest

from raftkube.apiserver import fanout, serving
from raftkube.store import state as st
from raftkube.store import watch

pytestmark = pytest.mark.unit


def event(key: bytes, revision: int) -> st.Event:
    return st.Event(st.PUT, st.KeyValue(key, b"v", revision, revision, 1, 0), None)


class Client:
    """A sink that records what it was given, and can be made to refuse (a slow client)."""

    def __init__(self) -> None:
        self.got: list[int] = []
        self.writes = 0
        self.behind = False

    def __call__(self, entries: list[tuple[int, list[st.Event]]]) -> bool:
        if self.behind:
            return False
        self.writes += 1
        self.got.extend(r for r, _ in entries)
        return True


async def test_events_go_through_the_sink_once_and_in_order_across_a_slow_spell() -> None:
    hub = watch.WatchHub()
    w = hub.add(b"a", b"b", 1)
    client = Client()
    w.sink = client
    queued: list[int] = []
    for r in range(1, 31):
        if r == 10:
            client.behind = True  # the socket is full: events queue for the handler
        if r == 20:
            client.behind = False  # caught up at the socket, but the queue is not empty
        hub.publish(r, [event(b"a1", r), event(b"zz", r)])
        await asyncio.sleep(0)
        if r == 25:
            batch = await w.next_batch()  # the handler writes what queued, in order
            queued.extend(rev for rev, _ in batch.events)
    assert not w.pending
    # Before the spell, the sink; during it and until the queue is drained, the queue;
    # after that, the sink again.
    assert client.got == list(range(1, 10)) + list(range(26, 31))
    assert queued == list(range(10, 26))
    assert w.next_revision == 31


async def test_a_snapshot_replay_overlapping_later_revisions_is_delivered_once() -> None:
    hub = watch.WatchHub()
    w = hub.add(b"a", b"b", 1)
    w.sink = client = Client()
    queued = hub.add(b"a", b"b", 1)
    for r in (1, 2, 3, 2, 3, 4, 5, 4, 6):  # a replay of 1-3, then 2-5 applied, ...
        hub.publish(r, [event(b"a1", r)])
    await asyncio.sleep(0)
    assert client.got == [1, 2, 3, 4, 5, 6]
    assert [r for r, _ in (await queued.next_batch()).events] == [1, 2, 3, 4, 5, 6]
    # And across loop turns.
    for r in (5, 6, 7):
        hub.publish(r, [event(b"a1", r)])
        await asyncio.sleep(0)
    assert client.got == [1, 2, 3, 4, 5, 6, 7]
    w.deliver([(7, []), (8, [event(b"a1", 8)]), (8, []), (9, [event(b"a1", 9)])], 0.0)
    assert client.got == [1, 2, 3, 4, 5, 6, 7, 8, 9]


async def test_a_sink_that_fails_hands_its_events_to_the_queue() -> None:
    hub = watch.WatchHub()
    broken, fine = hub.add(b"a", b"b", 1), hub.add(b"a", b"b", 1)

    def fail(entries: list[tuple[int, list[st.Event]]]) -> bool:
        raise ValueError("not JSON")

    broken.sink = fail
    fine.sink = client = Client()
    hub.publish(1, [event(b"a1", 1)])
    await asyncio.sleep(0)
    assert client.got == [1], "the other watchers are served"
    assert broken.sink is None and [r for r, _ in (await broken.next_batch()).events] == [1]


async def test_revisions_published_in_one_loop_turn_are_one_write() -> None:
    hub = watch.WatchHub()
    clients = []
    for _ in range(50):
        w = hub.add(b"a", b"b", 1)
        w.sink = client = Client()
        clients.append(client)
    other = hub.add(b"x", b"y", 1)
    other.sink = elsewhere = Client()
    for r in range(1, 6):
        hub.publish(r, [event(b"a1", r)])
    await asyncio.sleep(0)
    assert all(c.writes == 1 and c.got == [1, 2, 3, 4, 5] for c in clients)
    assert elsewhere.writes == 0 and other.next_revision == 6, \
        "a range with no events still moves on (bookmarks)"


def moved(key: bytes, revision: int, new: bytes, old: bytes | None) -> st.Event:
    """A put of `key` whose value (its "node") is `new`, replacing one that was `old`."""
    prev = st.KeyValue(key, old, 1, revision - 1, 1, 0) if old is not None else None
    return st.Event(st.PUT, st.KeyValue(key, new, 1, revision, 2, 0), prev)


def by_value(ev: st.Event) -> set[str] | None:
    values = {ev.kv.value.decode()} | ({ev.prev_kv.value.decode()} if ev.prev_kv else set())
    if "?" in values:
        raise ValueError("unreadable")
    return values


async def test_a_routed_watcher_is_offered_only_the_events_of_its_value() -> None:
    hub = watch.WatchHub()
    clients: dict[str, Client] = {}
    for node in ("n1", "n2", "n3"):
        w = hub.add(b"a", b"b", 1, route=watch.Route("node", node, by_value))
        w.sink = clients[node] = Client()
    plain = hub.add(b"a", b"b", 1)
    plain.sink = everything = Client()
    hub.publish(1, [moved(b"a1", 1, b"n1", None)])
    hub.publish(2, [moved(b"a2", 2, b"n2", None), moved(b"a3", 2, b"n1", None)])
    hub.publish(3, [moved(b"a1", 3, b"n2", b"n1")])  # moved: both nodes hear of it
    hub.publish(4, [moved(b"a4", 4, b"?", None)])  # the router fails: everyone has it
    await asyncio.sleep(0)
    assert clients["n1"].got == [1, 2, 3, 4]
    assert clients["n2"].got == [2, 3, 4]
    assert clients["n3"].got == [4]
    assert everything.got == [1, 2, 3, 4]
    assert all(c.writes == 1 for c in clients.values()), "one write per loop turn"
    hub.publish(5, [moved(b"a9", 5, b"n1", None)])
    await asyncio.sleep(0)
    n3 = next(w for w in hub._watchers.values()
              if w.route is not None and w.route.value == "n3")
    assert n3.next_revision == 6, "a routed watcher offered nothing still moves on"
    for w in list(hub._watchers.values()):
        w.close()
    assert len(hub) == 0 and not hub._groups


async def test_a_watcher_opened_after_a_publish_skips_it_and_a_cancel_comes_last() -> None:
    hub = watch.WatchHub()
    hub.publish(1, [event(b"a1", 1)])
    late = hub.add(b"a", b"b", 2)  # opened under the lock at revision 1: starts at 2
    hub.publish(2, [event(b"a1", 2)])
    await asyncio.sleep(0)
    assert [r for r, _ in (await late.next_batch()).events] == [2]
    hub.publish(3, [event(b"a1", 3)])
    await asyncio.sleep(0)
    late.cancel("compacted", 3)
    assert [r for r, _ in (await late.next_batch()).events] == [3]
    batch = await late.next_batch()
    assert batch.cancel_reason == "compacted" and batch.compact_revision == 3
    assert len(hub) == 0


async def test_a_watcher_too_far_behind_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_BACKLOG", 5)
    hub = watch.WatchHub()
    w = hub.add(b"a", b"b", 1)
    for r in range(1, 8):
        hub.publish(r, [event(b"a1", r)])
        await asyncio.sleep(0)
    assert w.cancelled and len(hub) == 0


async def test_the_pulse_wakes_only_watchers_that_are_due_or_gone() -> None:
    hub = watch.WatchHub()
    due, idle, gone = hub.add(b"a", b"b", 1), hub.add(b"a", b"b", 1), hub.add(b"a", b"b", 1)
    due.due, idle.due = 10.0, 100.0
    gone.alive = lambda: False
    tasks = [asyncio.create_task(w.next_batch()) for w in (due, idle, gone)]
    await asyncio.sleep(0)
    assert hub.pulse(now=20.0) == 2
    await asyncio.sleep(0)
    assert [t.done() for t in tasks] == [True, False, True]
    assert tasks[0].result().events == [] and not tasks[0].result().cancel_reason
    tasks[1].cancel()
    await asyncio.gather(tasks[1], return_exceptions=True)


def test_the_pacer_rests_only_in_a_long_uninterrupted_run() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    p = watch.Pacer(work=0.004, rest=0.001, idle=0.002, clock=lambda: now[0], sleep=sleep)
    for _ in range(100):  # 100 deliveries 0.1 ms apart: 10 ms of work
        p.step()
        now[0] += 0.0001
    assert len(slept) == 2
    now[0] += 0.01  # the loop went idle: a new run
    for _ in range(30):
        p.step()
        now[0] += 0.0001
    assert len(slept) == 2


def test_shared_encodings_make_once_and_stay_bounded() -> None:
    enc = fanout.SharedEncodings(max_bytes=1000, max_entries=3)
    made = []

    def make(tag: bytes) -> bytes:
        made.append(tag)
        return tag * 10

    for _ in range(5):
        assert enc.get(1, "k", lambda: make(b"a")) == b"a" * 10
    assert made == [b"a"]
    for r in range(2, 10):
        enc.get(r, "k", lambda: make(b"b"))
    assert len(enc._cache) == 3
    big = enc.get(99, "k", lambda: b"x" * 600)  # over a quarter of the bound: not kept
    assert len(big) == 600 and (99, "k") not in enc._cache


def test_chunk_framing_matches_http_and_never_ends_the_stream() -> None:
    assert fanout.chunk(b"hello\n") == b"6\r\nhello\n\r\n"
    assert fanout.chunk(b"") == b""


def test_the_gc_policy_freezes_on_growth_and_thaws_on_a_fall() -> None:
    n = [0]
    policy = serving.GcPolicy(lambda: n[0], grow=0.1, floor=10)
    try:
        n[0] = 100
        assert policy.step() == "froze" and gc.get_freeze_count() > 0
        n[0] = 105
        assert policy.step() == ""
        n[0] = 30
        assert policy.step() == "unfroze" and gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()
