"""A follower whose tick was held up (the event loop or the collector holding the GIL, a
slow fsync) reads what its peers sent meanwhile before it judges the leader silent.
pysyncobj checks the election deadline at the top of a tick and reads its sockets only at
the end, so a stall longer than the election timeout made a follower campaign with the
leader's heartbeats waiting unread: a healthy leader deposed (once in CI, during a
connection flood on a follower)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import pytest

from raftkube.store import raft
from raftkube.store import replica as rep
from tests.unit.conftest import FAST, SECRET, free_port, wait_for

pytestmark = pytest.mark.unit

# raftkube's own timing (elections after 0.25-0.5 s of silence, heartbeats every 50 ms):
# a loaded machine does not disturb it on its own. The stall is four timeouts long.
TIMING = rep.Timing(startup_grace=0.0)
STALL = 2.0


def stall_once(member: rep.Replica, seconds: float) -> asyncio.Event:
    """Hold the member's tick thread once, at the top of its next tick: just before
    pysyncobj's election check, the worst place."""
    node = member.node
    do_tick = node.doTick
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    def slow_tick(*args: Any, **kwargs: Any) -> Any:
        node.doTick = do_tick  # type: ignore[method-assign]
        time.sleep(seconds)
        loop.call_soon_threadsafe(done.set)
        return do_tick(*args, **kwargs)

    node.doTick = slow_tick  # type: ignore[method-assign]
    return done


async def test_a_follower_held_up_past_its_timeout_reads_the_leader_before_campaigning(
        tmp_path: Path) -> None:
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    members = [
        rep.Replica(name=f"m{i}", raft_addr=addrs[i], peers=[a for a in addrs if a != addrs[i]],
                    api_url="http://x", data_dir=str(tmp_path / f"m{i}"), secret=SECRET,
                    timing=TIMING)
        for i in range(3)
    ]
    for m in members:
        m.start(asyncio.get_running_loop())
    try:
        await wait_for(lambda: sum(m.view.is_leader for m in members) == 1
                       and len({m.view.leader for m in members}) == 1, deadline=10,
                       what="a leader every member follows")
        terms = [m.view.term for m in members]
        leader = next(m for m in members if m.view.is_leader)
        for follower in (m for m in members if m is not leader):
            await stall_once(follower, STALL).wait()
            await asyncio.sleep(0.2)
            assert leader.view.is_leader, f"{follower.name}'s stall deposed {leader.name}"
            assert [m.view.term for m in members] == terms, (
                f"{follower.name} campaigned after a stall of {STALL} s")
    finally:
        for m in members:
            await m.stop()


async def test_a_silent_leader_is_still_replaced(tmp_path: Path) -> None:
    """Reading first does not keep a follower from campaigning when nothing came."""
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    members = [
        rep.Replica(name=f"m{i}", raft_addr=addrs[i], peers=[a for a in addrs if a != addrs[i]],
                    api_url="http://x", data_dir=str(tmp_path / f"m{i}"), secret=SECRET,
                    timing=dataclasses.replace(FAST, startup_grace=0.0))
        for i in range(3)
    ]
    for m in members:
        m.start(asyncio.get_running_loop())
    stopped: list[rep.Replica] = []
    try:
        await wait_for(lambda: sum(m.view.is_leader for m in members) == 1, deadline=10,
                       what="a leader")
        leader = next(m for m in members if m.view.is_leader)
        await leader.stop()
        stopped.append(leader)
        rest = [m for m in members if m is not leader]
        await wait_for(lambda: any(m.view.is_leader for m in rest), deadline=10,
                       what="a new leader")
    finally:
        for m in members:
            if m not in stopped:
                await m.stop()


def test_election_deadlines_are_set_in_pysyncobjs_clock(tmp_path: Path) -> None:
    """pysyncobj keeps its deadlines in CLOCK_MONOTONIC_RAW, which drifts from
    time.monotonic with uptime: a grace computed in the wrong clock is off by the drift."""
    addr = f"127.0.0.1:{free_port()}"
    member = rep.Replica(name="m0", raft_addr=addr, peers=[f"127.0.0.1:{free_port()}"],
                         api_url="http://x", data_dir=str(tmp_path / "m0"), secret=SECRET,
                         timing=FAST)
    try:
        raft.hold_off_elections(member.node, 5.0)
        left = member.node._SyncObj__raftElectionDeadline - raft.raft_clock()
        assert 4.9 < left <= 5.0
        raft.delay_elections(member.node, 5.0)
        left = member.node._SyncObj__raftElectionDeadline - raft.raft_clock()
        assert 9.9 < left <= 10.0
    finally:
        member.node.close()
