"""The userspace proxy over real loopback sockets: balancing, unready endpoints leaving
rotation, removed endpoints and empty Services failing fast, NodePort listeners."""

from __future__ import annotations

import asyncio
import collections
import random
import socket
import time
from collections.abc import AsyncIterator

import prometheus_client as prom
import pytest

from raftkube.agent import proxy as px
from raftkube.agent import servicemap as sm
from tests.unit.service_support import Backend, ask, backends

pytestmark = pytest.mark.unit


def frontend(bs: list[Backend], *, unready: tuple[Backend, ...] = (),
             node_port: int | None = None, cluster_ip: str = "10.96.0.10") -> sm.Frontend:
    ready = tuple(sm.Backend(b.host, b.port, "n1", "127.0.0.1") for b in bs)
    others = tuple(sm.Backend(b.host, b.port, "n1", "127.0.0.1") for b in unready)
    return sm.Frontend(namespace="default", service="web", port_name="http", protocol="TCP",
                       cluster_ip=cluster_ip, port=80, node_port=node_port, backends=ready,
                       present=frozenset(ready + others))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def proxy() -> AsyncIterator[px.Proxy]:
    registry = prom.CollectorRegistry()
    p = px.Proxy(node_address="127.0.0.1", cluster_address="127.0.0.1",
                 metrics=px.ProxyMetrics(registry), rng=random.Random(7),
                 connect_timeout=1.0)
    try:
        yield p
    finally:
        await p.close()


def listener_of(p: px.Proxy) -> tuple[str, int]:
    return p.cluster_ports()[("10.96.0.10", 80)]


def sample(p: px.Proxy, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for metric in p.metrics.registry.collect():
        for s in metric.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


async def test_connections_are_balanced_over_ready_backends(proxy: px.Proxy) -> None:
    async with backends("a", "b", "c") as bs:
        await proxy.apply(sm.ServiceMap(frontends=(frontend(bs),)))
        host, port = listener_of(proxy)
        answers = collections.Counter([await ask(host, port) for _ in range(30)])
    assert answers == {"a": 10, "b": 10, "c": 10}
    assert sample(proxy, "raftkube_proxy_connections_total", result="proxied",
                  listener="cluster", service="default/web:http") == 30


async def test_an_unready_backend_leaves_rotation_at_the_next_connection(
        proxy: px.Proxy) -> None:
    async with backends("a", "b") as bs:
        await proxy.apply(sm.ServiceMap(frontends=(frontend(bs),)))
        host, port = listener_of(proxy)
        # a connection to b stays open while b turns unready: it may finish
        reader, writer = None, None
        for _ in range(2):
            r, w = await asyncio.open_connection(host, port)
            if (await r.readline()).strip() == b"b":
                reader, writer = r, w
            else:
                w.close()
        assert reader is not None and writer is not None
        await proxy.apply(sm.ServiceMap(frontends=(frontend(bs[:1], unready=bs[1:]),)))
        assert {await ask(host, port) for _ in range(6)} == {"a"}
        writer.write(b"still here\n")
        assert await asyncio.wait_for(reader.readline(), 5) == b"still here\n"
        writer.close()


async def test_connections_to_a_removed_backend_are_reset_at_once(proxy: px.Proxy) -> None:
    async with backends("a", "b") as bs:
        await proxy.apply(sm.ServiceMap(frontends=(frontend(bs),)))
        host, port = listener_of(proxy)
        held = []
        for _ in range(2):
            r, w = await asyncio.open_connection(host, port)
            held.append(((await r.readline()).strip(), r, w))
        await proxy.apply(sm.ServiceMap(frontends=(frontend(bs[:1]),)))
        by_name = {name: (r, w) for name, r, w in held}
        started = time.monotonic()
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            r, w = by_name[b"b"]
            w.write(b"x\n")
            data = await asyncio.wait_for(r.readline(), 5)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            await asyncio.wait_for(r.readline(), 5)
        assert time.monotonic() - started < 2.0
        r, w = by_name[b"a"]  # the kept backend's connection is untouched
        w.write(b"ok\n")
        assert await asyncio.wait_for(r.readline(), 5) == b"ok\n"
        for _, _, w in held:
            w.close()
    assert sample(proxy, "raftkube_proxy_removed_endpoint_resets_total") == 1


async def test_no_endpoints_resets_the_client_at_once(proxy: px.Proxy) -> None:
    await proxy.apply(sm.ServiceMap(frontends=(frontend([]),)))
    host, port = listener_of(proxy)
    started = time.monotonic()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, ValueError)):
        answer = await ask(host, port)
        if not answer:
            raise ValueError("closed without an answer")
    assert time.monotonic() - started < 2.0
    assert sample(proxy, "raftkube_proxy_connections_total", result="no_endpoints") == 1


