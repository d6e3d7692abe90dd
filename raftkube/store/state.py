"""The store's state machine: etcd's MVCC key space as plain, deterministic Python.

Everything Raft replicates ends up in `State.apply(command)`. It never reads the clock,
randomness or the environment, so the same commands give the same state on every replica;
timestamps, lease IDs and lease TTLs arrive inside the command, computed by the proposer.
`apply` never raises: pysyncobj retries an entry that raised forever and wedges the
cluster (PYSYNCOBJ-NOTES bug 3), so every failure is returned as a value.

Shape of the data:
- `kvs` holds the live keys, `_keys` the same keys sorted (ranges are prefix scans).
- `history` is the MVCC window: one `(revision, events)` entry per write revision, each event
  carrying the key's previous value. Reads of the past undo newer events; watches replay it.
  Compaction drops entries below the compaction point, so the window is bounded by it.
- `results` is the exactly-once table: `(client_id, seq) -> result` for the newest ops, so
  that a retried command is answered from the table instead of being applied twice.
- `max_term` is the fencing token: a command stamped with an older Raft term is refused.

Requests use etcd's field names with raw bytes for keys and values; the HTTP layer does
base64 and etcd's JSON conventions.
"""

from __future__ import annotations

import bisect
import collections
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import msgpack

MAX_TXN_OPS = 128
RESULT_TABLE_SIZE = 20_000

ERR_COMPACTED = "mvcc: required revision has been compacted"
ERR_STALE_TERM = "raftkube: stale term"  # a fenced write: a newer leader has written
ERR_FUTURE_REV = "mvcc: required revision is a future revision"
ERR_DUPLICATE_KEY = "etcdserver: duplicate key given in txn request"
ERR_TOO_MANY_OPS = "etcdserver: too many operations in txn request"
ERR_LEASE_NOT_FOUND = "etcdserver: requested lease not found"
ERR_LEASE_EXISTS = "etcdserver: lease already exists"
ERR_KEY_NOT_FOUND = "etcdserver: key not found"
ERR_EMPTY_KEY = "etcdserver: key is not provided"

Result = dict[str, Any]


