"""The pysyncobj adapter: one replica (`RaftNode`), its configuration and accessors.

It wraps one `SyncObj` replica around `State` and fixes, here and nowhere else, what
PYSYNCOBJ-NOTES.md records about pysyncobj 0.3.17:

- One replicated entry point, `_entry(data)`, taking msgpack bytes: method IDs are assigned
  by sorted name, so a second method would remap old journal entries.
- The peer wire (pickle protocol, buffers, pings, nextIndex) is fixed in `wire.py`, the
  journal and its meta in `journal.py`, the dump and snapshots in `disk.py`; with this
  module they are the only ones that import pysyncobj.
- The journal is ours (`journal.Journal`), opened and checked before SyncObj exists and
  handed to it through pysyncobj's journal factory, `pysyncobj.syncobj.createJournal`,
  which SyncObj's constructor calls: pysyncobj's own mmap'd `FileJournal` is never used.
- The leader sends appends at the end of every tick that appended or committed, and
  flushes its own copy while the followers write theirs.
- Completion is tracked by the state's exactly-once table, not by pysyncobj callbacks,
  which are lost when a follower installs a snapshot (bug 1).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pysyncobj.journal
import pysyncobj.syncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated
from pysyncobj.monotonic import monotonic as raft_clock
from pysyncobj.node import TCPNode
from pysyncobj.pipe_notifier import PipeNotifier
from pysyncobj.syncobj import _RAFT_STATE

from raftkube.store.disk import SnapshotReceiver
from raftkube.store.journal import Journal
from raftkube.store.wire import RaftTransport

# raft_clock is pysyncobj's clock (CLOCK_MONOTONIC_RAW), in which its deadlines are kept.
# It is not time.monotonic: NTP slews that one and not this, so the two drift apart with
# uptime (0.26 s after 17 hours on this machine).

# Journals opened by `RaftNode.__init__`, by path, for SyncObj's constructor to take.
_opened: dict[str, Journal] = {}


def _create_journal(path: str | None) -> Any:
    """pysyncobj's journal factory, replaced: the journal checked before construction."""
    if path is None:
        return pysyncobj.journal.MemoryJournal()
    journal = _opened.pop(path, None)
    if journal is None:
        raise RuntimeError(f"{path}: open it with raftkube.store.journal.open_journal "
                           "and pass it to RaftNode")
    return journal


pysyncobj.syncobj.createJournal = _create_journal


