"""The pod relay over loopback: a proxy reaches a pod of another node through that
node's relay; the relay refuses what is not its node's pod, and bad requests."""

from __future__ import annotations

import asyncio
import random

import prometheus_client as prom
import pytest

from raftkube.agent import proxy as px
from raftkube.agent import relay
from raftkube.agent import servicemap as sm
from tests.unit.service_support import ask, backends

pytestmark = pytest.mark.unit


async def test_the_proxy_reaches_a_remote_pod_through_its_nodes_relay() -> None:
    async with backends("remote") as (pod,):
        server = relay.Relay(host="127.0.0.3", port=0, allowed={"127.0.0.1"}.__contains__)
        await server.start()
        proxy = px.Proxy(node_address="127.0.0.2", cluster_address="127.0.0.2",
                         metrics=px.ProxyMetrics(prom.CollectorRegistry()),
                         rng=random.Random(1),
                         route=lambda b: relay.route_via("127.0.0.3", server.port, b.ip,
                                                         b.port))
        try:
            f = sm.Frontend(namespace="default", service="web", port_name="", protocol="TCP",
                            cluster_ip="10.96.0.1", port=80, node_port=None,
                            backends=(sm.Backend(pod.host, pod.port, "n2", "127.0.0.3"),))
            await proxy.apply(sm.ServiceMap(frontends=(f,)))
            host, port = proxy.cluster_ports()[("10.96.0.1", 80)]
            assert [await ask(host, port) for _ in range(3)] == ["remote"] * 3
            # the stream after the handshake is the pod's, both ways
            reader, writer = await asyncio.open_connection(host, port)
            assert await reader.readline() == b"remote\n"
            writer.write(b"echo\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"echo\n"
            writer.close()
        finally:
            await proxy.close()
            await server.close()


@pytest.mark.parametrize(("line", "answer"), [
    (b"RELAY 127.0.0.9 80\n", b"ERR 127.0.0.9 is not a pod of this node\n"),
    (b"GET / HTTP/1.0\n", b"ERR expected `RELAY IP PORT`\n"),
    (b"RELAY 127.0.0.1 99999\n", b"ERR port 99999 is out of range\n"),
    (b"RELAY " + b"1" * 200 + b"\n", b"ERR request line over 128 bytes\n"),
])
async def test_the_relay_refuses_what_it_should_not_dial(line: bytes, answer: bytes) -> None:
    server = relay.Relay(host="127.0.0.1", port=0, allowed={"127.0.0.1"}.__contains__)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(line)
        assert await asyncio.wait_for(reader.readline(), 5) == answer
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    finally:
        await server.close()


async def test_a_silent_client_is_dropped_after_the_handshake_timeout() -> None:
    server = relay.Relay(host="127.0.0.1", port=0, allowed=lambda ip: True,
                         handshake_timeout=0.2)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"ERR")
        writer.close()
    finally:
        await server.close()