class KeyValue(NamedTuple):
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int

    def as_dict(self, *, keys_only: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = self._asdict()
        if keys_only:
            d["value"] = b""
        return d


PUT = "PUT"
DELETE = "DELETE"


class Event(NamedTuple):
    type: str
    kv: KeyValue
    prev_kv: KeyValue | None


class StoreError(Exception):
    """A request the store refuses; `code` is the gRPC-style code the API maps to HTTP."""

    def __init__(self, message: str, *, code: str = "InvalidArgument") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Compacted(StoreError):
    def __init__(self, compact_revision: int) -> None:
        super().__init__(ERR_COMPACTED, code="OutOfRange")
        self.compact_revision = compact_revision


def _bytes(req: dict[str, Any], name: str) -> bytes:
    value = req.get(name, b"")
    if not isinstance(value, bytes):
        raise StoreError(f"etcdserver: {name} must be bytes, got {type(value).__name__}")
    return value


def _int(req: dict[str, Any], name: str, *, lo: int = -(2**63), hi: int = 2**63 - 1) -> int:
    """An integer field that fits etcd's int64 (so that every snapshot can be encoded)."""
    value = req.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(f"etcdserver: {name} must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise StoreError(f"etcdserver: {name} out of range: {value}")
    return value


def error(message: str, code: str = "InvalidArgument") -> Result:
    return {"error": message, "code": code}


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's key-range rule: empty end = the key alone, b"\\0" = everything from start."""
    if not end:
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with `prefix`."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


def command_id(command: dict[str, Any]) -> tuple[str, int]:
    """The (client id, sequence number) a command carries; StoreError when malformed."""
    cid = command.get("cid", "")
    if not isinstance(cid, str):
        raise StoreError("raftkube: cid must be a string")
    return cid, _int(command, "seq", lo=0)


class Lease(NamedTuple):
    ttl: int
    keys: set[bytes]
    renewals: int


def _branch_writes(ops: list[dict[str, Any]]) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """The keys a txn branch puts and the ranges it deletes, checked as etcd's
    checkIntervals checks them: this level's deletes first, then each nested txn's puts
    against them and against earlier siblings (a key put by both branches of one nested
    txn is fine: they exclude each other), then that txn's deletes, then this level's puts
    against everything. A clash is "duplicate key given in txn request"."""
    dels = [(op["request_delete_range"].get("key", b""),
             op["request_delete_range"].get("range_end", b""))
            for op in ops if "request_delete_range" in op]

    def deleted(key: bytes) -> bool:
        return any(in_range(key, start, end) for start, end in dels)

    puts: set[bytes] = set()
    for op in ops:
        if "request_txn" not in op:
            continue
        t = op["request_txn"]
        then_puts, then_dels = _branch_writes(t.get("success", []))
        else_puts, else_dels = _branch_writes(t.get("failure", []))
        for key in then_puts:
            if key in puts or deleted(key):
                raise StoreError(ERR_DUPLICATE_KEY)
            puts.add(key)
        for key in else_puts:
            if (key in puts and key not in then_puts) or deleted(key):
                raise StoreError(ERR_DUPLICATE_KEY)
            puts.add(key)
        dels += then_dels + else_dels
    for op in ops:
        if "request_put" in op:
            key = op["request_put"].get("key", b"")
            if key in puts or deleted(key):
                raise StoreError(ERR_DUPLICATE_KEY)
            puts.add(key)
    return puts, dels


def _check_op_counts(req: dict[str, Any]) -> None:
    for part in ("compare", "success", "failure"):
        if len(req.get(part, [])) > MAX_TXN_OPS:
            raise StoreError(ERR_TOO_MANY_OPS)
    for branch in ("success", "failure"):
        for op in req.get(branch, []):
            if "request_txn" in op:
                _check_op_counts(op["request_txn"])


def check_txn(req: dict[str, Any]) -> None:
    """etcd's static txn checks: at most 128 ops per branch at every level, no key
    written twice (checked once, from the top: `_branch_writes` walks the nesting)."""
    _check_op_counts(req)
    for branch in ("success", "failure"):
        _branch_writes(req.get(branch, []))


_SORT_TARGETS = {
    "KEY": lambda kv: kv.key,
    "VERSION": lambda kv: kv.version,
    "CREATE": lambda kv: kv.create_revision,
    "MOD": lambda kv: kv.mod_revision,
    "VALUE": lambda kv: kv.value,
}


def _compare_holds(cmp: dict[str, Any], kv: KeyValue | None) -> bool:
    target = cmp.get("target", "VERSION")
    result = cmp.get("result", "EQUAL")
    if target == "VALUE":
        if kv is None:
            return False
        actual: Any = kv.value
        wanted: Any = cmp.get("value", b"")
    elif target == "VERSION":
        actual, wanted = (kv.version if kv else 0), cmp.get("version", 0)
    elif target == "CREATE":
        actual, wanted = (kv.create_revision if kv else 0), cmp.get("create_revision", 0)
    elif target == "MOD":
        actual, wanted = (kv.mod_revision if kv else 0), cmp.get("mod_revision", 0)
    elif target == "LEASE":
        actual, wanted = (kv.lease if kv else 0), cmp.get("lease", 0)
    else:
        raise StoreError(f"etcdserver: unknown compare target {target!r}")
    if result == "EQUAL":
        return bool(actual == wanted)
    if result == "NOT_EQUAL":
        return bool(actual != wanted)
    if result == "GREATER":
        return bool(actual > wanted)
    if result == "LESS":
        return bool(actual < wanted)
    raise StoreError(f"etcdserver: unknown compare result {result!r}")


class _Undo:
    """What a write changed, so that a failing txn leaves no trace."""

    def __init__(self) -> None:
        self.kvs: dict[bytes, KeyValue | None] = {}
        self.leases: dict[int, Lease] = {}

    def remember_key(self, key: bytes, old: KeyValue | None) -> None:
        self.kvs.setdefault(key, old)

    def remember_lease(self, lease_id: int, lease: Lease) -> None:
        if lease_id not in self.leases:
            self.leases[lease_id] = Lease(lease.ttl, set(lease.keys), lease.renewals)


class State:
    """The replicated key space. See the module docstring."""

    def __init__(self) -> None:
        self.revision = 1  # etcd starts at 1; the first write is revision 2
        self.compact_revision = 0
        self.kvs: dict[bytes, KeyValue] = {}
        self._keys: list[bytes] = []
        self.history: list[tuple[int, list[Event]]] = []
        self.leases: dict[int, Lease] = {}
        self.results: collections.OrderedDict[tuple[str, int], Result] = (
            collections.OrderedDict()
        )
        self.max_term = 0
        # raft address -> {"name", "api"}: who the masters are, for member/list.
        self.members: dict[str, dict[str, str]] = {}

    # ---- commands -----------------------------------------------------------------------

    def apply(self, command: dict[str, Any], *,
              entry_term: int = 0) -> tuple[Result, list[Event]]:
        """Apply one replicated command; returns its result and the events it produced.

        Every outcome of a command with a client id, errors included, goes into the
        result table: a resubmitted copy must get the first copy's answer even when the
        state has changed in between so that it would now succeed.

        `entry_term` is the Raft term of the log entry that carries the command (the
        same on every replica: it is part of the entry). A command stamped with an
        older term than its entry's was decided under one leader and reached the log
        through a later one (resubmitted after a leader change, or forwarded while the
        leadership moved): it is refused as stale, even before the new leader's first
        stamped write has raised `max_term`. A resubmitted copy whose first copy was
        applied in its own term still gets the first copy's answer (the table is looked
        at first). 0 (tools replaying commands without their entries) skips the check.
        """
        if not isinstance(command, dict):
            return error(f"raftkube: a command is a map, got {type(command).__name__}"), []
        try:
            op_id = command_id(command)
        except StoreError as e:
            return error(e.message, e.code), []
        if op_id[0] and op_id in self.results:
            return self.results[op_id], []
        events: list[Event] = []
        try:
            result, events = self._apply(command, entry_term)
        except StoreError as e:
            result = error(e.message, e.code)
        except Exception as e:  # noqa: BLE001 - an apply that raises wedges Raft
            result = error(f"raftkube: internal error applying {command.get('op')!r}: {e!r}",
                           "Internal")
        if op_id[0]:
            self.results[op_id] = result
            while len(self.results) > RESULT_TABLE_SIZE:
                self.results.popitem(last=False)
        return result, events

    def _apply(self, command: dict[str, Any], entry_term: int) -> tuple[Result, list[Event]]:
        term = _int(command, "term", lo=0)
        if term:
            if term < self.max_term:
                return error(
                    f"{ERR_STALE_TERM} {term}: a leader of term {self.max_term} has written",
                    "FailedPrecondition",
                ), []
            if term < entry_term:
                return error(
                    f"{ERR_STALE_TERM} {term}: committed by the leader of term {entry_term}",
                    "FailedPrecondition",
                ), []
            self.max_term = term
        op = command.get("op")
        req = command.get("req") or {}
        if not isinstance(req, dict):
            raise StoreError("raftkube: req must be a map")
        if op == "noop":
            return {"revision": self.revision}, []
        if op == "member":
            self.members[str(req["raft"])] = {"name": str(req["name"]), "api": str(req["api"])}
            return {"revision": self.revision}, []
        if op == "compact":
            return self._compact(_int(req, "revision")), []
        if op == "lease_grant":
            return self._lease_grant(req), []
        if op == "lease_keepalive":
            return self._lease_keepalive(_int(req, "ID")), []
        if op in ("lease_revoke", "lease_expire"):
            return self._lease_revoke(req, expiry=op == "lease_expire")
        if op in ("put", "delete_range", "txn"):
            return self._write(op, req)
        return error(f"raftkube: unknown command {op!r}"), []

    def _write(self, op: str, req: dict[str, Any]) -> tuple[Result, list[Event]]:
        rev = self.revision + 1
        events: list[Event] = []
        undo = _Undo()
        try:
            if op == "put":
                result = self._put(req, rev, events, undo)
            elif op == "delete_range":
                result = self._delete_range(req, rev, events, undo)
            else:
                check_txn(req)
                path: list[bool] = []
                self._choose_branches(req, path)
                result = self._txn(req, rev, events, undo, iter(path))
        except Exception:
            self._rollback(undo)
            raise
        if events:
            self.revision = rev
            self.history.append((rev, events))
        result["revision"] = self.revision
        return result, events

    def _rollback(self, undo: _Undo) -> None:
        for key, old in undo.kvs.items():
            self._set_kv(key, old)
        for lease_id, lease in undo.leases.items():
            self.leases[lease_id] = lease

    def _set_kv(self, key: bytes, kv: KeyValue | None) -> None:
        present = key in self.kvs
        if kv is None:
            if present:
                del self.kvs[key]
                i = bisect.bisect_left(self._keys, key)
                del self._keys[i]
        else:
            if not present:
                bisect.insort(self._keys, key)
            self.kvs[key] = kv

    def _detach(self, kv: KeyValue, undo: _Undo) -> None:
        lease = self.leases.get(kv.lease)
        if lease is not None:
            undo.remember_lease(kv.lease, lease)
            lease.keys.discard(kv.key)

    def _put(self, req: dict[str, Any], rev: int, events: list[Event], undo: _Undo) -> Result:
        key = _bytes(req, "key")
        if not key:
            raise StoreError(ERR_EMPTY_KEY)
        old = self.kvs.get(key)
        value = _bytes(req, "value")
        lease_id = _int(req, "lease")
        if req.get("ignore_value") or req.get("ignore_lease"):
            if old is None:
                raise StoreError(ERR_KEY_NOT_FOUND)
            if req.get("ignore_value"):
                value = old.value
            if req.get("ignore_lease"):
                lease_id = old.lease
        if lease_id and lease_id not in self.leases:
            raise StoreError(ERR_LEASE_NOT_FOUND, code="NotFound")
        undo.remember_key(key, old)
        if old is not None:
            kv = KeyValue(key, value, old.create_revision, rev, old.version + 1, lease_id)
            if old.lease != lease_id:
                self._detach(old, undo)
        else:
            kv = KeyValue(key, value, rev, rev, 1, lease_id)
        if lease_id:
            lease = self.leases[lease_id]
            undo.remember_lease(lease_id, lease)
            lease.keys.add(key)
        self._set_kv(key, kv)
        events.append(Event(PUT, kv, old))
        result: Result = {}
        if req.get("prev_kv") and old is not None:
            result["prev_kv"] = old.as_dict()
        return result

    def _delete_range(
        self, req: dict[str, Any], rev: int, events: list[Event], undo: _Undo
    ) -> Result:
        key = _bytes(req, "key")
        if not key:
            raise StoreError(ERR_EMPTY_KEY)
        doomed = list(self._iter_current(key, _bytes(req, "range_end")))
        for old in doomed:
            undo.remember_key(old.key, old)
            self._detach(old, undo)
            self._set_kv(old.key, None)
            events.append(Event(DELETE, KeyValue(old.key, b"", 0, rev, 0, 0), old))
        result: Result = {"deleted": len(doomed)}
        if req.get("prev_kv"):
            result["prev_kvs"] = [kv.as_dict() for kv in doomed]
        return result

    def _choose_branches(self, req: dict[str, Any], path: list[bool]) -> None:
        """Evaluate every compare the txn will meet, nested ones included, against the
        state before the txn writes anything (etcd's compareToPath), in pre-order."""
        succeeded = True
        for cmp in req.get("compare", []):
            key = _bytes(cmp, "key")
            end = _bytes(cmp, "range_end")
            kvs: list[KeyValue | None] = (
                list(self._iter_current(key, end)) if end else [self.kvs.get(key)])
            if not kvs:
                kvs = [None]
            if not all(_compare_holds(cmp, kv) for kv in kvs):
                succeeded = False
                break
        path.append(succeeded)
        for op in req.get("success" if succeeded else "failure", []):
            if "request_txn" in op:
                self._choose_branches(op["request_txn"], path)

    def _txn(self, req: dict[str, Any], rev: int, events: list[Event], undo: _Undo,
             path: Iterator[bool]) -> Result:
        succeeded = next(path)
        responses: list[Result] = []
        for op in req.get("success" if succeeded else "failure", []):
            if "request_range" in op:
                r = self.range(op["request_range"], _pending_revision=rev if events else None)
                responses.append({"response_range": r})
            elif "request_put" in op:
                r = self._put(op["request_put"], rev, events, undo)
                responses.append({"response_put": r})
            elif "request_delete_range" in op:
                r = self._delete_range(op["request_delete_range"], rev, events, undo)
                responses.append({"response_delete_range": r})
            elif "request_txn" in op:
                r = self._txn(op["request_txn"], rev, events, undo, path)
                responses.append({"response_txn": r})
            else:
                raise StoreError(f"etcdserver: unknown txn operation {sorted(op)!r}")
        return {"succeeded": succeeded, "responses": responses}

    def _compact(self, revision: int) -> Result:
        if revision <= self.compact_revision:
            return error(ERR_COMPACTED, "OutOfRange")
        if revision > self.revision:
            return error(ERR_FUTURE_REV, "OutOfRange")
        self.compact_revision = revision
        # Keep the events *at* the compaction point: etcd serves reads at exactly that
        # revision, and a watch may start there.
        cut = bisect.bisect_left(self.history, revision, key=lambda entry: entry[0])
        del self.history[:cut]
        return {"revision": self.revision}

    def _lease_grant(self, req: dict[str, Any]) -> Result:
        lease_id = _int(req, "ID")
        ttl = _int(req, "TTL", lo=0, hi=2**31)
        if lease_id <= 0:
            return error("etcdserver: lease ID must be chosen by the proposer")
        if lease_id in self.leases:
            return error(ERR_LEASE_EXISTS, "FailedPrecondition")
        self.leases[lease_id] = Lease(ttl, set(), 0)
        return {"ID": lease_id, "TTL": ttl, "revision": self.revision}

    def _lease_keepalive(self, lease_id: int) -> Result:
        lease = self.leases.get(lease_id)
        if lease is None:
            return error(ERR_LEASE_NOT_FOUND, "NotFound")
        self.leases[lease_id] = lease._replace(renewals=lease.renewals + 1)
        return {"ID": lease_id, "TTL": lease.ttl, "revision": self.revision}

    def _lease_revoke(self, req: dict[str, Any], *, expiry: bool) -> tuple[Result, list[Event]]:
        lease_id = _int(req, "ID")
        lease = self.leases.get(lease_id)
        if lease is None:
            return error(ERR_LEASE_NOT_FOUND, "NotFound"), []
        if expiry and _int(req, "renewals", lo=0) != lease.renewals:
            # A keepalive was committed after the leader decided the lease was due:
            # the lease lives on, with the deadline that keepalive set.
            return {"expired": False, "revision": self.revision}, []
        rev = self.revision + 1
        events: list[Event] = []
        for key in sorted(lease.keys):
            old = self.kvs.get(key)
            if old is None:
                continue
            self._set_kv(key, None)
            events.append(Event(DELETE, KeyValue(key, b"", 0, rev, 0, 0), old))
        del self.leases[lease_id]
        if events:
            self.revision = rev
            self.history.append((rev, events))
        return {"expired": expiry, "revision": self.revision}, events

    # ---- reads (local, not replicated) ----------------------------------------------------

    def _iter_current(self, key: bytes, end: bytes) -> Iterator[KeyValue]:
        if not end:
            kv = self.kvs.get(key)
            if kv is not None:
                yield kv
            return
        i = bisect.bisect_left(self._keys, key)
        while i < len(self._keys):
            k = self._keys[i]
            if end != b"\0" and k >= end:
                break
            yield self.kvs[k]
            i += 1

    def _kvs_at(self, key: bytes, end: bytes, revision: int) -> list[KeyValue]:
        """The key range as it was at `revision`, by undoing the newer events."""
        at: dict[bytes, KeyValue | None] = {kv.key: kv for kv in self._iter_current(key, end)}
        start = bisect.bisect_right(self.history, revision, key=lambda entry: entry[0])
        for _rev, events in reversed(self.history[start:]):
            for ev in reversed(events):
                if in_range(ev.kv.key, key, end):
                    at[ev.kv.key] = ev.prev_kv
        return [at[k] for k in sorted(at) if at[k] is not None]  # type: ignore[misc]

    def check_revision(self, revision: int) -> None:
        if revision and revision < self.compact_revision:
            raise Compacted(self.compact_revision)
        if revision > self.revision:
            raise StoreError(ERR_FUTURE_REV, code="OutOfRange")

    def range(self, req: dict[str, Any], *, _pending_revision: int | None = None) -> Result:
        """etcd's Range. Raises StoreError for compacted or future revisions."""
        key = _bytes(req, "key")
        if not key:
            raise StoreError(ERR_EMPTY_KEY)
        end = _bytes(req, "range_end")
        revision = _int(req, "revision")
        self.check_revision(revision)
        if revision and revision < self.revision:
            kvs = self._kvs_at(key, end, revision)
        else:
            kvs = list(self._iter_current(key, end))
        count = len(kvs)
        kvs = self._filter(kvs, req)
        order = req.get("sort_order", "NONE")
        target = req.get("sort_target", "KEY")
        if order in ("ASCEND", "DESCEND") or target != "KEY":
            if target not in _SORT_TARGETS:
                raise StoreError(f"etcdserver: unknown sort target {target!r}")
            kvs.sort(key=_SORT_TARGETS[target], reverse=order == "DESCEND")
        limit = _int(req, "limit", lo=0)
        more = False
        if limit and len(kvs) > limit and not req.get("count_only"):
            kvs, more = kvs[:limit], True
        result: Result = {"count": count, "more": more}
        if not req.get("count_only"):
            keys_only = bool(req.get("keys_only"))
            result["kvs"] = [kv.as_dict(keys_only=keys_only) for kv in kvs]
        result["revision"] = _pending_revision or self.revision
        return result

    @staticmethod
    def _filter(kvs: list[KeyValue], req: dict[str, Any]) -> list[KeyValue]:
        for name, field, sign in (
            ("min_mod_revision", "mod_revision", 1),
            ("max_mod_revision", "mod_revision", -1),
            ("min_create_revision", "create_revision", 1),
            ("max_create_revision", "create_revision", -1),
        ):
            bound = _int(req, name)
            if bound:
                kvs = [kv for kv in kvs if (getattr(kv, field) - bound) * sign >= 0]
        return kvs

    def events_from(
        self, start_revision: int, key: bytes, end: bytes
    ) -> list[tuple[int, list[Event]]]:
        """History entries at or after `start_revision` that touch the key range."""
        if start_revision < self.compact_revision:
            raise Compacted(self.compact_revision)
        start = bisect.bisect_left(self.history, start_revision, key=lambda entry: entry[0])
        out = []
        for rev, events in self.history[start:]:
            picked = [ev for ev in events if in_range(ev.kv.key, key, end)]
            if picked:
                out.append((rev, picked))
        return out

    def lease_keys(self, lease_id: int) -> list[bytes]:
        lease = self.leases.get(lease_id)
        return sorted(lease.keys) if lease else []

    # ---- snapshots ----------------------------------------------------------------------

    def dump(self) -> bytes:
        """The whole state as msgpack (never pickle: a snapshot crosses the network)."""
        blob: bytes = msgpack.packb(
            {
                "v": 1,
                "revision": self.revision,
                "compact_revision": self.compact_revision,
                "kvs": [list(kv) for kv in self.kvs.values()],
                "history": [
                    [rev, [[e.type, list(e.kv), list(e.prev_kv) if e.prev_kv else None]
                           for e in events]]
                    for rev, events in self.history
                ],
                "leases": [[i, ls.ttl, sorted(ls.keys), ls.renewals]
                           for i, ls in self.leases.items()],
                "results": [[cid, seq, r] for (cid, seq), r in self.results.items()],
                "max_term": self.max_term,
                "members": self.members,
            },
            use_bin_type=True,
        )
        return blob

    @classmethod
    def load(cls, data: bytes) -> State:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
        if raw.get("v") != 1:
            raise ValueError(f"unknown snapshot format {raw.get('v')!r}")
        st = cls()
        st.revision = raw["revision"]
        st.compact_revision = raw["compact_revision"]
        st.kvs = {kv[0]: KeyValue(*kv) for kv in raw["kvs"]}
        st._keys = sorted(st.kvs)
        st.history = [
            (rev, [Event(t, KeyValue(*kv), KeyValue(*p) if p else None) for t, kv, p in evs])
            for rev, evs in raw["history"]
        ]
        st.leases = {i: Lease(ttl, set(keys), ren) for i, ttl, keys, ren in raw["leases"]}
        st.results = collections.OrderedDict(
            ((cid, seq), r) for cid, seq, r in raw["results"]
        )
        st.max_term = raw["max_term"]
        st.members = raw["members"]
        return st


def encode_command(command: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(command, use_bin_type=True)
    return data


def decode_command(data: bytes) -> dict[str, Any]:
    cmd = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(cmd, dict):
        raise ValueError("a command is a map")
    return cmd


def iter_events(entries: Iterable[tuple[int, list[Event]]]) -> Iterator[Event]:
    for _rev, events in entries:
        yield from events
