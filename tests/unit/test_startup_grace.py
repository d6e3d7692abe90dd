"""A member that restarts among peers gives the leader time to reach it before it
campaigns (CI once saw a restarted follower depose a healthy leader: term 1 -> 3). A new
member (term 0) campaigns at once: its first campaign, at term 1, cannot depose a
leader (tests/unit/test_late_tick.py has its second)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from raftkube.store import replica as rep
from tests.unit.conftest import FAST, SECRET, free_port, wait_for

pytestmark = pytest.mark.unit


def two_of_three(tmp_path: Path, addrs: list[str], timing: rep.Timing) -> list[rep.Replica]:
    """Members m0 and m1 of three (the third is never started)."""
    return [
        rep.Replica(name=f"m{i}", raft_addr=addrs[i], peers=[a for a in addrs if a != addrs[i]],
                    api_url="http://x", data_dir=str(tmp_path / f"m{i}"), secret=SECRET,
                    timing=timing)
        for i in range(2)
    ]


async def test_restarted_members_wait_out_the_grace_new_ones_do_not(tmp_path: Path) -> None:
    timing = dataclasses.replace(FAST, startup_grace=1.0)
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    members = two_of_three(tmp_path, addrs, timing)
    started = time.monotonic()
    for m in members:
        m.start(asyncio.get_running_loop())
    try:
        # New: they campaign as soon as their 40-60 ms timeouts pass, not after the grace
        # (a split vote then waits it before the second campaign).
        await wait_for(lambda: any(m.view.term > 0 for m in members), deadline=10,
                       what="a campaign of the new members")
        assert time.monotonic() - started < timing.startup_grace
        await wait_for(lambda: any(m.view.is_leader for m in members), deadline=10,
                       what="a leader of the new members")
    finally:
        for m in members:
            await m.stop()

    members = two_of_three(tmp_path, addrs, timing)  # the same data dirs: term 1 or more
    assert all(m.node.raftCurrentTerm > 0 for m in members)
    terms = [m.node.raftCurrentTerm for m in members]
    started = time.monotonic()
    for m in members:
        m.start(asyncio.get_running_loop())
    try:
        # Connected to each other within a tick or two: without the grace they would
        # have elected a leader long before 0.8 s.
        await asyncio.sleep(0.8)
        assert [m.view.term for m in members] == terms
        assert not any(m.view.is_leader for m in members)
        await wait_for(lambda: any(m.view.is_leader for m in members), deadline=10,
                       what="a leader after the grace")
        assert time.monotonic() - started >= timing.startup_grace
    finally:
        for m in members:
            await m.stop()
