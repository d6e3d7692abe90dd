"""A container runtime that runs nothing: every image is present, every probe passes.

A simulated container runs until it is stopped, unless its pod carries the annotation
`raftkube.io/sim-exit-after: SECONDS`: then each of its runs exits that long after it
started, with the code in `raftkube.io/sim-exit-code` (default 0). That is how Jobs,
crash loops and restart policies are exercised without Docker. Init containers exit 0
as soon as they start. A stopped container exits 0 at once (it honours SIGTERM).

It is pure apart from its records: time comes from the injected clock and nothing runs
in the background; an exit is not an event but what `pods()` computes from the clock
(so the kubelet's relister notices it within a relist period). Pod IPs are the lowest
free addresses of the node's range (`pod_cidr`), so they are deterministic.

State lives in memory, so an agent restart loses it. `recover` rebuilds it from what
the API last heard from this node (the pods' reported IPs, container ids, start times
and restart counts): a restarted simulated node re-reports its pods as they were, and
restarts none of them, as a real node whose containers outlived its agent would.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import shlex
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from raftkube.agent import probes
from raftkube.agent import runtime as rt
from raftkube.api import channels
from raftkube.api.timestamps import parse_time, rfc3339

Obj = dict[str, Any]

EXIT_AFTER = "raftkube.io/sim-exit-after"
EXIT_CODE = "raftkube.io/sim-exit-code"
KEEP = 2  # instances kept per container: the newest and the one before (its lastState)


def exit_plan(pod: Obj) -> tuple[float | None, int]:
    """How long each run of the pod's containers lasts (None: until stopped), and its
    exit code, from the pod's annotations; unreadable values mean the defaults."""
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    after: float | None
    try:
        after = float(notes[EXIT_AFTER])
        if after < 0 or after != after:  # negative or NaN
            after = None
    except (KeyError, TypeError, ValueError):
        after = None
    try:
        code = int(notes.get(EXIT_CODE, 0))
    except (TypeError, ValueError):
        code = 0
    return after, code


def container_id(uid: str, name: str, attempt: int, started: float) -> str:
    """Unique to one start, as a real runtime's ids are (a container started again
    after an agent restart is told apart), yet the same for the same inputs."""
    digest = hashlib.sha256(f"{uid}/{name}/{attempt}/{started!r}".encode()).hexdigest()
    return f"simulated://{digest[:32]}"


def image_id(image: str) -> str:
    return "sha256:" + hashlib.sha256(image.encode()).hexdigest()


@dataclass(frozen=True)
class _Run:
    """An instance as started: it exits by itself at `exit_at` if that is set."""

    container: rt.Container
    exit_at: float | None = None
    exit_code: int = 0


def _exited(c: rt.Container, at: float, code: int) -> rt.Container:
    return replace(c, state=rt.EXITED, finished_at=at, exit_code=code,
                   reason="Completed" if code == 0 else "Error")


