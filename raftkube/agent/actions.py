"""What the kubelet must do for one pod, decided from its spec and its runtime state.

`plan(pod, state, now, backoff)` is a pure function, the counterpart of Kubernetes'
`computePodActions`: make the sandbox if there is none; run the init containers one
after another, each once it may (the next only after the one before exited 0); then
start every container that has never run, and restart one that exited when the pod's
`restartPolicy` says so (Always: whatever its exit code; OnFailure: a non-zero one;
init containers restart unless the policy is Never). A container the kubelet killed
because it failed its liveness or startup probe restarts unless the policy is Never,
whatever it exited with (Kubernetes restarts it in the same sync that kills it).

Restarts follow Kubernetes' crash-loop back-off (client-go's flowcontrol.Backoff, keyed
by pod uid and container name): the first restart is at once; after that a container
that exits waits `base` seconds (10 s), doubling at each exit up to `cap` (5 min), and
reported as `Waiting` with reason `CrashLoopBackOff` meanwhile. A container that ran
for longer than twice the cap since its last restart starts from `base` again. The
back-off is the kubelet's memory, not the runtime's: an agent restart forgets it, as a
kubelet restart does.

Image pulls have their own back-off (the kubelet's image back-off, same numbers): after
a pull failed, the container is not started again until its delay has passed, and waits
meanwhile as `ImagePullBackOff` (or `ErrImageNeverPull`, which no wait mends but a
loaded image does). The sync that hit the failure reports it itself (`ErrImagePull`
and the engine's message): the kubelet puts it over the plan's reason.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from raftkube.agent import runtime as rt
from raftkube.api import requests

Obj = dict[str, Any]

CRASH_LOOP = "CrashLoopBackOff"


class CrashBackoff:
    """Per-container back-off; every method takes the times it needs (no clock)."""

    def __init__(self, *, base: float = 10.0, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self._items: dict[str, tuple[float, float]] = {}  # key -> (delay, last restart)

    def _entry(self, key: str, finished_at: float) -> tuple[float, float] | None:
        entry = self._items.get(key)
        if entry is None or finished_at - entry[1] > 2 * self.cap:
            return None  # never restarted, or it ran long enough to be forgiven
        return entry

    def remaining(self, key: str, finished_at: float, now: float) -> float:
        """Seconds before a container that exited at `finished_at` may restart."""
        entry = self._entry(key, finished_at)
        return 0.0 if entry is None else max(0.0, entry[0] - (now - finished_at))

    def delay(self, key: str) -> float:
        entry = self._items.get(key)
        return entry[0] if entry is not None else self.base

    def restarted(self, key: str, finished_at: float, now: float) -> None:
        """The container is restarted now: its next exit waits twice as long."""
        entry = self._entry(key, finished_at)
        delay = self.base if entry is None else min(entry[0] * 2, self.cap)
        self._items[key] = (delay, now)

    def forget_pod(self, uid: str) -> None:
        for key in [k for k in self._items if k.startswith(uid + "/")]:
            del self._items[key]


@dataclass(frozen=True)
class _PullFailure:
    image: str
    reason: str
    message: str
    delay: float
    at: float


class PullBackoff:
    """Per-container back-off of image pulls, keyed as CrashBackoff is; takes the times
    it needs. A different image (the pod's spec changed) starts afresh."""

    def __init__(self, *, base: float = 10.0, cap: float = 300.0) -> None:
        self.base = base
        self.cap = cap
        self._items: dict[str, _PullFailure] = {}

    def failed(self, key: str, image: str, reason: str, message: str, now: float) -> None:
        """A pull of `image` failed now: wait `base`, or twice the last wait."""
        last = self._items.get(key)
        fresh = last is None or last.image != image or now - last.at > 2 * self.cap
        delay = self.base if fresh or last is None else min(last.delay * 2, self.cap)
        self._items[key] = _PullFailure(image, reason, message, delay, now)

    def blocked(self, key: str, image: str, now: float) -> tuple[str, str, float] | None:
        """(waiting reason, message, until when) while `image` may not be pulled again."""
        last = self._items.get(key)
        if last is None or last.image != image or now >= last.at + last.delay:
            return None
        if last.reason == rt.ERR_IMAGE_NEVER_PULL:
            return last.reason, last.message, last.at + last.delay
        return (rt.IMAGE_PULL_BACKOFF, f'Back-off pulling image "{image}"',
                last.at + last.delay)

    def succeeded(self, key: str) -> None:
        self._items.pop(key, None)

    def forget_pod(self, uid: str) -> None:
        for key in [k for k in self._items if k.startswith(uid + "/")]:
            del self._items[key]


def backoff_key(pod: Obj, name: str) -> str:
    return f"{pod['metadata']['uid']}/{name}"


def go_duration(seconds: float) -> str:
    """A duration as Go prints it: `10s`, `2m40s`, `5m0s`, `200ms`."""
    if seconds < 1:
        return f"{round(seconds * 1000):g}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:g}s"
    return f"{int(minutes)}m{text}" if minutes else text


def pod_ref(pod: Obj) -> str:
    """`name_namespace(uid)`, as the kubelet names a pod in its messages."""
    meta = pod["metadata"]
    return f"{meta['name']}_{meta.get('namespace', '')}({meta.get('uid', '')})"


def restart_policy(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("restartPolicy") or "Always")


def restarts(policy: str, exit_code: int | None, *, init: bool) -> bool:
    if init:
        return policy != "Never" and exit_code != 0
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


@dataclass
class Plan:
    sandbox: bool = False  # make the pod's sandbox first
    start: list[tuple[Obj, int]] = field(default_factory=list)  # (container, attempt)
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> why
    recheck: float | None = None  # when a back-off ends: look again then
    init_failed: bool = False  # an init container failed for good: the pod has failed
    # sidecars to stop, in their order of declaration: the app has ended
    stop: list[str] = field(default_factory=list)

    @property
    def idle(self) -> bool:
        return not self.sandbox and not self.start and not self.stop

    def _recheck(self, at: float) -> None:
        self.recheck = at if self.recheck is None else min(self.recheck, at)


def plan(pod: Obj, state: rt.PodState | None, *, now: float,
         backoff: CrashBackoff, pulls: PullBackoff | None = None,
         killed: Collection[str] = (), unstarted: Collection[str] = ()) -> Plan:
    """`killed`: the containers whose newest instance the kubelet stopped because it
    failed a probe. `unstarted`: the running sidecars whose startup probe has not
    passed yet (the prober's verdict): the init containers after them and the app
    containers wait for it, as a sidecar has started only once it passes."""
    spec = pod.get("spec") or {}
    policy = restart_policy(pod)
    out = Plan(sandbox=state is None)

    def start(c: Obj, attempt: int) -> str:
        blocked = pulls.blocked(backoff_key(pod, c["name"]), str(c.get("image") or ""),
                                now) if pulls is not None else None
        if blocked is not None:
            out.waiting[c["name"]] = blocked[:2]
            out._recheck(blocked[2])
            return "waiting"
        out.start.append((c, attempt))
        return "started"

    def consider(c: Obj, init: bool, always: bool = False) -> str:
        """`started`, `running`, `waiting`, `done` (exited for good, code 0) or
        `failed` (exited for good, code non-zero). `always`: a sidecar, restarted
        whatever the pod's policy."""
        latest = state.latest(c["name"]) if state is not None else None
        if latest is None:
            return start(c, 0)
        if latest.state == rt.RUNNING:
            return "running"
        own = "Always" if always else policy
        forced = not init and c["name"] in killed and own != "Never"
        if not forced and not restarts(own, latest.exit_code, init=init):
            return "done" if latest.exit_code == 0 else "failed"
        key = backoff_key(pod, c["name"])
        finished = latest.finished_at if latest.finished_at is not None else now
        left = backoff.remaining(key, finished, now)
        if left > 0:
            out.waiting[c["name"]] = (
                CRASH_LOOP, f"back-off {go_duration(backoff.delay(key))} restarting failed "
                            f"container={c['name']} pod={pod_ref(pod)}")
            out._recheck(now + left)
            return "waiting"
        return start(c, latest.attempt + 1)

    # Once an app container has run, the pod is initialized for good: a sidecar that
    # exits later is restarted beside the app containers, blocking nothing.
    apps = named(spec.get("containers"))
    initialized = state is not None and any(state.latest(c["name"]) is not None
                                            for c in apps)
    app_ended = _app_ended(apps, state, policy, killed)
    init_failed = state is not None and _init_failed_for_good(
        named(spec.get("initContainers")), state, policy)
    if app_ended or init_failed:
        # The pod has ended: its sidecars are stopped (KEP-753) and never started again,
        # so that it reads Succeeded or Failed with nothing of it left running.
        for c in named(spec.get("initContainers")):
            latest = state.latest(c["name"]) if state is not None else None
            if is_sidecar(c) and latest is not None and latest.state == rt.RUNNING:
                out.stop.append(c["name"])
        out.init_failed = init_failed
        return out
    for c in named(spec.get("initContainers")):
        if is_sidecar(c):
            # Kubernetes' sidecar (an init container with restartPolicy Always): started
            # in its turn, the next one starts once it has started (it runs, and its
            # startup probe, if it has one, passed), and it keeps running (it is
            # restarted, with back-off, whenever it exits) beside the app containers.
            result = consider(c, False, always=True)
            if (result != "running" or c["name"] in unstarted) and not initialized:
                return out
            continue
        result = consider(c, True)
        if result == "failed":
            out.init_failed = True
        if result != "done":
            return out  # one init container at a time, in order
    for c in named(spec.get("containers")):
        consider(c, False)
    return out


def _app_ended(apps: list[Obj], state: rt.PodState | None, policy: str,
               killed: Collection[str]) -> bool:
    """Every app container has run and exited for good (never with policy Always; a
    container stopped for failing a probe is restarted unless the policy is Never)."""
    if policy == "Always" or state is None or not apps:
        return False
    for c in apps:
        latest = state.latest(c["name"])
        if latest is None or latest.state == rt.RUNNING or \
                restarts(policy, latest.exit_code, init=False) or \
                (c["name"] in killed and policy != "Never"):
            return False
    return True


def _init_failed_for_good(inits: list[Obj], state: rt.PodState, policy: str) -> bool:
    for c in inits:
        latest = state.latest(c["name"])
        if not is_sidecar(c) and latest is not None and latest.state == rt.EXITED and \
                latest.exit_code != 0 and not restarts(policy, latest.exit_code, init=True):
            return True
    return False


def is_sidecar(container: Obj) -> bool:
    """An init container with `restartPolicy: Always` (KEP-753, Kubernetes 1.29+)."""
    return requests.is_sidecar(container)


def running_containers(pod: Obj) -> list[Obj]:
    """The containers of a pod that run beside each other once it is initialized, the
    ones the prober probes: its sidecars, in order, then its app containers."""
    spec = pod.get("spec") or {}
    return [c for c in named(spec.get("initContainers")) if is_sidecar(c)] + \
        named(spec.get("containers"))


def named(containers: Any) -> list[Obj]:
    return [c for c in containers or [] if isinstance(c, dict) and c.get("name")]
