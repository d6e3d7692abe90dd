"""The ClusterIP and DNS data path through the real kernel, without Docker: a "pod" is a
network namespace with a veth to the host (as a container on the Docker bridge is), the
agent's service network runs in this process with its iptables rules in the host's nat
table, and the pod connects to `clusterIP:port` and asks `169.254.20.10:53`.

The rules match the pod's source address only and live in chains named for this test's
own node, so nothing else on the machine sees them; the fixture removes the namespace,
the veth and the chains even when the test fails.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import prometheus_client as prom
import pytest

from raftkube.agent import netrules, services
from raftkube.client import rest, transport
from tests.unit.service_support import backends, endpoint, endpoint_slice, service

pytestmark = pytest.mark.cluster


@dataclass
class Pod:
    netns: str
    ip: str
    gateway: str

    def run(self, code: str, timeout: float = 20) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.netns, sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def pod() -> Iterator[Pod]:
    tag = uuid.uuid4().hex[:6]
    netns, host_if, pod_if = f"rkpod-{tag}", f"rkh{tag}", f"rkp{tag}"
    octet = 1 + int(tag[:2], 16) % 250
    gateway, ip = f"10.252.{octet}.1", f"10.252.{octet}.2"
    sh("ip", "netns", "add", netns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", pod_if)
        sh("ip", "link", "set", pod_if, "netns", netns)
        sh("ip", "addr", "add", f"{gateway}/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for argv in (["ip", "addr", "add", f"{ip}/30", "dev", pod_if],
                     ["ip", "link", "set", pod_if, "up"], ["ip", "link", "set", "lo", "up"],
                     ["ip", "route", "add", "default", "via", gateway]):
            sh("ip", "netns", "exec", netns, *argv)
        yield Pod(netns, ip, gateway)
    finally:
        subprocess.run(["ip", "link", "delete", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "delete", netns], capture_output=True)


@pytest.fixture
async def net(pod: Pod) -> AsyncIterator[services.ServiceNetwork]:
    node = f"test-{uuid.uuid4().hex[:8]}"

    async def pod_ips() -> set[str]:
        return {pod.ip}

    async with transport.Transport(["http://127.0.0.1:9"], "t" * 24) as tp:
        n = services.ServiceNetwork(
            node=node, client=rest.RestClient(tp),
            options=services.ServiceOptions(node_address="127.0.0.1",
                                            proxy_address=pod.gateway, iptables=True,
                                            relay_port=0),
            registry=prom.CollectorRegistry(), pod_ips=pod_ips)
        try:
            assert n.dns is not None
            await n.dns.start()
            yield n
        finally:
            await n.close()
            assert netrules.present(node, "127.0.0.1") == {}  # close() removed the rules


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


CONNECT = """
import socket, sys
names = []
for _ in range({n}):
    s = socket.create_connection(("{ip}", {port}), timeout=5)
    names.append(s.makefile().readline().strip())
    s.close()
print(" ".join(names))
"""

UDP_ASK = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect(("{ip}", {port}))
s.send(b"ping")
print(s.recv(100).decode())
"""

RESOLVE = """
import dnslib
q = dnslib.DNSRecord.question("{name}")
r = dnslib.DNSRecord.parse(q.send("169.254.20.10", 53, timeout=5))
print(dnslib.RCODE.get(r.header.rcode), " ".join(str(rr.rdata) for rr in r.rr))
"""


@pytest.mark.timeout(120)
async def test_a_pod_reaches_a_cluster_ip_and_resolves_names(
        pod: Pod, net: services.ServiceNetwork) -> None:
    async with backends("a", "b") as (a, b):
        net.services.cache.put(service("web", cluster_ip="10.96.251.7",
                                       ports=[{"name": "http", "port": 80}]))
        net.slices.cache.put(endpoint_slice("web", [endpoint(a.host)], name="web-a",
                                            ports=[{"name": "http", "port": a.port}]))
        net.slices.cache.put(endpoint_slice("web", [endpoint(b.host)], name="web-b",
                                            ports=[{"name": "http", "port": b.port}]))
        await net.sync()
        connect = CONNECT.format(n=10, ip="10.96.251.7", port=80)
        got = collections.Counter((await asyncio.to_thread(pod.run, connect)).split())
        assert got == {"a": 5, "b": 5}
        answer = await asyncio.to_thread(pod.run, RESOLVE.format(
            name="web.default.svc.cluster.local"))
        assert answer == "NOERROR 10.96.251.7"
        answer = await asyncio.to_thread(pod.run, RESOLVE.format(
            name="nope.default.svc.cluster.local"))
        assert answer.startswith("NXDOMAIN")

        # A UDP Service port: the pod's datagram reaches the backend and the answer comes
        # back from the Service's address.
        loop = asyncio.get_running_loop()
        echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
        try:
            udp_port = echo.get_extra_info("sockname")[1]
            net.services.cache.put(service("echo", cluster_ip="10.96.251.8", ports=[
                {"name": "u", "port": 53, "protocol": "UDP"}]))
            net.slices.cache.put(endpoint_slice("echo", [endpoint("127.0.0.1")], ports=[
                {"name": "u", "port": udp_port, "protocol": "UDP"}]))
            await net.sync()
            answer = await asyncio.to_thread(pod.run, UDP_ASK.format(ip="10.96.251.8",
                                                                     port=53))
            assert answer == "echo:ping"
        finally:
            echo.close()

        # b leaves: the next connections all go to a
        net.slices.cache.remove("default/web-b")
        await net.sync()
        got = collections.Counter((await asyncio.to_thread(pod.run, connect)).split())
        assert got == {"a": 10}
