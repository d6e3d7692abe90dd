"""The node lifecycle controller: a node whose agent went silent is marked, then tainted.

Every agent renews its Lease (`raftkube-system/NODE`) every 2 s. This loop remembers,
per node, when *it* last saw that lease change (or the node's Ready heartbeat), on its
own monotonic clock: the lease's renewTime is the agent's clock and is never compared
with ours, a step of this master's wall clock (NTP) moves no countdown (Kubernetes'
controller compares Go times, whose monotonic readings a step does not move either),
and a new leader starts every countdown afresh, as Kubernetes' controller does. A node
unseen for `node_grace` seconds (10 s by default) gets `Ready=Unknown` (and its other
conditions Unknown), reason `NodeStatusUnknown`, and a `NodeNotReady` event; its pods
are marked not ready, so Services stop sending them traffic at once.

A node that is not Ready is tainted as Kubernetes does it: `node.kubernetes.io/
unreachable` (Ready Unknown) or `not-ready` (Ready False), NoSchedule at once and
NoExecute at the rate its zone allows (`disruption`); the taint eviction controller
evicts its pods when their toleration runs out. The taints go when the node is Ready
again; the agent says so, as the kubelet does, by posting `Ready=True`.

A leader that cannot reach a majority must never act on what it merely failed to hear:
before it marks a node, it reads the node's lease through the API (linearizable: it
needs a majority) and only goes on if the lease still has the version it last saw;
every write is a compare-and-swap and carries its term. It also reads through Raft once
every monitor period: while such a read fails or stalls, no agent could renew either, so
when the store answers again every countdown restarts, as for a new leader. When every
zone looks dark at once, the fault is presumed to be the masters' (master disruption
mode): no NoExecute taint is set, those set are lifted, and every countdown restarts
when nodes come back.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from dataclasses import dataclass
from typing import Any

from raftkube.api import conditions, kinds, taints
from raftkube.api.timestamps import rfc3339
from raftkube.client import informer as inf
from raftkube.client import workqueue
from raftkube.client.errors import ApiError, ClientError
from raftkube.controllers import base, disruption

log = logging.getLogger(__name__)

Obj = dict[str, Any]
LEASE_NAMESPACE = "raftkube-system"
AGENT_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
NODE_CONTROLLER_TAINTS = (taints.NOT_READY, taints.UNREACHABLE)


@dataclass
class Health:
    """What this leader knows of a node's agent: when it last heard from it."""

    probe_at: float  # this leader's monotonic clock
    lease_version: str = ""
    heartbeat: str = ""


def ready_status(node: Obj) -> str | None:
    ready = conditions.get(node, "Ready")
    return str(ready.get("status")) if ready is not None else None


def unknown_status(node: Obj, now: float) -> Obj:
    """The node's status with every condition its agent reports set Unknown (Kubernetes'
    reasons and messages); heartbeats are kept, the transition time is now."""
    status = copy.deepcopy(node.get("status") or {})
    found = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    stamp = rfc3339(now)
    for type_ in AGENT_CONDITIONS:
        c = found.get(type_)
        if c is None:
            if type_ != "Ready":
                continue  # only Ready is added when the agent never posted it
            status.setdefault("conditions", []).append({
                "type": "Ready", "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                "message": "Kubelet never posted node status.",
                "lastHeartbeatTime": (node.get("metadata") or {}).get("creationTimestamp"),
                "lastTransitionTime": stamp})
        elif c.get("status") != "Unknown":
            c.update(status="Unknown", reason="NodeStatusUnknown",
                     message="Kubelet stopped posting node status.", lastTransitionTime=stamp)
    return status


def wanted_taints(node: Obj, status: str | None, *, no_execute: bool,
                  now: float) -> list[Obj]:
    """The node's taints with the node controller's own set for `status`: its NoExecute
    taint only if `no_execute` (rate limits decide), a NoExecute taint kept if present."""
    key = {"True": None, "False": taints.NOT_READY}.get(status or "", taints.UNREACHABLE)
    current = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
    out = [t for t in current if t.get("key") not in NODE_CONTROLLER_TAINTS]
    if key is None:
        return out
    out.append({"key": key, "effect": taints.NO_SCHEDULE})
    had = next((t for t in current if t.get("key") == key
                and t.get("effect") == taints.NO_EXECUTE), None)
    if had is not None:
        out.append(had)
    elif no_execute:
        out.append({"key": key, "effect": taints.NO_EXECUTE, "timeAdded": rfc3339(now)})
    return out


def _same_taints(a: list[Obj], b: list[Obj]) -> bool:
    def norm(ts: list[Obj]) -> list[tuple[str, str, str]]:
        return sorted((str(t.get("key")), str(t.get("effect")), str(t.get("value") or ""))
                      for t in ts)
    return norm(a) == norm(b)


