"""The DaemonSet controller: one pod on every eligible node, following the nodes.

Handlers only enqueue DaemonSet keys: the DaemonSet itself on any change; the owner of a
pod that changes (an orphan wakes every DaemonSet in its namespace that selects it:
`claims.OwnerEvents`); on a node that joins, leaves or changes, every DaemonSet whose
verdict on that node changes. `reconcile(key)` then, as Kubernetes' syncDaemonSet:

1. reads the DaemonSet, the nodes and its pods from the caches, adopting matching
   orphans and releasing pods it no longer selects;
2. unless writes it made are not in the cache yet (`inflight.InFlight`), converges:
   `daemonplan.manage` (create on eligible nodes without a pod, delete excess pods and
   pods on nodes that no longer qualify or are gone, failed pods under a per-node back-off
   of 1 s doubling to 15 min, as Kubernetes'), and, when that had nothing to do, the
   rolling update (`daemonplan.rolling_update`, within maxUnavailable or maxSurge);
3. writes the status counts (with observedGeneration once it could act on this
   generation), compare-and-swap on the resourceVersion it read: a Conflict means a
   newer DaemonSet is on its way to the cache, and that reconcile will write.

Pods are made by the scheduler's hand: each names its node with node affinity (see
`daemonplan`), so a node without room leaves the pod Pending with a FailedScheduling
event, as in Kubernetes.
"""

from __future__ import annotations

import logging
from typing import Any

from raftkube.api import conditions, kinds, selectors
from raftkube.client import informer as inf
from raftkube.controllers import base, claims, daemonplan, inflight, podcontrol, podstate

log = logging.getLogger(__name__)

Obj = dict[str, Any]
FAILED_BACKOFF = 1.0  # the first wait before a failed daemon pod is replaced again
FAILED_BACKOFF_CAP = 900.0


