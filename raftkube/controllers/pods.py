"""What workload controllers ask of a pod: is it active, ready, available; which to
delete first; what a new one from a template looks like.

These are Kubernetes' answers (pkg/controller/controller_utils.go, podutil), as pure
functions of the pod and the time, so that the ReplicaSet controller's choices can be
tested as tables. "Active" is what a ReplicaSet counts towards its replicas: not
finished (Succeeded/Failed) and not being deleted. "Available" is ready for at least
minReadySeconds, by the Ready condition's lastTransitionTime.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from typing import Any

from raftkube.api import conditions, names
from raftkube.api.timestamps import parse_time

Obj = dict[str, Any]

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def is_terminating(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_terminating(pod)


def is_ready(pod: Obj) -> bool:
    return conditions.is_true(pod, "Ready")


def ready_since(pod: Obj) -> float | None:
    """When the pod last became ready; None if it is not ready (or never said when)."""
    cond = conditions.get(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


def is_available(pod: Obj, min_ready_seconds: int, now: float) -> bool:
    """Ready, and (with minReadySeconds) ready for longer than that."""
    if not is_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = ready_since(pod)
    return since is not None and since + min_ready_seconds < now


def next_available(pods: Iterable[Obj], min_ready_seconds: int, now: float) -> float | None:
    """Seconds until the next ready-but-not-yet-available pod becomes available."""
    if not min_ready_seconds:
        return None
    waits = []
    for pod in pods:
        since = ready_since(pod)
        if since is not None and since + min_ready_seconds >= now:
            waits.append(since + min_ready_seconds - now)
    return max(min(waits), 0.0) + 1.0 if waits else None


def _restarts(pod: Obj) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount") or 0) for s in statuses if isinstance(s, dict))


def _cost(pod: Obj) -> int:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST)
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _node(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def to_delete(pods: list[Obj], count: int, *, related: Iterable[Obj] = ()) -> list[Obj]:
    """The `count` least valuable of `pods`, least valuable first (Kubernetes' order):
    not on a node before on one; Pending before Unknown before Running; not ready before
    ready; lower pod-deletion-cost first; more pods of the family on its node first;
    ready for less time first; more restarts first; newer first; then by name.

    `related` are the pods whose crowding counts (the owner's family; `pods` by default).
    """
    if count <= 0:
        return []
    crowd = Counter(_node(p) for p in (list(related) or pods) if _node(p) and is_active(p))

    def key(pod: Obj) -> tuple[Any, ...]:
        meta = pod.get("metadata") or {}
        node = _node(pod)
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        since = ready_since(pod)
        created = parse_time(meta.get("creationTimestamp"))
        return (bool(node), _PHASE_RANK.get(phase, 0), is_ready(pod), _cost(pod),
                -crowd[node] if node else 0,
                # Newer readiness (a larger time) is less valuable: sort it first.
                -(since if since is not None else float("inf")),
                -_restarts(pod),
                -(created if created is not None else float("inf")),
                str(meta.get("name", "")))

    return sorted(pods, key=key)[:count]


def from_template(template: Obj, owner: Obj, owner_ref: Obj) -> Obj:
    """A new pod of `owner`, as the controller asks the server to create it."""
    meta = template.get("metadata") or {}
    owner_name = owner["metadata"]["name"]
    prefix = f"{owner_name}-"
    if names.dns1123_subdomain_errors(prefix + "x"):
        prefix = owner_name
    pod_meta: Obj = {"generateName": prefix, "namespace": owner["metadata"].get("namespace"),
                     "ownerReferences": [owner_ref]}
    for field in ("labels", "annotations", "finalizers"):
        if meta.get(field):
            pod_meta[field] = copy.deepcopy(meta[field])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}
