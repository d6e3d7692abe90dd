"""One agent process: one node, or `count` simulated nodes at once (hollow nodes).

Each node is its own Node, Lease, runtime and pod loop, and speaks with its own node
token (the API authorizes a node token for its node's objects only), but the nodes of
one process share one transport: one connection pool and one view of which master
answers, as kubemark's hollow nodes share a process. A node starts its pod loop once it
is registered.

Hollow nodes are named `NAME-1` ... `NAME-N` and take consecutive pod ranges of the
size of `pod_cidr`, starting at it (10.244.0.0/24, 10.244.1.0/24, ...), so their pod IPs
never collide and are the same at every run.

With the Docker runtime (`--runtime docker`, the default) a node's containers carry its
name and the cluster's id (`--cluster-id`): agents of several nodes and clusters can
share one engine. Its capacity is the host's unless flags say otherwise, and its status
tells the images present and memory or disk pressure (`hostinfo.py`).

Hollow nodes come up a few at a time (`AgentOptions.starting`, 16): a node holds its
turn from registration until its two informers have listed and opened their watches.
Real kubelets start spread over minutes; 1,000 hollow nodes starting at once sent the
masters 6,000 requests and 2,000 new connections within a second, which starved their
Raft ticks into an election storm, and no node was Ready in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import platform
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import prometheus_client as prom
from aiohttp import web

from raftkube.agent import (
    actions,
    dns,
    dockerspec,
    hostinfo,
    kubelet,
    metrics,
    network,
    node,
    prober,
    probes,
    server,
    services,
    simulated,
    volumes,
)
from raftkube.agent import runtime as rt
from raftkube.api import kinds
from raftkube.client import events as ev
from raftkube.client import informer as inf
from raftkube.client import rest, transport

log = logging.getLogger(__name__)

RUNTIMES = ("docker", "simulated")
SIMULATED_CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110"}


@dataclass
class AgentOptions:
    servers: list[str]
    ca: str | None = None  # PEM text the https masters are verified against
    address: str = "127.0.0.1"
    runtime: str = "simulated"
    pod_cidr: str = "10.244.0.0/24"
    capacity: dict[str, str] = field(default_factory=lambda: dict(SIMULATED_CAPACITY))
    labels: dict[str, str] = field(default_factory=dict)
    lease_interval: float = 2.0
    status_interval: float = 10.0
    relist_period: float = 1.0
    crash_backoff_base: float = 10.0
    crash_backoff_cap: float = 300.0
    # Where pods' volumes live: ROOT/pods/UID/volumes/NAME (ROOT/NODE/pods/... for each
    # of several simulated nodes). None: /var/lib/raftkube/agent/NAME.
    root_dir: str | None = None
    config_refresh: float = 10.0  # seconds between reads of the pods' ConfigMaps, Secrets
    cluster: str = "default"  # the Docker runtime's cluster label
    pause_image: str = dockerspec.PAUSE_IMAGE
    # Service networking (services.py); None: chosen from the runtime (service_options)
    service_network: bool = True
    agent_name: str = ""  # names the agent's packet rules; "" is its first node's name
    proxy_address: str | None = None  # "": no ClusterIP listeners
    iptables: bool | None = None
    cluster_domain: str = "cluster.local"
    cluster_dns: str = services.CLUSTER_DNS
    dns_port: int = 0
    dns_upstreams: list[str] | None = None
    relay_port: int | None = None
    agent_port: int = 10250  # the agent's API for the masters (0: any free port)
    starting: int = 16  # hollow nodes of one process coming up at once


DEFAULT_ROOT = "/var/lib/raftkube/agent"


def root_dirs(root: str | None, names: list[str]) -> list[str]:
    """Each node's own directory: the root itself for one node, ROOT/NODE for several
    (orphaned pod directories are swept per node, so nodes never share one)."""
    if root is None:
        stem = names[0] if len(names) == 1 else names[0].rsplit("-", 1)[0]
        root = os.path.join(DEFAULT_ROOT, stem)
    return [root] if len(names) == 1 else [os.path.join(root, n) for n in names]


class AgentError(Exception):
    """The agent cannot start as configured (the message names the flag)."""


def service_options(options: AgentOptions) -> services.ServiceOptions:
    """The service networking of an agent, defaults resolved: real pods (any runtime
    but the simulated one) get ClusterIP listeners on the Docker bridge's gateway, the
    packet rules that lead to them, and the relay; the host's resolvers are the DNS
    forwarders (minus the addresses that would send a query back to us)."""
    real = options.runtime != "simulated"
    proxy_address = options.proxy_address
    if proxy_address is None and real:
        proxy_address = network.interface_ipv4(network.DOCKER_BRIDGE)
        if proxy_address is None:
            log.warning("no %s interface: pods get no ClusterIPs and no cluster DNS "
                        "(give --proxy-address)", network.DOCKER_BRIDGE)
    iptables = options.iptables
    if iptables is None:
        iptables = real and bool(proxy_address)
    upstreams = options.dns_upstreams
    if upstreams is None:
        upstreams = [u for u in dns.host_resolvers()
                     if u not in (options.cluster_dns, proxy_address, options.address)]
    relay_port = options.relay_port
    if relay_port is None:
        relay_port = services.RELAY_PORT if real else 0
    return services.ServiceOptions(
        node_address=options.address, proxy_address=proxy_address or None,
        iptables=iptables, cluster_domain=options.cluster_domain,
        cluster_dns=options.cluster_dns, dns_port=options.dns_port,
        dns_upstreams=list(upstreams), relay_port=relay_port)


def node_names(name: str, count: int) -> list[str]:
    return [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]


def pod_cidrs(first: str, count: int) -> list[str]:
    """`count` consecutive ranges the size of `first`, starting at it."""
    net = ipaddress.ip_network(first, strict=False)
    size = net.num_addresses
    out = []
    for i in range(count):
        start = net.network_address + i * size
        out.append(str(ipaddress.ip_network(f"{start}/{net.prefixlen}")))
    return out


def architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def make_runtime(kind: str, *, pod_cidr: str, host_ip: str,
                 clock: Callable[[], float], node_name: str = "",
                 options: AgentOptions | None = None) -> rt.ContainerRuntime:
    if kind == "simulated":
        return simulated.SimulatedRuntime(pod_cidr=pod_cidr, host_ip=host_ip, clock=clock)
    if kind == "docker":
        from raftkube.agent import docker  # the docker SDK only where it is used

        opts = options or AgentOptions(servers=[])
        return docker.DockerRuntime(node_name=node_name, cluster=opts.cluster,
                                    host_ip=host_ip, pause_image=opts.pause_image,
                                    clock=clock)
    raise ValueError(f"--runtime: unknown runtime {kind!r} (known: {', '.join(RUNTIMES)})")


def make_prober(runtime: rt.ContainerRuntime, *, events: ev.EventRecorder,
                metrics: prober.ProbeMetrics | None,
                clock: Callable[[], float]) -> probes.Prober:
    """The simulated runtime's pod IPs are not real: its probes pass without being sent
    (SimulatedProber); any other runtime's containers are probed for real."""
    if isinstance(runtime, simulated.SimulatedRuntime):
        return simulated.SimulatedProber()
    return prober.Prober(runtime=runtime, events=events, metrics=metrics, clock=clock)


