"""Cluster DNS: a small DNS server per agent that names the Services of the service map.

What CoreDNS's `kubernetes` plugin answers for Services, on dnslib's wire format:

- `NAME.NAMESPACE.svc.DOMAIN` (DOMAIN is `cluster.local` by default): A (and AAAA)
  records of the Service's ClusterIP, or of its ready endpoints for a headless Service,
  or a CNAME to an ExternalName Service's externalName, with a TTL of 5 s (CoreDNS's
  default), so a change reaches pods within seconds;
- any other name in DOMAIN, or a Service that does not exist: NXDOMAIN with the
  domain's SOA (negative answers are cached by resolvers for the SOA's minimum, 5 s);
- a name outside DOMAIN is forwarded to the host's resolvers (`upstreams`), at most
  `max_forwards` at a time and each for at most `forward_timeout` seconds, or REFUSED
  when there are none. Everything is bounded: a query is one UDP datagram or one TCP
  message of at most 64 KiB, TCP connections are limited in number and idle time.

Pods ask short names (`web`, `web.other`): their resolv.conf carries the search path
Kubernetes writes (`NS.svc.DOMAIN svc.DOMAIN DOMAIN`, `ndots:5`, see `pod_dns`), so the
resolver tries `web.NS.svc.DOMAIN` first; the server itself only answers full names.
`answer()` is pure; `DnsServer` is the asyncio shell (UDP and TCP on one address).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import struct
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dnslib

log = logging.getLogger(__name__)

TTL = 5
MAX_MESSAGE = 65535
Lookup = Callable[[str, str], "tuple[str, ...] | None"]
Alias = Callable[[str, str], "str | None"]


def no_alias(_name: str, _namespace: str) -> str | None:
    return None


@dataclass(frozen=True)
class PodDns:
    """What a pod's resolv.conf says (the sandbox's dns_servers/searches/options)."""

    servers: tuple[str, ...]
    searches: tuple[str, ...]
    options: tuple[str, ...]


def pod_dns(*, namespace: str, server: str, domain: str) -> PodDns:
    """Kubernetes' ClusterFirst resolv.conf for a pod in `namespace`."""
    return PodDns(servers=(server,),
                  searches=(f"{namespace}.svc.{domain}", f"svc.{domain}", domain),
                  options=("ndots:5",))


def _soa(domain: str) -> dnslib.RR:
    return dnslib.RR(domain, dnslib.QTYPE.SOA, ttl=TTL, rdata=dnslib.SOA(
        f"ns.dns.{domain}", f"hostmaster.{domain}", (1, 7200, 1800, 86400, TTL)))


def _family(qtype: int) -> tuple[type[Any], ...]:
    if qtype == dnslib.QTYPE.A:
        return (dnslib.A,)
    if qtype == dnslib.QTYPE.AAAA:
        return (dnslib.AAAA,)
    if qtype == dnslib.QTYPE.ANY:
        return (dnslib.A, dnslib.AAAA)
    return ()


def answer(request: dnslib.DNSRecord, *, lookup: Lookup, domain: str,
           alias: Alias = no_alias) -> dnslib.DNSRecord | None:
    """The reply to a query about the cluster domain; None if the name is outside it
    (the caller forwards or refuses). An ExternalName Service (`alias`) is a CNAME to
    its externalName, which the client's resolver then looks up itself."""
    reply = request.reply()  # same id and question, QR and AA set, RD copied
    if request.header.opcode != dnslib.OPCODE.QUERY or len(request.questions) != 1:
        reply.header.rcode = dnslib.RCODE.NOTIMP
        return reply
    question = request.q
    labels = [bytes(x).decode("ascii", "replace").lower() for x in question.qname.label]
    zone = domain.lower().strip(".").split(".")
    if labels[-len(zone):] != zone:
        return None
    if question.qclass != dnslib.CLASS.IN:
        reply.header.rcode = dnslib.RCODE.REFUSED
        return reply
    inside = labels[:-len(zone)]
    addresses = None
    if len(inside) == 3 and inside[2] == "svc":
        target = alias(inside[0], inside[1])
        if target is not None:
            reply.add_answer(dnslib.RR(question.qname, dnslib.QTYPE.CNAME, ttl=TTL,
                                       rdata=dnslib.CNAME(target)))
            return reply
        addresses = lookup(inside[0], inside[1])
    if addresses is None:
        reply.header.rcode = dnslib.RCODE.NXDOMAIN
        reply.add_auth(_soa(domain))
        return reply
    wanted = _family(question.qtype)
    for address in addresses:
        rtype, rdata = ((dnslib.QTYPE.AAAA, dnslib.AAAA(address)) if ":" in address
                        else (dnslib.QTYPE.A, dnslib.A(address)))
        if type(rdata) in wanted:
            reply.add_answer(dnslib.RR(question.qname, rtype, ttl=TTL, rdata=rdata))
    if not reply.rr:
        reply.add_auth(_soa(domain))  # NOERROR, no data: the name exists
    return reply


