"""What a pod asks of a node: its effective resource requests, as Kubernetes computes them.

The scheduler places a pod where its requests fit and the node agent admits it by the
same numbers, so there is one rule, here, with no I/O. It is Kubernetes' `PodRequests`
(component-helpers `resource`, KEP-753 for sidecars), which follows the order the
containers run in:

- app containers and sidecars (init containers with `restartPolicy: Always`) run
  together once the pod is initialized: their requests add up;
- a regular init container runs alone, but beside every sidecar declared before it
  (those have started and keep running): while it runs the pod uses its request plus
  theirs;
- the pod asks for the largest of these, resource by resource, plus `spec.overhead`
  (the runtime's own cost of a pod, RuntimeClass overhead) if it is set.

So for app containers of 100m and 200m, a sidecar of 50m declared first and an init
container of 500m after it, the pod asks for max(100 + 200 + 50, 500 + 50) = 550m.

A limit stands for a request left out, as Kubernetes' defaulting makes it. Amounts are
integers: cpu in millicores, anything else in its unit (memory in bytes), rounded up,
as Kubernetes' `MilliValue` and `Value` do. A quantity that does not parse counts as
nothing: validation refuses such pods, and a loop must not stop on a stored one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from raftkube.api import quantity

Obj = dict[str, Any]
RESOURCES = ("cpu", "memory")


def amount(resource: str, raw: Any) -> int:
    """A quantity as an integer: millicores for cpu, its unit otherwise (rounded up).
    ValueError if it does not parse."""
    try:
        q = quantity.parse_quantity(raw)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{resource}: {raw!r} is not a quantity: {e}") from None
    return math.ceil(q * 1000) if resource == "cpu" else math.ceil(q)


def _lenient(resource: str, raw: Any) -> int:
    try:
        return amount(resource, raw)
    except ValueError:
        return 0


def container_requests(container: Any, resources: Iterable[str] = RESOURCES
                       ) -> dict[str, int]:
    """One container's requests (a limit standing for a missing request); 0 for a
    resource it names neither way."""
    c = container if isinstance(container, dict) else {}
    res = c.get("resources") or {}
    requests = res.get("requests") or {}
    limits = res.get("limits") or {}
    out = {}
    for r in resources:
        raw = requests.get(r, limits.get(r))
        out[r] = _lenient(r, raw) if raw is not None else 0
    return out


def is_sidecar(container: Any) -> bool:
    """An init container with `restartPolicy: Always` (KEP-753): it keeps running."""
    return isinstance(container, dict) and container.get("restartPolicy") == "Always"


def pod_requests(pod: Obj, resources: Iterable[str] = RESOURCES) -> dict[str, int]:
    """The pod's effective requests (see the module's docstring), resource by resource."""
    names = tuple(resources)
    spec = pod.get("spec") or {}
    running = dict.fromkeys(names, 0)  # app containers and sidecars, all running at once
    for c in spec.get("containers") or []:
        for r, v in container_requests(c, names).items():
            running[r] += v
    sidecars = dict.fromkeys(names, 0)  # the sidecars declared so far
    initializing = dict.fromkeys(names, 0)  # the most any step of initialization needs
    for c in spec.get("initContainers") or []:
        own = container_requests(c, names)
        for r in names:
            if is_sidecar(c):
                running[r] += own[r]
                sidecars[r] += own[r]
                step = sidecars[r]
            else:
                step = own[r] + sidecars[r]
            initializing[r] = max(initializing[r], step)
    overhead = spec.get("overhead") or {}
    return {r: max(running[r], initializing[r]) +
            (_lenient(r, overhead[r]) if r in overhead else 0) for r in names}
