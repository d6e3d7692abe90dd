"""A pod's quality-of-service class, as Kubernetes derives it from its containers.

Guaranteed: every container limits cpu and memory and requests exactly that (a request
left out defaults to the limit); BestEffort: no container requests or limits anything;
Burstable: the rest. The agent uses it to rank pods under pressure, users read it in
`status.qosClass`.
"""

from __future__ import annotations

from typing import Any

from raftkube.api import quantity

RESOURCES = ("cpu", "memory")


def qos_class(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    containers = [c for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])
                  if isinstance(c, dict)]
    anything = False
    guaranteed = bool(containers)
    for c in containers:
        resources = c.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = {**limits, **(resources.get("requests") or {})}
        if limits or requests:
            anything = True
        for name in RESOURCES:
            if name not in limits or name not in requests:
                guaranteed = False
            elif quantity.parse_quantity(limits[name]) != quantity.parse_quantity(
                    requests[name]):
                guaranteed = False
    if not anything:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