class DaemonSetController(base.Controller):
    name = "daemonset"

    def __init__(self, ctx: base.Context) -> None:
        super().__init__(ctx)
        self.daemonsets = ctx.informers.informer(kinds.DAEMONSET)
        self.pods = ctx.informers.informer(kinds.POD)
        self.nodes = ctx.informers.informer(kinds.NODE)
        self.orphans = claims.Orphans(self.pods.cache)
        self.pods.add_handler(self.orphans.handler())
        self.inflight = inflight.InFlight()
        self.settling = inflight.Settling()  # its adoptions and releases
        self.pod_control = podcontrol.PodControl(ctx, self.inflight)
        self.failed_backoff: dict[str, tuple[float, float]] = {}  # uid/node -> (at, delay)
        self.daemonsets.add_handler(inf.Handler(
            add=self.enqueue, update=lambda _old, new: self.enqueue(new),
            delete=self._daemonset_deleted))
        self.pods.add_handler(claims.OwnerEvents(
            "DaemonSet", self.daemonsets.cache, lambda key: self.queue.add(key)).handler())
        self.nodes.add_handler(inf.Handler(
            add=lambda node: self._node_changed(None, node),
            update=self._node_changed,
            delete=lambda node: self._node_changed(node, None)))

    # ---- handlers: keys only ---------------------------------------------------------------

    def _daemonset_deleted(self, ds: Obj) -> None:
        self.inflight.forget(ds["metadata"].get("uid", ""))
        self.settling.forget(inf.key_of(ds))

    def _node_changed(self, old: Obj | None, new: Obj | None) -> None:
        if old is not None and new is not None and \
                conditions.is_true(old, "Ready") != conditions.is_true(new, "Ready"):
            for ds in self.daemonsets.cache.list():
                self.enqueue(ds)  # a rolling update counts only nodes that are Ready
            return
        for ds in self.daemonsets.cache.list():
            before = daemonplan.eligibility(ds, old) if old is not None else (False, False)
            after = daemonplan.eligibility(ds, new) if new is not None else (False, False)
            if before != after or new is None or old is None:
                self.enqueue(ds)

    # ---- one DaemonSet ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        ds = self.daemonsets.cache.get(key)
        if ds is None or not self.settling.settled(key):
            return  # gone, or a pod it claimed is yet to be seen claimed (that re-enqueues)
        meta = ds["metadata"]
        if meta.get("deletionTimestamp"):
            return  # its pods go with it (the server deletes dependents)
        try:
            selector = claims.selector_of(ds)
        except selectors.SelectorError as e:
            log.warning("daemonset %s: %s", key, e)
            return
        if selector.empty:
            self.ctx.events.event(ds, "Warning", "SelectingAll",
                                  "This daemon set is selecting all pods. A non-empty "
                                  "selector is required.")
            return
        hash_ = daemonplan.template_hash(ds)
        nodes = self.nodes.cache.list()
        now = self.ctx.clock()
        owned = self.pods.cache.by_index(inf.OWNER, meta["uid"])
        settled = self.inflight.settled(meta["uid"], owned,
                                        seen_revision=inflight.at(self.pods), now=now)
        if settled:
            pods = await claims.send(
                self.ctx.client, kinds.POD, ds,
                claims.claim(ds, selector, owned, self.orphans.in_namespace(meta["namespace"])),
                wrote=lambda pod: self.settling.wrote(key, self.pods, pod))
        else:
            pods = [p for p in owned if base.is_controlled_by(p, ds)]
        by_node = daemonplan.pods_by_node(pods)
        error: Exception | None = None
        if settled:
            try:
                await self._converge(ds, nodes, by_node, hash_, now)
            except Exception as e:  # noqa: BLE001 - the status is written all the same
                error = e
        await self._write_status(ds, nodes, by_node, hash_, now, observed=settled)
        if error is not None:
            raise error

    async def _converge(self, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]],
                        hash_: str, now: float) -> None:
        plan = daemonplan.manage(ds, nodes, by_node, hash_, now)
        if not plan:
            plan = daemonplan.rolling_update(ds, nodes, by_node, hash_, now)
        doomed = list(plan.delete) + self._failed_to_delete(ds, plan.failed, now)
        for pod in plan.succeeded:
            meta = pod["metadata"]
            self.ctx.events.event(ds, "Normal", "SucceededDaemonPod",
                                  f"Found succeeded daemon pod {meta['namespace']}/"
                                  f"{meta['name']} on node {podstate.target_node(pod)}, will "
                                  "try to delete it")
            doomed.append(pod)
        _, error = await self.pod_control.create_all(
            ds, [daemonplan.daemon_pod(ds, node, hash_) for node in plan.create])
        for pod in doomed:
            await self.pod_control.delete(ds, pod)
        for pod in plan.force:
            await self.pod_control.delete(ds, pod, grace=0)
        if error is not None:
            raise error  # retried with back-off; what could be done was done

    def _failed_to_delete(self, ds: Obj, failed: list[Obj], now: float) -> list[Obj]:
        """The failed pods whose node is out of its back-off; the others are looked at
        again when it ends. A pod that fails at once must not make a hot loop."""
        out = []
        for key, (at, _) in list(self.failed_backoff.items()):
            if now - at > 2 * FAILED_BACKOFF_CAP:
                del self.failed_backoff[key]  # long quiet: it starts from 1 s again
        for pod in failed:
            node = podstate.target_node(pod)
            key = f"{ds['metadata']['uid']}/{node}"
            at, delay = self.failed_backoff.get(key, (0.0, 0.0))
            if at and now - at < delay:
                self.queue.add_after(inf.key_of(ds), delay - (now - at))
                continue
            delay = min(delay * 2, FAILED_BACKOFF_CAP) if at else FAILED_BACKOFF
            self.failed_backoff[key] = (now, delay)
            meta = pod["metadata"]
            self.ctx.events.event(ds, "Warning", "FailedDaemonPod",
                                  f"Found failed daemon pod {meta['namespace']}/"
                                  f"{meta['name']} on node {node}, will try to kill it")
            out.append(pod)
        return out

    async def _write_status(self, ds: Obj, nodes: list[Obj], by_node: dict[str, list[Obj]],
                            hash_: str, now: float, *, observed: bool) -> None:
        counts, soonest = daemonplan.status(ds, nodes, by_node, hash_, now)
        old = ds.get("status") or {}
        new = {**old, **counts}
        if observed:
            new["observedGeneration"] = ds["metadata"].get("generation", 1)
        if soonest is not None:
            self.queue.add_after(inf.key_of(ds), soonest)
        if new == old:
            return
        await base.write_status(self.ctx, kinds.DAEMONSET, ds, new)

