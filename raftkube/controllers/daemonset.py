"""The DaemonSet controller: one pod on every eligible node, following the nodes.

Handlers only enqueue DaemonSet keys: the DaemonSet itself on any change; the owner of a
pod that changes (an orphan wakes every DaemonSet in its namespace that selects it); on
a node that joins, leaves or changes, every DaemonSet whose verdict on that node
changes. `reconcile(key)` then, as Kubernetes' syncDaemonSet:

1. reads the DaemonSet, the nodes and its pods from the caches, adopting matching
   orphans and releasing pods it no longer selects;
2. unless writes it made are not in the cache yet (`podcontrol.InFlight`), converges:
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

from raftkube.api import kinds, selectors
from raftkube.client import informer as inf
from raftkube.controllers import base, daemonplan, podcontrol, podutil

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
        self.inflight = podcontrol.InFlight(clock=ctx.clock)
        self.pod_control = podcontrol.PodControl(ctx, self.inflight)
        self.failed_backoff: dict[str, tuple[float, float]] = {}  # uid/node -> (at, delay)
        self.daemonsets.add_handler(self.handler())
        self.pods.add_handler(inf.Handler(add=self._pod_changed, update=self._pod_updated,
                                          delete=self._pod_changed))
        self.nodes.add_handler(inf.Handler(
            add=lambda node: self._node_changed(None, node),
            update=self._node_changed,
            delete=lambda node: self._node_changed(node, None)))

    # ---- handlers: keys only ---------------------------------------------------------------

    def _pod_changed(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace", "")
        ref = base.controller_of(pod)
        if ref is not None:
            if ref.get("kind") == "DaemonSet":
                self.queue.add(f"{namespace}/{ref.get('name', '')}")
            return
        for ds in self.daemonsets.cache.by_index(inf.NAMESPACE, namespace):
            if _selects(ds, meta.get("labels") or {}):
                self.enqueue(ds)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if base.controller_of(old) != base.controller_of(new) or \
                (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get(
                    "labels"):
            self._pod_changed(old)  # its old owner may have lost it
        self._pod_changed(new)

    def _node_changed(self, old: Obj | None, new: Obj | None) -> None:
        for ds in self.daemonsets.cache.list():
            before = daemonplan.eligibility(ds, old) if old is not None else (False, False)
            after = daemonplan.eligibility(ds, new) if new is not None else (False, False)
            if before != after or new is None or old is None:
                self.enqueue(ds)

    # ---- one DaemonSet ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        ds = self.daemonsets.cache.get(key)
        if ds is None:
            self.inflight.forget(key)
            return
        meta = ds["metadata"]
        if meta.get("deletionTimestamp"):
            return  # its pods go with it (the server deletes dependents)
        try:
            selector = selectors.selector_from_object((ds.get("spec") or {}).get("selector"))
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
        settled = self.inflight.settled(key, self.pods.cache)
        if settled:
            pods = await self.pod_control.claim(
                ds, selector, self.pods.cache.by_index(inf.NAMESPACE, meta["namespace"]))
        else:
            pods = [p for p in self.pods.cache.by_index(inf.OWNER, meta["uid"])
                    if base.is_controlled_by(p, ds)]
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
                                  f"{meta['name']} on node {podutil.target_node(pod)}, will "
                                  "try to delete it")
            doomed.append(pod)
        _, error = await podcontrol.slow_start(
            plan.create, lambda node: self.pod_control.create(
                ds, daemonplan.daemon_pod(ds, node, hash_)))
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
            node = podutil.target_node(pod)
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


def _selects(ds: Obj, labels: dict[str, str]) -> bool:
    try:
        selector = selectors.selector_from_object((ds.get("spec") or {}).get("selector"))
    except selectors.SelectorError:
        return False
    return not selector.empty and selector.matches(labels)
