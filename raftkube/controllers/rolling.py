"""A Deployment's arithmetic: how big each of its ReplicaSets should be next.

Pure functions of the Deployment and its ReplicaSets as read (Kubernetes'
deployment/util, rolling.go, recreate.go and sync.go's `scale`), so that every rule can
be tested as a table or a property:

- `fenceposts`: maxSurge rounds up, maxUnavailable down, and both 0 means 1 unavailable;
- `new_replicas`: how far the new ReplicaSet may grow (never past replicas + maxSurge);
- `old_sizes`: how far the old ones may shrink, unhealthy pods first, never below
  replicas - maxUnavailable available pods;
- `proportional_sizes`: a resize in the middle of a rollout (or while paused) shared
  among the active ReplicaSets in proportion to their size, the remainder to the largest.

Two readings are more careful than Kubernetes', because a ReplicaSet's status lags its
spec: the pods a ReplicaSet has are the larger of its spec and its last reported count
(one that was scaled down still has its pods until its controller deletes them), and
its available pods are at most its spec (scaled down, it deletes unavailable pods first,
so min(available, spec) remain). Kubernetes counts spec alone, which lets pods overshoot
replicas + maxSurge for a moment while an old ReplicaSet's pods are still going.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from raftkube.api import rollout
from raftkube.api.timestamps import parse_time

Obj = dict[str, Any]


# ---- reading ----------------------------------------------------------------------------

def replicas(obj: Obj | None) -> int:
    """`spec.replicas` (1 when absent, as the server defaults it)."""
    if obj is None:
        return 0
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def reported(obj: Obj | None, field: str) -> int:
    """A number from `status` (0 when absent)."""
    if obj is None:
        return 0
    return int((obj.get("status") or {}).get(field) or 0)


def pods_of(rs: Obj) -> int:
    """The pods a ReplicaSet may have now: what it should have or what it last had."""
    return max(replicas(rs), reported(rs, "replicas"))


def available_of(rs: Obj | None) -> int:
    """The available pods a ReplicaSet keeps: it deletes unavailable ones first."""
    return min(reported(rs, "availableReplicas"), replicas(rs)) if rs is not None else 0


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _annotation_int(obj: Obj, key: str) -> int | None:
    value = ((obj.get("metadata") or {}).get("annotations") or {}).get(key)
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def desired_annotation(rs: Obj) -> int | None:
    return _annotation_int(rs, rollout.DESIRED_REPLICAS)


def max_annotation(rs: Obj) -> int | None:
    return _annotation_int(rs, rollout.MAX_REPLICAS)


def created(obj: Obj) -> float:
    return parse_time((obj.get("metadata") or {}).get("creationTimestamp")) or 0.0


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    """Oldest first; the name breaks ties."""
    return sorted(rss, key=lambda rs: (created(rs), name_of(rs)))


def active(rss: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


# ---- the strategy -----------------------------------------------------------------------

def is_rolling(d: Obj) -> bool:
    strategy = (d.get("spec") or {}).get("strategy") or {}
    return bool(strategy.get("type", "RollingUpdate") == "RollingUpdate")


def int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """`3` is 3; `"25%"` is 25% of `total`, rounded up or down."""
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


def fenceposts(d: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) in pods; 0 and 0 would never move, so that is 0 and 1."""
    if not is_rolling(d):
        return 0, 0
    rolling = ((d.get("spec") or {}).get("strategy") or {}).get("rollingUpdate") or {}
    want = replicas(d)
    surge = int_or_percent(rolling.get("maxSurge", "25%"), want, round_up=True)
    unavailable = int_or_percent(rolling.get("maxUnavailable", "25%"), want, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: Obj) -> int:
    return fenceposts(d)[0]


def max_unavailable(d: Obj) -> int:
    if not is_rolling(d) or replicas(d) == 0:
        return 0
    return min(fenceposts(d)[1], replicas(d))


# ---- which ReplicaSet is new ------------------------------------------------------------

def template_of(obj: Obj) -> Obj:
    return (obj.get("spec") or {}).get("template") or {}


def find_new(d: Obj, rss: Iterable[Obj]) -> Obj | None:
    """The oldest ReplicaSet whose template is the Deployment's (hash label aside)."""
    for rs in by_creation(rss):
        if rollout.equal_ignore_hash(template_of(rs), template_of(d)):
            return rs
    return None


def max_revision(rss: Iterable[Obj]) -> int:
    return max((rollout.revision_of(rs) for rs in rss), default=0)


# ---- rolling update ---------------------------------------------------------------------

