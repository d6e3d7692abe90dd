"""The kubelet's pod loop: the pods bound to this node, made true on its runtime.

A level-triggered reconciler, like the leader's controllers, over one informer: the
pods with `spec.nodeName=NODE` (the server sends DELETED when a pod stops matching, and
the informer resumes its watch on any master without missing a change). Handlers only
enqueue `namespace/name`; `reconcile(key)` reads the pod from the cache and the pod's
state from the runtime and converges them:

- a pod that is gone, or whose uid changed, has its sandbox and containers removed;
- a pod being deleted has its containers stopped (its grace period is theirs) by a
  background task of its own, so that a long grace period holds no worker; when they
  are gone the pod is enqueued again and deleted with grace 0 and its uid as
  precondition: the node finishes what the API server began;
- a pod that ended (Succeeded, Failed) never runs again: its sandbox is stopped (its
  IP goes back to the node) and its exited containers are kept, for their logs, until
  the pod is deleted;
- a pod seen for the first time is admitted, or rejected for good if it does not fit
  beside the pods admitted before it (`admission.py`); admission is decided without an
  await, so two workers never admit two pods into the same room;
- any other pod has its volumes set up (`podconfig.py`: a volume that cannot be, such
  as a missing ConfigMap, is a FailedMount and nothing of the pod starts), gets what
  `actions.plan` says (sandbox, starts, restarts after their back-off), each container
  started with the request resolved from the API (env, command, mounts; one that cannot
  be resolved waits as CreateContainerConfigError while the others start), and then its
  status, computed by `podstatus.pod_status`, is written with the resourceVersion it was
  read at, only when it differs from what the API holds.

What changes without an API event is found by listing the runtime's pods, as Kubernetes'
PLEG does, and a pod whose containers changed (an exit) is enqueued: at once when the
runtime tells of a change (the engine's events, as the evented PLEG; a burst of them is
one relist, at most every `RELIST_GAP`), else every
`relist_period`, and every `evented_relist_period` as a safety net; every
`config_refresh` the ConfigMaps and Secrets in use are read again, and the pods using
one that changed are enqueued (their volumes follow it); a pod waiting for one is
retried every `config_retry` too. Timed changes the kubelet itself knows about (a back-
off ending, a readiness delay passing) are enqueued for their time. A container whose
image could not be had waits with the pull's reason (`actions.PullBackoff`) while the
others start. The prober (`probes.Prober`) is told which containers run after every sync
and enqueues a pod whose probes' verdict changed: a container that turned ready or
unready, or that failed its liveness or startup probe, which the next sync stops
(`Killing`) and restarts as the pod's restartPolicy says. A status the kubelet wrote is
remembered until the informer catches up, so a reconcile in between starts from it
rather than from the older cached pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from raftkube.agent import (
    actions,
    admission,
    configs,
    podconfig,
    podenv,
    podstatus,
    probes,
    volumes,
)
from raftkube.agent import runtime as rt
from raftkube.api import kinds
from raftkube.client import events as ev
from raftkube.client import informer as inf
from raftkube.client import rest, workqueue
from raftkube.client.errors import ApiError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
PULL_TOLD = -2  # the attempt under which a pull back-off's event is remembered as told
TERMINATE_RETRY = 5.0  # seconds before a pod whose containers could not be stopped is retried


RELIST_GAP = 0.2  # seconds at least between two relists of the runtime


def _rv(obj: Obj) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


def _key(sandbox: rt.Sandbox) -> str:
    return f"{sandbox.namespace}/{sandbox.name}"


def _fingerprint(state: rt.PodState) -> tuple[tuple[str, int, str], ...]:
    return tuple(sorted((c.name, c.attempt, c.state) for c in state.containers))


@dataclass(frozen=True)
class Executed:
    """What `Kubelet._execute` did: the containers it could not start (name -> reason,
    message), and the pod's state after it if known without listing the runtime."""

    failures: dict[str, tuple[str, str]]
    state: rt.PodState | None


