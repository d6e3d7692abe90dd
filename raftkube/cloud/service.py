"""The service controller: `type: LoadBalancer` Services get a load balancer from the
provider, and lose it when deleted or changed to another type (Kubernetes' service
controller, in raftkube's shape: a level-triggered reconcile per `namespace/name`).

For a Service that wants one (`provider.wants_load_balancer`):
1. the finalizer `service.kubernetes.io/load-balancer-cleanup` is added first, so that
   a deleted Service stays (Terminating) until its load balancer is gone;
2. the provider ensures the load balancer and says its addresses;
3. `status.loadBalancer.ingress` becomes `[{"ip": ...}]` of those addresses (a
   compare-and-swap status write, only when it differs).
For one that does not (another type, another `loadBalancerClass`, being deleted) but
still holds the finalizer or an ingress: the provider deletes the load balancer, the
ingress is cleared, the finalizer removed.

A provider error is an Event on the Service (`SyncLoadBalancerFailed`, as Kubernetes
names it) and a retry with back-off (1 s doubling to 5 min); it blocks only that
Service's key. The load balancer depends on the nodes (which addresses serve it) and,
with `externalTrafficPolicy: Local`, on where its endpoints are, so a Node's change in
readiness or address enqueues every LoadBalancer Service, and an EndpointSlice change
its own Service; the deletion of a LoadBalancer Service, a change of its ports, or a
Service becoming one, enqueues the others (one may have waited for its port, or hold a
port an older Service now takes). A provider's `Unavailable`
(such as the port taken) also clears the Service's ingress while it waits.
"""

from __future__ import annotations

import copy
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
FINALIZER = "service.kubernetes.io/load-balancer-cleanup"
SERVICE_NAME = "kubernetes.io/service-name"


