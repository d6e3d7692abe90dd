"""The kubelet's reconcile builds each container's request from the API: env, envFrom,
service variables, fieldRefs with the sandbox's IP, volumes on the host; a missing
ConfigMap is CreateContainerConfigError (or FailedMount for a volume), told once,
retried, and cleared when the ConfigMap appears; a ConfigMap update reaches the files;
one deleted under a running pod keeps its last files and its containers restarting; a
dead sandbox comes back, its new IP written, before the containers start."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from raftkube.agent import actions, simulated, volumes
from raftkube.agent import runtime as rt
from raftkube.agent.kubelet import Kubelet
from raftkube.api import kinds
from raftkube.client import workqueue
from tests.unit.agent_support import Clock, pod
from tests.unit.controller_fixture import Fixture
from tests.unit.test_agent_podenv import cm, secret, service

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


class Recording(simulated.SimulatedRuntime):
    """The simulated runtime, keeping the request each container was started with."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(pod_cidr="10.244.1.0/24", host_ip="192.0.2.10", clock=clock)
        self.requests: dict[str, rt.ContainerRequest | None] = {}

    async def start_container(self, pod: Obj, container: Obj, *, attempt: int,
                              request: rt.ContainerRequest | None = None) -> rt.Container:
        self.requests[container["name"]] = request
        return await super().start_container(pod, container, attempt=attempt, request=request)

    async def run_sandbox(self, pod: Obj, config: rt.SandboxConfig | None = None
                          ) -> rt.Sandbox:
        """A stopped sandbox is started again with a fresh address, as the Docker
        runtime starts a killed pause container again."""
        uid = pod["metadata"]["uid"]
        found = self._sandboxes.get(uid)
        if found is not None and not found.ready:
            self._sandboxes[uid] = dataclasses.replace(found, ip=self._allocate(pod),
                                                       ready=True)
        return await super().run_sandbox(pod, config)


class Setup:
    def __init__(self, p: Obj, root: Path, *objs: tuple[kinds.Kind, Obj]) -> None:
        self.f = Fixture()
        self.clock = Clock(self.f.now)
        self.f.seed(kinds.POD, p)
        self.f.seed(kinds.SERVICE)
        for kind, obj in objs:
            self.f.seed(kind, obj)
        self.runtime = Recording(self.clock)
        self.volumes = volumes.VolumeManager(str(root), clock=self.clock)
        self.kubelet = Kubelet(
            node_name="n1", host_ip="192.0.2.10", client=self.f.client,  # type: ignore[arg-type]
            runtime=self.runtime, prober=simulated.SimulatedProber(), events=self.f.events,
            clock=self.clock, backoff=actions.CrashBackoff(base=10, cap=300),
            informer=self.f.informers.informer(kinds.POD),
            services=self.f.informers.informer(kinds.SERVICE),
            volume_manager=self.volumes, config_retry=5)
        self.kubelet.queue = workqueue.WorkQueue()

    async def run(self) -> list[Any]:
        return await self.f.run(self.kubelet, "ns/p")

    def put(self, kind: kinds.Kind, obj: Obj) -> None:
        self.f.client.live[self.f.where(kind, obj)] = obj

    def drop(self, kind: kinds.Kind, obj: Obj) -> None:
        del self.f.client.live[self.f.where(kind, obj)]


def configured(**spec: Any) -> Obj:
    p = pod()
    c = p["spec"]["containers"][0]
    c.update({k: v for k, v in spec.items() if k != "volumes"})
    if "volumes" in spec:
        p["spec"]["volumes"] = spec["volumes"]
    return p


def ns(obj: Obj) -> Obj:
    obj["metadata"]["namespace"] = "ns"
    return obj


def status_of(actions_: list[Any]) -> Obj:
    writes = [a for a in actions_ if a.verb == "update_status"]
    assert writes, actions_
    status: Obj = writes[-1].body["status"]
    return status


