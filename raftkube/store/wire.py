"""Raft peer wire: pysyncobj's TCP connection and transport, fixed where they break.

Part of the pysyncobj adapter (`raft.py`, `wire.py`, `disk.py`, `journal.py` are the
only modules that import pysyncobj). Importing it patches pysyncobj's `TcpConnection` in place:

- Pickle protocol 4 instead of 2 for journal entries and peer messages, so bytes are not
  inflated by half again (bug 5). Peers decrypt before they unpickle, and the Fernet key
  comes from the cluster secret, so nothing unauthenticated reaches pickle.
- zlib level 0 on the wire, bytearray buffers, and a writable wake-up for partial sends
  (findings 6 and 7), so a 1.5 MiB entry does not starve heartbeats.
- `RaftTransport`: the journal is flushed before a follower acknowledges entries, a
  success reply never moves nextIndex back (finding 8), and a peer ping every 0.5 s
  keeps idle follower-to-follower connections warm, so the first vote request after a
  leader crash is not lost to a read timeout (bug 2).
- Frames are bounded before they are read, and a connection authenticates first
  (finding 10). pysyncobj buffered whatever a length prefix announced, from anyone: 2^31-1
  and a stream of bytes made a master hold them all, and an HTTP request read as a 542 MB
  length. The first message each side sends is a Fernet-encrypted random key, so the first
  message that decrypts proves the sender holds the cluster secret. Until then a frame may
  be `PRE_AUTH_FRAME` bytes and no more is read into the buffer; a connection that has not
  identified itself within `AUTH_DEADLINE` is dropped, and at most `MAX_UNAUTHENTICATED`
  wait at once (the oldest goes). After that a frame may be `FRAME_LIMIT`.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
import zlib
from typing import Any

import pysyncobj
import pysyncobj.pickle
import pysyncobj.tcp_connection
from cryptography.fernet import Fernet
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from raftkube.store.journal import Journal

log = logging.getLogger(__name__)

# The first message is a 32-byte key, pickled, zlib'd and Fernet-encrypted: ~170 bytes.
PRE_AUTH_FRAME = 4096
# After authentication. The largest message is an append batch: entries are added until
# they reach appendEntriesBatchSizeBytes (4 MiB), so the last may bring it to 4 MiB plus
# one entry (<= 1.5 MiB and its envelope); pickling adds ~25% for the smallest entries and
# Fernet's base64 a third: ~9 MiB (measured). Snapshot chunks are logCompactionBatchSize
# (64 KiB). A bound well above that, so only a broken or hostile peer meets it.
FRAME_LIMIT = 64 * 1024 * 1024
AUTH_DEADLINE = 3.0  # seconds from accept to the peer naming itself (ms on a live peer)
MAX_UNAUTHENTICATED = 32  # incoming connections still in their handshake, at once

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
    buf = self._TcpConnection__readBuffer
    if not isinstance(buf, bytearray):
        buf = self._TcpConnection__readBuffer = bytearray(buf)
    want = self._TcpConnection__recvBufferSize
    if not self.rk_authenticated:
        # Never buffer more than one small frame for a peer that has proved nothing; the
        # rest stays in the kernel until the parser has looked at what is here.
        want = min(want, PRE_AUTH_FRAME + 4 - len(buf))
        if want <= 0:
            return False
    try:
        incoming = sock.recv(want)
    except OSError as e:
        if e.errno not in _EAGAIN:
            self.disconnect()
        return False
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or not incoming:
        self.disconnect()
        return False
    buf += incoming
    return _frame_ok(self, buf)


def _frame_ok(self: Any, buf: bytearray) -> bool:
    """Check the length prefix of the next frame as soon as its 4 bytes are here; drop
    the connection on one that is negative or over this connection's bound."""
    if len(buf) < 4:
        return True
    (length,) = struct.unpack("i", bytes(buf[:4]))
    limit = FRAME_LIMIT if self.rk_authenticated else PRE_AUTH_FRAME
    if 0 <= length <= limit:
        return True
    drop(self, f"a frame of {length} bytes announced, over the "
               f"{'authenticated' if self.rk_authenticated else 'handshake'} bound of {limit}")
    return False


