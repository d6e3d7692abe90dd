"""The garbage collector: ownerReferences honoured by a controller, as in Kubernetes.

The API server only records what a delete asks (see `apiserver/deletion.py`); this loop
makes it true, for every kind but Events (which expire on their own):

- an object none of whose owners exists any more is deleted (Background: the owner went
  at once), with the policy its own finalizers ask for;
- an owner marked with `foregroundDeletion` has its dependents deleted, and loses the
  finalizer (and so goes) once no dependent with `blockOwnerDeletion: true` is left; a
  dependent that itself has dependents is deleted in the foreground too, so the whole
  tree goes bottom-up;
- an owner marked with `orphan` has its reference removed from every dependent, then
  loses the finalizer;
- an object that still has a live owner only loses its references to the owners that
  are gone or being deleted in the foreground.

Dependents are found through the informers' owner-uid index (one lookup per kind), never
by scanning. Its decisions are guarded against a stale cache, because a wrong one
destroys data: an owner absent from the cache is only believed gone after a read
through the API says so (the same master, linearizable), and every write is a
compare-and-swap on the resourceVersion the decision was made from. Before it removes a
finalizer, which lets an owner go for good, every kind's informer must have seen the
owner's own last revision; a kind whose informer lags is listed through the API instead,
so a dependent created just before the owner was marked is never missed.

Two owners waiting for each other in the foreground would wait forever; as Kubernetes'
collector does, a dependent caught in such a cycle has its references unblocked first.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from raftkube.api import kinds
from raftkube.client import informer as inf
from raftkube.client import workqueue
from raftkube.client.errors import ApiError
from raftkube.controllers import base

log = logging.getLogger(__name__)

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
GC_KINDS = tuple(k for k in kinds.KINDS if k.kind != "Event")
SOLID, DANGLING, WAITING = "solid", "dangling", "waiting"
RECHECK = 1.0  # seconds before an owner whose dependents are still arriving is looked at again


def refs_of(obj: Obj) -> list[Obj]:
    return [r for r in (obj.get("metadata") or {}).get("ownerReferences") or []
            if isinstance(r, dict) and isinstance(r.get("uid"), str)]


def deleting_dependents(obj: Obj) -> bool:
    """Marked for deletion in the foreground: it waits for its dependents."""
    meta = obj.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and FOREGROUND in (meta.get("finalizers") or [])


def blocks(dependent: Obj, owner_uid: str) -> bool:
    return any(r.get("uid") == owner_uid and r.get("blockOwnerDeletion") is True
               for r in refs_of(dependent))


def policy_of(obj: Obj) -> str:
    """The propagation an object's own finalizers ask for when it is collected."""
    finalizers = (obj.get("metadata") or {}).get("finalizers") or []
    if ORPHAN in finalizers:
        return "Orphan"
    return "Foreground" if FOREGROUND in finalizers else "Background"