async def test_the_request_carries_env_service_variables_command_and_mounts(
        tmp_path: Path) -> None:
    p = configured(
        envFrom=[{"configMapRef": {"name": "cfg"}}],
        env=[{"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "p"}}},
             {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
             {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
             {"name": "URL", "value": "http://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/$(MODE)"}],
        command=["sh", "-c"], args=["echo $(MODE) $(IP)"], workingDir="/work",
        volumeMounts=[{"name": "conf", "mountPath": "/etc/conf"},
                      {"name": "scratch", "mountPath": "/scratch"}],
        volumes=[{"name": "conf", "configMap": {"name": "cfg"}},
                 {"name": "scratch", "emptyDir": {}}])
    db = service("db", "10.96.0.20", {"port": 5432})
    db["metadata"]["namespace"] = "ns"
    s = Setup(p, tmp_path, (kinds.CONFIGMAP, ns(cm("cfg", MODE="prod"))),
              (kinds.SECRET, ns(secret("pw", p="hunter2"))), (kinds.SERVICE, db))
    status = status_of(await s.run())
    assert status["phase"] == "Running"
    request = s.runtime.requests["c"]
    assert request is not None
    env = dict(request.env)
    assert env["MODE"] == "prod" and env["PASS"] == "hunter2"
    assert env["IP"] == status["podIP"] == "10.244.1.2"
    assert env["NODE"] == "n1"
    assert env["URL"] == "http://10.96.0.20:5432/prod"
    assert env["DB_PORT"] == "tcp://10.96.0.20:5432"
    assert request.command == ("sh", "-c") and request.args == ("echo prod 10.244.1.2",)
    assert request.working_dir == "/work"
    uid = p["metadata"]["uid"]
    assert request.mounts == (
        rt.Mount("/etc/conf", s.volumes.volume_dir(uid, "conf"), read_only=True),
        rt.Mount("/scratch", s.volumes.volume_dir(uid, "scratch")))
    assert Path(s.volumes.volume_dir(uid, "conf"), "MODE").read_text() == "prod"


async def test_a_missing_configmap_key_waits_with_create_container_config_error(
        tmp_path: Path) -> None:
    p = configured(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg",
                                                                         "key": "k"}}}])
    s = Setup(p, tmp_path)
    status = status_of(await s.run())
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "CreateContainerConfigError",
                       "message": 'configmap "cfg" not found'}
    assert status["phase"] == "Pending"
    assert s.runtime.requests == {}
    assert s.f.recorded_events()[-1] == ("Warning", "Failed",
                                         'Error: configmap "cfg" not found')
    assert "ns/p" in s.kubelet.queue._waiting  # retried

    # The ConfigMap comes without the key: the message says so, told once.
    s.put(kinds.CONFIGMAP, ns(cm("cfg", other="1")))
    s.f.seed(kinds.POD, {**p, "status": status})
    s.kubelet.pods.cache.put({**p, "status": status,
                              "metadata": {**p["metadata"], "resourceVersion": "20"}})
    status = status_of(await s.run())
    assert status["containerStatuses"][0]["state"]["waiting"]["message"] == \
        "couldn't find key k in ConfigMap ns/cfg"
    await s.run()
    assert [r for _, r, _ in s.f.recorded_events()].count("Failed") == 1

    # Then with the key: the container starts with it.
    s.put(kinds.CONFIGMAP, {**ns(cm("cfg", k="v")),
                            "metadata": {"name": "cfg", "namespace": "ns",
                                         "resourceVersion": "7"}})
    status = status_of(await s.run())
    assert status["phase"] == "Running"
    request = s.runtime.requests["c"]
    assert request is not None and dict(request.env)["X"] == "v"


async def test_a_missing_configmap_volume_is_failed_mount_and_nothing_starts(
        tmp_path: Path) -> None:
    p = configured(volumeMounts=[{"name": "conf", "mountPath": "/etc/conf"}],
                   volumes=[{"name": "conf", "configMap": {"name": "cfg"}}])
    s = Setup(p, tmp_path)
    status = status_of(await s.run())
    assert status["containerStatuses"][0]["state"]["waiting"] == {"reason": "ContainerCreating"}
    assert "podIP" not in status  # not even the sandbox
    assert s.f.recorded_events() == [(
        "Warning", "FailedMount",
        'MountVolume.SetUp failed for volume "conf" : configmap "cfg" not found')]
    s.put(kinds.CONFIGMAP, ns(cm("cfg", a="1")))
    await s.run()
    assert s.runtime.starts == 1


