"""One store replica as the API server sees it: propose, read, watch, leases, status.

`Replica` joins three threads of control:
- pysyncobj's tick thread (ours: `autoTick=False`), which applies committed entries to
  `State` under `lock` and queues what happened in an outbox;
- the asyncio loop, which receives that outbox once per tick, completes the proposals
  whose `(client id, seq)` was applied, and publishes events to the watch hub;
- the leader duties, an asyncio task that acts only while this replica leads.

Exactly-once: every proposal carries this process's client id and a sequence number.
The proposer waits until *its own* id is applied locally, and resubmits the same bytes
when the leader changes or nothing happened for a while; the state's result table makes
the second copy a no-op that returns the first copy's result.

Linearizable reads use a read barrier: a no-op proposed after the read arrived. Once it
is applied locally, every write acknowledged before the read began is applied too.
Reads that arrive in the same event-loop turn share one barrier (a leader lease is not
safe here: pysyncobj has no clock-bound lease and an isolated leader keeps its role for
`leaderFallbackTimeout`).

Storage: every file of the data dir is checked before pysyncobj sees it (`DataDirError`,
`CorruptData` from `journal.py` and `disk.py` refuse start). A journal or meta write that
fails while running (a full disk, an I/O error) is not retried: the replica *fails*. It
stops ticking at once (it sends nothing more to its peers, so it cannot drive the term
up), answers every request with a 503 that says why, fails its pending proposals, and
`rk master` exits (see `wait_failed`). A tick that keeps failing for another reason is
logged at most every few seconds and fails the replica the same way after
`TICK_FAILURE_LIMIT` seconds, instead of logging a traceback a hundred times a second.

Leases: expiry is decided by the leader's clock and committed as `lease_expire`, which
names the number of renewals the leader saw, so a keepalive that won the race keeps
the lease alive. Every replica restarts each lease's countdown when it applies a grant or
keepalive; a new leader restarts all countdowns, so no lease expires merely because of a
failover.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkube.store import disk, raft, recovery
from raftkube.store import journal as jr
from raftkube.store import state as st
from raftkube.store.watch import SHUTTING_DOWN, Route, Watcher, WatchHub

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1_572_864  # 1.5 MiB, etcd's --max-request-bytes default
RESUBMIT_AFTER = 2.0
MIN_LEASE_TTL = 2  # seconds; etcd raises shorter TTLs to ~1.5 election timeouts
TICK_FAILURE_LIMIT = 5.0  # seconds of a tick failing every time before the replica fails
TICK_FAILURE_LOG_EVERY = 5.0  # seconds between tracebacks of a tick that keeps failing


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _load_state(dump_path: str) -> tuple[st.State, list[Any]]:
    """The state in a dump and its Raft entries, or `CorruptData`: pysyncobj swallows a
    state that fails to load and runs with an empty one, which a member would serve."""
    blob, raft_data = disk.read_dump_file(dump_path)
    try:
        return st.State.load(blob), raft_data
    except Exception as e:  # noqa: BLE001 - whatever the decoder raises, the dump is bad
        raise jr.CorruptData(
            f"{dump_path}: the checksum matches but the state in it does not load "
            f"({type(e).__name__}: {e}); "
            + jr.recovery_hint(os.path.dirname(dump_path))) from None


@dataclass(frozen=True)
class Stats:
    revision: int
    watchers: int
    journal_flushes: int
    ticks: Any  # TickStats: a histogram of the tick loop's gaps
    fenced_writes: int
    stamped_writes: dict[int, int]


class Unavailable(Exception):
    """The replica cannot serve the request now (no leader, not ready, stopping)."""


class OutcomeUnknown(Unavailable):
    """A proposal was submitted and no result came (its deadline passed, or the replica
    failed while it waited): it may still commit, as in etcd. An Unavailable that is not
    an OutcomeUnknown was refused before anything was submitted."""


class MembershipError(Exception):
    """A membership change was refused (etcd answers these with FailedPrecondition)."""


@dataclass(frozen=True)
class Failure:
    """Why a replica stopped serving: `kind` is "disk" (a journal or meta write failed)
    or "tick" (the Raft tick kept failing)."""

    kind: str
    message: str


@dataclass(frozen=True)
class Timing:
    election_min: float = 0.25
    election_max: float = 0.5
    heartbeat: float = 0.05
    tick: float = 0.01
    # A member that restarts among peers waits this long, on top of its election
    # timeout, for the leader to reach it before it campaigns. Without it a restarted
    # follower could time out before the leader's reconnect (up to 0.3 s apart) and
    # handshake, and its campaign deposed a healthy leader: term +2 for nothing. A new
    # member (term 0) waits before its second campaign instead: its first, at term 1,
    # cannot depose a leader, who holds term 1 or more.
    startup_grace: float = 1.0


def member_id(raft_addr: str) -> int:
    """A stable uint64 ID for a member, from its Raft address (etcd's IDs are uint64)."""
    return int.from_bytes(hashlib.sha256(raft_addr.encode()).digest()[:8], "big") >> 1


def cluster_id(raft_addrs: list[str]) -> int:
    joined = ",".join(sorted(raft_addrs)).encode()
    return int.from_bytes(hashlib.sha256(joined).digest()[:8], "big") >> 1


@dataclass
class Pending:
    """A proposal this replica waits on: its bytes (to resubmit) and its deadline."""

    data: bytes
    submitted: float
    deadline: float
    future: asyncio.Future[st.Result]


class TickStats:
    """How long each pass of the tick loop took, as histogram buckets (seconds).

    Written by the tick thread only and read at scrape time; a reader may see one count
    ahead of its bucket, which a scrape can live with. The gap between two passes is
    what a heartbeat or an election timer can be late by, so it is the figure to keep
    below the election timeout.
    """

    BOUNDS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5,
              0.75, 1.0, 2.5, 5.0)

    def __init__(self) -> None:
        self.buckets = [0] * (len(self.BOUNDS) + 1)  # the last one is +Inf
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        i = bisect.bisect_left(self.BOUNDS, seconds)
        self.buckets[i] += 1
        self.total += seconds
        self.count += 1


