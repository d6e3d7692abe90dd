"""Making and removing the pods a controller owns, with the events users look for.

`PodControl` is Kubernetes' RealPodControl: a pod is created from the owner's template
(`from_template`) with a controller ownerReference (`SuccessfulCreate`, "Created pod:
x"), many of them in slow-start batches (`create_all`, Kubernetes' slowStartBatch, as
its ReplicaSet, DaemonSet and Job controllers use it), and deleted with the uid it was
read with as a precondition (`SuccessfulDelete`, "Deleted pod: x"). ReplicaSets,
DaemonSets and Jobs make and remove their pods here and nowhere else, so the three tell
users the same things in the same words.

Every create and delete that went through is recorded in the owner's
`inflight.InFlight`, so that its next decision does not repeat it from a cache that
does not show it yet (a delete that found the pod gone already is too: the cache may
still show it). A write that failed is not recorded, as Kubernetes lowers its
expectations; if it had in fact applied, the next decision sees the extra pod and the
owner's own rules remove it.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from raftkube.api import kinds, names
from raftkube.client.errors import ApiError, ClientError
from raftkube.controllers import base, inflight

Obj = dict[str, Any]


def from_template(owner: Obj, template: Obj, *, generate_name: str = "") -> Obj:
    """A new pod of `owner`, as its controller asks the server to create it (Kubernetes'
    GetPodFromTemplate): the template's labels, annotations, finalizers and spec, a
    controller ownerReference, and `owner-` as the name's prefix (the owner's name alone
    where `owner-` could not start a pod's name), unless `generate_name` says otherwise."""
    meta = template.get("metadata") or {}
    owner_name = owner["metadata"]["name"]
    prefix = generate_name or f"{owner_name}-"
    if not generate_name and names.dns1123_subdomain_errors(prefix + "x"):
        prefix = owner_name
    out_meta: Obj = {
        "generateName": prefix,
        "namespace": owner["metadata"].get("namespace", ""),
        "labels": copy.deepcopy(meta.get("labels") or {}),
        "ownerReferences": [base.owner_ref(owner)],
    }
    for name in ("annotations", "finalizers"):
        if meta.get(name):
            out_meta[name] = copy.deepcopy(meta[name])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": out_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


class PodControl:
    def __init__(self, ctx: base.Context, writes: inflight.InFlight) -> None:
        self.ctx = ctx
        self.inflight = writes

    async def create(self, owner: Obj, pod: Obj) -> Obj | None:
        """Create `pod` for `owner`; the pod made, or None if the namespace is being
        deleted (it refuses every create: no event, no error, as in Kubernetes). Other
        errors are recorded as a `FailedCreate` event and raised."""
        namespace = owner["metadata"].get("namespace", "")
        try:
            made = await self.ctx.client.create(kinds.POD, namespace, pod)
        except ClientError as e:
            if isinstance(e, ApiError) and _namespace_terminating(e):
                return None
            self.ctx.events.event(owner, "Warning", "FailedCreate",
                                  f"Error creating: {_message(e)}")
            raise
        self.inflight.created(owner["metadata"]["uid"], made, self.ctx.clock())
        self.ctx.events.event(owner, "Normal", "SuccessfulCreate",
                              f"Created pod: {made['metadata']['name']}")
        return made

    async def create_all(self, owner: Obj, pods: Sequence[Obj]
                         ) -> tuple[list[Obj], Exception | None]:
        """Create `pods` for `owner` with Kubernetes' slow start (`slow_start`); the pods
        made, and the error that stopped it if one did."""
        results, error = await slow_start(pods, lambda pod: self.create(owner, pod))
        return [made for made in results if made is not None], error

    async def delete(self, owner: Obj, pod: Obj, *, grace: int | None = None) -> bool:
        """Delete `pod` if it is still the one that was read (uid precondition); whether
        it was deleted now. Not found, it was gone already: the owner's cache may still
        show it, so it is recorded as in flight all the same. A Conflict (another pod of
        that name, or the pod changed while the server deleted it) deletes nothing and
        records nothing: the pod's own event brings the owner back to decide again.
        Other errors are recorded as a `FailedDelete` event and raised."""
        meta = pod["metadata"]
        try:
            await self.ctx.client.delete(kinds.POD, meta.get("namespace", ""), meta["name"],
                                         uid=meta.get("uid", ""), grace=grace)
        except ClientError as e:
            if isinstance(e, ApiError) and e.code == 404:
                self.inflight.deleted(owner["metadata"]["uid"], pod, self.ctx.clock())
                return False
            if isinstance(e, ApiError) and e.code == 409:
                return False
            self.ctx.events.event(owner, "Warning", "FailedDelete",
                                  f"Error deleting: {_message(e)}")
            raise
        self.inflight.deleted(owner["metadata"]["uid"], pod, self.ctx.clock())
        self.ctx.events.event(owner, "Normal", "SuccessfulDelete",
                              f"Deleted pod: {meta['name']}")
        return True


async def slow_start(items: Sequence[Any], write: Callable[[Any], Awaitable[Any]], *,
                     first: int = 1) -> tuple[list[Any], Exception | None]:
    """Write `items` in batches of 1, 2, 4... at once, stopping after a batch in which a
    write failed (Kubernetes' slowStartBatch: a quota or a bad template fails the first
    write, not a thousand). What the writes that succeeded returned, and the first error
    if one stopped it."""
    done: list[Any] = []
    size = first
    start = 0
    while start < len(items):
        batch = items[start:start + size]
        start += len(batch)
        results = await asyncio.gather(*(write(item) for item in batch),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, Exception):
                raise r  # cancellation and the like are not a failed write
        errors = [r for r in results if isinstance(r, Exception)]
        done += [r for r in results if not isinstance(r, Exception)]
        if errors:
            return done, errors[0]
        size *= 2
    return done, None


def _namespace_terminating(error: ApiError) -> bool:
    causes = error.details.get("causes") or []
    return any(isinstance(c, dict) and c.get("reason") == "NamespaceTerminating"
               for c in causes)


def _message(error: ClientError) -> str:
    """An error as Kubernetes' events quote it: a server's Status by its message."""
    return error.message if isinstance(error, ApiError) else str(error)
