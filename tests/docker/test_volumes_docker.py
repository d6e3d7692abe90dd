"""Pod volumes on the real Docker engine: a `medium: Memory` emptyDir is one tmpfs that
the pod's containers share (one writes, the other reads; it outlives a container's
restart) and that goes with the pod, with a pod deleted while its agent was killed, and
with `rk down` (checked in /proc/mounts); a ConfigMap deleted under a running pod keeps
its files and lets its container restart, while a new pod that mounts a missing one
waits in ContainerCreating with a FailedMount event and starts once it is created; a
killed pause container comes back with its IP in status.podIP and in the env of the
restarted container.

The module's cluster is brought down by its last test (`rk down` with a tmpfs still
mounted), so the tests run in file order."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker
import pytest

from raftkube.agent import dockerspec as ds
from raftkube.agent import mounts
from raftkube.api import conditions, kinds
from raftkube.cli import local
from raftkube.client import rest
from tests.cluster.harness import Cluster, gone, rest_client, status_of, wait_for
from tests.cluster.harness import pod_where as _pod_where
from tests.docker import conftest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

Obj = dict[str, Any]
IMAGE = "busybox:1.36"


async def pod_where(api: rest.RestClient, name: str, test: Any, *, what: str,
                    timeout: float = 120) -> Obj:
    """The harness's, with this module's longer default wait (tmpfs set-up under load)."""
    return await _pod_where(api, name, test, what=what, timeout=timeout, every=0.3)


@pytest.fixture(scope="module")
def vcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and one Docker agent that reads pods' ConfigMaps every 2 s."""
    conftest.engine().close()
    c = Cluster(str(tmp_path_factory.mktemp("volumes-docker")))
    try:
        conftest.start(c, 1, ["--config-refresh", "2"])
        yield c
    finally:
        try:
            conftest.stop(c)
        finally:
            mounts.unmount_under(agents_dir(c))  # whatever a failed test left


