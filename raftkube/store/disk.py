"""What a member keeps on disk: the Raft journal (made durable), the dump, fsync helpers.

Part of the pysyncobj adapter (`raft.py`, `wire.py`, `disk.py` are the only modules that
import pysyncobj). pysyncobj never syncs: `DurableJournal` records that entries were
appended, and the journal is flushed before a follower acknowledges entries to the
leader and, on the leader, before the tick that counts its own copy toward a commit. One
flush covers every entry appended since the last one (group commit).

Snapshots are msgpack through pysyncobj's serializer hooks, written by a forked child
(the tick never waits for them), fsynced before the rename; the directory is fsynced
before the journal is truncated behind them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

import msgpack
import pysyncobj.pickle
from pysyncobj.config import SERIALIZER_STATE

log = logging.getLogger(__name__)

NO_OP = b"\x01"  # pysyncobj's _COMMAND_TYPE.NO_OP


class DurableJournal:
    """Delegates to pysyncobj's FileJournal and knows whether it has unsynced appends."""

    def __init__(self, inner: Any, data_dir: str, *, sync: bool = True) -> None:
        self._inner = inner
        self._data_dir = data_dir
        self._sync = sync
        self._dirty = False
        self._lock = threading.Lock()
        self.flushes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __len__(self) -> int:
        return len(self._inner)

    def __getitem__(self, item: Any) -> Any:
        return self._inner[item]

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._inner.add(command, idx, term)
        self._dirty = True

    def clear(self) -> None:
        self._inner.clear()
        self._dirty = True

    def deleteEntriesFrom(self, entry_from: int) -> None:  # noqa: N802 - pysyncobj's name
        self._inner.deleteEntriesFrom(entry_from)
        self._dirty = True

    def deleteEntriesTo(self, entry_to: int) -> None:  # noqa: N802 - pysyncobj's name
        # Called once a new dump has replaced the old one: make that rename durable
        # before the entries it covers disappear from the journal.
        fsync_dir(self._data_dir)
        self._inner.deleteEntriesTo(entry_to)
        self._dirty = True
        self.flush_if_dirty()

    def setCurrentTerm(self, term: int, voted_for: Any) -> None:  # noqa: N802
        self._inner.setCurrentTerm(term, voted_for)
        path = self._inner._FileJournal__metaStorer.getPath()
        fsync_file(path)
        fsync_dir(self._data_dir)

    def flush_if_dirty(self) -> None:
        with self._lock:
            if self._dirty and self._sync:
                self._dirty = False
                # fdatasync writes back the pages the mmap dirtied, like msync, but releases
                # the GIL (mmap.flush holds it), so the API keeps serving meanwhile. The
                # file object changes when pysyncobj grows the file: look it up each time.
                f = self._inner._FileJournal__journalFile._ResizableFile__f
                os.fdatasync(f.fileno())
                self.flushes += 1


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    fsync_file(path)



class SnapshotWriter:
    """Writes the state's snapshot in a forked child, so the tick thread never waits.

    A synchronous dump of a large state (msgpack, write, fsync) stalled the tick past
    the election timeout. The child sees the state as of the fork (copy-on-write), as
    pysyncobj's own default serializer does. pysyncobj polls `check` each tick and cuts
    its journal only after SUCCESS. (pysyncobj also tries to rename the `.tmp` path it
    handed over; nothing is there, which it ignores once a checker is set: the child
    renames its own file into place when, and only when, it is complete and synced.)
    """

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.pid = 0

    def start(self, make_blob: Callable[[], bytes], raft_data: list[Any]) -> None:
        pid = os.fork()
        if pid == 0:  # the child: no locks, no logging, no return
            code = 1
            try:
                replace_dump_file(self.data_dir, make_blob(), raft_data)
                code = 0
            finally:
                os._exit(code)
        self.pid = pid

    def check(self) -> int:
        if not self.pid:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except OSError as e:  # as pysyncobj's own checker: a lost child is a failed dump
            done, status = self.pid, -1
            log.error("snapshot writer: %s", e)
        if done == 0:
            return int(SERIALIZER_STATE.SERIALIZING)
        self.pid = 0
        if status != 0:
            log.error("writing a snapshot failed (exit status %d); the journal is kept", status)
            return int(SERIALIZER_STATE.FAILED)
        return int(SERIALIZER_STATE.SUCCESS)


def write_dump_file(path: str, state_blob: bytes, raft_data: list[Any]) -> None:
    blob = msgpack.packb({"state": state_blob, "raft": raft_data}, use_bin_type=True)
    with open(path, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())


def replace_dump_file(data_dir: str, state_blob: bytes, raft_data: list[Any]) -> None:
    """Write `data_dir/dump` whole or not at all: a synced temporary file renamed into
    place, then the directory synced so that the rename itself survives a crash."""
    path = os.path.join(data_dir, "dump")
    write_dump_file(path + ".snap", state_blob, raft_data)
    os.replace(path + ".snap", path)
    fsync_dir(data_dir)


def read_dump_file(path: str) -> tuple[bytes, list[Any]]:
    with open(path, "rb") as f:
        raw = msgpack.unpackb(f.read(), raw=False)
    return raw["state"], raw["raft"]


def fresh_raft_entries() -> list[Any]:
    """Raft entries for a data dir made by restore or force: two no-ops of term 1, and no
    cluster, so that the member's own flags say who its peers are."""
    return [[NO_OP, 2, 1], [NO_OP, 1, 1], []]


def journal_commands(path: str, *, after_index: int) -> list[bytes]:
    """The store commands in a (local, trusted) journal file after a log index."""
    from pysyncobj.journal import FileJournal

    journal = FileJournal(path)
    try:
        out = []
        for command, idx, _term in (journal[i] for i in range(len(journal))):
            if idx <= after_index or command[:1] != b"\x00":
                continue  # covered by the dump, or a no-op or membership change
            payload = pysyncobj.pickle.loads(command[1:])
            if isinstance(payload, tuple) and len(payload) == 2 and payload[1]:
                out.append(payload[1][0])
        return out
    finally:
        journal._destroy()
