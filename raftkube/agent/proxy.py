"""The Service data path: a userspace proxy per Service port, as kube-proxy's first
mode was (TCP here; UDP ports get the listeners of udpproxy.py from the same tables).

For every frontend of the service map (servicemap.py) the proxy holds listeners:

- a NodePort listener on the node's address at the nodePort (`127.0.0.2:30080`): since
  every agent on a machine has its own address, agents never clash over a port;
- a ClusterIP listener on the proxy address (the Docker bridge's gateway, which every
  pod can reach) at a port the kernel picks; the packet rules (netrules.py) send a pod's
  packets for `clusterIP:port` there. `cluster_ports()` says which port is which;
- a load balancer listener on the node's address at the Service's own `port`, for a
  LoadBalancer Service whose `status.loadBalancer.ingress` lists that address (the
  cloud controller's `local` provider lists every Ready node's, as k3s's ServiceLB
  serves one). It admits only clients in the Service's `loadBalancerSourceRanges`
  (when it has any); two such Services on one port: the first by namespace/name is
  served (the cloud controller gives the second no ingress, so it never gets here).
  A NodePort equal to that port (the Service's own, or another's) is not listened for
  on this node: the load balancer holds the port, as kube-proxy matches a load
  balancer's rule first.

With `externalTrafficPolicy: Local`, the NodePort and load balancer listeners send
connections from outside only to endpoints on this node (`node_name`), and reset them
when there is none, as kube-proxy drops them: the client (or a load balancer's health
check) tries another node. A connection from inside the node (`internal`: its own
address, or one of its pods) goes to every endpoint, as kube-proxy sends a node's own
and its pods' traffic for a NodePort or load balancer to the cluster-wide chain.

A connection is given to the frontend's backends in turn (round robin from a random
start), and to the next one if a backend refuses or does not answer within
`connect_timeout`: a client never waits on a dead endpoint for longer than that, and
with no endpoint at all it is reset at once (kube-proxy REJECTs such a port for the
same reason: failing fast beats a timeout). When the map changes the new backends apply
to the next connection; connections whose backend was *removed* (not merely unready:
Kubernetes lets those finish) are reset on both sides, so neither end waits on a pod
that is gone. How a backend is dialled (at its pod IP, or through its node's relay when
it runs on another machine) is `route`'s business (relay.py).

Why userspace and not iptables DNAT to pods: see docs/networking.md. In short: several
agents share one kernel here, and a proxy that owns its sockets gives each agent its own
ports on its own address, counts its connections (`ProxyMetrics`), resets connections of
removed endpoints without the conntrack tool, and reaches pods on other machines without
an overlay network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import prometheus_client as prom

from raftkube.agent import servicemap as sm
from raftkube.agent import udpproxy as udp

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
_K = TypeVar("_K")


@dataclass(frozen=True)
class Route:
    """How to dial a backend: connect to host:port, then (for a relay) send `preamble`
    and expect one line `OK` before the stream is the backend's."""

    host: str
    port: int
    preamble: bytes = b""


def direct(backend: sm.Backend) -> Route:
    return Route(backend.ip, backend.port)