class NodeLifecycle:
    name = "node-lifecycle-controller"

    def __init__(self, ctx: base.Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.options = ctx.options
        self.queue = workqueue.WorkQueue(name=self.name)
        self.nodes = ctx.informers.informer(kinds.NODE)
        self.leases = ctx.informers.informer(kinds.LEASE)
        self.pods = ctx.informers.informer(kinds.POD)
        self.health: dict[str, Health] = {}
        self.waiting: set[str] = set()  # nodes whose NoExecute taint waits for its zone
        self.store_lost: float | None = None  # when a read through Raft last began to fail
        self.disruption = disruption.Disruption(disruption.Limits(
            eviction_rate=ctx.options.eviction_rate,
            secondary_rate=ctx.options.secondary_eviction_rate,
            unhealthy_threshold=ctx.options.unhealthy_zone_threshold,
            large_cluster=ctx.options.large_cluster_size))
        self.nodes.add_handler(inf.Handler(add=self._node_seen,
                                           update=lambda _old, new: self._node_seen(new),
                                           delete=self._node_gone))
        self.leases.add_handler(inf.Handler(add=self._lease_seen,
                                            update=lambda _old, new: self._lease_seen(new)))
        self.pods.add_handler(inf.Handler(add=self._pod_seen,
                                          update=lambda _old, new: self._pod_seen(new)))

    # ---- what this leader hears -------------------------------------------------------

    def _health(self, name: str) -> Health:
        found = self.health.get(name)
        if found is None:  # first seen by this leader: its countdown starts now
            found = self.health[name] = Health(probe_at=self.ctx.monotonic())
        return found

    def _lease_seen(self, lease: Obj) -> None:
        meta = lease.get("metadata") or {}
        if meta.get("namespace") != LEASE_NAMESPACE:
            return
        name = str(meta.get("name", ""))
        if self.nodes.cache.get(name) is None:
            # No such Node (not yet, or no more: a lease outlives its Node, and an agent
            # may go on renewing it): nothing to count down; the Node starts its own.
            return
        h = self._health(name)
        version = inf.resource_version(lease)
        if version != h.lease_version:
            h.lease_version, h.probe_at = version, self.ctx.monotonic()
            self.queue.add(name)

    def _node_seen(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        h = self._health(name)
        ready = conditions.get(node, "Ready") or {}
        beat = str(ready.get("lastHeartbeatTime") or "")
        if beat and beat != h.heartbeat:
            h.heartbeat, h.probe_at = beat, self.ctx.monotonic()
        self.queue.add(name)

    def _node_gone(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        self.health.pop(name, None)
        self.waiting.discard(name)  # else the monitor would queue it forever

    def _pod_seen(self, pod: Obj) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        cached = self.nodes.cache.get(node) if node else None
        if cached is not None and ready_status(cached) != "True" and \
                conditions.is_true(pod, "Ready"):
            self.queue.add(str(node))  # a ready pod on a node that is not: mark it

    # ---- one node -----------------------------------------------------------------------

    async def reconcile(self, name: str) -> None:
        node = self.nodes.cache.get(name)
        if node is None:
            return
        now = self.ctx.monotonic()
        h = self._health(name)
        status = ready_status(node)
        due = h.probe_at + self.options.node_grace
        if now <= due:
            self.queue.add_after(name, due - now + 0.05)
            if status is None:
                return  # a node registering: its agent has not said how it is yet
        elif status != "Unknown":
            if self.store_lost is not None or await self._renewed(name, h, now):
                return
            await self._mark_unknown(node, now - h.probe_at)
            return  # the update comes back through the informer: tainted then
        await self._taint(node, status, now)
        if status != "True":
            await self._mark_pods_not_ready(name)

    async def _renewed(self, name: str, h: Health, now: float) -> bool:
        """Whether the lease moved after all (this leader's cache was behind): a read
        through the API, which needs a majority, so a cut-off leader never gets past it."""
        try:
            lease: Obj | None = await self.client.get(kinds.LEASE, LEASE_NAMESPACE, name)
        except ApiError as e:
            if e.code != 404:
                raise
            lease = None
        version = inf.resource_version(lease) if lease is not None else ""
        if version == h.lease_version:
            return False
        h.lease_version, h.probe_at = version, now
        self.queue.add_after(name, self.options.node_grace)
        return True

    async def _mark_unknown(self, node: Obj, silent: float) -> None:
        name = node["metadata"]["name"]
        updated = copy.deepcopy(node)
        updated["status"] = unknown_status(node, self.ctx.clock())
        log.warning("node %s: no lease renewal for %.0fs: Ready=Unknown", name, silent)
        await self.client.update_status(kinds.NODE, updated)
        self.ctx.events.event(node, "Normal", "NodeNotReady",
                              f"Node {name} status is now: NodeNotReady")

    async def _taint(self, node: Obj, status: str | None, now: float) -> None:
        """`now` is the monotonic clock (rate limits); taints are stamped on the wall's."""
        stamp = self.ctx.clock()
        name = node["metadata"]["name"]
        zone = disruption.zone_of(node)
        current = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
        had_no_execute = any(t.get("key") in NODE_CONTROLLER_TAINTS
                             and t.get("effect") == taints.NO_EXECUTE for t in current)
        self.waiting.discard(name)  # added back below if it still waits for a token
        if self.disruption.master_mode:
            # Nothing waits for a token: leaving the mode looks at every node again.
            wanted = [t for t in wanted_taints(node, status, no_execute=False, now=stamp)
                      if not (t.get("key") in NODE_CONTROLLER_TAINTS
                              and t.get("effect") == taints.NO_EXECUTE)]
        else:
            # Swapping not-ready for unreachable (or back) is not a new eviction.
            wanted = wanted_taints(node, status, no_execute=had_no_execute, now=stamp)
            missing = status != "True" and not any(
                t.get("effect") == taints.NO_EXECUTE and t.get("key") in NODE_CONTROLLER_TAINTS
                for t in wanted)
            if missing:
                if self.disruption.may_taint(zone, now):
                    wanted = wanted_taints(node, status, no_execute=True, now=stamp)
                else:
                    self.waiting.add(name)  # the monitor brings it back, or its bucket:
                    wait = self.disruption.wait(zone, now)
                    if wait is not None:
                        self.queue.add_after(name, max(wait, 0.05))
        if _same_taints(wanted, current):
            return
        updated = copy.deepcopy(node)
        updated.setdefault("spec", {})["taints"] = wanted or None
        if updated["spec"]["taints"] is None:
            del updated["spec"]["taints"]
        log.info("node %s: taints %s", name,
                 ", ".join(f"{t['key']}:{t['effect']}" for t in wanted) or "none")
        await self.client.update(kinds.NODE, updated)

    async def _mark_pods_not_ready(self, name: str) -> None:
        for pod in self.pods.cache.by_index(inf.NODE, name):
            if not conditions.is_true(pod, "Ready"):
                continue
            updated = copy.deepcopy(pod)
            status = updated.setdefault("status", {})
            ready = dict(conditions.get(updated, "Ready") or {"type": "Ready"})
            ready["status"] = "False"
            conditions.put(status, ready, self.ctx.clock())
            try:
                await self.client.update_status(kinds.POD, updated)
            except ApiError as e:
                if e.code == 404:
                    continue
                raise
            self.ctx.events.event(pod, "Warning", "NodeNotReady", "Node is not ready")

    # ---- every node, periodically -----------------------------------------------------

    def monitor(self) -> None:
        """Zone states and master disruption mode, from every node's Ready condition."""
        now = self.ctx.monotonic()
        zones: dict[str, list[bool]] = {}
        for node in self.nodes.cache.list():
            zones.setdefault(disruption.zone_of(node), []).append(ready_status(node) == "True")
        change = self.disruption.observe(zones, now)
        if change == "entered":
            log.warning("every node is not ready: entering master disruption mode (no node "
                        "is tainted NoExecute, so no pod is evicted, until some are Ready)")
        elif change == "left":
            log.warning("some nodes are ready: leaving master disruption mode")
            for h in self.health.values():
                h.probe_at = now
        for key in self.nodes.cache.keys() if change else list(self.waiting):
            self.queue.add(key)

    async def _monitor_forever(self) -> None:
        while True:
            self.monitor()
            await asyncio.sleep(self.options.node_monitor_period)

    async def probe_store(self) -> None:
        """One read through Raft. If it fails, or takes longer than an agent's renewal
        may, the store was out of reach for the agents too: when it answers again,
        every node's countdown restarts from then."""
        started = self.ctx.monotonic()
        slow = min(2.0, self.options.node_grace / 2)
        try:
            async with asyncio.timeout(slow):  # in this task: nothing left behind on cancel
                await self.client.get(kinds.NAMESPACE, "", LEASE_NAMESPACE)
        except ApiError as e:
            if e.code >= 500:
                self.store_lost = self.store_lost or started
                return
        except (ClientError, TimeoutError):
            self.store_lost = self.store_lost or started
            return
        if self.store_lost is not None:
            now = self.ctx.monotonic()
            log.warning("the store answers again after %.1fs: every node's grace period "
                        "restarts", now - self.store_lost)
            for h in self.health.values():
                h.probe_at = max(h.probe_at, now)
            self.store_lost = None
            for key in self.nodes.cache.keys():
                self.queue.add(key)

    async def _probe_forever(self) -> None:
        while True:
            await self.probe_store()
            await asyncio.sleep(self.options.node_monitor_period)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._monitor_forever())
            group.create_task(self._probe_forever())
            group.create_task(workqueue.run_workers(self.queue, self.reconcile,
                                                    workers=self.options.workers))
