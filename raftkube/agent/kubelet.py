"""The kubelet's pod loop: the pods bound to this node, made true on its runtime.

A level-triggered reconciler, like the leader's controllers, over one informer: the
pods with `spec.nodeName=NODE` (the server sends DELETED when a pod stops matching, and
the informer resumes its watch on any master without missing a change). Handlers only
enqueue `namespace/name`; `reconcile(key)` reads the pod from the cache and the pod's
state from the runtime and converges them:

- a pod that is gone, or whose uid changed, has its sandbox and containers removed;
- a pod being deleted has its containers stopped (its grace period is theirs), then is
  deleted with grace 0 and its uid as precondition: the node finishes what the API
  server began;
- a pod that ended (Succeeded, Failed) is left as it is: it never runs again;
- a pod seen for the first time is admitted, or rejected for good if it does not fit
  beside the pods admitted before it (`admission.py`); admission is decided without an
  await, so two workers never admit two pods into the same room;
- any other pod gets what `actions.plan` says (sandbox, starts, restarts after their
  back-off), and then its status, computed by `podstatus.pod_status`, is written with
  the resourceVersion it was read at, only when it differs from what the API holds.

What changes without an API event is found by polling, as Kubernetes' PLEG does: every
`relist_period` the runtime's pods are listed and a pod whose containers changed (an
exit) is enqueued. Timed changes the kubelet itself knows about (a back-off ending, a
readiness delay passing) are enqueued for their time. A container whose image could not
be had waits with the pull's reason (`actions.PullBackoff`) while the others start. A
status the kubelet wrote is remembered until the informer catches up, so a reconcile in
between starts from it rather than from the older cached pod.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from raftkube.agent import actions, admission, podstatus
from raftkube.agent import runtime as rt
from raftkube.api import kinds
from raftkube.client import events as ev
from raftkube.client import informer as inf
from raftkube.client import rest, workqueue
from raftkube.client.errors import ApiError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PULL_TOLD = -2  # the attempt under which a pull back-off's event is remembered as told


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _key(sandbox: rt.Sandbox) -> str:
    return f"{sandbox.namespace}/{sandbox.name}"


def _fingerprint(state: rt.PodState) -> tuple[tuple[str, int, str], ...]:
    return tuple(sorted((c.name, c.attempt, c.state) for c in state.containers))


class Kubelet:
    name = "kubelet"

    def __init__(self, *, node_name: str, host_ip: str, client: rest.RestClient,
                 runtime: rt.ContainerRuntime, prober: rt.Prober,
                 events: ev.EventRecorder, clock: Callable[[], float] = time.time,
                 backoff: actions.CrashBackoff | None = None,
                 pulls: actions.PullBackoff | None = None, relist_period: float = 1.0,
                 workers: int = 4, resync: float = 60.0,
                 allocatable: Mapping[str, str] | None = None,
                 informer: inf.Informer | None = None) -> None:
        self.node_name = node_name
        self.host_ip = host_ip
        self.client = client
        self.runtime = runtime
        self.prober = prober
        self.events = events
        self.clock = clock
        self.backoff = backoff or actions.CrashBackoff()
        self.pulls = pulls or actions.PullBackoff()
        self.relist_period = relist_period
        self.workers = workers
        self.allocatable = dict(allocatable or {})  # empty: every pod is admitted
        self._admitted: set[str] = set()  # uids of the pods admitted by this process
        self.pods = informer or inf.Informer(client, kinds.POD,
                                             field_selector=f"spec.nodeName={node_name}",
                                             resync=resync)
        self.queue = workqueue.WorkQueue(name=f"kubelet {node_name}")
        self._written: dict[str, Obj] = {}  # pod key -> the pod as our last status write
        self._seen: dict[str, tuple[str, Any]] = {}  # pod uid -> (key, fingerprint)
        self._told: set[tuple[str, str, int]] = set()  # back-offs already told as events
        self.pods.add_handler(inf.Handler(
            add=self._enqueue, update=lambda _old, new: self._enqueue(new),
            delete=self._enqueue))

    def _enqueue(self, pod: Obj) -> None:
        self.queue.add(inf.key_of(pod))

    # ---- running ----------------------------------------------------------------------

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.pods.run())
            await self.pods.wait_synced()
            # What ran here before the agent restarted: learnt before anything is
            # decided, so that nothing is started twice.
            await self.runtime.recover(self.pods.cache.list())
            for key in self.pods.cache.keys():
                self.queue.add(key)
            await self.relist()
            group.create_task(self._relist_forever())
            group.create_task(workqueue.run_workers(self.queue, self.reconcile,
                                                    workers=self.workers))

    async def _relist_forever(self) -> None:
        while True:
            await asyncio.sleep(self.relist_period)
            try:
                await self.relist()
            except rt.RuntimeFailure as e:
                log.warning("%s: listing the runtime's pods failed: %s", self.node_name, e)

    async def relist(self) -> None:
        """Enqueue every pod whose runtime state changed since the last relist."""
        seen: dict[str, tuple[str, Any]] = {}
        for state in await self.runtime.pods():
            entry = (_key(state.sandbox), _fingerprint(state))
            seen[state.sandbox.uid] = entry
            if self._seen.get(state.sandbox.uid) != entry:
                self.queue.add(entry[0])
        for uid, (key, _) in self._seen.items():
            if uid not in seen:
                self.queue.add(key)
        self._seen = seen

    # ---- one pod ----------------------------------------------------------------------

    def _current(self, key: str) -> Obj | None:
        cached = self.pods.cache.get(key)
        written = self._written.get(key)
        if cached is None or written is None:
            return cached
        if written["metadata"].get("uid") == cached["metadata"].get("uid") and \
                _rv(written) > _rv(cached):
            return written
        del self._written[key]  # the informer has caught up
        return cached

    async def _states(self, key: str) -> list[rt.PodState]:
        return [s for s in await self.runtime.pods() if _key(s.sandbox) == key]

    async def reconcile(self, key: str) -> None:
        pod = self._current(key)
        uid = pod["metadata"].get("uid") if pod is not None else None
        state = None
        for found in await self._states(key):
            if found.sandbox.uid == uid:
                state = found
            else:  # its pod is gone (or was replaced by one of the same name)
                await self.runtime.remove_pod(found.sandbox.uid, grace=0)
                self._forget(found.sandbox.uid)
        if pod is None:
            self._written.pop(key, None)
            return
        if pod["metadata"].get("deletionTimestamp"):
            await self._finish(pod, state)
            return
        if (pod.get("status") or {}).get("phase") in podstatus.TERMINAL:
            return  # an ended pod never runs again
        if state is None and not self._holds(pod):
            rejected = admission.rejection(
                pod, [p for p in self.pods.cache.list()
                      if p["metadata"].get("uid") != uid and self._holds(p)],
                self.allocatable)
            if rejected is not None:
                await self._reject(key, pod, *rejected)
                return
            self._admitted.add(pod["metadata"]["uid"])
        await self._sync(key, pod, state)

    def _holds(self, pod: Obj) -> bool:
        """Whether a pod takes room on this node: admitted here (by this process, or
        before it restarted: then it has a startTime) and not ended."""
        status = pod.get("status") or {}
        return status.get("phase") not in podstatus.TERMINAL and (
            pod["metadata"].get("uid") in self._admitted or bool(status.get("startTime")))

    async def _reject(self, key: str, pod: Obj, reason: str, message: str) -> None:
        self.events.event(pod, "Warning", reason, message)
        status = {**(pod.get("status") or {}), "phase": "Failed", "reason": reason,
                  "message": message}
        try:
            self._written[key] = await self.client.update_status(
                kinds.POD, {**pod, "status": status})
        except ApiError as e:
            if e.code != 404:
                raise

    async def _sync(self, key: str, pod: Obj, state: rt.PodState | None) -> None:
        uid = pod["metadata"]["uid"]
        spec = pod.get("spec") or {}
        rounds = len(actions.named(spec.get("initContainers"))) + 2
        pull_failures: dict[str, tuple[str, str]] = {}  # what this sync could not pull
        for _ in range(rounds):  # init containers run one after another
            plan = actions.plan(pod, state, now=self.clock(), backoff=self.backoff,
                                pulls=self.pulls)
            if plan.idle:
                break
            try:
                pull_failures.update(await self._execute(pod, state, plan))
            except rt.RuntimeFailure as e:
                reason = "FailedCreatePodSandBox" if plan.sandbox else "Failed"
                self.events.event(pod, "Warning", reason, str(e))
                raise  # retried with back-off
            state = next((s for s in await self._states(key) if s.sandbox.uid == uid), None)
        plan.waiting.update(pull_failures)
        now = self.clock()
        ready: dict[str, bool] = {}
        recheck = plan.recheck
        for c in actions.named(spec.get("containers")):
            latest = state.latest(c["name"]) if state is not None else None
            if latest is not None:
                ready[c["name"]], at = self.prober.ready(pod, c, latest, now)
                if at is not None:
                    recheck = at if recheck is None else min(recheck, at)
        self._tell_backoffs(pod, state, plan)
        status = podstatus.pod_status(pod, state, now=now, host_ip=self.host_ip,
                                      ready=ready, plan=plan)
        if status != pod.get("status"):
            try:
                self._written[key] = await self.client.update_status(
                    kinds.POD, {**pod, "status": status})
            except ApiError as e:
                if e.code != 404:
                    raise  # a conflict: the newer pod is on its way; retried
        if recheck is not None:
            self.queue.add_after(key, max(0.0, recheck - now) + 0.01)

    async def _execute(self, pod: Obj, state: rt.PodState | None, plan: actions.Plan
                       ) -> dict[str, tuple[str, str]]:
        """Do what the plan says; the containers whose image could not be had, and why."""
        failures: dict[str, tuple[str, str]] = {}
        if plan.sandbox:
            await self.runtime.run_sandbox(pod)
        now = self.clock()
        for c, attempt in plan.start:
            if attempt > 0 and state is not None:
                latest = state.latest(c["name"])
                finished = latest.finished_at if latest and latest.finished_at else now
                self.backoff.restarted(actions.backoff_key(pod, c["name"]), finished, now)
            key = actions.backoff_key(pod, c["name"])
            image = str(c.get("image") or "")
            try:
                await self.runtime.start_container(pod, c, attempt=attempt)
            except rt.ImagePullFailure as e:
                self.pulls.failed(key, image, e.reason, e.message, self.clock())
                failures[c["name"]] = (e.reason, e.message)
                self._told.discard((pod["metadata"]["uid"], c["name"], PULL_TOLD))
                self.events.event(pod, "Warning", "Failed", e.message)
                continue
            self.pulls.succeeded(key)
            self.events.event(pod, "Normal", "Pulled", f'Container image '
                              f'"{image}" already present on machine')
            self.events.event(pod, "Normal", "Created", f"Created container {c['name']}")
            self.events.event(pod, "Normal", "Started", f"Started container {c['name']}")
        return failures

    def _tell_backoffs(self, pod: Obj, state: rt.PodState | None, plan: actions.Plan) -> None:
        uid = pod["metadata"]["uid"]
        for name, (reason, message) in plan.waiting.items():
            if reason == rt.IMAGE_PULL_BACKOFF:
                if (uid, name, PULL_TOLD) not in self._told:  # once for each failed pull
                    self._told.add((uid, name, PULL_TOLD))
                    self.events.event(pod, "Normal", "BackOff", message)
                continue
            if reason != actions.CRASH_LOOP:
                continue  # a pull that failed was told when it failed
            latest = state.latest(name) if state is not None else None
            told = (uid, name, latest.attempt if latest is not None else -1)
            if told not in self._told:
                self._told.add(told)
                self.events.event(pod, "Warning", "BackOff", "Back-off restarting failed "
                                  f"container {name} in pod {actions.pod_ref(pod)}")

    def _forget(self, uid: str) -> None:
        self.backoff.forget_pod(uid)
        self.pulls.forget_pod(uid)
        self._admitted.discard(uid)
        self._told = {t for t in self._told if t[0] != uid}

    async def _finish(self, pod: Obj, state: rt.PodState | None) -> None:
        """Stop what runs of a pod being deleted, then delete it with grace 0."""
        meta = pod["metadata"]
        if state is not None:
            for c in state.containers:
                if c.state == rt.RUNNING:
                    self.events.event(pod, "Normal", "Killing", f"Stopping container {c.name}")
            await self.runtime.remove_pod(meta["uid"],
                                          grace=float(meta.get("deletionGracePeriodSeconds")
                                                      or 0))
        self._forget(meta["uid"])
        try:
            await self.client.delete(kinds.POD, meta.get("namespace", ""), meta["name"],
                                     grace=0, uid=meta["uid"])
        except ApiError as e:
            if e.code not in (404, 409):  # gone already, or another pod by that name now
                raise
