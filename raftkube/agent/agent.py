"""One agent process: one node, or `count` simulated nodes at once (hollow nodes).

Each node is its own Node, Lease, runtime and pod loop, and speaks with its own node
token (the API authorizes a node token for its node's objects only), but the nodes of
one process share one transport: one connection pool and one view of which master
answers, as kubemark's hollow nodes share a process. A node starts its pod loop once it
is registered.

Hollow nodes are named `NAME-1` ... `NAME-N` and take consecutive pod ranges of the
size of `pod_cidr`, starting at it (10.244.0.0/24, 10.244.1.0/24, ...), so their pod IPs
never collide and are the same at every run.

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
import platform
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from raftkube.agent import actions, kubelet, node, simulated
from raftkube.agent import runtime as rt
from raftkube.client import events as ev
from raftkube.client import rest, transport

log = logging.getLogger(__name__)

RUNTIMES = ("simulated",)  # the Docker runtime comes behind the same seam


@dataclass
class AgentOptions:
    servers: list[str]
    address: str = "127.0.0.1"
    runtime: str = "simulated"
    pod_cidr: str = "10.244.0.0/24"
    capacity: dict[str, str] = field(default_factory=lambda: {
        "cpu": "4", "memory": "8Gi", "pods": "110"})
    labels: dict[str, str] = field(default_factory=dict)
    lease_interval: float = 2.0
    status_interval: float = 10.0
    relist_period: float = 1.0
    crash_backoff_base: float = 10.0
    crash_backoff_cap: float = 300.0
    starting: int = 16  # hollow nodes of one process coming up at once


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
                 clock: Callable[[], float]) -> tuple[rt.ContainerRuntime, rt.Prober]:
    if kind == "simulated":
        return (simulated.SimulatedRuntime(pod_cidr=pod_cidr, host_ip=host_ip, clock=clock),
                simulated.SimulatedProber())
    raise ValueError(f"--runtime: unknown runtime {kind!r} (known: {', '.join(RUNTIMES)})")


class NodeAgent:
    """One node: its heartbeat, its runtime and its pod loop."""

    def __init__(self, *, name: str, token: str, tp: transport.Transport,
                 options: AgentOptions, pod_cidr: str,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.client = rest.RestClient(tp, token=token)
        self.runtime, prober = make_runtime(options.runtime, pod_cidr=pod_cidr,
                                            host_ip=options.address, clock=clock)
        config = node.NodeConfig(
            name=name, address=options.address, pod_cidr=pod_cidr,
            capacity=dict(options.capacity), labels=dict(options.labels),
            runtime=f"{self.runtime.name}://{self.runtime.version}",
            architecture=architecture(), kernel=platform.release(),
            boot_id=str(uuid.uuid4()), lease_interval=options.lease_interval,
            status_interval=options.status_interval)
        self.heartbeat = node.NodeHeartbeat(config=config, client=self.client, clock=clock)
        self.events = ev.EventRecorder(self.client, "kubelet", host=name, clock=clock)
        self.kubelet = kubelet.Kubelet(
            node_name=name, host_ip=options.address, client=self.client,
            runtime=self.runtime, prober=prober, events=self.events, clock=clock,
            backoff=actions.CrashBackoff(base=options.crash_backoff_base,
                                         cap=options.crash_backoff_cap),
            relist_period=options.relist_period, allocatable=options.capacity)

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
              stop: asyncio.Event | None = None) -> None:
    """Run the nodes (name, token) until `stop` is set (or forever)."""
    cidrs = pod_cidrs(options.pod_cidr, len(nodes))
    # Requests wait out a master's restart or an election; the loops retry after that.
    # Nodes start on different masters (a kubelet talks to a load balancer), so that one
    # master does not carry every node's watch: the order is a function of the name.
    servers = list(options.servers)
    turn = zlib.crc32(nodes[0][0].encode()) % len(servers)
    servers = servers[turn:] + servers[:turn]
    async with transport.Transport(servers, nodes[0][1], wait=10.0, timeout=10.0) as tp:
        agents = [NodeAgent(name=name, token=token, tp=tp, options=options, pod_cidr=cidr)
                  for (name, token), cidr in zip(nodes, cidrs, strict=True)]
        starting = asyncio.Semaphore(max(1, options.starting))
        tasks = [asyncio.ensure_future(a.run(starting)) for a in agents]
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
