"""The journal, its meta and the dump on disk: round trips, torn tails repaired,
corruption refused with the file and offset named, failed writes that leave memory and
file alike, and the start-time checks that run before pysyncobj sees any file."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as hs

from raftkube.cli import main as cli_main
from raftkube.cli import master
from raftkube.store import disk
from raftkube.store import journal as jr

pytestmark = pytest.mark.unit


def entries(n: int, *, first: int = 1, term: int = 1) -> list[tuple[bytes, int, int]]:
    return [(b"\x00cmd-%d-" % i + b"x" * (i % 7), i, term) for i in range(first, first + n)]


def fill(data_dir: Path, n: int) -> jr.Journal:
    journal = jr.open_journal(str(data_dir))
    for e in entries(n):
        journal.add(*e)
    journal.flush_if_dirty()
    return journal


def reopen(journal: jr.Journal) -> jr.Journal:
    journal._destroy()
    return jr.open_journal(journal.data_dir, sync=journal.sync)


def test_a_new_journal_round_trips_entries_term_vote_and_commit_index(tmp_path: Path) -> None:
    journal = jr.open_journal(str(tmp_path))
    assert len(journal) == 0
    assert jr.read_meta(str(tmp_path)) == (0, None, 1)  # written before the journal
    for e in entries(50):
        journal.add(*e)
    journal.setCurrentTerm(3, "127.0.0.1:7001")
    assert jr.read_meta(str(tmp_path)) == (3, "127.0.0.1:7001", 1)  # synchronously
    journal.setRaftCommitIndex(40)
    assert jr.read_meta(str(tmp_path))[2] == 1  # the commit index is written lazily...
    journal.onOneSecondTimer()
    assert jr.read_meta(str(tmp_path)) == (3, "127.0.0.1:7001", 40)  # ...once a second
    journal.flush_if_dirty()
    assert journal.flushes == 1
    again = reopen(journal)
    assert list(again[:]) == entries(50)
    assert (again.getCurrentTerm(), again.getVotedForNodeId(), again.getRaftCommitIndex()) == (
        3, "127.0.0.1:7001", 40)
    again._destroy()


def test_delete_entries_from_and_to_survive_a_reopen(tmp_path: Path) -> None:
    journal = fill(tmp_path, 30)
    journal.deleteEntriesFrom(20)  # a new leader's log disagreed from index 21
    journal.add(b"\x00new", 21, 2)
    journal = reopen(journal)
    assert list(journal[:]) == entries(20) + [(b"\x00new", 21, 2)]
    journal.deleteEntriesTo(15)  # a dump covers the first 15 entries
    assert journal[0][1] == 16
    journal.add(b"\x00more", 22, 2)
    journal = reopen(journal)
    assert [e[1] for e in journal[:]] == list(range(16, 23))
    journal.deleteEntriesFrom(3)
    journal = reopen(journal)
    assert [e[1] for e in journal[:]] == [16, 17, 18]
    journal.clear()
    journal = reopen(journal)
    assert len(journal) == 0
    assert os.path.getsize(journal.path) == jr.HEADER_SIZE
    assert not os.path.exists(journal.path + ".tmp")
    journal._destroy()


def last_record_offset(path: str) -> int:
    return jr.scan(path).offsets[-1]


def cut(path: str, nbytes: int) -> None:
    os.truncate(path, os.path.getsize(path) - nbytes)


def zero_last_record(path: str) -> None:
    off = last_record_offset(path)
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(b"\0" * (os.path.getsize(path) - off))


def flip_in_last_record(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        byte = f.read(1)
        f.seek(-3, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))


def append_zeros(path: str) -> None:
    with open(path, "ab") as f:
        f.write(b"\0" * 4096)  # a file extended past what was written, as after a crash


@pytest.mark.parametrize(("damage", "kept"), [
    (lambda p: cut(p, 1), 9),
    (lambda p: cut(p, 5), 9),  # the case: the last record cut by 5 bytes
    (lambda p: cut(p, 20), 9),  # into the index and term
    (lambda p: cut(p, os.path.getsize(p) - last_record_offset(p) - 3), 9),  # half a header
    (zero_last_record, 9),
    (flip_in_last_record, 9),  # a checksum-failing last record that ends at EOF
    (append_zeros, 10),
], ids=["cut-1", "cut-5", "cut-20", "cut-to-3-bytes", "zeroed", "bad-crc", "zero-tail"])
def test_a_torn_tail_is_cut_at_the_last_whole_record_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any, kept: int) -> None:
    journal = fill(tmp_path, 10)
    journal.setCurrentTerm(1, None)
    path = journal.path
    journal._destroy()
    whole = last_record_offset(path) if kept == 9 else os.path.getsize(path)
    size = os.path.getsize(path)
    damage(path)
    dropped = os.path.getsize(path) - whole
    with caplog.at_level(logging.WARNING, logger="raftkube.store.journal"):
        journal = jr.open_journal(str(tmp_path))
    assert list(journal[:]) == entries(kept)
    assert os.path.getsize(path) == whole <= size
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert path in warnings[0] and f"{dropped} bytes dropped from byte offset {whole}" in (
        warnings[0])
    journal.add(b"\x00after", kept + 1, 1)  # appends go on from the repaired end
    journal = reopen(journal)
    assert journal[-1] == (b"\x00after", kept + 1, 1)
    journal._destroy()


def write_at(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("where", ["body", "length", "crc", "random"])
def test_corruption_in_the_middle_refuses_start_naming_file_and_offset(
        tmp_path: Path, where: str) -> None:
    journal = fill(tmp_path, 40)
    path = journal.path
    journal._destroy()
    bad = jr.scan(path).offsets[17]
    if where == "body":
        write_at(path, bad + 8 + 16 + 2, b"\xff\xfe")
    elif where == "length":
        write_at(path, bad, b"\xff\xff\x00\x00")  # now past the end of the file
    elif where == "crc":
        write_at(path, bad + 4, b"\x00\x00\x00\x00")
    else:
        write_at(path, bad + 3, os.urandom(30))
    before = Path(path).read_bytes()
    with pytest.raises(jr.CorruptData) as e:
        jr.open_journal(str(tmp_path))
    message = str(e.value)
    assert path in message and f"byte offset {bad}" in message
    assert "rk member remove" in message and "--initial-cluster-state existing" in message
    assert Path(path).read_bytes() == before  # nothing repaired, nothing lost


def test_records_out_of_order_are_corruption(tmp_path: Path) -> None:
    journal = jr.open_journal(str(tmp_path))
    journal.add(b"\x00a", 5, 1)
    journal.add(b"\x00b", 7, 1)
    journal._destroy()
    with pytest.raises(jr.CorruptData, match="log index 7 follows 5"):
        jr.open_journal(str(tmp_path))


@pytest.mark.parametrize("damage", [
    lambda p: os.truncate(p, os.path.getsize(p) - 5),
    lambda p: os.truncate(p, 3),
    lambda p: os.truncate(p, 0),
    lambda p: write_at(p, os.path.getsize(p) - 4, b"1234"),
    lambda p: Path(p).write_bytes(b"garbage"),
], ids=["cut-5", "cut-to-3", "empty", "body-changed", "garbage"])
def test_a_torn_or_corrupted_meta_refuses_start(tmp_path: Path, damage: Any) -> None:
    journal = fill(tmp_path, 5)
    journal.setCurrentTerm(7, "127.0.0.1:7002")
    journal._destroy()
    meta = os.path.join(tmp_path, jr.META)
    damage(meta)
    with pytest.raises(jr.CorruptData) as e:
        jr.open_journal(str(tmp_path))
    assert meta in str(e.value) and "vote" in str(e.value)
    with pytest.raises(jr.CorruptData):
        jr.read_meta(str(tmp_path))


def test_a_missing_meta_or_journal_refuses_start(tmp_path: Path) -> None:
    journal = fill(tmp_path, 5)
    journal.setCurrentTerm(2, None)
    journal._destroy()
    os.rename(os.path.join(tmp_path, jr.META), os.path.join(tmp_path, "saved"))
    with pytest.raises(jr.DataDirError, match="journal.meta is missing"):
        jr.open_journal(str(tmp_path))
    os.rename(os.path.join(tmp_path, "saved"), os.path.join(tmp_path, jr.META))
    os.unlink(os.path.join(tmp_path, jr.JOURNAL))
    with pytest.raises(jr.DataDirError, match="records term 2"):
        jr.open_journal(str(tmp_path))


def test_old_unchecksummed_files_are_refused_with_the_way_to_upgrade(tmp_path: Path) -> None:
    (tmp_path / jr.JOURNAL).write_bytes(b"PYSYNCOBJ" + b"\0" * 60)
    with pytest.raises(jr.DataDirError, match="older raftkube.*rk snapshot save"):
        jr.open_journal(str(tmp_path))
    import msgpack

    (tmp_path / disk.DUMP).write_bytes(msgpack.packb({"state": b"s", "raft": []}))
    with pytest.raises(jr.DataDirError, match="older raftkube.*rk snapshot restore"):
        disk.read_dump_file(str(tmp_path / disk.DUMP))


class FullDisk:
    """os.pwrite that takes `room` more bytes and then fails with ENOSPC, as a full
    file system does (a short write first, then the error)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.pwrite

    def __call__(self, fd: int, data: Any, offset: int) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = min(len(data), self.room)
        self.room -= n
        return self.real(fd, bytes(data[:n]), offset)