async def test_a_dead_backend_is_skipped_for_the_next_one(proxy: px.Proxy) -> None:
    async with backends("a") as bs:
        dead = Backend("dead")
        dead.port = free_port()  # nothing listens there: the dial is refused
        await proxy.apply(sm.ServiceMap(frontends=(frontend([dead, *bs]),)))
        host, port = listener_of(proxy)
        assert {await ask(host, port) for _ in range(4)} == {"a"}
    assert sample(proxy, "raftkube_proxy_dial_failures_total") >= 2


async def test_node_port_listens_on_the_node_address_and_goes_away(proxy: px.Proxy) -> None:
    node_port = free_port()
    async with backends("a") as bs:
        await proxy.apply(sm.ServiceMap(frontends=(frontend(bs, node_port=node_port),)))
        assert await ask("127.0.0.1", node_port) == "a"
        await proxy.apply(sm.ServiceMap())
        assert proxy.cluster_ports() == {}
        with pytest.raises(ConnectionRefusedError):
            await ask("127.0.0.1", node_port)


async def test_two_nodes_on_one_machine_share_a_node_port_on_their_own_addresses() -> None:
    node_port = free_port()
    proxies = [px.Proxy(node_address=addr, cluster_address=None,
                        metrics=px.ProxyMetrics(prom.CollectorRegistry()))
               for addr in ("127.0.0.2", "127.0.0.3")]
    try:
        async with backends("a") as bs:
            for p in proxies:
                await p.apply(sm.ServiceMap(frontends=(frontend(bs, node_port=node_port),)))
                assert not p.bind_errors
            assert [await ask(a, node_port) for a in ("127.0.0.2", "127.0.0.3")] == ["a", "a"]
            assert proxies[0].cluster_ports() == {}  # no cluster address: no listener
    finally:
        for p in proxies:
            await p.close()


async def test_a_taken_port_is_reported_and_the_rest_is_served(proxy: px.Proxy) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with backends("a") as bs:
            await proxy.apply(sm.ServiceMap(frontends=(frontend(bs, node_port=port),)))
            assert "default/web:http" in proxy.bind_errors
            assert await ask(*listener_of(proxy)) == "a"  # the ClusterIP side works


class UdpEcho(asyncio.DatagramProtocol):
    """A UDP backend that answers each datagram with its name and the datagram."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(self.name.encode() + b":" + data, addr)


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


async def test_udp_sessions_stick_to_a_backend_and_are_balanced(proxy: px.Proxy) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_datagram_endpoint(lambda n=n: UdpEcho(n),
                                                   local_addr=("127.0.0.1", 0))
               for n in ("a", "b")]
    clients: list[asyncio.DatagramTransport] = []
    try:
        ports = [t.get_extra_info("sockname")[1] for t, _ in servers]
        f = sm.Frontend(namespace="default", service="dns", port_name="dns", protocol="UDP",
                        cluster_ip="10.96.0.10", port=53, node_port=None,
                        backends=tuple(sm.Backend("127.0.0.1", p, "n1", "127.0.0.1")
                                       for p in ports))
        await proxy.apply(sm.ServiceMap(frontends=(f,)))
        assert proxy.cluster_ports() == {}  # TCP: none
        host, port = proxy.cluster_ports("UDP")[("10.96.0.10", 53)]
        seen = []
        for _ in range(4):  # four clients: four sessions, two on each backend
            transport, client = await loop.create_datagram_endpoint(
                UdpClient, remote_addr=(host, port))
            clients.append(transport)
            answers = []
            for i in range(2):  # a client's datagrams all go to its session's backend
                transport.sendto(f"q{i}".encode())
                answers.append(await asyncio.wait_for(client.got.get(), 5))
            names = {a.split(b":")[0] for a in answers}
            assert len(names) == 1 and answers[1].endswith(b":q1")
            seen.append(names.pop())
        assert sorted(seen) == [b"a", b"a", b"b", b"b"]
        # b removed: its sessions end, a new client goes to a
        await proxy.apply(sm.ServiceMap(frontends=(
            sm.Frontend(**{**f.__dict__, "backends": f.backends[:1]}),)))
        listener = proxy.cluster[("10.96.0.10", 53, "UDP")]
        assert all(s.backend.port == ports[0]
                   for s in listener.sessions.values())  # type: ignore[union-attr]
    finally:
        for t in clients:
            t.close()
        for t, _ in servers:
            t.close()
