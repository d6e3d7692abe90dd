"""A namespace's life in the API server: nothing new in it once it is being deleted, and
it goes only when the namespace controller says it is empty.

Deleting a namespace marks it (deletionTimestamp, `status.phase: Terminating`), as
Kubernetes' API server does; from then on nothing may be created in it (403, Kubernetes'
words and its `NamespaceTerminating` cause), so that emptying it ends. The namespace
controller deletes its contents, honouring their finalizers, and then removes the
`kubernetes` entry of `spec.finalizers` through the `finalize` subresource (`PUT
/api/v1/namespaces/NAME/finalize`, what client-go's `Finalize` sends); the namespace goes
with the write that leaves it neither `spec.finalizers` nor `metadata.finalizers`
(`deletion.goes_on_update`). `spec.finalizers` changes through that subresource only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raftkube.api import kinds
from raftkube.apiserver import deletion
from raftkube.apiserver import records as rec
from raftkube.apiserver import status as stt

if TYPE_CHECKING:
    from raftkube.apiserver.objects import Objects

Obj = dict[str, Any]
SYSTEM = ("default", "kube-system", "raftkube-system")
KUBERNETES = "kubernetes"  # the namespace controller's entry in spec.finalizers
NAMESPACE = kinds.NAMESPACE


def terminating(namespace: Obj) -> bool:
    return bool((namespace.get("metadata") or {}).get("deletionTimestamp")) or \
        (namespace.get("status") or {}).get("phase") == "Terminating"


async def admit(objects: Objects, kind: kinds.Kind, name: str,
                namespace: str) -> rec.Stored:
    """The namespace a new object goes into, for the create to compare its revision:
    NotFound if there is none, Forbidden while it is being deleted. A local read serves
    when it shows an active namespace (the create's compare catches any change since);
    anything else is read again through Raft before it is believed."""
    key = rec.key_of(NAMESPACE, "", namespace)
    found = await objects.read(key, serializable=True)
    if found is None or terminating(found.obj):
        found = await objects.read(key)
    if found is None:
        raise stt.not_found("namespaces", namespace)
    if terminating(found.obj):
        message = f"namespace {namespace} is being terminated"
        raise stt.ApiError(
            403, "Forbidden", f'{kind.resource} "{name}" is forbidden: unable to create new '
            f"content in namespace {namespace} because it is being terminated",
            details={"name": name, "kind": kind.plural, "causes": [
                {"reason": "NamespaceTerminating", "message": message,
                 "field": "metadata.namespace"}]})
    return found


def finalize(current: Obj, new: Obj) -> Obj:
    """The `finalize` subresource: only `spec.finalizers` is taken from `new`."""
    out = rec.without_rv(current)
    spec = dict(out.get("spec") or {})
    wanted = (new.get("spec") or {}).get("finalizers") if isinstance(new.get("spec"), dict) \
        else None
    if wanted:
        spec["finalizers"] = wanted
    else:
        spec.pop("finalizers", None)
    out["spec"] = spec
    return out


def keep_spec_finalizers(merged: Obj, current: Obj) -> None:
    """An ordinary update leaves `spec.finalizers` as it was (Kubernetes' rule)."""
    spec = merged.get("spec")
    if not isinstance(spec, dict):
        spec = merged["spec"] = {}
    was = (current.get("spec") or {}).get("finalizers")
    if was is None:
        spec.pop("finalizers", None)
    else:
        spec["finalizers"] = was


async def delete(objects: Objects, current: rec.Stored, *, propagation: str,
                 dry_run: bool) -> deletion.Outcome:
    """The first delete marks the namespace Terminating; it goes when nothing holds it."""
    name = current.obj["metadata"]["name"]
    if name in SYSTEM:
        raise stt.ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this '
                                             "namespace may not be deleted")
    meta = current.obj["metadata"]
    finalizers = deletion.gc_finalizers(list(meta.get("finalizers") or []), propagation)
    held = finalizers or (current.obj.get("spec") or {}).get("finalizers")
    if not held:
        if not dry_run:
            await deletion.remove(objects, NAMESPACE, current)
        return deletion.Outcome(current.obj, gone=True)
    marked = deletion.mark(current.obj, now=objects.clock(), grace=0, finalizers=finalizers)
    marked["status"] = {**(marked.get("status") or {}), "phase": "Terminating"}
    if dry_run:
        return deletion.Outcome(marked, gone=False)
    if rec.same(marked, current.obj):
        return deletion.Outcome(current.obj, gone=False)
    return deletion.Outcome(await deletion.write(objects, NAMESPACE, current, marked),
                            gone=False)
