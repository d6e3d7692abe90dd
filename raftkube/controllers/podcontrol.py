"""Making, removing and claiming the pods a controller owns, with the events users look
for, and a record of the writes its caches have not shown yet.

`PodControl` is Kubernetes' RealPodControl plus ControllerRefManager: a pod is created
from the owner's template with a controller ownerReference (`SuccessfulCreate`,
"Created pod: x"), deleted with the uid it was read with as a precondition
(`SuccessfulDelete`, "Deleted pod: x"), and pods are claimed as Kubernetes does: an
orphan the selector matches is adopted, a pod of ours it no longer matches is released,
each with a patch that carries the resourceVersion it was decided on.

`InFlight` is Kubernetes' ControllerExpectations, kept by pod key rather than by count:
a controller that has just created or deleted pods must not decide again from a cache
that does not show those writes yet, or it would create the same pods twice. A create is
settled once the pod is in the cache, a delete once the pod is gone or marked deleted;
an entry older than `ttl` is dropped (a watch event lost for good must not stall the
owner forever). A write that failed is forgotten at once, as Kubernetes lowers its
expectations; if it had in fact applied, the next decision sees the extra pod and the
owner's own rules remove it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import kinds, selectors
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError, ClientError
from raftkube.controllers import base

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass
class _Pending:
    creates: dict[str, float] = field(default_factory=dict)  # pod key -> when
    deletes: dict[str, float] = field(default_factory=dict)


class InFlight:
    def __init__(self, *, clock: Callable[[], float], ttl: float = 300.0) -> None:
        self.clock = clock
        self.ttl = ttl
        self._owners: dict[str, _Pending] = {}

    def expect_create(self, owner: str, pod_key: str) -> None:
        self._owners.setdefault(owner, _Pending()).creates[pod_key] = self.clock()

    def expect_delete(self, owner: str, pod_key: str) -> None:
        self._owners.setdefault(owner, _Pending()).deletes[pod_key] = self.clock()

    def forget(self, owner: str) -> None:
        self._owners.pop(owner, None)

    def settled(self, owner: str, pods: inf.Cache) -> bool:
        """Whether every write made for `owner` shows in `pods` (or has expired)."""
        pending = self._owners.get(owner)
        if pending is None:
            return True
        now = self.clock()
        for key, at in list(pending.creates.items()):
            if pods.get(key) is not None or now - at > self.ttl:
                del pending.creates[key]
        for key, at in list(pending.deletes.items()):
            pod = pods.get(key)
            if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp") \
                    or now - at > self.ttl:
                del pending.deletes[key]
        if pending.creates or pending.deletes:
            return False
        del self._owners[owner]
        return True


def pod_from_template(owner: Obj, template: Obj, *, generate_name: str = "") -> Obj:
    """A new pod for `owner`: the template's labels, annotations, finalizers and spec,
    a controller ownerReference, and `owner-` as the name's prefix."""
    meta = template.get("metadata") or {}
    out_meta: Obj = {
        "generateName": generate_name or f"{owner['metadata']['name']}-",
        "namespace": owner["metadata"].get("namespace", ""),
        "labels": dict(meta.get("labels") or {}),
        "ownerReferences": [base.owner_ref(owner)],
    }
    for name in ("annotations", "finalizers"):
        if meta.get(name):
            out_meta[name] = copy.deepcopy(meta[name])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": out_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