class NodeAgent:
    """One node: its heartbeat, its runtime and its pod loop."""

    def __init__(self, *, name: str, token: str, tp: transport.Transport,
                 options: AgentOptions, pod_cidr: str, root_dir: str,
                 services: inf.Informer | None = None,
                 clock: Callable[[], float] = time.time,
                 probe_metrics: prober.ProbeMetrics | None = None) -> None:
        self.name = name
        self.client = rest.RestClient(tp, token=token)
        self.runtime = make_runtime(options.runtime, pod_cidr=pod_cidr,
                                    host_ip=options.address, clock=clock,
                                    node_name=name, options=options)
        config = node.NodeConfig(
            name=name, address=options.address, pod_cidr=pod_cidr,
            capacity=dict(options.capacity), labels=dict(options.labels),
            runtime=f"{self.runtime.name}://{self.runtime.version}",
            architecture=architecture(), kernel=platform.release(),
            os_image=hostinfo.os_image() if options.runtime == "docker" else "",
            boot_id=str(uuid.uuid4()), lease_interval=options.lease_interval,
            status_interval=options.status_interval, agent_port=options.agent_port)
        self.heartbeat = node.NodeHeartbeat(config=config, client=self.client, clock=clock,
                                            facts=self._facts if hasattr(
                                                self.runtime, "images") else None)
        self._root_dir: str | None = None
        self.events = ev.EventRecorder(self.client, "kubelet", host=name, clock=clock)
        self.prober = make_prober(self.runtime, events=self.events, metrics=probe_metrics,
                                  clock=clock)
        self.kubelet = kubelet.Kubelet(
            node_name=name, host_ip=options.address, client=self.client,
            runtime=self.runtime, prober=self.prober, events=self.events, clock=clock,
            backoff=actions.CrashBackoff(base=options.crash_backoff_base,
                                         cap=options.crash_backoff_cap),
            relist_period=options.relist_period, allocatable=options.capacity,
            services=services, config_refresh=options.config_refresh,
            volume_manager=volumes.VolumeManager(
                root_dir, clock=clock, memory=options.runtime != "simulated"))

    async def _facts(self) -> node.NodeFacts:
        """The images present and the pressure conditions, from the engine and the host."""
        runtime: Any = self.runtime
        if self._root_dir is None:
            self._root_dir = str(await runtime.root_dir())
        pressure = set()
        if hostinfo.memory_pressure():
            pressure.add("MemoryPressure")
        if hostinfo.disk_pressure(self._root_dir):
            pressure.add("DiskPressure")
        return node.NodeFacts(images=tuple(await runtime.images()),
                              pressure=frozenset(pressure))

    async def run(self, starting: asyncio.Semaphore | None = None) -> None:
        """Run the node; while coming up (registered, its informers listed and
        watching) it holds a turn of `starting`, if given."""
        async with asyncio.TaskGroup() as group:
            async with starting or contextlib.nullcontext():
                await self.heartbeat.register()
                group.create_task(self.heartbeat.run())
                group.create_task(self.events.run())
                group.create_task(self.kubelet.run())
                await self.heartbeat.watch.wait_synced()
                await self.kubelet.pods.wait_synced()


