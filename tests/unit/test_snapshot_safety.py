"""Snapshots and Raft safety, with the production `Replica` on a real data dir.

- Log compaction is two renames (the dump, then the journal cut behind it); a crash
  between them must come back with every entry, not with a journal that pysyncobj
  throws away because it no longer starts where the dump ends.
- A snapshot child that outlives its round (a slow disk) never puts its older state
  over a newer dump, and a fork that fails or a child that hangs or dies does not stop
  snapshots for good.
- A snapshot from the leader that fails to install (a bad checksum, a full disk, a state
  that does not load) is never acknowledged: the leader would move the follower's
  nextIndex past entries it does not have.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pysyncobj.transport
import pytest
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.serializer import Serializer

from raftkube.store import disk
from raftkube.store import journal as jr
from raftkube.store import replica as rep
from raftkube.store import state as st
from tests.unit.conftest import FAST, SECRET, free_port, wait_for
from tests.unit.store_support import dump_index, keys, put_keys, running

pytestmark = pytest.mark.unit


async def test_a_crash_between_the_dump_rename_and_the_journal_cut_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The snapshot child renamed the new dump into place (synced, directory synced),
    and the member died before the tick cut the journal behind it: the data dir holds
    the new dump and the whole old journal, which starts long before the dump ends.
    Every entry the journal holds past the dump was acknowledged and must come back."""
    data_dir = tmp_path / "m1"
    cuts: list[int] = []

    def crashed_before_the_cut(self: jr.Journal, entry_to: int) -> None:
        cuts.append(entry_to)  # the process is gone before the journal is rewritten

    monkeypatch.setattr(jr.Journal, "deleteEntriesTo", crashed_before_the_cut)
    async with running(data_dir, compaction=40) as r:
        await put_keys(r, "a", 60)
        await wait_for(lambda: bool(cuts) and not r._snapshots.pid, deadline=20,
                       what="a snapshot to be written")

        def no_more_snapshots(make_blob: Callable[[], bytes], raft_data: list[Any]) -> None:
            return None

        monkeypatch.setattr(r._snapshots, "start", no_more_snapshots)
        await put_keys(r, "b", 30)  # acknowledged after the dump: only the journal has them
        last = r.view.last_applied
    covered = dump_index(data_dir)
    first_in_journal = jr.read_entries(str(data_dir / jr.JOURNAL))[0][1]
    assert first_in_journal < covered - 1 < last - 30, (first_in_journal, covered, last)
    monkeypatch.undo()
    async with running(data_dir) as r:
        assert len(await keys(r, "a")) == 60
        assert len(await keys(r, "b")) == 30, "entries past the dump were lost"
        assert r.view.last_applied > last
    entries = jr.read_entries(str(data_dir / jr.JOURNAL))
    assert entries[0][1] <= covered - 1 and entries[-1][1] > last


def test_a_journal_that_cannot_be_lined_up_with_the_dump_refuses_start(tmp_path: Path) -> None:
    """Lined up: cut to the dump's last two entries. Older than the dump, or conflicting
    with it: left for pysyncobj to replace. Starting after the dump's next-to-last entry
    and going on past its end: refused (pysyncobj would clear every entry after it)."""
    journal = jr.open_journal(str(tmp_path))
    for i in range(1, 21):
        journal.add(b"\x00e%d" % i, i, 1)
    journal.align_with_dump((b"\x00e9", 9, 1), (b"\x00e10", 10, 1))
    assert [e[1] for e in journal[:]] == list(range(9, 21))
    journal.align_with_dump((b"\x00e9", 9, 1), (b"\x00e10", 10, 2))  # conflicting: kept
    journal.align_with_dump((b"\x00x", 30, 1), (b"\x00y", 31, 1))  # older than the dump
    assert [e[1] for e in journal[:]] == list(range(9, 21))
    with pytest.raises(jr.CorruptData, match="cannot be lined up with the dump"):
        journal.align_with_dump((b"\x00e7", 7, 1), (b"\x00e8", 8, 1))
    journal._destroy()
    again = jr.open_journal(str(tmp_path))
    assert [e[1] for e in again[:]] == list(range(9, 21))  # the cut was durable
    again._destroy()


