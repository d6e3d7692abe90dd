"""The cloud node controller: Nodes true to the machines the provider knows.

- A Node without `spec.providerID` is initialised once from its machine, as Kubernetes'
  cloud node controller does: `spec.providerID` and the labels
  `node.kubernetes.io/instance-type` and `topology.kubernetes.io/zone` (those the
  provider gives). A Node whose machine the provider does not list is left as it is.
- A Node that is not Ready (its agent said False, or the node lifecycle controller set
  Unknown after its lease lapsed) whose machine is not listed is asked about once more
  (`exists`, fresh), and deleted if the provider says the machine is gone: its pods are
  then force-deleted by the pod garbage collector at once and recreated elsewhere by
  their controllers, without waiting for the eviction timeout. A machine that exists
  but does not answer is the node lifecycle controller's (taints, then eviction).
  A Ready Node is never deleted, whatever the provider lists: an agent that renews its
  lease runs somewhere, and a provider that lists nothing (a wrong directory, an
  outage) must not empty the cluster (Kubernetes' cloud node lifecycle controller
  looks only at nodes that are not Ready, for the same reason).

The provider is asked only when a Node has a question (not initialised, or not Ready),
with one machine list shared by the Nodes looked at within `node_period / 2`, and a
Node that is not Ready is looked at again every `node_period` seconds. A provider
error is an Event on the Node and a retry with back-off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from raftkube.api import conditions, kinds
from raftkube.client import informer as inf
from raftkube.client import workqueue
from raftkube.client.errors import ApiError
from raftkube.cloud import context
from raftkube.cloud import provider as pv

log = logging.getLogger(__name__)

Obj = dict[str, Any]
INSTANCE_TYPE = "node.kubernetes.io/instance-type"
ZONE = "topology.kubernetes.io/zone"


def ready_status(node: Obj) -> str | None:
    ready = conditions.get(node, "Ready")
    return str(ready.get("status")) if ready is not None else None


def match(node: Obj, machines: list[pv.Machine]) -> pv.Machine | None:
    """The node's machine: by providerID when the Node has one, else by name."""
    provider_id = (node.get("spec") or {}).get("providerID")
    name = node["metadata"]["name"]
    for m in machines:
        if (m.provider_id == provider_id) if provider_id else (m.name == name):
            return m
    return None


def init_patch(node: Obj, machine: pv.Machine) -> Obj | None:
    """The merge patch that initialises `node` from `machine` (None if nothing to do)."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    wanted = {k: v for k, v in ((INSTANCE_TYPE, machine.instance_type),
                                (ZONE, machine.zone)) if v and labels.get(k) != v}
    patch: Obj = {}
    if wanted:
        patch["metadata"] = {"labels": wanted}
    if machine.provider_id and not (node.get("spec") or {}).get("providerID"):
        patch["spec"] = {"providerID": machine.provider_id}
    return patch or None


class NodeController:
    name = "cloud-node-controller"

    def __init__(self, ctx: context.Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.provider = ctx.provider
        self.options = ctx.options
        self.queue = ctx.queue(self.name)
        self.nodes = ctx.informers.informer(kinds.NODE)
        context.informers_needed(ctx)
        self.nodes.add_handler(inf.Handler(add=self._seen,
                                           update=lambda _old, new: self._seen(new)))
        self._listed: tuple[float, list[pv.Machine]] | None = None
        self._listing = asyncio.Lock()
        self.deleted: list[str] = []  # the Nodes this loop deleted (a test reads it)

    def _seen(self, node: Obj) -> None:
        self.queue.add(node["metadata"]["name"])

    async def machines(self) -> list[pv.Machine]:
        """The provider's machines, listed at most once every `node_period / 2`."""
        async with self._listing:
            now = self.ctx.clock()
            if self._listed is not None and now - self._listed[0] < self.options.node_period / 2:
                return self._listed[1]
            found = await self.ctx.call("list the machines",
                                        self.provider.machines(self.ctx.view()))
            self._listed = (now, list(found))
            return self._listed[1]

    async def reconcile(self, name: str) -> None:
        node = self.nodes.cache.get(name)
        if node is None:
            return
        uninitialised = not (node.get("spec") or {}).get("providerID")
        not_ready = ready_status(node) in ("False", "Unknown")
        if not uninitialised and not not_ready:
            return
        if not_ready:  # looked at again while it is not Ready
            self.queue.add_after(name, self.options.node_period)
        try:
            machine = match(node, await self.machines())
            if machine is not None:
                if uninitialised:
                    await self._initialise(node, machine)
                return
            if not not_ready:
                log.info("node %s: the cloud provider lists no machine for it (its agent "
                         "reports Ready: left as it is)", name)
                return
            exists = await self.ctx.call(f"does the machine of node {name} exist",
                                         self.provider.exists(node, self.ctx.view()))
        except pv.ProviderError as e:
            self.ctx.events.event(node, "Warning", "CloudProviderError", str(e))
            raise
        if not exists:
            await self._delete(node)

    async def _initialise(self, node: Obj, machine: pv.Machine) -> None:
        patch = init_patch(node, machine)
        if patch is None:
            return
        name = node["metadata"]["name"]
        patch.setdefault("metadata", {})["resourceVersion"] = inf.resource_version(node)
        try:
            await self.client.patch(kinds.NODE, "", name, patch)
        except ApiError as e:
            if e.code in (404, 409):
                return  # deleted, or changed: the newer Node comes back here
            raise
        log.info("node %s: initialised from machine %s (%s)", name, machine.name,
                 machine.provider_id)

    async def _delete(self, node: Obj) -> None:
        meta = node["metadata"]
        name = meta["name"]
        log.warning("node %s: its machine is gone (cloud provider %s): deleting the Node",
                    name, getattr(self.provider, "name", "?"))
        self.ctx.events.event(node, "Normal", "DeletingNode",
                              f"Deleting node {name} because it does not exist in the "
                              "cloud provider")
        try:
            await self.client.delete(kinds.NODE, "", name, uid=meta.get("uid", ""))
        except ApiError as e:
            if e.code in (404, 409):
                return
            raise
        self.deleted.append(name)

    async def run(self) -> None:
        await workqueue.run_workers(self.queue, self.reconcile, workers=self.options.workers)
