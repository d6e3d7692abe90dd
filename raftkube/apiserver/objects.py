"""Kubernetes objects in the replicated store: reads, and all-or-nothing writes.

`Objects` is what the REST layer calls. Every write is one store transaction whose
compares carry all of its preconditions: the object does (not) exist or still has the
revision the caller read, its namespace exists and is not being deleted, the NodePorts
and ClusterIP it takes are free. A write that fails a compare changes nothing; the caller
re-reads and answers Conflict, AlreadyExists or NotFound. There is no read-modify-write
window in which a concurrent writer could be overwritten.

It stores objects and does only what Kubernetes' API server does around that: defaults,
validation, generation, graceful deletion and finalizers (`deletion`), a namespace's
termination (`namespaces`), the pod binding subresource. Cascading to dependents and
emptying a namespace are controllers' work (the garbage collector, the namespace
controller), as in Kubernetes.

Service address allocations are keys too (see `addresses`), created and deleted in the
same transaction as the Service that holds them, so two Services never hold one port.
"""

from __future__ import annotations

import base64
import contextvars
import copy
import dataclasses
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from raftkube.api import (
    causes,
    conditions,
    defaults,
    kinds,
    names,
    qos,
    selectors,
    validation,
)
from raftkube.api.timestamps import rfc3339
from raftkube.apiserver import addresses, deletion, inputs, namespaces, patches, scale
from raftkube.apiserver import records as rec
from raftkube.apiserver import status as stt
from raftkube.store import state as st
from raftkube.store.replica import MAX_REQUEST_BYTES, OutcomeUnknown, Replica, Unavailable

MAX_OBJECT_BYTES = rec.MAX_OBJECT_BYTES
# The Raft term the current request's writes are stamped with (`X-Raftkube-Term`), set by
# the REST layer for the request: every write below goes through `commit`, which carries
# it into the store, where a write of a replaced leader is refused.
FENCE: contextvars.ContextVar[int | None] = contextvars.ContextVar("fence", default=None)
# Kinds whose status is written through the status subresource only.
STATUS_SUBRESOURCE = {"Pod", "Service", "Deployment", "ReplicaSet", "DaemonSet", "Job", "Node",
                      "Namespace"}
# Kinds without a spec, whose objects Kubernetes gives no metadata.generation.
NO_SPEC = {"ConfigMap", "Secret", "Event"}
# Kinds a list of which may be created in one request (`create_batch`), and how many
# items such a list, or a list of pod bindings (`bind_batch`), may hold: a recorder's
# queued events, a scheduler's decisions. A store txn has at most 128 compares (one per
# item, one for the namespace).
BATCH_KINDS = {"Event"}
BATCH_MAX = 100
# What the puts and compares of one batch's store txn may take, encoded: the store refuses
# a command over MAX_REQUEST_BYTES; the rest is headroom for the command's own fields.
TXN_BUDGET = MAX_REQUEST_BYTES - 64 * 1024
T = TypeVar("T")
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


key_of = rec.key_of  # the REST layer's names for them
prefix_of = rec.prefix_of
Stored = rec.Stored


def known_kind(api_version: str, kind: str) -> kinds.Kind:
    found = kinds.by_kind(api_version, kind)
    assert found is not None, kind
    return found


NAMESPACE_KIND = known_kind("v1", "Namespace")
POD_KIND = known_kind("v1", "Pod")


def matches(obj: dict[str, Any], label: selectors.LabelSelector | None,
            fields: selectors.FieldSelector | None) -> bool:
    """Whether an object is selected by a list's or a watch's selectors."""
    if label is not None and not label.matches((obj.get("metadata") or {}).get("labels")):
        return False
    return fields is None or fields.matches(obj)