class PodNetwork(Protocol):
    """What the kubelet asks of the node's service networking (services.py)."""

    def sandbox_config(self, pod: Obj) -> rt.SandboxConfig:
        """The pod's sandbox settings for naming (resolv.conf)."""

    async def sandbox_ready(self, pod: Obj, sandbox: rt.Sandbox) -> None:
        """The sandbox has its IP; called before the pod's containers start."""


class Kubelet:
    name = "kubelet"

    def __init__(self, *, node_name: str, host_ip: str, client: rest.RestClient,
                 runtime: rt.ContainerRuntime, prober: probes.Prober,
                 events: ev.EventRecorder, clock: Callable[[], float] = time.time,
                 backoff: actions.CrashBackoff | None = None,
                 pulls: actions.PullBackoff | None = None, relist_period: float = 1.0,
                 evented_relist_period: float = 10.0, workers: int = 4,
                 resync: float = 60.0,
                 allocatable: Mapping[str, str] | None = None,
                 informer: inf.Informer | None = None,
                 services: inf.Informer | None = None,
                 volume_manager: volumes.VolumeManager | None = None,
                 config_refresh: float = 10.0, config_retry: float = 5.0,
                 network: PodNetwork | None = None) -> None:
        self.node_name = node_name
        self.network = network
        self.host_ip = host_ip
        self.client = client
        self.runtime = runtime
        self.prober = prober
        self.events = events
        self.clock = clock
        self.backoff = backoff or actions.CrashBackoff()
        self.pulls = pulls or actions.PullBackoff()
        self.relist_period = relist_period
        self.evented_relist_period = evented_relist_period
        self._evented = False  # the runtime's change events are arriving
        self._runtime_changed = asyncio.Event()
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
        # The pod's configuration: ConfigMaps and Secrets read by name, the Services of
        # the pods' namespaces (an informer shared by the process's nodes, or our own),
        # the volumes under the agent's root directory.
        self._own_services = services is None
        self.services = services or inf.Informer(client, kinds.SERVICE)
        self.config_refresh = config_refresh
        self.config_retry = config_retry
        self.config = podconfig.PodConfig(
            objects=configs.ReferencedObjects(client, clock=clock,
                                              on_change=self._object_changed),
            services=self.services,
            volume_manager=volume_manager or volumes.VolumeManager(
                os.path.join(tempfile.gettempdir(), f"raftkube-kubelet-{node_name}"),
                clock=clock),
            host_ip=host_ip, allocatable=self.allocatable)
        # (uid, container or "" for the pod, reason, message): configuration problems told
        self._config_told: set[tuple[str, str, str, str]] = set()
        # pod uid -> container -> the attempt this kubelet stopped for failing a probe
        self._killed: dict[str, dict[str, int]] = {}
        # pod uid -> the task stopping the containers of that pod being deleted
        self._terminating: dict[str, asyncio.Task[None]] = {}
        # pod uid -> the task stopping the sidecars of that pod, whose app has ended
        self._winding: dict[str, asyncio.Task[None]] = {}
        self.prober.subscribe(lambda key: self.queue.add(key))
        self.pods.add_handler(inf.Handler(
            add=self._enqueue, update=lambda _old, new: self._enqueue(new),
            delete=self._enqueue))

    def _enqueue(self, pod: Obj) -> None:
        self.queue.add(inf.key_of(pod))

    def _object_changed(self, key: configs.Key) -> None:
        """A ConfigMap or Secret changed: sync the pods that use it (their volumes)."""
        for pod in self.pods.cache.list():
            if key in configs.keys_of(pod):
                self._enqueue(pod)

    # ---- running ----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.cancel_terminations()

    async def cancel_terminations(self) -> None:
        """Cancel the pods' terminations and sidecar stops under way (the agent is
        stopping: the next one finds the containers still there and stops them again)."""
        tasks = [*self._terminating.values(), *self._winding.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._terminating.clear()
        self._winding.clear()

    async def _run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self.pods.run())
            if self._own_services:
                group.create_task(self.services.run())
            group.create_task(self.prober.run())
            await self.pods.wait_synced()
            # A container's service variables are those of the Services that exist when
            # it starts: none starts before the Services have been listed once.
            await self.services.wait_synced()
            # What ran here before the agent restarted: learnt before anything is
            # decided, so that nothing is started twice.
            await self.runtime.recover(self.pods.cache.list())
            for key in self.pods.cache.keys():
                self.queue.add(key)
            await self.relist()
            group.create_task(self._relist_forever())
            group.create_task(self._changes_forever())
            group.create_task(self._refresh_forever())
            group.create_task(workqueue.run_workers(self.queue, self.reconcile,
                                                    workers=self.workers))

    async def _relist_forever(self) -> None:
        while True:
            # While the engine's events arrive, a change is listed when it is told, and
            # the relist every `evented_relist_period` is a safety net only (Kubernetes'
            # evented PLEG); without them, every `relist_period` finds the changes.
            period = self.evented_relist_period if self._evented else self.relist_period
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(period):
                    await self._runtime_changed.wait()
            self._runtime_changed.clear()
            try:
                await self.relist()
            except rt.RuntimeFailure as e:
                log.warning("%s: listing the runtime's pods failed: %s", self.node_name, e)
            if self._evented:
                # A pod's start is a burst of events (each container created,
                # connected, started): one relist a RELIST_GAP takes them all, where one
                # per event listed every container of the node a dozen times per pod.
                await asyncio.sleep(RELIST_GAP)

    async def _changes_forever(self) -> None:
        """Follow the runtime's change events, subscribing again after a failure; the
        first item of each subscription lists again (what changed while there was none)."""
        while True:
            stream = self.runtime.changes()
            if stream is None:
                return
            try:
                async with contextlib.aclosing(stream) as changes:
                    async for _ in changes:
                        self._evented = True
                        self._runtime_changed.set()
            except rt.RuntimeFailure as e:
                log.warning("%s: the runtime's events: %s", self.node_name, e)
            self._evented = False
            self._runtime_changed.set()  # the relister takes up the short period now
            await asyncio.sleep(self.relist_period)

    async def _refresh_forever(self) -> None:
        # The first round at once: the volumes of pods that went while the agent was
        # away (their tmpfs still mounted) are removed at start-up.
        while True:
            try:
                await self.refresh_config()
            except rt.RuntimeFailure as e:
                log.warning("%s: listing the runtime's pods failed: %s", self.node_name, e)
            await asyncio.sleep(self.config_refresh)

    async def refresh_config(self) -> None:
        """Read again the ConfigMaps and Secrets that pods here use (a change syncs the
        pods that use it), and remove the volumes of pods that are neither in the API
        nor in the runtime any more (their pod went while the agent was away)."""
        live = [p for p in self.pods.cache.list()
                if (p.get("status") or {}).get("phase") not in podstatus.TERMINAL]
        await self.config.objects.refresh(self.config.in_use(live))
        running = {s.sandbox.uid for s in await self.runtime.pods()}
        known = {p["metadata"].get("uid") for p in self.pods.cache.list()}
        for uid in self.config.volumes.pod_uids():
            if uid not in known and uid not in running:
                self.config.volumes.remove(uid)

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
        namespace, _, name = key.partition("/")
        return [s for s in await self.runtime.pods(namespace=namespace, name=name)
                if _key(s.sandbox) == key]

    async def reconcile(self, key: str) -> None:
        pod = self._current(key)
        uid = pod["metadata"].get("uid") if pod is not None else None
        state = None
        for found in await self._states(key):
            if found.sandbox.uid == uid:
                state = found
            else:  # its pod is gone (or was replaced by one of the same name)
                await self.runtime.remove_pod(found.sandbox.uid, grace=0)
                self.config.volumes.remove(found.sandbox.uid)
                self._forget(found.sandbox.uid)
        if pod is None:
            self._written.pop(key, None)
            return
        if pod["metadata"].get("deletionTimestamp"):
            await self._finish(pod, state)
            return
        if (pod.get("status") or {}).get("phase") in podstatus.TERMINAL:
            # An ended pod never runs again: its sandbox is stopped (once: a stopped
            # one reads as not ready), its exited containers kept for their logs, and
            # its volumes go once nothing of it runs (a memory emptyDir is the node's
            # RAM), as Kubernetes tears down the volumes of terminated pods.
            if state is not None and state.sandbox.ready:
                await self.runtime.stop_sandbox(state.sandbox.uid)
            if (state is None or not any(c.state == rt.RUNNING for c in state.containers)) \
                    and uid in self.config.volumes.pod_uids():
                self.config.volumes.remove(uid)
            return
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
        state = await self._kill_unhealthy(key, pod, state)
        # The probes of what runs now, before deciding: a sidecar found running after the
        # agent restarted resumes from its reported status, so its startup probe (which
        # passed) holds nothing up in `_unstarted`.
        self.prober.track(pod, state)
        rounds = len(actions.named(spec.get("initContainers"))) + 2
        # The same question the loop below asks: a container just killed for failing a
        # probe is about to be restarted, so the pod's ConfigMaps and Secrets are read
        # afresh for it (without `killed`, a container the policy would not restart by
        # its exit code read as done, and restarted with the cached ones).
        plan = actions.plan(pod, state, now=self.clock(), backoff=self.backoff,
                            pulls=self.pulls, killed=self._killed_now(uid, state),
                            unstarted=self._unstarted(pod, state))
        if state is not None and plan.start and not state.sandbox.ready:
            pod, state = await self._sandbox_back(key, pod, state)
        # Volumes first, with the pod's ConfigMaps and Secrets read afresh when something
        # is about to start: nothing of a pod starts before all its volumes are there.
        prepared: podconfig.Prepared | None = None
        try:
            prepared = await self.config.prepare(
                pod, fresh=not plan.idle, pod_ip=state.sandbox.ip if state else "")
        except volumes.VolumeError as e:
            self._tell_config(pod, "", "FailedMount", str(e))
        else:
            if not prepared.kept:
                self._untell_config(uid, "", "FailedMount")
            for kept in prepared.kept:  # a source gone: its last files stay, the pod runs
                self._tell_config(pod, "", "FailedMount", str(kept))
        # What this sync could not start: images it could not pull, containers it could
        # not make from their spec (CreateContainerConfigError).
        failures: dict[str, tuple[str, str]] = {}
        for _ in range(rounds):  # init containers run one after another
            plan = actions.plan(pod, state, now=self.clock(), backoff=self.backoff,
                                pulls=self.pulls, killed=self._killed_now(uid, state),
                                unstarted=self._unstarted(pod, state))
            plan.start = [(c, a) for c, a in plan.start if c["name"] not in failures]
            if plan.idle or prepared is None:
                break
            try:
                done = await self._execute(pod, state, plan, prepared)
            except rt.RuntimeFailure as e:
                reason = "FailedCreatePodSandBox" if plan.sandbox else "Failed"
                self.events.event(pod, "Warning", reason, str(e))
                raise  # retried with back-off
            failures.update(done.failures)
            state = done.state if done.state is not None else next(
                (s for s in await self._states(key) if s.sandbox.uid == uid), None)
        plan.waiting.update(failures)
        self.prober.track(pod, state)
        now = self.clock()
        ready: dict[str, bool] = {}
        started: dict[str, bool] = {}
        recheck = plan.recheck
        unmade = any(reason == podenv.CONFIG_ERROR for reason, _ in failures.values())
        if unmade or prepared is None:  # retried; sooner if an object it reads changes
            recheck = min(recheck if recheck is not None else math.inf,
                          now + self.config_retry)
        for c in actions.running_containers(pod):  # sidecars are probed as apps are
            latest = state.latest(c["name"]) if state is not None else None
            if latest is not None:
                verdict = self.prober.verdict(pod, c, latest, now)
                ready[c["name"]], started[c["name"]] = verdict.ready, verdict.started
                if verdict.recheck is not None:
                    recheck = verdict.recheck if recheck is None \
                        else min(recheck, verdict.recheck)
        self._tell_backoffs(pod, state, plan)
        status = podstatus.pod_status(pod, state, now=now, host_ip=self.host_ip,
                                      ready=ready, plan=plan, started=started)
        if status.get("phase") in podstatus.TERMINAL and uid in self._winding:
            # Not ended while its sidecars are still stopping (a terminal phase is never
            # written again, so it would keep them running in its status for good): the
            # task syncs the pod again once they have stopped.
            status = {**status, "phase": "Running"}
        if status != pod.get("status"):
            try:
                self._written[key] = await self.client.update_status(
                    kinds.POD, {**pod, "status": status})
            except ApiError as e:
                if e.code != 404:
                    raise  # a conflict: the newer pod is on its way; retried
        if recheck is not None:
            self.queue.add_after(key, max(0.0, recheck - now) + 0.01)

    async def _sandbox_back(self, key: str, pod: Obj, state: rt.PodState
                            ) -> tuple[Obj, rt.PodState]:
        """Start again the dead sandbox of a pod that has containers to start (its pause
        container was killed, or the engine restarted), before them: its new IP is
        written to status.podIP and given to the service network now, so that the
        containers' fieldRefs and the Services that lead to the pod see it at once."""
        config = self.network.sandbox_config(pod) if self.network is not None else None
        sandbox = await self.runtime.run_sandbox(pod, config)
        if self.network is not None:
            await self.network.sandbox_ready(pod, sandbox)
        log.info("%s: the sandbox of pod %s was started again (IP %s)", self.node_name,
                 key, sandbox.ip or "none")
        uid = pod["metadata"]["uid"]
        state = next((s for s in await self._states(key) if s.sandbox.uid == uid), state)
        status = pod.get("status") or {}
        if sandbox.ip and status.get("podIP") != sandbox.ip:
            new = {**status, "podIP": sandbox.ip, "podIPs": [{"ip": sandbox.ip}]}
            try:
                pod = self._written[key] = await self.client.update_status(
                    kinds.POD, {**pod, "status": new})
            except ApiError as e:
                if e.code != 404:
                    raise  # a conflict: the newer pod is on its way; retried
        return pod, state

    async def _execute(self, pod: Obj, state: rt.PodState | None, plan: actions.Plan,
                       prepared: podconfig.Prepared) -> Executed:
        """Do what the plan says; the containers that could not be started, and why: an
        image that could not be had, a spec that could not be resolved
        (CreateContainerConfigError); and the pod's state after it, when the answers of
        the runtime's own calls tell it."""
        failures: dict[str, tuple[str, str]] = {}
        started: list[rt.Container] = []
        if plan.sandbox or state is None:
            config = self.network.sandbox_config(pod) if self.network is not None else None
            sandbox = await self.runtime.run_sandbox(pod, config)
            if self.network is not None:
                await self.network.sandbox_ready(pod, sandbox)
        else:
            sandbox = state.sandbox
        grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30) or 0)
        uid = pod["metadata"]["uid"]
        if plan.stop and uid not in self._winding:
            # The sidecars of a pod whose app has ended stop in a task of their own, as
            # a deletion's do, so that their grace period holds no worker.
            self._winding[uid] = asyncio.create_task(
                self._apart(self._winding, pod, "stopping the sidecars of pod",
                            self._stop_sidecars(pod, list(plan.stop), grace)))
        now = self.clock()
        for c, attempt in plan.start:
            try:
                request = self.config.request(
                    pod, c, prepared, sandbox,
                    warn=functools.partial(self._tell_config, pod, c["name"],
                                           "InvalidEnvironmentVariableNames"))
            except podenv.ConfigError as e:
                failures[c["name"]] = (podenv.CONFIG_ERROR, str(e))
                self._tell_config(pod, c["name"], "Failed", f"Error: {e}")
                continue
            if attempt > 0 and state is not None:
                latest = state.latest(c["name"])
                finished = latest.finished_at if latest and latest.finished_at else now
                self.backoff.restarted(actions.backoff_key(pod, c["name"]), finished, now)
            key = actions.backoff_key(pod, c["name"])
            image = str(c.get("image") or "")
            try:
                started.append(await self.runtime.start_container(pod, c, attempt=attempt,
                                                                  request=request))
            except rt.ImagePullFailure as e:
                self.pulls.failed(key, image, e.reason, e.message, self.clock())
                failures[c["name"]] = (e.reason, e.message)
                self._told.discard((pod["metadata"]["uid"], c["name"], PULL_TOLD))
                self.events.event(pod, "Warning", "Failed", e.message)
                continue
            self.pulls.succeeded(key)
            self._untell_config(pod["metadata"]["uid"], c["name"], "Failed")
            self.events.event(pod, "Normal", "Pulled", f'Container image '
                              f'"{image}" already present on machine')
            self.events.event(pod, "Normal", "Created", f"Created container {c['name']}")
            self.events.event(pod, "Normal", "Started", f"Started container {c['name']}")
        # The containers started were inspected as they started: the state after this is
        # the one before with them added, and the engine need not be listed again. Not
        # so when containers were stopped, when an init container ran (it may have ended
        # already, and the next one waits on that), or when the sandbox was not running
        # (the runtime started it again, with a new IP, to start these in it).
        inits = {c["name"] for c in actions.named((pod.get("spec") or {}).get("initContainers"))
                 if not actions.is_sidecar(c)}
        if plan.stop or not sandbox.ready or any(c.name in inits for c in started):
            return Executed(failures, None)
        before = state.containers if state is not None and state.sandbox.uid == sandbox.uid \
            else ()
        return Executed(failures, rt.PodState(sandbox, before + tuple(started)))

    def _tell_config(self, pod: Obj, container: str, reason: str, message: str) -> None:
        """A Warning about the configuration of one container of the pod ("": of the
        pod, its volumes), once per container and message (it is retried every few
        seconds until it is fixed): two containers with the same problem are each told,
        and one that keeps failing is not told again when another starts."""
        told = (pod["metadata"]["uid"], container, reason, message)
        if told not in self._config_told:
            self._config_told.add(told)
            self.events.event(pod, "Warning", reason, message)

    def _untell_config(self, uid: str, container: str, reason: str) -> None:
        """It was fixed for that container: the same problem, if it comes back, is told
        again."""
        gone = {t for t in self._config_told if t[:3] == (uid, container, reason)}
        if gone:
            self._config_told -= gone

    async def _kill_unhealthy(self, key: str, pod: Obj, state: rt.PodState | None
                              ) -> rt.PodState | None:
        """Stop every running container (app or sidecar) whose liveness or startup probe
        failed for good, with the probe's grace period or else the pod's; the plan
        restarts it (a sidecar always)."""
        if state is None:
            return state
        uid = pod["metadata"]["uid"]
        spec = pod.get("spec") or {}
        now = self.clock()
        stopped = False
        for c in actions.running_containers(pod):
            latest = state.latest(c["name"])
            if latest is None or latest.state != rt.RUNNING:
                continue
            verdict = self.prober.verdict(pod, c, latest, now)
            if verdict.kill is None:
                continue
            message = f"Container {c['name']} failed {verdict.kill.value.lower()} probe"
            if actions.restart_policy(pod) != "Never" or actions.is_sidecar(c):
                message += ", will be restarted"
            self.events.event(pod, "Normal", "Killing", message)
            grace = verdict.grace if verdict.grace is not None else \
                float(spec.get("terminationGracePeriodSeconds", 30) or 0)
            await self.runtime.stop_container(uid, c["name"], grace=grace)
            self._killed.setdefault(uid, {})[c["name"]] = latest.attempt
            stopped = True
        if not stopped:
            return state
        return next((s for s in await self._states(key) if s.sandbox.uid == uid), None)

    def _unstarted(self, pod: Obj, state: rt.PodState | None) -> set[str]:
        """The running sidecars whose startup probe has not passed yet: what comes after
        them waits (`actions.plan`)."""
        if state is None:
            return set()
        now = self.clock()
        out = set()
        for c in actions.named((pod.get("spec") or {}).get("initContainers")):
            latest = state.latest(c["name"])
            if actions.is_sidecar(c) and latest is not None and latest.state == rt.RUNNING \
                    and not self.prober.verdict(pod, c, latest, now).started:
                out.add(c["name"])
        return out

    def _killed_now(self, uid: str, state: rt.PodState | None) -> set[str]:
        """The containers whose newest instance was stopped for failing a probe."""
        killed = self._killed.get(uid) or {}
        out = set()
        for name, attempt in list(killed.items()):
            latest = state.latest(name) if state is not None else None
            if latest is not None and latest.attempt == attempt:
                out.add(name)
            else:
                del killed[name]  # restarted since, or gone
        return out

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
        self._config_told = {t for t in self._config_told if t[0] != uid}
        self._killed.pop(uid, None)
        self.prober.forget(uid)

    async def _finish(self, pod: Obj, state: rt.PodState | None) -> None:
        """Stop what runs of a pod being deleted, in the background (`_terminate`);
        once nothing of it is left, delete it with grace 0."""
        meta = pod["metadata"]
        uid = meta["uid"]
        if uid in self._terminating:
            return  # under way; the pod is enqueued again when it ends
        if state is not None:
            self.prober.forget(uid)  # nothing of it is probed while it stops
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            # Stopped and removed in Kubernetes' order (`_stop`); the pod's next
            # reconcile finds nothing left and deletes it.
            self._terminating[uid] = asyncio.create_task(
                self._apart(self._terminating, pod, "stopping pod",
                            self._stop(pod, state, grace)),
                name=f"kubelet {self.node_name}: terminate {inf.key_of(pod)}")
            return
        self.config.volumes.remove(uid)
        self._forget(uid)
        try:
            await self.client.delete(kinds.POD, meta.get("namespace", ""), meta["name"],
                                     grace=0, uid=uid)
        except ApiError as e:
            if e.code not in (404, 409):  # gone already, or another pod by that name now
                raise

    async def _apart(self, tasks: dict[str, asyncio.Task[None]], pod: Obj, what: str,
                     work: Awaitable[None]) -> None:
        """Run `work` (stopping containers of `pod`) as the task `tasks` holds for it, so
        that its grace period holds no worker; then enqueue the pod again, after a pause
        if it failed (its reconcile retries what is left)."""
        key, uid = inf.key_of(pod), pod["metadata"]["uid"]
        delay = 0.0
        try:
            await work
        except Exception as e:  # noqa: BLE001 - whatever it was, the pod is retried
            log.warning("%s: %s %s: %s", self.node_name, what, key, e)
            delay = TERMINATE_RETRY
        finally:
            if tasks.get(uid) is asyncio.current_task():
                del tasks[uid]
        self.queue.add_after(key, delay)

    async def _stop_sidecars(self, pod: Obj, sidecars: list[str], grace: float) -> None:
        """Stop the sidecars of a pod whose app has ended: as at deletion, the last
        declared first, within one grace period."""
        uid = pod["metadata"]["uid"]
        deadline = self.clock() + grace
        for name in reversed(sidecars):
            self.events.event(pod, "Normal", "Killing", f"Stopping container {name}")
            await self.runtime.stop_container(uid, name,
                                              grace=max(0.0, deadline - self.clock()))

    async def _stop(self, pod: Obj, state: rt.PodState, grace: float) -> None:
        """Stop what runs of a deleted pod within its grace period, sidecars last
        (KEP-753): first every other container at once (its preStop hook, then SIGTERM),
        then, once all of those have exited, each running sidecar in the reverse order
        of their declaration, so that a proxy or a log shipper outlives the app that
        uses it; each gets what is left of the grace period, and at its end whatever
        still runs is killed. Then the containers and the sandbox are removed."""
        uid = pod["metadata"]["uid"]
        deadline = self.clock() + grace
        running = {c.name for c in state.containers if c.state == rt.RUNNING}
        sidecars = [c["name"] for c in actions.named((pod.get("spec") or {}).get(
            "initContainers")) if actions.is_sidecar(c) and c["name"] in running]
        first = sorted(running - set(sidecars))

        async def stop(name: str, grace: float) -> None:
            self.events.event(pod, "Normal", "Killing", f"Stopping container {name}")
            await self.runtime.stop_container(uid, name, grace=grace)

        # A TaskGroup, not gather: if one stop fails, the others are cancelled and
        # awaited, so that the retry's stops never overlap this round's.
        async with asyncio.TaskGroup() as group:
            for name in first:
                group.create_task(stop(name, grace))
        for name in reversed(sidecars):
            await stop(name, max(0.0, deadline - self.clock()))
        await self.runtime.remove_pod(uid, grace=max(0.0, deadline - self.clock()))
