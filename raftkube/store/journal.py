"""The Raft journal and its meta file, in raftkube's own checksummed format.

Part of the pysyncobj adapter: with `raft.py`, `wire.py` and `disk.py` this is the only
module that imports pysyncobj. `Journal` implements pysyncobj's journal interface and
replaces its `FileJournal`, which (PYSYNCOBJ-NOTES, docs/pysyncobj-findings.md):

- is memory-mapped: a full disk is a SIGBUS that kills the process, not an error;
- has no checksums: a torn last record (a crash mid-write) or a corrupted one is read
  as garbage, and the tick then fails on it forever;
- keeps term and vote in `journal.meta` through a reader that swallows every error, so a
  truncated meta silently forgets the vote, and a member can vote twice in one term.

`journal` is a 16-byte header (magic, format version) and then records: u32 body length,
u32 CRC-32 of length and body, body = u64 log index, u64 term, command bytes. Every
record is written with `pwrite` on a plain descriptor *before* the entry is appended in
memory, so a failed write (ENOSPC, EIO, ...) leaves memory and file alike; the file is
cut back to the last whole record and the journal fails for good (`DiskWriteError`):
the member must stop, not retry. Appends are made durable by `flush_if_dirty()`, one
fdatasync for every record since the last one (group commit), which the transport calls
before a follower acknowledges entries and the replica's tick before the leader counts
its own copy.

`journal.meta` holds term, vote and commit index as a checksummed file replaced
atomically (temporary file, fsync, rename, directory fsync). Term and vote are written
on every change before pysyncobj sends anything that reflects them (a write that fails
raises before the vote or vote request is sent); the commit index is written at most
once a second, since Raft can always recompute it.

`open_journal` checks both files before SyncObj exists, because nothing pysyncobj does
with a bad file is safe:

- a torn tail (the last record incomplete, zero-filled, or failing its checksum and
  ending at the end of the file, with no whole record after it) was never acknowledged:
  it is cut off, logged once with the file, offset and bytes dropped (as etcd's WAL
  repair does);
- a bad record with whole records after it is corruption in the middle: `CorruptData`
  names the file and the offset, and the member refuses to start;
- a missing, torn or corrupted meta next to a journal refuses start too: a member that
  forgot its vote could vote twice in one term.

A member refused for bad data is recovered as a *new* member through a membership
change (remove it, wipe its data dir, add it back, start it with
`--initial-cluster-state existing`), never restarted in place with a blank journal.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from typing import Any

import pysyncobj.journal

log = logging.getLogger(__name__)

JOURNAL = "journal"
META = "journal.meta"

_MAGIC = b"RKJOURNL"
_META_MAGIC = b"RKJMETA\x00"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sII")  # magic, format version, reserved
_META_HEADER = struct.Struct("<8sIII")  # magic, format version, body length, CRC-32
_RECORD = struct.Struct("<II")  # body length, CRC-32 of length and body
_INDEX = struct.Struct("<QQ")  # log index, term
HEADER_SIZE = _HEADER.size
# Entries are at most ~1.5 MiB (the request limit); anything past this is not a length.
MAX_RECORD = 64 * 1024 * 1024
_PYSYNCOBJ_MAGIC = b"PYSYNCOBJ"

Entry = tuple[bytes, int, int]  # (command, log index, term), pysyncobj's shape


class DataDirError(Exception):
    """A member's data dir cannot be used as it is: the member refuses to start.

    The message names the file and what to do; `rk master` prints it as one line.
    """


class CorruptData(DataDirError):
    """A file in the data dir fails its checks: truncated, torn in the middle, or
    corrupted. Serving from it could answer with data the cluster never had."""


class DiskWriteError(Exception):
    """A write to the journal or its meta failed (no space, I/O error, read-only).

    Sticky: once raised, every later write raises it again, so nothing is acknowledged
    past a failed write. The member must stop; see `Replica`.
    """

    def __init__(self, path: str, action: str, error: OSError) -> None:
        self.path = path
        self.errno = error.errno
        self.strerror = error.strerror or str(error)
        super().__init__(f"{path}: cannot {action}: {self.strerror}")


UPGRADE_HINT = ("move the cluster over with a snapshot: `rk snapshot save` from the old "
                "version, then `rk snapshot restore` into an empty data dir for every member "
                "(README, 'Backup and disaster recovery')")


def recovery_hint(data_dir: str) -> str:
    return ("recover it as a new member: from a running master run `rk member remove "
            f"NAME`, delete {data_dir}, run `rk member add --raft HOST:PORT` with this "
            "member's Raft address, then start it with `--initial-cluster-state existing`"
            " (README, 'Replacing a member')")


# ---- records ----------------------------------------------------------------------------

def _crc(length: int, body: bytes | memoryview) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<I", length)))


def encode_record(command: bytes, idx: int, term: int) -> bytes:
    body = _INDEX.pack(idx, term) + command
    return _RECORD.pack(len(body), _crc(len(body), body)) + body


def _header() -> bytes:
    return _HEADER.pack(_MAGIC, FORMAT_VERSION, 0)


def _parse(buf: memoryview, off: int) -> tuple[Entry, int] | str:
    """The record at `off` and the offset after it, or why there is no whole one."""
    if off + _RECORD.size > len(buf):
        return "an incomplete record header"
    length, crc = _RECORD.unpack_from(buf, off)
    if length < _INDEX.size or length > MAX_RECORD:
        return f"a record length of {length} bytes"
    end = off + _RECORD.size + length
    if end > len(buf):
        return f"a record of {length} bytes running past the end of the file"
    body = buf[off + _RECORD.size:end]
    if _crc(length, body) != crc:
        return "a checksum mismatch"
    idx, term = _INDEX.unpack_from(body)
    return (bytes(body[_INDEX.size:]), idx, term), end


@dataclass
class Scan:
    """What a journal file holds: its whole records and where a torn tail starts."""

    entries: list[Entry]
    offsets: list[int]
    end: int  # the end of the last whole record
    size: int  # the file's size; `size - end` bytes are a torn tail
    torn_reason: str = ""


def scan(path: str) -> Scan:
    """Read and check a journal file; raise `CorruptData` unless only its tail is bad."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataDirError(f"{path}: cannot read the journal: {e.strerror}") from None
    buf = memoryview(data)
    data_dir = os.path.dirname(path)
    if data[:len(_PYSYNCOBJ_MAGIC)] == _PYSYNCOBJ_MAGIC:
        raise DataDirError(
            f"{path}: written by an older raftkube (pysyncobj's unchecksummed format), "
            "which this version cannot verify; " + UPGRADE_HINT)
    if len(data) < HEADER_SIZE or data[:8] != _MAGIC:
        raise CorruptData(f"{path}: not a raftkube journal (bad header at byte offset 0); "
                          + recovery_hint(data_dir))
    _magic, version, _ = _HEADER.unpack_from(buf, 0)
    if version != FORMAT_VERSION:
        raise DataDirError(f"{path}: journal format {version}, this raftkube reads "
                           f"format {FORMAT_VERSION}")
    entries: list[Entry] = []
    offsets: list[int] = []
    off = HEADER_SIZE
    parsed: tuple[Entry, int] | str = ""
    while off < len(buf):
        parsed = _parse(buf, off)
        if isinstance(parsed, str):
            break
        entry, nxt = parsed
        if entries and entry[1] != entries[-1][1] + 1:
            raise CorruptData(
                f"{path}: corrupt journal record at byte offset {off}: log index "
                f"{entry[1]} follows {entries[-1][1]}; " + recovery_hint(data_dir))
        entries.append(entry)
        offsets.append(off)
        off = nxt
    result = Scan(entries, offsets, off, len(buf))
    if off == len(buf):
        return result
    # A bad record. It is a torn tail only if no whole record starts anywhere after it:
    # a crash mid-append leaves a prefix of one record (or zeros), never a record after.
    reason = parsed if isinstance(parsed, str) else ""
    for later in range(off + 1, len(buf) - _RECORD.size - _INDEX.size + 1):
        if not isinstance(_parse(buf, later), str):
            raise CorruptData(
                f"{path}: corrupt journal record at byte offset {off} ({reason}), with "
                f"whole records after it (the next at byte offset {later}), so it is "
                "not a torn tail; " + recovery_hint(data_dir))
    result.torn_reason = reason
    return result