def spec_of(obj: dict[str, Any]) -> dict[str, Any]:
    """What `generation` counts: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


@dataclass
class ListResult:
    items: list[dict[str, Any]]
    revision: int
    continue_token: str = ""


@dataclass
class Objects:
    """The REST layer's storage: one instance per master, around its replica."""

    replica: Replica
    service_cidr: str = "10.96.0.0/16"
    clock: Callable[[], float] = time.time
    rng: random.Random = field(default_factory=random.Random)
    event_ttl: int = 3600
    _event_lease: tuple[int, float] = (0, 0.0)

    def __post_init__(self) -> None:
        self.addresses = addresses.Addresses(self.replica, self.service_cidr, self.rng)

    # ---- reads ----------------------------------------------------------------------

    async def read(self, key: bytes, *, serializable: bool = False) -> Stored | None:
        result = await self.replica.range({"key": key}, serializable=serializable)
        kvs = result.get("kvs") or []
        return rec.decode(kvs[0]) if kvs else None

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Stored:
        found = await self.read(key_of(kind, namespace, name))
        if found is None:
            raise stt.not_found(kind.resource, name)
        return found

    async def list_objects(self, kind: kinds.Kind, namespace: str | None, *,
                   label: selectors.LabelSelector | None = None,
                   fields: selectors.FieldSelector | None = None,
                   limit: int = 0, continue_token: str = "") -> ListResult:
        prefix = prefix_of(kind, namespace)
        end = st.prefix_end(prefix)
        start, revision = prefix, 0
        if continue_token:
            start, revision = self._decode_continue(continue_token, prefix)
        named = rec.name_key(kind, namespace, fields)
        if named is not None:  # one key to read, not the kind's every object to decode
            start, end = max(start, named), named + b"\0"
        items: list[dict[str, Any]] = []
        while True:
            req = {"key": start, "range_end": end, "revision": revision,
                   # One more than asked, to know whether there is more; still an int64.
                   "limit": min(max(limit - len(items), 0) + 1, inputs.INT64_MAX)
                   if limit else 0}
            try:
                result = await self.replica.range(req)
            except st.Compacted:
                raise stt.gone("The provided continue parameter is too old to display a "
                               "consistent list result. You can start a new list without "
                               "the continue parameter.") from None
            except st.StoreError as e:  # a token naming a revision from the future
                raise stt.bad_request(f"continue: invalid continue token: {e.message}") from None
            revision = revision or result["revision"]
            kvs = result.get("kvs") or []
            for kv in kvs:
                if not rec.could_match(kv["value"], fields):
                    continue
                obj = rec.decode(kv).obj
                if matches(obj, label, fields):
                    items.append(obj)
                    if limit and len(items) == limit:
                        nxt = kv["key"] + b"\0"
                        more = await self._any_left(nxt, end, revision, label, fields)
                        token = self._encode_continue(nxt, revision) if more else ""
                        return ListResult(items, revision, token)
            if not limit or not result.get("more"):
                return ListResult(items, revision)
            start = kvs[-1]["key"] + b"\0"

    async def _any_left(self, start: bytes, end: bytes, revision: int,
                        label: selectors.LabelSelector | None,
                        fields: selectors.FieldSelector | None) -> bool:
        if label is None and fields is None:
            result = await self.replica.range({"key": start, "range_end": end,
                                               "revision": revision, "count_only": True})
            return bool(result.get("count"))
        result = await self.replica.range({"key": start, "range_end": end,
                                           "revision": revision})
        return any(rec.could_match(kv["value"], fields) and
                   matches(rec.decode(kv).obj, label, fields) for kv in result.get("kvs") or [])

    @staticmethod
    def _encode_continue(start: bytes, revision: int) -> str:
        raw = json.dumps({"start": base64.b64encode(start).decode(), "rv": revision})
        return base64.urlsafe_b64encode(raw.encode()).decode()

    @staticmethod
    def _decode_continue(token: str, prefix: bytes) -> tuple[bytes, int]:
        try:
            raw = json.loads(base64.urlsafe_b64decode(token.encode()))
            start = base64.b64decode(raw["start"])
            revision = inputs.int64(str(raw["rv"]))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise stt.bad_request("continue: invalid continue token") from None
        if not start.startswith(prefix) or revision <= 0:
            raise stt.bad_request("continue: the token does not belong to this list")
        return start, revision

    # ---- writes ---------------------------------------------------------------------

    async def commit(self, req: dict[str, Any]) -> st.Result:
        result = await self._propose("txn", req, term=FENCE.get())
        if "error" in result:
            if str(result["error"]).startswith(st.ERR_STALE_TERM):
                raise stt.fenced(result["error"])
            raise stt.ApiError(500, "InternalError", f"store: {result['error']}")
        return result

    async def _propose(self, op: str, req: dict[str, Any], *,
                       term: int | None = None) -> st.Result:
        """Every write of the REST API: one whose result never came is a 504 Timeout,
        whatever the request did before it (a refusal before anything was proposed, or a
        read that timed out, stays the replica's Unavailable: a 503)."""
        try:
            return await self.replica.propose(op, req, term=term)
        except OutcomeUnknown as e:
            raise stt.timeout(f"the store did not confirm the write in time ({e}); it may "
                              "or may not have been applied") from None

    def _prepare_new(self, kind: kinds.Kind, namespace: str, obj: dict[str, Any]
                     ) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise stt.ApiError(422, "Invalid", f"{kind.kind} is invalid: metadata: "
                                               "Invalid value: must be an object")
        if not meta.get("name") and isinstance(meta.get("generateName"), str):
            suffix = "".join(self.rng.choice(GENERATE_ALPHABET) for _ in range(5))
            meta["name"] = meta["generateName"] + suffix
        if kind.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        for system in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp",
                       "deletionGracePeriodSeconds", "generation", "selfLink"):
            meta.pop(system, None)
        meta["uid"] = str(uuid_from(self.rng))
        meta["creationTimestamp"] = rfc3339(self.clock())
        if kind.kind not in NO_SPEC:
            meta["generation"] = 1
        out = defaults.apply_defaults(obj)
        if kind.kind in STATUS_SUBRESOURCE and kind.kind not in ("Node",):
            out.pop("status", None)
        if kind.kind == "Namespace":
            out["status"] = {"phase": "Active"}
        if kind.kind == "Job":
            _job_selector(out)
        return out

    async def create(self, kind: kinds.Kind, namespace: str, obj: dict[str, Any], *,
                     dry_run: bool = False) -> dict[str, Any]:
        prepared = self._prepare_new(kind, namespace, obj)
        name = prepared["metadata"].get("name") or ""
        causes = validation.validate(prepared)
        if causes:
            raise stt.invalid(kind.kind, kind.group, name, causes)
        if kind.kind == "Pod":
            # What a pod reads until its node reports on it, as in Kubernetes.
            prepared["status"] = {"phase": "Pending", "qosClass": qos.qos_class(prepared)}
        key = key_of(kind, namespace, name)
        for _attempt in range(5):
            obj = copy.deepcopy(prepared)  # addresses are chosen afresh on each attempt
            compare = [rec.compare(key, "CREATE", 0)]
            success: list[dict[str, Any]] = []
            if kind.namespaced:
                # Refused if the namespace changed since (it began terminating, say).
                ns = await namespaces.admit(self, kind, name, namespace)
                compare.append(rec.compare(key_of(NAMESPACE_KIND, "", namespace), "MOD",
                                           ns.mod_revision))
            if kind.kind == "Service":
                taken = await self.addresses.allocate(obj, old=None)
                for k in taken:
                    compare.append(rec.compare(k, "CREATE", 0))
                    success.append(rec.put(k, f"{namespace}/{name}".encode()))
            value = rec.encode(obj)
            if len(value) > MAX_OBJECT_BYTES:
                raise stt.too_large(MAX_OBJECT_BYTES)
            if dry_run:
                return obj
            lease = await self._event_lease_id() if kind.kind == "Event" else 0
            success.insert(0, rec.put(key, value, lease))
            result = await self.commit({"compare": compare, "success": success,
                                        "failure": []})
            if result["succeeded"]:
                obj["metadata"]["resourceVersion"] = str(result["revision"])
                return obj
            if await self.read(key) is not None:
                raise stt.already_exists(kind.resource, name)
            # The namespace changed, or an address was taken, since we read: again.
        raise stt.conflict(kind.resource, name)

    async def create_batch(self, kind: kinds.Kind, namespace: str,
                           items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create several objects of one kind and namespace in one store transaction:
        one Raft entry and one revision for all of them (the events a recorder has
        queued; see `BATCH_KINDS`). Every item is checked first and one refused item
        refuses them all, naming it (`items[i]`). The caller's items are not changed.

        Items whose encoded puts would take the transaction past `TXN_BUDGET` go into a
        next transaction, so a list of large events is several entries, never one the
        store refuses as too large (a replica that fails after the first of them is a
        504, not a 503: some were written). A transaction is all-or-nothing: if it
        fails (a name taken, the namespace changed since it was read) it is tried again
        without the items whose names are taken now (a generated name is generated
        afresh instead), up to 5 times as `create` does. Answered: the objects created,
        in the order given; one whose given name was taken is left out."""
        prepared: list[tuple[int, dict[str, Any], bytes, bytes]] = []
        for i, item in enumerate(items):
            try:
                obj, key, value = self._prepare_item(kind, namespace, item, i)
            except stt.ApiError as e:
                raise stt.of_item(i, e) from None
            prepared.append((i, obj, key, value))
        created: dict[int, dict[str, Any]] = {}
        for chunk in _by_budget(prepared, lambda p: _put_size(p[2], p[3])):
            try:
                created.update(await self._create_chunk(kind, namespace, items, chunk))
            except Unavailable as e:
                if not created:
                    raise  # nothing written: a 503, which the client may send elsewhere
                # Some were: not a 503, which would have the client send them again.
                raise stt.timeout(f"items[{chunk[0][0]}] on were not created ({e}); the "
                                  "items before them were") from None
        return [created[i] for i, _, _, _ in prepared if i in created]

    def _prepare_item(self, kind: kinds.Kind, namespace: str, item: dict[str, Any],
                      index: int) -> tuple[dict[str, Any], bytes, bytes]:
        """One item of `create_batch`, checked as its own POST would be, on a copy."""
        obj = self._prepare_new(kind, namespace, copy.deepcopy(item))
        name = obj["metadata"].get("name") or ""
        causes = validation.validate(obj)
        if causes:
            raise stt.invalid(kind.kind, kind.group, name, [
                dataclasses.replace(c, field=f"items[{index}].{c.field}".rstrip("."))
                for c in causes])
        value = rec.encode(obj)
        if len(value) > MAX_OBJECT_BYTES:
            raise stt.too_large(MAX_OBJECT_BYTES)
        return obj, rec.key_of(kind, namespace, name), value

    async def _create_chunk(self, kind: kinds.Kind, namespace: str,
                            items: list[dict[str, Any]],
                            chunk: list[tuple[int, dict[str, Any], bytes, bytes]]
                            ) -> dict[int, dict[str, Any]]:
        """One transaction of `create_batch`: the objects it created, by item index."""
        pending = list(chunk)
        for attempt in range(5):
            pending = await self._without_taken(kind, namespace, items, pending,
                                                read=attempt > 0)
            if not pending:
                return {}
            ns = await namespaces.admit(self, kind, "", namespace)
            lease = await self._event_lease_id() if kind.kind == "Event" else 0
            result = await self.commit({
                "compare": [rec.compare(key, "CREATE", 0) for _, _, key, _ in pending] + [
                    rec.compare(key_of(NAMESPACE_KIND, "", namespace), "MOD",
                                ns.mod_revision)],
                "success": [rec.put(key, value, lease) for _, _, key, value in pending],
                "failure": []})
            if result["succeeded"]:
                for _, obj, _, _ in pending:
                    obj["metadata"]["resourceVersion"] = str(result["revision"])
                return {i: obj for i, obj, _, _ in pending}
        raise stt.conflict(kind.resource, pending[0][1]["metadata"].get("name") or "")

    async def _without_taken(self, kind: kinds.Kind, namespace: str,
                             items: list[dict[str, Any]],
                             pending: list[tuple[int, dict[str, Any], bytes, bytes]], *,
                             read: bool) -> list[tuple[int, dict[str, Any], bytes, bytes]]:
        """`pending` without the items whose key is taken by an earlier item or (if
        `read`: after a failed transaction) in the store: one with a generated name gets
        a new one, one with a given name is left out (its own POST would have been
        AlreadyExists)."""
        out: list[tuple[int, dict[str, Any], bytes, bytes]] = []
        keys: set[bytes] = set()
        for entry in pending:
            i = entry[0]
            generated = not items[i].get("metadata", {}).get("name")
            for _retry in range(5):
                key = entry[2]
                if key not in keys and (not read or await self.read(key) is None):
                    keys.add(key)
                    out.append(entry)
                    break
                if not generated:
                    break
                entry = (i, *self._prepare_item(kind, namespace, items[i], i))
            else:
                raise stt.of_item(i, stt.conflict(kind.resource, entry[1]["metadata"]["name"]))
        return out

    async def update(self, kind: kinds.Kind, namespace: str, name: str,
                     new: dict[str, Any], *, subresource: str = "",
                     dry_run: bool = False) -> dict[str, Any]:
        """PUT: replace the object (or, for `status`, only its status); a
        resourceVersion in `new` is a precondition. Without one the update is
        unconditional, as in Kubernetes (`kubectl replace -f` of a manifest): a write by
        another in between is read again, not a Conflict."""
        wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
        expected = None
        if wanted_rv not in (None, ""):
            try:
                expected = inputs.int64(str(wanted_rv))
            except ValueError as e:
                raise stt.bad_request(f"metadata.resourceVersion: Invalid value: {e}"
                                      ) from None
        uid = (new.get("metadata") or {}).get("uid")
        for _attempt in range(10):
            current = await self.get(kind, namespace, name)
            if expected is not None and expected != current.mod_revision:
                raise stt.conflict(kind.resource, name)
            if uid and uid != current.obj["metadata"].get("uid"):
                # Another object of that name (deleted and made again): as Kubernetes'
                # UID precondition, never written over.
                raise stt.ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                                   f'{kind.resource} "{name}": the UID in the object '
                                   f'({uid}) does not match the stored one '
                                   f'({current.obj["metadata"].get("uid")})')
            try:
                return await self._update(kind, namespace, name, current, new,
                                          subresource=subresource, dry_run=dry_run)
            except stt.ApiError as e:
                if expected is not None or e.reason != "Conflict" or stt.is_fenced(e):
                    raise
        raise stt.conflict(kind.resource, name)

    async def _update(self, kind: kinds.Kind, namespace: str, name: str, current: Stored,
                      new: dict[str, Any], *, subresource: str,
                      dry_run: bool) -> dict[str, Any]:
        """Write `new` over `current`, as read: the txn refuses it (Conflict) if the
        object has changed since."""
        merged = self._merge_for_update(kind, current.obj, new, subresource)
        causes = validation.validate(merged, old=rec.without_rv(current.obj))
        if causes:
            raise stt.invalid(kind.kind, kind.group, name, causes)
        if rec.same(merged, current.obj):
            return current.obj  # nothing changes: no write, no new resourceVersion
        if deletion.goes_on_update(kind, merged):
            # The last finalizer is gone: the object goes (its dependents are the garbage
            # collector's). A pod in its grace period stays until its node deletes it.
            if not dry_run:
                await deletion.remove(self, kind, current)
            return merged
        key = key_of(kind, namespace, name)
        compare = [rec.compare(key, "MOD", current.mod_revision)]
        success: list[dict[str, Any]] = []
        if kind.kind == "Service":  # first: it fills in the addresses the object holds
            added = await self.addresses.allocate(merged, old=current.obj)
            for k in added:
                compare.append(rec.compare(k, "CREATE", 0))
                success.append(rec.put(k, f"{namespace}/{name}".encode()))
            freed = set(addresses.allocation_keys(current.obj)) - set(
                addresses.allocation_keys(merged))
            success += [rec.delete(k) for k in freed]
        value = rec.encode(merged)
        if len(value) > MAX_OBJECT_BYTES:
            raise stt.too_large(MAX_OBJECT_BYTES)
        success.insert(0, rec.put(key, value, current.lease))  # an Event keeps its expiry
        if dry_run:
            # What the write would make, as Kubernetes answers it: the version it would
            # replace (`kubectl diff` shows no resourceVersion change).
            merged["metadata"]["resourceVersion"] = str(current.mod_revision)
            return merged
        result = await self.commit({"compare": compare, "success": success, "failure": []})
        if not result["succeeded"]:
            raise stt.conflict(kind.resource, name)
        merged["metadata"]["resourceVersion"] = str(result["revision"])
        return merged

    def _merge_for_update(self, kind: kinds.Kind, current: dict[str, Any],
                          new: dict[str, Any], subresource: str) -> dict[str, Any]:
        if subresource == "status":
            merged = dict(rec.without_rv(current))
            if "status" in new:
                merged["status"] = new["status"]
            return merged
        if subresource == "finalize":
            return namespaces.finalize(current, new)
        merged = defaults.apply_defaults(new)
        meta = dict(merged.get("metadata") or {})
        old_meta = current["metadata"]
        for system in ("uid", "creationTimestamp", "deletionTimestamp",
                       "deletionGracePeriodSeconds", "generation"):
            if system in old_meta:
                meta[system] = old_meta[system]
            else:
                meta.pop(system, None)
        if kind.namespaced:
            meta.setdefault("namespace", old_meta.get("namespace"))
        meta.pop("resourceVersion", None)
        merged["metadata"] = meta
        if kind.kind == "Service":
            addresses.keep_on_update(merged, current)
        if kind.kind == "Namespace":
            namespaces.keep_spec_finalizers(merged, current)
        if kind.kind in STATUS_SUBRESOURCE and "status" in current:
            merged["status"] = current["status"]
        elif kind.kind in STATUS_SUBRESOURCE:
            merged.pop("status", None)
        if spec_of(merged) != spec_of(current) and kind.kind not in NO_SPEC:
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return merged

    async def patch(self, kind: kinds.Kind, namespace: str, name: str, patch: Any, *,
                    patch_type: str = "merge", subresource: str = "",
                    dry_run: bool = False,
                    check: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                    ) -> dict[str, Any]:
        """PATCH, of one of `patches.TYPES`; retried on a conflict with another writer
        (the patch is applied to what is stored), never past a resourceVersion the patch
        itself names (a precondition). `check` sees the patched object before it is
        written, and gives the object to write (field validation of a JSON patch, whose
        fields are known only once it has applied)."""
        patches.check(patch, patch_type)
        for _attempt in range(10):
            current = await self.get(kind, namespace, name)
            # The stored object with its resourceVersion, as Kubernetes patches it: a JSON
            # patch's `test` of /metadata/resourceVersion (optimistic locking) sees it,
            # and the precondition below compares what the patch left there.
            patched = patches.apply(current.obj, patch, patch_type, kind.kind)
            if not isinstance(patched, dict):
                raise stt.bad_request("the patch must leave an object")
            if check is not None:
                patched = check(patched)
            wanted_rv = patches.resource_version(patched)
            if wanted_rv not in (None, "") and str(wanted_rv) != str(current.mod_revision):
                raise stt.conflict(kind.resource, name)  # a precondition: no retry
            patched.setdefault("metadata", {})
            if not isinstance(patched["metadata"], dict):
                raise stt.invalid(kind.kind, kind.group, name, [validation.Cause(
                    "metadata", "FieldValueTypeInvalid", "Invalid value: must be an object")])
            patched["metadata"]["name"] = name
            patched["metadata"].pop("resourceVersion", None)
            try:
                return await self._update(kind, namespace, name, current, patched,
                                          subresource=subresource, dry_run=dry_run)
            except stt.ApiError as e:
                if e.reason != "Conflict" or stt.is_fenced(e):
                    raise
        raise stt.conflict(kind.resource, name)

    # ---- the scale subresource ----------------------------------------------------------

    async def get_scale(self, kind: kinds.Kind, namespace: str, name: str) -> dict[str, Any]:
        return scale.of((await self.get(kind, namespace, name)).obj)

    async def update_scale(self, kind: kinds.Kind, namespace: str, name: str, body: Any, *,
                           dry_run: bool = False) -> dict[str, Any]:
        """PUT of a Scale: its replicas into the object's spec; its resourceVersion, if
        any, a precondition. Without one the write is unconditional, as in Kubernetes: a
        controller's status write in between is read again, not an error."""
        replicas = scale.replicas_of(name, body)
        wanted_rv = patches.resource_version(body)
        return await self._write_scale(kind, namespace, name, lambda _obj: (replicas, wanted_rv),
                                       dry_run=dry_run, retry_conditional=False)

    async def patch_scale(self, kind: kinds.Kind, namespace: str, name: str, patch: Any, *,
                          patch_type: str, dry_run: bool = False) -> dict[str, Any]:
        """PATCH of a Scale: the patch applies to the Scale, whose replicas are written."""
        patches.check(patch, patch_type)

        def wanted(obj: dict[str, Any]) -> tuple[int, Any]:
            patched = patches.apply(scale.of(obj), patch, patch_type, "Scale")
            return scale.replicas_of(name, patched), patches.resource_version(patched)

        return await self._write_scale(kind, namespace, name, wanted, dry_run=dry_run,
                                       retry_conditional=True)

    async def _write_scale(self, kind: kinds.Kind, namespace: str, name: str,
                           wanted: Callable[[dict[str, Any]], tuple[int, Any]], *,
                           dry_run: bool, retry_conditional: bool) -> dict[str, Any]:
        """Read the object, take (replicas, resourceVersion precondition or None) from
        `wanted(object)`, write the replicas; a conflict is read again (with a
        precondition, only if `retry_conditional`), a fenced write never."""
        for _attempt in range(10):
            current = await self.get(kind, namespace, name)
            replicas, wanted_rv = wanted(current.obj)
            conditional = wanted_rv not in (None, "")
            if conditional and str(wanted_rv) != str(current.mod_revision):
                raise stt.conflict(kind.resource, name)
            new = scale.scaled(rec.without_rv(current.obj), replicas)
            try:
                return scale.of(await self._update(kind, namespace, name, current, new,
                                                   subresource="", dry_run=dry_run))
            except stt.ApiError as e:
                if e.reason != "Conflict" or stt.is_fenced(e) or (
                        conditional and not retry_conditional):
                    raise
        raise stt.conflict(kind.resource, name)

    async def bind(self, namespace: str, name: str, binding: dict[str, Any], *,
                   dry_run: bool = False) -> dict[str, Any]:
        """A pod's `binding` subresource: assign it to a node, once. Refused (409) if it is
        bound already, is being deleted, or is not the pod `metadata.uid` names."""
        node = _binding_target(name, binding)
        wanted_uid = (binding.get("metadata") or {}).get("uid") \
            if isinstance(binding.get("metadata"), dict) else None
        key = key_of(POD_KIND, namespace, name)
        for attempt in range(10):
            # The first read is this replica's own (no read barrier: a Raft round saved
            # on the scheduler's hot path); the write below compares the revision read,
            # so a stale read can only fail it. Anything that would be refused on what a
            # stale read says is read again through the barrier first. What a stale read
            # cannot get wrong needs no second read: a pod bound, or being deleted, stays
            # so.
            found = await self.read(key, serializable=attempt == 0)
            if found is None or (wanted_uid and wanted_uid != found.obj["metadata"].get(
                    "uid")):
                if attempt == 0:
                    continue
                if found is None:
                    raise stt.not_found("pods", name)
                raise stt.conflict("pods", name)
            current = found
            meta, spec = current.obj["metadata"], current.obj.get("spec") or {}
            if spec.get("nodeName"):
                raise stt.ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                                   f'pods/binding "{name}": pod {name} is already assigned '
                                   f'to node "{spec["nodeName"]}"')
            if meta.get("deletionTimestamp"):
                raise stt.ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                                   f'pods/binding "{name}": pod {name} is being deleted, '
                                   "cannot be assigned to a host")
            bound = self._bound(current, node)
            if dry_run:
                return _bound_status()
            result = await self.commit({
                "compare": [rec.compare(key, "MOD", current.mod_revision)],
                "success": [rec.put(key, rec.encode(bound), current.lease)], "failure": []})
            if result["succeeded"]:
                return _bound_status()
            # Its status changed since we read it (its node, a controller): read again.
        raise stt.conflict("pods", name)

    async def bind_batch(self, namespace: str, bindings: list[dict[str, Any]]
                         ) -> list[dict[str, Any] | stt.ApiError]:
        """Several pods' bindings in one store transaction: what a scheduler decided
        while its previous bindings were being written. Each pod is read here (locally,
        as `bind`'s first read) and compared on its revision, so the transaction holds
        only if none of them changed since; every binding that cannot go in it (a pod
        bound, changed or missing on the local read, a name given twice, one past the
        txn's `TXN_BUDGET` of encoded bytes) and, if the transaction fails, every one of
        them, goes through `bind` on its own, with its reads through Raft and its own
        answer. Answered: per binding, in order, the Status `bind` answers or the error
        it raises (a replica's Unavailable too: a 503 for that binding alone)."""
        answers: list[dict[str, Any] | stt.ApiError | None] = [None] * len(bindings)
        planned: list[tuple[int, bytes, rec.Stored, bytes]] = []
        keys: set[bytes] = set()
        used = 0
        for i, binding in enumerate(bindings):
            meta: dict[str, Any] = binding["metadata"] \
                if isinstance(binding.get("metadata"), dict) else {}
            name = meta.get("name")
            if not isinstance(name, str) or not name:
                answers[i] = stt.bad_request("metadata.name: Required value: the pod to bind")
                continue
            try:
                node = _binding_target(name, binding)
            except stt.ApiError as e:
                answers[i] = e
                continue
            key = key_of(POD_KIND, namespace, name)
            found = await self.read(key, serializable=True)
            if found is None or key in keys or (found.obj.get("spec") or {}).get("nodeName") \
                    or found.obj["metadata"].get("deletionTimestamp") or \
                    meta.get("uid") not in (None, "", found.obj["metadata"].get("uid")):
                continue  # `bind` says what is wrong, after a read through Raft
            bound = rec.encode(self._bound(found, node))
            if used + _put_size(key, bound) > TXN_BUDGET:
                continue  # the txn is full: `bind` writes this one on its own
            used += _put_size(key, bound)
            keys.add(key)
            planned.append((i, key, found, bound))
        if planned:
            result = await self.commit({
                "compare": [rec.compare(key, "MOD", cur.mod_revision)
                            for _, key, cur, _ in planned],
                "success": [rec.put(key, bound, cur.lease)
                            for _, key, cur, bound in planned], "failure": []})
            if result["succeeded"]:
                for i, _, _, _ in planned:
                    answers[i] = _bound_status()
        out: list[dict[str, Any] | stt.ApiError] = []
        for i, answer in enumerate(answers):
            if answer is None:
                name = bindings[i]["metadata"]["name"]
                try:
                    answer = await self.bind(namespace, name, bindings[i])
                except stt.ApiError as e:
                    answer = e
                except Unavailable as e:
                    # This binding's own answer: the txn above may have been written, so
                    # the request as a whole is not one that did nothing (a 503).
                    answer = stt.unavailable(f"binding pod {name}: {e}")
            out.append(answer)
        return out

    def _bound(self, current: rec.Stored, node: str) -> dict[str, Any]:
        """A pod as its binding to `node` leaves it: spec.nodeName set, PodScheduled."""
        bound = rec.without_rv(current.obj)
        bound["spec"] = {**(current.obj.get("spec") or {}), "nodeName": node}
        status = bound["status"] = dict(bound.get("status") or {})
        conditions.put(status, {"type": "PodScheduled", "status": "True"}, self.clock())
        for c in status["conditions"]:
            if c.get("type") == "PodScheduled":
                c.pop("reason", None)
                c.pop("message", None)
        return bound

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *,
                     propagation: str = "Background", grace: int | None = None,
                     dry_run: bool = False,
                     preconditions: dict[str, str] | None = None) -> deletion.Outcome:
        """DELETE, as Kubernetes' API server does it (see `deletion` and `namespaces`):
        `preconditions` (uid, resourceVersion) must hold for the object read. A write by
        another in between (a controller's status) is read again, as Kubernetes retries
        a delete whose compare failed: only a precondition makes a delete a Conflict."""
        for _attempt in range(10):
            current = await self.get(kind, namespace, name)
            deletion.check_preconditions(kind, name, current, preconditions or {})
            try:
                if kind.kind == "Namespace":
                    return await namespaces.delete(self, current, propagation=propagation,
                                                   dry_run=dry_run)
                return await deletion.delete(self, kind, current, propagation=propagation,
                                             grace=grace, dry_run=dry_run)
            except stt.ApiError as e:
                if e.reason != "Conflict" or stt.is_fenced(e):
                    raise
        raise stt.conflict(kind.resource, name)

    # ---- events and namespaces ------------------------------------------------------------

    async def _event_lease_id(self) -> int:
        """Events are written on a shared lease so that they expire after `event_ttl`
        (1 h by default) without a write each. A new lease is taken every event_ttl/60
        (a minute for an hour), so an event lives between event_ttl and 61/60 of it."""
        lease_id, until = self._event_lease
        now = time.monotonic()
        if lease_id and now < until:
            return lease_id
        window = self.event_ttl / 60
        lease_id = self.rng.randrange(1, 2**62)
        result = await self._propose("lease_grant", {
            "ID": lease_id, "TTL": max(2, int(self.event_ttl + window + 0.999))})
        if "error" in result:
            raise stt.ApiError(500, "InternalError", f"store: {result['error']}")
        self._event_lease = (lease_id, now + window)
        return lease_id

    async def ensure_namespaces(self) -> None:
        for name in namespaces.SYSTEM:
            try:
                await self.create(NAMESPACE_KIND, "", {
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            except stt.ApiError as e:
                if e.reason != "AlreadyExists":
                    raise


def _job_selector(job: dict[str, Any]) -> None:
    """Jobs select their pods by a label the server sets, as Kubernetes does."""
    spec = job.setdefault("spec", {})
    if not isinstance(spec, dict) or spec.get("manualSelector") or spec.get("selector"):
        return
    uid = job["metadata"]["uid"]
    spec["selector"] = {"matchLabels": {"controller-uid": uid}}
    template = spec.setdefault("template", {})
    if isinstance(template, dict):
        tmeta = template.setdefault("metadata", {})
        if isinstance(tmeta, dict):
            labels = tmeta.setdefault("labels", {})
            if isinstance(labels, dict):
                labels.setdefault("controller-uid", uid)
                labels.setdefault("job-name", job["metadata"]["name"])


def _binding_target(name: str, binding: dict[str, Any]) -> str:
    """The node a binding names; a 400 naming the field otherwise. The name becomes the
    pod's spec.nodeName, which must be a Node's name: a DNS-1123 subdomain."""
    target = binding.get("target")
    node = target.get("name") if isinstance(target, dict) else None
    errs = causes.Causes()
    if node is None or node == "":
        errs.required("target.name")
    elif not isinstance(node, str):
        errs.invalid("target.name", node, "must be a string")
    else:
        errs.invalid_each("target.name", node, names.dns1123_subdomain_errors(node))
    if isinstance(target, dict) and target.get("kind") not in (None, "", "Node"):
        errs.not_supported("target.kind", target.get("kind"), ["Node"])
    if errs:
        raise stt.bad_binding(name, errs.items)
    assert isinstance(node, str)
    return node


def _bound_status() -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}


def uuid_from(rng: random.Random) -> str:
    """A version-4 UUID from the injected randomness (tests can seed it)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _put_size(key: bytes, value: bytes) -> int:
    """What a put of `value` at `key` and its compare add to a txn command, encoded."""
    return len(st.encode_command({"c": rec.compare(key, "MOD", 2**62),
                                  "p": rec.put(key, value, 2**62)}))


def _by_budget(entries: list[T], size: Callable[[T], int]) -> list[list[T]]:
    """`entries`, in order, in runs whose sizes add up to at most `TXN_BUDGET` (an entry
    larger than that on its own is a run of its own: the store says it is too large)."""
    runs: list[list[T]] = []
    used = TXN_BUDGET
    for entry in entries:
        n = size(entry)
        if used + n > TXN_BUDGET:
            runs.append([])
            used = 0
        runs[-1].append(entry)
        used += n
    return runs
