"""A Deployment's status and conditions, as Kubernetes computes them (sync.go's
calculateStatus, progress.go's syncRolloutStatus, deployment_util's conditions).

- The counts add up its ReplicaSets' statuses: replicas, updatedReplicas (the new one's),
  readyReplicas, availableReplicas, and unavailableReplicas (wanted minus available).
- `Available` is True while at least replicas - maxUnavailable pods are available.
- `Progressing` says where a rollout is: True with NewReplicaSetCreated,
  FoundNewReplicaSet, ReplicaSetUpdated (each time it moves, which restarts the
  deadline) or NewReplicaSetAvailable (done); Unknown with DeploymentPaused or
  DeploymentResumed; False with ProgressDeadlineExceeded once progressDeadlineSeconds
  pass with no progress, or FailedRSCreate.
- `ReplicaFailure` mirrors a ReplicaSet's (the new one's first).

A condition changes only when its status or reason does (Kubernetes' SetDeploymentCondition),
and its lastTransitionTime only when its status does; lastUpdateTime is when it was set.
"""

from __future__ import annotations

import copy
from typing import Any

from raftkube.api.timestamps import parse_time, rfc3339
from raftkube.controllers import rolling

Obj = dict[str, Any]

PROGRESSING = "Progressing"
AVAILABLE = "Available"
REPLICA_FAILURE = "ReplicaFailure"
NO_DEADLINE = 2**31 - 1  # Kubernetes' "never": math.MaxInt32

# Reasons, in Kubernetes' words.
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
FAILED_RS_CREATE = "FailedRSCreate"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
MINIMUM_AVAILABLE = "MinimumReplicasAvailable"
MINIMUM_UNAVAILABLE = "MinimumReplicasUnavailable"


def condition(type_: str, status: str, reason: str, message: str, now: float) -> Obj:
    stamp = rfc3339(now)
    return {"type": type_, "status": status, "lastUpdateTime": stamp,
            "lastTransitionTime": stamp, "reason": reason, "message": message}


def get_condition(status: Obj, type_: str) -> Obj | None:
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def set_condition(status: Obj, new: Obj) -> None:
    """Put `new` in `status`, unless one of its type has its status and reason already."""
    old = get_condition(status, new["type"])
    if old is not None and old.get("status") == new["status"] \
            and old.get("reason") == new["reason"]:
        return
    new = dict(new)
    if old is not None and old.get("status") == new["status"]:
        new["lastTransitionTime"] = old.get("lastTransitionTime", new["lastTransitionTime"])
    status["conditions"] = [c for c in status.get("conditions") or []
                            if c.get("type") != new["type"]] + [new]


def remove_condition(status: Obj, type_: str) -> None:
    kept = [c for c in status.get("conditions") or [] if c.get("type") != type_]
    if kept:
        status["conditions"] = kept
    else:
        status.pop("conditions", None)


def has_deadline(d: Obj) -> bool:
    deadline = (d.get("spec") or {}).get("progressDeadlineSeconds")
    return deadline is not None and int(deadline) != NO_DEADLINE


def calculate_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: float) -> Obj:
    available = sum(rolling.reported(rs, "availableReplicas") for rs in all_rss)
    total = sum(rolling.replicas(rs) for rs in all_rss)
    old = d.get("status") or {}
    status: Obj = {
        "observedGeneration": int(d["metadata"].get("generation") or 0),
        "replicas": sum(rolling.reported(rs, "replicas") for rs in all_rss),
        "updatedReplicas": rolling.reported(new_rs, "replicas"),
        "readyReplicas": sum(rolling.reported(rs, "readyReplicas") for rs in all_rss),
        "availableReplicas": available,
        "unavailableReplicas": max(total - available, 0),
    }
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = copy.deepcopy(old["conditions"])
    if available >= rolling.replicas(d) - rolling.max_unavailable(d):
        set_condition(status, condition(AVAILABLE, "True", MINIMUM_AVAILABLE,
                                        "Deployment has minimum availability.", now))
    else:
        set_condition(status, condition(AVAILABLE, "False", MINIMUM_UNAVAILABLE,
                                        "Deployment does not have minimum availability.", now))
    return status


def _n(status: Obj, field: str) -> int:
    return int(status.get(field) or 0)


def complete(d: Obj, status: Obj) -> bool:
    """Every wanted pod is updated and available, and nothing else is left."""
    want = rolling.replicas(d)
    return (_n(status, "updatedReplicas") == want and _n(status, "replicas") == want
            and _n(status, "availableReplicas") == want
            and _n(status, "observedGeneration") >= int(d["metadata"].get("generation") or 0))


