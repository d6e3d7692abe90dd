"""The agents' side of a LoadBalancer Service, over real loopback sockets: the service
map carries the ingress, source ranges and traffic policy; an agent whose address the
ingress lists answers at the Service's own port (and stops when it is no longer
listed); loadBalancerSourceRanges admit only their clients; externalTrafficPolicy
Local sends outside traffic only to this node's endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import prometheus_client as prom
import pytest

from raftkube.agent import proxy as px
from raftkube.agent import servicemap as sm
from tests.unit.service_support import (
    Backend,
    backends,
    endpoint,
    endpoint_slice,
    node,
    service,
)
from tests.unit.test_proxy import free_port

pytestmark = pytest.mark.unit


def lb_service(*, ingress: list[str], ranges: list[str] | None = None,
               policy: str = "Cluster", type_: str = "LoadBalancer") -> dict[str, object]:
    svc = service("web", type_=type_, ports=[{"name": "http", "protocol": "TCP", "port": 80,
                                              "targetPort": 8080, "nodePort": 30080}])
    svc["spec"]["externalTrafficPolicy"] = policy
    if ranges is not None:
        svc["spec"]["loadBalancerSourceRanges"] = ranges
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return svc


def test_the_map_carries_the_load_balancer() -> None:
    slices = [endpoint_slice("web", [endpoint("10.0.0.1", node="n1")])]
    nodes = [node("n1", "127.0.0.2")]
    (f,) = sm.build([lb_service(ingress=["127.0.0.3", "127.0.0.2", "bad"],
                                ranges=["10.0.0.0/8", " 192.0.2.7/32", "nope"], policy="Local")],
                    slices, nodes).frontends
    assert f.load_balancer_ips == ("127.0.0.2", "127.0.0.3")
    assert f.source_ranges == ("10.0.0.0/8", "192.0.2.7/32")
    assert f.external_local and f.node_port == 30080
    (f,) = sm.build([lb_service(ingress=["127.0.0.2"], type_="NodePort")], slices,
                    nodes).frontends
    assert f.load_balancer_ips == () and f.source_ranges == ()  # not a LoadBalancer
    (f,) = sm.build([lb_service(ingress=[])], slices, nodes).frontends
    assert f.load_balancer_ips == ()  # pending: no listener anywhere


@pytest.mark.parametrize(("ranges", "client", "admitted"), [
    ((), "203.0.113.9", True),
    (("10.0.0.0/8",), "10.1.2.3", True),
    (("10.0.0.0/8",), "11.0.0.1", False),
    (("10.0.0.0/8", "192.0.2.7/32"), "192.0.2.7", True),
    (("10.0.0.0/8",), "::ffff:10.0.0.1", True),
    (("2001:db8::/32",), "10.0.0.1", False),
    (("10.0.0.0/8",), "not-an-ip", False),
])
def test_source_ranges_admit(ranges: tuple[str, ...], client: str, admitted: bool) -> None:
    assert sm.admits(ranges, client) is admitted


def frontend(bs: list[Backend], nodes: list[str], *, port: int, ingress: tuple[str, ...],
             ranges: tuple[str, ...] = (), local: bool = False) -> sm.Frontend:
    ready = tuple(sm.Backend(b.host, b.port, n, "127.0.0.1") for b, n in zip(bs, nodes,
                                                                             strict=True))
    return sm.Frontend(namespace="default", service="web", port_name="http", protocol="TCP",
                       cluster_ip="10.96.0.10", port=port, node_port=None, backends=ready,
                       present=frozenset(ready), load_balancer_ips=ingress,
                       source_ranges=ranges, external_local=local)


@contextlib.asynccontextmanager
async def proxies(*addresses: str) -> AsyncIterator[list[px.Proxy]]:
    made = [px.Proxy(node_address=a, cluster_address="127.0.0.1", node_name=f"n{i}",
                     metrics=px.ProxyMetrics(prom.CollectorRegistry()),
                     rng=random.Random(3), connect_timeout=1.0)
            for i, a in enumerate(addresses, 1)]
    try:
        yield made
    finally:
        for p in made:
            await p.close()


async def ask_from(host: str, port: int, source: str) -> str:
    """The first line from host:port, connecting from `source`; "" if reset or closed."""
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
        try:
            return (await reader.readline()).decode().strip()
        except ConnectionResetError:
            return ""
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def test_every_listed_agent_answers_at_the_service_port_until_unlisted() -> None:
    port = free_port()
    async with backends("a", "b") as bs, proxies("127.0.0.2", "127.0.0.3", "127.0.0.4") as ps:
        f = frontend(bs, ["n1", "n2"], port=port, ingress=("127.0.0.2", "127.0.0.3"))
        for p in ps:
            await p.apply(sm.ServiceMap(frontends=(f,)))
            assert not p.bind_errors
        for address in ("127.0.0.2", "127.0.0.3"):
            got = {await ask_from(address, port, "127.0.0.1") for _ in range(6)}
            assert got == {"a", "b"}, address
        with pytest.raises(ConnectionRefusedError):  # not in the ingress: no listener
            await ask_from("127.0.0.4", port, "127.0.0.1")
        pending = frontend(bs, ["n1", "n2"], port=port, ingress=())
        for p in ps:
            await p.apply(sm.ServiceMap(frontends=(pending,)))
        with pytest.raises(ConnectionRefusedError):
            await ask_from("127.0.0.2", port, "127.0.0.1")
        assert ps[0].cluster_ports(), "the ClusterIP side stays"


async def test_source_ranges_admit_only_their_clients() -> None:
    port = free_port()
    async with backends("a") as bs, proxies("127.0.0.2") as (p,):
        await p.apply(sm.ServiceMap(frontends=(
            frontend(bs, ["n1"], port=port, ingress=("127.0.0.2",), ranges=("127.0.0.5/32",)),)))
        assert await ask_from("127.0.0.2", port, "127.0.0.5") == "a"
        assert await ask_from("127.0.0.2", port, "127.0.0.6") == ""
        refused = sum(s.value for m in p.metrics.registry.collect() for s in m.samples
                      if s.name == "raftkube_proxy_connections_total"
                      and s.labels.get("result") == "source_refused")
        assert refused == 1
        cluster = p.cluster_ports()[("10.96.0.10", port)]
        assert await ask_from(*cluster, "127.0.0.6") == "a"  # not the load balancer: open


async def test_local_traffic_policy_serves_only_this_nodes_endpoints() -> None:
    port = free_port()
    async with backends("a", "b") as bs, proxies("127.0.0.2", "127.0.0.3", "127.0.0.4") as ps:
        # a runs on n1, b on n2; n3 has none of its endpoints.
        f = frontend(bs, ["n1", "n2"], port=port, local=True,
                     ingress=("127.0.0.2", "127.0.0.3", "127.0.0.4"))
        for p in ps:
            await p.apply(sm.ServiceMap(frontends=(f,)))
        assert {await ask_from("127.0.0.2", port, "127.0.0.1") for _ in range(4)} == {"a"}
        assert {await ask_from("127.0.0.3", port, "127.0.0.1") for _ in range(4)} == {"b"}
        assert await ask_from("127.0.0.4", port, "127.0.0.1") == ""  # none here: reset
        cluster = ps[2].cluster_ports()[("10.96.0.10", port)]
        assert {await ask_from(*cluster, "127.0.0.1") for _ in range(6)} == {"a", "b"}


async def test_two_load_balancers_on_one_port_serve_the_first() -> None:
    port = free_port()
    async with backends("a", "b") as bs, proxies("127.0.0.2") as (p,):
        first = frontend(bs[:1], ["n1"], port=port, ingress=("127.0.0.2",))
        second = sm.Frontend(**{**first.__dict__, "service": "zzz",
                                "backends": (sm.Backend(bs[1].host, bs[1].port, "n1"),)})
        await p.apply(sm.ServiceMap(frontends=(first, second)))
        assert await ask_from("127.0.0.2", port, "127.0.0.1") == "a"
        assert "the load balancer of default/web:http has the port" in \
            p.bind_errors["default/zzz:http"]


async def test_a_load_balancer_port_that_is_also_a_node_port_keeps_its_source_ranges(
        ) -> None:
    """The load balancer's port on the node's address is also a NodePort (its own, as
    manifests that set `port` and `nodePort` alike have, or another Service's): the
    load balancer holds it, as kube-proxy matches the load balancer's rule before the
    NodePorts', so its source ranges are not bypassed through the NodePort listener."""
    port = free_port()
    async with backends("a", "b") as bs, proxies("127.0.0.2") as (p,):
        f = frontend(bs[:1], ["n1"], port=port, ingress=("127.0.0.2",),
                     ranges=("127.0.0.5/32",))
        own = sm.Frontend(**{**f.__dict__, "node_port": port})
        other = sm.Frontend(**{**f.__dict__, "service": "other", "port": 81,
                               "node_port": port, "load_balancer_ips": (),
                               "source_ranges": (),
                               "backends": (sm.Backend(bs[1].host, bs[1].port, "n1"),)})
        for frontends in [(own,), (other, f)]:
            await p.apply(sm.ServiceMap(frontends=frontends))
            assert await ask_from("127.0.0.2", port, "127.0.0.6") == ""
            assert await ask_from("127.0.0.2", port, "127.0.0.5") == "a"
            assert "default/web:http" not in p.bind_errors
        assert "the load balancer of default/web:http has the port" in \
            p.bind_errors["default/other:http"]


async def test_local_traffic_policy_leaves_the_nodes_own_traffic_to_every_endpoint() -> None:
    """kube-proxy applies externalTrafficPolicy Local to outside clients only: the
    node's own connections (from its address) and its pods' go to every endpoint, so a
    NodePort Service with Local still answers there when this node runs none of it."""
    port = free_port()
    async with backends("a", "b") as bs, proxies("127.0.0.4") as (p,):
        own_address = p.internal
        p.internal = lambda ip: ip == "127.0.0.9" or own_address(ip)  # .9: as a pod of it
        f = frontend(bs, ["n2", "n3"], port=port, local=True, ingress=("127.0.0.4",))
        f = sm.Frontend(**{**f.__dict__, "node_port": free_port()})
        await p.apply(sm.ServiceMap(frontends=(f,)))
        assert f.node_port is not None
        for listen in (port, f.node_port):
            assert await ask_from("127.0.0.4", listen, "127.0.0.1") == ""  # outside: none here
            for inside in ("127.0.0.4", "127.0.0.9"):
                got = {await ask_from("127.0.0.4", listen, inside) for _ in range(6)}
                assert got == {"a", "b"}, (listen, inside)