def _revision(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


class GarbageCollector:
    name = "garbage-collector"

    def __init__(self, ctx: base.Context, *, remembered: int = 10_000) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.queue = workqueue.WorkQueue(name=self.name)
        self.informers = {k: ctx.informers.informer(k) for k in GC_KINDS}
        self.by_resource = {k.resource: k for k in GC_KINDS}
        # Owners a read through the API found gone: uids are never reused, so the answer
        # holds for good; it saves a read per dependent of a big owner.
        self.absent: OrderedDict[str, None] = OrderedDict()
        self.remembered = remembered
        self.warned: set[tuple[str, str]] = set()
        for kind, informer in self.informers.items():
            informer.add_handler(self._handler(kind))

    # ---- keys and lookups -------------------------------------------------------------

    @staticmethod
    def key(kind: kinds.Kind, obj: Obj) -> str:
        return f"{kind.resource}/{inf.key_of(obj)}"

    def split(self, key: str) -> tuple[kinds.Kind | None, str]:
        resource, _, rest = key.partition("/")
        return self.by_resource.get(resource), rest

    def dependents(self, uid: str) -> list[tuple[kinds.Kind, Obj]]:
        """Every cached object that names `uid` as an owner, itself excepted."""
        return [(kind, d) for kind, informer in self.informers.items()
                for d in informer.cache.by_index(inf.OWNER, uid)
                if (d.get("metadata") or {}).get("uid") != uid]

    def owner_of(self, kind: kinds.Kind, dependent: Obj,
                 ref: Obj) -> tuple[kinds.Kind, str, str] | None:
        """The owner's kind, namespace and name; None if the reference cannot name one
        (an unknown kind, or a namespaced owner of a cluster-scoped object)."""
        owner_kind = kinds.by_kind(str(ref.get("apiVersion", "")), str(ref.get("kind", "")))
        name = ref.get("name")
        if owner_kind is None or not isinstance(name, str):
            return None
        namespace = (dependent.get("metadata") or {}).get("namespace") or ""
        if owner_kind.namespaced and not namespace:
            self._warn_invalid_namespace(kind, dependent, ref)
            return None
        return owner_kind, namespace if owner_kind.namespaced else "", name

    def cached(self, kind: kinds.Kind, namespace: str, name: str) -> Obj | None:
        informer = self.informers.get(kind)
        return informer.cache.get(f"{namespace}/{name}" if namespace else name) \
            if informer is not None else None

    def _owner_keys(self, kind: kinds.Kind, obj: Obj) -> Iterable[str]:
        for ref in refs_of(obj):
            found = self.owner_of(kind, obj, ref)
            if found is not None and found[0] in self.informers:
                owner_kind, namespace, name = found
                yield f"{owner_kind.resource}/{namespace}/{name}" if namespace \
                    else f"{owner_kind.resource}/{name}"

    # ---- what to look at ----------------------------------------------------------------

    def _handler(self, kind: kinds.Kind) -> inf.Handler:
        return inf.Handler(add=lambda obj: self._added(kind, obj),
                           update=lambda old, new: self._updated(kind, old, new),
                           delete=lambda obj: self._deleted(kind, obj))

    def _interesting(self, obj: Obj) -> bool:
        meta = obj.get("metadata") or {}
        return bool(meta.get("ownerReferences")) or (
            bool(meta.get("deletionTimestamp"))
            and bool({FOREGROUND, ORPHAN} & set(meta.get("finalizers") or [])))

    def _added(self, kind: kinds.Kind, obj: Obj) -> None:
        if self._interesting(obj):
            self.queue.add(self.key(kind, obj))

    def _updated(self, kind: kinds.Kind, old: Obj, new: Obj) -> None:
        if old is new:  # the periodic resync: look at everything again
            self._added(kind, new)
            return
        old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
        refs_changed = refs_of(old) != refs_of(new)
        marked = (old_meta.get("deletionTimestamp"), old_meta.get("finalizers")) != \
            (new_meta.get("deletionTimestamp"), new_meta.get("finalizers"))
        if refs_changed or marked:
            self._added(kind, new)
        if refs_changed:  # an owner waiting for this one may be free to go
            for key in self._owner_keys(kind, old):
                self.queue.add(key)
        if marked and deleting_dependents(new):
            for dep_kind, dep in self.dependents(new_meta.get("uid", "")):
                self.queue.add(self.key(dep_kind, dep))

    def _deleted(self, kind: kinds.Kind, obj: Obj) -> None:
        uid = (obj.get("metadata") or {}).get("uid", "")
        for dep_kind, dep in self.dependents(uid):  # they may have no owner left
            self.queue.add(self.key(dep_kind, dep))
        for key in self._owner_keys(kind, obj):  # an owner may have waited for this one
            self.queue.add(key)

    # ---- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        kind, name = self.split(key)
        if kind is None:
            return
        obj = self.informers[kind].cache.get(name)
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            finalizers = meta.get("finalizers") or []
            if FOREGROUND in finalizers:
                await self._delete_dependents(kind, obj)
            elif ORPHAN in finalizers:
                await self._orphan_dependents(kind, obj)
            return  # otherwise being deleted already: nothing to collect
        if refs_of(obj):
            await self._collect(kind, obj)

    async def _state(self, kind: kinds.Kind, obj: Obj, ref: Obj) -> str:
        found = self.owner_of(kind, obj, ref)
        if found is None:
            return SOLID  # an owner that cannot be looked up is never presumed gone
        owner_kind, namespace, name = found
        uid = ref["uid"]
        if uid in self.absent:
            return DANGLING
        owner = self.cached(owner_kind, namespace, name)
        if owner is None or (owner.get("metadata") or {}).get("uid") != uid:
            # The cache may be behind (the owner made just before this object): only a
            # read through the API says it is gone.
            try:
                owner = await self.client.get(owner_kind, namespace, name)
            except ApiError as e:
                if e.code != 404:
                    raise
                owner = None
            if owner is None or (owner.get("metadata") or {}).get("uid") != uid:
                self._remember_absent(uid)
                return DANGLING
        return WAITING if deleting_dependents(owner) else SOLID

    async def _collect(self, kind: kinds.Kind, obj: Obj) -> None:
        refs = refs_of(obj)
        states = [await self._state(kind, obj, ref) for ref in refs]
        if SOLID in states:
            if len(set(states)) > 1:  # forget the owners that are gone or going
                keep = [r for r, s in zip(refs, states, strict=True) if s == SOLID]
                await self._patch_refs(kind, obj, keep)
            return
        meta = obj["metadata"]
        version = str(meta.get("resourceVersion", ""))
        if WAITING in states and self.dependents(meta.get("uid", "")):
            # An owner waits for this one, which has dependents of its own: it goes in
            # the foreground too. If one of those is itself waiting for its dependents,
            # the two could wait for each other forever: stop this one from blocking.
            if any(deleting_dependents(d) for _, d in self.dependents(meta.get("uid", ""))):
                unblocked = [{**r, "blockOwnerDeletion": False} for r in refs]
                patched = await self._patch_refs(kind, obj, unblocked)
                if patched is None:
                    return
                version = str(patched["metadata"].get("resourceVersion", ""))
            await self._delete(kind, obj, "Foreground", version)
            return
        await self._delete(kind, obj, policy_of(obj), version)

    async def _delete(self, kind: kinds.Kind, obj: Obj, policy: str, version: str) -> None:
        meta = obj["metadata"]
        log.info("garbage collector: deleting %s %s (%s): its owners are gone", kind.resource,
                 inf.key_of(obj), policy)
        try:
            await self.client.delete(kind, meta.get("namespace") or "", meta["name"],
                                     propagation=policy, uid=meta.get("uid", ""),
                                     resource_version=version)
        except ApiError as e:
            if e.code != 404:
                raise  # 409: it changed since the decision; decided again once seen

    async def _patch_refs(self, kind: kinds.Kind, obj: Obj, refs: list[Obj]) -> Obj | None:
        meta = obj["metadata"]
        try:
            patched: Obj = await self.client.patch(
                kind, meta.get("namespace") or "", meta["name"],
                {"metadata": {"ownerReferences": refs or None,
                              "resourceVersion": meta.get("resourceVersion")}})
        except ApiError as e:
            if e.code == 404:
                return None
            raise
        return patched

    async def _delete_dependents(self, kind: kinds.Kind, owner: Obj) -> None:
        uid = owner["metadata"].get("uid", "")
        deps = self.dependents(uid)
        for dep_kind, dep in deps:
            if not (dep.get("metadata") or {}).get("deletionTimestamp"):
                self.queue.add(self.key(dep_kind, dep))
        if any(blocks(dep, uid) for _, dep in deps):
            return  # looked at again when one of them goes or stops blocking
        late = await self._unseen_dependents(kind, owner)
        if late:
            for dep_kind, dep in late:
                self.queue.add(self.key(dep_kind, dep))
            if any(blocks(dep, uid) for _, dep in late):
                self.queue.add_after(self.key(kind, owner), RECHECK)
                return
        await self._remove_finalizer(kind, owner, FOREGROUND)

    async def _orphan_dependents(self, kind: kinds.Kind, owner: Obj) -> None:
        uid = owner["metadata"].get("uid", "")
        deps = {self.key(k, d): (k, d) for k, d in self.dependents(uid)}
        deps.update((self.key(k, d), (k, d)) for k, d in
                    await self._unseen_dependents(kind, owner))  # read later: fresher
        for dep_kind, dep in deps.values():
            await self._patch_refs(dep_kind, dep, [r for r in refs_of(dep) if r["uid"] != uid])
        await self._remove_finalizer(kind, owner, ORPHAN)

    async def _unseen_dependents(self, kind: kinds.Kind, owner: Obj
                                 ) -> list[tuple[kinds.Kind, Obj]]:
        """Dependents of `owner` that a lagging informer may not show yet: every kind
        whose informer has not seen the owner's revision is listed through the API."""
        meta = owner["metadata"]
        uid, revision = meta.get("uid", ""), _revision(meta.get("resourceVersion"))
        namespace = meta.get("namespace") if kind.namespaced else None
        found: list[tuple[kinds.Kind, Obj]] = []
        for dep_kind, informer in self.informers.items():
            if _revision(informer.resource_version) >= revision:
                continue
            if namespace and not dep_kind.namespaced:
                continue  # a cluster-scoped object cannot be owned by a namespaced one
            items, _ = await self.client.list_all(dep_kind, namespace)
            found += [(dep_kind, o) for o in items
                      if any(r.get("uid") == uid for r in refs_of(o))
                      and (o.get("metadata") or {}).get("uid") != uid]
        return found

    async def _remove_finalizer(self, kind: kinds.Kind, owner: Obj, finalizer: str) -> None:
        meta = owner["metadata"]
        rest = [f for f in meta.get("finalizers") or [] if f != finalizer]
        try:
            await self.client.patch(kind, meta.get("namespace") or "", meta["name"],
                                    {"metadata": {"finalizers": rest or None,
                                                  "resourceVersion": meta.get("resourceVersion")}})
        except ApiError as e:
            if e.code != 404:
                raise

    def _remember_absent(self, uid: str) -> None:
        self.absent[uid] = None
        while len(self.absent) > self.remembered:
            self.absent.popitem(last=False)

    def _warn_invalid_namespace(self, kind: kinds.Kind, dependent: Obj, ref: Obj) -> None:
        seen = ((dependent.get("metadata") or {}).get("uid", ""), str(ref.get("uid")))
        if seen in self.warned:
            return
        self.warned.add(seen)
        self.ctx.events.event(dependent, "Warning", "OwnerRefInvalidNamespace",
                              f"ownerRef {ref.get('kind')}/{ref.get('name')} (uid "
                              f"{ref.get('uid')}) is namespaced and cannot own a "
                              f"cluster-scoped {kind.kind}")

    async def run(self) -> None:
        await workqueue.run_workers(self.queue, self.reconcile,
                                    workers=self.ctx.options.workers)
