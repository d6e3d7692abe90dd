"""Services on real containers: a busybox httpd Deployment (3 replicas, each answering
its own hostname) reached through its NodePort from the host, and through its ClusterIP
and its DNS names from another pod, with the replies spread over the replicas; an
deleted replica leaves rotation without failing anyone; after its agent's SIGKILL and
restart, a pod reaches the Service again.

The cluster is `rk up --agents 2 --runtime docker`: each agent has its own node address,
its proxy listens on the Docker bridge's gateway, its DNS server answers pods at
169.254.20.10 through its own iptables chains.
"""

from __future__ import annotations

import asyncio
import collections
import urllib.request
from typing import Any

import docker
import pytest

from raftkube.agent import dockerspec as ds
from raftkube.agent import netrules, network
from raftkube.api import conditions, kinds
from raftkube.cli import local
from raftkube.client import rest
from raftkube.client.errors import ApiError
from tests.cluster.harness import Cluster, wait_for
from tests.docker import conftest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(400)]

Obj = dict[str, Any]
IMAGE = "busybox:1.36"
# Each replica serves its own hostname (the pod's name) at /.
HTTPD = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"


def deployment(name: str, replicas: int) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "httpd", "image": IMAGE,
                                         "command": ["sh", "-c", HTTPD],
                                         "ports": [{"containerPort": 80, "name": "http"}]}]}}}}


def ready_pods(pods: list[Obj], app: str) -> list[Obj]:
    return [p for p in pods if (p["metadata"].get("labels") or {}).get("app") == app
            and conditions.is_true(p, "Ready") and not p["metadata"].get("deletionTimestamp")]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode().strip())


def container_of(client: docker.DockerClient, c: Cluster, pod_name: str, name: str) -> Any:
    cid = local.cluster_id(c.state_dir)
    found = client.containers.list(filters={"label": [
        f"{ds.CLUSTER}={cid}", f"{ds.POD_NAME}={pod_name}", f"{ds.CONTAINER_NAME}={name}"]})
    assert found, f"no running container {name} of pod {pod_name}"
    return found[0]


def in_pod(container: Any, script: str) -> tuple[int, str]:
    code, out = container.exec_run(["sh", "-c", script])
    return int(code), out.decode(errors="replace").strip()


async def test_a_deployment_behind_a_service_by_node_port_cluster_ip_and_dns(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.DEPLOYMENT, "default", deployment("web", 3))
    svc = await api.create(kinds.SERVICE, "default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "NodePort", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})
    cluster_ip, node_port = svc["spec"]["clusterIP"], svc["spec"]["ports"][0]["nodePort"]
    await api.create(kinds.POD, "default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [
            {"name": "sh", "image": IMAGE, "command": ["sleep", "3600"]}]}})

    async def three_ready() -> list[Obj] | None:
        pods = (await api.list(kinds.POD, "default")).get("items") or []
        web = ready_pods(pods, "web")
        client = [p for p in pods if p["metadata"]["name"] == "client"
                  and conditions.is_true(p, "Ready")]
        return web if len(web) == 3 and client else None

    web = await wait_for(three_ready, timeout=120, what="3 web replicas and the client")
    names = {p["metadata"]["name"] for p in web}
    assert len({p["spec"]["nodeName"] for p in web}) == 2, "replicas on both nodes"

    # NodePort from the host, on each node's own address: spread over the replicas.
    for index in (1, 2):
        address = network.local_node_address(dcluster.state_dir, index)

        async def all_answer(address: str = address) -> bool:
            got = {await asyncio.to_thread(http_get, f"http://{address}:{node_port}/")
                   for _ in range(6)}
            return got == names

        await wait_for(all_answer, timeout=60, what=f"the NodePort on {address}", every=0.5)

    # ClusterIP and DNS from another pod (its own agent's rules and DNS server).
    client = container_of(dockerc, dcluster, "client", "sh")
    code, resolv = in_pod(client, "cat /etc/resolv.conf")
    assert code == 0 and "nameserver 169.254.20.10" in resolv, resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    assert "ndots:5" in resolv
    for target in (cluster_ip, "web.default.svc.cluster.local", "web.default", "web"):
        script = (f"for i in 1 2 3 4 5 6 7 8 9; do "
                  f"timeout 5 wget -qO- http://{target}/ || echo FAILED; done")
        code, out = await asyncio.to_thread(in_pod, client, script)
        got = collections.Counter(out.split())
        assert "FAILED" not in got and set(got) == names, (target, out)
    code, out = await asyncio.to_thread(
        in_pod, client, "timeout 5 wget -qO- http://nope.default.svc.cluster.local/ 2>&1;"
                        " echo rc=$?")
    assert "rc=0" not in out, out  # an unknown name does not resolve

    # A replica deleted: the Service keeps answering from the others, nobody fails.
    victim = sorted(names)[0]
    await api.delete(kinds.POD, "default", victim)

    async def without_victim() -> bool:
        code, out = await asyncio.to_thread(
            in_pod, client, "for i in 1 2 3 4 5 6; do timeout 5 wget -qO- "
                            "http://web/ || echo FAILED; done")
        return victim not in out.split() and "FAILED" not in out.split()

    await wait_for(without_victim, timeout=60, what=f"{victim} out of rotation", every=0.5)

    # The client's agent killed with SIGKILL and restarted: it adopts the client and
    # writes its rules again (its proxy and DNS server have new ports), so the same pod
    # reaches the Service by name again.
    node = next(p for p in (await api.list(kinds.POD, "default")).get("items") or []
                if p["metadata"]["name"] == "client")["spec"]["nodeName"]
    dcluster.kill(node)
    await asyncio.to_thread(dcluster.up, agents=2, runtime="docker",
                            agent_args=conftest.AGENT_ARGS)

    async def by_name_again() -> bool:
        code, out = await asyncio.to_thread(
            in_pod, client, "timeout 5 wget -qO- http://web/ || echo FAILED")
        return code == 0 and out in names

    await wait_for(by_name_again, timeout=90, what="the Service by name after the restart",
                   every=1)
    assert container_of(dockerc, dcluster, "client", "sh").id == client.id  # adopted

    await api.delete(kinds.SERVICE, "default", "web")
    await api.delete(kinds.DEPLOYMENT, "default", "web")
    await api.delete(kinds.POD, "default", "client")


async def test_each_agent_has_its_own_rules_matching_its_own_pods(
        dcluster: Cluster, api: rest.RestClient) -> None:
    for index in (1, 2):
        name, address = f"n{index}", network.local_node_address(dcluster.state_dir, index)
        assert netrules.hooked(name, address)
        node = await api.get(kinds.NODE, "", name)
        assert {"type": "InternalIP", "address": address} in node["status"]["addresses"]
    try:
        await api.delete(kinds.SERVICE, "default", "web")
    except ApiError:
        pass
