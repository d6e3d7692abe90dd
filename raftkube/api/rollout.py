"""A Deployment's revisions: the names, the template hash, and `rollout undo` as a patch.

The Deployment controller and `rk rollout` (history, undo) must agree on what a revision
is, so what they share lives here, below both: the `pod-template-hash` label that tells a
Deployment's ReplicaSets apart, the `deployment.kubernetes.io/...` annotations, how a pod
template hashes, when two templates are the same one (their hash label aside), and which
ReplicaSet a rollback goes back to.

Rollback is Kubernetes' today: apps/v1 has no `rollbackTo`, so `kubectl rollout undo`
copies the old ReplicaSet's template into the Deployment and the controller rolls out as
for any other change. `undo()` computes that write as a JSON merge patch carrying the
resourceVersion it was computed from: a merge patch of a template is a difference from
the template read, so it must not apply over a template that has changed since.

The hash is FNV-1a (32 bits) over the template's canonical JSON and the Deployment's
collisionCount, written with Kubernetes' alphabet of consonants and digits (no vowels,
so no words). The numbers differ from Kubernetes' (which hashes Go's printing of the
struct), the shape and the purpose are the same.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from raftkube.api import merge, metadata

Obj = dict[str, Any]

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CHANGE_CAUSE = "kubernetes.io/change-cause"
# Annotations of a Deployment that are its own, never copied to or from a ReplicaSet.
NOT_COPIED = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS,
                        MAX_REPLICAS, "deprecated.deployment.rollback.to"})

_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' rand.SafeEncodeString alphabet


class RollbackError(ValueError):
    """A rollback that cannot be done; the message says why, in kubectl's words."""


def _fnv32a(data: bytes, h: int = 0x811C9DC5) -> int:
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def template_hash(template: Obj, collision_count: int = 0) -> str:
    """The `pod-template-hash` of a Deployment's template (and its collisionCount)."""
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    h = _fnv32a(canonical)
    if collision_count:
        h = _fnv32a(str(collision_count).encode(), h)
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(h))


def without_hash(template: Obj) -> Obj:
    """A copy of `template` without the hash label (and without empty labels left over)."""
    out = copy.deepcopy(template) if isinstance(template, dict) else {}
    meta = out.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("labels"), dict):
        meta["labels"].pop(HASH_LABEL, None)
        if not meta["labels"]:
            del meta["labels"]
    return out


def equal_ignore_hash(a: Obj | None, b: Obj | None) -> bool:
    """Whether two pod templates are the same but for the hash label."""
    return merge.same(without_hash(a or {}), without_hash(b or {}))


def revision_of(obj: Obj) -> int:
    """The `deployment.kubernetes.io/revision` annotation; 0 when absent or not a number."""
    return metadata.int_annotation(obj, REVISION)


def controlled_by(owner: Obj, objs: Iterable[Obj]) -> list[Obj]:
    """The objects whose controller reference names `owner` (by uid)."""
    uid = (owner.get("metadata") or {}).get("uid")
    out = []
    for obj in objs:
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
            if isinstance(ref, dict) and ref.get("controller") is True and ref.get("uid") == uid:
                out.append(obj)
    return out


def history(deployment: Obj, replicasets: Iterable[Obj]) -> list[tuple[int, Obj]]:
    """(revision, ReplicaSet) of the Deployment's ReplicaSets, oldest revision first."""
    found = [(revision_of(rs), rs) for rs in controlled_by(deployment, replicasets)]
    return sorted((item for item in found if item[0] > 0), key=lambda item: item[0])


@dataclass(frozen=True)
class Undo:
    """What `rollout undo` does: the patch to send (None when there is nothing to do),
    the revision it goes back to, and kubectl's words for the outcome."""

    revision: int
    patch: Obj | None
    message: str


def undo(deployment: Obj, replicasets: Iterable[Obj], *, to_revision: int = 0) -> Undo:
    """Roll `deployment` back to `to_revision`, or to the one before the newest (0).

    `replicasets` may be every ReplicaSet of the namespace: only those the Deployment
    controls count. Raises RollbackError as kubectl does: no such revision, no history,
    or a paused Deployment.
    """
    name = deployment["metadata"]["name"]
    revisions = history(deployment, replicasets)
    if to_revision:
        target = next((rs for v, rs in revisions if v == to_revision), None)
        if target is None:
            raise RollbackError(f"unable to find specified revision {to_revision} in history")
    else:
        if len(revisions) < 2:
            raise RollbackError(f'no rollout history found for deployment "{name}"')
        to_revision, target = revisions[-2]
    if (deployment.get("spec") or {}).get("paused"):
        raise RollbackError("you cannot rollback a paused deployment; resume it first with "
                            f"'rk rollout resume deployment/{name}' and try again")
    current = (deployment.get("spec") or {}).get("template") or {}
    wanted = without_hash((target.get("spec") or {}).get("template") or {})
    if equal_ignore_hash(current, wanted):
        return Undo(to_revision, None, "skipped rollback (current template already matches "
                                       f"revision {to_revision})")
    meta = deployment["metadata"]
    old_annotations = meta.get("annotations") or {}
    annotations = {k: v for k, v in old_annotations.items() if k in NOT_COPIED}
    annotations.update({k: v for k, v in ((target.get("metadata") or {}).get("annotations")
                                          or {}).items() if k not in NOT_COPIED})
    patch: Obj = {"metadata": {"resourceVersion": meta.get("resourceVersion", "")},
                  "spec": {"template": merge.create_merge_patch(current, wanted)}}
    annotations_patch = merge.create_merge_patch(old_annotations, annotations)
    if annotations_patch:
        patch["metadata"]["annotations"] = annotations_patch
    return Undo(to_revision, patch, "rolled back")
