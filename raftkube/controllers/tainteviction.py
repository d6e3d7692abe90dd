"""The taint eviction controller: pods leave a node whose NoExecute taints they do not
tolerate, at once or when their toleration runs out (Kubernetes' taint manager).

For each pod bound to a node with NoExecute taints, the pod's tolerations (plus the
default ones for the node controller's taints, `taints.with_defaults`, whose seconds are
`rk master` flags) decide: a taint it does not tolerate evicts it now; otherwise it is
evicted after the smallest `tolerationSeconds` of the tolerations used, counted from
when this leader first saw it so tainted (a new leader counts afresh, like Kubernetes'
in-memory queue); a toleration without seconds keeps it forever. If the taints go first,
the eviction is cancelled.

Eviction is an ordinary delete with the pod's grace period and its uid as precondition:
the pod is marked, its ReplicaSet makes a replacement at once (terminating pods do not
count), and the pod's node stops it and finishes the delete. A node that is dead never
does; the pod stays Terminating, as in Kubernetes, until the node comes back or the
Node is deleted (see `podgc`). Before evicting, the node's taints are read again
through the API: a leader that cannot reach a majority, or whose cache is behind a
node's recovery, evicts nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from raftkube.api import kinds, taints
from raftkube.client import informer as inf
from raftkube.client import workqueue
from raftkube.client.errors import ApiError
from raftkube.controllers import base

log = logging.getLogger(__name__)

Obj = dict[str, Any]
CONFIRM_FOR = 1.0  # seconds a read of a node's taints serves the evictions that follow


def _taint_ids(ts: list[Obj]) -> set[tuple[str, str]]:
    return {(str(t.get("key")), str(t.get("value") or "")) for t in ts}


def eviction_due(pod: Obj, node_taints: list[Obj], *, first_seen: float,
                 not_ready: float, unreachable: float) -> float | None:
    """When the pod must go (`first_seen` + its toleration, or `first_seen` itself for
    a taint it does not tolerate), or None if it may stay."""
    if not node_taints:
        return None
    tolerations = taints.with_defaults((pod.get("spec") or {}).get("tolerations"),
                                       not_ready=not_ready, unreachable=unreachable)
    tolerated, used = taints.matching(node_taints, tolerations)
    if not tolerated:
        return first_seen
    seconds = taints.toleration_seconds(used)
    return None if seconds is None else first_seen + seconds


class TaintEviction:
    name = "taint-eviction-controller"

    def __init__(self, ctx: base.Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.queue = workqueue.WorkQueue(name=self.name)
        self.pods = ctx.informers.informer(kinds.POD)
        self.nodes = ctx.informers.informer(kinds.NODE)
        self.first_seen: dict[str, float] = {}  # pod key -> when seen under its taints
        self.confirmed: dict[str, tuple[float, set[tuple[str, str]]]] = {}
        self.evicted = 0
        self.pods.add_handler(inf.Handler(add=self._pod_changed, update=self._pod_updated,
                                          delete=self._pod_gone))
        self.nodes.add_handler(inf.Handler(add=self._node_changed,
                                           update=self._node_updated,
                                           delete=self._node_gone))

    def _pod_changed(self, pod: Obj) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        cached = self.nodes.cache.get(str(node)) if node else None
        if cached is not None and taints.no_execute(cached):
            self.queue.add(inf.key_of(pod))
        elif inf.key_of(pod) in self.first_seen:
            self.queue.add(inf.key_of(pod))

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        spec_old, spec_new = old.get("spec") or {}, new.get("spec") or {}
        if old is new or spec_old.get("nodeName") != spec_new.get("nodeName") or \
                spec_old.get("tolerations") != spec_new.get("tolerations"):
            self._pod_changed(new)

    def _pod_gone(self, pod: Obj) -> None:
        self.first_seen.pop(inf.key_of(pod), None)

    def _node_changed(self, node: Obj) -> None:
        for pod in self.pods.cache.by_index(inf.NODE, node["metadata"]["name"]):
            self.queue.add(inf.key_of(pod))

    def _node_updated(self, old: Obj, new: Obj) -> None:
        if old is new or taints.no_execute(old) != taints.no_execute(new):
            self._node_changed(new)

    def _node_gone(self, node: Obj) -> None:
        self.confirmed.pop(node["metadata"]["name"], None)  # its pods go with it (pod GC)

    async def reconcile(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        node_name = str(((pod or {}).get("spec") or {}).get("nodeName") or "")
        node = self.nodes.cache.get(node_name) if node_name else None
        if pod is None or node is None or pod["metadata"].get("deletionTimestamp"):
            self.first_seen.pop(key, None)  # gone or going: nothing to evict
            return
        tainted = taints.no_execute(node)
        now = self.ctx.clock()
        start = self.first_seen.get(key, now)
        due = eviction_due(pod, tainted, first_seen=start,
                           not_ready=self.ctx.options.not_ready_timeout,
                           unreachable=self.ctx.options.eviction_timeout)
        if due is None:
            self._cancel(key, pod)
            return
        self.first_seen[key] = start
        if now < due:
            self.queue.add_after(key, due - now)
            return
        if not await self._still_tainted(node_name, tainted, now):
            # The cache is behind: the node's update re-queues its pods when it comes.
            # Not at once here, which would find the same cache and the same read
            # (CONFIRM_FOR) and spin; once the read may be made again, if still behind.
            self.queue.add_after(key, CONFIRM_FOR)
            return
        await self._evict(key, pod)

    def _cancel(self, key: str, pod: Obj) -> None:
        if self.first_seen.pop(key, None) is not None:
            self.ctx.events.event(pod, "Normal", "TaintManagerEviction",
                                  f"Cancelling deletion of Pod {key}")

    async def _still_tainted(self, node_name: str, tainted: list[Obj], now: float) -> bool:
        """Whether the node still has these taints, read through the API (or a read of
        less than CONFIRM_FOR seconds ago serves)."""
        wanted = _taint_ids(tainted)
        checked = self.confirmed.get(node_name)
        if checked is None or now - checked[0] > CONFIRM_FOR:
            try:
                live: Obj | None = await self.client.get(kinds.NODE, "", node_name)
            except ApiError as e:
                if e.code != 404:
                    raise
                live = None
            found = _taint_ids(taints.no_execute(live)) if live is not None else set()
            checked = self.confirmed[node_name] = (now, found)
        return wanted <= checked[1]

    async def _evict(self, key: str, pod: Obj) -> None:
        meta = pod["metadata"]
        log.info("evicting pod %s from node %s", key, pod["spec"].get("nodeName"))
        self.ctx.events.event(pod, "Normal", "TaintManagerEviction",
                              f"Marking for deletion Pod {key}")
        try:
            await self.client.delete(kinds.POD, meta["namespace"], meta["name"],
                                     uid=meta.get("uid", ""))
        except ApiError as e:
            if e.code not in (404, 409):
                raise  # 404, 409: gone, or another pod by that name: not ours to evict
        self.first_seen.pop(key, None)
        self.evicted += 1

    async def run(self) -> None:
        await workqueue.run_workers(self.queue, self.reconcile,
                                    workers=self.ctx.options.workers)