class SimulatedRuntime:
    name = "simulated"
    version = "0.1.0"

    def __init__(self, *, pod_cidr: str, host_ip: str,
                 clock: Callable[[], float]) -> None:
        self.network = ipaddress.ip_network(pod_cidr)
        self.host_ip = host_ip
        self.clock = clock
        self._sandboxes: dict[str, rt.Sandbox] = {}
        self._runs: dict[str, dict[str, list[_Run]]] = {}  # pod uid -> name -> runs
        self._ips: set[str] = set()
        self.starts = 0  # containers started (tests read it: a recovered pod starts none)

    # ---- reading ----------------------------------------------------------------------

    def _view(self, run: _Run, now: float) -> rt.Container:
        c = run.container
        if c.state == rt.RUNNING and run.exit_at is not None and now >= run.exit_at:
            return _exited(c, run.exit_at, run.exit_code)
        return c

    def pod_state(self, uid: str) -> rt.PodState | None:
        sandbox = self._sandboxes.get(uid)
        if sandbox is None:
            return None
        now = self.clock()
        return rt.PodState(sandbox, tuple(self._view(r, now)
                                          for runs in self._runs[uid].values() for r in runs))

    async def pods(self, *, namespace: str | None = None, name: str | None = None
                   ) -> list[rt.PodState]:
        return [s for s in map(self.pod_state, list(self._sandboxes)) if s is not None
                and (name is None or (s.sandbox.namespace, s.sandbox.name) == (namespace,
                                                                                name))]

    # ---- doing ------------------------------------------------------------------------

    def _allocate(self, pod: Obj) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return self.host_ip
        hosts = self.network.hosts() if self.network.num_addresses > 2 else iter(self.network)
        for i, address in enumerate(hosts):
            ip = str(address)
            if i == 0 and self.network.num_addresses > 4:
                continue  # the first address is the range's gateway
            if ip not in self._ips:
                self._ips.add(ip)
                return ip
        raise rt.RuntimeFailure(f"no free pod address left in {self.network}")

    async def run_sandbox(self, pod: Obj, config: rt.SandboxConfig | None = None
                          ) -> rt.Sandbox:
        meta = pod["metadata"]
        uid = meta["uid"]
        if uid not in self._sandboxes:
            self._sandboxes[uid] = rt.Sandbox(uid, meta.get("namespace", ""), meta["name"],
                                              self._allocate(pod), self.clock())
            self._runs[uid] = {}
        return self._sandboxes[uid]

    async def start_container(self, pod: Obj, container: Obj, *, attempt: int,
                              request: rt.ContainerRequest | None = None) -> rt.Container:
        uid = pod["metadata"]["uid"]
        if uid not in self._sandboxes:
            raise rt.RuntimeFailure(f"pod {uid} has no sandbox")
        name = container["name"]
        runs = self._runs[uid].setdefault(name, [])
        now = self.clock()
        if runs and self._view(runs[-1], now).state == rt.RUNNING:
            raise rt.RuntimeFailure(f"container {name} of pod {uid} is running already")
        image = str(container.get("image") or "")
        c = rt.Container(uid, name, attempt, container_id(uid, name, attempt, now), image,
                         image_id(image), rt.RUNNING, now)
        inits = [i for i in (pod.get("spec") or {}).get("initContainers") or []
                 if isinstance(i, dict)]
        sidecar = any(i.get("name") == name and i.get("restartPolicy") == "Always"
                      for i in inits)
        init = not sidecar and any(i.get("name") == name for i in inits)
        # An init container exits 0 at once; a sidecar runs until it is stopped.
        after, code = (0.0, 0) if init else (None, 0) if sidecar else exit_plan(pod)
        runs.append(_Run(c, None if after is None else now + after, code))
        del runs[:-KEEP]
        self.starts += 1
        return self._view(runs[-1], now)

    async def stop_container(self, pod_uid: str, name: str, *, grace: float) -> None:
        runs = self._runs.get(pod_uid, {}).get(name)
        if not runs:
            return
        now = self.clock()
        if self._view(runs[-1], now).state == rt.RUNNING:
            runs[-1] = _Run(_exited(runs[-1].container, now, 0))

    async def remove_pod(self, pod_uid: str, *, grace: float) -> None:
        sandbox = self._sandboxes.pop(pod_uid, None)
        self._runs.pop(pod_uid, None)
        if sandbox is not None and sandbox.ready:  # a stopped one's IP was freed then
            self._ips.discard(sandbox.ip)

    async def stop_sandbox(self, pod_uid: str) -> None:
        """Its running containers exit (as if killed), its IP is freed, and it reads as
        stopped with no IP; the exited containers stay."""
        sandbox = self._sandboxes.get(pod_uid)
        if sandbox is None or not sandbox.ready:
            return
        for name in list(self._runs.get(pod_uid, {})):
            await self.stop_container(pod_uid, name, grace=0)
        self._ips.discard(sandbox.ip)
        self._sandboxes[pod_uid] = replace(sandbox, ip="", ready=False)

    async def exec_sync(self, pod_uid: str, name: str, command: Sequence[str], *,
                        timeout: float) -> rt.ExecResult:
        """Every command succeeds in a running container, and prints nothing."""
        runs = self._runs.get(pod_uid, {}).get(name)
        if not runs or self._view(runs[-1], self.clock()).state != rt.RUNNING:
            raise rt.RuntimeFailure(f"container {name} of pod {pod_uid} is not running")
        return rt.ExecResult(0, b"")

    def _instance(self, pod_uid: str, name: str, previous: bool) -> rt.Container:
        runs = self._runs.get(pod_uid, {}).get(name) or []
        wanted = runs[-2] if previous and len(runs) > 1 else None if previous else \
            (runs[-1] if runs else None)
        if wanted is None:
            which = "previous terminated" if previous else ""
            raise rt.RuntimeFailure(f"{which + ' ' if which else ''}container "
                                    f'"{name}" of pod {pod_uid} not found')
        return self._view(wanted, self.clock())

    def _log_lines(self, c: rt.Container) -> list[tuple[float, bytes]]:
        lines = [(c.started_at, f"simulated container {c.name} (attempt {c.attempt}) "
                                "started\n".encode())]
        if c.state == rt.EXITED and c.finished_at is not None:
            lines.append((c.finished_at, f"simulated container {c.name} exited with code "
                                         f"{c.exit_code}\n".encode()))
        return lines

    async def logs(self, pod_uid: str, name: str,
                   options: rt.LogOptions) -> AsyncIterator[bytes]:
        """Two lines per instance, one when it started and one when it exited: a
        simulated container writes nothing of its own."""
        c = self._instance(pod_uid, name, options.previous)
        told = 0
        while True:
            lines = [(at, text) for at, text in self._log_lines(c)
                     if options.since is None or at >= options.since]
            if told == 0 and options.tail is not None:
                told = max(0, len(lines) - options.tail)
            for at, text in lines[told:]:
                yield (rfc3339(at).encode() + b" " + text) if options.timestamps else text
            told = len(lines)
            if not options.follow or c.state == rt.EXITED:
                return
            await asyncio.sleep(0.5)
            c = self._view(next((r for r in self._runs.get(pod_uid, {}).get(name) or []
                                 if r.container.id == c.id), _Run(_exited(c, self.clock(), 0))),
                           self.clock())

    async def exec(self, pod_uid: str, name: str, command: Sequence[str], *,
                   stdin: bool, tty: bool) -> rt.ExecSession:
        c = self._instance(pod_uid, name, False)
        if c.state != rt.RUNNING:
            raise rt.RuntimeFailure(f"container {name} of pod {pod_uid} is not running")
        return SimulatedExec(list(command), stdin=stdin)

    async def usage(self) -> list[rt.ContainerUsage]:
        """A running simulated container uses a millisecond of CPU a second and 4 MiB."""
        now = self.clock()
        return [rt.ContainerUsage(uid, name, 0.001 * max(0.0, now - c.started_at),
                                  4 * 1024 * 1024, now)
                for uid, names in self._runs.items() for name, runs in names.items()
                for c in [self._view(runs[-1], now)] if c.state == rt.RUNNING]

    def changes(self) -> AsyncGenerator[None, None] | None:
        return None  # containers end on a timetable the kubelet finds by listing

    async def recover(self, pods: Sequence[Obj]) -> None:
        for pod in pods:
            self._recover(pod)

    def _recover(self, pod: Obj) -> None:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        uid, ip = meta.get("uid"), status.get("podIP")
        if not uid or not ip or uid in self._sandboxes:
            return  # never started here, or known already
        created = parse_time(status.get("startTime")) or self.clock()
        if status.get("phase") in ("Succeeded", "Failed"):  # its sandbox was stopped
            self._sandboxes[uid] = rt.Sandbox(uid, meta.get("namespace", ""),
                                              meta.get("name", ""), "", created, ready=False)
        else:
            self._sandboxes[uid] = rt.Sandbox(uid, meta.get("namespace", ""),
                                              meta.get("name", ""), ip, created)
            if ip != self.host_ip:
                self._ips.add(ip)
        after, code = exit_plan(pod)
        self._runs[uid] = runs = {}
        for s in (status.get("initContainerStatuses") or []) + \
                (status.get("containerStatuses") or []):
            if isinstance(s, dict) and s.get("name"):
                kept = _runs_of(uid, s, after, code)
                if kept:
                    runs[s["name"]] = kept


