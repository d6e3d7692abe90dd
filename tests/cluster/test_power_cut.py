"""Acknowledged means durable, through a power cut rather than a kill.

`kill -9` leaves the page cache, so a journal that was never synced survives it. Here the
masters' data dirs are FaultFS mounts (chaos/faultfs.py): what a member wrote but did not
sync is dropped when the power is cut, as a real machine would drop it. Each scenario
kills every master, cuts the power on all three, and restarts them. The same scenario
with `--unsafe-no-fsync` must lose the writes, which shows that the safe one can fail.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from chaos.faultfs import FaultFS
from raftkube.client.errors import ClientError
from tests.cluster.harness import Cluster, Writer, wait_for

pytestmark = pytest.mark.cluster

NAMES = ("m1", "m2", "m3")


class PowerCluster(Cluster):
    """A cluster whose members' data dirs are FaultFS mounts; `cut_power` cuts them all."""

    def __init__(self, state_dir: str) -> None:
        super().__init__(state_dir)
        self.disks = {n: FaultFS(os.path.join(state_dir, "disk", n), self.data_dir(n))
                      for n in NAMES}

    def cut_power(self) -> list[dict[str, object]]:
        assert all(self.pid(n) is None for n in NAMES), "kill every master first"
        return [self.disks[n].cut_power() for n in NAMES]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerCluster]:
    c = PowerCluster(str(tmp_path_factory.mktemp("cluster")))
    try:
        for disk in c.disks.values():
            disk.mount()
        c.up()
        yield c
    finally:
        c.down()
        for disk in c.disks.values():
            disk.unmount()


async def write_until(c: Cluster, prefix: str, n: int) -> list[Writer]:
    """Writers through every member until `n` writes are acknowledged; then kill -9 all
    the masters mid-stream. Returns the writers with what they had acknowledged."""
    writers = [Writer(c, f"{prefix}{i}", c.names) for i in range(8)]
    tasks = [asyncio.create_task(w.run()) for w in writers]
    await wait_for(lambda: asyncio.sleep(0, sum(len(w.acked) for w in writers) >= n),
                   timeout=180, what=f"{n} acknowledged writes")
    await asyncio.get_running_loop().run_in_executor(None, lambda: c.kill(*c.names))
    for w in writers:
        w.stop()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return writers


async def restart(c: Cluster, **kw: list[str]) -> None:
    try:
        await asyncio.get_running_loop().run_in_executor(None, lambda: c.up(**kw))
    except ClientError as e:  # e.g. a journal that came back empty
        tails = {n: c.log(n)[-600:] for n in c.names}
        raise AssertionError(f"the cluster did not come back after the power cut: {e}; "
                             f"logs end with {tails}") from e
    await c.leader(timeout=30)


