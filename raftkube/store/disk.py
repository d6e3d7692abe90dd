"""What a member keeps on disk besides the journal: the checksummed dump (the state as
of a log index), its snapshot writer, and readers for recovery tools.

Part of the pysyncobj adapter (`raft.py`, `wire.py`, `disk.py`, `journal.py` are the only
modules that import pysyncobj). The journal and its meta are in `journal.py`.

`dump` is a 48-byte header (magic, payload length, SHA-256 of the payload) and then the
payload, msgpack `{"state": blob, "raft": raft entries}`. `read_dump_file` checks all of
it: pysyncobj swallows a dump that fails to load with a warning and runs with an empty
state, which a member then served as true (issue 6, item 7). A dump that fails its check
refuses start (`CorruptData`) instead: the dump covers entries this member acknowledged
and no longer has in its journal, so it must not rejoin as the same member without them.

Snapshots are msgpack through pysyncobj's serializer hooks, written by a forked child
(the tick never waits for them) to a file of its own and fsynced; the tick renames the
file of the current round only, and fsyncs the directory, before the journal is cut
behind it (`SnapshotWriter`). A snapshot received from the leader is written by
`SnapshotReceiver`: pysyncobj's own receiver logs a failed write (a full disk) with a
traceback for every chunk the leader resends, for ever; ours fails the replica.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pysyncobj.pickle
from pysyncobj.config import SERIALIZER_STATE

from raftkube.store import journal as jr

log = logging.getLogger(__name__)

NO_OP = b"\x01"  # pysyncobj's _COMMAND_TYPE.NO_OP
DUMP = "dump"
_DUMP_MAGIC = b"RKDUMP\x00\x01"
_DUMP_HEADER = struct.Struct("<8sQ32s")  # magic, payload length, SHA-256 of the payload
RETRY_FAILED_DUMP = 5.0  # seconds before a snapshot that failed is tried again
MAX_DUMP_SECONDS = 600.0  # a snapshot writer running longer than this is killed
_PR_SET_PDEATHSIG = 1


def fsync_dir(path: str) -> None:
    jr.fsync_path(path)


class SnapshotWriter:
    """Writes the state's snapshot in a forked child, so the tick thread never waits.

    A synchronous dump of a large state (msgpack, write, fsync) stalled the tick past
    the election timeout. The child sees the state as of the fork (copy-on-write), as
    pysyncobj's own default serializer does. pysyncobj polls `check` each tick and cuts
    its journal only after SUCCESS.

    Each round's child writes (and fsyncs) a file of its own, `dump.snap.PID.ROUND`, and
    the *parent* renames it over the dump, on the tick thread, only once that child has
    exited 0 and only if its round is still the current one: a child that outlives its
    round (a slow disk, a master killed and restarted while its child still ran) never
    puts an older state over a newer dump. A round is no longer current once a snapshot
    from the leader replaced the dump (`supersede`), or once its child ran past
    `max_seconds` (it is killed: a hung child would hold snapshots, and so the journal's
    size, for ever). The child dies with the thread that forked it (PR_SET_PDEATHSIG),
    closes every descriptor it inherited (an orphan must not hold the master's ports),
    and leftovers of any earlier process are removed when the writer is made.

    pysyncobj waits for SUCCESS or FAILED before it starts another round, so every round
    ends in one of them, a fork that failed included (otherwise it waited for ever).
    (pysyncobj also renames the `.tmp` path it hands to the serializer hook over the
    dump; `Replica` makes sure nothing is there.)
    """

    def __init__(self, data_dir: str, *, sync: bool = True,
                 max_seconds: float = MAX_DUMP_SECONDS) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, DUMP)
        self.sync = sync
        self.max_seconds = max_seconds
        self.pid = 0
        self.tmp = ""
        self._round = 0
        self._started = 0.0
        # After a failed dump (a full disk), the next one waits: pysyncobj would start
        # one every tick, each a fork that fails again.
        self._failed_at = -RETRY_FAILED_DUMP
        self._skipped = False
        self._superseded = False
        remove_leftovers(data_dir)

    def start(self, make_blob: Callable[[], bytes], raft_data: list[Any]) -> None:
        if self.pid:
            # Not expected (pysyncobj waits for the last round to end), but the result
            # pysyncobj gets must be this round's: it cuts the journal to this round's
            # index on SUCCESS.
            self._abandon()
        if time.monotonic() - self._failed_at < RETRY_FAILED_DUMP:
            self._skipped = True
            return
        self._round += 1
        tmp = f"{self.path}.snap.{os.getpid()}.{self._round}"
        try:
            pid = os.fork()
        except OSError as e:
            log.error("writing a snapshot failed: cannot fork (%s); the journal is kept, "
                      "and the next try is in %.0f s", e.strerror, RETRY_FAILED_DUMP)
            self._failed_at = time.monotonic()
            self._skipped = True  # ends the round as FAILED once the wait is over
            return
        if pid == 0:  # the child: no locks, no logging, no return
            code = 1
            try:
                _die_with_parent()
                os.closerange(3, _max_fd())
                write_dump_file(tmp, make_blob(), raft_data, sync=self.sync)
                code = 0
            finally:
                os._exit(code)
        self.pid, self.tmp, self._started = pid, tmp, time.monotonic()

    def check(self) -> int:
        if self._superseded:
            self._superseded = False
            return int(SERIALIZER_STATE.FAILED)  # ends pysyncobj's round, no wait
        if self._skipped:
            if time.monotonic() - self._failed_at < RETRY_FAILED_DUMP:
                return int(SERIALIZER_STATE.SERIALIZING)
            self._skipped = False
            return int(SERIALIZER_STATE.FAILED)  # pysyncobj starts the next one now
        if not self.pid:
            return int(SERIALIZER_STATE.NOT_SERIALIZING)
        try:
            done, status = os.waitpid(self.pid, os.WNOHANG)
        except OSError as e:  # as pysyncobj's own checker: a lost child is a failed dump
            done, status = self.pid, -1
            log.error("snapshot writer: %s", e)
        if done == 0:
            if time.monotonic() - self._started <= self.max_seconds:
                return int(SERIALIZER_STATE.SERIALIZING)
            log.error("writing a snapshot took more than %.0f s: the writer is killed",
                      self.max_seconds)
            self._abandon()
            return self._failed("it was killed")
        self.pid = 0
        if status != 0:
            self._discard()
            return self._failed(f"exit status {status}")
        try:
            os.replace(self.tmp, self.path)
            if self.sync:
                fsync_dir(self.data_dir)
        except OSError as e:
            # The journal is not cut: whichever dump is in place, it lines up at start.
            self._discard()
            return self._failed(f"cannot rename it into place: {e.strerror}")
        self.tmp = ""
        return int(SERIALIZER_STATE.SUCCESS)

    def supersede(self) -> None:
        """The dump was replaced by a snapshot from the leader: a round still under way
        wrote an older state, which must never be renamed over it."""
        if self.pid:
            self._abandon()
            self._superseded = True

    def close(self) -> None:
        """The replica stops: a round still under way is abandoned."""
        if self.pid:
            self._abandon()

    def _abandon(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass  # gone already, or not ours
        self.pid = 0
        self._discard()

    def _discard(self) -> None:
        if self.tmp:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = ""

    def _failed(self, why: str) -> int:
        log.error("writing a snapshot failed (%s); the journal is kept, and the next try "
                  "is in %.0f s", why, RETRY_FAILED_DUMP)
        self._failed_at = time.monotonic()
        return int(SERIALIZER_STATE.FAILED)


def remove_leftovers(data_dir: str) -> None:
    """Temporary dump files of an earlier process (a crash, or a child that outlived it):
    never renamed into place now, so they only hold space. `dump.tmp` must go too:
    pysyncobj renames that name over the dump when it starts a round."""
    try:
        names = os.listdir(data_dir)
    except OSError:
        return
    for name in names:
        if name.startswith(DUMP + ".snap") or name in (DUMP + ".tmp", DUMP + ".1.tmp"):
            try:
                os.unlink(os.path.join(data_dir, name))
            except OSError:
                pass


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def _find_prctl() -> Any:
    # Looked up once, in the parent: dlopen in a forked child of a threaded process can
    # wait for a loader lock that another thread held at the fork.
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _find_prctl()


def _die_with_parent() -> None:
    """In a forked child: be killed when the thread that forked it ends (Linux)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class SnapshotReceiver:
    """Writes the chunks of a snapshot sent by the leader to `dump.1.tmp`, and renames it
    over the dump when the last one is in (replacing the bound method of pysyncobj's
    `Serializer.setTransmissionData`, whose contract it keeps: True once installed, and
    pysyncobj then loads it and acknowledges it to the leader).

    The received file is synced and checked (length, SHA-256) *before* it replaces the
    dump. One that fails its check is dropped and not installed (False: nothing is
    acknowledged, and the leader sends the snapshot again): renamed into place, it would
    have replaced this member's good dump with one that refuses start. Unsynced, a crash
    after the rename left a dump that a power cut empties. A write that fails raises
    `DiskWriteError`, which fails the replica (and so nothing is acknowledged either).
    """

    LOG_EVERY = 10.0  # seconds between log lines about snapshots that fail their check

    def __init__(self, data_dir: str, *, sync: bool = True) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, DUMP)
        self.tmp = self.path + ".1.tmp"
        self.sync = sync
        self.rejected = 0
        self._fd = -1
        self._logged_at = -self.LOG_EVERY

    def __call__(self, data: Any) -> bool:
        if data is None:
            return False
        chunk, first, last = data
        try:
            if first:
                self._close()
                self._fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC
                                   | os.O_CLOEXEC, 0o600)
            elif self._fd < 0:
                return False  # a transmission we did not see start: wait for the next
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view):]
            if not last:
                return False
            if self.sync:
                os.fsync(self._fd)
            self._close()
        except OSError as e:
            self._close()
            self._remove_tmp()
            raise jr.DiskWriteError(self.tmp, "write the snapshot sent by the leader",
                                    e) from None
        try:
            read_dump_file(self.tmp)
        except jr.DataDirError as e:
            self._remove_tmp()
            self.rejected += 1
            now = time.monotonic()
            if now - self._logged_at >= self.LOG_EVERY:
                self._logged_at = now
                log.error("a snapshot from the leader failed its check and is not installed "
                          "(%d so far; the leader sends it again): %s", self.rejected, e)
            return False
        try:
            os.replace(self.tmp, self.path)
            if self.sync:
                fsync_dir(self.data_dir)
        except OSError as e:
            self._remove_tmp()
            raise jr.DiskWriteError(self.path, "install the snapshot sent by the leader",
                                    e) from None
        return True

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _remove_tmp(self) -> None:
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def encode_dump(state_blob: bytes, raft_data: list[Any]) -> bytes:
    payload: bytes = msgpack.packb({"state": state_blob, "raft": raft_data}, use_bin_type=True)
    return _DUMP_HEADER.pack(_DUMP_MAGIC, len(payload),
                             hashlib.sha256(payload).digest()) + payload


