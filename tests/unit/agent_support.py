"""Pods, a settable clock and a runtime for the agent's unit tests."""

from __future__ import annotations

from typing import Any

from raftkube.agent import simulated

Obj = dict[str, Any]
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pod(name: str = "p", *, uid: str = "", restart: str = "Always",
        exit_after: float | None = None, exit_code: int | None = None,
        containers: tuple[str, ...] = ("c",), init: tuple[str, ...] = (),
        ready_delay: float | None = None, node: str = "n1", **status: Any) -> Obj:
    notes = {}
    if exit_after is not None:
        notes[simulated.EXIT_AFTER] = str(exit_after)
    if exit_code is not None:
        notes[simulated.EXIT_CODE] = str(exit_code)

    def container(n: str) -> Obj:
        c: Obj = {"name": n, "image": f"img-{n}:1"}
        if ready_delay is not None:
            c["readinessProbe"] = {"httpGet": {"port": 80},
                                   "initialDelaySeconds": ready_delay}
        return c

    spec: Obj = {"nodeName": node, "restartPolicy": restart,
                 "containers": [container(n) for n in containers]}
    if init:
        spec["initContainers"] = [{"name": n, "image": "init:1"} for n in init]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": uid or f"uid-{name}-0001",
                         "resourceVersion": "10", "annotations": notes},
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort", **status}}


def runtime(clock: Clock, cidr: str = "10.244.1.0/24") -> simulated.SimulatedRuntime:
    return simulated.SimulatedRuntime(pod_cidr=cidr, host_ip="192.0.2.10", clock=clock)
