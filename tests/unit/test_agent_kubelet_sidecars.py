"""The kubelet with sidecars (KEP-753) over the simulated runtime: a sidecar's startup
probe holds what comes after it, a deleted pod stops its app containers first and its
sidecars last in reverse order within the grace period; and two review leftovers: the
configuration errors told once per container, and a container killed for its probe
restarted with the pod's ConfigMaps read afresh."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from raftkube.agent import runtime as rt
from raftkube.api import kinds
from tests.unit.agent_support import pod
from tests.unit.test_agent_kubelet import Setup, deleting, written
from tests.unit.test_agent_kubelet_config import Setup as ConfigSetup
from tests.unit.test_agent_kubelet_config import configured, ns, status_of
from tests.unit.test_agent_podenv import cm

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def sidecars(p: Obj, *names: str) -> Obj:
    for c in p["spec"]["initContainers"]:
        if c["name"] in names:
            c["restartPolicy"] = "Always"
    return p


def condition(status: Obj, kind: str) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == kind)


async def test_the_app_waits_for_a_sidecars_startup_probe() -> None:
    p = sidecars(pod(init=("s",), containers=("a",)), "s")
    p["spec"]["initContainers"][0]["startupProbe"] = {
        "exec": {"command": ["true"]}, "initialDelaySeconds": 3}
    s = Setup(p)
    status = written(await s.run())
    (side,) = status["initContainerStatuses"]
    assert "running" in side["state"] and side["started"] is False
    assert side["ready"] is False
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == "PodInitializing"
    assert condition(status, "Initialized") == "False"
    assert s.runtime.starts == 1  # the sidecar only
    assert "ns/p" in s.kubelet.queue._waiting  # looked at again when the probe is due
    s.clock.advance(3)
    status = written(await s.run())
    assert status["initContainerStatuses"][0]["started"] is True
    assert condition(status, "Initialized") == "True"
    assert "running" in status["containerStatuses"][0]["state"]
    assert condition(status, "Ready") == "True"
    assert s.runtime.starts == 2


async def test_a_sidecars_readiness_holds_the_pods_ready_condition() -> None:
    p = sidecars(pod(init=("s",), containers=("a",)), "s")
    p["spec"]["initContainers"][0]["readinessProbe"] = {
        "exec": {"command": ["true"]}, "initialDelaySeconds": 5}
    s = Setup(p)
    status = written(await s.run())
    assert "running" in status["containerStatuses"][0]["state"]  # it has started
    assert condition(status, "ContainersReady") == "False"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "containers with unready status: [s]"
    s.clock.advance(5)
    status = written(await s.run())
    assert condition(status, "Ready") == "True"
    assert status["initContainerStatuses"][0]["ready"] is True


class Stops:
    """Records the order of the runtime's stops, and spends `took` seconds of the fake
    clock in app container a's stop (its SIGTERM handling)."""

    def __init__(self, s: Setup, took: float) -> None:
        self.s = s
        self.took = took
        self.calls: list[tuple[str, float]] = []
        self._stop = s.runtime.stop_container
        self._remove = s.runtime.remove_pod
        s.runtime.stop_container = self.stop  # type: ignore[method-assign]
        s.runtime.remove_pod = self.remove  # type: ignore[method-assign]

    async def stop(self, pod_uid: str, name: str, *, grace: float) -> None:
        self.calls.append((name, grace))
        if name == "a":
            self.s.clock.advance(self.took)
        await self._stop(pod_uid, name, grace=grace)

    async def remove(self, pod_uid: str, *, grace: float) -> None:
        self.calls.append(("remove", grace))
        await self._remove(pod_uid, grace=grace)


async def test_a_deleted_pod_stops_its_sidecars_last_in_reverse_order() -> None:
    """KEP-753: the app containers (and a regular init container, were one running) get
    SIGTERM first, together; each sidecar only after all of them have exited, the last
    declared first; all within the pod's grace period (30 s here)."""
    p = sidecars(pod(init=("s1", "i", "s2"), containers=("a", "b")), "s1", "s2")
    s = Setup(p)
    await s.run()
    running = {c.name for st in await s.runtime.pods() for c in st.containers
               if c.state == rt.RUNNING}
    assert running == {"s1", "s2", "a", "b"}
    stops = Stops(s, took=10)
    s.f.recorded_events()
    s.cache(deleting() | {"spec": p["spec"]})
    assert await s.run() == []
    await s.kubelet._terminating["uid-p-0001"]
    # a and b start together with the whole 30 s; a took 10 s of it.
    assert sorted(stops.calls[:2]) == [("a", 30), ("b", 30)]
    assert stops.calls[2:] == [("s2", 20), ("s1", 20), ("remove", 20)]
    assert [m for _, r, m in s.f.recorded_events() if r == "Killing"][2:] == \
        ["Stopping container s2", "Stopping container s1"]
    written_ = await s.run()
    assert [(a.verb, a.body["grace"]) for a in written_] == [("delete", 0)]