async def run(*, nodes: list[tuple[str, str]], options: AgentOptions,
              stop: asyncio.Event | None = None,
              registry: prom.CollectorRegistry | None = None) -> None:
    """Run the nodes (name, token) until `stop` is set (or forever); the service
    network's metrics go to `registry` (None: the one the agent's /metrics serves)."""
    # One registry for the process, served by its API at /metrics.
    agent_metrics = metrics.AgentMetrics()
    probe_metrics = prober.ProbeMetrics(agent_metrics.registry)
    cidrs = pod_cidrs(options.pod_cidr, len(nodes))
    # Requests wait out a master's restart or an election; the loops retry after that.
    # Nodes start on different masters (a kubelet talks to a load balancer), so that one
    # master does not carry every node's watch: the order is a function of the name.
    servers = list(options.servers)
    turn = zlib.crc32(nodes[0][0].encode()) % len(servers)
    servers = servers[turn:] + servers[:turn]
    async with transport.Transport(servers, nodes[0][1], ca=options.ca, wait=10.0,
                                   timeout=10.0) as tp:
        # One Services informer for every node of the process (any node may read them).
        service_informer = inf.Informer(rest.RestClient(tp, token=nodes[0][1]),
                                        kinds.SERVICE)
        roots = root_dirs(options.root_dir, [name for name, _ in nodes])
        agents = [NodeAgent(name=name, token=token, tp=tp, options=options, pod_cidr=cidr,
                            root_dir=root, services=service_informer,
                            probe_metrics=probe_metrics)
                  for (name, token), cidr, root in zip(nodes, cidrs, roots, strict=True)]
        # The masters' way in (logs, exec, usage): up before the nodes register, so that
        # the port a Node advertises answers.
        api = server.AgentServer([
            server.Served(a.name, token, a.runtime, a.kubelet.pods.cache.list)
            for a, (_, token) in zip(agents, nodes, strict=True)], agent_metrics=agent_metrics)
        # A client that leaves cancels its handler: a followed log or an exec lets go of
        # its engine stream at once, not at the container's next line.
        runner = web.AppRunner(api.app(), access_log=None, handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, options.address, options.agent_port).start()
        except OSError as e:
            await runner.cleanup()
            raise AgentError(f"--agent-port: cannot listen on {options.address}:"
                             f"{options.agent_port}: {e.strerror}") from None
        port = runner.addresses[0][1] if runner.addresses else options.agent_port
        for a in agents:
            a.heartbeat.config.agent_port = port  # the port taken, when 0 asked for any
        starting = asyncio.Semaphore(max(1, options.starting))
        tasks = [asyncio.ensure_future(service_informer.run())]
        if options.service_network:
            # One service network per process: the nodes of a process share its address.
            net = services.ServiceNetwork(
                node=options.agent_name or agents[0].name, client=agents[0].client,
                options=service_options(options),
                registry=registry if registry is not None else agent_metrics.registry,
                pod_ips=lambda: services.sandbox_ips([a.runtime for a in agents]),
                services=service_informer)
            for a in agents:
                a.kubelet.network = net
            tasks.append(asyncio.ensure_future(net.run()))
        tasks += [asyncio.ensure_future(a.run(starting)) for a in agents]
        waiter = asyncio.ensure_future(stop.wait()) if stop is not None else None
        try:
            done, _ = await asyncio.wait(tasks + ([waiter] if waiter else []),
                                         return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not waiter and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in tasks + ([waiter] if waiter else []):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await runner.cleanup()
            for a in agents:  # the Docker runtime's thread pools
                close = getattr(a.runtime, "close", None)
                if close is not None:
                    close()