async def test_a_configmap_update_reaches_the_running_pods_files(tmp_path: Path) -> None:
    p = configured(volumeMounts=[{"name": "conf", "mountPath": "/etc/conf"}],
                   volumes=[{"name": "conf", "configMap": {"name": "cfg"}}])
    s = Setup(p, tmp_path, (kinds.CONFIGMAP, ns(cm("cfg", a="1"))))
    await s.run()
    path = Path(s.volumes.volume_dir(p["metadata"]["uid"], "conf"), "a")
    assert path.read_text() == "1"
    changed = {"metadata": {"name": "cfg", "namespace": "ns", "resourceVersion": "9"},
               "data": {"a": "2"}}
    s.put(kinds.CONFIGMAP, changed)
    # The refresh reads it again, sees the new version and queues the pod that uses it.
    await s.kubelet.refresh_config()
    assert await s.kubelet.queue.get() == "ns/p"
    await s.run()
    assert path.read_text() == "2"
    assert s.runtime.starts == 1  # the container was not restarted


async def test_volumes_go_with_the_pod(tmp_path: Path) -> None:
    p = configured(volumeMounts=[{"name": "scratch", "mountPath": "/s"}],
                   volumes=[{"name": "scratch", "emptyDir": {}}])
    s = Setup(p, tmp_path)
    await s.run()
    uid = p["metadata"]["uid"]
    assert s.volumes.pod_uids() == [uid]
    s.kubelet.pods.cache.remove("ns/p")
    await s.run()
    assert s.volumes.pod_uids() == []
    # A directory left by a pod that went while the agent was away is swept.
    Path(s.volumes.volume_dir("gone-uid", "x")).mkdir(parents=True)
    await s.kubelet.refresh_config()
    assert s.volumes.pod_uids() == []


async def test_a_source_deleted_under_a_running_pod_keeps_its_files_and_restarts(
        tmp_path: Path) -> None:
    # Kubernetes keeps a mounted volume's last files when its ConfigMap goes: the pod's
    # containers still restart (they did not before: FailedMount blocked them).
    p = pod(exit_after=5, restart="Always")
    p["spec"]["containers"][0]["volumeMounts"] = [{"name": "conf", "mountPath": "/c"}]
    p["spec"]["volumes"] = [{"name": "conf", "configMap": {"name": "cfg"}}]
    s = Setup(p, tmp_path, (kinds.CONFIGMAP, ns(cm("cfg", a="1"))))
    await s.run()
    assert s.runtime.starts == 1
    s.drop(kinds.CONFIGMAP, ns(cm("cfg", a="1")))
    s.f.recorded_events()
    for _ in range(4):  # it exits after 5 s; its restart waits out the crash back-off
        s.clock.advance(6)
        s.f.now = s.clock.now
        await s.run()
    assert s.runtime.starts >= 2
    failed = [(r, m) for _, r, m in s.f.recorded_events() if r == "FailedMount"]
    assert failed == [("FailedMount", 'MountVolume.SetUp failed for volume "conf" : '
                                      'configmap "cfg" not found')]  # told once
    path = Path(s.volumes.volume_dir(p["metadata"]["uid"], "conf"), "a")
    assert path.read_text() == "1"  # the last files
    # It comes back (and goes again): its files follow, and a new loss is told again.
    s.put(kinds.CONFIGMAP, ns(cm("cfg", a="2")))
    await s.kubelet.refresh_config()  # the periodic read that notices it
    await s.run()
    assert path.read_text() == "2"
    s.drop(kinds.CONFIGMAP, ns(cm("cfg", a="2")))
    await s.kubelet.refresh_config()
    await s.run()
    assert [r for _, r, _ in s.f.recorded_events()].count("FailedMount") == 1


async def test_a_dead_sandbox_is_started_again_before_the_containers_with_its_new_ip(
        tmp_path: Path) -> None:
    p = configured(env=[{"name": "MY_IP",
                         "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}])
    s = Setup(p, tmp_path)
    await s.run()
    uid = p["metadata"]["uid"]
    old_ip = s.runtime.pod_state(uid).sandbox.ip  # type: ignore[union-attr]
    # The sandbox dies with its container (a killed pause container), and comes back
    # with another address.
    await s.runtime.stop_sandbox(uid)
    s.runtime._ips.add(old_ip)  # its old address went to another pod meanwhile
    s.clock.advance(30)
    s.f.now = s.clock.now
    done = await s.run()
    new_ip = s.runtime.pod_state(uid).sandbox.ip  # type: ignore[union-attr]
    assert new_ip and new_ip != old_ip
    writes = [a.body["status"] for a in done if a.verb == "update_status"]
    # The new IP is written before the container starts, and the container sees it.
    assert writes[0]["podIP"] == new_ip
    assert dict(s.runtime.requests["c"].env)["MY_IP"] == new_ip  # type: ignore[union-attr]
    assert s.runtime.starts == 2