async def test_sidecars_past_the_deadline_get_no_grace() -> None:
    p = sidecars(pod(init=("s",), containers=("a",)), "s")
    s = Setup(p)
    await s.run()
    stops = Stops(s, took=45)  # the app outlived the grace period: SIGKILLed at 30 s
    s.cache(deleting() | {"spec": p["spec"]})
    await s.run()
    await s.kubelet._terminating["uid-p-0001"]
    assert stops.calls == [("a", 30), ("s", 0), ("remove", 0)]


async def test_each_containers_config_error_is_told_once(tmp_path: Path) -> None:
    """Two containers with the same missing ConfigMap are each told; a third one's
    restarts do not tell theirs again."""
    p = configured(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg",
                                                                         "key": "k"}}}])
    c = p["spec"]["containers"][0]
    p["spec"]["containers"] = [{**c, "name": "one"}, {**c, "name": "two"},
                               {"name": "ok", "image": "img-ok:1"}]
    p["metadata"]["annotations"] = {"raftkube.io/sim-exit-after": "1",
                                    "raftkube.io/sim-exit-code": "1"}
    s = ConfigSetup(p, tmp_path)
    status = status_of(await s.run())
    waits = {c["name"]: c["state"].get("waiting", {}).get("reason")
             for c in status["containerStatuses"]}
    assert waits == {"one": "CreateContainerConfigError",
                     "two": "CreateContainerConfigError", "ok": None}
    failed = [m for _, r, m in s.f.recorded_events() if r == "Failed"]
    assert failed == ['Error: configmap "cfg" not found'] * 2
    for _ in range(2):  # `ok` exits and is restarted: the others are not told again
        s.clock.advance(1.5)
        await s.run()
    assert s.runtime.starts >= 2
    assert [r for _, r, _ in s.f.recorded_events()].count("Failed") == 0


async def test_a_container_killed_for_its_probe_restarts_with_fresh_config(
        tmp_path: Path) -> None:
    """OnFailure, and the container exited 0 when it was killed: only `killed` says it
    restarts, and the sync that restarts it reads the pod's ConfigMaps afresh."""
    p = configured(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg",
                                                                         "key": "k"}}}])
    p["spec"]["restartPolicy"] = "OnFailure"
    s = ConfigSetup(p, tmp_path, (kinds.CONFIGMAP, ns(cm("cfg", k="old"))))
    assert status_of(await s.run())["phase"] == "Running"
    uid = p["metadata"]["uid"]
    s.put(kinds.CONFIGMAP, {**ns(cm("cfg", k="new")),
                            "metadata": {"name": "cfg", "namespace": "ns",
                                         "resourceVersion": "7"}})
    await s.runtime.stop_container(uid, "c", grace=0)  # as `_kill_unhealthy` does
    (state,) = await s.runtime.pods()
    s.kubelet._killed[uid] = {"c": state.latest("c").attempt}  # type: ignore[union-attr]
    await s.run()
    request = s.runtime.requests["c"]
    assert request is not None and dict(request.env)["X"] == "new"
    (state,) = await s.runtime.pods()
    assert state.latest("c").attempt == 1  # type: ignore[union-attr]


async def test_when_the_app_ends_its_sidecars_stop_last_declared_first() -> None:
    p = sidecars(pod(init=("s1", "s2"), containers=("a",), restart="Never",
                     exit_after=2, exit_code=0), "s1", "s2")
    p["spec"]["terminationGracePeriodSeconds"] = 30
    s = Setup(p)
    await s.run()
    stops = Stops(s, took=0)
    s.clock.advance(2)  # the app exits 0: the pod has ended
    status = written(await s.run())
    # They stop in a task of the kubelet's, not in the worker's sync (which returned);
    # meanwhile the pod has not ended: its status would never be written again.
    assert status["phase"] == "Running"
    winding = list(s.kubelet._winding.values())
    assert len(winding) == 1
    await asyncio.gather(*winding)
    assert stops.calls == [("s2", 30), ("s1", 30)]
    assert not s.kubelet._winding
    s.cache({**p, "status": status})
    status = written(await s.run())
    assert status["phase"] == "Succeeded"