@dataclass
class RaftView:
    """What the tick thread last saw of Raft, for the loop side to read without locks."""

    term: int = 0
    commit_index: int = 0
    last_applied: int = 0
    leader: str | None = None
    is_leader: bool = False
    leader_changes: int = 0
    members: tuple[str, ...] = ()  # Raft addresses in the configuration, this one included


class Replica:
    def __init__(
        self,
        *,
        name: str,
        raft_addr: str,
        peers: list[str],
        api_url: str,
        raft_listen: str | None = None,
        data_dir: str,
        secret: str,
        timing: Timing = Timing(),
        history_revisions: int = 10_000,
        log_compaction_entries: int = 20_000,
        solo: bool = False,
        join: bool = False,
        sync: bool = True,
    ) -> None:
        self.name = name
        self.raft_addr = raft_addr
        self.peers = list(peers)
        self.api_url = api_url
        self.data_dir = data_dir
        self.timing = timing
        self.history_revisions = history_revisions
        self.member_id = member_id(raft_addr)
        self.cluster_id = cluster_id([raft_addr, *peers])
        self.client_id = secrets.token_hex(8)
        self.lock = threading.Lock()
        self.state = st.State()
        self.view = RaftView()
        self.ticks = TickStats()
        self.hub = WatchHub()
        self.applied_total = 0
        self.fenced_writes = 0  # stamped writes refused: a newer leader had written
        self.stamped_writes: dict[int, int] = {}  # term -> stamped writes applied
        self._seq = itertools.count(1)
        self._outbox: list[tuple[Any, ...]] = []
        self._outbox_lock = threading.Lock()
        self._lease_deadline: dict[int, float] = {}
        self._fenced_term = 0  # the last term whose fencing noop this leader has applied
        self._pending_barrier: asyncio.Future[None] | None = None
        self._pending: dict[tuple[str, int], Pending] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._duties: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._expiring: set[int] = set()
        # solo: a cluster forced down to this member, taking its peers back one by one.
        # join: a member with no data joining such a cluster; it must not campaign before
        # a leader has reached it, or two empty members could elect each other.
        self.solo = solo
        self._joined = not join
        self.failure: Failure | None = None
        self._failed: asyncio.Future[Failure] | None = None
        self._sync = sync
        os.makedirs(data_dir, exist_ok=True)
        # Checked before SyncObj exists: pysyncobj runs with an empty state when a dump
        # fails to load, and cannot read a bad journal. The dump first, so that a member
        # refused for its dump has not had its journal's torn tail cut either.
        dump_path = os.path.join(data_dir, disk.DUMP)
        self._startup_dump = (_load_state(dump_path) if os.path.exists(dump_path)
                              else None)
        journal = jr.open_journal(data_dir, sync=sync)
        if self._startup_dump is not None:
            # A crash during log compaction can leave the new dump and the old journal.
            try:
                last, before, _cluster = self._startup_dump[1]
                journal.align_with_dump(before, last)
            except BaseException:
                journal._destroy()
                raise
        self._snapshots = disk.SnapshotWriter(data_dir, sync=sync)
        conf = raft.make_conf(
            data_dir=data_dir,
            secret=secret,
            election_min=timing.election_min,
            election_max=timing.election_max,
            heartbeat=timing.heartbeat,
            serializer=self._save_dump,
            serialize_checker=lambda: self._snapshots.check(),
            deserializer=self._load_dump,
            on_state_changed=lambda _old, _new: None,
            log_compaction_entries=log_compaction_entries,
            bind_address=raft_listen or raft_addr,
        )
        try:
            self.node = raft.RaftNode(
                self_addr=raft_addr, peers=[] if solo else self.peers, conf=conf,
                journal=journal, on_apply=self._on_apply,
            )
        except BaseException:
            journal._destroy()
            raise
        self.journal = journal
        self.node.addOnTickCallback(self._on_tick)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._failed = loop.create_future()
        if self.peers and not self.solo:
            if self.node.raftCurrentTerm > 0:
                raft.delay_elections(self.node, self.timing.startup_grace)
            else:
                raft.hold_second_campaign(self.node, self.timing.startup_grace)
        self._thread = threading.Thread(target=self._tick_forever, name="raft-tick", daemon=True)
        self._thread.start()
        self._duties = loop.create_task(self._leader_duties())
        self._sweeper = loop.create_task(self._sweep_forever())

    async def stop(self) -> None:
        for task in (self._duties, self._sweeper):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)
        self._snapshots.close()
        try:
            self.journal.flush_if_dirty()
        except jr.DiskWriteError:
            pass  # the replica has failed already and said why
        self.node.close()

    async def wait_failed(self) -> Failure:
        """Return once the replica has failed (and stopped ticking) for good."""
        assert self._failed is not None, "start() first"
        return await asyncio.shield(self._failed)

    def _tick_forever(self) -> None:
        failing_since: float | None = None
        failures = 0
        last_logged = 0.0
        last = time.monotonic()
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                # Entries appended during the previous tick reach the disk before this
                # tick counts the leader's own copy toward a commit.
                self.journal.flush_if_dirty()
                if not self._joined:
                    raft.hold_off_elections(self.node, 1.0)
                self.node.doTick(self.timing.tick)
                failing_since, failures = None, 0
            except Exception as e:  # noqa: BLE001 - every failure is handled below
                disk_error = self.journal.failure or (
                    e if isinstance(e, jr.DiskWriteError) else None)
                if disk_error is not None:
                    what = ("its journal" if disk_error.path in (
                        self.journal.path, self.journal.meta_path) else "its data dir")
                    self._fail("disk", f"member {self.name} cannot write {what} "
                               f"({disk_error.strerror}: {disk_error.path}); it is stopping")
                    return
                now = time.monotonic()
                failures += 1
                if failing_since is None:
                    failing_since = now
                if now - last_logged >= TICK_FAILURE_LOG_EVERY:
                    last_logged = now
                    log.exception("raft tick failed (%d in a row)", failures)
                if now - failing_since >= TICK_FAILURE_LIMIT:
                    self._fail("tick", f"member {self.name}: the Raft tick failed every time "
                               f"for {now - failing_since:.0f} s ({failures} times; last: "
                               f"{type(e).__name__}: {e}); it is stopping")
                    return
                time.sleep(self.timing.tick)
            now = time.monotonic()
            self.ticks.observe(now - last)
            last = now
            took = now - started - self.timing.tick
            if took > self.timing.election_min / 2:
                log.warning("raft tick took %.0f ms (election timeout %.0f-%.0f ms)",
                            took * 1000, self.timing.election_min * 1000,
                            self.timing.election_max * 1000)

    def _fail(self, kind: str, message: str) -> None:
        """On the tick thread: stop ticking for good and tell the loop why."""
        if self.failure is not None:
            return
        failure = Failure(kind, message)
        self.failure = failure
        self._stopping.set()
        # Nothing more leaves this member, not even the rest of the current tick's
        # messages: pysyncobj swallows some failures (loading a received snapshot) and
        # then acknowledges what it failed to do.
        raft.halt(self.node)
        log.critical("%s", message)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._settle_failure, failure)

    def _settle_failure(self, failure: Failure) -> None:
        for p in list(self._pending.values()):
            if not p.future.done():
                p.future.set_exception(OutcomeUnknown("etcdserver: " + failure.message))
        if self._failed is not None and not self._failed.done():
            self._failed.set_result(failure)

    def _check_serving(self) -> None:
        if self.failure is not None:
            raise Unavailable("etcdserver: " + self.failure.message)

    # ---- tick thread side ---------------------------------------------------------------

    def _on_apply(self, data: bytes, entry_term: int) -> None:
        try:
            cmd = st.decode_command(data)
        except Exception as e:  # noqa: BLE001 - never raise inside apply (bug 3)
            log.error("undecodable command: %r", e)
            return
        try:  # malformed commands were answered with an error; nobody waits for them
            op_id = st.command_id(cmd) if isinstance(cmd, dict) else ("", 0)
        except st.StoreError:
            op_id = ("", 0)
        now = time.monotonic()
        with self.lock:
            # A resubmitted copy of an applied command is answered from the result
            # table and changes nothing: it is not a write to count again.
            repeated = bool(op_id[0]) and op_id in self.state.results
            result, events = self.state.apply(cmd, entry_term=entry_term)
            if not repeated:
                self._track_lease(cmd, result, now)
            revision = self.state.revision
        self.applied_total += 1
        if not repeated:
            self._count_fenced(cmd, result)
        with self._outbox_lock:
            self._outbox.append(("applied", op_id, result, revision, events))

    def _count_fenced(self, cmd: Any, result: st.Result) -> None:
        """Writes stamped with a leader's term: how many each term got applied, and how
        many were refused as stale (what a test of fencing reads, through /metrics)."""
        term = cmd.get("term") if isinstance(cmd, dict) else None
        if not isinstance(term, int) or not term:
            return
        if str(result.get("error", "")).startswith(st.ERR_STALE_TERM):
            self.fenced_writes += 1
        elif "error" not in result:
            self.stamped_writes[term] = self.stamped_writes.get(term, 0) + 1

    def _track_lease(self, cmd: dict[str, Any], result: st.Result, now: float) -> None:
        if "error" in result:
            return
        op = cmd.get("op")
        if op in ("lease_grant", "lease_keepalive"):
            self._lease_deadline[int(result["ID"])] = now + int(result["TTL"])
        elif op in ("lease_revoke", "lease_expire"):
            lease_id = int(cmd["req"]["ID"])
            if lease_id not in self.state.leases:
                self._lease_deadline.pop(lease_id, None)

    def _save_dump(self, path: str, raft_data: Any) -> None:
        # On the tick thread, which is the only writer of the state: the fork copies a
        # state that no apply is halfway through.
        self._snapshots.start(self.state.dump, raft.pack_raft_entries(raft_data))
        # pysyncobj renames `path` over the dump when this returns; our child writes
        # elsewhere, so nothing may be there (the writer removed leftovers at start).
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def _load_dump(self, path: str) -> Any:
        if self._startup_dump is not None:  # checked and loaded before SyncObj was made
            (new, raft_data), self._startup_dump = self._startup_dump, None
        else:  # a snapshot the leader sent, synced and checked by SnapshotReceiver
            # A local snapshot still being written holds an older state: never put it
            # over this one.
            self._snapshots.supersede()
            try:
                blob, raft_data = disk.read_dump_file(path)
                new = st.State.load(blob)
            except Exception as e:
                # pysyncobj logs this, goes on with the old state and acknowledges the
                # snapshot as installed: stop instead (a failed replica sends nothing
                # more, that acknowledgement included).
                self._fail("disk", f"member {self.name} cannot install the snapshot "
                           f"it received ({type(e).__name__}: {e}); it is stopping")
                raise
        now = time.monotonic()
        with self.lock:
            old_revision = self.state.revision
            self.state = new
            self._lease_deadline = {i: now + ls.ttl for i, ls in new.leases.items()}
        with self._outbox_lock:
            self._outbox.append(("snapshot", old_revision))
        configured = [self.raft_addr] + ([] if self.solo else self.peers)
        return raft.unpack_raft_entries(raft_data, configured=configured)

    def _on_tick(self) -> None:
        node = self.node
        node.flush_appends()
        self.journal.flush_if_dirty()  # while the followers write their copies
        leader = raft.leader_address(node)
        view = self.view
        term = node.raftCurrentTerm
        if leader != view.leader:
            view.leader_changes += 1
        if leader != view.leader or term != view.term:  # etcd's "elected leader at term"
            log.info("raft term %d: %s", term, "this member leads" if leader == self.raft_addr
                     else f"leader {leader}" if leader else "no leader")
        view.term = term
        view.commit_index = node.raftCommitIndex
        view.last_applied = node.raftLastApplied
        view.is_leader = bool(node._isLeader())
        members = (self.raft_addr, *sorted(raft.member_addresses(node)))
        if members != view.members:
            view.members = members
        changed = leader != view.leader
        view.leader = leader
        if leader is not None:
            self._joined = True
        with self._outbox_lock:
            batch, self._outbox = self._outbox, []
        if (batch or changed) and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._deliver, batch, changed)

    # ---- loop side ----------------------------------------------------------------------

    def _deliver(self, batch: list[tuple[Any, ...]], leader_changed: bool) -> None:
        for item in batch:
            if item[0] == "applied":
                _, op_id, result, revision, events = item
                pending = self._pending.pop(op_id, None)
                if pending is not None and not pending.future.done():
                    pending.future.set_result(result)
                if events:
                    self.hub.publish(revision, events)
            else:
                self._after_snapshot(item[1])
        if leader_changed and self.view.leader is not None:
            self._resubmit(older_than=0.0)

    def _after_snapshot(self, old_revision: int) -> None:
        """A snapshot replaced the state: replay what it skipped, settle waiters."""
        with self.lock:
            try:
                missed = self.state.events_from(old_revision + 1, b"\0", b"\0")
            except st.Compacted as e:
                missed = None
                compact = e.compact_revision
            results = self.state.results
            done = {op_id: results[op_id] for op_id in self._pending if op_id in results}
        log.info("loaded a snapshot: revision %d -> %d", old_revision, self.state.revision)
        if missed is None:
            self.hub.cancel_all(st.ERR_COMPACTED, compact)
        else:
            for revision, events in missed:
                self.hub.publish(revision, events)
        for op_id, result in done.items():
            fut = self._pending.pop(op_id).future
            if not fut.done():
                fut.set_result(result)

    async def propose(
        self,
        op: str,
        req: dict[str, Any] | None = None,
        *,
        term: int | None = None,
        timeout: float = 10.0,
    ) -> st.Result:
        """Commit one command and return its result once this replica has applied it."""
        self._check_serving()
        loop = asyncio.get_running_loop()
        op_id = (self.client_id, next(self._seq))
        cmd: dict[str, Any] = {"op": op, "req": req or {}, "cid": op_id[0], "seq": op_id[1]}
        if term:
            cmd["term"] = term
        data = st.encode_command(cmd)
        if len(data) > MAX_REQUEST_BYTES + 4096:
            raise st.StoreError("etcdserver: request is too large")
        now = loop.time()
        pending = Pending(data, now, now + timeout, loop.create_future())
        self._pending[op_id] = pending
        self.node.submit(data)
        try:
            # No timer per proposal: _sweep_pending fails it once its deadline passed.
            return await pending.future
        finally:
            self._pending.pop(op_id, None)

    def _resubmit(self, *, older_than: float) -> None:
        """Submit again what may have been lost with a leader; the state dedups copies."""
        assert self._loop is not None
        now = self._loop.time()
        for p in self._pending.values():
            if now - p.submitted >= older_than:
                p.submitted = now
                self.node.submit(p.data)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self._sweep_pending()

    def _sweep_pending(self) -> None:
        """Resubmit stale proposals and fail those past their deadline (outcome unknown:
        a timed-out command may still commit, as in etcd)."""
        assert self._loop is not None
        self._resubmit(older_than=RESUBMIT_AFTER)
        now = self._loop.time()
        for p in self._pending.values():
            if now >= p.deadline and not p.future.done():
                p.future.set_exception(OutcomeUnknown("etcdserver: request timed out"))

    async def barrier(self, timeout: float = 10.0) -> None:
        """Wait until this replica has applied everything committed before the call."""
        loop = asyncio.get_running_loop()
        if self._pending_barrier is None:
            self._pending_barrier = loop.create_future()
            loop.call_soon(self._launch_barrier, timeout)
        await asyncio.shield(self._pending_barrier)

    def _launch_barrier(self, timeout: float) -> None:
        fut, self._pending_barrier = self._pending_barrier, None
        assert fut is not None

        def settle(task: asyncio.Task[st.Result]) -> None:
            if fut.done():
                return
            if task.cancelled():
                fut.set_exception(Unavailable("etcdserver: read barrier cancelled"))
            elif task.exception() is not None:
                fut.set_exception(task.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(None)

        asyncio.ensure_future(self.propose("noop", timeout=timeout)).add_done_callback(settle)

    async def range(self, req: dict[str, Any], *, serializable: bool = False) -> st.Result:
        self._check_serving()
        if not serializable:
            await self.barrier()
        with self.lock:
            return self.state.range(req)

    def open_watch(
        self, key: bytes, end: bytes, start_revision: int, *, route: Route | None = None
    ) -> tuple[list[tuple[int, list[st.Event]]], Watcher]:
        """History from `start_revision` and a watcher for everything after it (offered
        only the events `route` picks for it, if given; the history is all of them).

        Raises `Compacted` when the start lies below the compaction point.
        """
        with self.lock:
            current = self.state.revision
            if start_revision and start_revision <= current:
                history = self.state.events_from(start_revision, key, end)
            else:
                history = []
            watcher = self.hub.add(key, end, max(current + 1, start_revision), route=route)
        return history, watcher

    def end_watches(self) -> None:
        """End every watch of this replica (its server is stopping): each stream ends
        cleanly and its client watches again elsewhere from its last revision."""
        self.hub.cancel_all(SHUTTING_DOWN, 0)

    def lease_ttl(self, lease_id: int) -> tuple[int, int, list[bytes]] | None:
        """(remaining TTL, granted TTL, keys) as this replica's clock sees it."""
        with self.lock:
            lease = self.state.leases.get(lease_id)
            if lease is None:
                return None
            deadline = self._lease_deadline.get(lease_id, time.monotonic() + lease.ttl)
            remaining = max(0, round(deadline - time.monotonic()))
            return remaining, lease.ttl, sorted(lease.keys)

    @property
    def revision(self) -> int:
        with self.lock:
            return self.state.revision

    def lease_ids(self) -> list[int]:
        with self.lock:
            return sorted(self.state.leases)

    def key_count(self) -> int:
        with self.lock:
            return len(self.state.kvs)

    def stats(self) -> Stats:
        """What /metrics shows of this replica, read in one go."""
        with self.lock:
            revision = self.state.revision
        return Stats(revision=revision, watchers=len(self.hub),
                     journal_flushes=self.journal.flushes, ticks=self.ticks,
                     fenced_writes=self.fenced_writes,
                     stamped_writes=dict(self.stamped_writes))

    async def pulse_watchers(self, every: float) -> None:
        """Run the watch hub's one timer (bookmarks, progress notices, deadlines and
        liveness of every watcher) until cancelled."""
        await self.hub.pulse_forever(every)

    async def snapshot(self) -> bytes:
        """The whole state as msgpack bytes, serialized by a forked child: the lock is
        held only for the fork, so neither the tick thread nor the event loop waits
        while a large state is encoded (as pysyncobj's own snapshots are written)."""
        read_end, write_end = os.pipe()
        with self.lock:  # the child sees the state between two applies
            pid = os.fork()
        if pid == 0:  # the child: no locks, no logging, no return
            code = 1
            try:
                os.close(read_end)
                blob = self.state.dump()
                view = memoryview(blob)
                while view:
                    view = view[os.write(write_end, view):]
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        loop = asyncio.get_running_loop()
        try:
            blob = await loop.run_in_executor(None, _read_all, read_end)
        finally:
            os.close(read_end)
            _, status = await loop.run_in_executor(None, os.waitpid, pid, 0)
        if status != 0:
            raise st.StoreError("etcdserver: the snapshot could not be taken", code="Internal")
        return blob

    @property
    def leader_id(self) -> int:
        leader = self.view.leader
        return member_id(leader) if leader else 0

    def members(self) -> list[dict[str, Any]]:
        with self.lock:
            known = dict(self.state.members)
        out = []
        for addr in sorted(self.view.members or {self.raft_addr, *self.peers}):
            info = known.get(addr, {})
            out.append({
                "ID": member_id(addr),
                "name": info.get("name", ""),
                "peerURLs": [f"http://{addr}"],
                "clientURLs": [info["api"]] if info.get("api") else [],
            })
        return out

    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        if self.failure is not None:
            return self.failure.message
        view = self.view
        if view.leader is None:
            return "no leader known"
        if view.last_applied < view.commit_index:
            return "log not applied"
        return None

    async def change_member(self, *, add: bool, raft_addr: str, timeout: float = 10.0) -> None:
        """Add or remove a member through Raft and wait until the change is applied here.

        Raises `MembershipError` if the leader refused it, `Unavailable` if no leader
        committed it in time (it may still take effect, as any timed-out write).
        """
        self._check_serving()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str | None] = loop.create_future()

        def done(reason: str | None) -> None:  # on the tick thread
            def settle() -> None:
                if not fut.done():
                    fut.set_result(reason)

            loop.call_soon_threadsafe(settle)

        raft.change_membership(self.node, add=add, addr=raft_addr, done=done)
        try:
            async with asyncio.timeout(timeout):
                reason = await fut
        except TimeoutError:
            raise OutcomeUnknown("etcdserver: request timed out (the membership change may "
                              "still take effect)") from None
        if reason is not None:
            if reason.startswith("no leader"):
                raise Unavailable("etcdserver: " + reason)
            raise MembershipError("etcdserver: " + reason)

    # ---- leader duties ------------------------------------------------------------------

    @property
    def settled_leader(self) -> bool:
        """Whether this replica leads and has made its term's first writes (its member
        record, then the fencing noop): until then the store still changes on its own,
        which a caller that wants a quiet store (a test) waits out."""
        return self.view.is_leader and self._fenced_term == self.view.term

    async def _leader_duties(self) -> None:
        """Lease expiry, automatic compaction and the term fence, while this replica leads."""
        registered = False
        led_term = 0
        next_compact = 0.0
        while True:
            await asyncio.sleep(0.1)
            try:
                if not registered and self.view.leader is not None:
                    await self.propose("member", {"raft": self.raft_addr, "name": self.name,
                                                  "api": self.api_url}, timeout=5)
                    registered = True
                if not self.view.is_leader:
                    led_term = 0
                    continue
                term = self.view.term
                if term != led_term:
                    # The first write of a new leader: fences off every older leader's
                    # stamped writes, and restarts every lease countdown from now.
                    await self.propose("noop", term=term, timeout=5)
                    self._fenced_term = term
                    now = time.monotonic()
                    with self.lock:
                        self._lease_deadline = {
                            i: now + ls.ttl for i, ls in self.state.leases.items()
                        }
                    led_term = term
                self._expire_due_leases(term)
                if self.solo:
                    await self._take_back_peers()
                now = time.monotonic()
                if now >= next_compact:
                    next_compact = now + 5.0
                    await self._auto_compact(term)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - duties retry on the next round
                log.info("leader duties: %s", e)

    def _expire_due_leases(self, term: int) -> None:
        now = time.monotonic()
        with self.lock:
            due = [
                (i, self.state.leases[i].renewals)
                for i, deadline in self._lease_deadline.items()
                if deadline <= now and i in self.state.leases and i not in self._expiring
            ]
        for lease_id, renewals in due:
            self._expiring.add(lease_id)
            task = asyncio.ensure_future(self.propose(
                "lease_expire", {"ID": lease_id, "renewals": renewals}, term=term, timeout=5))
            task.add_done_callback(self._expired_callback(lease_id))

    def _expired_callback(self, lease_id: int) -> Callable[[asyncio.Future[st.Result]], None]:
        def done(task: asyncio.Future[st.Result]) -> None:
            self._expiring.discard(lease_id)
            if not task.cancelled():
                task.exception()  # retrieved: a failed expiry is retried next round

        return done

    async def _take_back_peers(self) -> None:
        """Solo mode: add each configured peer that answers on its Raft port, one a time."""
        loop = asyncio.get_running_loop()
        for peer in self.peers:
            if peer in raft.member_addresses(self.node):
                continue
            host, _, port = peer.rpartition(":")
            try:
                async with asyncio.timeout(0.5):
                    _r, w = await asyncio.open_connection(host, int(port))
                w.close()
            except (OSError, TimeoutError):
                return
            added: asyncio.Future[Any] = loop.create_future()

            def done(result: Any, err: Any, fut: asyncio.Future[Any] = added) -> None:
                def settle() -> None:
                    if not fut.done():
                        fut.set_result(err)

                loop.call_soon_threadsafe(settle)

            raft.add_member(self.node, peer, done)
            async with asyncio.timeout(10):
                err = await added
            log.warning("solo cluster: adding member %s: %s", peer, err)
            return  # one membership change at a time
        self.solo = False
        recovery.end_solo(self.data_dir)
        log.warning("solo cluster: every configured peer is back")

    async def _auto_compact(self, term: int) -> None:
        with self.lock:
            target = self.state.revision - self.history_revisions
            compacted = self.state.compact_revision
        if target > compacted and target > 1:
            await self.propose("compact", {"revision": target}, term=term, timeout=5)
