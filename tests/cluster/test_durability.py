"""Acknowledged means durable: leader kills, kill -9 of every master, restarts."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.cluster.harness import Cluster, Writer, wait_for

pytestmark = pytest.mark.cluster


async def assert_all_present(c: Cluster, name: str, acked: dict[str, int], prefix: str) -> None:
    stored = await c.get_prefix(name, prefix)
    missing = sorted(set(acked) - set(stored))
    assert not missing, f"{name} lost {len(missing)} acknowledged writes, e.g. {missing[:5]}"
    for key, rev in acked.items():
        # At the revision it was acknowledged with, or later: a client that timed out
        # retried the key, and the abandoned request may still have committed after.
        assert stored[key][1] >= rev, (key, stored[key], rev)


async def test_leader_sigkill_during_writes_loses_nothing(cluster: Cluster) -> None:
    async with cluster as c:
        leader = await c.leader()
        writers = [Writer(c, f"w{i}", c.names) for i in range(4)]
        tasks = [asyncio.create_task(w.run()) for w in writers]
        await wait_for(lambda: asyncio.sleep(0, sum(len(w.acked) for w in writers) > 200),
                       timeout=20, what="writes before the kill")
        killed_at = time.monotonic()
        c.kill(leader)
        survivors = [n for n in c.names if n != leader]
        for w in writers:
            w.among = survivors
        await wait_for(lambda: asyncio.sleep(0, all(
            sum(t > killed_at + 1 for t in w.ack_times) > 20 for w in writers)),
            timeout=30, what="writes to resume through the survivors")
        for w in writers:
            w.stop()
        await asyncio.gather(*tasks)
        new_leader = await c.leader(among=survivors)
        assert new_leader != leader
        for w in writers:
            for name in survivors:
                await assert_all_present(c, name, w.acked, w.prefix + "/")
        # The killed member comes back with its data and catches up.
        c.up()
        for w in writers:
            await wait_for(lambda w=w: _caught_up(c, leader, w), timeout=30,
                           what=f"{leader} to catch up")


async def _caught_up(c: Cluster, name: str, w: Writer) -> bool:
    try:
        stored = await c.get_prefix(name, w.prefix + "/", serializable=True)
    except Exception:
        return False
    return set(w.acked) <= set(stored)


async def test_kill9_all_masters_and_restart_loses_nothing(cluster: Cluster) -> None:
    async with cluster as c:
        await c.leader()
        writers = [Writer(c, f"a{i}", c.names) for i in range(8)]
        tasks = [asyncio.create_task(w.run()) for w in writers]
        await wait_for(lambda: asyncio.sleep(0, sum(len(w.acked) for w in writers) > 300),
                       timeout=30, what="writes")
        # All three at once, mid-stream: whatever was acknowledged must survive.
        c.kill(*c.names)
        for w in writers:
            w.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        acked_total = sum(len(w.acked) for w in writers)
        assert acked_total > 300
        c.up()
        await c.leader()
        for w in writers:
            for name in c.names:
                await assert_all_present(c, name, w.acked, w.prefix + "/")


async def test_rk_up_again_restarts_only_missing_members(cluster: Cluster) -> None:
    async with cluster as c:
        await c.leader()
        await c.put("m1", "before", "1")
        pids = {n: c.pid(n) for n in c.names}
        c.kill("m2")
        c.up()
        assert c.pid("m1") == pids["m1"] and c.pid("m3") == pids["m3"]
        assert c.pid("m2") not in (None, pids["m2"])
        await wait_for(lambda: _has(c, "m2", "before"), timeout=20, what="m2 to catch up")


async def _has(c: Cluster, name: str, key: str) -> bool:
    try:
        return key in await c.get_prefix(name, key, serializable=True)
    except Exception:
        return False