def drop(conn: Any, reason: str) -> None:
    """Disconnect a peer connection and say why (the log filter rate-limits the line)."""
    try:
        peer = conn._TcpConnection__socket.getpeername()
        who = f"{peer[0]}:{peer[1]}"
    except (AttributeError, OSError, IndexError):
        who = "?"
    log.warning("dropping a Raft peer connection from %s: %s", who, reason)
    conn.disconnect()


def _private_calls_work(fernet_class: type[Fernet] = Fernet) -> bool:
    """Whether this cryptography's private halves of `Fernet.decrypt` are the ones
    `_open_token` expects: a token made with `encrypt_at_time` must open to its stamp
    and plaintext. Asked once, at import; a cryptography that renamed or changed them
    gets the public calls rather than a peer whose every message fails to open."""
    try:
        fernet = fernet_class(Fernet.generate_key())
        token = fernet.encrypt_at_time(b"probe", 1_000_000_000)
        split = fernet_class._get_unverified_token_data
        stamp, data = split(token)
        opened = fernet._decrypt_data(data, stamp, None)
    except Exception:
        return False
    return bool(stamp == 1_000_000_000 and opened == b"probe")


PRIVATE_CALLS = _private_calls_work()


def _open_token(fernet: Any, token: bytes) -> tuple[int, bytes]:
    """A Fernet token's timestamp and plaintext, its signature checked.

    pysyncobj called `extract_timestamp` and then `decrypt`: each decodes the whole
    token's base64 and checks its HMAC, so every received message was decoded and
    authenticated twice (base64 decoding alone was ~10% of a follower's CPU under load).
    The two steps of `decrypt` are called here once each if `PRIVATE_CALLS` found them
    as expected; otherwise the two public calls."""
    if not PRIVATE_CALLS:
        return fernet.extract_timestamp(token), fernet.decrypt(token)
    stamp, data = Fernet._get_unverified_token_data(token)
    return stamp, fernet._decrypt_data(data, stamp, None)


def _process_parse_message(self: Any) -> Any:
    buf = self._TcpConnection__readBuffer
    if len(buf) < 4 or not _frame_ok(self, buf):
        return None
    (length,) = struct.unpack("i", bytes(buf[:4]))
    if len(buf) - 4 < length:
        return None
    data = bytes(buf[4:4 + length])
    try:
        if self.encryptor:
            stamp, data = _open_token(self.encryptor, data)
            if stamp < self.recvLastTimestamp:
                raise ValueError("replayed message")
            self.recvLastTimestamp = stamp
        # Decrypted: the sender holds the cluster secret (or, without a secret, there
        # is nothing to prove).
        self.rk_authenticated = True
        message = pysyncobj.pickle.loads(zlib.decompress(data))
        if self.recvRandKey:
            rand_key, message = message
            if rand_key != self.recvRandKey:
                raise ValueError("wrong connection key")
    except Exception as e:  # noqa: BLE001 - as pysyncobj: any bad message drops the connection
        drop(self, f"bad message ({type(e).__name__})")
        return None
    del buf[:4 + length]
    return message


_original_disconnect = _TC.disconnect


def _disconnect(self: Any) -> None:
    # Outgoing connection objects are reused for every reconnect: each new socket
    # proves itself again.
    self.rk_authenticated = False
    _original_disconnect(self)


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
_TC.disconnect = _disconnect
_TC.rk_authenticated = False
_TC._TcpConnection__processSend = _process_send
_TC._TcpConnection__processRead = _process_read
_TC._TcpConnection__processParseMessage = _process_parse_message


