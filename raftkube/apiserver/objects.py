"""Kubernetes objects in the replicated store: keys, reads, and all-or-nothing writes.

Every object lives at one key, `/registry/{group|core}/{plural}/[{namespace}/]{name}`,
as JSON without its resourceVersion, which is the key's mod_revision. Every write is one
store transaction whose compares carry all of its preconditions: the object does (not)
exist or still has the revision the caller read, its namespace exists, the NodePorts and
ClusterIP it takes are free. A write that fails a compare changes nothing; the caller
re-reads and answers Conflict, AlreadyExists or NotFound. There is no read-modify-write
window in which a concurrent writer could be overwritten.

Service address allocations are keys too (see `addresses`), created and deleted in the
same transaction as the Service that holds them, so two Services never hold one port.
"""

from __future__ import annotations

import base64
import contextvars
import copy
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import conditions, defaults, kinds, merge, qos, selectors, validation
from raftkube.apiserver import addresses, inputs
from raftkube.apiserver import status as stt
from raftkube.store import state as st
from raftkube.store.replica import Replica

PREFIX = b"/registry/"
MAX_OBJECT_BYTES = 1_500_000
SYSTEM_NAMESPACES = ("default", "kube-system", "raftkube-system")
# The Raft term the current request's writes are stamped with (`X-Raftkube-Term`), set by
# the REST layer for the request: every write below goes through `commit`, which carries
# it into the store, where a write of a replaced leader is refused.
FENCE: contextvars.ContextVar[int | None] = contextvars.ContextVar("fence", default=None)
# Kinds whose status is written through the status subresource only.
STATUS_SUBRESOURCE = {"Pod", "Service", "Deployment", "ReplicaSet", "DaemonSet", "Job", "Node",
                      "Namespace"}
# Kinds without a spec, whose objects Kubernetes gives no metadata.generation.
NO_SPEC = {"ConfigMap", "Secret", "Event"}
GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"  # Kubernetes' name: dependents are orphaned when the object finally goes


def key_of(kind: kinds.Kind, namespace: str, name: str) -> bytes:
    return prefix_of(kind, namespace) + name.encode()


def prefix_of(kind: kinds.Kind, namespace: str | None) -> bytes:
    """The key prefix of a kind, in one namespace or (None) in all of them."""
    base = PREFIX + f"{kind.group or 'core'}/{kind.plural}/".encode()
    if kind.namespaced and namespace:
        return base + f"{namespace}/".encode()
    return base


def known_kind(api_version: str, kind: str) -> kinds.Kind:
    found = kinds.by_kind(api_version, kind)
    assert found is not None, kind
    return found


NAMESPACE_KIND = known_kind("v1", "Namespace")
POD_KIND = known_kind("v1", "Pod")
SERVICE_KIND = known_kind("v1", "Service")


@dataclass
class Stored:
    obj: dict[str, Any]
    mod_revision: int
    create_revision: int
    lease: int = 0


def decode(kv: dict[str, Any]) -> Stored:
    obj = json.loads(kv["value"])
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv["mod_revision"])
    return Stored(obj, kv["mod_revision"], kv["create_revision"], int(kv.get("lease") or 0))


def encode(obj: dict[str, Any]) -> bytes:
    body = dict(obj)
    meta = dict(body.get("metadata") or {})
    meta.pop("resourceVersion", None)
    body["metadata"] = meta
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def matches(obj: dict[str, Any], label: selectors.LabelSelector | None,
            fields: selectors.FieldSelector | None) -> bool:
    """Whether an object is selected by a list's or a watch's selectors."""
    if label is not None and not label.matches((obj.get("metadata") or {}).get("labels")):
        return False
    return fields is None or fields.matches(obj)


def _cmp(key: bytes, target: str, value: int) -> dict[str, Any]:
    field_name = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version"}
    return {"key": key, "range_end": b"", "target": target, "result": "EQUAL",
            field_name[target]: value}


def _exists(key: bytes) -> dict[str, Any]:
    return {"key": key, "range_end": b"", "target": "VERSION", "result": "GREATER",
            "version": 0}


def _put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    return {"request_put": {"key": key, "value": value, "lease": lease}}


