"""The annotations a Deployment keeps on its ReplicaSets and on itself (Kubernetes'
deployment_util): which revision each ReplicaSet is, which revisions it was before (a
rollback to it gives it a new number), and the Deployment's size when it was last sized
(`desired-replicas`, `max-replicas`), which proportional scaling reads. The Deployment's
own annotations (a change-cause, say) are copied to its new ReplicaSet, so that
`rollout history` can show them. Each function changes the object it is given and says
whether it changed anything; callers pass copies.
"""

from __future__ import annotations

from typing import Any

from raftkube.api import rollout
from raftkube.controllers import rolling

Obj = dict[str, Any]
HISTORY_CHARS = 2000  # Kubernetes' default limit on the revision-history annotation


def _annotations(obj: Obj) -> dict[str, str]:
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta.get("annotations"), dict):
        meta["annotations"] = {}
    annotations: dict[str, str] = meta["annotations"]
    return annotations


def set_replicas_annotations(rs: Obj, desired: int, most: int) -> bool:
    annotations = _annotations(rs)
    wanted = {rollout.DESIRED_REPLICAS: str(desired), rollout.MAX_REPLICAS: str(most)}
    changed = any(annotations.get(k) != v for k, v in wanted.items())
    annotations.update(wanted)
    return changed


def replicas_annotations_need_update(rs: Obj, desired: int, most: int) -> bool:
    annotations = (rs.get("metadata") or {}).get("annotations") or {}
    return annotations.get(rollout.DESIRED_REPLICAS) != str(desired) or \
        annotations.get(rollout.MAX_REPLICAS) != str(most)


def set_new_rs_annotations(d: Obj, rs: Obj, revision: int, *, exists: bool) -> bool:
    """Copy the Deployment's annotations to its new ReplicaSet and raise the
    ReplicaSet's revision to `revision` (keeping the one it had in its history)."""
    annotations = _annotations(rs)
    changed = False
    for key, value in ((d.get("metadata") or {}).get("annotations") or {}).items():
        if key not in rollout.NOT_COPIED and annotations.get(key) != value:
            annotations[key] = value
            changed = True
    old = annotations.get(rollout.REVISION)
    try:
        old_number = int(old) if old is not None else 0
    except ValueError:
        return changed  # not ours to fix: Kubernetes leaves it too
    if old_number < revision:
        annotations[rollout.REVISION] = str(revision)
        changed = True
        if old is not None:
            _remember(annotations, old)
    if not exists and set_replicas_annotations(
            rs, rolling.replicas(d), rolling.replicas(d) + rolling.max_surge(d)):
        changed = True
    return changed


def _remember(annotations: dict[str, str], old: str) -> None:
    """Add `old` to the revision history, dropping the oldest past HISTORY_CHARS."""
    history = [r for r in annotations.get(rollout.REVISION_HISTORY, "").split(",") if r]
    history.append(old)
    while len(",".join(history)) > HISTORY_CHARS and len(history) > 1:
        history.pop(0)
    annotations[rollout.REVISION_HISTORY] = ",".join(history)


def set_deployment_revision(d: Obj, revision: str) -> bool:
    annotations = _annotations(d)
    if annotations.get(rollout.REVISION) == revision:
        return False
    annotations[rollout.REVISION] = revision
    return True