class ProxyMetrics:
    """The proxy's Prometheus series, in a registry the agent owns."""

    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.registry = registry
        self.connections = prom.Counter(
            "raftkube_proxy_connections", "Connections accepted by the service proxy, by "
            "Service port, listener (cluster, node) and result (proxied, no_endpoints, "
            "failed: every endpoint tried refused or timed out).",
            ["service", "listener", "result"], registry=registry)
        self.dial_failures = prom.Counter(
            "raftkube_proxy_dial_failures", "Backends that refused or timed out a dial "
            "(the connection then went to the next backend).", ["service"],
            registry=registry)
        self.resets = prom.Counter(
            "raftkube_proxy_removed_endpoint_resets", "Open connections reset because their "
            "endpoint was removed.", ["service"], registry=registry)
        self.active = prom.Gauge("raftkube_proxy_active_connections",
                                 "Connections open through the service proxy now.",
                                 registry=registry)
        self.listeners = prom.Gauge("raftkube_proxy_listeners",
                                    "Ports the service proxy listens on.", registry=registry)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the half-close on."""
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        with contextlib.suppress(OSError):
            writer.write_eof()


async def splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                 b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Both directions until both ends have closed; an error on either side resets
    both (the other end learns at once, rather than at its next write)."""
    try:
        await asyncio.gather(_pump(a[0], b[1]), _pump(b[0], a[1]))
    except (OSError, asyncio.IncompleteReadError):
        reset(a[1])
        reset(b[1])
    finally:
        for w in (a[1], b[1]):
            w.close()


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST: the peer fails now instead of reading a clean EOF."""
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER on with a zero timeout turns close() into a reset.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def dial(route: Route, timeout: float
               ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to a backend, through its relay if the route has one; OSError or
    TimeoutError if it cannot be had within `timeout`."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(route.host, route.port)
        if route.preamble:
            try:
                writer.write(route.preamble)
                answer = await reader.readline()
            except BaseException:
                writer.transport.abort()
                raise
            if answer.strip() != b"OK":
                writer.transport.abort()
                raise ConnectionRefusedError(
                    f"relay {route.host}:{route.port}: {answer.decode(errors='replace')}")
    return reader, writer


class Listener:
    """One listening socket for one frontend, with its open connections."""

    def __init__(self, *, kind: str, frontend: sm.Frontend, proxy: Proxy) -> None:
        self.kind = kind  # "cluster" or "node"
        self.frontend = frontend
        self.proxy = proxy
        self.server: asyncio.Server | None = None
        self.next = proxy.rng.randrange(1 << 30)
        # connection -> (backend, client writer, backend writer)
        self.open: dict[asyncio.Task[None], tuple[sm.Backend, asyncio.StreamWriter,
                                                  asyncio.StreamWriter]] = {}

    @property
    def address(self) -> tuple[str, int]:
        assert self.server is not None and self.server.sockets
        host, port = self.server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accept, host, port, reuse_address=True)

    def update(self, frontend: sm.Frontend) -> None:
        """The frontend's new backends; connections to removed endpoints are reset."""
        self.frontend = frontend
        for backend, client, upstream in list(self.open.values()):
            if not frontend.has(backend):
                self.proxy.metrics.resets.labels(frontend.key).inc()
                reset(client)
                reset(upstream)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for _, client, upstream in list(self.open.values()):
            reset(client)
            reset(upstream)
        if self.open:
            await asyncio.gather(*self.open, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()

    def _order(self, client_ip: str) -> list[sm.Backend]:
        backends = self.proxy.eligible(self.kind, self.frontend, client_ip)
        if not backends:
            return []
        start = self.next % len(backends)
        self.next += 1
        return backends[start:] + backends[:start]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        metrics = self.proxy.metrics
        key = self.frontend.key
        peer = writer.get_extra_info("peername")
        client_ip = str(peer[0]) if peer else ""
        if self.kind == "lb" and self.frontend.source_ranges:
            if not peer or not sm.admits(self.frontend.source_ranges, client_ip):
                metrics.connections.labels(key, self.kind, "source_refused").inc()
                reset(writer)
                return
        candidates = self._order(client_ip)[:self.proxy.max_tries]
        if not candidates:
            metrics.connections.labels(key, self.kind, "no_endpoints").inc()
            reset(writer)
            return
        for backend in candidates:
            try:
                upstream = await dial(self.proxy.route(backend), self.proxy.connect_timeout)
            except (OSError, TimeoutError) as e:
                metrics.dial_failures.labels(key).inc()
                log.info("proxy %s: %s:%d failed: %s", key, backend.ip, backend.port, e)
                continue
            if not self.frontend.has(backend):  # removed while we dialled
                reset(upstream[1])
                continue
            break
        else:
            metrics.connections.labels(key, self.kind, "failed").inc()
            reset(writer)
            return
        metrics.connections.labels(key, self.kind, "proxied").inc()
        metrics.active.inc()
        self.open[task] = (backend, writer, upstream[1])
        try:
            await splice((reader, writer), upstream)
        finally:
            del self.open[task]
            metrics.active.dec()


class Proxy:
    """Listeners for every frontend of the current service map."""

    def __init__(self, *, node_address: str, cluster_address: str | None,
                 metrics: ProxyMetrics, route: Callable[[sm.Backend], Route] = direct,
                 rng: random.Random | None = None, connect_timeout: float = 2.0,
                 max_tries: int = 3, node_name: str = "",
                 internal: Callable[[str], bool] | None = None) -> None:
        self.node_address = node_address
        self.node_name = node_name  # this node's name: its endpoints are the local ones
        # Whether a client address is inside this node (externalTrafficPolicy Local is
        # for the others); by default this node's own address.
        self.internal = internal or (lambda ip: ip == node_address)
        self.cluster_address = cluster_address  # None: no ClusterIP listeners
        self.metrics = metrics
        self.route = route
        self.rng = rng or random.Random()
        self.connect_timeout = connect_timeout
        self.max_tries = max_tries
        # (clusterIP, port, protocol) and (nodePort, protocol) -> listener
        self.cluster: dict[tuple[str, int, str], AnyListener] = {}
        self.node: dict[tuple[int, str], AnyListener] = {}
        self.lb: dict[tuple[int, str], AnyListener] = {}  # (port, protocol), node address
        self.bind_errors: dict[str, str] = {}  # frontend key -> why it has no listener

    def cluster_ports(self, protocol: str = "TCP") -> dict[tuple[str, int], tuple[str, int]]:
        """(clusterIP, port) -> the address its ClusterIP listener has, for `protocol`."""
        return {(ip, port): li.address for (ip, port, proto), li in self.cluster.items()
                if proto == protocol}

    def eligible(self, kind: str, frontend: sm.Frontend, client_ip: str) -> list[sm.Backend]:
        """The backends a new connection to `frontend` from `client_ip` through a `kind`
        listener may go to: with externalTrafficPolicy Local, from outside this node,
        only this node's."""
        if kind in ("node", "lb") and frontend.external_local and \
                not self.internal(client_ip):
            return [b for b in frontend.backends if b.node == self.node_name]
        return list(frontend.backends)

    async def apply(self, smap: sm.ServiceMap) -> None:
        """Listen for exactly the map's TCP and UDP frontends; idempotent."""
        want_cluster: dict[tuple[str, int, str], sm.Frontend] = {}
        want_node: dict[tuple[int, str], sm.Frontend] = {}
        want_lb: dict[tuple[int, str], sm.Frontend] = {}
        self.bind_errors = {}
        for f in smap.frontends:
            if f.protocol not in ("TCP", "UDP"):
                continue  # SCTP is not proxied (docs/networking.md)
            if f.cluster_ip and self.cluster_address is not None:
                want_cluster[(f.cluster_ip, f.port, f.protocol)] = f
            if f.node_port is not None:
                want_node[(f.node_port, f.protocol)] = f
            if self.node_address in f.load_balancer_ips:
                first = want_lb.setdefault((f.port, f.protocol), f)
                if first is not f:
                    self.bind_errors[f.key] = (f"{self.node_address}:{f.port}: the load "
                                               f"balancer of {first.key} has the port")
        for key_l, f in want_lb.items():
            # Both want the node's address at this port: the load balancer has it, as
            # kube-proxy matches a load balancer's rule before the NodePorts' (its source
            # ranges are not to be bypassed through a NodePort listener).
            shadowed = want_node.pop(key_l, None)
            if shadowed is not None and shadowed.key != f.key:
                self.bind_errors[shadowed.key] = (f"{self.node_address}:{key_l[0]}: the load "
                                                  f"balancer of {f.key} has the port")
        for key_c in [k for k in self.cluster if k not in want_cluster]:
            await self.cluster.pop(key_c).close()
        for key_n in [k for k in self.node if k not in want_node]:
            await self.node.pop(key_n).close()
        for key_l in [k for k in self.lb if k not in want_lb]:
            await self.lb.pop(key_l).close()
        for key_c, f in want_cluster.items():
            await self._ensure(self.cluster, key_c, f, "cluster", self.cluster_address or "", 0)
        for key_n, f in want_node.items():
            await self._ensure(self.node, key_n, f, "node", self.node_address, key_n[0])
        for key_l, f in want_lb.items():
            await self._ensure(self.lb, key_l, f, "lb", self.node_address, key_l[0])
        self.metrics.listeners.set(len(self.cluster) + len(self.node) + len(self.lb))

    async def _ensure(self, table: dict[_K, AnyListener], key: _K, frontend: sm.Frontend,
                      kind: str, host: str, port: int) -> None:
        listener = table.get(key)
        if listener is not None:
            listener.update(frontend)
            return
        if frontend.protocol == "UDP":
            listener = udp.UdpListener(frontend=frontend, pick=self._pick_udp(kind),
                                       admit=self._admit_udp(kind))
        else:
            listener = Listener(kind=kind, frontend=frontend, proxy=self)
        try:
            await listener.start(host, port)
        except OSError as e:
            # Another program holds the port: this frontend has no listener on this node
            # until the next sync finds the port free (the other frontends are served).
            self.bind_errors[frontend.key] = f"{host}:{port}: {e.strerror or e}"
            log.warning("proxy %s: cannot listen on %s:%d: %s", frontend.key, host, port, e)
            return
        table[key] = listener

    def _pick_udp(self, kind: str) -> Callable[[udp.UdpListener, str], sm.Backend | None]:
        def pick(li: udp.UdpListener, client_ip: str) -> sm.Backend | None:
            """The next backend on this machine (UDP is not relayed), in turn."""
            backends = [b for b in self.eligible(kind, li.frontend, client_ip)
                        if not self.route(b).preamble]
            if not backends:
                self.metrics.connections.labels(li.frontend.key, kind, "no_endpoints").inc()
                return None
            li.next += 1
            self.metrics.connections.labels(li.frontend.key, kind, "proxied").inc()
            return backends[li.next % len(backends)]
        return pick

    def _admit_udp(self, kind: str) -> Callable[[udp.UdpListener, str], bool] | None:
        if kind != "lb":
            return None

        def admit(li: udp.UdpListener, client_ip: str) -> bool:
            if sm.admits(li.frontend.source_ranges, client_ip):
                return True
            self.metrics.connections.labels(li.frontend.key, kind, "source_refused").inc()
            return False
        return admit

    async def close(self) -> None:
        for li in [*self.cluster.values(), *self.node.values(), *self.lb.values()]:
            await li.close()
        self.cluster.clear()
        self.node.clear()
        self.lb.clear()
        self.metrics.listeners.set(0)


AnyListener = Listener | udp.UdpListener