def read_entries(path: str) -> list[Entry]:
    """The whole records of a journal, for tools that only read (a torn tail is skipped,
    corruption in the middle raises `CorruptData`)."""
    return scan(path).entries


# ---- meta -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Meta:
    term: int = 0
    voted_for: str | None = None
    commit_index: int = 1  # pysyncobj's default: the first entry is its initial no-op


def _encode_meta(meta: Meta) -> bytes:
    body = json.dumps({"term": meta.term, "voted_for": meta.voted_for,
                       "commit_index": meta.commit_index}, sort_keys=True).encode()
    return _META_HEADER.pack(_META_MAGIC, FORMAT_VERSION, len(body),
                             _crc(len(body), body)) + body


def _decode_meta(path: str, data: bytes) -> Meta:
    data_dir = os.path.dirname(path)
    what = ("term and vote are lost, and a member that forgot its vote could vote twice "
            "in one term; " + recovery_hint(data_dir))
    if len(data) < _META_HEADER.size or data[:8] != _META_MAGIC:
        raise CorruptData(f"{path}: not a raftkube journal meta file "
                          f"({len(data)} bytes, bad header); {what}")
    _magic, version, length, crc = _META_HEADER.unpack_from(data, 0)
    body = data[_META_HEADER.size:]
    if version != FORMAT_VERSION:
        raise DataDirError(f"{path}: meta format {version}, this raftkube reads "
                           f"format {FORMAT_VERSION}")
    if len(body) != length or _crc(length, body) != crc:
        raise CorruptData(f"{path}: torn or corrupted ({len(body)} of {length} bytes, "
                          f"checksum {'bad' if len(body) == length else 'not checked'}); "
                          f"{what}")
    try:
        raw = json.loads(body)
        meta = Meta(int(raw["term"]), raw["voted_for"], int(raw["commit_index"]))
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptData(f"{path}: unreadable ({e}); {what}") from None
    if meta.voted_for is not None and not isinstance(meta.voted_for, str):
        raise CorruptData(f"{path}: unreadable vote {meta.voted_for!r}; {what}")
    return meta


