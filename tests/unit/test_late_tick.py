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
from pysyncobj.syncobj import _RAFT_STATE

from raftkube.store import raft
from raftkube.store import replica as rep
from tests.unit.conftest import FAST, SECRET, free_port, wait_for

pytestmark = pytest.mark.unit

# Elections after 0.5-1 s of silence (twice raftkube's default: three replicas share this
# process's GIL on a loaded machine), heartbeats every 50 ms. The stall is 2.5 timeouts.
TIMING = rep.Timing(election_min=0.5, election_max=1.0, startup_grace=0.0)
STALL = 2.5


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
        follower = next(m for m in members if m is not leader)
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


def one_member(tmp_path: Path) -> rep.Replica:
    return rep.Replica(name="m0", raft_addr=f"127.0.0.1:{free_port()}",
                       peers=[f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"],
                       api_url="http://x", data_dir=str(tmp_path / "m0"), secret=SECRET,
                       timing=FAST)


def test_election_deadlines_are_set_in_pysyncobjs_clock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pysyncobj keeps its deadlines in CLOCK_MONOTONIC_RAW, which drifts from
    time.monotonic with uptime: a grace computed in another clock is off by the drift."""
    member = one_member(tmp_path)
    try:
        monkeypatch.setattr(raft, "raft_clock", lambda: 1000.0)
        raft.hold_off_elections(member.node, 5.0)
        assert member.node._SyncObj__raftElectionDeadline == 1005.0
        raft.delay_elections(member.node, 5.0)
        assert member.node._SyncObj__raftElectionDeadline == 1010.0
    finally:
        member.node.close()


def test_a_candidate_made_leader_by_a_vote_read_late_stays_leader(tmp_path: Path) -> None:
    """The read before campaigning can bring the vote that wins the running election:
    the new leader must not campaign again at once (term + 1 for nothing)."""
    member = one_member(tmp_path)
    node = member.node
    try:
        peer = next(iter(node.otherNodes))
        node._SyncObj__connectedNodes.add(peer)
        node._SyncObj__raftState = _RAFT_STATE.CANDIDATE
        node._SyncObj__raftCurrentTerm = 5
        node._SyncObj__raftElectionDeadline = 0  # past
        node._SyncObj__votesCount = 1

        def a_late_vote(_timeout: float) -> None:
            node._SyncObj__onMessageReceived(peer, {"type": "response_vote", "term": 5})

        node._poller.poll = a_late_vote
        node.doTick(0)
        assert node._SyncObj__raftState == _RAFT_STATE.LEADER
        assert node.raftCurrentTerm == 5
    finally:
        node.close()


def test_a_new_member_waits_before_its_second_campaign(tmp_path: Path) -> None:
    """Term 0 to 1 deposes nobody and goes at once; from term 1, with no leader heard,
    the member waits its grace once (a leader's late reconnect reaches it meanwhile)."""
    member = one_member(tmp_path)
    node = member.node
    try:
        peer = next(iter(node.otherNodes))
        node._SyncObj__connectedNodes.add(peer)
        node._poller.poll = lambda _timeout: None
        raft.hold_second_campaign(node, 30.0)
        node._SyncObj__raftElectionDeadline = 0
        node.doTick(0)
        assert node.raftCurrentTerm == 1, "the first campaign goes at once"
        node._SyncObj__raftElectionDeadline = 0
        node.doTick(0)
        assert node.raftCurrentTerm == 1, "the second waits the grace"
        assert node._SyncObj__raftElectionDeadline > raft.raft_clock() + 29
        node._SyncObj__raftElectionDeadline = 0
        node.doTick(0)
        assert node.raftCurrentTerm == 2, "then it campaigns as any member"
    finally:
        node.close()