def ingress_of(service: Obj) -> list[Obj]:
    return list(((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])


def finalizers_of(service: Obj) -> list[str]:
    return list((service.get("metadata") or {}).get("finalizers") or [])


def holds_load_balancer(service: Obj) -> bool:
    """Whether the Service has something of a load balancer to undo."""
    return FINALIZER in finalizers_of(service) or bool(ingress_of(service))


def _node_facts(node: Obj) -> tuple[Any, ...]:
    """What of a Node decides the load balancers (nodelb.serving_nodes)."""
    meta, spec = node.get("metadata") or {}, node.get("spec") or {}
    return (conditions.is_true(node, "Ready"), spec.get("unschedulable"),
            sorted((meta.get("labels") or {}).items()),
            (node.get("status") or {}).get("addresses"))


def _ports(service: Obj) -> list[tuple[str, str]]:
    return sorted((str(p.get("port")), str(p.get("protocol") or "TCP"))
                  for p in (service.get("spec") or {}).get("ports") or []
                  if isinstance(p, dict))


class ServiceController:
    name = "cloud-service-controller"

    def __init__(self, ctx: context.Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.provider = ctx.provider
        self.queue = ctx.queue(self.name)
        self.services = ctx.informers.informer(kinds.SERVICE)
        self.nodes = ctx.informers.informer(kinds.NODE)
        self.slices = ctx.informers.informer(kinds.ENDPOINTSLICE)
        self.deleted: dict[str, Obj] = {}  # key -> the last seen Service, once deleted
        self.services.add_handler(inf.Handler(add=self._service_seen,
                                              update=self._service_changed,
                                              delete=self._service_gone))
        self.nodes.add_handler(inf.Handler(
            add=lambda _n: self._all(), delete=lambda _n: self._all(),
            update=lambda old, new: self._all() if _node_facts(old) != _node_facts(new)
            else None))
        self.slices.add_handler(inf.Handler(add=self._slice_seen,
                                            update=lambda _o, new: self._slice_seen(new),
                                            delete=self._slice_seen))

    # ---- what this loop hears ---------------------------------------------------------

    def _service_seen(self, svc: Obj) -> None:
        if pv.wants_load_balancer(svc) or holds_load_balancer(svc):
            self.queue.add(inf.key_of(svc))

    def _service_changed(self, old: Obj, new: Obj) -> None:
        self._service_seen(new)
        before, after = pv.wants_load_balancer(old), pv.wants_load_balancer(new)
        if (before or after) and (before, _ports(old)) != (after, _ports(new)):
            # A port it held may be free now, for one waiting for it; or it takes one
            # (an older Service wins it) from one that must give up its ingress.
            self._all()

    def _service_gone(self, svc: Obj) -> None:
        if holds_load_balancer(svc) or pv.wants_load_balancer(svc):
            key = inf.key_of(svc)
            self.deleted[key] = svc
            self.queue.add(key)
            self._all()

    def _slice_seen(self, s: Obj) -> None:
        meta = s.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME)
        if owner:
            key = f"{meta.get('namespace')}/{owner}"
            svc = self.services.cache.get(key)
            if svc is not None and pv.wants_load_balancer(svc) and \
                    (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local":
                self.queue.add(key)

    def _all(self) -> None:
        for svc in self.services.cache.list():
            if pv.wants_load_balancer(svc):
                self.queue.add(inf.key_of(svc))

    # ---- one Service --------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        svc = self.services.cache.get(key)
        if svc is None:
            gone = self.deleted.get(key)
            if gone is not None:  # deleted without our finalizer (it was never added)
                await self._provider_delete(gone)  # kept for the retry if this fails
                if self.deleted.get(key) is gone:
                    del self.deleted[key]
            return
        self.deleted.pop(key, None)
        if pv.wants_load_balancer(svc):
            await self._ensure(svc)
        elif holds_load_balancer(svc):
            await self._cleanup(svc)

    async def _ensure(self, svc: Obj) -> None:
        if FINALIZER not in finalizers_of(svc):
            updated = copy.deepcopy(svc)
            updated["metadata"]["finalizers"] = [*finalizers_of(svc), FINALIZER]
            written = await self._write(updated, status=False)
            if written is None:
                return
            svc = written
        name = inf.key_of(svc)
        try:
            ips = await self.ctx.call(f"ensure the load balancer of {name}",
                                      self.provider.ensure_load_balancer(svc, self.ctx.view()))
        except pv.ProviderError as e:
            self.ctx.events.event(svc, "Warning", "SyncLoadBalancerFailed",
                                  f"Error syncing load balancer: {e}")
            if isinstance(e, pv.Unavailable) and ingress_of(svc):
                # Not there now: an ingress left behind would have the agents serve it
                # (and refuse the Service that holds its port) while it waits.
                await self._set_ingress(svc, [])
            raise
        wanted = [{"ip": ip} for ip in ips]
        if wanted == ingress_of(svc):
            return
        if not await self._set_ingress(svc, wanted):
            return
        if wanted:
            log.info("service %s: load balancer at %s", name, ", ".join(ips))
            self.ctx.events.event(svc, "Normal", "EnsuredLoadBalancer",
                                  f"Ensured load balancer at {', '.join(ips)}")
        else:
            self.ctx.events.event(svc, "Warning", "UnAvailableLoadBalancer",
                                  "There are no available nodes for LoadBalancer")

    async def _cleanup(self, svc: Obj) -> None:
        await self._provider_delete(svc)
        if ingress_of(svc):
            written = await self._set_ingress(svc, [])
            if not written:
                return
            svc = written
            self.ctx.events.event(svc, "Normal", "DeletedLoadBalancer",
                                  "Deleted load balancer")
        if FINALIZER in finalizers_of(svc):
            updated = copy.deepcopy(svc)
            rest = [f for f in finalizers_of(svc) if f != FINALIZER]
            if rest:
                updated["metadata"]["finalizers"] = rest
            else:
                updated["metadata"].pop("finalizers", None)
            await self._write(updated, status=False)

    async def _provider_delete(self, svc: Obj) -> None:
        try:
            await self.ctx.call(f"delete the load balancer of {inf.key_of(svc)}",
                                self.provider.delete_load_balancer(svc, self.ctx.view()))
        except pv.ProviderError as e:
            self.ctx.events.event(svc, "Warning", "SyncLoadBalancerFailed",
                                  f"Error deleting load balancer: {e}")
            raise

    async def _set_ingress(self, svc: Obj, ingress: list[Obj]) -> Obj | None:
        updated = copy.deepcopy(svc)
        status = updated.setdefault("status", {}) or {}
        updated["status"] = status
        status["loadBalancer"] = {"ingress": ingress} if ingress else {}
        return await self._write(updated, status=True)

    async def _write(self, obj: Obj, *, status: bool) -> Obj | None:
        """The object as written (compare-and-swap on what was read), or None after a
        Conflict or NotFound: the newer object, or the deletion, is on its way here."""
        try:
            if status:
                return await self.client.update_status(kinds.SERVICE, obj)
            return await self.client.update(kinds.SERVICE, obj)
        except ApiError as e:
            if e.code in (404, 409):
                return None
            raise

    async def run(self) -> None:
        await workqueue.run_workers(self.queue, self.reconcile,
                                    workers=self.ctx.options.workers)
