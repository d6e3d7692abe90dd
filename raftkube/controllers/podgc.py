"""Pod garbage collection: the pods nobody else will ever finish deleting.

A pod is deleted in two steps: marked, then finished (grace 0) by its node's agent. A
few pods have no agent to finish them, and Kubernetes' pod GC force-deletes those, and
only those; raftkube does the same:

- a pod bound to a node that does not exist (its Node was deleted: `rk delete node`, or
  the cloud controller for a vanished machine);
- a pod being deleted that was never bound to a node;
- a pod being deleted on a node that is not Ready and carries the
  `node.kubernetes.io/out-of-service` taint, which an administrator sets to say the
  machine is down for good.

A pod on a node that is merely unreachable stays Terminating, as in Kubernetes: its
containers may still run behind a partition, and its replacement is already made (a
ReplicaSet does not count terminating pods). When the node comes back its agent finishes
it; when the node is gone for good, deleting the Node lets this loop clean up.

A Node missing from the cache is confirmed missing by a read through the API before its
pods are force-deleted, and each delete carries the pod's uid as a precondition.

The sweep runs every `period` seconds, and at once when a Node is deleted: a deleted
Node's pods (the cloud controller's vanished machine, `rk delete node`) are recreated
elsewhere by their controllers as soon as they are gone, and waiting up to a period for
that would be the slowest step of the whole failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from raftkube.api import conditions, kinds, taints
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError, ClientError
from raftkube.controllers import base

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def collectable(pod: Obj, node: Obj | None, *, node_known: bool) -> str:
    """Why `pod` is force-deleted ("" if it is not): `node` is its node (None if there
    is none), `node_known` whether the pod names one."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    terminating = bool(meta.get("deletionTimestamp"))
    if not spec.get("nodeName"):
        return "unscheduled and terminating" if terminating else ""
    if node is None:
        return "its node does not exist" if node_known else ""
    if terminating and not conditions.is_true(node, "Ready") and \
            taints.has(node, taints.OUT_OF_SERVICE):
        return "terminating on an out-of-service node"
    return ""


class PodGC:
    name = "pod-garbage-collector"

    def __init__(self, ctx: base.Context, *, period: float = 20.0) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.period = period
        self.pods = ctx.informers.informer(kinds.POD)
        self.nodes = ctx.informers.informer(kinds.NODE)
        self.deleted = 0
        self._node_deleted = asyncio.Event()
        self.nodes.add_handler(inf.Handler(delete=lambda _node: self._node_deleted.set()))

    async def sweep(self) -> None:
        missing: dict[str, bool] = {}  # node name -> confirmed missing through the API
        for pod in self.pods.cache.list():
            node_name = str((pod.get("spec") or {}).get("nodeName") or "")
            node = self.nodes.cache.get(node_name) if node_name else None
            if node_name and node is None:
                if node_name not in missing:
                    missing[node_name] = await self._missing(node_name)
                if not missing[node_name]:
                    continue
            why = collectable(pod, node, node_known=bool(node_name))
            if why:
                await self._force_delete(pod, why)

    async def _missing(self, node_name: str) -> bool:
        try:
            await self.client.get(kinds.NODE, "", node_name)
        except ApiError as e:
            if e.code == 404:
                return True
            raise
        return False

    async def _force_delete(self, pod: Obj, why: str) -> None:
        meta = pod["metadata"]
        log.info("pod GC: force-deleting pod %s: %s", inf.key_of(pod), why)
        try:
            await self.client.delete(kinds.POD, meta["namespace"], meta["name"], grace=0,
                                     uid=meta.get("uid", ""))
        except ApiError as e:
            if e.code not in (404, 409):
                raise
            return
        self.deleted += 1

    async def run(self) -> None:
        while True:
            self._node_deleted.clear()
            try:
                await self.sweep()
            except ClientError as e:  # the next sweep tries again
                log.info("pod GC: %s; trying again in %.0fs", e, self.period)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.period):
                    await self._node_deleted.wait()
