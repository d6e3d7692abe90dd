"""What a controller reads off a pod: whether it is active, ready, available or finished
(and when), which node it is for, and which of several to give up first.

Kubernetes keeps these answers in pkg/api/v1/pod (IsPodReady, IsPodAvailable) and
pkg/controller (FilterActivePods, the ActivePods ordering); every workload controller
asks the same questions, so they are answered once, here, as pure functions of the pod
and of the time the caller passes in.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from raftkube.api import conditions
from raftkube.api.timestamps import parse_time

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_terminal(pod: Obj) -> bool:
    return phase(pod) in TERMINAL


def is_deleting(pod: Obj) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """Neither finished nor on its way out: what a controller counts as running for it
    (Kubernetes' FilterActivePods)."""
    return not is_terminal(pod) and not is_deleting(pod)


def is_ready(pod: Obj) -> bool:
    return conditions.is_true(pod, "Ready")


def ready_since(pod: Obj) -> float | None:
    c = conditions.get(pod, "Ready")
    if c is None or c.get("status") != "True":
        return None
    return parse_time(c.get("lastTransitionTime"))


def available_in(pod: Obj, min_ready: float, now: float) -> float | None:
    """Seconds until the pod counts as available (0 if it does now), or None while it
    is not ready: ready, and for `min_ready` seconds (Kubernetes' IsPodAvailable)."""
    if not is_ready(pod):
        return None
    if min_ready <= 0:
        return 0.0
    since = ready_since(pod)
    if since is None:
        return None
    # Kubernetes asks that the transition be strictly before now - minReadySeconds.
    return 0.0 if since + min_ready < now else since + min_ready - now + 1e-3


def is_available(pod: Obj, min_ready: float, now: float) -> bool:
    return available_in(pod, min_ready, now) == 0.0


def created(pod: Obj) -> float:
    return parse_time((pod.get("metadata") or {}).get("creationTimestamp")) or 0.0


def restarts(pod: Obj) -> int:
    status = pod.get("status") or {}
    return sum(int(s.get("restartCount") or 0)
               for s in (status.get("initContainerStatuses") or [])
               + (status.get("containerStatuses") or []) if isinstance(s, dict))


def finished_at(pod: Obj) -> float:
    """When a finished pod finished: its last container's end, else the time it turned
    not ready, else when it was deleted, else when it was made (Kubernetes' job
    controller reads it the same way, for the back-off after failures)."""
    status = pod.get("status") or {}
    ends: list[float] = []
    for s in status.get("containerStatuses") or []:
        end = parse_time((((s or {}).get("state") or {}).get("terminated") or {})
                         .get("finishedAt"))
        if end is None:
            ends = []
            break
        ends.append(end)
    if ends:
        return max(ends)
    ready = conditions.get(pod, "Ready")
    if ready is not None and ready.get("status") == "False":
        turned = parse_time(ready.get("lastTransitionTime"))
        if turned is not None:
            return turned
    meta = pod.get("metadata") or {}
    deleted = parse_time(meta.get("deletionTimestamp"))
    if deleted is not None:
        return deleted - float(meta.get("deletionGracePeriodSeconds") or 0)
    return created(pod)


def target_node(pod: Obj) -> str:
    """The node a pod is on, or, not yet bound, the one its required node affinity names
    with `matchFields` on `metadata.name` (how DaemonSet pods name theirs)."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    for term in required.get("nodeSelectorTerms") or []:
        for f in (term or {}).get("matchFields") or []:
            values = (f or {}).get("values") or []
            if f.get("key") == "metadata.name" and f.get("operator") == "In" \
                    and len(values) == 1:
                return str(values[0])
    return ""


def _removal_key(pod: Obj) -> tuple[Any, ...]:
    ready = is_ready(pod)
    return (bool((pod.get("spec") or {}).get("nodeName")),
            _PHASE_RANK.get(phase(pod), 1),
            ready,
            -(ready_since(pod) or 0.0) if ready else 0.0,
            -restarts(pod),
            -created(pod))


def removal_order(pods: Iterable[Obj]) -> list[Obj]:
    """Pods in the order a controller gives them up (Kubernetes' ActivePods): not yet on
    a node before on one, pending before running, not ready before ready, ready for a
    shorter time first, more restarts first, newer first."""
    return sorted(pods, key=_removal_key)