def _load_meta(path: str) -> Meta:
    try:
        with open(path, "rb") as f:
            return _decode_meta(path, f.read())
    except FileNotFoundError:
        raise DataDirError(
            f"{path} is missing next to the journal (it is written before the journal is "
            "created): this member's term and vote are lost; "
            + recovery_hint(os.path.dirname(path))) from None
    except OSError as e:
        raise DataDirError(f"{path}: cannot read: {e.strerror}") from None


def read_meta(data_dir: str) -> tuple[int, str | None, int]:
    """(term, voted for, commit index) as a member's data dir records them.

    Raises `DataDirError` if the meta file is missing, `CorruptData` if it fails its
    checks. Safe to call while the member runs (the file is replaced atomically).
    """
    meta = _load_meta(os.path.join(data_dir, META))
    return meta.term, meta.voted_for, meta.commit_index


# ---- writing ----------------------------------------------------------------------------

def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:  # not expected from a regular file; never loop on it
            raise OSError(errno.EIO, "short write")
        view = view[n:]
        offset += n


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: str, data: bytes, *, sync: bool = True) -> None:
    """Replace `path` with `data` whole or not at all: a temporary file written and
    synced, renamed over `path`, then the directory synced so the rename survives too."""
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _pwrite_all(fd, data, 0)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        fsync_path(os.path.dirname(path) or ".")


