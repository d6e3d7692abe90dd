"""What a controller reads off a pod: whether it is active, ready, available or finished
(and when), which node it is for, and which of several to give up first.

Kubernetes keeps these answers in pkg/api/v1/pod (IsPodReady, IsPodAvailable) and
pkg/controller (FilterActivePods, the ActivePods and ActivePodsWithRanks orders); every
workload controller asks the same questions, so they are answered once, here, as pure
functions of the pod and of the time the caller passes in, and tested as tables.

- "Active" is what an owner counts towards what it wants running: not finished
  (Succeeded/Failed) and not being deleted.
- "Available" is ready for longer than minReadySeconds, by the Ready condition's
  lastTransitionTime.
- `removal_order` is the order in which a controller gives pods up, least valuable
  first; a ReplicaSet also weighs pod-deletion-cost and how crowded each pod's node is
  with its family (`to_delete`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from raftkube.api import conditions, metadata
from raftkube.api.timestamps import parse_time

Obj = dict[str, Any]

TERMINAL = ("Succeeded", "Failed")
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# Kubernetes' podPhaseToOrdinal: any other phase (none yet, say) ranks as Pending.
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


# ---- state ----------------------------------------------------------------------------


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
    """When the pod last became ready; None if it is not ready (or never said when)."""
    cond = conditions.get(pod, "Ready")
    if cond is None or cond.get("status") != "True":
        return None
    return parse_time(cond.get("lastTransitionTime"))


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


def next_available(pods: Iterable[Obj], min_ready: float, now: float) -> float | None:
    """Seconds until the next ready-but-not-yet-available pod becomes available."""
    waits = [w for w in (available_in(p, min_ready, now) for p in pods) if w]
    return min(waits) if waits else None


def created(pod: Obj) -> float:
    return parse_time((pod.get("metadata") or {}).get("creationTimestamp")) or 0.0


def restarts(pod: Obj) -> int:
    """Every restart of the pod's containers, init containers included (what a Job with
    restartPolicy OnFailure counts against its backoffLimit)."""
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


# ---- which to give up first -----------------------------------------------------------


def deletion_cost(pod: Obj) -> int:
    return metadata.int_annotation(pod, DELETION_COST)


def _most_restarts(pod: Obj) -> int:
    """The restarts of its most restarted container (Kubernetes' maxContainerRestarts):
    one crash-looping container makes a pod less valuable than a few restarts spread
    over several."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max((int(s.get("restartCount") or 0) for s in statuses if isinstance(s, dict)),
               default=0)


def _bound_node(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def removal_order(pods: Iterable[Obj], *, ranked_among: Iterable[Obj] | None = None
                  ) -> list[Obj]:
    """Pods in the order a controller gives them up, least valuable first (Kubernetes'
    ActivePods): not yet on a node before on one; Pending before Unknown before Running;
    not ready before ready; ready for a shorter time first; a container restarted more
    often first; newer first; then by name. A missing time counts as the newest.

    With `ranked_among` (Kubernetes' ActivePodsWithRanks, as a ReplicaSet uses it), a
    lower pod-deletion-cost goes first, and then a pod whose node holds more active pods
    of `ranked_among` (its family), both right after readiness.
    """
    pods = list(pods)
    ranked = ranked_among is not None
    crowd = Counter(_bound_node(p) for p in (ranked_among or ()) if _bound_node(p)
                    and is_active(p))

    def key(pod: Obj) -> tuple[Any, ...]:
        meta = pod.get("metadata") or {}
        node = _bound_node(pod)
        since = ready_since(pod)
        made = parse_time(meta.get("creationTimestamp"))
        return (bool(node), _PHASE_RANK.get(phase(pod), 0), is_ready(pod),
                deletion_cost(pod) if ranked else 0,
                -crowd[node] if ranked and node else 0,
                # Newer readiness (a larger time) is less valuable: sort it first.
                -(since if since is not None else float("inf")),
                -_most_restarts(pod),
                -(made if made is not None else float("inf")),
                str(meta.get("name", "")))

    return sorted(pods, key=key)


def to_delete(pods: list[Obj], count: int, *, related: Iterable[Obj] = ()) -> list[Obj]:
    """The `count` least valuable of a ReplicaSet's `pods`, least valuable first
    (`removal_order` with ranks). `related` are the pods whose crowding counts (the
    owner's family; `pods` by default)."""
    if count <= 0:
        return []
    return removal_order(pods, ranked_among=list(related) or pods)[:count]
