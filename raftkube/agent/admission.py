"""Whether a node takes a pod bound to it: the kubelet's admission of a new pod.

The scheduler only places a pod where it fits, but a pod created with `spec.nodeName`
set skips the scheduler, and the scheduler's view may be stale. So, as Kubernetes'
kubelet does, a node checks each pod once, before it first runs it: the pods it has
admitted and not seen end, plus this one, must fit in its allocatable pods, cpu and
memory (the effective requests of `api.requests`, as the scheduler counts them). A pod
that does not fit is rejected for good: phase Failed, reason `OutOf<resource>`, and
Kubernetes' message (`Pod was rejected: Node didn't have enough resource: cpu,
requested: 1000, used: 3500, capacity: 4000`, cpu in millicores and memory in bytes).

Pure functions; the kubelet keeps which pods it admitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from raftkube.api import requests

Obj = dict[str, Any]
RESOURCES = ("cpu", "memory")


def _amount(resource: str, raw: Any) -> int:
    try:
        return requests.amount(resource, raw)
    except ValueError:
        return 0


def pod_requests(pod: Obj) -> dict[str, int]:
    """What a pod asks for: `api.requests`, the scheduler's numbers too."""
    return requests.pod_requests(pod, RESOURCES)


def capacity(allocatable: Mapping[str, str]) -> dict[str, int]:
    out = {r: _amount(r, allocatable[r]) for r in RESOURCES if r in allocatable}
    if "pods" in allocatable:
        out["pods"] = _amount("pods", allocatable["pods"])
    return out


def rejection(pod: Obj, admitted: Iterable[Obj], allocatable: Mapping[str, str]
              ) -> tuple[str, str] | None:
    """(reason, message) if `pod` does not fit beside the `admitted` ones; else None."""
    limits = capacity(allocatable)
    used = dict.fromkeys(RESOURCES, 0)
    count = 0
    for other in admitted:
        count += 1
        for r, v in pod_requests(other).items():
            used[r] += v
    wanted = {**pod_requests(pod), "pods": 1}
    used["pods"] = count
    for r in ("pods", *RESOURCES):
        if r in limits and wanted[r] and used[r] + wanted[r] > limits[r]:
            return (f"OutOf{r}", f"Pod was rejected: Node didn't have enough resource: {r}, "
                                 f"requested: {wanted[r]}, used: {used[r]}, "
                                 f"capacity: {limits[r]}")
    return None
