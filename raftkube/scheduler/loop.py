"""The scheduler's leader-only loop: pending pods in, bindings out.

It keeps, from the shared pod and node informers, one `core.NodeInfo` per node (what
its pods already ask for), rebuilt only for the nodes an event touches. A worker takes a
pending pod's key, asks `core.schedule` for a node, *assumes* the pod there at once (so
the next decision, made before the informer has seen the binding, counts it), and binds
it through the pod's `binding` subresource, which the server refuses if the pod is bound
already; the decisions made while a binding is being written go together, in one
request and one store transaction (`binder`). A failed bind forgets the assumption and
retries with back-off.

A pod no node can take gets `PodScheduled=False` (reason `Unschedulable`, Kubernetes'
message, written only when it changes) and a `FailedScheduling` event, and waits in the
unschedulable set until something that could make room happens: a node joins or
changes, or a bound pod goes away (and, as a safety net, every `flush_every` seconds).

Decisions are made one at a time, with no await between reading the node infos and
assuming the pod, so two decisions never count the same free room; bindings overlap.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from raftkube.api import conditions, kinds
from raftkube.client import events as ev
from raftkube.client import informer as inf
from raftkube.client import rest, workqueue
from raftkube.client.errors import ApiError, ClientError
from raftkube.scheduler import binder, core

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SCHEDULER_NAME = "default-scheduler"


def wants_scheduling(pod: Obj) -> bool:
    """Pending, on no node, not being deleted, and addressed to this scheduler."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    return (not spec.get("nodeName") and not meta.get("deletionTimestamp")
            and spec.get("schedulerName", SCHEDULER_NAME) == SCHEDULER_NAME
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))