def host_resolvers(path: str = "/etc/resolv.conf") -> list[str]:
    """The nameservers of the host's resolv.conf (the forwarders by default)."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    return [parts[1] for parts in (ln.split() for ln in lines)
            if len(parts) >= 2 and parts[0] == "nameserver"]


def upstream_address(text: str) -> tuple[str, int]:
    """`IP` (port 53) or `IPv4:PORT` or `[IPv6]:PORT`."""
    if text.startswith("["):
        host, _, port = text[1:].partition("]:")
        return host, int(port or 53)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, 53


def check_upstream(text: str) -> None:
    """ValueError saying what is wrong with an upstream's address."""
    host, port = upstream_address(text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


class Resolver:
    """Answers one query: the cluster domain from `lookup`, the rest forwarded."""

    def __init__(self, *, lookup: Lookup, alias: Alias = no_alias,
                 domain: str = "cluster.local",
                 upstreams: Sequence[str] = (), forward_timeout: float = 2.0,
                 max_forwards: int = 64) -> None:
        self.lookup = lookup
        self.alias = alias
        self.domain = domain.strip(".")
        self.upstreams = list(upstreams)
        self.forward_timeout = forward_timeout
        self._forwards = asyncio.Semaphore(max_forwards)
        self.max_forwards = max_forwards
        self.queries = 0
        self.forwarded = 0

    async def resolve(self, data: bytes) -> bytes | None:
        """The reply's bytes; None for a message that is not a query at all."""
        try:
            request = dnslib.DNSRecord.parse(data)
        except (dnslib.DNSError, struct.error, ValueError, IndexError, UnicodeError):
            return None
        if request.header.qr:
            return None  # a reply: never answer one
        self.queries += 1
        try:
            reply = answer(request, lookup=self.lookup, domain=self.domain,
                           alias=self.alias)
        except (dnslib.DNSError, ValueError) as e:
            log.info("dns: cannot answer %s: %s", request.q.qname, e)
            reply = request.reply()
            reply.header.rcode = dnslib.RCODE.SERVFAIL
        if reply is not None:
            return bytes(reply.pack())
        return await self.forward(request, data)

    async def forward(self, request: dnslib.DNSRecord, data: bytes) -> bytes:
        failure = request.reply()
        failure.header.ra = 1
        if not self.upstreams:
            failure.header.rcode = dnslib.RCODE.REFUSED
            return bytes(failure.pack())
        failure.header.rcode = dnslib.RCODE.SERVFAIL
        if self._forwards.locked():
            return bytes(failure.pack())  # saturated: fail now rather than queue
        async with self._forwards:
            self.forwarded += 1
            for upstream in self.upstreams:
                try:
                    got = await self._ask(upstream, data)
                except (OSError, TimeoutError):
                    continue
                if len(got) >= 2 and got[:2] == data[:2]:
                    return got
        return bytes(failure.pack())

    async def _ask(self, upstream: str, data: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            _Exchange, remote_addr=upstream_address(upstream))
        try:
            transport.sendto(data)
            async with asyncio.timeout(self.forward_timeout):
                return await protocol.answer
        finally:
            transport.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server.spawn(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: Any) -> None:
        out = await self.server.resolver.resolve(data)
        if out is not None and self.transport is not None and \
                not self.transport.is_closing():
            if len(out) > 512:  # a UDP reply without EDNS: truncated, the client retries
                cut = dnslib.DNSRecord.parse(out)
                cut.rr, cut.auth, cut.ar = [], [], []
                cut.header.tc = 1
                out = bytes(cut.pack())
            self.transport.sendto(out, addr)


class DnsServer:
    """UDP and TCP on `host:port` (port 0: the kernel picks one, the same for both)."""

    def __init__(self, *, resolver: Resolver, host: str, port: int = 0,
                 max_tcp: int = 64, tcp_idle: float = 10.0, max_pending: int = 256) -> None:
        self.resolver = resolver
        self.host = host
        self.port = port
        self.max_tcp = max_tcp
        self.tcp_idle = tcp_idle
        self.max_pending = max_pending
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_open = 0

    def spawn(self, coro: Any) -> None:
        if len(self._tasks) >= self.max_pending:
            coro.close()  # more queries in flight than we answer: this one is dropped
            return
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        # The TCP socket first, at the requested port (or one the kernel picks); the UDP
        # socket takes the same number, which is what a resolver dials for both.
        for _ in range(10):
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, self.port,
                                                   reuse_address=True)
            port = int(self._tcp.sockets[0].getsockname()[1])
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _Udp(self), local_addr=(self.host, port))
            except OSError:
                self._tcp.close()
                await self._tcp.wait_closed()
                if self.port:
                    raise
                continue  # the UDP port of that number is taken: another number
            self._udp, self.port = transport, port
            return
        raise OSError(f"no port free for DNS on {self.host} over both UDP and TCP")

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if self._tcp_open >= self.max_tcp:
            writer.close()
            return
        self._tcp_open += 1
        try:
            while True:
                async with asyncio.timeout(self.tcp_idle):
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    data = await reader.readexactly(size)
                out = await self.resolver.resolve(data)
                if out is None:
                    break
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tcp_open -= 1
            writer.close()

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)
