"""`status.conditions` as Kubernetes keeps them: one entry per type, with the time of the
last transition kept while the status stays the same."""

from __future__ import annotations

from typing import Any

from raftkube.api.timestamps import rfc3339

Obj = dict[str, Any]


def get(obj: Obj, type_: str) -> Obj | None:
    """The condition of `type_` in `obj.status.conditions`, if there is one."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == type_:
            return c
    return None


def is_true(obj: Obj, type_: str) -> bool:
    c = get(obj, type_)
    return c is not None and c.get("status") == "True"


def put(status: Obj, new: Obj, now: float) -> None:
    """Set `new` (type, status, reason, message) in `status["conditions"]`: the
    lastTransitionTime moves only when the status changes; a condition that carries a
    lastUpdateTime (Deployments') gets `now` whenever it changes at all."""
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    stamp = rfc3339(now)
    for i, old in enumerate(conditions):
        if old.get("type") != new["type"]:
            continue
        merged = {**old, **new}
        if old.get("status") != new.get("status") or "lastTransitionTime" not in old:
            merged["lastTransitionTime"] = stamp
        if "lastUpdateTime" in merged and merged != old:
            merged["lastUpdateTime"] = stamp
        conditions[i] = merged
        break
    else:
        conditions.append({**new, "lastTransitionTime": stamp})
    status["conditions"] = conditions
