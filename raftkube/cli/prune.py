"""`rk apply --prune`: which live objects an apply leaves behind, and deleting them.

kubectl's rule (its "allowlist" prune, not ApplySets): after applying, every object of
the allowlisted kinds that matches the selector, was itself made by `apply` (it carries
the last-applied annotation) and is not among the objects just applied, is deleted.
Namespaced kinds are looked at only in the namespaces the apply wrote to (and -n's, when
given); cluster-scoped kinds everywhere. Objects made by controllers (a Deployment's
ReplicaSets and Pods) carry no annotation, so they are never pruned directly.

Choosing is pure (`allowlist`, `chosen`) and tested from tables; `prune` does the
listing and deleting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from raftkube.api import kinds, printers
from raftkube.cli import writes
from raftkube.client import errors, rest

Obj = dict[str, Any]

# kubectl's default prune allowlist, as group/version/Kind ("core" is the empty group),
# restricted to the kinds raftkube serves (no Endpoints, PersistentVolume(Claim)s,
# ReplicationControllers, CronJobs, Ingresses or StatefulSets here).
DEFAULT_ALLOWLIST = (
    "core/v1/ConfigMap", "core/v1/Namespace", "core/v1/Pod", "core/v1/Secret",
    "core/v1/Service", "batch/v1/Job", "apps/v1/DaemonSet", "apps/v1/Deployment",
    "apps/v1/ReplicaSet",
)

Key = tuple[str, str, str]  # kind.resource, namespace ("" when cluster-scoped), name


def key_of(kind: kinds.Kind, obj: Obj) -> Key:
    meta = obj.get("metadata") or {}
    return (kind.resource, str(meta.get("namespace") or "") if kind.namespaced else "",
            str(meta.get("name") or ""))


def allowlist(entries: Iterable[str]) -> list[kinds.Kind]:
    """The kinds `--prune-allowlist` names (kubectl's `group/version/Kind`, `core` for
    the core group), or kubectl's default when none is given."""
    words = list(entries) or list(DEFAULT_ALLOWLIST)
    out: list[kinds.Kind] = []
    for word in words:
        parts = word.split("/")
        if len(parts) != 3 or not all(parts):
            raise errors.ClientError(f"invalid GroupVersionKind format: {word}, please "
                                     "follow <group/version/kind>")
        group, version, kind_name = parts
        api_version = version if group == "core" else f"{group}/{version}"
        kind = kinds.by_kind(api_version, kind_name)
        if kind is None:
            raise errors.ClientError(f'--prune-allowlist: no matches for kind "{kind_name}" '
                                     f'in version "{api_version}"')
        if kind not in out:
            out.append(kind)
    return out


def chosen(listed: Iterable[Obj], kind: kinds.Kind, applied: set[Key]) -> list[Obj]:
    """The objects of one listing that prune deletes: made by apply, not just applied,
    and not already on their way out."""
    out = []
    for obj in listed:
        meta = obj.get("metadata") or {}
        if writes.LAST_APPLIED not in (meta.get("annotations") or {}):
            continue
        if meta.get("deletionTimestamp"):
            continue
        if key_of(kind, obj) in applied:
            continue
        out.append(obj)
    return out


@dataclass(frozen=True)
class Plan:
    kinds: list[kinds.Kind]
    selector: str  # "" with --all
    namespaces: set[str]  # where namespaced kinds are pruned
    applied: set[Key]


async def prune(client: rest.RestClient, plan: Plan, *, dry_run: str, propagation: str,
                say: Callable[[str], None]) -> None:
    """Delete what `plan` chooses, saying `KIND/NAME pruned` for each. `dry_run`:
    "none", "client" (nothing is sent) or "server" (sent with dryRun=All)."""
    suffix = writes.DRY_RUN_SUFFIX.get(dry_run, "")
    for kind in plan.kinds:
        scopes = sorted(plan.namespaces) if kind.namespaced else [""]
        for namespace in scopes:
            listed, _ = await client.list_all(kind, namespace if kind.namespaced else None,
                                              label_selector=plan.selector)
            for obj in chosen(listed, kind, plan.applied):
                meta = obj.get("metadata") or {}
                if dry_run != "client":
                    try:
                        await client.delete(kind, str(meta.get("namespace") or ""),
                                            printers.name_of(obj), propagation=propagation,
                                            dry_run=dry_run == "server")
                    except errors.ApiError as e:
                        if e.code == 404:
                            continue  # gone meanwhile: nothing left to prune
                        raise
                say(f"{printers.object_ref(kind, obj)} pruned{suffix}")
