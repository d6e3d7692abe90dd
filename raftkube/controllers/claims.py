"""Who owns what: adoption and release through controller references (Kubernetes'
ControllerRefManager), and the orphans a controller might adopt.

An owner (a ReplicaSet, DaemonSet or Job of pods, a Deployment of ReplicaSets) *claims*
objects: those whose controller reference names it and that its selector still matches
are its own; those that name it but no longer match are *released* (the reference
removed), unless the owner is being deleted; those of its namespace that name no
controller, match its selector and are not being deleted are *adopted* (a controller
reference added). Objects another controller owns are never touched. `claim()` decides,
as a pure function; `send()` makes the patches, each carrying the resourceVersion it
was decided on, since a merge patch replaces the whole ownerReferences list.

Owned objects come from the informer's OWNER index, so a reconcile looks at its own
objects, not at the namespace. Orphans are rare, but finding them would need a scan of
the namespace on every reconcile; `Orphans` keeps them by namespace instead, from the
informer's events. `OwnerEvents` tells an owner's queue of the events of what it owns
or might adopt.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import kinds, selectors
from raftkube.client import informer as inf
from raftkube.client import rest
from raftkube.client.errors import ApiError
from raftkube.controllers import base

Obj = dict[str, Any]


def labels_of(obj: Obj) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def selector_of(owner: Obj) -> selectors.LabelSelector:
    """The owner's `spec.selector` (SelectorError if it does not parse; validation makes
    sure a ReplicaSet's or a Deployment's does, and is not empty)."""
    return selectors.selector_from_object((owner.get("spec") or {}).get("selector"))


def uid_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


@dataclass
class Claim:
    mine: list[Obj] = field(default_factory=list)  # owned and matching, adopted included
    adopt: list[Obj] = field(default_factory=list)
    release: list[Obj] = field(default_factory=list)


def claim(owner: Obj, selector: selectors.LabelSelector, owned: list[Obj],
          orphans: list[Obj]) -> Claim:
    """Decide, for an owner's candidates, what is its own, what to adopt and release.

    `owned`: objects with any reference to the owner (the OWNER index); `orphans`:
    objects of its namespace with no controller.
    """
    out = Claim()
    uid = uid_of(owner)
    deleting = bool(owner["metadata"].get("deletionTimestamp"))
    namespace = owner["metadata"].get("namespace", "")
    for obj in owned:
        ref = base.controller_of(obj)
        if ref is None or ref.get("uid") != uid:
            continue
        if selector.matches(labels_of(obj)):
            out.mine.append(obj)
        elif not deleting:
            out.release.append(obj)
    if deleting:
        return out
    for obj in orphans:
        meta = obj.get("metadata") or {}
        if base.controller_of(obj) is None and selector.matches(labels_of(obj)) \
                and not meta.get("deletionTimestamp") \
                and meta.get("namespace", "") == namespace:
            out.adopt.append(obj)
            out.mine.append(obj)
    return out


def adopt_patch(obj: Obj, owner: Obj) -> Obj:
    refs = list((obj.get("metadata") or {}).get("ownerReferences") or [])
    refs.append(base.owner_ref(owner))
    return {"metadata": {"ownerReferences": refs,
                         "resourceVersion": inf.resource_version(obj)}}


def release_patch(obj: Obj, owner: Obj) -> Obj:
    uid = uid_of(owner)
    refs = [r for r in (obj.get("metadata") or {}).get("ownerReferences") or []
            if not (isinstance(r, dict) and r.get("uid") == uid)]
    return {"metadata": {"ownerReferences": refs or None,
                         "resourceVersion": inf.resource_version(obj)}}


async def send(client: rest.RestClient, kind: kinds.Kind, owner: Obj, decided: Claim, *,
               wrote: Callable[[Obj], object] | None = None) -> list[Obj]:
    """Make the adoptions, then the releases, that `claim()` decided; the owner's objects
    after them (an adopted one with its new reference and resourceVersion). `wrote`
    hears every answer of the server. An object that is gone (NotFound) is neither
    adopted nor released and is not the owner's; any other error is raised, as
    Kubernetes' ClaimObject does, so the owner is retried on what changed instead of
    deciding without it (a Conflict: the object changed since it was read)."""
    adopted: dict[str, Obj | None] = {}
    for obj in decided.adopt:
        patch = adopt_patch(obj, owner)
        answer = await _patch(client, kind, obj, patch)
        new = None
        if answer is not None:
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = patch["metadata"]["ownerReferences"]
            new["metadata"]["resourceVersion"] = inf.resource_version(answer) or \
                inf.resource_version(obj)
            if wrote is not None:
                wrote(answer)
        adopted[uid_of(obj)] = new
    for obj in decided.release:
        answer = await _patch(client, kind, obj, release_patch(obj, owner))
        if answer is not None and wrote is not None:
            wrote(answer)
    out = []
    for obj in decided.mine:
        new = adopted.get(uid_of(obj), obj)
        if new is not None:
            out.append(new)
    return out


async def _patch(client: rest.RestClient, kind: kinds.Kind, obj: Obj, patch: Obj
                 ) -> Obj | None:
    meta = obj["metadata"]
    try:
        answer: Obj = await client.patch(kind, meta.get("namespace", ""), meta["name"], patch)
    except ApiError as e:
        if e.code == 404:
            return None
        raise
    return answer


class Orphans:
    """Keys of the objects of one kind that have no controller, by namespace; register
    `handler()` on the kind's informer."""

    def __init__(self, cache: inf.Cache) -> None:
        self.cache = cache
        self._keys: dict[str, set[str]] = {}

    def handler(self) -> inf.Handler:
        return inf.Handler(add=self._seen, update=lambda _old, new: self._seen(new),
                           delete=self._gone)

    def _seen(self, obj: Obj) -> None:
        if base.controller_of(obj) is not None:
            self._gone(obj)
            return
        namespace = (obj.get("metadata") or {}).get("namespace") or ""
        self._keys.setdefault(namespace, set()).add(inf.key_of(obj))

    def _gone(self, obj: Obj) -> None:
        namespace = (obj.get("metadata") or {}).get("namespace") or ""
        keys = self._keys.get(namespace)
        if keys is not None:
            keys.discard(inf.key_of(obj))
            if not keys:
                del self._keys[namespace]

    def in_namespace(self, namespace: str) -> list[Obj]:
        out = []
        for key in sorted(self._keys.get(namespace, ())):
            obj = self.cache.get(key)
            if obj is not None and base.controller_of(obj) is None:
                out.append(obj)
        return out


