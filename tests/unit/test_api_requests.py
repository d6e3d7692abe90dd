"""A pod's effective requests (`api.requests`): Kubernetes' PodRequests, with sidecars."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.agent import admission
from raftkube.api import requests
from raftkube.scheduler import core as sched

pytestmark = pytest.mark.unit

Mi = 2**20


def c(name: str, cpu: str = "", memory: str = "", *, sidecar: bool = False,
      limit_cpu: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "image": "busybox"}
    res: dict[str, Any] = {}
    if cpu or memory:
        res["requests"] = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    if limit_cpu:
        res["limits"] = {"cpu": limit_cpu}
    if res:
        out["resources"] = res
    if sidecar:
        out["restartPolicy"] = "Always"
    return out


def pod(apps: list[dict[str, Any]], inits: list[dict[str, Any]] | None = None,
        overhead: dict[str, str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": apps}
    if inits:
        spec["initContainers"] = inits
    if overhead:
        spec["overhead"] = overhead
    return {"metadata": {"name": "p"}, "spec": spec}


CASES = [
    # (what it shows, pod, cpu millicores, memory bytes)
    ("nothing asked", pod([c("a")]), 0, 0),
    ("app containers add up", pod([c("a", "100m", "64Mi"), c("b", "200m", "32Mi")]),
     300, 96 * Mi),
    ("a limit stands for a missing request", pod([c("a", limit_cpu="1")]), 1000, 0),
    ("rounded up to the millicore", pod([c("a", "0.0001")]), 1, 0),
    ("regular init containers: the largest, alone",
     pod([c("a", "500m")], [c("i1", "900m"), c("i2", "300m")]), 900, 0),
    ("regular init container smaller than the app", pod([c("a", "3")], [c("i", "2")]),
     3000, 0),
    # A sidecar runs beside the app containers: its request adds to theirs.
    ("sidecar adds to the app containers",
     pod([c("a", "100m"), c("b", "200m")], [c("s", "50m", sidecar=True)]), 350, 0),
    # The brief's worked example: sidecar first, then an init container that runs
    # beside it: max(100 + 200 + 50, 500 + 50).
    ("init container after a sidecar runs beside it",
     pod([c("a", "100m"), c("b", "200m")],
         [c("s", "50m", sidecar=True), c("i", "500m")]), 550, 0),
    # The same init container declared before the sidecar runs alone: max(350, 500).
    ("init container before a sidecar runs alone",
     pod([c("a", "100m"), c("b", "200m")],
         [c("i", "500m"), c("s", "50m", sidecar=True)]), 500, 0),
    # KEP-753's shape: only the sidecars declared before an init container count for it.
    # Steps: s1 100; i 300 + 100; s2 (100 + 200); running 50 + 100 + 200.
    ("only the sidecars declared before count",
     pod([c("a", "50m")], [c("s1", "100m", sidecar=True), c("i", "300m"),
                          c("s2", "200m", sidecar=True)]), 400, 0),
    ("memory follows the same rule",
     pod([c("a", memory="100Mi")], [c("s", memory="20Mi", sidecar=True),
                                    c("i", memory="200Mi")]), 0, 220 * Mi),
    ("each resource on its own",
     pod([c("a", "1", "10Mi")], [c("i", "100m", "500Mi")]), 1000, 500 * Mi),
    ("overhead is added on top",
     pod([c("a", "100m")], [c("s", "50m", sidecar=True), c("i", "500m")],
         overhead={"cpu": "250m", "memory": "120Mi"}), 800, 120 * Mi),
    ("a quantity that does not parse counts as nothing", pod([c("a", "lots")]), 0, 0),
]


@pytest.mark.parametrize(("p", "cpu", "memory"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_effective_requests(p: dict[str, Any], cpu: int, memory: int) -> None:
    want = {"cpu": cpu, "memory": memory}
    assert requests.pod_requests(p) == want
    # The scheduler and the node's admission count the same.
    assert sched.pod_requests(p) == want
    assert admission.pod_requests(p) == want


def test_other_resources_on_request() -> None:
    p = pod([c("a")])
    p["spec"]["containers"][0]["resources"] = {"requests": {"ephemeral-storage": "1Gi"}}
    assert requests.pod_requests(p, ("ephemeral-storage",)) == {"ephemeral-storage": 2**30}


def test_amount_names_the_resource() -> None:
    with pytest.raises(ValueError, match="cpu"):
        requests.amount("cpu", None)
