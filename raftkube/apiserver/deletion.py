"""DELETE as Kubernetes' API server does it: graceful pods, finalizers, nothing more.

The API server never looks for an object's dependents. It records what a delete asks
and lets the controllers converge, as Kubernetes does since 1.8:

- a pod bound to a node and not finished is *marked* (deletionTimestamp = now + its
  grace period); its node stops it and deletes it again with grace 0, and only then
  does it go;
- the garbage collector's policy becomes a finalizer on the object: Foreground adds
  `foregroundDeletion` (the collector deletes the dependents, waits for those that block
  their owner's deletion, then removes it), Orphan adds `orphan` (the collector strips
  the owner reference from the dependents, then removes it), Background adds neither:
  the object goes at once and the collector deletes what it leaves ownerless;
- an object with finalizers is marked and stays until the last one is removed, which
  `goes_on_update` tells the update path.

Every write compares the revision it read, so a delete never undoes a write it did not
see; `check_preconditions` adds the caller's own (uid, resourceVersion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raftkube.api import kinds
from raftkube.api.timestamps import rfc3339
from raftkube.apiserver import addresses
from raftkube.apiserver import records as rec
from raftkube.apiserver import status as stt

if TYPE_CHECKING:
    from raftkube.apiserver.objects import Objects

Obj = dict[str, Any]
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"  # Kubernetes' names for the garbage collector's two finalizers
TERMINATED = ("Succeeded", "Failed")


def check_preconditions(kind: kinds.Kind, name: str, current: rec.Stored,
                        wanted: dict[str, str]) -> None:
    meta = current.obj["metadata"]
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


def gc_finalizers(finalizers: list[str], propagation: str) -> list[str]:
    """The object's finalizers with the garbage collector's two replaced by the one
    `propagation` asks for (Kubernetes' deletionFinalizersForGarbageCollection)."""
    out = [f for f in finalizers if f not in (FOREGROUND, ORPHAN)]
    if propagation == "Orphan":
        out.append(ORPHAN)
    elif propagation == "Foreground":
        out.append(FOREGROUND)
    return out


def grace_of(kind: kinds.Kind, obj: Obj, requested: int | None) -> int:
    """The seconds the object is given to stop: a pod bound to a node that has not
    finished gets the request's grace period, else its own (30 s by default); an unbound
    or finished pod, and anything else, none (Kubernetes' CheckGracefulDelete)."""
    if kind.kind != "Pod":
        return 0
    spec = obj.get("spec") or {}
    if not spec.get("nodeName") or (obj.get("status") or {}).get("phase") in TERMINATED:
        return 0
    if requested is None:
        return int(spec.get("terminationGracePeriodSeconds", 30))
    return requested


def goes_on_update(kind: kinds.Kind, obj: Obj) -> bool:
    """Whether an update leaves a deleted object with nothing to wait for: no finalizer,
    no grace period running (its node deletes a pod with grace 0 once it has stopped),
    and, for a namespace, no `spec.finalizers` either."""
    meta = obj.get("metadata") or {}
    if not meta.get("deletionTimestamp") or meta.get("finalizers"):
        return False
    if meta.get("deletionGracePeriodSeconds"):
        return False
    return not (kind.kind == "Namespace" and (obj.get("spec") or {}).get("finalizers"))


def mark(obj: Obj, *, now: float, grace: int, finalizers: list[str]) -> Obj:
    """`obj` marked for deletion: deletionTimestamp = now + grace (a second delete may
    shorten the grace period, never lengthen it) and the finalizers given."""
    out = rec.without_rv(obj)
    meta = out["metadata"] = dict(out["metadata"])
    old_grace = meta.get("deletionGracePeriodSeconds")
    if not meta.get("deletionTimestamp") or (old_grace is not None and grace < int(old_grace)):
        meta["deletionTimestamp"] = rfc3339(now + grace)
        meta["deletionGracePeriodSeconds"] = grace
    if finalizers:
        meta["finalizers"] = finalizers
    else:
        meta.pop("finalizers", None)
    return out


@dataclass(frozen=True)
class Outcome:
    """What a DELETE did: `gone`, the object left the store (or would have, in a dry
    run); otherwise it stays, marked, and `obj` is it as marked."""

    obj: Obj
    gone: bool


# Kinds whose storage in Kubernetes answers a delete with the deleted object itself
# (`ReturnDeletedObject`), even when it is gone at once.
RETURN_DELETED = {"Pod", "Service"}


def answer(kind: kinds.Kind, outcome: Outcome) -> Obj:
    """What a DELETE answers, as Kubernetes' registry does: the object while finalizers
    or a grace period keep it (with its deletionTimestamp), and the object for the kinds
    of `RETURN_DELETED`; else a Status of Success naming what went."""
    if not outcome.gone or kind.kind in RETURN_DELETED:
        return outcome.obj
    return success_status(kind, outcome.obj)


def success_status(kind: kinds.Kind, obj: Obj) -> Obj:
    """Kubernetes' answer to a delete that took the object away at once: a Status with
    `status: Success` and the object's name, group, resource (in `kind`, as Kubernetes
    fills it) and uid."""
    meta = obj.get("metadata") or {}
    details = {"name": meta.get("name", ""), "group": kind.group, "kind": kind.plural,
               "uid": meta.get("uid", "")}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


async def delete(objects: Objects, kind: kinds.Kind, current: rec.Stored, *,
                 propagation: str, grace: int | None, dry_run: bool) -> Outcome:
    """Delete `current` (not a namespace: see `namespaces.delete`): at once when nothing
    holds it, else mark it."""
    meta = current.obj["metadata"]
    finalizers = gc_finalizers(list(meta.get("finalizers") or []), propagation)
    seconds = grace_of(kind, current.obj, grace)
    if not finalizers and not seconds:
        if not dry_run:
            await remove(objects, kind, current)
        return Outcome(current.obj, gone=True)
    marked = mark(current.obj, now=objects.clock(), grace=seconds, finalizers=finalizers)
    if dry_run:
        return Outcome(marked, gone=False)
    if rec.same(marked, current.obj):
        return Outcome(current.obj, gone=False)
    return Outcome(await write(objects, kind, current, marked), gone=False)


async def write(objects: Objects, kind: kinds.Kind, current: rec.Stored, new: Obj) -> Obj:
    """Put `new` over `current`, as read (Conflict if it changed since)."""
    meta = current.obj["metadata"]
    key = rec.key_of(kind, meta.get("namespace") or "", meta["name"])
    result = await objects.commit({
        "compare": [rec.compare(key, "MOD", current.mod_revision)],
        "success": [rec.put(key, rec.encode(new), current.lease)], "failure": []})
    if not result["succeeded"]:
        raise stt.conflict(kind.resource, meta["name"])
    out = rec.without_rv(new)
    out["metadata"]["resourceVersion"] = str(result["revision"])
    return out


async def remove(objects: Objects, kind: kinds.Kind, current: rec.Stored) -> None:
    """The object goes from the store, with the Service addresses it holds, if it has not
    changed since it was read."""
    meta = current.obj["metadata"]
    key = rec.key_of(kind, meta.get("namespace") or "", meta["name"])
    success = [rec.delete(key)] + [rec.delete(k)
                                   for k in addresses.allocation_keys(current.obj)]
    result = await objects.commit({"compare": [rec.compare(key, "MOD", current.mod_revision)],
                                   "success": success, "failure": []})
    if not result["succeeded"]:
        raise stt.conflict(kind.resource, meta["name"])