def owners_matching(owners: list[Obj], obj: Obj) -> list[Obj]:
    """The owners (of the object's namespace) whose selector matches the object; an
    owner with an empty or invalid selector matches nothing."""
    labels = labels_of(obj)
    out = []
    for owner in owners:
        try:
            selector = selector_of(owner)
        except selectors.SelectorError:
            continue
        if not selector.empty and selector.matches(labels):
            out.append(owner)
    return out


class OwnerEvents:
    """The keys of the owners of kind `kind` (e.g. "ReplicaSet") that hear of an event
    of an object they may own; register `handler()` on that object's informer.

    Kubernetes' addPod/updatePod/deletePod, the same for every workload controller: an
    object with a controller reference wakes that controller only; an orphan wakes every
    owner of its namespace whose selector matches it, when it comes, goes, or changes
    its labels or loses its controller (a status change of an orphan is news to nobody);
    an object whose controller reference changed wakes its old controller too.
    """

    def __init__(self, kind: str, owners: inf.Cache,
                 enqueue: Callable[[str], None]) -> None:
        self.kind = kind
        self.owners = owners
        self.enqueue = enqueue

    def handler(self) -> inf.Handler:
        return inf.Handler(add=self.changed, update=self.updated, delete=self.changed)

    def changed(self, obj: Obj) -> None:
        ref = base.controller_of(obj)
        if ref is not None:
            self._to(obj, ref)
            return
        namespace = (obj.get("metadata") or {}).get("namespace") or ""
        for owner in owners_matching(self.owners.by_index(inf.NAMESPACE, namespace), obj):
            self.enqueue(inf.key_of(owner))

    def updated(self, old: Obj, new: Obj) -> None:
        old_ref, new_ref = base.controller_of(old), base.controller_of(new)
        if old_ref is not None and (new_ref is None or old_ref.get("uid") != new_ref.get("uid")):
            self._to(old, old_ref)
        if new_ref is None and old_ref is None and labels_of(old) == labels_of(new):
            return  # an orphan whose labels did not change: no owner-to-be has news
        self.changed(new)

    def _to(self, obj: Obj, ref: Obj) -> None:
        if ref.get("kind") == self.kind:
            namespace = (obj.get("metadata") or {}).get("namespace") or ""
            self.enqueue(f"{namespace}/{ref.get('name', '')}")
