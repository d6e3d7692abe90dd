"""The namespace controller: a terminating namespace is emptied, then finalized.

Deleting a namespace only marks it (see `apiserver/namespaces.py`). This loop deletes
everything in a namespace being deleted, kind by kind, in the background and honouring
each object's finalizers and grace period: an object that is held is waited for, not
forced. While anything remains the namespace's status says what (Kubernetes' conditions
`NamespaceContentRemaining` and `NamespaceFinalizersRemaining`, with its words) and the
namespace is looked at again shortly; once nothing is left it removes `kubernetes` from
`spec.finalizers` through the `finalize` subresource, and the API server lets the
namespace go when nothing else holds it.

What remains is read through the API, not from a cache: finalizing is for good, so it
follows a read that saw everything. Nothing new can appear meanwhile, because the API
server refuses creates in a terminating namespace.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections import Counter
from typing import Any

from raftkube.api import conditions, kinds
from raftkube.client import informer as inf
from raftkube.client import workqueue
from raftkube.client.errors import ApiError
from raftkube.controllers import base

log = logging.getLogger(__name__)

Obj = dict[str, Any]
KUBERNETES = "kubernetes"
CONTENT_KINDS = tuple(k for k in kinds.KINDS if k.namespaced)
CONCURRENT_DELETES = 16
# Kubernetes' namespace conditions: (type, reason and message when all is well).
OK = {
    "NamespaceDeletionContentFailure": ("ContentDeleted", "All content successfully deleted, "
                                                          "may be waiting on finalization"),
    "NamespaceContentRemaining": ("ContentRemoved", "All content successfully removed"),
    "NamespaceFinalizersRemaining": ("ContentHasNoFinalizers",
                                     "All content-preserving finalizers finished"),
}


def terminating(namespace: Obj) -> bool:
    return bool((namespace.get("metadata") or {}).get("deletionTimestamp"))


def finalized(namespace: Obj) -> bool:
    return KUBERNETES not in ((namespace.get("spec") or {}).get("finalizers") or [])


def content_conditions(remaining: dict[str, int], finalizers: dict[str, int],
                       errors: list[str]) -> list[Obj]:
    """The three conditions for what is left, in Kubernetes' words."""
    found: dict[str, Obj] = {}
    if errors:
        found["NamespaceDeletionContentFailure"] = {
            "reason": "ContentDeletionFailed",
            "message": f"Failed to delete all resource types, {len(errors)} remaining: "
                       + ", ".join(sorted(errors))}
    if remaining:
        listed = sorted(f"{resource} has {n} resource instances"
                        for resource, n in remaining.items())
        found["NamespaceContentRemaining"] = {
            "reason": "SomeResourcesRemain",
            "message": "Some resources are remaining: " + ", ".join(listed)}
    if finalizers:
        listed = sorted(f"{f} in {n} resource instances" for f, n in finalizers.items())
        found["NamespaceFinalizersRemaining"] = {
            "reason": "SomeFinalizersRemain",
            "message": "Some content in the namespace has finalizers remaining: "
                       + ", ".join(listed)}
    out = []
    for type_, (reason, message) in OK.items():
        bad = found.get(type_)
        out.append({"type": type_, "status": "True", **bad} if bad else
                   {"type": type_, "status": "False", "reason": reason, "message": message})
    return out


def resource_name(kind: kinds.Kind) -> str:
    """`pods.` / `deployments.apps`: GroupVersionResource's Resource.Group, as Kubernetes
    prints it in these messages (with the dot even for the core group)."""
    return f"{kind.plural}.{kind.group}"


class NamespaceController:
    name = "namespace-controller"

    def __init__(self, ctx: base.Context, *, recheck: float = 1.0,
                 recheck_max: float = 5.0) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.recheck = recheck
        self.recheck_max = recheck_max
        self.queue = workqueue.WorkQueue(name=self.name)
        self.namespaces = ctx.informers.informer(kinds.NAMESPACE)
        self.namespaces.add_handler(inf.Handler(
            add=self._changed, update=lambda _old, new: self._changed(new)))
        self._waits: dict[str, int] = {}

    def _changed(self, namespace: Obj) -> None:
        if terminating(namespace) and not finalized(namespace):
            self.queue.add(inf.key_of(namespace))

    async def reconcile(self, key: str) -> None:
        namespace = self.namespaces.cache.get(key)
        if namespace is None or not terminating(namespace) or finalized(namespace):
            self._waits.pop(key, None)
            return
        remaining, finalizers, errors = await self._delete_content(key)
        namespace = await self._report(namespace, remaining, finalizers, errors)
        if remaining or errors:
            waits = self._waits.get(key, 0)
            self._waits[key] = waits + 1
            self.queue.add_after(key, min(self.recheck * 2 ** waits, self.recheck_max))
            return
        self._waits.pop(key, None)
        done = copy.deepcopy(namespace)
        done["spec"] = {**(done.get("spec") or {}), "finalizers": [
            f for f in (namespace.get("spec") or {}).get("finalizers") or [] if f != KUBERNETES]}
        log.info("namespace %s is empty: finalizing it", key)
        try:
            await self.client.update(kinds.NAMESPACE, done, subresource="finalize")
        except ApiError as e:
            if e.code != 404:
                raise

    async def _delete_content(self, namespace: str
                              ) -> tuple[dict[str, int], dict[str, int], list[str]]:
        """Delete what is in `namespace`; what is still there, by resource and by
        finalizer, and the kinds whose deletion failed."""
        remaining: Counter[str] = Counter()
        finalizers: Counter[str] = Counter()
        errors: list[str] = []
        gate = asyncio.Semaphore(CONCURRENT_DELETES)

        async def delete(kind: kinds.Kind, obj: Obj) -> None:
            meta = obj["metadata"]
            async with gate:
                try:
                    await self.client.delete(kind, namespace, meta["name"],
                                             propagation="Background", uid=meta.get("uid", ""))
                except ApiError as e:
                    if e.code not in (404, 409):
                        raise

        for kind in CONTENT_KINDS:
            try:
                items, _ = await self.client.list_all(kind, namespace)
                await asyncio.gather(*(delete(kind, o) for o in items
                                       if not o["metadata"].get("deletionTimestamp")))
                if not items:
                    continue
                items, _ = await self.client.list_all(kind, namespace)
            except ApiError as e:
                errors.append(f"{resource_name(kind)}: {e}")
                continue
            if items:
                remaining[resource_name(kind)] += len(items)
            for obj in items:
                for f in obj["metadata"].get("finalizers") or []:
                    finalizers[f] += 1
        return dict(remaining), dict(finalizers), errors

    async def _report(self, namespace: Obj, remaining: dict[str, int],
                      finalizers: dict[str, int], errors: list[str]) -> Obj:
        """Write the conditions if they changed; the namespace as it now is."""
        status = copy.deepcopy(namespace.get("status") or {})
        before = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                  for c in status.get("conditions") or []]
        for condition in content_conditions(remaining, finalizers, errors):
            conditions.put(status, condition, self.ctx.clock())
        after = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                 for c in status["conditions"]]
        if after == before:
            return namespace
        updated = copy.deepcopy(namespace)
        updated["status"] = status
        written: Obj = await self.client.update_status(kinds.NAMESPACE, updated)
        return written

    async def run(self) -> None:
        await workqueue.run_workers(self.queue, self.reconcile,
                                    workers=self.ctx.options.workers)