class PodControl:
    def __init__(self, ctx: base.Context, inflight: InFlight) -> None:
        self.ctx = ctx
        self.inflight = inflight

    async def create(self, owner: Obj, pod: Obj) -> Obj | None:
        """Create `pod` for `owner`; the pod made, or None if the namespace is going
        away. Other errors are recorded as a `FailedCreate` event and raised."""
        namespace = owner["metadata"].get("namespace", "")
        try:
            made = await self.ctx.client.create(kinds.POD, namespace, pod)
        except ApiError as e:
            if e.code == 404 or _namespace_terminating(e):
                return None
            self.ctx.events.event(owner, "Warning", "FailedCreate", f"Error creating: {e}")
            raise
        except ClientError as e:
            self.ctx.events.event(owner, "Warning", "FailedCreate", f"Error creating: {e}")
            raise
        self.inflight.expect_create(inf.key_of(owner), inf.key_of(made))
        self.ctx.events.event(owner, "Normal", "SuccessfulCreate",
                              f"Created pod: {made['metadata']['name']}")
        return made

    async def delete(self, owner: Obj, pod: Obj, *, grace: int | None = None) -> bool:
        """Delete `pod` if it is still the one that was read (uid precondition); whether
        it was deleted now (False if it was gone already)."""
        meta = pod["metadata"]
        try:
            await self.ctx.client.delete(kinds.POD, meta.get("namespace", ""), meta["name"],
                                         uid=meta.get("uid", ""), grace=grace)
        except ApiError as e:
            if e.code in (404, 409):
                return False  # gone, or another pod of that name: not ours to delete
            self.ctx.events.event(owner, "Warning", "FailedDelete", f"Error deleting: {e}")
            raise
        except ClientError as e:
            self.ctx.events.event(owner, "Warning", "FailedDelete", f"Error deleting: {e}")
            raise
        self.inflight.expect_delete(inf.key_of(owner), inf.key_of(pod))
        self.ctx.events.event(owner, "Normal", "SuccessfulDelete",
                              f"Deleted pod: {meta['name']}")
        return True

    async def claim(self, owner: Obj, selector: selectors.LabelSelector,
                    candidates: Iterable[Obj]) -> list[Obj]:
        """The pods `owner` controls, after adopting the orphans its selector matches
        and releasing the pods of its own that it no longer matches (Kubernetes'
        ClaimPods). An owner being deleted adopts and releases nothing."""
        owner_meta = owner["metadata"]
        uid = owner_meta.get("uid")
        deleting = bool(owner_meta.get("deletionTimestamp"))
        claimed = []
        for pod in candidates:
            meta = pod.get("metadata") or {}
            ref = base.controller_of(pod)
            matches = selector.matches(meta.get("labels") or {})
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches:
                    claimed.append(pod)
                elif not deleting:
                    await self._patch_owners(pod, [r for r in meta.get("ownerReferences")
                                                   or [] if r.get("uid") != uid])
                continue
            if deleting or not matches or meta.get("deletionTimestamp") or \
                    meta.get("namespace") != owner_meta.get("namespace"):
                continue
            refs = list(meta.get("ownerReferences") or []) + [base.owner_ref(owner)]
            if await self._patch_owners(pod, refs):
                adopted = copy.deepcopy(pod)
                adopted["metadata"]["ownerReferences"] = refs
                claimed.append(adopted)
        return claimed

    async def _patch_owners(self, pod: Obj, refs: list[Obj]) -> bool:
        meta = pod["metadata"]
        try:
            await self.ctx.client.patch(
                kinds.POD, meta.get("namespace", ""), meta["name"],
                {"metadata": {"ownerReferences": refs or None,
                              "resourceVersion": meta.get("resourceVersion")}})
        except ApiError as e:
            if e.code in (404, 409):
                return False  # gone or changed: the next reconcile decides from the news
            raise
        return True


async def slow_start(items: Sequence[Any], write: Callable[[Any], Awaitable[Any]], *,
                     first: int = 1) -> tuple[int, Exception | None]:
    """Write `items` in batches of 1, 2, 4... at once, stopping after a batch in which a
    write failed (Kubernetes' slow start: a quota or a bad template fails the first write,
    not a thousand). How many were written, and the first error if one stopped it."""
    done = 0
    size = first
    while done < len(items):
        batch = items[done:done + size]
        results = await asyncio.gather(*(write(item) for item in batch),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancellation and the like are not a failed write
        errors = [r for r in results if isinstance(r, Exception)]
        done += len(batch) - len(errors)
        if errors:
            return done, errors[0]
        size *= 2
    return done, None


def _namespace_terminating(error: ApiError) -> bool:
    causes = error.details.get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating"
               for c in causes)