def write_dump_file(path: str, state_blob: bytes, raft_data: list[Any], *,
                    sync: bool = True) -> None:
    """Write a dump to `path` (a new file), synced; a failed write (a full disk) leaves
    no partial file behind to hold the space."""
    try:
        with open(path, "wb") as f:
            f.write(encode_dump(state_blob, raft_data))
            f.flush()
            if sync:
                os.fsync(f.fileno())
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise


def replace_dump_file(data_dir: str, state_blob: bytes, raft_data: list[Any], *,
                      sync: bool = True) -> None:
    """Write `data_dir/dump` whole or not at all: a synced temporary file renamed into
    place, then the directory synced so that the rename itself survives a crash."""
    path = os.path.join(data_dir, DUMP)
    tmp = path + ".snap"
    write_dump_file(tmp, state_blob, raft_data, sync=sync)
    try:
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fsync_dir(data_dir)


def read_dump_file(path: str) -> tuple[bytes, list[Any]]:
    """The state blob and Raft entries of a dump, after checking its length and SHA-256.

    Raises `CorruptData` (naming the file) if it is truncated, corrupted or not a dump.
    """
    data_dir = os.path.dirname(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise jr.DataDirError(f"{path}: cannot read the dump: {e.strerror}") from None
    if data[:1] == b"\x82" and b"state" in data[:16]:  # a msgpack map: the old format
        raise jr.DataDirError(f"{path}: written by an older raftkube (no checksum), which "
                              "this version cannot verify; " + jr.UPGRADE_HINT)
    if len(data) < _DUMP_HEADER.size or data[:8] != _DUMP_MAGIC:
        raise jr.CorruptData(f"{path}: not a raftkube dump ({len(data)} bytes, bad header); "
                             + jr.recovery_hint(data_dir))
    _magic, length, digest = _DUMP_HEADER.unpack_from(data, 0)
    payload = data[_DUMP_HEADER.size:]
    if len(payload) != length:
        raise jr.CorruptData(f"{path}: truncated or padded: {len(payload)} of {length} "
                             "payload bytes; " + jr.recovery_hint(data_dir))
    if hashlib.sha256(payload).digest() != digest:
        raise jr.CorruptData(f"{path}: checksum mismatch (the dump is corrupted); "
                             + jr.recovery_hint(data_dir))
    try:
        raw = msgpack.unpackb(payload, raw=False)
        return raw["state"], raw["raft"]
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise jr.CorruptData(f"{path}: checksum matches but the content is unreadable "
                             f"({e})") from None


def fresh_raft_entries() -> list[Any]:
    """Raft entries for a data dir made by restore or force: two no-ops of term 1, and no
    cluster, so that the member's own flags say who its peers are."""
    return [[NO_OP, 2, 1], [NO_OP, 1, 1], []]


def journal_commands(path: str, *, after_index: int) -> list[tuple[bytes, int]]:
    """The store commands in a (local, trusted) journal file after a log index, each with
    its entry's term: every whole record (a torn tail is skipped; corruption in the
    middle raises)."""
    out = []
    for command, idx, term in jr.read_entries(path):
        if idx <= after_index or command[:1] != b"\x00":
            continue  # covered by the dump, or a no-op or membership change
        payload = pysyncobj.pickle.loads(command[1:])
        if isinstance(payload, tuple) and len(payload) == 2 and payload[1]:
            out.append((payload[1][0], term))
    return out
