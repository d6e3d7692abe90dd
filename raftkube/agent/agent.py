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
import platform
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from raftkube.agent import actions, dockerspec, hostinfo, kubelet, node, server, simulated
from raftkube.agent import runtime as rt
from raftkube.client import events as ev
from raftkube.client import rest, transport

log = logging.getLogger(__name__)

RUNTIMES = ("docker", "simulated")
SIMULATED_CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110"}


@dataclass
class AgentOptions:
    servers: list[str]
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
    cluster: str = "default"  # the Docker runtime's cluster label
    pause_image: str = dockerspec.PAUSE_IMAGE
    agent_port: int = 10250  # the agent's API for the masters (0: any free port)
    starting: int = 16  # hollow nodes of one process coming up at once


class AgentError(Exception):
    """The agent cannot start as configured (the message names the flag)."""


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
                 options: AgentOptions | None = None
                 ) -> tuple[rt.ContainerRuntime, rt.Prober]:
    if kind == "simulated":
        return (simulated.SimulatedRuntime(pod_cidr=pod_cidr, host_ip=host_ip, clock=clock),
                simulated.SimulatedProber())
    if kind == "docker":
        from raftkube.agent import docker  # the docker SDK only where it is used

        opts = options or AgentOptions(servers=[])
        # Readiness as the simulated prober answers it (running, after the readiness
        # probe's initial delay) until real probes come (agent/prober.py).
        return (docker.DockerRuntime(node_name=node_name, cluster=opts.cluster,
                                     host_ip=host_ip, pause_image=opts.pause_image,
                                     clock=clock),
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
        self.kubelet = kubelet.Kubelet(
            node_name=name, host_ip=options.address, client=self.client,
            runtime=self.runtime, prober=prober, events=self.events, clock=clock,
            backoff=actions.CrashBackoff(base=options.crash_backoff_base,
                                         cap=options.crash_backoff_cap),
            relist_period=options.relist_period, allocatable=options.capacity)

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
        # The masters' way in (logs, exec, usage): up before the nodes register, so that
        # the port a Node advertises answers.
        api = server.AgentServer([
            server.Served(a.name, token, a.runtime, a.kubelet.pods.cache.list)
            for a, (_, token) in zip(agents, nodes, strict=True)])
        runner = web.AppRunner(api.app(), access_log=None)
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
            await runner.cleanup()
