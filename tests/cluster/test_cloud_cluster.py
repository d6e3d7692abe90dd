"""The cloud controller on real masters with simulated agents, its provider plugged in
through the entry point group: Nodes get the provider's providerID and labels; a
LoadBalancer Service gets the Ready nodes' addresses as its ingress; when the provider
reports a machine deleted (and its agent is gone), its Node is removed and its pods run
elsewhere within seconds, while a machine that is only unreachable keeps its Node."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from raftkube.api import conditions, kinds
from raftkube.client import rest
from raftkube.client.errors import ApiError
from raftkube.cloud import node as cnode
from raftkube.cloud import service as csvc
from tests.cluster.harness import Cluster, rest_client, started, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

Obj = dict[str, Any]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MACHINES = [{"name": "n1", "zone": "zone-a", "instance_type": "small"},
            {"name": "n2", "zone": "zone-a", "instance_type": "small"},
            {"name": "n3", "zone": "zone-b", "instance_type": "large"}]


def write_machines(path: str, machines: list[Obj]) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump({"machines": machines}, f)
    os.replace(path + ".tmp", path)


@pytest.fixture
def clouded(tmp_path_factory: pytest.TempPathFactory,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Cluster, str]]:
    """3 masters with `--cloud-provider testfile` (a plugin registered by a dist-info on
    their PYTHONPATH) and simulated agents n1..n3."""
    plugins = str(tmp_path_factory.mktemp("plugins"))
    dist = os.path.join(plugins, "rk_test_cloud-1.0.dist-info")
    os.makedirs(dist)
    with open(os.path.join(dist, "METADATA"), "w") as f:
        f.write("Metadata-Version: 2.1\nName: rk-test-cloud\nVersion: 1.0\n")
    with open(os.path.join(dist, "entry_points.txt"), "w") as f:
        f.write("[raftkube.cloud_providers]\n"
                "testfile = tests.cluster.cloudplugin:FileProvider\n")
    machines = os.path.join(plugins, "machines.json")
    write_machines(machines, MACHINES)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [plugins, REPO, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("RK_TEST_CLOUD_FILE", machines)
    for c in started(tmp_path_factory, "cloud", agents=3,
                     master_args=["--cloud-provider", "testfile",
                                  "--node-monitor-grace-period", "3",
                                  "--default-unreachable-toleration-seconds", "300"]):
        yield c, machines


@pytest.fixture
async def api(clouded: tuple[Cluster, str]) -> AsyncIterator[rest.RestClient]:
    async with rest_client(clouded[0]) as client:
        yield client


def deployment(name: str, replicas: int) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "terminationGracePeriodSeconds": 1,
                         "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}


async def running_pods(api: rest.RestClient, app: str) -> list[Obj]:
    pods = (await api.list(kinds.POD, "default", label_selector=f"app={app}")).get("items")
    return [p for p in pods or [] if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


async def test_a_deleted_machine_takes_its_node_and_its_pods_move(
        clouded: tuple[Cluster, str], api: rest.RestClient) -> None:
    c, machines = clouded

    async def initialised() -> list[Obj] | None:
        nodes = (await api.list(kinds.NODE)).get("items") or []
        done = [n for n in nodes if (n.get("spec") or {}).get("providerID")]
        return nodes if len(done) == 3 else None

    nodes = {n["metadata"]["name"]: n for n in await wait_for(
        initialised, timeout=30, what="the nodes initialised by the cloud controller")}
    assert nodes["n3"]["spec"]["providerID"] == "file://n3"
    assert nodes["n3"]["metadata"]["labels"][cnode.ZONE] == "zone-b"
    assert nodes["n1"]["metadata"]["labels"][cnode.INSTANCE_TYPE] == "small"

    # A LoadBalancer Service: the finalizer, and every Ready node's address as ingress.
    await api.create(kinds.SERVICE, "default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                 "ports": [{"port": 8080}]}})
    addresses = sorted(a["address"] for n in nodes.values()
                       for a in n["status"]["addresses"] if a["type"] == "InternalIP")

    async def ingress() -> list[str] | None:
        svc = await api.get(kinds.SERVICE, "default", "web")
        got = sorted(i["ip"] for i in csvc.ingress_of(svc))
        return got if got == addresses else None

    await wait_for(ingress, timeout=30, what="the ingress of every node")
    svc = await api.get(kinds.SERVICE, "default", "web")
    assert csvc.FINALIZER in svc["metadata"]["finalizers"]
    assert svc["spec"]["ports"][0]["nodePort"], "a LoadBalancer Service has a NodePort"

    await api.create(kinds.DEPLOYMENT, "default", deployment("web", 6))

    async def six() -> list[Obj] | None:
        pods = await running_pods(api, "web")
        return pods if len(pods) == 6 else None

    pods = await wait_for(six, timeout=60, what="6 running pods")
    on_n3 = {p["metadata"]["name"] for p in pods if p["spec"]["nodeName"] == "n3"}
    assert on_n3, "the scheduler spread some pods to n3"

    # n3's machine is destroyed (its agent with it); n2's is merely unreachable.
    write_machines(machines, [m for m in MACHINES if m["name"] != "n3"])
    c.kill("n3", "n2")

    async def n3_deleted() -> bool:
        try:
            await api.get(kinds.NODE, "", "n3")
        except ApiError as e:
            return e.code == 404
        return False

    await wait_for(n3_deleted, timeout=60, what="node n3 deleted")

    async def moved() -> bool:
        pods = (await api.list(kinds.POD, "default", label_selector="app=web")).get("items")
        on = [str(p["spec"].get("nodeName")) for p in pods or []]
        running_n1 = [p for p in await running_pods(api, "web") if p["spec"]["nodeName"] == "n1"]
        # Gone, not Terminating: only a deleted Node's pods are force-deleted (an
        # unreachable node's wait for it), and the eviction timeout is five minutes here.
        return "n3" not in on and len(running_n1) + on.count("n2") >= 6

    await wait_for(moved, timeout=60, what="n3's pods gone and replaced on n1")
    # The unreachable machine's Node stays (node lifecycle's: not Ready, tainted), with
    # its pods, and the load balancer is left with the one Ready node. n3's pods can be
    # replaced before n2's grace period (3 s) is over: its condition is waited for.

    async def n2_not_ready() -> bool:
        return not conditions.is_true(await api.get(kinds.NODE, "", "n2"), "Ready")

    await wait_for(n2_not_ready, timeout=30, what="n2 not Ready")
    pods = (await api.list(kinds.POD, "default", label_selector="app=web")).get("items")
    assert any(p["spec"].get("nodeName") == "n2" for p in pods or [])
    n1_ip = [a["address"] for a in nodes["n1"]["status"]["addresses"]
             if a["type"] == "InternalIP"]

    async def one_left() -> bool:
        svc = await api.get(kinds.SERVICE, "default", "web")
        return sorted(i["ip"] for i in csvc.ingress_of(svc)) == n1_ip

    await wait_for(one_left, timeout=30, what="the ingress of n1 alone")

    # Deleted, the Service loses its load balancer and goes (the finalizer is released).
    await api.delete(kinds.SERVICE, "default", "web")

    async def service_gone() -> bool:
        try:
            await api.get(kinds.SERVICE, "default", "web")
        except ApiError as e:
            return e.code == 404
        return False

    await wait_for(service_gone, timeout=30, what="the Service deleted")
