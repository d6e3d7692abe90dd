"""A member's data dir damaged or full, with real masters (issue 6, items 7-10).

- A truncated dump, a torn `journal.meta`, or a journal corrupted in the middle: the
  member refuses to start (exit code 3, one line naming the file and, for the journal,
  the offset), so it never serves anything; `rk up` reports it; the others keep serving.
- A journal whose last record is cut (a crash mid-write) is repaired at start: the
  member rejoins, and nothing acknowledged is lost.
- A refused member is replaced through a membership change (remove, wipe, add, start
  with `--initial-cluster-state existing`) while the cluster keeps taking writes.
- A full disk (a follower's data dir on a 4 MiB tmpfs): the member exits cleanly with
  code 4 and says why, the leader's term does not move, writes go on; after space is
  freed the member rejoins with the same data, again without an election.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import yaml

from raftkube.cli import local
from raftkube.cli.master import EXIT_DATA_DIR, EXIT_DISK_FAILED
from raftkube.client.errors import ClientError
from raftkube.store import journal as jr
from tests.cluster.harness import Cluster, RequestFailed, Writer, rk, wait_for

pytestmark = pytest.mark.cluster


# ---- helpers ----------------------------------------------------------------------------

def pid_file(c: Cluster, name: str) -> int:
    with open(os.path.join(c.state_dir, "pids", f"{name}.pid")) as f:
        return int(f.read())


async def wait_exit(c: Cluster, name: str, *, timeout: float) -> int:
    pid = pid_file(c, name)

    async def exited() -> int | None:
        code = local.exit_code(pid)
        return None if code is None else code + 1000  # 0 must count as "exited" too

    return int(await wait_for(exited, timeout=timeout, what=f"{name} to exit")) - 1000


async def term_of(c: Cluster, name: str) -> int:
    status = await c.status(name)
    assert status is not None, f"{name} does not answer"
    return int(status["header"]["raft_term"])


async def follower(c: Cluster) -> tuple[str, str]:
    leader = await c.leader()
    return leader, next(n for n in c.names if n != leader)


async def refuses_connections(c: Cluster, name: str) -> bool:
    """Nothing answers on the member's API port (it is not serving anything at all)."""
    try:
        await c.call(name, "/v3/kv/range", {"key": "YQ==", "serializable": True},
                     timeout=1.0)
    except (aiohttp.ClientConnectionError, TimeoutError):
        return True
    return False


async def has_all(c: Cluster, name: str, keys: set[str], prefix: str) -> bool:
    try:
        stored = await c.get_prefix(name, prefix, serializable=True)
    except (aiohttp.ClientError, TimeoutError, RequestFailed):
        return False
    return keys <= set(stored)


