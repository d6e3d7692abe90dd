"""Services through real agents (simulated runtime): each agent has its own node address,
answers at a NodePort on it, balanced over endpoints cluster-wide, names Services in its
DNS server, drops a removed endpoint, and `rk down` leaves no listener behind.

The simulated runtime's pods have no real address, so the endpoints here are TCP
servers of the test on loopback, written as a selectorless Service's EndpointSlices
(which Kubernetes lets users write by hand).
"""

from __future__ import annotations

import asyncio
import collections
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import dnslib
import pytest

from raftkube.agent import network
from raftkube.api import kinds
from raftkube.client import rest
from raftkube.client.errors import ApiError
from tests.cluster.harness import Cluster, rest_client, started, wait_for
from tests.unit.service_support import Backend, ask

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


DNS_PORT = free_port()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "services", agents=2,
                       agent_args=["--dns-port", str(DNS_PORT)])


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(cluster) as client:
        yield client


def manual_slice(name: str, backend: Backend, node: str) -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [backend.host], "nodeName": node,
                           "conditions": {"ready": True}}],
            "ports": [{"name": "http", "protocol": "TCP", "port": backend.port}]}


async def answers(address: str, port: int, n: int) -> collections.Counter[str]:
    got: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        try:
            got[await ask(address, port)] += 1
        except OSError:
            got["<refused>"] += 1
    return got


def dns_query(address: str, name: str) -> list[str]:
    reply = dnslib.DNSRecord.parse(dnslib.DNSRecord.question(name).send(
        address, DNS_PORT, timeout=5))
    if reply.header.rcode != dnslib.RCODE.NOERROR:
        return [str(dnslib.RCODE.get(reply.header.rcode))]
    return sorted(str(rr.rdata) for rr in reply.rr)


@pytest.mark.timeout(300)
async def test_node_port_on_every_node_address_balanced_over_endpoints(
        cluster: Cluster, api: rest.RestClient) -> None:
    addresses = {f"n{i}": network.local_node_address(cluster.state_dir, i) for i in (1, 2)}
    assert len(set(addresses.values())) == 2
    for name, address in addresses.items():
        node = await api.get(kinds.NODE, "", name)
        assert {"type": "InternalIP", "address": address} in node["status"]["addresses"]

    a, b = await Backend("a").start(), await Backend("b").start()
    try:
        svc = await api.create(kinds.SERVICE, "default", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})
        node_port = svc["spec"]["ports"][0]["nodePort"]
        await api.create(kinds.ENDPOINTSLICE, "default", manual_slice("web-a", a, "n1"))
        await api.create(kinds.ENDPOINTSLICE, "default", manual_slice("web-b", b, "n2"))

        async def both_answer() -> bool:
            for address in addresses.values():
                got = await answers(address, node_port, 6)
                if set(got) != {"a", "b"}:
                    return False
            return True

        await wait_for(both_answer, timeout=30, what="both nodes balance over a and b")
        for address in addresses.values():  # round robin: an even split
            got = await answers(address, node_port, 20)
            assert got == {"a": 10, "b": 10}, (address, got)

        # DNS on each agent names the Service; unknown names are NXDOMAIN.
        for address in addresses.values():
            assert await asyncio.to_thread(dns_query, address,
                                           "web.default.svc.cluster.local") == \
                [svc["spec"]["clusterIP"]]
            assert await asyncio.to_thread(dns_query, address,
                                           "nope.default.svc.cluster.local") == ["NXDOMAIN"]

        async def only_a() -> bool:
            for address in addresses.values():
                if set(await answers(address, node_port, 4)) != {"a"}:
                    return False
            return True

        # An endpoint turned unready leaves rotation on every node (the figure printed is
        # from the slice's write to the last node's rotation without it: the agents' part
        # of "within one probe period").
        b_slice = await api.get(kinds.ENDPOINTSLICE, "default", "web-b")
        b_slice["endpoints"][0]["conditions"] = {"ready": False, "serving": False,
                                                 "terminating": False}
        started = time.monotonic()
        await api.update(kinds.ENDPOINTSLICE, b_slice)
        await wait_for(only_a, timeout=30, what="unready b out of rotation everywhere")
        print(f"unready endpoint out of rotation on both nodes after "
              f"{time.monotonic() - started:.2f} s")

        # Ready again: back in rotation.
        b_slice = await api.get(kinds.ENDPOINTSLICE, "default", "web-b")
        b_slice["endpoints"][0]["conditions"] = {"ready": True}
        await api.update(kinds.ENDPOINTSLICE, b_slice)
        await wait_for(both_answer, timeout=30, what="b back in rotation")

        # A removed endpoint leaves rotation on every node.
        await api.delete(kinds.ENDPOINTSLICE, "default", "web-b")
        await wait_for(only_a, timeout=30, what="b gone from every node")

        # No endpoint at all: refused at once (reset), not a hang.
        await api.delete(kinds.ENDPOINTSLICE, "default", "web-a")

        async def refused() -> bool:
            try:
                return not await ask(addresses["n1"], node_port, timeout=3)
            except (ConnectionResetError, asyncio.IncompleteReadError):
                return True

        await wait_for(refused, timeout=30, what="an empty Service refuses at once")

        # The Service's deletion closes its NodePort on every node.
        await api.delete(kinds.SERVICE, "default", "web")

        async def closed() -> bool:
            try:
                await ask(addresses["n2"], node_port, timeout=3)
            except ConnectionRefusedError:
                return True
            except OSError:
                return False
            return False

        await wait_for(closed, timeout=30, what="the NodePort closed")
    finally:
        await a.stop()
        await b.stop()
        for kind, name in ((kinds.SERVICE, "web"), (kinds.ENDPOINTSLICE, "web-a"),
                           (kinds.ENDPOINTSLICE, "web-b")):
            try:
                await api.delete(kind, "default", name)
            except ApiError:
                pass