class Journal(pysyncobj.journal.Journal):  # type: ignore[misc]
    """pysyncobj's journal interface over the checked files. Use `open_journal`."""

    def __init__(self, data_dir: str, scanned: Scan, meta: Meta, *, sync: bool) -> None:
        self.data_dir = data_dir
        self.path = os.path.join(data_dir, JOURNAL)
        self.meta_path = os.path.join(data_dir, META)
        self.sync = sync
        self.flushes = 0
        self.failure: DiskWriteError | None = None
        self._entries = scanned.entries
        self._offsets = scanned.offsets
        self._end = scanned.end
        self._meta = meta
        self._meta_dirty = False
        self._dirty = False
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)

    # -- pysyncobj's interface

    def add(self, command: bytes, idx: int, term: int) -> None:
        self._check()
        record = encode_record(bytes(command), idx, term)
        try:
            _pwrite_all(self._fd, record, self._end)
        except OSError as e:
            self._cut_back()
            raise self._failed("append a record", e) from None
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._end += len(record)
        self._dirty = True

    def clear(self) -> None:
        self.deleteEntriesFrom(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802, N803 - pysyncobj's
        """Drop entries from position `entryFrom` on (a new leader's log disagrees)."""
        self._check()
        if entryFrom >= len(self._entries):
            return
        cut = self._offsets[entryFrom] if entryFrom >= 0 else HEADER_SIZE
        try:
            os.ftruncate(self._fd, cut)
            if self.sync:
                # Durable now: a crash must not bring back entries this member has
                # already told the leader it replaced.
                os.fdatasync(self._fd)
        except OSError as e:
            raise self._failed("truncate", e) from None
        del self._entries[entryFrom:]
        del self._offsets[entryFrom:]
        self._end = cut

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802, N803 - pysyncobj's
        """Drop the entries before position `entryTo`, which a new dump covers: the kept
        records are copied into a new file that replaces the journal atomically."""
        self._check()
        if entryTo <= 0:
            return
        keep_from = self._offsets[entryTo] if entryTo < len(self._entries) else self._end
        tmp = self.path + ".tmp"
        fd = -1
        try:
            if self.sync:
                # The new dump was renamed into place: make that durable before the
                # entries it covers disappear from the journal.
                fsync_path(self.data_dir)
            self.flush_if_dirty()
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            _pwrite_all(fd, _header(), 0)
            pos, out = keep_from, HEADER_SIZE
            while pos < self._end:
                chunk = os.pread(self._fd, min(1 << 20, self._end - pos), pos)
                if not chunk:
                    raise OSError(errno.EIO, "journal shorter than expected")
                _pwrite_all(fd, chunk, out)
                pos += len(chunk)
                out += len(chunk)
            if self.sync:
                os.fsync(fd)
            os.replace(tmp, self.path)
            if self.sync:
                fsync_path(self.data_dir)
        except OSError as e:
            if fd >= 0:
                os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise self._failed("rewrite the journal after a snapshot", e) from None
        os.close(self._fd)
        self._fd = fd
        shift = keep_from - HEADER_SIZE
        del self._entries[:entryTo]
        self._offsets = [o - shift for o in self._offsets[entryTo:]]
        self._end -= shift

    def align_with_dump(self, before: Entry, last: Entry) -> None:
        """At start, before SyncObj exists: make the journal begin where the dump ends.

        The dump covers the log up to `last` (the entry before it is `before`). Log
        compaction renames the new dump into place and only then cuts the journal behind
        it; a crash between the two leaves the whole old journal, starting long before
        the dump ends. pysyncobj, finding a journal whose first two entries are not the
        dump's last two, clears it, and with it every entry past the dump: entries this
        member acknowledged. Here such a journal is cut as the compaction would have
        cut it, so pysyncobj finds it lined up and keeps the rest.

        A journal that does not hold the dump's last two entries is left alone:
        entirely older than the dump (a crash while installing a snapshot from the
        leader) or conflicting with it, it holds nothing the dump does not supersede,
        and pysyncobj replaces it with the dump's entries. A journal that starts after
        the dump's next-to-last entry and goes on past its end cannot be lined up
        (pysyncobj would clear it, entries past the dump included; if it starts past
        the dump's end, entries in neither file are missing): `CorruptData`. The
        compaction's order of writes never leaves one.
        """
        before = (bytes(before[0]), int(before[1]), int(before[2]))
        last = (bytes(last[0]), int(last[1]), int(last[2]))
        if not self._entries:
            return
        first = self._entries[0][1]
        if first > before[1] and self._entries[-1][1] > last[1]:
            raise CorruptData(
                f"{self.path}: the journal starts at log index {first}, after "
                f"{os.path.join(self.data_dir, 'dump')}'s last two entries "
                f"({before[1]}, {last[1]}), and goes on past them: it cannot be lined "
                "up with the dump; " + recovery_hint(self.data_dir))
        pos = before[1] - first
        if pos < 0 or pos + 1 >= len(self._entries):
            return
        if tuple(self._entries[pos]) != before or tuple(self._entries[pos + 1]) != last:
            return
        if pos:
            log.warning("%s: the journal was not cut behind the dump (a crash during log "
                        "compaction): %d entries the dump covers are dropped now, the %d "
                        "after it are kept", self.path, pos, len(self._entries) - pos - 2)
            self.deleteEntriesTo(pos)

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        if self.failure is None and self._meta_dirty:
            try:
                self._write_meta(self._meta)
            except DiskWriteError:
                pass  # already logged by whoever sees the failure; the index is a hint
        try:
            os.close(self._fd)
        except OSError:
            pass

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802, N803
        if raftCommitIndex != self._meta.commit_index:
            self._meta = Meta(self._meta.term, self._meta.voted_for, raftCommitIndex)
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return self._meta.commit_index

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802, N803
        # Raft: durable before any message that reflects it is sent. pysyncobj sends
        # the vote (or vote request) only after this returns.
        voted = None if votedForNodeId is None else str(votedForNodeId)
        meta = Meta(term, voted, self._meta.commit_index)
        self._write_meta(meta)
        self._meta = meta
        self._meta_dirty = False

    def getCurrentTerm(self) -> int:  # noqa: N802
        return self._meta.term

    def getVotedForNodeId(self) -> str | None:  # noqa: N802
        return self._meta.voted_for

    def onOneSecondTimer(self) -> None:  # noqa: N802
        if self._meta_dirty:
            self._write_meta(self._meta)
            self._meta_dirty = False

    def flush(self) -> None:
        self.flush_if_dirty()

    # -- ours

    def flush_if_dirty(self) -> None:
        """Make every record appended since the last call durable (one fdatasync)."""
        self._check()
        with self._lock:
            if self._dirty:
                self._dirty = False
                if self.sync:
                    try:
                        # Releases the GIL: the API keeps serving meanwhile.
                        os.fdatasync(self._fd)
                    except OSError as e:
                        raise self._failed("sync", e) from None
                    self.flushes += 1

    def fileno(self) -> int:
        """The descriptor the entries are written to now (a compaction replaces it); not
        the meta file's, which is rewritten through its own, by `write_atomically`."""
        return self._fd

    @property
    def last_index(self) -> int:
        return self._entries[-1][1] if self._entries else 0

    def _write_meta(self, meta: Meta) -> None:
        self._check()
        try:
            write_atomically(self.meta_path, _encode_meta(meta), sync=self.sync)
        except OSError as e:
            raise self._failed("write the term, vote and commit index", e,
                               path=self.meta_path) from None

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _failed(self, action: str, e: OSError, *, path: str | None = None) -> DiskWriteError:
        self.failure = DiskWriteError(path or self.path, action, e)
        return self.failure

    def _cut_back(self) -> None:
        """After a failed append: the file ends at the last whole record again (cutting
        a file needs no space), so a restart finds no torn record to repair."""
        try:
            os.ftruncate(self._fd, self._end)
        except OSError:
            pass  # a torn tail is repaired at the next start


def open_journal(data_dir: str, *, sync: bool = True) -> Journal:
    """Check (and if needed repair) a member's journal and meta; create them if new.

    Raises `DataDirError` or `CorruptData` with one clear message; nothing is served
    from files that fail. Must run before SyncObj is constructed.
    """
    path = os.path.join(data_dir, JOURNAL)
    meta_path = os.path.join(data_dir, META)
    try:
        for leftover in (path + ".tmp", meta_path + ".tmp"):
            if os.path.exists(leftover):  # a write interrupted by a crash; never renamed
                os.unlink(leftover)
        if not os.path.exists(path):
            return _create(data_dir, sync=sync)
        scanned = scan(path)
        meta = _load_meta(meta_path)
        if scanned.end < scanned.size:
            with open(path, "r+b") as f:
                f.truncate(scanned.end)
                if sync:
                    os.fsync(f.fileno())
            log.warning("%s: torn tail repaired: %d bytes dropped from byte offset %d "
                        "(%s; a record cut short by a crash was never acknowledged)",
                        path, scanned.size - scanned.end, scanned.end, scanned.torn_reason)
            scanned.size = scanned.end
        if scanned.entries and meta.commit_index > scanned.entries[-1][1]:
            # Not expected (the index is written after the entries it covers were synced),
            # but an index beyond the log would later cover entries never committed:
            # lowered, and durably, before anything is appended.
            last = scanned.entries[-1][1]
            log.warning("%s: commit index %d is beyond the journal's last entry %d; "
                        "lowered to it", meta_path, meta.commit_index, last)
            meta = Meta(meta.term, meta.voted_for, last)
            write_atomically(meta_path, _encode_meta(meta), sync=sync)
        return Journal(data_dir, scanned, meta, sync=sync)
    except OSError as e:
        raise DataDirError(f"{e.filename or data_dir}: {e.strerror}") from None


def _create(data_dir: str, *, sync: bool) -> Journal:
    """A new journal. The meta is written first, so a journal is never without one."""
    meta_path = os.path.join(data_dir, META)
    meta = Meta()
    if os.path.exists(meta_path):
        meta = _load_meta(meta_path)
        if meta.term or meta.voted_for is not None:
            raise DataDirError(
                f"{os.path.join(data_dir, JOURNAL)} is missing, but {meta_path} records "
                f"term {meta.term}: this member's log is lost; " + recovery_hint(data_dir))
    write_atomically(meta_path, _encode_meta(meta), sync=sync)
    write_atomically(os.path.join(data_dir, JOURNAL), _header(), sync=sync)
    return Journal(data_dir, Scan([], [], HEADER_SIZE, HEADER_SIZE), meta, sync=sync)