class RaftNode(SyncObj):  # type: ignore[misc]
    """One replica. `on_apply(data, entry_term)` runs on the tick thread for each entry,
    with the Raft term of the log entry that carries it."""

    def __init__(
        self,
        *,
        self_addr: str,
        peers: list[str],
        conf: SyncObjConf,
        journal: Journal,
        on_apply: Callable[[bytes, int], None],
    ) -> None:
        self._on_apply = on_apply
        self.journal = journal
        conf.journalFile = journal.path
        _opened[journal.path] = journal
        try:
            super().__init__(self_addr, peers, conf, transportClass=RaftTransport)
        finally:
            _opened.pop(journal.path, None)
        self._SyncObj__transport.journal = journal
        self._SyncObj__serializer.setTransmissionData = SnapshotReceiver(
            os.path.dirname(journal.path), sync=journal.sync)

        self._sent_log_index = 0
        self._sent_commit_index = 0
        self.second_campaign_grace = 0.0  # hold_second_campaign
        # Cleared when the poller drains the pipe, before the tick that takes the queued
        # commands, so a command submitted after that always sends a new wake-up.
        self._wake_pending = False
        self._wake = PipeNotifier(self._poller, self._woken)

    @replicated  # type: ignore[untyped-decorator]
    def _entry(self, data: bytes) -> None:
        self._on_apply(data, self._applying_term())

    def _applying_term(self) -> int:
        """The term of the entry being applied: pysyncobj applies index lastApplied + 1
        and moves lastApplied on after the apply; the entry is in the journal until it
        is covered by a snapshot, which only happens after it was applied."""
        journal = self.journal
        index = self.raftLastApplied + 1
        if not len(journal):
            return 0
        pos = index - journal[0][1]
        if 0 <= pos < len(journal) and journal[pos][1] == index:
            return int(journal[pos][2])
        return 0

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

    def _SyncObj__connectedToAnyone(self) -> bool:  # noqa: N802 - pysyncobj's name
        """Asked only once the election deadline has passed, just before the member
        campaigns; True campaigns. Two things are settled here first:

        - pysyncobj reads its sockets at the end of a tick, after this check: a tick held
          up past the election timeout (the GIL taken by a busy event loop or the
          collector, a slow fsync) campaigned with the leader's heartbeats waiting
          unread, and deposed a healthy leader. So what the peers sent is read first,
          without waiting; an append among it moves the deadline on and the member
          stays put, and a candidate that a vote just read made leader stays leader.
        - A new member's first campaign (term 0 to 1) cannot depose a leader, who holds
          term 1 or more; its second could. If no leader has reached it by then, it
          waits `second_campaign_grace` once more (`hold_second_campaign`)."""
        self._poller.poll(0)
        if self._SyncObj__raftState == _RAFT_STATE.LEADER:
            return False
        if self._SyncObj__raftElectionDeadline >= raft_clock():
            return False
        if not super()._SyncObj__connectedToAnyone():
            return False
        if self._SyncObj__raftLeader is not None:
            self.second_campaign_grace = 0.0  # it has heard a leader: campaigns as any
        elif self.second_campaign_grace and self._SyncObj__raftCurrentTerm > 0:
            delay_elections(self, self.second_campaign_grace)
            self.second_campaign_grace = 0.0
            return False
        return True

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
    bind_address: str | None = None,
) -> SyncObjConf:
    return SyncObjConf(
        password=secret,
        # The member's own Raft address (or its --raft-listen), not pysyncobj's default
        # of every interface (0.0.0.0): a member in a network namespace of its own, or
        # on a machine with a private network, listens where its peers are told to reach
        # it. `rk master` refuses an address this machine does not have (binding it
        # would be retried for ever, silently).
        bindAddress=bind_address,
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


def add_member(node: RaftNode, addr: str, done: Callable[[Any, Any], None]) -> None:
    node.addNodeToCluster(addr, callback=done)


def member_addresses(node: RaftNode) -> set[str]:
    return {str(n.address) for n in node.otherNodes}


_REFUSED = ("the leader refused the change: the member is already in (or not in) the "
            "cluster, it is the leader itself, or the previous membership change or the "
            "leader's first entry is not committed yet")


def change_membership(node: RaftNode, *, add: bool, addr: str,
                      done: Callable[[str | None], None]) -> None:
    """Add or remove the member at Raft address `addr` through a Raft entry (from any
    member: a follower forwards it). `done(None)` runs on the tick thread once the change
    is committed and applied here, `done(reason)` if it was refused or lost."""

    def callback(_result: Any, err: Any) -> None:
        if err == FAIL_REASON.SUCCESS:
            done(None)
        elif err == FAIL_REASON.REQUEST_DENIED:
            done(_REFUSED)
        else:
            done(f"no leader committed the change (pysyncobj reason {err}); "
                 "it may still take effect")

    if add:
        node.addNodeToCluster(addr, callback=callback)
    else:
        node.removeNodeFromCluster(addr, callback=callback)


def halt(node: RaftNode) -> None:
    """Send nothing more to any peer, from now on (the replica has failed)."""
    node._SyncObj__transport.halted = True


def delay_elections(node: RaftNode, seconds: float) -> None:
    """Move the member's next election timeout `seconds` later (once; the timeout stays
    randomized, so members started together still do not campaign together)."""
    deadline = node._SyncObj__raftElectionDeadline
    node._SyncObj__raftElectionDeadline = max(deadline, raft_clock()) + seconds


def hold_second_campaign(node: RaftNode, seconds: float) -> None:
    """A new member campaigns once when its timeout passes (at term 1, which deposes
    nobody); if no leader has reached it by its second, that one waits `seconds` more."""
    node.second_campaign_grace = seconds


def hold_off_elections(node: RaftNode, seconds: float) -> None:
    """Keep a joining member from campaigning before it has heard from a leader."""
    node._SyncObj__raftElectionDeadline = raft_clock() + seconds