def test_a_full_disk_fails_the_append_and_leaves_memory_and_file_alike(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = fill(tmp_path, 10)
    size = os.path.getsize(journal.path)
    monkeypatch.setattr(jr.os, "pwrite", FullDisk(room=7))  # 7 bytes of a record fit
    with pytest.raises(jr.DiskWriteError) as e:
        journal.add(b"\x00big" * 100, 11, 1)
    assert e.value.errno == errno.ENOSPC and "No space left on device" in str(e.value)
    assert journal.path in str(e.value)
    assert len(journal) == 10 and journal[-1] == entries(10)[-1]
    assert os.path.getsize(journal.path) == size  # the partial record was cut off again
    # Sticky: nothing is written or acknowledged past a failed write.
    monkeypatch.setattr(jr.os, "pwrite", FullDisk(room=10**9))
    with pytest.raises(jr.DiskWriteError):
        journal.add(b"\x00small", 11, 1)
    with pytest.raises(jr.DiskWriteError):
        journal.setCurrentTerm(5, None)
    with pytest.raises(jr.DiskWriteError):
        journal.flush_if_dirty()
    journal._destroy()
    again = jr.open_journal(str(tmp_path))
    assert list(again[:]) == entries(10)
    again._destroy()


def test_a_failed_vote_write_keeps_the_old_term_and_vote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = fill(tmp_path, 3)
    journal.setCurrentTerm(4, "127.0.0.1:1")
    monkeypatch.setattr(jr.os, "pwrite", FullDisk(room=0))
    with pytest.raises(jr.DiskWriteError) as e:
        journal.setCurrentTerm(5, "127.0.0.1:2")
    assert jr.META in str(e.value)
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (4, "127.0.0.1:1")
    assert jr.read_meta(str(tmp_path))[:2] == (4, "127.0.0.1:1")
    assert not os.path.exists(os.path.join(tmp_path, jr.META + ".tmp"))
    journal._destroy()


def test_unsafe_no_fsync_skips_every_fsync(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(jr.os, "fsync", lambda fd: calls.append("fsync"))
    monkeypatch.setattr(jr.os, "fdatasync", lambda fd: calls.append("fdatasync"))
    journal = jr.open_journal(str(tmp_path), sync=False)
    for e in entries(5):
        journal.add(*e)
    journal.flush_if_dirty()
    journal.setCurrentTerm(2, None)
    journal.deleteEntriesFrom(3)
    journal.deleteEntriesTo(1)
    journal.setRaftCommitIndex(4)
    journal.onOneSecondTimer()
    disk.replace_dump_file(str(tmp_path), b"state", disk.fresh_raft_entries(), sync=False)
    journal._destroy()
    assert calls == []
    journal = jr.open_journal(str(tmp_path))  # and the default syncs
    journal.add(b"\x00x", 5, 2)
    journal.flush_if_dirty()
    journal._destroy()
    assert calls


# ---- the dump ---------------------------------------------------------------------------

def test_a_dump_round_trips_and_any_damage_is_refused_with_the_file_named(
        tmp_path: Path) -> None:
    disk.replace_dump_file(str(tmp_path), b"state" * 1000, [[b"\x01", 7, 2], [b"\x01", 6, 2],
                                                            ["127.0.0.1:1"]])
    path = os.path.join(tmp_path, disk.DUMP)
    blob, raft_data = disk.read_dump_file(path)
    assert blob == b"state" * 1000 and raft_data[0] == [b"\x01", 7, 2]
    good = Path(path).read_bytes()
    for damaged, words in [
        (good[:-100], "truncated"),  # the case: cut by 100 bytes
        (good[:40], "not a raftkube dump"),
        (good + b"x", "truncated or padded"),
        (good[:-1] + bytes([good[-1] ^ 1]), "checksum mismatch"),
        (b"", "not a raftkube dump"),
    ]:
        Path(path).write_bytes(damaged)
        with pytest.raises(jr.CorruptData, match=words) as e:
            disk.read_dump_file(path)
        assert path in str(e.value)


def test_a_dump_that_cannot_be_written_leaves_no_partial_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(disk.os, "fsync", no_space)
    with pytest.raises(OSError):
        disk.replace_dump_file(str(tmp_path), b"s", disk.fresh_raft_entries())
    assert os.listdir(tmp_path) == []


def test_recovery_reads_the_new_journal(tmp_path: Path) -> None:
    journal = jr.open_journal(str(tmp_path))
    journal.add(b"\x01", 1, 1)
    journal._destroy()
    assert disk.journal_commands(journal.path, after_index=0) == []


# ---- a member refuses a bad data dir before pysyncobj runs -------------------------------

def test_rk_master_refuses_a_truncated_dump_in_one_line_with_its_own_exit_code(
        tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    disk.replace_dump_file(str(data), b"x" * 500, disk.fresh_raft_entries())
    cut(str(data / disk.DUMP), 100)
    token = tmp_path / "token"
    token.write_text("t" * 24)
    result = CliRunner().invoke(cli_main.main, [
        "master", "--name", "m9", "--api", "127.0.0.1:1", "--raft", "127.0.0.1:2",
        "--data-dir", str(data), "--token-file", str(token), "--insecure-http"])
    assert result.exit_code == master.EXIT_DATA_DIR
    out = result.output + (result.stderr or "")
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines[-1].startswith("error: member m9 refuses to start: ")
    assert str(data / disk.DUMP) in lines[-1] and "truncated" in lines[-1]
    assert "Traceback" not in out
    assert not (data / jr.JOURNAL).exists()  # refused before anything was opened


# ---- any sequence of operations reads back the same after a reopen ----------------------

OPS = hs.lists(hs.one_of(
    hs.tuples(hs.just("add"), hs.binary(max_size=300)),
    hs.tuples(hs.just("from"), hs.integers(0, 40)),
    hs.tuples(hs.just("to"), hs.integers(0, 40)),
    hs.tuples(hs.just("term"), hs.integers(0, 50)),
    hs.tuples(hs.just("commit"), hs.integers(1, 100)),
    hs.tuples(hs.just("reopen"), hs.none()),
    hs.tuples(hs.just("clear"), hs.none()),
), max_size=60)


@settings(max_examples=60, deadline=None)
@given(ops=OPS)
def test_any_sequence_of_operations_reads_back_after_a_reopen(
        tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, Any]]) -> None:
    data_dir = str(tmp_path_factory.mktemp("j"))
    journal = jr.open_journal(data_dir, sync=False)  # what is read back, not fsync
    model: list[tuple[bytes, int, int]] = []
    term, vote, commit = 0, None, 1
    next_idx = 1
    for op, arg in ops:
        if op == "add":
            journal.add(arg, next_idx, term)
            model.append((arg, next_idx, term))
            next_idx += 1
        elif op == "from":
            journal.deleteEntriesFrom(arg)
            del model[arg:]
            next_idx = model[-1][1] + 1 if model else next_idx
        elif op == "to":
            journal.deleteEntriesTo(arg)
            del model[:arg]
        elif op == "term":
            term, vote = arg, (f"127.0.0.1:{arg}" if arg % 2 else None)
            journal.setCurrentTerm(term, vote)
        elif op == "commit":
            journal.setRaftCommitIndex(arg)
            journal.onOneSecondTimer()
            commit = arg
        elif op == "clear":
            journal.clear()
            model.clear()
        else:
            journal = reopen(journal)
            if model and commit > model[-1][1]:
                commit = model[-1][1]  # kept in range at open
        assert list(journal[:]) == model
    journal = reopen(journal)
    assert list(journal[:]) == model
    assert (journal.getCurrentTerm(), journal.getVotedForNodeId()) == (term, vote)
    if model:
        assert journal.getRaftCommitIndex() == min(commit, model[-1][1])
    journal._destroy()


def test_a_snapshot_from_the_leader_is_written_whole_or_fails_the_replica(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receive = disk.SnapshotReceiver(str(tmp_path))
    dump = disk.encode_dump(b"state", disk.fresh_raft_entries())
    assert receive((dump[:10], False, False)) is False  # no start seen: ignored
    assert receive((dump[:10], True, False)) is False
    assert receive((dump[10:], False, False)) is False
    assert receive((b"", False, True)) is True
    assert (tmp_path / disk.DUMP).read_bytes() == dump
    assert not (tmp_path / "dump.1.tmp").exists()

    # One that fails its check is dropped, and the dump in place stays.
    assert receive((dump[:-1] + b"X", True, False)) is False
    assert receive((b"", False, True)) is False
    assert receive.rejected == 1
    assert (tmp_path / disk.DUMP).read_bytes() == dump
    assert not (tmp_path / "dump.1.tmp").exists()

    def no_space(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    assert receive((b"ef", True, False)) is False
    monkeypatch.setattr(disk.os, "write", no_space)
    with pytest.raises(jr.DiskWriteError, match="No space left on device"):
        receive((b"gh", False, False))
    assert not (tmp_path / "dump.1.tmp").exists()  # no partial file holds the space
    assert (tmp_path / disk.DUMP).read_bytes() == dump