def _runs_of(uid: str, s: Obj, after: float | None, code: int) -> list[_Run]:
    """The instances a container status describes: its lastState and its state."""
    name, count = s["name"], int(s.get("restartCount") or 0)
    image = str(s.get("image") or "")
    runs = []
    state = s.get("state") or {}
    last = (s.get("lastState") or {}).get("terminated")
    # Waiting to restart, the newest instance is the one lastState tells of; running or
    # ended, it is the state's, and lastState tells of the one before.
    last_attempt = count if isinstance(state.get("waiting"), dict) else count - 1
    if isinstance(last, dict) and last_attempt >= 0:
        runs.append(_Run(_from_terminated(uid, name, last_attempt, image, last)))
    if isinstance(state.get("running"), dict):
        started = parse_time(state["running"].get("startedAt"))
        if started is not None:
            c = rt.Container(uid, name, count, str(s.get("containerID") or ""), image,
                             image_id(image), rt.RUNNING, started)
            runs.append(_Run(c, None if after is None else started + after, code))
    elif isinstance(state.get("terminated"), dict):
        runs.append(_Run(_from_terminated(uid, name, count, image, state["terminated"])))
    return runs


def _from_terminated(uid: str, name: str, attempt: int, image: str, t: Obj) -> rt.Container:
    started = parse_time(t.get("startedAt")) or 0.0
    finished = parse_time(t.get("finishedAt")) or started
    c = rt.Container(uid, name, attempt, str(t.get("containerID") or ""), image,
                     image_id(image), rt.RUNNING, started)
    return _exited(c, finished, int(t.get("exitCode") or 0))