async def stored(c: Cluster, name: str, writers: list[Writer]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in writers:
        got = await c.get_prefix(name, w.prefix + "/")
        out.update({k: rev for k, (_v, rev) in got.items()})
    return out


async def test_power_cut_after_kill9_of_every_master_loses_no_acknowledged_write(
        cluster: PowerCluster) -> None:
    async with cluster as c:
        await c.leader()
        writers = await write_until(c, "a", 300)
        cuts = c.cut_power()
        assert all(cut["cuts"] == 1 for cut in cuts)
        await restart(c)
        for name in c.names:
            have = await stored(c, name, writers)
            for w in writers:
                lost = sorted(k for k, rev in w.acked.items() if have.get(k, 0) < rev)
                assert not lost, f"{name} lost {len(lost)} acknowledged writes: {lost[:5]}"


async def test_power_cut_while_members_compact_their_logs_loses_no_acknowledged_write(
        cluster: PowerCluster) -> None:
    """Members snapshot every 300 entries (the dump renamed into place, then the journal
    cut behind it), so kill -9 lands during or between compactions: after the power cut
    each member holds a dump and a journal that line up, or is lined up at start, and
    no acknowledged write is lost (pysyncobj cleared a journal that no longer started
    where the dump ended, with every entry past the dump)."""
    async with cluster as c:
        await asyncio.get_running_loop().run_in_executor(None, lambda: c.kill(*c.names))
        await restart(c, master_args=["--log-compaction-entries", "300"])
        writers = await write_until(c, "c", 1000)
        dumps = [n for n in c.names if os.path.exists(os.path.join(c.data_dir(n), "dump"))]
        assert dumps, "no member compacted its log"
        c.cut_power()
        await restart(c)
        for name in c.names:
            have = await stored(c, name, writers)
            for w in writers:
                lost = sorted(k for k, rev in w.acked.items() if have.get(k, 0) < rev)
                assert not lost, f"{name} lost {len(lost)} acknowledged writes: {lost[:5]}"


async def test_without_fsync_a_power_cut_loses_acknowledged_writes(
        cluster: PowerCluster) -> None:
    """The same scenario with `--unsafe-no-fsync` (no journal, meta or directory fsync):
    what was acknowledged since the switch does not survive the cut, which shows that
    the cut drops exactly the unsynced part and that the test above can fail. A member
    either comes back without those writes, or, when the cut left a meta or journal
    that fails its checks, refuses to start and says so: the loss is found, not served.
    Either way nothing acknowledged without fsync is read back."""
    async with cluster as c:
        await c.leader()
        before = await write_until(c, "safe", 100)
        await restart(c, master_args=["--unsafe-no-fsync"])
        after = await write_until(c, "unsafe", 300)
        assert sum(len(w.acked) for w in after) >= 300
        c.cut_power()
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, lambda: c.up(master_args=[]))
        except ClientError as e:
            refused = [n for n in c.names if "refuses to start" in c.log(n)]
            assert refused, f"the cluster did not come back, for no stated reason: {e}"
            for name in refused:
                assert "journal" in c.log(name).split("refuses to start", 1)[1], name
            return
        await c.leader(timeout=30)
        for name in c.names:
            have = await stored(c, name, before + after)
            for w in before:
                kept = [k for k, rev in w.acked.items() if have.get(k, 0) >= rev]
                assert len(kept) == len(w.acked), f"{name} lost writes that were synced"
            lost = [k for w in after for k, rev in w.acked.items() if have.get(k, 0) < rev]
            acked = sum(len(w.acked) for w in after)
            assert len(lost) == acked, (
                f"{name} kept {acked - len(lost)} of {acked} writes acknowledged without "
                "fsync: the power cut did not drop unsynced data")


async def test_term_and_vote_survive_a_power_cut(cluster: PowerCluster) -> None:
    """A member that forgets its term or its vote can vote twice in one term. After a few
    elections, each member's term and vote as its last write left them (read through
    the mount after the kill: synced or not) must be what is on disk after the cut, and
    no lower than the term it reported while it ran."""
    async with cluster as c:
        for _ in range(3):  # elections: pause the leader until the others move on
            leader = await c.leader()
            pid = c.pid(leader)
            assert pid is not None
            others = [n for n in c.names if n != leader]
            os.kill(pid, signal.SIGSTOP)
            try:
                await c.leader(among=others)
            finally:
                os.kill(pid, signal.SIGCONT)
        await wait_for(lambda: _one_leader_everywhere(c), timeout=30,
                       what="every member to follow one leader")
        # A member also rewrites its meta file when its commit index moves (pysyncobj:
        # about once a second, by rename). Write until every member has replaced the
        # file since the last election (a new inode), or for 5 s if it never does.
        meta = {n: os.path.join(c.data_dir(n), "journal.meta") for n in c.names}
        inode = {n: os.stat(meta[n]).st_ino for n in c.names}
        deadline = time.monotonic() + 5
        i = 0
        while time.monotonic() < deadline and any(
                os.stat(meta[n]).st_ino == inode[n] for n in c.names):
            await c.put(c.names[i % 3], f"k{i}", "v")
            i += 1
        reported = {}
        for name in c.names:
            status = await c.status(name)
            assert status is not None
            reported[name] = int(status["header"]["raft_term"])
        await asyncio.get_running_loop().run_in_executor(None, lambda: c.kill(*c.names))
        acted = {name: c.term_and_vote_on_disk(name) for name in c.names}
        assert all(acted[n][0] >= reported[n] > 1 for n in c.names), (acted, reported)
        c.cut_power()
        on_disk = {name: c.term_and_vote_on_disk(name) for name in c.names}
        assert on_disk == acted, f"term/vote lost in the power cut: {acted} -> {on_disk}"


async def _one_leader_everywhere(c: Cluster) -> bool:
    statuses = await asyncio.gather(*(c.status(n) for n in c.names))
    leaders = {s["leader"] for s in statuses if s}
    return len(leaders) == 1 and None not in leaders and "0" not in leaders