@pytest.fixture
async def api(vcluster: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(vcluster) as client:
        yield client


def agents_dir(c: Cluster) -> str:
    return os.path.join(c.state_dir, local.AGENTS_DIR)


def tmpfs_under(c: Cluster) -> list[str]:
    """The tmpfs mounts under the cluster's agent directories, from /proc/mounts."""
    top = os.path.realpath(agents_dir(c))
    with open("/proc/mounts") as f:
        rows = [line.split() for line in f]
    return [r[1] for r in rows if r[2] == "tmpfs" and r[1].startswith(top + "/")]


def sh(name: str, script: str, **extra: Any) -> Obj:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", script], **extra}


def pod(name: str, containers: list[Obj], **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": containers, "terminationGracePeriodSeconds": 0, **spec}}


def containers_of(client: docker.DockerClient, c: Cluster, pod_name: str) -> list[Any]:
    cid = local.cluster_id(c.state_dir)
    return list(client.containers.list(all=True, filters={"label": [
        f"{ds.CLUSTER}={cid}", f"{ds.POD_NAME}={pod_name}"]}))


def running(client: docker.DockerClient, c: Cluster, pod_name: str, name: str) -> Any:
    found = [x for x in containers_of(client, c, pod_name)
             if x.labels.get(ds.CONTAINER_NAME) == name and x.status == "running"]
    assert len(found) == 1, found
    return found[0]


async def run_in(client: docker.DockerClient, c: Cluster, pod_name: str, name: str,
                 *command: str) -> str:
    target = await asyncio.to_thread(running, client, c, pod_name, name)
    code, out = await asyncio.to_thread(target.exec_run, list(command))
    assert code == 0, out
    return str(out.decode())


async def events_of(api: rest.RestClient, name: str) -> list[tuple[str, str]]:
    events, _ = await api.list_all(kinds.EVENT, "default")
    return [(e["reason"], e["message"]) for e in events
            if e["involvedObject"]["name"] == name]


def memory_pod(name: str) -> Obj:
    return pod(name, [
        sh("writer", "exec sleep 3600", volumeMounts=[{"name": "mem", "mountPath": "/mem"}]),
        sh("reader", "exec sleep 3600", volumeMounts=[
            {"name": "mem", "mountPath": "/mem"},
            {"name": "mem", "mountPath": "/sub", "subPath": "part"}])],
        volumes=[{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}}])


def ready(p: Obj) -> bool:
    return conditions.is_true(p, "Ready")


async def test_a_memory_empty_dir_is_one_tmpfs_shared_by_the_pods_containers(
        vcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", memory_pod("shared"))
    p = await pod_where(api, "shared", ready, what="the pod ready")
    uid = p["metadata"]["uid"]
    host = os.path.join(agents_dir(vcluster), "n1", "pods", uid, "volumes", "mem")
    assert tmpfs_under(vcluster) == [os.path.realpath(host)]
    with open("/proc/mounts") as f:
        options = next(line.split()[3] for line in f if line.split()[1] ==
                       os.path.realpath(host))
    assert "size=8192k" in options
    await run_in(dockerc, vcluster, "shared", "writer", "sh", "-c",
                 "echo hello > /mem/note && mkdir -p /mem/part && echo deep > /mem/part/x")
    assert await run_in(dockerc, vcluster, "shared", "reader", "cat", "/mem/note") == "hello\n"
    assert await run_in(dockerc, vcluster, "shared", "reader", "cat", "/sub/x") == "deep\n"
    df = await run_in(dockerc, vcluster, "shared", "reader", "df", "-k", "/mem")
    assert df.splitlines()[1].split()[1] == "8192"  # the sizeLimit, in memory
    # A restarted container finds what was written before it died.
    writer = await asyncio.to_thread(running, dockerc, vcluster, "shared", "writer")
    await asyncio.to_thread(writer.kill)
    await pod_where(api, "shared", lambda p: ready(p) and int(
        status_of(p, "writer").get("restartCount") or 0) >= 1, what="the writer restarted")
    assert await run_in(dockerc, vcluster, "shared", "writer", "cat", "/mem/note") == "hello\n"
    await api.delete(kinds.POD, "default", "shared")
    await gone(api, "shared")
    pod_dir = os.path.dirname(os.path.dirname(host))
    await wait_for(lambda: asyncio.to_thread(
        lambda: not tmpfs_under(vcluster) and not os.path.exists(pod_dir)), timeout=30,
        what="the pod's tmpfs unmounted and its directory removed")


async def test_a_pod_deleted_while_its_agent_was_killed_has_its_tmpfs_unmounted(
        vcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", memory_pod("orphan"))
    await pod_where(api, "orphan", ready, what="the pod ready")
    assert len(tmpfs_under(vcluster)) == 1
    vcluster.kill("n1")
    await api.delete(kinds.POD, "default", "orphan", grace=0)  # nobody to finish it
    await gone(api, "orphan")
    assert len(tmpfs_under(vcluster)) == 1  # still mounted: the agent was killed
    await asyncio.to_thread(vcluster.up, agents=1, runtime="docker",
                            agent_args=["--crash-backoff-base", "1", "--config-refresh", "2"])
    await wait_for(lambda: asyncio.to_thread(lambda: not tmpfs_under(vcluster)), timeout=60,
                   what="the orphan's tmpfs unmounted by the restarted agent")
    await wait_for(lambda: asyncio.to_thread(
        lambda: not containers_of(dockerc, vcluster, "orphan")), timeout=60,
        what="the orphan's containers removed")


async def test_a_configmap_deleted_under_a_running_pod_keeps_its_files_and_restarts(
        vcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.CONFIGMAP, "default", {
        "metadata": {"name": "vanishing", "namespace": "default"}, "data": {"k": "v1"}})
    await api.create(kinds.POD, "default", pod("keeper", [
        sh("c", "cat /cfg/k; exec sleep 3600",
           volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])],
        volumes=[{"name": "cfg", "configMap": {"name": "vanishing"}}]))
    await pod_where(api, "keeper", ready, what="the pod ready")
    await api.delete(kinds.CONFIGMAP, "default", "vanishing")

    async def told() -> bool:
        return ("FailedMount", 'MountVolume.SetUp failed for volume "cfg" : configmap '
                '"vanishing" not found') in await events_of(api, "keeper")

    await wait_for(told, timeout=60, what="FailedMount told", every=0.5)
    c = await asyncio.to_thread(running, dockerc, vcluster, "keeper", "c")
    await asyncio.to_thread(c.kill)
    p = await pod_where(api, "keeper", lambda p: ready(p) and int(
        status_of(p, "c").get("restartCount") or 0) >= 1, what="the container restarted")
    assert status_of(p, "c")["state"].get("running")
    assert await run_in(dockerc, vcluster, "keeper", "c", "cat", "/cfg/k") == "v1"
    await api.delete(kinds.POD, "default", "keeper")
    await gone(api, "keeper")


async def test_a_new_pod_with_a_missing_configmap_waits_then_starts(
        vcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", pod("waiter", [
        sh("c", "exec sleep 3600", volumeMounts=[{"name": "cfg", "mountPath": "/cfg"}])],
        volumes=[{"name": "cfg", "configMap": {"name": "later"}}]))
    p = await pod_where(api, "waiter", lambda p: (status_of(p, "c").get("state") or {})
                        .get("waiting", {}).get("reason") == "ContainerCreating",
                        what="the pod waiting in ContainerCreating")
    assert p["status"]["phase"] == "Pending"

    async def told() -> bool:
        return ("FailedMount", 'MountVolume.SetUp failed for volume "cfg" : configmap '
                '"later" not found') in await events_of(api, "waiter")

    await wait_for(told, timeout=60, what="FailedMount told", every=0.5)
    assert not containers_of(dockerc, vcluster, "waiter")  # nothing of it started
    await api.create(kinds.CONFIGMAP, "default", {
        "metadata": {"name": "later", "namespace": "default"}, "data": {"k": "here"}})
    await pod_where(api, "waiter", ready, what="the pod started once the ConfigMap came")
    assert await run_in(dockerc, vcluster, "waiter", "c", "cat", "/cfg/k") == "here"
    await api.delete(kinds.POD, "default", "waiter")
    await api.delete(kinds.CONFIGMAP, "default", "later")
    await gone(api, "waiter")


