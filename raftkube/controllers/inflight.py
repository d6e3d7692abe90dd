"""Writes a controller has made that its informer has not shown it yet.

A ReplicaSet that created three pods must not create them again because the pod
informer has not delivered them by the next reconcile; one that deleted a pod must not
count it, nor delete another in its place. Kubernetes keeps "expectations" (counts of
adds and deletes to wait for) and skips a sync until they are met. In a single-threaded
asyncio loop something more exact is cheap: each owner keeps the pods it created, with
the store revision of each create, and the uids it deleted.

- A created pod counts as the owner's until the pod informer has reached the revision
  of its create (watch events arrive in revision order, so by then the informer shows
  the pod, or its deletion after): from then on the cache is the truth.
- A deleted pod is left out until the cache shows it being deleted, or gone once the
  informer has reached the revision the pod was deleted at or after.
- Anything older than `ttl` seconds is dropped, as Kubernetes' expectations expire.

Owners are keyed by uid; `forget` drops an owner that is gone.

`Settling` does the same for a controller's writes to the objects it reconciles (a
ReplicaSet's status, a Deployment and its ReplicaSets): until the informers have reached
the revisions those writes made, a reconcile of the key would read what it has itself
replaced and fail on a stale resourceVersion, so it waits. The informer event of that
very write enqueues the key again, by then with the informer past it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from raftkube.client import informer as inf

Obj = dict[str, Any]


def _revision(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


@dataclass
class _Owner:
    created: dict[str, tuple[int, float, Obj]] = field(default_factory=dict)  # uid -> ...
    deleted: dict[str, tuple[int, float]] = field(default_factory=dict)  # uid -> ...


class InFlight:
    def __init__(self, *, ttl: float = 300.0) -> None:
        self.ttl = ttl
        self._owners: dict[str, _Owner] = {}

    def created(self, owner: str, obj: Obj, now: float) -> None:
        """`obj` is what the server answered to the create (uid, resourceVersion)."""
        entry = self._owners.setdefault(owner, _Owner())
        entry.created[_uid(obj)] = (_revision(obj), now, obj)

    def deleted(self, owner: str, obj: Obj, now: float) -> None:
        """`obj` is the object as it was read before the delete (its resourceVersion)."""
        self._owners.setdefault(owner, _Owner()).deleted[_uid(obj)] = (_revision(obj), now)

    def forget(self, owner: str) -> None:
        self._owners.pop(owner, None)

    def pending(self, owner: str) -> tuple[int, int]:
        """(creates, deletes) not yet seen through the informer."""
        entry = self._owners.get(owner)
        return (len(entry.created), len(entry.deleted)) if entry else (0, 0)

    def view(self, owner: str, cached: Iterable[Obj], *, seen_revision: int,
             now: float) -> list[Obj]:
        """The owner's objects as its own writes have made them: `cached` (everything
        the cache holds for it, terminating ones included) plus created objects the
        informer has not reached, less deleted ones it still shows alive. Entries the
        informer has caught up with are dropped."""
        cached = list(cached)
        entry = self._owners.get(owner)
        if entry is None:
            return cached
        in_cache = {_uid(o): o for o in cached}
        alive = []
        for uid, (revision, when, obj) in list(entry.created.items()):
            if revision <= seen_revision or now - when > self.ttl:
                del entry.created[uid]
            elif uid not in in_cache:
                alive.append(obj)
        for uid, (revision, when) in list(entry.deleted.items()):
            found = in_cache.get(uid)
            # Gone from a cache that had reached the pod's last known version: the
            # informer saw the delete (not merely not yet the create).
            gone = found is None and revision <= seen_revision
            marked = found is not None and bool((found.get("metadata") or {}).get(
                "deletionTimestamp"))
            if gone or marked or now - when > self.ttl:
                del entry.deleted[uid]
        out = [o for o in alive + cached if _uid(o) not in entry.deleted]
        if not entry.created and not entry.deleted:
            del self._owners[owner]
        return out


def _at(informer: inf.Informer) -> int:
    try:
        return int(informer.resource_version or 0)
    except ValueError:
        return 0


class Settling:
    """Per key, the newest revision each informer must reach before it is reconciled."""

    def __init__(self) -> None:
        self._waits: dict[str, dict[int, tuple[inf.Informer, int]]] = {}

    def wrote(self, key: str, informer: inf.Informer, obj: Obj) -> None:
        """A reconcile of `key` wrote `obj` (the server's answer, with its revision)."""
        revision = _revision(obj)
        if not revision:
            return
        waits = self._waits.setdefault(key, {})
        old = waits.get(id(informer), (informer, 0))[1]
        waits[id(informer)] = (informer, max(old, revision))

    def forget(self, key: str) -> None:
        self._waits.pop(key, None)

    def settled(self, key: str) -> bool:
        waits = self._waits.get(key)
        if not waits:
            return True
        for slot, (informer, revision) in list(waits.items()):
            if _at(informer) >= revision:
                del waits[slot]
        if waits:
            return False
        del self._waits[key]
        return True
