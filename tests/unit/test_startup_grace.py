"""A member that starts among peers gives the leader time to reach it before it
campaigns (CI once saw a restarted follower depose a healthy leader: term 1 -> 3)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from raftkube.store import replica as rep
from tests.unit.conftest import FAST, SECRET, free_port, wait_for

pytestmark = pytest.mark.unit


async def test_members_started_together_wait_out_the_grace_then_elect(tmp_path: Path) -> None:
    timing = dataclasses.replace(FAST, startup_grace=0.5)
    addrs = [f"127.0.0.1:{free_port()}" for _ in range(3)]  # the third is never started
    members = [
        rep.Replica(name=f"m{i}", raft_addr=addrs[i], peers=[a for a in addrs if a != addrs[i]],
                    api_url="http://x", data_dir=str(tmp_path / f"m{i}"), secret=SECRET,
                    timing=timing)
        for i in range(2)
    ]
    started = time.monotonic()
    for m in members:
        m.start(asyncio.get_running_loop())
    try:
        # Connected to each other within a tick or two, with election timeouts of 40-60
        # ms: without the grace they would have elected a leader long before 0.4 s.
        await asyncio.sleep(0.4)
        assert [m.view.term for m in members] == [0, 0]
        assert not any(m.view.is_leader for m in members)
        await wait_for(lambda: any(m.view.is_leader for m in members), deadline=10,
                       what="a leader after the grace")
        assert time.monotonic() - started >= timing.startup_grace
    finally:
        for m in members:
            await m.stop()
