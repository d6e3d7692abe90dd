"""LoadBalancer Services on real containers with the `local` provider (the default):
`rk up --agents 2 --runtime docker`, a busybox httpd Deployment behind a LoadBalancer
Service gets both nodes' addresses as its ingress and answers on its own port at each,
spread over the replicas; loadBalancerSourceRanges admit only their clients; deleted,
it stops answering. Then the Kubernetes docs' load-balancer tutorial applied as written
(tests/manifests/load-balancer): its five hello-world replicas answer at every ingress
address on port 8080."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from raftkube.agent import network
from raftkube.api import kinds
from raftkube.client import rest
from raftkube.client.errors import ApiError
from raftkube.cloud import service as csvc
from tests.cluster.harness import Cluster, rk, wait_for
from tests.docker.test_docker_services import deployment, ready_pods

pytestmark = [pytest.mark.docker, pytest.mark.timeout(400)]

Obj = dict[str, Any]
MANIFESTS = Path(__file__).parent.parent / "manifests" / "load-balancer"
HELLO_IMAGE = ("gcr.io/google-samples/hello-app", "2.0")
# hello-app 2.0 answers every path on $PORT (8080) with these three lines.
HELLO = ("mkdir -p /www && printf 'Hello, world!\\nVersion: 2.0.0\\nHostname: %s\\n' "
         "\"$(hostname)\" > /www/index.html && exec httpd -f -p \"${PORT:-8080}\" -h /www")


def http_get(address: str, port: int, *, source: str = "") -> str:
    """GET / at address:port from `source` (any address if ""); the body, or "refused"
    or "reset"."""
    conn = http.client.HTTPConnection(address, port, timeout=5,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode().strip()
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
        return "reset"
    finally:
        conn.close()


def node_addresses(c: Cluster) -> list[str]:
    return [network.local_node_address(c.state_dir, i) for i in (1, 2)]


async def ingress(api: rest.RestClient, name: str) -> list[str]:
    svc = await api.get(kinds.SERVICE, "default", name)
    return sorted(i["ip"] for i in csvc.ingress_of(svc))


async def test_a_load_balancer_answers_at_every_node_until_deleted(
        dcluster: Cluster, api: rest.RestClient) -> None:
    await api.create(kinds.DEPLOYMENT, "default", deployment("lb", 3))
    await api.create(kinds.SERVICE, "default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "lb"},
                 "ports": [{"name": "http", "port": 8081, "targetPort": "http"}]}})

    async def three_ready() -> list[Obj] | None:
        pods = ready_pods((await api.list(kinds.POD, "default")).get("items") or [], "lb")
        return pods if len(pods) == 3 else None

    names = {p["metadata"]["name"] for p in
             await wait_for(three_ready, timeout=120, what="3 ready httpd replicas")}
    addresses = sorted(node_addresses(dcluster))

    async def ingress_set() -> bool:
        return await ingress(api, "lb") == addresses

    await wait_for(ingress_set, timeout=30, what="the ingress of both nodes")
    svc = await api.get(kinds.SERVICE, "default", "lb")
    assert svc["spec"]["ports"][0]["nodePort"]  # allocated, as for NodePort
    for address in addresses:
        async def spread(address: str = address) -> bool:
            got = {await asyncio.to_thread(http_get, address, 8081) for _ in range(8)}
            return got == names

        await wait_for(spread, timeout=60, what=f"the load balancer on {address}:8081",
                       every=0.5)

    # Source ranges: only 127.0.0.5 may use the load balancer.
    await api.patch(kinds.SERVICE, "default", "lb",
                    {"spec": {"loadBalancerSourceRanges": ["127.0.0.5/32"]}})

    async def restricted() -> bool:
        other = await asyncio.to_thread(http_get, addresses[0], 8081, source="127.0.0.6")
        mine = await asyncio.to_thread(http_get, addresses[0], 8081, source="127.0.0.5")
        return other in ("reset", "") and mine in names

    await wait_for(restricted, timeout=30, what="the source ranges in force", every=0.5)

    await api.delete(kinds.SERVICE, "default", "lb")

    async def stopped() -> bool:
        answers = [await asyncio.to_thread(http_get, a, 8081, source="127.0.0.5")
                   for a in addresses]
        return answers == ["refused", "refused"]

    await wait_for(stopped, timeout=30, what="no load balancer left", every=0.5)
    with pytest.raises(ApiError) as gone:
        await api.get(kinds.SERVICE, "default", "lb")
    assert gone.value.code == 404
    await api.delete(kinds.DEPLOYMENT, "default", "lb")


@pytest.fixture
def hello_image(dockerc: docker.DockerClient) -> Iterator[str]:
    """gcr.io/google-samples/hello-app:2.0 made here (no registry): busybox with a
    command that answers as hello-app does; removed afterwards unless it was there."""
    repo, tag = HELLO_IMAGE
    name = f"{repo}:{tag}"
    try:
        dockerc.images.get(name)
        had = True
    except docker.errors.ImageNotFound:
        had = False
        base = dockerc.containers.create("busybox:1.36", command=["true"])
        try:
            base.commit(repository=repo, tag=tag, changes=[
                "CMD " + json.dumps(["sh", "-c", HELLO]),
                "ENV PORT=8080", "EXPOSE 8080/tcp"])
        finally:
            base.remove(force=True)
    yield name
    if not had:
        try:
            dockerc.images.remove(name, force=True)
        except docker.errors.APIError:
            pass


async def test_the_docs_load_balancer_tutorial_applies_unchanged_and_answers(
        dcluster: Cluster, api: rest.RestClient, hello_image: str) -> None:
    done = await asyncio.to_thread(rk, dcluster, "apply", "-f", str(MANIFESTS))
    assert done.returncode == 0, done.stderr
    assert "deployment.apps/hello-world created" in done.stdout
    assert "service/my-service created" in done.stdout
    addresses = sorted(node_addresses(dcluster))

    async def five_ready() -> list[Obj] | None:
        pods = (await api.list(kinds.POD, "default", label_selector=(
            "app.kubernetes.io/name=load-balancer-example"))).get("items") or []
        ready = [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        return ready if len(ready) == 5 else None

    pods = await wait_for(five_ready, timeout=180, what="5 hello-world replicas")
    hostnames = {p["metadata"]["name"] for p in pods}

    async def external_ip() -> bool:
        return await ingress(api, "my-service") == addresses

    await wait_for(external_ip, timeout=30, what="my-service's external IPs")
    for address in addresses:
        async def hello(address: str = address) -> bool:
            got = await asyncio.to_thread(http_get, address, 8080)
            lines = got.splitlines()
            return lines[:2] == ["Hello, world!", "Version: 2.0.0"] and \
                lines[2].removeprefix("Hostname: ") in hostnames

        await wait_for(hello, timeout=60, what=f"hello-app at {address}:8080", every=0.5)
    out = await asyncio.to_thread(rk, dcluster, "get", "services", "my-service")
    assert out.returncode == 0 and all(a in out.stdout for a in addresses), out.stdout
    done = await asyncio.to_thread(rk, dcluster, "delete", "-f", str(MANIFESTS))
    assert done.returncode == 0, done.stderr

    async def closed() -> bool:
        return all([await asyncio.to_thread(http_get, a, 8080) == "refused"
                    for a in addresses])

    await wait_for(closed, timeout=60, what="my-service's load balancer gone", every=0.5)
