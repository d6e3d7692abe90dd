"""A node's own objects: its Node (registration and status) and its heartbeat Lease.

As the kubelet does since node leases exist, the heartbeat and the status are apart:

- the Lease `raftkube-system/NAME` (coordination.k8s.io/v1) is renewed every
  `lease_interval` seconds (2 s) with `renewTime`, `holderIdentity` and
  `leaseDurationSeconds`: one small compare-and-swap write that the node lifecycle
  controller reads as "this node is alive". A failed renewal (a master died mid-write,
  an election) is retried at once with a short back-off rather than at the next tick,
  through whichever master answers, so a leader's death costs the lease well under a
  second;
- the Node's status (capacity, allocatable, addresses, nodeInfo and the Ready /
  MemoryPressure / DiskPressure / PIDPressure conditions) is written when it differs
  from what this node reports (say, the lifecycle controller set Ready to Unknown while
  the agent was down), or when `report_interval` has passed since the last write
  (lastHeartbeatTime). The node watches its own Node (`metadata.name=NAME`), so it
  checks at once when someone else changes it, and every `status_interval` seconds
  from that cache: a check costs no request (a GET is a read barrier through Raft).

Registration creates the Node with its status; if it exists already (the agent
restarted) it keeps it and adds its labels. A Node deleted under a running agent is
registered again.

What the node learns from its host and runtime as it runs (`NodeFacts`: the images
present, memory or disk pressure) comes from an optional `facts` callable, asked at
each status check; the simulated runtime has none.

`node_status` and `node_object` are pure, from a `NodeConfig`, the facts and the time.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import conditions, kinds
from raftkube.api.timestamps import rfc3339
from raftkube.client import informer as inf
from raftkube.client import rest
from raftkube.client.errors import ApiError, ClientError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LEASE_NAMESPACE = "raftkube-system"
VERSION = "v1.30.0-raftkube.0.1.0"  # the Kubernetes API this agent speaks, and ours

HEALTHY = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory",
     "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID",
     "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)
UNDER_PRESSURE = {
    "MemoryPressure": ("True", "KubeletHasInsufficientMemory",
                       "kubelet has insufficient memory available"),
    "DiskPressure": ("True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
}


@dataclass(frozen=True)
class NodeFacts:
    """What the host and the runtime tell now: the images present (`status.images`
    entries) and which pressure conditions hold (MemoryPressure, DiskPressure)."""

    images: tuple[Obj, ...] = ()
    pressure: frozenset[str] = frozenset()


@dataclass
class NodeConfig:
    name: str
    address: str
    pod_cidr: str
    capacity: dict[str, str] = field(default_factory=lambda: {
        "cpu": "4", "memory": "8Gi", "pods": "110"})
    labels: dict[str, str] = field(default_factory=dict)
    runtime: str = "simulated://0.1.0"
    operating_system: str = "linux"
    architecture: str = "amd64"
    kernel: str = ""
    os_image: str = ""
    boot_id: str = ""
    lease_interval: float = 2.0
    lease_duration: int = 40
    status_interval: float = 10.0
    report_interval: float = 300.0
    agent_port: int = 10250  # the agent's API (logs, exec), on `address`
    agent_cert_sha256: str = ""  # its TLS certificate's fingerprint (none: plain HTTP)


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def micro_time(t: float) -> str:
    """Kubernetes' MicroTime (a Lease's renewTime): RFC 3339 with microseconds."""
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + \
        f".{int(round((t - whole) * 1e6)) % 1_000_000:06d}Z"


def node_labels(config: NodeConfig) -> dict[str, str]:
    return {"kubernetes.io/hostname": config.name,
            "kubernetes.io/os": config.operating_system,
            "kubernetes.io/arch": config.architecture, **config.labels}


def node_status(current: Obj | None, config: NodeConfig, now: float,
                facts: NodeFacts | None = None) -> Obj:
    """The status this node reports, over what the API holds (`current`): conditions
    keep their lastTransitionTime while they hold; lastHeartbeatTime is `now`."""
    status: Obj = copy.deepcopy(current or {})
    status["capacity"] = dict(config.capacity)
    status["allocatable"] = dict(config.capacity)
    status["addresses"] = [{"type": "InternalIP", "address": config.address},
                           {"type": "Hostname", "address": config.name}]
    status["nodeInfo"] = {
        "machineID": config.name, "systemUUID": config.name, "bootID": config.boot_id,
        "kernelVersion": config.kernel,
        "osImage": config.os_image or f"raftkube {config.runtime} node",
        "containerRuntimeVersion": config.runtime, "kubeletVersion": VERSION,
        "kubeProxyVersion": VERSION, "operatingSystem": config.operating_system,
        "architecture": config.architecture}
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": config.agent_port}}
    if facts is not None:
        status["images"] = [dict(i) for i in facts.images]
    for type_, value, reason, message in HEALTHY:
        if facts is not None and type_ in facts.pressure:
            value, reason, message = UNDER_PRESSURE[type_]
        conditions.put(status, {"type": type_, "status": value, "reason": reason,
                                "message": message,
                                "lastHeartbeatTime": rfc3339(now)}, now)
    return status


def without_heartbeat(status: Obj | None) -> Obj:
    out = copy.deepcopy(status or {})
    for c in out.get("conditions") or []:
        c.pop("lastHeartbeatTime", None)
    return out


AGENT_CERT_ANNOTATION = "raftkube.io/agent-certificate-sha256"


def node_annotations(config: NodeConfig) -> dict[str, str]:
    """What the agent publishes on its Node: the fingerprint the masters pin its API's
    certificate by."""
    return {AGENT_CERT_ANNOTATION: config.agent_cert_sha256} if config.agent_cert_sha256 \
        else {}


def metadata_patch(node: Obj, config: NodeConfig) -> Obj:
    """The merge patch of the Node's metadata that puts back what this agent publishes:
    its labels, and its certificate's fingerprint (a new one each run unless it was
    given one with --tls-cert-file; a null removes it for a run without TLS). Empty
    when all is as it should be."""
    meta = node.get("metadata") or {}
    labels = meta.get("labels") or {}
    missing = {k: v for k, v in node_labels(config).items() if labels.get(k) != v}
    annotations = meta.get("annotations") or {}
    wanted = {AGENT_CERT_ANNOTATION: config.agent_cert_sha256 or None}
    stale = {k: v for k, v in wanted.items() if annotations.get(k) != v}
    patch: Obj = {}
    if missing:
        patch["labels"] = missing
    if stale:
        patch["annotations"] = stale
    return patch


def node_object(config: NodeConfig, now: float, facts: NodeFacts | None = None) -> Obj:
    meta: Obj = {"name": config.name, "labels": node_labels(config)}
    if node_annotations(config):
        meta["annotations"] = node_annotations(config)
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": meta,
            "spec": {"podCIDR": config.pod_cidr, "podCIDRs": [config.pod_cidr]},
            "status": node_status(None, config, now, facts)}


def lease_object(config: NodeConfig, node: Obj | None, now: float) -> Obj:
    meta: Obj = {"name": config.name, "namespace": LEASE_NAMESPACE}
    if node is not None and node["metadata"].get("uid"):
        # Owned by the Node, as Kubernetes' node leases are: the Node's deletion takes it.
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node",
                                    "name": config.name, "uid": node["metadata"]["uid"]}]
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": {"holderIdentity": config.name,
                     "leaseDurationSeconds": config.lease_duration,
                     "acquireTime": micro_time(now), "renewTime": micro_time(now)}}


class NodeHeartbeat:
    """Registers the Node, keeps its status current and its Lease renewed."""

    def __init__(self, *, config: NodeConfig, client: rest.RestClient,
                 clock: Callable[[], float] = time.time,
                 facts: Callable[[], Awaitable[NodeFacts]] | None = None) -> None:
        self.config = config
        self.facts = facts
        self.last_facts: NodeFacts | None = None
        self.client = client
        # A renewal must not hang on a master that stopped answering: it gives up soon
        # and tries again (the transport moves on to another master).
        self.lease_client = rest.RestClient(client.transport, token=client.token,
                                            timeout=max(1.0, config.lease_interval))
        self.clock = clock
        self.node: Obj | None = None
        self.lease: Obj | None = None
        self.renewals = 0
        self.last_report = 0.0
        self.registered = asyncio.Event()
        self.watch = inf.Informer(client, kinds.NODE,
                                  field_selector=f"metadata.name={config.name}")
        self._changed = asyncio.Event()
        self.watch.add_handler(inf.Handler(add=lambda _n: self._changed.set(),
                                           update=lambda _o, _n: self._changed.set(),
                                           delete=lambda _n: self._changed.set()))

    async def register(self) -> Obj:
        """Create the Node, or adopt the one that exists; retried until it is done."""
        pause = 0.2
        while True:
            try:
                return await self._register()
            except ClientError as e:
                log.warning("%s: registering the node failed: %s", self.config.name, e)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def _read_facts(self) -> None:
        if self.facts is not None:
            try:
                self.last_facts = await self.facts()
            except Exception as e:  # a runtime that does not answer: keep what it said
                log.warning("%s: reading the node's facts failed: %s", self.config.name, e)

    async def _register(self) -> Obj:
        await self._read_facts()
        now = self.clock()
        try:
            self.node = await self.client.create(
                kinds.NODE, "", node_object(self.config, now, self.last_facts))
            self.last_report = now
            log.info("%s: registered", self.config.name)
        except ApiError as e:
            if e.reason != "AlreadyExists":
                raise
            node = await self.client.get(kinds.NODE, "", self.config.name)
            self.node = node
            await self.sync_status(node)
        self.registered.set()
        assert self.node is not None
        return self.node

    def _cached(self) -> Obj | None:
        """The Node as the watch last saw it, or as this node last wrote it if that is
        newer (the watch has not brought the write back yet); None if unknown."""
        if not self.watch.synced.is_set():
            return None
        seen = self.watch.cache.get(self.config.name)
        if seen is None:
            return None
        mine = self.node
        if mine is not None and mine["metadata"].get("uid") == seen["metadata"].get("uid") \
                and _rv(mine) > _rv(seen):
            return mine
        return seen

    async def sync_status(self, node: Obj | None = None) -> None:
        """Write the Node's status if it is not what this node reports, or is old."""
        if node is None:
            node = self._cached()
        if node is None:
            try:
                node = await self.client.get(kinds.NODE, "", self.config.name)
            except ApiError as e:
                if e.code != 404:
                    raise
                log.warning("%s: the Node is gone; registering again", self.config.name)
                await self._register()
                return
        patch = metadata_patch(node, self.config)
        if patch:  # labels or the agent's certificate changed (by this run, or by hand)
            node = await self.client.patch(kinds.NODE, "", self.config.name,
                                           {"metadata": patch})
        await self._read_facts()
        now = self.clock()
        want = node_status(node.get("status"), self.config, now, self.last_facts)
        if without_heartbeat(want) == without_heartbeat(node.get("status")) and \
                now - self.last_report < self.config.report_interval:
            self.node = node
            return
        self.node = await self.client.update_status(kinds.NODE, {**node, "status": want})
        self.last_report = now

    async def renew(self) -> None:
        """One renewal of the Lease (made if it is missing), as a compare-and-swap."""
        now = self.clock()
        if self.lease is None:
            try:
                self.lease = await self.lease_client.get(kinds.LEASE, LEASE_NAMESPACE,
                                                         self.config.name)
            except ApiError as e:
                if e.code != 404:
                    raise
                self.lease = await self.lease_client.create(
                    kinds.LEASE, LEASE_NAMESPACE, lease_object(self.config, self.node, now))
                self.renewals += 1
                return
        lease = copy.deepcopy(self.lease)
        lease.setdefault("spec", {}).update(holderIdentity=self.config.name,
                                            leaseDurationSeconds=self.config.lease_duration,
                                            renewTime=micro_time(now))
        try:
            self.lease = await self.lease_client.update(kinds.LEASE, lease)
        except ClientError:
            self.lease = None  # read it afresh: it changed, vanished, or the write's fate
            raise              # is unknown
        self.renewals += 1

    async def _lease_forever(self) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await self.renew()
                failures = 0
                wait = self.config.lease_interval - (time.monotonic() - started)
            except ClientError as e:
                failures += 1
                level = logging.INFO if failures < 3 else logging.WARNING
                log.log(level, "%s: renewing the lease failed (%d): %s", self.config.name,
                        failures, e)
                wait = min(0.1 * 2 ** failures, self.config.lease_interval)
            await asyncio.sleep(max(0.0, wait))

    async def _status_forever(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config.status_interval):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.sync_status()
            except ClientError as e:
                log.warning("%s: updating the node status failed: %s", self.config.name, e)

    async def run(self) -> None:
        if not self.registered.is_set():
            await self.register()
        async with asyncio.TaskGroup() as group:
            group.create_task(self._lease_forever())
            group.create_task(self.watch.run())
            group.create_task(self._status_forever())