def new_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """The new ReplicaSet's next size (Kubernetes' NewRSNewReplicas)."""
    if not is_rolling(d):
        return replicas(d)
    current = sum(pods_of(rs) for rs in all_rss)
    most = replicas(d) + max_surge(d)
    if current >= most:
        return replicas(new_rs)
    grow = min(most - current, replicas(d) - replicas(new_rs))
    return replicas(new_rs) + max(grow, 0)


def old_sizes(d: Obj, new_rs: Obj | None, old_rss: list[Obj]) -> dict[str, int]:
    """The old ReplicaSets to shrink, and to what: first the pods that are not available
    (oldest ReplicaSet first, within what the availability budget allows), then available
    ones while more than replicas - maxUnavailable stay available. Only changes."""
    old_active = by_creation(active(old_rss))
    if not old_active:
        return {}
    all_pods = sum(replicas(rs) for rs in old_rss) + replicas(new_rs)
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = replicas(new_rs) - available_of(new_rs)
    budget = all_pods - min_available - new_unavailable
    if budget <= 0:
        return {}
    sizes = {name_of(rs): replicas(rs) for rs in old_active}
    cleaned = 0
    for rs in old_active:
        if cleaned >= budget:
            break
        unhealthy = sizes[name_of(rs)] - available_of(rs)
        if unhealthy <= 0:
            continue
        cut = min(budget - cleaned, unhealthy)
        sizes[name_of(rs)] -= cut
        cleaned += cut
    available = sum(available_of(rs) for rs in old_rss) + available_of(new_rs)
    if available > min_available:
        allowed, cut_so_far = available - min_available, 0
        for rs in old_active:
            if cut_so_far >= allowed:
                break
            cut = min(sizes[name_of(rs)], allowed - cut_so_far)
            sizes[name_of(rs)] -= cut
            cut_so_far += cut
    return {name_of(rs): sizes[name_of(rs)] for rs in old_active
            if sizes[name_of(rs)] != replicas(rs)}


# ---- scaling (paused, or resized mid-rollout) ------------------------------------------

def is_saturated(d: Obj, rs: Obj | None) -> bool:
    """The ReplicaSet is all the Deployment wants: sized, annotated and available."""
    if rs is None:
        return False
    want = replicas(d)
    return desired_annotation(rs) == want and replicas(rs) == want \
        and reported(rs, "availableReplicas") == want


def active_or_latest(new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
    """The one ReplicaSet with pods (or, with none, the new or the newest): a resize goes
    all to it. None when several have pods."""
    olds = sorted(old_rss, key=lambda rs: (created(rs), name_of(rs)), reverse=True)
    live = active(olds + [new_rs])
    if len(live) == 1:
        return live[0]
    if not live:
        return new_rs if new_rs is not None else (olds[0] if olds else None)
    return None


def _fraction(rs: Obj, d: Obj) -> int:
    if replicas(d) == 0:
        return -replicas(rs)
    room = replicas(d) + max_surge(d)
    before = max_annotation(rs)
    if before is None:
        before = reported(d, "replicas")
    if before == 0:
        return 0
    # Go's math.Round: halves away from zero (the sizes here are never negative).
    return math.floor(replicas(rs) * room / before + 0.5) - replicas(rs)


def proportional_sizes(d: Obj, rss: list[Obj]) -> dict[str, int]:
    """New sizes of the active ReplicaSets when the Deployment's size changed
    (Kubernetes' `scale` for a rolling update with several active ReplicaSets)."""
    live = active(rss)
    room = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = room - sum(replicas(rs) for rs in live)
    if to_add > 0:  # larger first; on a tie the newer grows first
        live.sort(key=lambda rs: (-replicas(rs), -created(rs), name_of(rs)))
    else:  # larger first; on a tie the older shrinks first
        live.sort(key=lambda rs: (-replicas(rs), created(rs), name_of(rs)))
    sizes: dict[str, int] = {}
    added = 0
    for rs in live:
        share = 0
        if to_add != 0 and to_add != added:
            fraction = _fraction(rs, d)
            allowed = to_add - added
            share = min(fraction, allowed) if to_add > 0 else max(fraction, allowed)
        sizes[name_of(rs)] = replicas(rs) + share
        added += share
    if to_add != 0 and live:
        first = name_of(live[0])
        sizes[first] = max(sizes[first] + to_add - added, 0)
    return sizes


# ---- recreate ---------------------------------------------------------------------------

def old_pods_running(old_rss: list[Obj], old_pods: Iterable[Obj]) -> bool:
    """Whether any pod of an old ReplicaSet may still run (terminating ones included)."""
    if sum(reported(rs, "replicas") for rs in old_rss) > 0:
        return True
    return any((p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
               for p in old_pods)
