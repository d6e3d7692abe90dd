"""Probes on real containers, on the docker tier's cluster (3 masters, 2 Docker agents):
a busybox pod whose liveness probe starts failing (the container is killed and
restarted, with the kubelet's Events), and one whose readiness probe takes it out of its
Service's EndpointSlice and back in."""

from __future__ import annotations

import asyncio
from typing import Any

import docker
import pytest

from raftkube.agent import dockerspec as ds
from raftkube.api import conditions, kinds
from raftkube.cli import local
from raftkube.client import rest
from tests.cluster.harness import Cluster, wait_for

pytestmark = pytest.mark.docker

Obj = dict[str, Any]
IMAGE = "busybox:1.36"
WAIT = 120.0  # 2 shared cores, a Docker engine and 3 masters: generous


def engine_exec(dockerc: docker.DockerClient, c: Cluster, pod_name: str,
                command: list[str]) -> None:
    """Run `command` in the running app container of pod `pod_name` of cluster `c`, as a
    user would with `docker exec`."""
    found = dockerc.containers.list(filters={"label": [
        f"{ds.CLUSTER}={local.cluster_id(c.state_dir)}", f"{ds.POD_NAME}={pod_name}",
        f"{ds.KIND}={ds.CONTAINER}"]})
    assert found, f"no running container of pod {pod_name}"
    code, output = found[0].exec_run(command)
    assert code == 0, output


async def events_of(api: rest.RestClient, name: str) -> list[tuple[str, str]]:
    listed = await api.list(kinds.EVENT, "default")
    return [(e.get("reason", ""), e.get("message", "")) for e in listed["items"]
            if (e.get("involvedObject") or {}).get("name") == name]


async def test_a_failing_liveness_probe_restarts_the_container(
        api: rest.RestClient, dcluster: Cluster, dockerc: docker.DockerClient) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "alive"},
           "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
               "name": "c", "image": IMAGE,
               "command": ["sh", "-c", "touch /tmp/healthy; exec sleep 3600"],
               "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                                 "periodSeconds": 1, "timeoutSeconds": 10,
                                 "failureThreshold": 2}}]}}
    await api.create(kinds.POD, "default", pod)

    async def running() -> Obj | None:
        got = await api.get(kinds.POD, "default", "alive")
        statuses = (got.get("status") or {}).get("containerStatuses") or []
        return got if statuses and "running" in statuses[0]["state"] else None

    first = await wait_for(running, timeout=WAIT, what="the pod running", every=0.5)
    first_id = first["status"]["containerStatuses"][0]["containerID"]
    await asyncio.sleep(3)  # a few passing probes: nothing happens
    assert (await api.get(kinds.POD, "default", "alive"))["status"][
        "containerStatuses"][0]["restartCount"] == 0

    engine_exec(dockerc, dcluster, "alive", ["rm", "/tmp/healthy"])

    async def restarted() -> Obj | None:
        got = await running()
        return got if got and got["status"]["containerStatuses"][0]["restartCount"] >= 1 \
            else None

    after = await wait_for(restarted, timeout=WAIT, every=0.5,
                           what="a restart after the probe failed")
    c = after["status"]["containerStatuses"][0]
    assert c["containerID"] != first_id
    assert c["lastState"]["terminated"]["containerID"] == first_id
    assert c["lastState"]["terminated"]["exitCode"] in (137, 143)  # SIGKILL or SIGTERM
    # The new instance has a fresh /tmp/healthy (its command made it): it stays up.

    async def told() -> list[tuple[str, str]] | None:
        seen = await events_of(api, "alive")
        reasons = [r for r, _ in seen]
        return seen if "Unhealthy" in reasons and "Killing" in reasons else None

    seen = await wait_for(told, timeout=WAIT, what="Unhealthy and Killing events", every=0.5)
    assert ("Unhealthy", "Liveness probe failed: cat: can't open '/tmp/healthy': "
                         "No such file or directory") in seen
    assert ("Killing", "Container c failed liveness probe, will be restarted") in seen


async def test_an_unready_pod_leaves_its_endpointslice_and_comes_back(
        api: rest.RestClient, dcluster: Cluster, dockerc: docker.DockerClient) -> None:
    script = "mkdir -p /www && echo ok > /www/ready && exec httpd -f -p 8080 -h /www"
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
               "name": "httpd", "image": IMAGE, "command": ["sh", "-c", script],
               "ports": [{"name": "http", "containerPort": 8080}],
               "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"},
                                  "periodSeconds": 1, "timeoutSeconds": 10,
                                  "failureThreshold": 1}}]}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": "http"}]}}
    await api.create(kinds.SERVICE, "default", service)
    await api.create(kinds.POD, "default", pod)

    async def endpoint(ready: bool) -> Obj | None:
        listed = await api.list(kinds.ENDPOINTSLICE, "default",
                                label_selector="kubernetes.io/service-name=web")
        for s in listed["items"]:
            for e in s.get("endpoints") or []:
                if (e.get("targetRef") or {}).get("name") == "web" and \
                        e["conditions"]["ready"] is ready:
                    return e
        return None

    up = await wait_for(lambda: endpoint(True), timeout=WAIT, what="a ready endpoint", every=0.5)
    pod_now = await api.get(kinds.POD, "default", "web")
    assert up["addresses"] == [pod_now["status"]["podIP"]]
    assert conditions.is_true(pod_now, "Ready")

    engine_exec(dockerc, dcluster, "web", ["rm", "/www/ready"])  # httpd answers 404 from now on
    await wait_for(lambda: endpoint(False), timeout=WAIT, what="the endpoint unready", every=0.5)
    pod_now = await api.get(kinds.POD, "default", "web")
    assert not conditions.is_true(pod_now, "Ready")
    assert pod_now["status"]["containerStatuses"][0]["restartCount"] == 0  # never killed
    assert ("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 404") \
        in await events_of(api, "web")

    engine_exec(dockerc, dcluster, "web", ["sh", "-c", "echo ok > /www/ready"])
    await wait_for(lambda: endpoint(True), timeout=WAIT, what="the endpoint ready again", every=0.5)
