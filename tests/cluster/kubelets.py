"""Stand-in nodes for workload tests, until the simulated agent (`rk agent --runtime
simulated`) is in main: Node objects, and a loop that plays their agents' part through
the API with the admin token — a pod bound to one of them turns Running and Ready
`ready_after` seconds later (unless its image is one of `stuck`: Running, never Ready),
and a pod marked for deletion is deleted for good (grace 0) `stop_after` seconds later.
It talks to every master, failing over as any client does.

`Pods` watches the pods of one app and checks, at every revision the watch delivers
(each write is one event, in order, so every state the store went through), what a
rolling update promises: never more than `most` pods that are not going away, and — once
armed — never fewer than `least` of them ready.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import conditions, kinds
from raftkube.api.timestamps import rfc3339
from raftkube.client import informer as inf
from raftkube.client import rest, workqueue
from raftkube.client.errors import ApiError, ClientError

Obj = dict[str, Any]


def node(name: str) -> Obj:
    now = rfc3339(time.time())
    room = {"cpu": "64", "memory": "128Gi", "pods": "500"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"capacity": dict(room), "allocatable": dict(room),
                       "conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady",
                                       "message": "kubelet is posting ready status",
                                       "lastHeartbeatTime": now,
                                       "lastTransitionTime": now}]}}


def running(pod: Obj, now: float, *, ready: bool = True) -> Obj:
    out = copy.deepcopy(pod)
    status = out.setdefault("status", {})
    status["phase"] = "Running"
    status.setdefault("startTime", rfc3339(now))
    conditions.put(status, {"type": "Initialized", "status": "True"}, now)
    for type_ in ("ContainersReady", "Ready"):
        conditions.put(status, {"type": type_, "status": "True" if ready else "False"}, now)
    status["containerStatuses"] = [
        {"name": c["name"], "image": c.get("image", ""), "ready": ready, "restartCount": 0,
         "started": True, "state": {"running": {"startedAt": rfc3339(now)}}}
        for c in out["spec"].get("containers") or []]
    return out


class Kubelets:
    def __init__(self, client: rest.RestClient, names: list[str], *,
                 ready_after: float = 0.3, stop_after: float = 0.1,
                 stuck: frozenset[str] = frozenset({"web:stuck"})) -> None:
        self.client = client
        self.stuck = stuck
        self.names = set(names)
        self.ready_after = ready_after
        self.stop_after = stop_after
        self.pods = inf.Informer(client, kinds.POD)
        self.queue = workqueue.WorkQueue(name="kubelets")
        self.bound_at: dict[str, float] = {}
        self.pods.add_handler(inf.Handler(add=self._seen,
                                          update=lambda _old, new: self._seen(new)))
        self._tasks: list[asyncio.Task[None]] = []

    def _seen(self, pod: Obj) -> None:
        if (pod.get("spec") or {}).get("nodeName") in self.names:
            self.queue.add(inf.key_of(pod))

    async def start(self) -> None:
        for name in sorted(self.names):
            try:
                await self.client.create(kinds.NODE, "", node(name))
            except ApiError as e:
                if e.code != 409:
                    raise
        self._tasks = [asyncio.ensure_future(self.pods.run()),
                       asyncio.ensure_future(workqueue.run_workers(
                           self.queue, self._sync, workers=8))]
        await self.pods.wait_synced(30)

    async def stop(self) -> None:
        self.queue.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _sync(self, key: str) -> None:
        pod = self.pods.cache.get(key)
        if pod is None:
            return
        meta = pod["metadata"]
        now = asyncio.get_running_loop().time()
        since = self.bound_at.setdefault(key, now)
        try:
            if meta.get("deletionTimestamp"):
                if now - since < self.stop_after:
                    self.queue.add_after(key, self.stop_after)
                    return
                await self.client.delete(kinds.POD, meta["namespace"], meta["name"], grace=0,
                                         uid=meta["uid"])
                self.bound_at.pop(key, None)
            elif not conditions.is_true(pod, "Ready"):
                wait = since + self.ready_after - now
                if wait > 0:
                    self.queue.add_after(key, wait)
                    return
                ready = not any(c.get("image") in self.stuck
                                for c in pod["spec"].get("containers") or [])
                if ready or (pod.get("status") or {}).get("phase") != "Running":
                    await self.client.update_status(kinds.POD, running(pod, time.time(),
                                                                       ready=ready))
        except ApiError as e:
            if e.code == 409:  # changed meanwhile: the informer brings it back
                return
            if e.code != 404:
                raise


@dataclass
class Pods:
    """Counts of one app's pods at every revision, and the bounds they broke."""

    app: str
    most: int
    least: int = 0
    armed: bool = False
    peak: int = 0
    low: int | None = None
    broken: list[str] = field(default_factory=list)
    on_change: Callable[[], None] | None = None

    def attach(self, informer: inf.Informer) -> None:
        informer.add_handler(inf.Handler(add=lambda p: self._check(informer, p),
                                         update=lambda _o, p: self._check(informer, p),
                                         delete=lambda p: self._check(informer, p)))

    def counts(self, informer: inf.Informer) -> tuple[int, int]:
        live = [p for p in informer.cache.list()
                if (p["metadata"].get("labels") or {}).get("app") == self.app
                and not p["metadata"].get("deletionTimestamp")
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
        return len(live), sum(1 for p in live if conditions.is_true(p, "Ready"))

    def _check(self, informer: inf.Informer, pod: Obj) -> None:
        if (pod["metadata"].get("labels") or {}).get("app") != self.app:
            return
        total, ready = self.counts(informer)
        at = pod["metadata"].get("resourceVersion")
        self.peak = max(self.peak, total)
        if total > self.most:
            self.broken.append(f"{total} pods > {self.most} at revision {at}")
        if self.armed:
            self.low = ready if self.low is None else min(self.low, ready)
            if ready < self.least:
                self.broken.append(f"{ready} ready < {self.least} at revision {at}")


async def call(attempt: Callable[[], Any], *, timeout: float = 30.0) -> Any:
    """Retry a test's own request through outages and conflicts until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except ClientError as e:
            if time.monotonic() > deadline:
                raise
            if isinstance(e, ApiError) and e.code not in (409, 500, 503):
                raise
            await asyncio.sleep(0.1)
