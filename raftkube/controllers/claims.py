"""Who owns what: adoption and release through controller references (Kubernetes'
ControllerRefManager), and the orphans a controller might adopt.

An owner (a ReplicaSet of pods, a Deployment of ReplicaSets) *claims* objects: those
whose controller reference names it and that its selector still matches are its own;
those that name it but no longer match are *released* (the reference removed), unless
the owner is being deleted; those that name no controller, match its selector and are
not being deleted are *adopted* (a controller reference added). Objects another
controller owns are never touched. `claim()` decides; the owner's loop sends the
patches, each carrying the resourceVersion it was decided on, since a merge patch
replaces the whole ownerReferences list.

Owned objects come from the informer's OWNER index, so a reconcile looks at its own
objects, not at the namespace. Orphans are rare, but finding them would need a scan of
the namespace on every reconcile; `Orphans` keeps them by namespace instead, from the
informer's events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import selectors
from raftkube.client import informer as inf
from raftkube.controllers import base

Obj = dict[str, Any]


def labels_of(obj: Obj) -> dict[str, str]:
    labels = (obj.get("metadata") or {}).get("labels")
    return labels if isinstance(labels, dict) else {}


def selector_of(owner: Obj) -> selectors.LabelSelector:
    """The owner's `spec.selector` (validation made sure it parses and is not empty)."""
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
        if base.controller_of(obj) is None and selector.matches(labels_of(obj)) \
                and not (obj.get("metadata") or {}).get("deletionTimestamp"):
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


class Orphans:
    """Keys of the objects of one kind that have no controller, by namespace.

    Register `handler()` on the kind's informer; `on_orphan` hears of every orphan
    added or changed (its owner-to-be should look at it)."""

    def __init__(self, cache: inf.Cache,
                 on_orphan: Callable[[Obj], None] | None = None) -> None:
        self.cache = cache
        self.on_orphan = on_orphan
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
        if self.on_orphan is not None:
            self.on_orphan(obj)

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
    """The owners (of the object's namespace) whose selector matches the object."""
    labels = labels_of(obj)
    out = []
    for owner in owners:
        try:
            if selector_of(owner).matches(labels):
                out.append(owner)
        except selectors.SelectorError:
            continue
    return out