def _node_of(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


class Scheduler:
    name = "scheduler"

    def __init__(self, *, client: rest.RestClient, informers: inf.InformerFactory,
                 events: ev.EventRecorder, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, workers: int = 64,
                 flush_every: float = 30.0) -> None:
        self.client = client
        self.events = events
        self.rng = rng or random.Random()
        self.clock = clock
        self.workers = workers
        self.flush_every = flush_every
        self.queue = workqueue.WorkQueue(name=self.name)
        self.binder = binder.Binder(client, batch=min(workers, binder.BATCH_MAX))
        self.pods = informers.informer(kinds.POD)
        self.nodes = informers.informer(kinds.NODE)
        self.infos: dict[str, core.NodeInfo] = {}
        self.assumed: dict[str, tuple[str, Obj]] = {}  # pod key -> (node, pod)
        self.unschedulable: set[str] = set()
        self.bound = 0
        self.pods.add_handler(inf.Handler(add=self._pod_added, update=self._pod_updated,
                                          delete=self._pod_deleted))
        self.nodes.add_handler(inf.Handler(add=self._node_changed,
                                           update=self._node_updated,
                                           delete=self._node_deleted))

    # ---- the cluster as it changes ----------------------------------------------------

    def _refresh(self, node_name: str) -> None:
        node = self.nodes.cache.get(node_name)
        if node is None:
            self.infos.pop(node_name, None)
            return
        pods = {inf.key_of(p): p for p in self.pods.cache.by_index(inf.NODE, node_name)}
        for key, (on, pod) in self.assumed.items():
            if on == node_name:
                pods.setdefault(key, pod)
        self.infos[node_name] = core.node_info(node, pods.values())

    def _pod_added(self, pod: Obj) -> None:
        node = _node_of(pod)
        if node:
            self.assumed.pop(inf.key_of(pod), None)  # the binding has come back
            self._refresh(node)
        elif wants_scheduling(pod):
            self.queue.add(inf.key_of(pod))

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if _node_of(old) and _node_of(old) == _node_of(new) \
                and inf.key_of(new) not in self.assumed and _placed_view(old) == _placed_view(new):
            # A bound pod's status post (the kubelet's, several a pod): nothing its node's
            # NodeInfo counts has changed, and rebuilding it walks every pod on the node
            # (a fifth of the leader's CPU in the 40-node profile).
            return
        if _node_of(old) and _node_of(old) != _node_of(new):
            self._refresh(_node_of(old))
        self._pod_added(new)
        if core.holds_resources(old) and not core.holds_resources(new) and _node_of(new):
            self._retry_unschedulable()  # a pod that finished made room

    def _pod_deleted(self, pod: Obj) -> None:
        key = inf.key_of(pod)
        self.unschedulable.discard(key)
        node = self.assumed.pop(key, (_node_of(pod), pod))[0]
        if node:
            self._refresh(node)
            self._retry_unschedulable()

    def _node_changed(self, node: Obj) -> None:
        self._refresh(node["metadata"]["name"])
        self._retry_unschedulable()

    def _node_updated(self, old: Obj, new: Obj) -> None:
        """A node's update wakes the parked pods only if what scheduling reads changed:
        agents post status (heartbeats) every few seconds, and most posts change nothing
        a decision would see (Kubernetes' nodeSchedulingPropertiesChange)."""
        if old is new or _scheduling_view(old) != _scheduling_view(new):
            self._node_changed(new)
        else:
            self._refresh(new["metadata"]["name"])

    def _node_deleted(self, node: Obj) -> None:
        self.infos.pop(node["metadata"]["name"], None)

    def _retry_unschedulable(self) -> None:
        for key in self.unschedulable:
            self.queue.add(key)
        self.unschedulable.clear()

    # ---- scheduling one pod -----------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        if pod is None or not wants_scheduling(pod) or key in self.assumed:
            return
        decision = core.schedule(core.Snapshot(tuple(self.infos.values())), pod, rng=self.rng)
        if isinstance(decision, core.Unschedulable):
            self.unschedulable.add(key)
            await self._report_unschedulable(pod, decision)
            return
        node = decision.node
        self.assumed[key] = (node, pod)
        self._refresh(node)
        meta = pod["metadata"]
        try:
            await self.binder.bind(meta["namespace"], meta["name"], node,
                                   uid=meta.get("uid", ""))
        except ApiError as e:
            self.assumed.pop(key, None)
            self._refresh(node)
            if e.code in (404, 409):
                return  # gone, or bound meanwhile (by us, before a failover): nothing to do
            raise
        except ClientError:
            # The outcome may be unknown. Retried with back-off: if the binding did
            # apply, the informer shows the pod bound by then, or the server says so.
            self.assumed.pop(key, None)
            self._refresh(node)
            raise
        self.bound += 1
        self.events.event(pod, "Normal", "Scheduled",
                          f"Successfully assigned {meta['namespace']}/{meta['name']} to "
                          f"{node}")

    async def _report_unschedulable(self, pod: Obj, decision: core.Unschedulable) -> None:
        message = decision.message
        old = conditions.get(pod, "PodScheduled")
        if old is not None and old.get("status") == "False" and old.get("message") == message:
            return
        self.events.event(pod, "Warning", "FailedScheduling", message)
        updated = copy.deepcopy(pod)
        status = updated.setdefault("status", {})
        conditions.put(status, {"type": "PodScheduled", "status": "False",
                                "reason": "Unschedulable", "message": message},
                       self.clock())
        status.setdefault("phase", "Pending")
        try:
            await self.client.update_status(kinds.POD, updated)
        except ApiError as e:
            if e.code not in (404, 409):
                raise

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            self._retry_unschedulable()

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._flush_forever())
                group.create_task(workqueue.run_workers(self.queue, self.reconcile,
                                                        workers=self.workers))
        finally:
            self.binder.close()


def _placed_view(pod: Obj) -> Any:
    """What of a bound pod its node's `core.NodeInfo` reads: its spec (requests, ports,
    affinity), labels and owners (spreading, affinity), and whether it holds resources."""
    meta = pod.get("metadata") or {}
    return (pod.get("spec"), meta.get("labels"), meta.get("ownerReferences"),
            meta.get("namespace"), core.holds_resources(pod))


def _scheduling_view(node: Obj) -> Any:
    """What of a node a scheduling decision reads: labels, spec (taints, cordon),
    allocatable and the status of each condition (not their heartbeat times)."""
    status = node.get("status") or {}
    return ((node.get("metadata") or {}).get("labels"), node.get("spec"),
            status.get("allocatable") or status.get("capacity"),
            sorted((str(c.get("type")), str(c.get("status")))
                   for c in status.get("conditions") or [] if isinstance(c, dict)))