class SimulatedExec:
    """A command in a simulated container: nothing runs, but a few commands answer as a
    shell would, so that the exec path can be exercised end to end: `echo ARGS` prints
    them, `cat` gives back its input, `true`/`false`, `sh -c "exit N"` exits N, and
    `hostname`... prints `simulated`. Anything else prints nothing and exits 0."""

    def __init__(self, command: list[str], *, stdin: bool) -> None:
        self.command = command
        self.stdin = stdin
        self._out: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        self._code = 0
        self._ended = asyncio.Event()
        if self.command[:1] == ["sh"] and self.command[1:2] == ["-c"] and \
                len(self.command) > 2:
            self.command = shlex.split(self.command[2])
        head = self.command[:1]
        if head == ["echo"]:
            self._out.put_nowait((channels.STDOUT, " ".join(self.command[1:]).encode() + b"\n"))
        elif head == ["hostname"]:
            self._out.put_nowait((channels.STDOUT, b"simulated\n"))
        elif head == ["false"]:
            self._code = 1
        elif head == ["exit"] and len(self.command) > 1 and self.command[1].isdigit():
            self._code = int(self.command[1])
        if head != ["cat"] or not stdin:
            self._end()

    def _end(self) -> None:
        if not self._ended.is_set():
            self._out.put_nowait(None)
            self._ended.set()

    async def read(self) -> tuple[int, bytes] | None:
        if self._ended.is_set() and self._out.empty():
            return None
        return await self._out.get()

    async def write(self, data: bytes) -> None:
        if not self._ended.is_set():
            self._out.put_nowait((channels.STDOUT, data))

    async def close_stdin(self) -> None:
        self._end()

    async def resize(self, width: int, height: int) -> None:
        pass

    async def wait(self) -> int:
        await self._ended.wait()
        return self._code

    async def close(self) -> None:
        self._end()


class SimulatedProber:
    """Every probe passes, when it is first due: a container is started once its startup
    probe's initialDelaySeconds have passed, and ready once its readiness probe has
    passed successThreshold times after that (at once without probes). Nothing runs:
    the answer is computed from the clock (`probes.passing`), and the kubelet is told
    when to ask again. Simulated pod IPs are not real, so no probe is sent anywhere."""

    def subscribe(self, notify: Callable[[str], None]) -> None:
        pass  # nothing changes but with time, and `verdict` says when

    def track(self, pod: Obj, state: rt.PodState | None) -> None:
        pass

    def forget(self, pod_uid: str) -> None:
        pass

    async def run(self) -> None:
        await asyncio.Future()  # holds nothing; ends when cancelled

    def verdict(self, pod: Obj, container: Obj, instance: rt.Container, now: float
                ) -> probes.Verdict:
        if instance.state != rt.RUNNING:
            return probes.Verdict(ready=False, started=False)
        try:
            health = probes.Health(probes.probes_of(container), started_at=instance.started_at)
        except probes.ProbeError:
            return probes.Verdict(ready=False, started=False)  # it could never pass
        recheck = probes.passing(health, now)
        return probes.Verdict(ready=health.ready, started=health.started, recheck=recheck)