async def ready(c: Cluster, name: str) -> bool:
    assert c.session is not None
    try:
        async with c.session.get(c.url[name] + "/readyz",
                                 timeout=aiohttp.ClientTimeout(total=1)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def same_data_everywhere(c: Cluster, prefix: str, names: list[str]) -> None:
    leader = await c.leader(among=names)
    want = await c.get_prefix(leader, prefix)
    for name in names:
        await wait_for(lambda name=name: _equal(c, name, prefix, want), timeout=30,
                       what=f"{name} to hold the same {prefix} keys as {leader}")


async def _equal(c: Cluster, name: str, prefix: str, want: dict[str, Any]) -> bool:
    try:
        return await c.get_prefix(name, prefix, serializable=True) == want
    except (aiohttp.ClientError, TimeoutError, RequestFailed):
        return False


async def put_some(c: Cluster, among: list[str], prefix: str, n: int) -> dict[str, int]:
    acked = {}
    for i in range(n):
        key = f"{prefix}/{i:05d}"
        acked[key] = await c.put_anywhere(key, f"v{i}", among=among,
                                          deadline=time.monotonic() + 20)
    return acked


def set_master_args(state_dir: str, args: list[str]) -> None:
    """Flags for every member, kept in the layout that `rk up` reads."""
    layout = local.load_layout(state_dir, 3)
    layout["master_args"] = args
    local._write(os.path.join(state_dir, "cluster.yaml"), yaml.safe_dump(layout))


# ---- item 7: a truncated dump -----------------------------------------------------------

async def test_a_truncated_dump_refuses_start_and_never_serves(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    c = Cluster(str(tmp_path_factory.mktemp("dump")))
    set_master_args(c.state_dir, ["--log-compaction-entries", "100"])
    try:
        c.up()
        async with c:
            leader, victim = await follower(c)
            acked = await put_some(c, c.names, "d", 250)
            dump = os.path.join(c.data_dir(victim), "dump")
            await wait_for(lambda: asyncio.sleep(0, os.path.exists(dump)), timeout=30,
                           what=f"{victim} to write a dump")
            c.kill(victim)
            os.truncate(dump, os.path.getsize(dump) - 100)
            others = [n for n in c.names if n != victim]
            acked |= await put_some(c, others, "d2", 20)
            # `rk up` starts it again, notices that it exited, and says why.
            with pytest.raises(ClientError) as e:
                local.up(state_dir=c.state_dir, masters=3, agents=0, timeout=60)
            assert f"{victim} exited with code {EXIT_DATA_DIR}" in str(e.value)
            assert dump in str(e.value) and "truncated" in str(e.value)
            assert local.exit_code(pid_file(c, victim)) == EXIT_DATA_DIR
            last = c.log(victim).strip().splitlines()[-1]
            assert last.startswith(f"error: member {victim} refuses to start: {dump}: ")
            assert "Traceback" not in c.log(victim)
            assert await refuses_connections(c, victim)  # never served, not even empty
            # The other two keep serving reads and writes, with everything acknowledged.
            for name in others:
                stored = await c.get_prefix(name, "d")
                assert set(acked) <= set(stored)
            await c.put(others[0], "after", "x")
    finally:
        c.down()


# ---- item 8: a torn last record ---------------------------------------------------------

async def test_a_torn_last_record_is_repaired_and_the_member_rejoins(cluster: Cluster) -> None:
    async with cluster as c:
        leader, victim = await follower(c)
        term = await term_of(c, leader)
        writer = Writer(c, "t", c.names)
        task = asyncio.create_task(writer.run())
        await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > 200), timeout=30,
                       what="writes")
        c.kill(victim)  # kill -9 mid-stream
        writer.among = [n for n in c.names if n != victim]
        journal = os.path.join(c.data_dir(victim), "journal")
        last = jr.scan(journal).offsets[-1]
        os.truncate(journal, os.path.getsize(journal) - 5)  # a crash mid-write
        count = len(writer.acked)
        await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > count + 100),
                       timeout=30, what="writes without the member")
        c.start(victim)
        await wait_for(lambda: ready(c, victim), timeout=30, what=f"{victim} to be ready")
        writer.stop()
        await task
        await wait_for(lambda: has_all(c, victim, set(writer.acked), "t/"), timeout=30,
                       what=f"{victim} to catch up")
        log = c.log(victim)
        repaired = [line for line in log.splitlines() if "torn tail repaired" in line]
        assert len(repaired) == 1 and journal in repaired[0]
        assert f"from byte offset {last}" in repaired[0]
        assert "raft tick failed" not in log and "CRITICAL" not in log
        for name in c.names:  # nothing acknowledged is lost anywhere
            stored = await c.get_prefix(name, "t/")
            assert set(writer.acked) <= set(stored)
            assert all(stored[k][1] >= rev for k, rev in writer.acked.items())
        assert await term_of(c, leader) == term  # the member rejoined without an election


# ---- item 8: corruption in the middle, and the documented recovery -----------------------

async def test_a_journal_corrupted_in_the_middle_refuses_start_and_is_replaced(
        cluster: Cluster) -> None:
    async with cluster as c:
        leader, victim = await follower(c)
        term = await term_of(c, leader)
        acked = await put_some(c, c.names, "m", 150)
        others = [n for n in c.names if n != victim]
        writer = Writer(c, "w", others)  # the cluster keeps writing throughout
        task = asyncio.create_task(writer.run())
        c.kill(victim)
        journal = os.path.join(c.data_dir(victim), "journal")
        scanned = jr.scan(journal)
        where = scanned.size // 2
        bad = max(o for o in scanned.offsets if o <= where)
        with open(journal, "r+b") as f:
            f.seek(where)
            f.write(os.urandom(64))
        c.start(victim)
        assert await wait_exit(c, victim, timeout=30) == EXIT_DATA_DIR
        last = c.log(victim).strip().splitlines()[-1]
        assert journal in last and f"corrupt journal record at byte offset {bad}" in last
        assert "rk member remove" in last and "--initial-cluster-state existing" in last
        assert await refuses_connections(c, victim)

        # The recovery the message names: a membership change, never a blank restart.
        raft_addr = c.members[victim]["raft"]
        out = rk(c, "member", "remove", victim)
        assert out.returncode == 0, out.stderr
        assert f"removed member {victim}" in out.stdout
        listed = await c.call(leader, "/v3/cluster/member/list")
        assert victim not in {m["name"] for m in listed["members"]}
        shutil.rmtree(c.data_dir(victim))
        out = rk(c, "member", "add", "--raft", raft_addr)
        assert out.returncode == 0, out.stderr
        c.start(victim, ["--initial-cluster-state", "existing"])
        await wait_for(lambda: ready(c, victim), timeout=40, what=f"{victim} to be ready")
        await wait_for(lambda: has_all(c, victim, set(acked), "m/"), timeout=40,
                       what=f"{victim} to catch up as a new member")
        count = len(writer.acked)
        await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > count + 50),
                       timeout=30, what="writes after the member rejoined")
        writer.stop()
        await task
        gaps = [b - a for a, b in zip(writer.ack_times, writer.ack_times[1:], strict=False)]
        assert max(gaps) < 5.0, f"writes stalled for {max(gaps):.1f}s during the recovery"
        await same_data_everywhere(c, "m/", c.names)
        await same_data_everywhere(c, "w/", c.names)
        assert await term_of(c, leader) == term
        assert jr.read_meta(c.data_dir(victim))[0] == term  # it knows the current term


