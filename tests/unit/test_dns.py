"""The cluster DNS server on loopback, asked with dnslib: A records, names through the
pod's search path, NXDOMAIN, forwarding and refusal, TCP."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import dnslib
import pytest

from raftkube.agent import dns
from raftkube.agent import servicemap as sm
from tests.unit.service_support import endpoint, endpoint_slice, service

pytestmark = pytest.mark.unit

EXT = service("ext", type_="ExternalName", cluster_ip="", ports=[])
EXT["spec"]["externalName"] = "db.example.com"
SMAP = sm.build([service("web"), service("api", ns="shop", cluster_ip="10.96.3.4"),
                 service("db", cluster_ip="None", ports=[]), EXT],
                [endpoint_slice("db", [endpoint("172.17.0.7"), endpoint("172.17.0.8"),
                                       endpoint("172.17.0.9", ready=False)], ports=[])], [])


async def start(**kw: object) -> dns.DnsServer:
    resolver = dns.Resolver(lookup=SMAP.lookup, alias=SMAP.alias,
                            **kw)  # type: ignore[arg-type]
    server = dns.DnsServer(resolver=resolver, host="127.0.0.1")
    await server.start()
    return server


@pytest.fixture
async def server() -> AsyncIterator[dns.DnsServer]:
    s = await start()
    try:
        yield s
    finally:
        await s.close()


async def query(server: dns.DnsServer, name: str, qtype: str = "A", *,
                tcp: bool = False) -> dnslib.DNSRecord:
    q = dnslib.DNSRecord.question(name, qtype)
    host, port = server.address
    raw = await asyncio.to_thread(q.send, host, port, tcp=tcp, timeout=5)
    reply = dnslib.DNSRecord.parse(raw)
    assert reply.header.id == q.header.id
    return reply


def addresses(reply: dnslib.DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr)


def rcode(reply: dnslib.DNSRecord) -> str:
    return str(dnslib.RCODE.get(reply.header.rcode))


async def test_a_record_of_a_service_full_name(server: dns.DnsServer) -> None:
    reply = await query(server, "web.default.svc.cluster.local")
    assert rcode(reply) == "NOERROR" and addresses(reply) == ["10.96.0.10"]
    assert reply.rr[0].ttl == dns.TTL and reply.header.aa
    assert addresses(await query(server, "API.Shop.svc.cluster.local.")) == ["10.96.3.4"]


@pytest.mark.parametrize(("short", "namespace", "expected"), [
    ("web", "default", "10.96.0.10"),             # NAME
    ("api.shop", "default", "10.96.3.4"),         # NAME.NAMESPACE, from another namespace
    ("api", "shop", "10.96.3.4"),
    ("web.default.svc.cluster.local", "shop", "10.96.0.10"),  # the full name
])
async def test_short_names_resolve_through_the_pods_search_path(
        server: dns.DnsServer, short: str, namespace: str, expected: str) -> None:
    conf = dns.pod_dns(namespace=namespace, server="169.254.20.10", domain="cluster.local")
    assert conf.searches == (f"{namespace}.svc.cluster.local", "svc.cluster.local",
                             "cluster.local")
    assert conf.options == ("ndots:5",)
    # What a stub resolver does with ndots:5: a name with fewer than 5 dots is tried
    # with each search domain first, then as it is; the first NOERROR answer wins.
    candidates = [f"{short}.{s}" for s in conf.searches] + [short]
    for name in candidates:
        reply = await query(server, name)
        if rcode(reply) == "NOERROR" and reply.rr:
            assert addresses(reply) == [expected]
            return
        assert rcode(reply) == "NXDOMAIN"
    raise AssertionError(f"{short} did not resolve")


@pytest.mark.parametrize("name", ["nope.default.svc.cluster.local", "web.nope.svc.cluster.local",
                                  "default.svc.cluster.local", "cluster.local",
                                  "x.web.default.svc.cluster.local",
                                  "web.default.pod.cluster.local"])
async def test_unknown_names_in_the_cluster_domain_are_nxdomain(server: dns.DnsServer,
                                                                name: str) -> None:
    reply = await query(server, name)
    assert rcode(reply) == "NXDOMAIN" and not reply.rr
    assert reply.auth and reply.auth[0].rtype == dnslib.QTYPE.SOA


async def test_headless_service_answers_its_ready_pods(server: dns.DnsServer) -> None:
    reply = await query(server, "db.default.svc.cluster.local")
    assert addresses(reply) == ["172.17.0.7", "172.17.0.8"]


async def test_aaaa_of_an_ipv4_service_is_no_data_not_nxdomain(server: dns.DnsServer) -> None:
    reply = await query(server, "web.default.svc.cluster.local", "AAAA")
    assert rcode(reply) == "NOERROR" and not reply.rr


async def test_other_names_are_refused_without_upstreams(server: dns.DnsServer) -> None:
    reply = await query(server, "example.com")
    assert rcode(reply) == "REFUSED"


async def test_other_names_are_forwarded_to_the_upstream() -> None:
    # The upstream is another of our servers whose cluster domain is example.com.
    upstream = dns.DnsServer(resolver=dns.Resolver(
        lookup=lambda name, ns: ("192.0.2.7",) if (name, ns) == ("www", "shop") else None,
        domain="example.com"), host="127.0.0.1")
    await upstream.start()
    forwarder = await start(upstreams=[f"127.0.0.1:{upstream.port}"], forward_timeout=2.0)
    try:
        reply = await query(forwarder, "www.shop.svc.example.com")
        assert addresses(reply) == ["192.0.2.7"]
        assert rcode(await query(forwarder, "gone.shop.svc.example.com")) == "NXDOMAIN"
    finally:
        await forwarder.close()
        await upstream.close()


async def test_a_silent_upstream_gives_servfail_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        forwarder = await start(upstreams=[f"127.0.0.1:{silent.getsockname()[1]}"],
                                forward_timeout=0.3)
        try:
            assert rcode(await query(forwarder, "example.com")) == "SERVFAIL"
        finally:
            await forwarder.close()


async def test_tcp_queries_are_answered(server: dns.DnsServer) -> None:
    reply = await query(server, "web.default.svc.cluster.local", tcp=True)
    assert addresses(reply) == ["10.96.0.10"]


async def test_garbage_gets_no_answer_and_the_server_keeps_serving(server: dns.DnsServer
                                                                   ) -> None:
    host, port = server.address
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(struct.pack("!H", 5) + b"\x00\x01junk"[:5])
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert addresses(await query(server, "web.default.svc.cluster.local")) == ["10.96.0.10"]


async def test_an_external_name_service_is_a_cname(server: dns.DnsServer) -> None:
    reply = await query(server, "ext.default.svc.cluster.local")
    assert rcode(reply) == "NOERROR"
    assert [(rr.rtype, str(rr.rdata)) for rr in reply.rr] == [(dnslib.QTYPE.CNAME,
                                                              "db.example.com.")]