def progressing(d: Obj, new: Obj) -> bool:
    """Something moved since the status the Deployment has."""
    old = d.get("status") or {}
    old_olds = _n(old, "replicas") - _n(old, "updatedReplicas")
    new_olds = _n(new, "replicas") - _n(new, "updatedReplicas")
    return (_n(new, "updatedReplicas") > _n(old, "updatedReplicas")
            or new_olds < old_olds
            or _n(new, "readyReplicas") > _n(old, "readyReplicas")
            or _n(new, "availableReplicas") > _n(old, "availableReplicas"))


def timed_out(d: Obj, status: Obj, now: float) -> bool:
    if not has_deadline(d):
        return False
    cond = get_condition(status, PROGRESSING)
    if cond is None or cond.get("reason") == NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == TIMED_OUT:
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    deadline = int(d["spec"]["progressDeadlineSeconds"])
    return since is not None and since + deadline < now


def _subject(d: Obj, new_rs: Obj | None) -> str:
    """What a Progressing message is about: the new ReplicaSet, or the Deployment."""
    if new_rs is not None:
        return f'ReplicaSet "{new_rs["metadata"]["name"]}"'
    return f'Deployment "{d["metadata"]["name"]}"'


def rollout_status(d: Obj, all_rss: list[Obj], new_rs: Obj | None, now: float) -> Obj:
    """The status a rollout step leaves: counts, Available, Progressing, ReplicaFailure."""
    status = calculate_status(d, all_rss, new_rs, now)
    if not has_deadline(d):
        remove_condition(status, PROGRESSING)
    current = get_condition(d.get("status") or {}, PROGRESSING)
    done = status["replicas"] == status["updatedReplicas"] and current is not None \
        and current.get("reason") == NEW_RS_AVAILABLE
    if has_deadline(d) and not done:
        if complete(d, status):
            set_condition(status, condition(PROGRESSING, "True", NEW_RS_AVAILABLE,
                                            f"{_subject(d, new_rs)} has successfully "
                                            "progressed.", now))
        elif progressing(d, status):
            cond = condition(PROGRESSING, "True", RS_UPDATED,
                             f"{_subject(d, new_rs)} is progressing.", now)
            # Progress restarts the deadline: lastUpdateTime moves even when the reason
            # stays; lastTransitionTime stays while the status does.
            if current is not None and current.get("status") == "True":
                cond["lastTransitionTime"] = current.get("lastTransitionTime",
                                                         cond["lastTransitionTime"])
            remove_condition(status, PROGRESSING)
            set_condition(status, cond)
        elif timed_out(d, status, now):
            set_condition(status, condition(PROGRESSING, "False", TIMED_OUT,
                                            f"{_subject(d, new_rs)} has timed out "
                                            "progressing.", now))
    failures = replica_failures(all_rss, new_rs)
    if failures:
        set_condition(status, failures[0])
    else:
        remove_condition(status, REPLICA_FAILURE)
    return status


def replica_failures(all_rss: list[Obj], new_rs: Obj | None) -> list[Obj]:
    """ReplicaFailure conditions of the ReplicaSets, the new one's first."""
    def of(rs: Obj) -> list[Obj]:
        out = []
        for c in (rs.get("status") or {}).get("conditions") or []:
            if isinstance(c, dict) and c.get("type") == REPLICA_FAILURE:
                stamp = c.get("lastTransitionTime", "")
                out.append({"type": REPLICA_FAILURE, "status": c.get("status", "True"),
                            "lastUpdateTime": stamp, "lastTransitionTime": stamp,
                            "reason": c.get("reason", ""), "message": c.get("message", "")})
        return out
    if new_rs is not None and of(new_rs):
        return of(new_rs)
    return [c for rs in all_rss for c in of(rs)]


def recheck_after(d: Obj, status: Obj, now: float) -> float | None:
    """When to look again for a deadline passing with no event to say so; None if there
    is nothing to wait for (no deadline, done, or timed out already)."""
    current = get_condition(d.get("status") or {}, PROGRESSING)
    if not has_deadline(d) or current is None or complete(d, status) \
            or current.get("reason") == TIMED_OUT:
        return None
    since = parse_time(current.get("lastUpdateTime"))
    if since is None:
        return None
    after = since + int(d["spec"]["progressDeadlineSeconds"]) - now
    # A second late rather than a moment early: `timed_out` asks for the deadline to
    # have passed, and a look before it would find nothing to do and ask again at once
    # (Kubernetes' requeueStuckDeployment enqueues at once under a second: a busy loop).
    return max(after, 0.0) + 1.0