class RaftTransport(TCPTransport):  # type: ignore[misc]
    """pysyncobj's TCP transport with the journal flush and the peer ping added."""

    journal: Journal | None = None
    halted = False  # set when the replica fails: nothing more is sent
    PING_EVERY = 0.5

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803
        super().__init__(syncObj, selfNode, otherNodes)
        self._next_ping = 0.0
        self._accepted_at: dict[Any, float] = {}

    def _onNewIncomingConnection(self, conn: Any) -> None:  # noqa: N802 - pysyncobj's name
        super()._onNewIncomingConnection(conn)
        self._accepted_at[conn] = time.monotonic()
        waiting = [c for c in self._unknownConnections if c in self._accepted_at]
        if len(waiting) > MAX_UNAUTHENTICATED:
            # The oldest goes: a live peer finishes its handshake in milliseconds, so
            # whoever has waited longest is the likeliest to be holding a slot idle.
            oldest = min(waiting, key=lambda c: self._accepted_at[c])
            drop(oldest, f"more than {MAX_UNAUTHENTICATED} connections in their handshake")

    def _onDisconnected(self, conn: Any) -> None:  # noqa: N802 - pysyncobj's name
        self._accepted_at.pop(conn, None)
        super()._onDisconnected(conn)

    def _drop_slow_handshakes(self, now: float) -> None:
        for conn, since in list(self._accepted_at.items()):
            if conn not in self._unknownConnections:
                del self._accepted_at[conn]  # it named itself: a known peer now
            elif now - since > AUTH_DEADLINE:
                drop(conn, f"no handshake within {AUTH_DEADLINE:.0f} s")

    def send(self, node: Any, message: Any) -> bool:
        # A member whose disk failed, or that has failed for any reason, says nothing
        # more: pysyncobj swallows some write failures (loading a received snapshot,
        # clearing the journal behind it) and then acknowledges what it did not do.
        if self.halted or (self.journal is not None and self.journal.failure is not None):
            return False
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
        if isinstance(message, dict) and message.get("type") == "append_entries":
            message = self._without_entries_held(node, message)
            if message is None:
                return
        if (isinstance(message, dict) and message.get("type") == "next_node_idx"
                and message.get("success") and not message.get("reset")):
            next_index = self._syncObj._SyncObj__raftNextIndex
            before = next_index.get(node)
            super()._onMessageReceived(node, message)
            if before is not None and node in next_index and next_index[node] < before:
                next_index[node] = before
            return
        super()._onMessageReceived(node, message)

    def _without_entries_held(self, node: Any, message: dict[str, Any]) -> dict[str, Any] | None:
        """On a follower: an append minus the entries this follower already holds.

        pysyncobj cuts a follower's log back to the append's prevLogIdx whenever the
        follower holds anything after it, even entries identical to the ones sent, which
        Raft never does (only a conflicting entry is cut). A leader resends entries when
        a stale "reset" reply moves its nextIndex back: a member that rejoined after a
        stop answered "reset" to every append already in flight. The follower then cut
        and rewrote applied, acknowledged entries ("truncating already-applied log
        entries", CRITICAL), and for a moment held fewer entries than it had told the
        leader. Here the entries it holds with the same term are taken off the front;
        if they were all held and the follower holds more, it answers success for what
        the append covers and pysyncobj never sees it. Only for the leader it follows,
        in its current term, with prevLogIdx matching: everything else is pysyncobj's.
        """
        so = self._syncObj
        journal = self.journal
        entries = message.get("entries")
        if (journal is None or not entries or "prevLogIdx" not in message
                or message.get("transmission") is not None
                or message.get("term") != so._SyncObj__raftCurrentTerm
                or so._SyncObj__raftLeader != node or not len(journal)):
            return message
        first, last = journal[0][1], journal[-1][1]
        prev = message["prevLogIdx"]
        if prev < first or prev > last or journal[prev - first][2] != message["prevLogTerm"]:
            return message
        held = 0
        for entry in entries:
            idx = entry[1]
            if idx > last or journal[idx - first][2] != entry[2]:
                break
            held += 1
        if held == 0:
            return message
        end = prev + held
        if held == len(entries) and end < last:
            self.send(node, {"type": "next_node_idx", "next_node_idx": end + 1,
                             "reset": False, "success": True})
            return None
        return {**message, "prevLogIdx": end, "prevLogTerm": entries[held - 1][2],
                "entries": entries[held:]}

    def _onTick(self) -> None:  # noqa: N802 - pysyncobj's name
        super()._onTick()
        now = time.monotonic()
        if self._accepted_at:
            self._drop_slow_handshakes(now)
        if now >= self._next_ping:
            self._next_ping = now + self.PING_EVERY
            for node in list(self._connections):
                # Unknown message types are ignored by every pysyncobj state.
                self.send(node, {"type": "rk_ping"})