async def test_a_killed_pause_container_comes_back_with_its_ip_in_status_and_env(
        vcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", pod("phoenix", [
        sh("c", 'echo "ip=$MY_IP"; exec sleep 3600', env=[
            {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}])]))
    before = await pod_where(api, "phoenix", ready, what="the pod ready")
    (sandbox,) = [c for c in containers_of(dockerc, vcluster, "phoenix")
                  if c.labels[ds.KIND] == ds.SANDBOX]
    await asyncio.to_thread(sandbox.kill)
    p = await pod_where(api, "phoenix", lambda p: ready(p) and int(
        status_of(p, "c").get("restartCount") or 0) >= 1, what="the pod back")
    await asyncio.to_thread(sandbox.reload)
    ip = sandbox.attrs["NetworkSettings"]["IPAddress"]
    assert ip and p["status"]["podIP"] == ip
    assert before["status"]["podIP"]
    got = await run_in(dockerc, vcluster, "phoenix", "c", "sh", "-c", "echo $MY_IP")
    assert got == f"{ip}\n"
    await api.delete(kinds.POD, "default", "phoenix")
    await gone(api, "phoenix")


async def test_rk_down_unmounts_the_tmpfs_of_a_killed_agent(
        vcluster: Cluster, api: rest.RestClient) -> None:
    """Last: it brings the module's cluster down."""
    await api.create(kinds.POD, "default", memory_pod("left"))
    await pod_where(api, "left", ready, what="the pod ready")
    assert len(tmpfs_under(vcluster)) == 1
    vcluster.kill("n1")  # rk down must not need the agent
    out = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "raftkube.cli", "down", "--state-dir",
                         vcluster.state_dir], capture_output=True, text=True, timeout=120,
        env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert tmpfs_under(vcluster) == []
    assert not os.path.exists(agents_dir(vcluster))