async def test_a_slow_snapshot_child_never_replaces_a_snapshot_installed_after_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A round of log compaction forks a child that is slow to write (a slow disk); before
    it is done, a snapshot from the leader is installed (through pysyncobj's own receive
    and load path, on the tick thread). The child's state is older than the installed
    one: it must never become the dump, or the journal, cut to the installed snapshot,
    would start after the dump ends."""
    data_dir = tmp_path / "m1"
    parent = os.getpid()
    real_dump = st.State.dump

    def slow_in_the_child(self: st.State) -> bytes:
        if os.getpid() != parent:
            time.sleep(1.5)
        return real_dump(self)

    monkeypatch.setattr(st.State, "dump", slow_in_the_child)
    installed: list[int] = []
    async with running(data_dir, compaction=40) as r:
        await put_keys(r, "a", 50)
        await wait_for(lambda: r._snapshots.pid != 0, deadline=20,
                       what="a snapshot child to be running")
        node = r.node

        def install_from_the_leader() -> None:  # on the tick thread, as pysyncobj does
            if installed:
                return
            newer = st.State.load(real_dump(r.state))
            newer.apply({"op": "put", "req": {"key": b"leader/x", "value": b"1"}})
            index = node.raftLastApplied + 1000
            term = node.raftCurrentTerm
            data = disk.encode_dump(real_dump(newer), [[disk.NO_OP, index, term],
                                                       [disk.NO_OP, index - 1, term], []])
            receive = node._SyncObj__serializer.setTransmissionData
            assert not receive((data[:1000], True, False))
            assert not receive((data[1000:], False, False))
            assert receive((b"", False, True))
            node._SyncObj__loadDumpFile(clearJournal=True)
            installed.append(index)

        node.addOnTickCallback(install_from_the_leader)
        await wait_for(lambda: bool(installed), deadline=10, what="the snapshot install")
        assert dump_index(data_dir) == installed[0]
        await asyncio.sleep(2.5)  # the slow child has finished by now
        assert dump_index(data_dir) == installed[0], "an older snapshot replaced the dump"
        await put_keys(r, "b", 5)
    monkeypatch.undo()
    async with running(data_dir) as r:
        assert await keys(r, "leader") == {b"leader/x"}
        assert len(await keys(r, "b")) == 5
    assert not [n for n in os.listdir(data_dir) if ".snap" in n], "a partial dump was left"


def drive(writer: disk.SnapshotWriter, data_dir: Path) -> Serializer:
    """pysyncobj's own Serializer with the writer as its hook and checker, as SyncObj
    makes it (the serializer hook removes the path pysyncobj renames afterwards)."""

    def serialize(path: str, raft_data: Any) -> None:
        writer.start(lambda: b"state", [list(raft_data[0]), list(raft_data[1]), []])

    return Serializer(str(data_dir / disk.DUMP), 64 * 1024, True, serialize,
                      lambda path: None, writer.check)


def one_round(serializer: Serializer, index: int, *, within: float = 10.0) -> int:
    serializer.serialize((None, (b"\x01", index, 1), (b"\x01", index - 1, 1), set()),
                         index - 1)
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        state, _id = serializer.checkSerializing()
        if state in (SERIALIZER_STATE.SUCCESS, SERIALIZER_STATE.FAILED):
            return int(state)
        time.sleep(0.02)
    raise AssertionError(f"the snapshot round did not end within {within} s")


def test_a_failed_fork_a_dead_child_or_a_hung_one_do_not_stop_snapshots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(disk, "RETRY_FAILED_DUMP", 0.2)
    writer = disk.SnapshotWriter(str(tmp_path), sync=False, max_seconds=1.0)
    serializer = drive(writer, tmp_path)
    assert one_round(serializer, 10) == SERIALIZER_STATE.SUCCESS
    assert dump_index(tmp_path) == 10

    real_fork = os.fork

    def no_fork() -> int:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(disk.os, "fork", no_fork)
    assert one_round(serializer, 20) == SERIALIZER_STATE.FAILED
    monkeypatch.setattr(disk.os, "fork", real_fork)
    time.sleep(0.3)
    assert one_round(serializer, 30) == SERIALIZER_STATE.SUCCESS  # not wedged
    assert dump_index(tmp_path) == 30

    def dies(path: str, blob: bytes, raft_data: Any, *, sync: bool) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    monkeypatch.setattr(disk, "write_dump_file", dies)
    assert one_round(serializer, 40) == SERIALIZER_STATE.FAILED
    time.sleep(0.3)

    def hangs(path: str, blob: bytes, raft_data: Any, *, sync: bool) -> None:
        with open(path, "wb") as f:
            f.write(b"partial")
        time.sleep(60)

    monkeypatch.setattr(disk, "write_dump_file", hangs)
    assert one_round(serializer, 50) == SERIALIZER_STATE.FAILED  # killed after 1 s
    monkeypatch.undo()
    monkeypatch.setattr(disk, "RETRY_FAILED_DUMP", 0.2)
    time.sleep(0.3)
    assert one_round(serializer, 60) == SERIALIZER_STATE.SUCCESS
    assert dump_index(tmp_path) == 60
    assert sorted(os.listdir(tmp_path)) == [disk.DUMP]  # nothing left behind


class Follower:
    """A replica with one peer that never answers, so it never leads; a leader's
    messages are handed to pysyncobj's own handler on the tick thread, and what the
    member sends (what would leave the process) is recorded."""

    def __init__(self, r: rep.Replica, sent: list[dict[str, Any]]) -> None:
        self.r = r
        self.sent = sent
        self.leader = next(iter(r.node.otherNodes))

    async def receive(self, messages: list[dict[str, Any]]) -> None:
        """Hand `messages` to pysyncobj in one tick; return once it has handled them (or
        raised: a failed write fails the replica)."""
        done: list[BaseException | None] = []
        todo = list(messages)

        def handle() -> None:  # on the tick thread, as pysyncobj's transport calls it
            if done or not todo:
                return
            try:
                while todo:
                    self.r.node._SyncObj__onMessageReceived(self.leader, todo.pop(0))
                done.append(None)
            except BaseException as e:
                done.append(e)
                raise

        self.r.node.addOnTickCallback(handle)
        await wait_for(lambda: bool(done), deadline=10, what="the messages to be handled")

    def acks(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("type") == "next_node_idx" and m["success"]]


@asynccontextmanager
async def follower(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Follower]:
    sent: list[dict[str, Any]] = []

    def record(self: Any, node: Any, message: Any) -> bool:
        sent.append(message)
        return False

    monkeypatch.setattr(pysyncobj.transport.TCPTransport, "send", record)
    r = rep.Replica(name="m2", raft_addr=f"127.0.0.1:{free_port()}",
                    peers=[f"127.0.0.1:{free_port()}"], api_url="http://x",
                    data_dir=str(data_dir), secret=SECRET, timing=FAST)
    r.start(asyncio.get_running_loop())
    try:
        yield Follower(r, sent)
    finally:
        await r.stop()


def snapshot_messages(data: bytes, *, term: int, index: int) -> list[dict[str, Any]]:
    chunks = [data[i:i + 4096] for i in range(0, len(data), 4096)] + [b""]
    return [{"type": "append_entries", "term": term, "commit_index": index,
             "serialized": (chunk, i == 0, i == len(chunks) - 1)}
            for i, chunk in enumerate(chunks)]


def leader_dump(*, index: int, term: int, keys: int) -> bytes:
    state = st.State()
    for i in range(keys):
        state.apply({"op": "put", "req": {"key": b"k%d" % i, "value": b"v" * 100}})
    return disk.encode_dump(state.dump(), [[disk.NO_OP, index, term],
                                           [disk.NO_OP, index - 1, term], []])


async def test_a_snapshot_that_fails_its_checksum_is_not_installed_nor_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "m2"
    async with follower(data_dir, monkeypatch) as f:
        good = leader_dump(index=500, term=3, keys=100)
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0xFF
        await f.receive(snapshot_messages(bytes(bad), term=3, index=500))
        assert not f.acks(), f"a snapshot that failed its check was acknowledged: {f.acks()}"
        assert f.r.failure is None  # it stays a follower; the leader sends it again
        assert not (data_dir / disk.DUMP).exists()
        assert f.r.key_count() == 0
        await f.receive(snapshot_messages(good, term=3, index=500))
        assert [a["next_node_idx"] for a in f.acks()] == [501]
        assert f.r.key_count() == 100 and dump_index(data_dir) == 500


async def test_a_snapshot_that_cannot_be_loaded_or_written_is_not_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its checksum holds but the state inside does not load (pysyncobj swallows the
    error from the deserializer and acknowledged it): the member fails, and says
    nothing more to the leader. A write that fails (a full disk) likewise."""
    async with follower(tmp_path / "m2", monkeypatch) as f:
        unloadable = disk.encode_dump(b"\x81\xa1v\x02", [[disk.NO_OP, 500, 3],
                                                         [disk.NO_OP, 499, 3], []])
        await f.receive(snapshot_messages(unloadable, term=3, index=500))
        assert not f.acks(), f"a snapshot that did not load was acknowledged: {f.acks()}"
        failure = await asyncio.wait_for(f.r.wait_failed(), 10)
        assert "cannot install the snapshot it received" in failure.message
    monkeypatch.undo()

    def no_space(fd: int, data: Any) -> int:
        raise OSError(28, os.strerror(28))

    async with follower(tmp_path / "m3", monkeypatch) as f:
        messages = snapshot_messages(leader_dump(index=500, term=3, keys=100), term=3,
                                     index=500)
        await f.receive(messages[:1])
        monkeypatch.setattr(disk.os, "write", no_space)
        await f.receive(messages[1:])
        failure = await asyncio.wait_for(f.r.wait_failed(), 10)
        assert failure.kind == "disk" and "No space left on device" in failure.message
        assert not f.acks()
