"""Taints and tolerations as Kubernetes matches them, for the loops that act on them.

A node's `NoExecute` taint evicts every pod on it that does not tolerate it, at once, or
after the smallest `tolerationSeconds` among the tolerations that match. Kubernetes gives
every pod, at admission, tolerations of the node controller's own two taints
(`not-ready`, `unreachable`) for 300 s unless it has its own; raftkube applies the same
rule where the decision is made (`with_defaults`), with the seconds a flag of `rk
master`, so that the stored pod is what its author wrote and the flag can change.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

Obj = dict[str, Any]

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
NO_EXECUTE = "NoExecute"
NO_SCHEDULE = "NoSchedule"


def tolerates(toleration: Obj, taint: Obj) -> bool:
    """Kubernetes' ToleratesTaint: an empty effect or key matches any; `Exists` ignores
    the value; `Equal` (the default operator) compares it."""
    effect, key = toleration.get("effect") or "", toleration.get("key") or ""
    if effect and effect != taint.get("effect"):
        return False
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    return operator == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def matching(taints: Iterable[Obj], tolerations: Sequence[Obj]) -> tuple[bool, list[Obj]]:
    """(every taint tolerated, the first toleration that matched each)."""
    used: list[Obj] = []
    for taint in taints:
        match = next((t for t in tolerations if tolerates(t, taint)), None)
        if match is None:
            return False, []
        used.append(match)
    return True, used


def toleration_seconds(used: Iterable[Obj]) -> float | None:
    """How long the matched tolerations allow: the smallest `tolerationSeconds`, 0 when
    one is 0 or negative, None (forever) when none sets it."""
    least: float | None = None
    for t in used:
        seconds = t.get("tolerationSeconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            if seconds <= 0:
                return 0.0
            least = float(seconds) if least is None else min(least, float(seconds))
    return least


def with_defaults(tolerations: Any, *, not_ready: float, unreachable: float) -> list[Obj]:
    """The pod's tolerations plus Kubernetes' default ones (DefaultTolerationSeconds) for
    each node-controller taint that none of them already matches by key and effect."""
    own = [t for t in tolerations or [] if isinstance(t, dict)]
    out = list(own)
    for key, seconds in ((NOT_READY, not_ready), (UNREACHABLE, unreachable)):
        if not any((t.get("key") or key) == key and (t.get("effect") or NO_EXECUTE) == NO_EXECUTE
                   for t in own):
            out.append({"key": key, "operator": "Exists", "effect": NO_EXECUTE,
                        "tolerationSeconds": int(seconds)})
    return out


def no_execute(node: Obj) -> list[Obj]:
    """The node's NoExecute taints."""
    return [t for t in ((node.get("spec") or {}).get("taints") or [])
            if isinstance(t, dict) and t.get("effect") == NO_EXECUTE]


def has(node: Obj, key: str, effect: str = "") -> bool:
    """Whether the node has a taint of `key` (and `effect`, if given)."""
    return any(isinstance(t, dict) and t.get("key") == key
               and (not effect or t.get("effect") == effect)
               for t in (node.get("spec") or {}).get("taints") or [])