def _delete(key: bytes, end: bytes = b"") -> dict[str, Any]:
    return {"request_delete_range": {"key": key, "range_end": end}}


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

    async def read(self, key: bytes) -> Stored | None:
        result = await self.replica.range({"key": key})
        kvs = result.get("kvs") or []
        return decode(kvs[0]) if kvs else None

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
                obj = decode(kv).obj
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
        return any(matches(decode(kv).obj, label, fields) for kv in result.get("kvs") or [])

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
        result = await self.replica.propose("txn", req, term=FENCE.get())
        if "error" in result:
            if str(result["error"]).startswith(st.ERR_STALE_TERM):
                raise stt.fenced(result["error"])
            raise stt.ApiError(500, "InternalError", f"store: {result['error']}")
        return result

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
            compare = [_cmp(key, "CREATE", 0)]
            success: list[dict[str, Any]] = []
            if kind.namespaced:
                compare.append(_exists(key_of(NAMESPACE_KIND, "", namespace)))
            if kind.kind == "Service":
                taken = await self.addresses.allocate(obj, old=None)
                for k in taken:
                    compare.append(_cmp(k, "CREATE", 0))
                    success.append(_put(k, f"{namespace}/{name}".encode()))
            value = encode(obj)
            if len(value) > MAX_OBJECT_BYTES:
                raise stt.too_large(MAX_OBJECT_BYTES)
            if dry_run:
                # What the real request's compare would refuse, refused here too.
                if kind.namespaced and await self.read(
                        key_of(NAMESPACE_KIND, "", namespace)) is None:
                    raise stt.not_found("namespaces", namespace)
                return obj
            lease = await self._event_lease_id() if kind.kind == "Event" else 0
            success.insert(0, _put(key, value, lease))
            result = await self.commit({"compare": compare, "success": success,
                                        "failure": []})
            if result["succeeded"]:
                obj["metadata"]["resourceVersion"] = str(result["revision"])
                return obj
            if await self.read(key) is not None:
                raise stt.already_exists(kind.resource, name)
            if kind.namespaced and await self.read(key_of(NAMESPACE_KIND, "", namespace)) is None:
                raise stt.not_found("namespaces", namespace)
            # An address was taken between our read and our write: choose again.
        raise stt.conflict(kind.resource, name)

    async def update(self, kind: kinds.Kind, namespace: str, name: str,
                     new: dict[str, Any], *, subresource: str = "",
                     dry_run: bool = False) -> dict[str, Any]:
        """PUT: replace the object (or, for `status`, only its status); a
        resourceVersion in `new` is a precondition."""
        current = await self.get(kind, namespace, name)
        wanted_rv = (new.get("metadata") or {}).get("resourceVersion")
        if wanted_rv not in (None, ""):
            try:
                expected = inputs.int64(str(wanted_rv))
            except ValueError as e:
                raise stt.bad_request(f"metadata.resourceVersion: Invalid value: {e}"
                                      ) from None
            if expected != current.mod_revision:
                raise stt.conflict(kind.resource, name)
        return await self._update(kind, namespace, name, current, new,
                                  subresource=subresource, dry_run=dry_run)

    async def _update(self, kind: kinds.Kind, namespace: str, name: str, current: Stored,
                      new: dict[str, Any], *, subresource: str,
                      dry_run: bool) -> dict[str, Any]:
        """Write `new` over `current`, as read: the txn refuses it (Conflict) if the
        object has changed since."""
        merged = self._merge_for_update(kind, current.obj, new, subresource)
        causes = validation.validate(merged, old=_without_rv(current.obj))
        if causes:
            raise stt.invalid(kind.kind, kind.group, name, causes)
        if _same(merged, current.obj):
            return current.obj  # nothing changes: no write, no new resourceVersion
        meta = merged["metadata"]
        finalizers = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and not [f for f in finalizers if f != ORPHAN] \
                and not meta.get("deletionGracePeriodSeconds"):
            # The last finalizer is gone: the object goes, and its dependents with it
            # (or, deleted with propagationPolicy=Orphan, they are orphaned). A pod in its
            # grace period stays until its node deletes it with grace 0.
            if dry_run:
                return merged
            await self._finish_delete(kind, namespace, name, current,
                                      orphan=ORPHAN in finalizers)
            return merged
        key = key_of(kind, namespace, name)
        compare = [_cmp(key, "MOD", current.mod_revision)]
        success: list[dict[str, Any]] = []
        if kind.kind == "Service":  # first: it fills in the addresses the object holds
            added = await self.addresses.allocate(merged, old=current.obj)
            for k in added:
                compare.append(_cmp(k, "CREATE", 0))
                success.append(_put(k, f"{namespace}/{name}".encode()))
            freed = set(addresses.allocation_keys(current.obj)) - set(
                addresses.allocation_keys(merged))
            success += [_delete(k) for k in freed]
        value = encode(merged)
        if len(value) > MAX_OBJECT_BYTES:
            raise stt.too_large(MAX_OBJECT_BYTES)
        success.insert(0, _put(key, value, current.lease))  # an Event keeps its expiry
        if dry_run:
            return merged
        result = await self.commit({"compare": compare, "success": success, "failure": []})
        if not result["succeeded"]:
            raise stt.conflict(kind.resource, name)
        merged["metadata"]["resourceVersion"] = str(result["revision"])
        return merged

    def _merge_for_update(self, kind: kinds.Kind, current: dict[str, Any],
                          new: dict[str, Any], subresource: str) -> dict[str, Any]:
        if subresource == "status":
            merged = dict(_without_rv(current))
            if "status" in new:
                merged["status"] = new["status"]
            return merged
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
        if kind.kind in STATUS_SUBRESOURCE and "status" in current:
            merged["status"] = current["status"]
        elif kind.kind in STATUS_SUBRESOURCE:
            merged.pop("status", None)
        if spec_of(merged) != spec_of(current) and kind.kind not in NO_SPEC:
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        return merged

    async def patch(self, kind: kinds.Kind, namespace: str, name: str, patch: Any, *,
                    subresource: str = "", dry_run: bool = False) -> dict[str, Any]:
        if not isinstance(patch, dict):
            raise stt.bad_request("the patch must be a JSON object (a merge patch)")
        wanted_rv = (patch.get("metadata") or {}).get("resourceVersion") \
            if isinstance(patch.get("metadata"), dict) else None
        for _attempt in range(10):
            current = await self.get(kind, namespace, name)
            if wanted_rv not in (None, "") and str(wanted_rv) != str(current.mod_revision):
                raise stt.conflict(kind.resource, name)  # a precondition: no retry
            base = _without_rv(current.obj)
            patched = merge.merge_patch(base, patch)
            if not isinstance(patched, dict):
                raise stt.bad_request("the patch must leave an object")
            patched.setdefault("metadata", {})
            if not isinstance(patched["metadata"], dict):
                raise stt.invalid(kind.kind, kind.group, name, [validation.Cause(
                    "metadata", "FieldValueTypeInvalid", "Invalid value: must be an object")])
            patched["metadata"]["name"] = name
            try:
                return await self._update(kind, namespace, name, current, patched,
                                          subresource=subresource, dry_run=dry_run)
            except stt.ApiError as e:
                if e.reason != "Conflict" or stt.is_fenced(e):
                    raise
        raise stt.conflict(kind.resource, name)

    async def bind(self, namespace: str, name: str, binding: dict[str, Any], *,
                   dry_run: bool = False) -> dict[str, Any]:
        """A pod's `binding` subresource: assign it to a node, once. Refused (409) if it is
        bound already, is being deleted, or is not the pod `metadata.uid` names."""
        target = binding.get("target")
        node = target.get("name") if isinstance(target, dict) else None
        if not isinstance(node, str) or not node:
            raise stt.invalid("Binding", "", name, [validation.Cause(
                "target.name", "FieldValueRequired", "Required value")])
        if isinstance(target, dict) and target.get("kind") not in (None, "", "Node"):
            raise stt.invalid("Binding", "", name, [validation.Cause(
                "target.kind", "FieldValueNotSupported",
                f'Unsupported value: "{target.get("kind")}": supported values: "Node"')])
        wanted_uid = (binding.get("metadata") or {}).get("uid") \
            if isinstance(binding.get("metadata"), dict) else None
        for _attempt in range(10):
            current = await self.get(POD_KIND, namespace, name)
            meta, spec = current.obj["metadata"], current.obj.get("spec") or {}
            if wanted_uid and wanted_uid != meta.get("uid"):
                raise stt.conflict("pods", name)
            if spec.get("nodeName"):
                raise stt.ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                                   f'pods/binding "{name}": pod {name} is already assigned '
                                   f'to node "{spec["nodeName"]}"')
            if meta.get("deletionTimestamp"):
                raise stt.ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                                   f'pods/binding "{name}": pod {name} is being deleted, '
                                   "cannot be assigned to a host")
            bound = _without_rv(current.obj)
            bound["spec"] = {**spec, "nodeName": node}
            status = bound["status"] = dict(bound.get("status") or {})
            conditions.put(status, {"type": "PodScheduled", "status": "True"}, self.clock())
            for c in status["conditions"]:
                if c.get("type") == "PodScheduled":
                    c.pop("reason", None)
                    c.pop("message", None)
            if dry_run:
                return _bound_status()
            key = key_of(POD_KIND, namespace, name)
            result = await self.commit({
                "compare": [_cmp(key, "MOD", current.mod_revision)],
                "success": [_put(key, encode(bound), current.lease)], "failure": []})
            if result["succeeded"]:
                return _bound_status()
            # Its status changed since we read it (its node, a controller): read again.
        raise stt.conflict("pods", name)

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *,
                     propagation: str = "Background", grace: int | None = None,
                     dry_run: bool = False,
                     preconditions: dict[str, str] | None = None) -> dict[str, Any]:
        """Delete as Kubernetes does; `preconditions` (uid, resourceVersion) must hold for
        the object read, and every write below compares that read's revision."""
        current = await self.get(kind, namespace, name)
        obj = current.obj
        meta = obj["metadata"]
        wanted = preconditions or {}
        if wanted.get("uid") and wanted["uid"] != meta.get("uid"):
            raise stt.ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                               f'{kind.resource} "{name}": Precondition failed: UID in '
                               f'precondition: {wanted["uid"]}, UID in object meta: '
                               f'{meta.get("uid")}')
        if wanted.get("resourceVersion") and \
                wanted["resourceVersion"] != str(current.mod_revision):
            raise stt.ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                               f'{kind.resource} "{name}": Precondition failed: '
                               f'ResourceVersion in precondition: '
                               f'{wanted["resourceVersion"]}, ResourceVersion in object '
                               f'meta: {current.mod_revision}')
        if kind.kind == "Namespace" and name in SYSTEM_NAMESPACES:
            raise stt.ApiError(403, "Forbidden",
                               f'namespaces "{name}" is forbidden: this namespace may not be '
                               "deleted")
        if dry_run:
            return obj
        spec = obj.get("spec") or {}
        if grace is None and kind.kind == "Pod":
            grace = int(spec.get("terminationGracePeriodSeconds", 30))
        # A pod on a node is given its grace period: it is marked, its node stops it and
        # then deletes it with grace 0. A pod on no node has nothing to stop.
        graceful = kind.kind == "Pod" and bool(spec.get("nodeName")) and bool(grace)
        dependents = await self._dependents(meta.get("uid", ""), namespace) \
            if propagation == "Foreground" else []
        foreground = bool(dependents)
        if foreground and FOREGROUND in (meta.get("finalizers") or []):
            # Already being deleted in the foreground (or met again through a cycle of
            # owners): its dependents are on their way; it goes once they are gone.
            await self._release_owner(kind, namespace, name)
            return obj
        if meta.get("finalizers") or graceful or foreground:
            on_node = kind.kind == "Pod" and bool(spec.get("nodeName"))
            marked = await self._mark_deleted(kind, namespace, name, current,
                                              grace=grace if on_node else None,
                                              foreground=foreground,
                                              orphan=propagation == "Orphan")
            if foreground:
                await self._delete_dependents(meta.get("uid", ""), namespace,
                                              propagation="Foreground", found=dependents)
                await self._release_owner(kind, namespace, name)
                found = await self.read(key_of(kind, namespace, name))
                return found.obj if found is not None else marked
            return marked
        await self._finish_delete(kind, namespace, name, current,
                                  orphan=propagation == "Orphan")
        return obj

    async def _finish_delete(self, kind: kinds.Kind, namespace: str, name: str,
                             current: Stored, *, orphan: bool) -> None:
        """The object goes (a namespace with everything in it); then its dependents go
        too, or, deleted with propagationPolicy=Orphan, lose their reference to it."""
        if kind.kind == "Namespace":
            await self._delete_namespace(name, current)
        else:
            await self._remove(kind, namespace, name, current)
        uid = current.obj["metadata"].get("uid", "")
        if orphan:
            await self._orphan_dependents(uid, namespace)
        else:
            await self._delete_dependents(uid, namespace)

    async def _mark_deleted(self, kind: kinds.Kind, namespace: str, name: str,
                            current: Stored, *, grace: int | None, foreground: bool,
                            orphan: bool) -> dict[str, Any]:
        """Set deletionTimestamp (now + the grace period, as Kubernetes does); a second
        delete may shorten the grace period but never lengthen it."""
        meta = current.obj["metadata"]
        patch: dict[str, Any] = {}
        old_grace = meta.get("deletionGracePeriodSeconds")
        if not meta.get("deletionTimestamp"):
            patch["deletionTimestamp"] = rfc3339(self.clock() + (grace or 0))
            if grace:
                patch["deletionGracePeriodSeconds"] = grace
        elif grace is not None and old_grace is not None and grace < int(old_grace):
            patch["deletionTimestamp"] = rfc3339(self.clock() + grace)
            patch["deletionGracePeriodSeconds"] = grace
        finalizers = list(meta.get("finalizers") or [])
        if foreground and FOREGROUND not in finalizers:
            patch["finalizers"] = finalizers = finalizers + [FOREGROUND]
        if orphan and ORPHAN not in finalizers and meta.get("finalizers"):
            patch["finalizers"] = finalizers + [ORPHAN]
        if not patch:
            return current.obj
        marked: dict[str, Any] = merge.merge_patch(_without_rv(current.obj),
                                                   {"metadata": patch})
        key = key_of(kind, namespace, name)
        result = await self.commit({
            "compare": [_cmp(key, "MOD", current.mod_revision)],
            "success": [_put(key, encode(marked), current.lease)], "failure": []})
        if not result["succeeded"]:
            raise stt.conflict(kind.resource, name)
        marked["metadata"]["resourceVersion"] = str(result["revision"])
        return marked

    async def _release_owner(self, kind: kinds.Kind, namespace: str, name: str) -> None:
        """An owner deleted in the foreground goes once no dependent that blocks its
        deletion (`blockOwnerDeletion: true`, as controllers set it) is left."""
        for _attempt in range(10):
            found = await self.read(key_of(kind, namespace, name))
            if found is None:
                return
            meta = found.obj["metadata"]
            finalizers = meta.get("finalizers") or []
            if FOREGROUND not in finalizers:
                return
            uid = meta.get("uid", "")
            if any(_blocks(d.obj, uid) and not _waits_for(d.obj, found.obj)
                   for _, d in await self._dependents(uid, namespace)):
                return
            try:
                await self.patch(kind, namespace, name, {"metadata": {
                    "finalizers": [f for f in finalizers if f != FOREGROUND] or None,
                    "resourceVersion": str(found.mod_revision)}})
                return
            except stt.ApiError as e:
                if e.reason != "Conflict":
                    return

    async def _remove(self, kind: kinds.Kind, namespace: str, name: str,
                      current: Stored) -> None:
        key = key_of(kind, namespace, name)
        success = [_delete(key)] + [_delete(k) for k in addresses.allocation_keys(current.obj)]
        result = await self.commit({"compare": [_cmp(key, "MOD", current.mod_revision)],
                                    "success": success, "failure": []})
        if not result["succeeded"]:
            raise stt.conflict(kind.resource, name)
        for ref in current.obj["metadata"].get("ownerReferences") or []:
            owner = kinds.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", ""))) \
                if isinstance(ref, dict) else None
            if owner is not None and isinstance(ref.get("name"), str):
                await self._release_owner(owner, namespace if owner.namespaced else "",
                                          ref["name"])

    async def _delete_namespace(self, name: str, current: Stored) -> None:
        """Everything in the namespace goes in one transaction, with the Service addresses
        held in it. The transaction is refused, and tried again, if a Service in the
        namespace changed after the addresses were read."""
        ns_key = key_of(NAMESPACE_KIND, "", name)
        services = prefix_of(SERVICE_KIND, name)
        for _attempt in range(10):
            held: list[dict[str, Any]] = []
            revision = 0
            for prefix in (addresses.NODEPORTS, addresses.CLUSTERIPS):
                result = await self.replica.range({"key": prefix,
                                                   "range_end": st.prefix_end(prefix),
                                                   "revision": revision})
                revision = revision or result["revision"]
                held += [kv for kv in result.get("kvs") or []
                         if kv["value"].startswith(f"{name}/".encode())]
            # Refused if a Service here changed, or an address read as ours changed hands.
            compare = [_cmp(ns_key, "MOD", current.mod_revision),
                       {"key": services, "range_end": st.prefix_end(services),
                        "target": "MOD", "result": "LESS", "mod_revision": revision + 1}]
            compare += [_cmp(kv["key"], "MOD", kv["mod_revision"]) for kv in held]
            success = [_delete(ns_key)] + [_delete(kv["key"]) for kv in held]
            for k in kinds.KINDS:
                if k.namespaced:
                    p = prefix_of(k, name)
                    success.append(_delete(p, st.prefix_end(p)))
            result = await self.commit({"compare": compare, "success": success,
                                        "failure": []})
            if result["succeeded"]:
                return
            latest = await self.read(ns_key)
            if latest is None or latest.mod_revision != current.mod_revision:
                raise stt.conflict("namespaces", name)
        raise stt.conflict("namespaces", name)

    async def _dependents(self, uid: str, namespace: str
                          ) -> list[tuple[kinds.Kind, Stored]]:
        if not uid:
            return []
        found = []
        await self.replica.barrier()  # one linearizable point for all the reads below
        for k in kinds.KINDS:
            if not k.namespaced and namespace:
                continue
            prefix = prefix_of(k, namespace if k.namespaced else None)
            result = await self.replica.range({"key": prefix, "range_end": st.prefix_end(prefix)},
                                              serializable=True)
            for kv in result.get("kvs") or []:
                stored = decode(kv)
                owners = stored.obj["metadata"].get("ownerReferences") or []
                if stored.obj["metadata"].get("uid") != uid and any(
                        isinstance(o, dict) and o.get("uid") == uid for o in owners):
                    found.append((k, stored))
        return found

    async def _delete_dependents(self, uid: str, namespace: str, *,
                                 propagation: str = "Background",
                                 found: list[tuple[kinds.Kind, Stored]] | None = None
                                 ) -> None:
        """Delete what `uid` owns; `found`, when the caller has just looked them up."""
        if found is None:
            found = await self._dependents(uid, namespace)
        for k, stored in found:
            meta = stored.obj["metadata"]
            try:
                await self.delete(k, meta.get("namespace", ""), meta["name"],
                                  propagation=propagation)
            except stt.ApiError:
                pass  # gone already, or changed meanwhile

    async def _orphan_dependents(self, uid: str, namespace: str) -> None:
        for k, stored in await self._dependents(uid, namespace):
            meta = stored.obj["metadata"]
            owners = [o for o in meta.get("ownerReferences") or [] if o.get("uid") != uid]
            try:
                await self.patch(k, meta.get("namespace", ""), meta["name"],
                                 {"metadata": {"ownerReferences": owners or None}})
            except stt.ApiError:
                pass

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
        result = await self.replica.propose("lease_grant", {
            "ID": lease_id, "TTL": max(2, int(self.event_ttl + window + 0.999))})
        if "error" in result:
            raise stt.ApiError(500, "InternalError", f"store: {result['error']}")
        self._event_lease = (lease_id, now + window)
        return lease_id

    async def ensure_namespaces(self) -> None:
        for name in SYSTEM_NAMESPACES:
            try:
                await self.create(NAMESPACE_KIND, "", {
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
            except stt.ApiError as e:
                if e.reason != "AlreadyExists":
                    raise



def _blocks(dependent: dict[str, Any], owner_uid: str) -> bool:
    return any(isinstance(o, dict) and o.get("uid") == owner_uid
               and o.get("blockOwnerDeletion") is True
               for o in dependent["metadata"].get("ownerReferences") or [])


def _waits_for(dependent: dict[str, Any], owner: dict[str, Any]) -> bool:
    """Whether `dependent` is itself being deleted in the foreground and waits for
    `owner` (a cycle of two): then neither may wait for the other, as Kubernetes'
    garbage collector unblocks such cycles."""
    meta = dependent["metadata"]
    return FOREGROUND in (meta.get("finalizers") or []) and _blocks(owner, meta.get("uid", ""))


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


def _bound_status() -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}


def _without_rv(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return encode(a) == encode(b)  # encode leaves the resourceVersion out


# The last second RFC 3339 can write. A deadline past it (a grace period of an int64's
# worth of seconds is valid input) is written as this second: it is as good as never.
LAST_SECOND = 253402300799.0  # 9999-12-31T23:59:59Z


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(t, LAST_SECOND)))


def uuid_from(rng: random.Random) -> str:
    """A version-4 UUID from the injected randomness (tests can seed it)."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