# ---- item 9: a truncated journal.meta ---------------------------------------------------

async def test_a_truncated_meta_refuses_start(cluster: Cluster) -> None:
    async with cluster as c:
        _leader, victim = await follower(c)
        await put_some(c, c.names, "v", 20)
        c.kill(victim)
        meta = os.path.join(c.data_dir(victim), "journal.meta")
        assert jr.read_meta(c.data_dir(victim))[0] >= 1  # the term it knows, and its vote
        with open(meta, "rb") as f:
            saved = f.read()
        os.truncate(meta, len(saved) - 3)
        c.start(victim)
        assert await wait_exit(c, victim, timeout=30) == EXIT_DATA_DIR
        last = c.log(victim).strip().splitlines()[-1]
        assert meta in last and "vote" in last
        assert await refuses_connections(c, victim)
        # With its meta whole again, the same member starts and rejoins: the refusal
        # was about the meta alone.
        with open(meta, "wb") as f:
            f.write(saved)
        c.start(victim)
        await wait_for(lambda: ready(c, victim), timeout=30, what=f"{victim} to rejoin")


# ---- item 10: a full disk ---------------------------------------------------------------

TMPFS_SIZE = "4m"


class TmpfsCluster(Cluster):
    """A cluster that can move a stopped member's data dir onto a small tmpfs."""

    mounts: list[str]

    def move_onto_tmpfs(self, name: str) -> str:
        data = self.data_dir(name)
        saved = data + ".saved"
        os.rename(data, saved)
        os.mkdir(data)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", data],
                       check=True)
        self.mounts.append(data)
        for entry in os.listdir(saved):
            shutil.copy2(os.path.join(saved, entry), os.path.join(data, entry))
        shutil.rmtree(saved)
        return data


@pytest.fixture
def tmpfs_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TmpfsCluster]:
    """Members are stopped before the tmpfs is unmounted (they hold it open), pass or
    fail."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    c = TmpfsCluster(str(tmp_path_factory.mktemp("fulldisk")))
    c.mounts = []
    try:
        # What is tested is that the failing member drives no term up; etcd's election
        # timeout keeps a tick held up by the machine (2 cores, the whole tier) from
        # starting an election between the other two meanwhile (CI saw term 1 -> 3).
        c.up(master_args=["--election-timeout", "1-2", "--heartbeat", "0.1"])
        yield c
    finally:
        c.down()
        for path in c.mounts:
            subprocess.run(["umount", path], check=False)
            if os.path.ismount(path):
                subprocess.run(["umount", "-l", path], check=False)


def fill(path: str, *, leave: int) -> str:
    """Fill the file system holding `path` until `leave` bytes are free."""
    st = os.statvfs(path)
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def elections_said(c: Cluster) -> str:
    """What every member's log says of terms, leaders and slow ticks (for a failure)."""
    return "; ".join(f"{n}: " + " | ".join(
        line for line in c.log(n).splitlines()
        if "raft term" in line or "tick took" in line or "CRITICAL" in line)[-1500:]
        for n in c.names)


async def test_a_full_disk_stops_the_member_cleanly_and_it_rejoins_after(
        tmpfs_cluster: TmpfsCluster) -> None:
    async with tmpfs_cluster as c:
        leader, victim = await follower(c)
        c.kill(victim)
        data = tmpfs_cluster.move_onto_tmpfs(victim)
        c.start(victim)
        await wait_for(lambda: ready(c, victim), timeout=30, what=f"{victim} to rejoin")
        term = await term_of(c, leader)
        filler = fill(data, leave=64 * 1024)
        others = [n for n in c.names if n != victim]
        writers = [Writer(c, f"f{i}", others) for i in range(2)]
        tasks = [asyncio.create_task(w.run()) for w in writers]

        code = await wait_exit(c, victim, timeout=60)
        assert code == EXIT_DISK_FAILED  # an exit, not a signal (SIGBUS would be -7)
        died = time.monotonic()
        log = c.log(victim)
        assert "CRITICAL" in log and f"member {victim} cannot write its journal " \
            "(No space left on device" in log
        assert "raft tick failed" not in log
        # No election, no term driven up.
        assert await term_of(c, leader) == term, elections_said(c)
        await wait_for(lambda: asyncio.sleep(0, all(
            sum(t > died for t in w.ack_times) > 50 for w in writers)),
            timeout=30, what="writes to go on without the member")

        os.unlink(filler)  # space is freed; the member comes back
        c.start(victim)
        await wait_for(lambda: ready(c, victim), timeout=30, what=f"{victim} to rejoin")
        for w in writers:
            w.stop()
        await asyncio.gather(*tasks)
        for w in writers:
            await wait_for(lambda w=w: has_all(c, victim, set(w.acked), w.prefix + "/"),
                           timeout=30, what=f"{victim} to catch up")
            await same_data_everywhere(c, w.prefix + "/", c.names)
        assert await term_of(c, leader) == term
        log = c.log(victim)
        assert "truncating already-applied" not in log
        assert log.count("CRITICAL") == 1  # the one line that said why it stopped
