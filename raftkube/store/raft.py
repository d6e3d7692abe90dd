"""The pysyncobj adapter: the only module that imports pysyncobj.

It wraps one `SyncObj` replica around `State` and fixes, here and nowhere else, what
PYSYNCOBJ-NOTES.md records about pysyncobj 0.3.17:

- One replicated entry point, `_entry(data)`, taking msgpack bytes: method IDs are assigned
  by sorted name, so a second method would remap old journal entries.
- Pickle protocol 4 instead of 2 for journal entries and peer messages, so bytes are not
  inflated by half again (bug 5). Peers decrypt before they unpickle, and the Fernet key
  comes from the cluster secret, so nothing unauthenticated reaches pickle.
- Durability: pysyncobj never syncs. `DurableJournal` records that entries were appended,
  and the journal is flushed before a follower acknowledges entries to the leader and,
  on the leader, right after it sent them (overlapping the followers' round trip) and in
  any case before the tick that counts its own copy toward a commit. One flush covers
  every entry appended since the last one (group commit).
- A peer ping every 0.5 s keeps idle follower-to-follower connections warm, so the first
  vote request after a leader crash is not lost to a read timeout (bug 2).
- Snapshots are msgpack through pysyncobj's serializer hooks, written by a forked child
  (the tick never waits for them), fsynced before the rename; the directory is fsynced
  before the journal is truncated behind them.
- Completion is tracked by the state's exactly-once table, not by pysyncobj callbacks,
  which are lost when a follower installs a snapshot (bug 1).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pysyncobj
import pysyncobj.pickle
import pysyncobj.tcp_connection
from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

log = logging.getLogger(__name__)

# pysyncobj pickles with protocol 2, which stores bytes as latin-1 text (bug 5).
setattr(pysyncobj.pickle, "__protocol", 4)  # noqa: B010 - the name is module-private


class _StoredZlib:
    """zlib for pysyncobj's peer messages with compression level 0 ("stored").

    pysyncobj compresses every message at level 3: ~30 ms of the tick thread for a
    1.5 MiB entry per follower, which delayed heartbeats into elections. Values are
    mostly incompressible or small, and peers are on a LAN; level 0 still produces
    a zlib stream, so members with either setting understand each other.
    """

    @staticmethod
    def compress(data: bytes, level: int = -1) -> bytes:
        return zlib.compress(data, 0)

    decompress = staticmethod(zlib.decompress)


pysyncobj.tcp_connection.zlib = _StoredZlib


# pysyncobj keeps each connection's buffers as bytes and slices the sent or parsed part
# off the front, copying what remains every time: quadratic in the message size. A
# 1.5 MiB entry cost the tick thread hundreds of milliseconds, long enough for elections.
# These replacements keep the buffers as bytearrays, whose front deletions are O(1).
_TC = pysyncobj.tcp_connection.TcpConnection
_EAGAIN = (errno.EAGAIN, errno.EWOULDBLOCK)


def _process_send(self: Any) -> bool:
    buf = self._TcpConnection__writeBuffer
    if not buf:
        return False
    if not isinstance(buf, bytearray):
        buf = self._TcpConnection__writeBuffer = bytearray(buf)
    try:
        sent = self._TcpConnection__socket.send(buf)
    except OSError as e:
        if e.errno not in _EAGAIN:
            self.disconnect()
        return False
    if sent < 0:
        self.disconnect()
        return False
    if sent == 0:
        return False
    del buf[:sent]
    return True


def _process_read(self: Any) -> bool:
    sock = self._TcpConnection__socket
    try:
        incoming = sock.recv(self._TcpConnection__recvBufferSize)
    except OSError as e:
        if e.errno not in _EAGAIN:
            self.disconnect()
        return False
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not incoming:
        self.disconnect()
        return False
    buf = self._TcpConnection__readBuffer
    if not isinstance(buf, bytearray):
        buf = self._TcpConnection__readBuffer = bytearray(buf)
    buf += incoming
    return True


def _process_parse_message(self: Any) -> Any:
    buf = self._TcpConnection__readBuffer
    if len(buf) < 4:
        return None
    (length,) = struct.unpack("i", bytes(buf[:4]))
    if len(buf) - 4 < length:
        return None
    data = bytes(buf[4:4 + length])
    try:
        if self.encryptor:
            stamp = self.encryptor.extract_timestamp(data)
            if stamp < self.recvLastTimestamp:
                raise ValueError("replayed message")
            self.recvLastTimestamp = stamp
            data = self.encryptor.decrypt(data)
        message = pysyncobj.pickle.loads(zlib.decompress(data))
        if self.recvRandKey:
            rand_key, message = message
            if rand_key != self.recvRandKey:
                raise ValueError("wrong connection key")
    except Exception as e:  # noqa: BLE001 - as pysyncobj: any bad message drops the connection
        log.warning("dropping a Raft peer connection: bad message (%s)", type(e).__name__)
        self.disconnect()
        return None
    del buf[:4 + length]
    return message


_original_send = _TC.send
_ALL_EVENTS = POLL_EVENT_TYPE.READ | POLL_EVENT_TYPE.WRITE | POLL_EVENT_TYPE.ERROR


def _send(self: Any, message: Any) -> None:
    """pysyncobj's send, plus: wait for the socket to be writable when data is left over.

    pysyncobj writes what the socket takes and leaves the rest in the buffer without
    asking the poller for a writable event, so the rest went out a socket-buffer at a
    time with each *later* send (the leader's heartbeats), and the heartbeats queued
    behind it: a 1.5 MiB entry starved a follower of heartbeats for seconds.
    """
    _original_send(self, message)
    fileno = self._TcpConnection__fileno
    if (self._TcpConnection__writeBuffer and fileno is not None
            and self.state == CONNECTION_STATE.CONNECTED):
        self._TcpConnection__poller.subscribe(
            fileno, self._TcpConnection__processConnection, _ALL_EVENTS)


_TC.send = _send
_TC._TcpConnection__processSend = _process_send
_TC._TcpConnection__processRead = _process_read
_TC._TcpConnection__processParseMessage = _process_parse_message

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


class RaftTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport with the journal flush and the peer ping added."""

    journal: DurableJournal | None = None
    PING_EVERY = 0.5

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803
        super().__init__(syncObj, selfNode, otherNodes)
        self._next_ping = 0.0

    def send(self, node: Any, message: Any) -> bool:
        if (
            self.journal is not None
            and isinstance(message, dict)
            and message.get("type") == "next_node_idx"
            and message.get("success")
        ):
            # A follower's "I have these entries" must not outrun the disk.
            self.journal.flush_if_dirty()
        return bool(super().send(node, message))

    def _onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802
        """Keep a follower's nextIndex from moving backwards on a success reply.

        The leader sends entries without waiting for replies and moves nextIndex to the
        end of what it sent; pysyncobj then sets nextIndex to the *reply's* index, which
        is behind when several sends are in flight. The next send repeats entries the
        follower has, and the follower truncates and rewrites its applied log (logged as
        CRITICAL). Raft only moves nextIndex back on a failed reply.
        """
        if (isinstance(message, dict) and message.get("type") == "next_node_idx"
                and message.get("success") and not message.get("reset")):
            next_index = self._syncObj._SyncObj__raftNextIndex
            before = next_index.get(node)
            super()._onMessageReceived(node, message)
            if before is not None and node in next_index and next_index[node] < before:
                next_index[node] = before
            return
        super()._onMessageReceived(node, message)

    def _onTick(self) -> None:  # noqa: N802 - pysyncobj's name
        super()._onTick()
        now = time.monotonic()
        if now >= self._next_ping:
            self._next_ping = now + self.PING_EVERY
            for node in list(self._connections):
                # Unknown message types are ignored by every pysyncobj state.
                super().send(node, {"type": "rk_ping"})


class RaftNode(SyncObj):  # type: ignore[misc]
    """One replica. `on_apply(index, data)` runs on the tick thread for each entry."""

    def __init__(
        self,
        *,
        self_addr: str,
        peers: list[str],
        conf: SyncObjConf,
        on_apply: Callable[[bytes], None],
    ) -> None:
        self._on_apply = on_apply
        super().__init__(self_addr, peers, conf, transportClass=RaftTransport)

        self._sent_log_index = 0
        self._sent_commit_index = 0
        # Cleared when the poller drains the pipe, before the tick that takes the queued
        # commands, so a command submitted after that always sends a new wake-up.
        self._wake_pending = False
        self._wake = PipeNotifier(self._poller, self._woken)

    @replicated  # type: ignore[untyped-decorator]
    def _entry(self, data: bytes) -> None:
        self._on_apply(data)

    def close(self) -> None:
        """Stop the node (the tick thread must have stopped) and release its descriptors."""
        self.destroy()
        for fd in (self._wake._PipeNotifier__pipeR, self._wake._PipeNotifier__pipeW):
            try:
                os.close(fd)
            except OSError:
                pass

    def _woken(self) -> None:
        self._wake_pending = False

    def submit(self, data: bytes) -> None:
        """Queue a command from any thread and wake the tick thread at once."""
        self._entry(data)
        if not self._wake_pending:  # one wake-up per tick is enough
            self._wake_pending = True
            try:
                self._wake.notify()
            except BlockingIOError:
                pass  # the pipe is full of wake-ups already

    def flush_appends(self) -> None:
        """On the leader, at the end of a tick: replicate new entries and commit index."""
        if not self._isLeader():
            return
        log_index = self._SyncObj__getCurrentLogIndex()
        commit_index = self.raftCommitIndex
        if log_index != self._sent_log_index or commit_index != self._sent_commit_index:
            self._sent_log_index = log_index
            self._sent_commit_index = commit_index
            self._SyncObj__sendAppendEntries()


def make_conf(
    *,
    data_dir: str,
    secret: str,
    election_min: float,
    election_max: float,
    heartbeat: float,
    serializer: Callable[[str, Any], None],
    serialize_checker: Callable[[], int],
    deserializer: Callable[[str], Any],
    on_state_changed: Callable[[int, int], None],
    log_compaction_entries: int,
) -> SyncObjConf:
    return SyncObjConf(
        password=secret,
        autoTick=False,
        # Batch mode, but RaftNode.flush_appends sends at the end of every tick that
        # appended or committed something: one message per follower per tick instead of
        # one per command (appendEntriesUseBatch=False), and none of the default mode's
        # wait for the next heartbeat (~100 ms per write, PYSYNCOBJ-NOTES).
        appendEntriesUseBatch=True,
        # Larger than any entry can be (requests are capped at 1.5 MiB), so pysyncobj never
        # splits one entry into chunks: its chunking sends a wrong end marker for entries
        # just under a multiple of the batch size (bug 4).
        appendEntriesBatchSizeBytes=4 * 1024 * 1024,
        appendEntriesPeriod=heartbeat,
        raftMinTimeout=election_min,
        raftMaxTimeout=election_max,
        # An isolated leader steps down after this long without a majority. pysyncobj's
        # 30 s default would keep a deposed leader's loops running for half a minute.
        leaderFallbackTimeout=max(4 * election_max, 1.0),
        connectionRetryTime=0.3,
        connectionTimeout=3.5,
        journalFile=os.path.join(data_dir, "journal"),
        fullDumpFile=os.path.join(data_dir, "dump"),
        serializer=serializer,
        serializeChecker=serialize_checker,
        deserializer=deserializer,
        logCompactionMinEntries=log_compaction_entries,
        logCompactionMinTime=600,
        onStateChanged=on_state_changed,
        # On, so that a cluster forced down to one member can take its peers back.
        dynamicMembershipChange=True,
        commandsWaitLeader=True,
    )


def install_journal(node: RaftNode, data_dir: str, *, sync: bool = True) -> DurableJournal:
    """Wrap the node's journal; must run before the first tick. `sync=False` is only for
    measuring what the flushes cost."""
    inner = node._SyncObj__raftLog
    journal = DurableJournal(inner, data_dir, sync=sync)
    journal._dirty = True  # the constructor may have appended its initial no-op
    node._SyncObj__raftLog = journal
    transport = node._SyncObj__transport
    transport.journal = journal
    return journal


def node_status(node: RaftNode) -> dict[str, Any]:
    return dict(node.getStatus())


def leader_address(node: RaftNode) -> str | None:
    leader = node._getLeader()
    if leader is None:
        return None
    return str(leader.address if isinstance(leader, TCPNode) else leader)


def pack_raft_entries(raft_data: Any) -> list[Any]:
    """pysyncobj's (last entry, entry before it, cluster) made msgpack-able."""
    last, before, cluster = raft_data
    return [list(last), list(before), sorted(str(n.address) for n in cluster)]


def unpack_raft_entries(packed: list[Any], *, configured: list[str]) -> tuple[Any, Any, Any]:
    """The inverse; a dump made by restore or force names no cluster: use the flags'."""
    last, before, cluster = packed
    return tuple(last), tuple(before), {TCPNode(a) for a in (cluster or configured)}




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


def add_member(node: RaftNode, addr: str, done: Callable[[Any, Any], None]) -> None:
    node.addNodeToCluster(addr, callback=done)


def member_addresses(node: RaftNode) -> set[str]:
    return {str(n.address) for n in node.otherNodes}


def hold_off_elections(node: RaftNode, seconds: float) -> None:
    """Keep a joining member from campaigning before it has heard from a leader."""
    node._SyncObj__raftElectionDeadline = time.monotonic() + seconds
