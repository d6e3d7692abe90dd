"""Raft log compaction: snapshots, a lagging follower installing one, restarts after it.

pysyncobj loses callbacks when a follower installs a snapshot (bug 1) and, without a
dump file, lost every key on a restart after compaction. Members here snapshot every
300 entries so that all of it happens within seconds on an idle machine; the waits are
bounds for a loaded one (a 2-core machine shared with other test runs wrote ~16/s).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster, Writer, started, wait_for
from tests.cluster.test_watch_lease_fence import WatchStream

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "compacting",
                       master_args=["--log-compaction-entries", "300"])


async def test_paused_follower_catches_up_by_snapshot_and_its_watch_has_no_gap(
        cluster: Cluster) -> None:
    async with cluster as c:
        leader = await c.leader()
        lagging = next(n for n in c.names if n != leader)
        start = await c.put(lagging, "snap/start", "0")
        async with WatchStream(c, lagging, "s/", start) as watch:
            pid = c.pid(lagging)
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            paused = time.monotonic()
            try:
                others = [n for n in c.names if n != lagging]
                writer = Writer(c, "s", others)
                task = asyncio.create_task(writer.run())
                await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > 1500), timeout=300,
                               what="writes past several snapshots")
                writer.stop()
                await task
                # Past the leader's connection timeout (3.5 s) it drops the connection and
                # what it had buffered for the paused member, which must then be sent a
                # snapshot: the entries it lacks are gone from the leader's log.
                await asyncio.sleep(max(0.0, paused + 5.0 - time.monotonic()))
            finally:
                os.kill(pid, signal.SIGCONT)
            await wait_for(lambda: asyncio.sleep(0, "loaded a snapshot" in c.log(lagging)),
                           timeout=90, what="the lagging member to install a snapshot")
            # A proposal made through the member that just installed a snapshot completes.
            await c.put(lagging, "snap/after", "1", timeout=30)
            acked = set(writer.acked.items())
            await wait_for(lambda: asyncio.sleep(0, acked <= {
                (k, r) for r, _t, k in watch.events}), timeout=90,
                what="the lagging member's watch to deliver every write")
        revisions = [r for r, _t, _k in watch.events]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
        stored = await c.get_prefix(lagging, "s/")
        assert set(writer.acked) <= set(stored)
        dumps = [n for n in c.names if os.path.exists(os.path.join(c.data_dir(n), "dump"))]
        assert dumps, "no member wrote a snapshot"


async def test_kill9_all_after_compaction_keeps_everything(cluster: Cluster) -> None:
    async with cluster as c:
        await c.leader()
        writer = Writer(c, "k", c.names)
        task = asyncio.create_task(writer.run())
        await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > 1200), timeout=300,
                       what="writes past several snapshots")
        c.kill(*c.names)
        writer.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        c.up()
        await c.leader()
        for name in c.names:
            stored = await c.get_prefix(name, "k/")
            missing = set(writer.acked) - set(stored)
            assert not missing, f"{name} lost {len(missing)} writes after compaction"
