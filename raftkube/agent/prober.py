"""Running the probes of a node's containers: the kubelet's prober workers.

`Prober.track(pod, state)` is told after every sync of a pod which of its containers
run (its app containers and its sidecars, whose probes Kubernetes runs alike); every
running instance with probes gets one asyncio task that sleeps until its next
probe is due (`probes.Health` decides when and what a result means), runs it, and calls
the kubelet back with the pod's key when the instance's verdict changes (it became
ready, or failed its liveness probe): nothing polls the API or the prober. An instance
that stops running, or is replaced by its restart, has its task cancelled and its
results dropped; a restart starts from Kubernetes' initial values again. An instance
found running when the agent starts (it outlived the agent) carries on from the status
the API has for it (started, ready), so an agent restart changes no pod's readiness.

The handlers, as the kubelet runs them:

- exec: the command through the runtime's `exec_sync`; exit code 0 passes. A command
  that cannot be run or does not end within timeoutSeconds fails, with the runtime's
  message;
- httpGet: `scheme://host:port/path` with the probe's headers (a `Host` header names
  the virtual host), the host being the pod's IP unless the probe names one, and the
  port a number or the name of a container port; any status from 200 to 399 passes. It
  follows redirects on the same host (up to 10); a redirect elsewhere passes with a
  `ProbeWarning` event. HTTPS is not verified, as the kubelet does not verify it. No
  connection is kept alive between probes;
- tcpSocket: a connection opened within timeoutSeconds passes, and is closed at once;
- grpc is not supported by this agent: it is an error, told in an event, and counts as
  nothing (as any probe that cannot be run).

Every failed probe is told as a Warning event `Unhealthy` ("Liveness probe failed:
..."), as the kubelet tells it. Results are counted in the agent's Prometheus registry
(`raftkube_agent_probe_total{probe_type,result}` and the probes' durations).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import prometheus_client as prom
import yarl

from raftkube.agent import actions, probes
from raftkube.agent import runtime as rt
from raftkube.client import events as ev

log = logging.getLogger(__name__)

Obj = dict[str, Any]

USER_AGENT = "kube-probe/raftkube"  # apps that single out the kubelet's probes match the prefix
MAX_OUTPUT = 1024  # bytes of a probe's output told in its event (the body, the command's)
MAX_REDIRECTS = 10
REDIRECTS = (301, 302, 303, 307, 308)


class ProbeMetrics:
    """The probes' counters, in the agent's registry (one per process: the nodes of a
    hollow-node process share it)."""

    def __init__(self, registry: prom.CollectorRegistry) -> None:
        self.total = prom.Counter(
            "raftkube_agent_probe_total", "Probes run, by probe type and result.",
            ["probe_type", "result"], registry=registry)
        self.duration = prom.Histogram(
            "raftkube_agent_probe_duration_seconds", "How long probes took, by probe type.",
            ["probe_type"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))

    def observe(self, t: probes.ProbeType, result: probes.Result, seconds: float) -> None:
        self.total.labels(t.value, result.value).inc()
        self.duration.labels(t.value).observe(seconds)


@dataclass(frozen=True)
class Outcome:
    result: probes.Result
    output: str = ""  # why it failed (or the warning when it passed)
    warning: bool = False


def _cut(data: bytes | str) -> str:
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    text = text.strip()
    return text if len(text) <= MAX_OUTPUT else text[:MAX_OUTPUT] + "..."


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class _Instance:
    """One running container instance being probed."""

    key: str  # the pod's namespace/name
    pod: Obj  # for the events' involved object
    container: Obj  # its spec
    instance: rt.Container
    ip: str  # the pod's IP
    health: probes.Health | None  # None: its probes cannot be run (told once)
    task: asyncio.Task[None] | None = None
    message: str = ""  # the newest failure of the probe that failed for good
    errored: set[probes.ProbeType] = field(default_factory=set)


def _reported(pod: Obj, name: str) -> Obj:
    """The container's status as the API has it (empty if none)."""
    status = pod.get("status") or {}
    for s in (status.get("initContainerStatuses") or []) + \
            (status.get("containerStatuses") or []):
        if isinstance(s, dict) and s.get("name") == name:
            return s
    return {}


class Prober:
    """Runs the probes of every running container instance of one node."""

    def __init__(self, *, runtime: rt.ContainerRuntime, events: ev.EventRecorder,
                 metrics: ProbeMetrics | None = None,
                 clock: Callable[[], float] = time.time, max_execs: int = 8) -> None:
        self.runtime = runtime
        # Exec probes run in the runtime's own workers, which the kubelet's sync needs
        # too: at most `max_execs` at once, so a slow engine cannot starve the kubelet.
        # The wait for a turn is not part of the probe's timeout.
        self._execs = asyncio.Semaphore(max_execs)
        self.events = events
        self.metrics = metrics
        self.clock = clock
        self._notify: Callable[[str], None] = lambda key: None
        self._instances: dict[tuple[str, str], _Instance] = {}  # (pod uid, name) ->
        self._session: aiohttp.ClientSession | None = None

    def subscribe(self, notify: Callable[[str], None]) -> None:
        self._notify = notify

    # ---- which instances run --------------------------------------------------------

    def track(self, pod: Obj, state: rt.PodState | None) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        wanted: dict[tuple[str, str], rt.Container] = {}
        if state is not None and not meta.get("deletionTimestamp"):
            for c in actions.running_containers(pod):
                latest = state.latest(c["name"])
                if latest is not None and latest.state == rt.RUNNING and \
                        any(c.get(t.field) is not None for t in probes.ProbeType):
                    wanted[(uid, c["name"])] = latest
        for k in [k for k in self._instances if k[0] == uid]:
            if k not in wanted or wanted[k].id != self._instances[k].instance.id:
                self._drop(k)
        specs = {c["name"]: c for c in actions.running_containers(pod)}
        for k, latest in wanted.items():
            if k not in self._instances and state is not None:
                self._start(pod, specs[k[1]], latest, state.sandbox.ip)

    def _start(self, pod: Obj, c: Obj, instance: rt.Container, ip: str) -> None:
        meta = pod["metadata"]
        k = (meta["uid"], c["name"])
        try:
            health: probes.Health | None = probes.Health(probes.probes_of(c),
                                                         started_at=instance.started_at)
        except probes.ProbeError as e:
            health = None
            self.events.event(pod, "Warning", "Unhealthy", f"Probe errored: {e}")
        reported = _reported(pod, c["name"])
        if health is not None and reported.get("containerID") == instance.id:
            # This instance ran before the agent restarted: carry on from its status.
            health.resume(started=reported.get("started") is True,
                          ready=reported.get("ready") is True, at=self.clock())
        item = _Instance(f"{meta.get('namespace', '')}/{meta['name']}", pod, c, instance, ip,
                         health)
        self._instances[k] = item
        if health is not None:
            item.task = asyncio.get_running_loop().create_task(
                self._work(item), name=f"probe {item.key} {c['name']}")

    def _drop(self, k: tuple[str, str]) -> None:
        item = self._instances.pop(k)
        if item.task is not None:
            item.task.cancel()

    def forget(self, pod_uid: str) -> None:
        for k in [k for k in self._instances if k[0] == pod_uid]:
            self._drop(k)

    # ---- what the kubelet hears -----------------------------------------------------

    def verdict(self, pod: Obj, container: Obj, instance: rt.Container, now: float
                ) -> probes.Verdict:
        if instance.state != rt.RUNNING:
            return probes.Verdict(ready=False, started=False)
        item = self._instances.get((pod["metadata"]["uid"], container["name"]))
        if item is None or item.instance.id != instance.id:
            # Not tracked yet (it has just started): as Kubernetes' initial values say.
            if not any(container.get(t.field) is not None for t in probes.ProbeType):
                return probes.Verdict(ready=True, started=True)
            started = container.get(probes.ProbeType.STARTUP.field) is None
            ready = started and container.get(probes.ProbeType.READINESS.field) is None
            return probes.Verdict(ready=ready, started=started)
        health = item.health
        if health is None:  # probes that cannot be run never pass and never kill
            return probes.Verdict(ready=False, started=False)
        failed = health.failed
        return probes.Verdict(
            ready=health.ready, started=health.started, kill=failed,
            grace=health.probes[failed].termination_grace if failed else None,
            message=item.message if failed else "")

    # ---- running probes -------------------------------------------------------------

    async def run(self) -> None:
        try:
            await asyncio.Future()
        finally:
            for k in list(self._instances):
                self._drop(k)
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def _work(self, item: _Instance) -> None:
        health = item.health
        assert health is not None
        while True:
            at = health.due()
            if at is None:
                return  # nothing left to probe for this instance (startup passed, held)
            await asyncio.sleep(max(0.0, at - self.clock()))
            began = self.clock()
            types = health.due_types(began)
            outcomes = await asyncio.gather(*(self._probe(item, t) for t in types))
            changed = False
            for t, outcome in zip(types, outcomes, strict=True):
                self._tell(item, t, outcome)
                # Timed from its start, so a slow probe does not stretch the period.
                changed |= health.record(t, outcome.result, began)
                if health.failed is t:
                    item.message = outcome.output
            if changed:
                self._notify(item.key)

    def _tell(self, item: _Instance, t: probes.ProbeType, outcome: Outcome) -> None:
        if outcome.result is probes.Result.FAILURE:
            self.events.event(item.pod, "Warning", "Unhealthy",
                              f"{t.value} probe failed: {outcome.output}")
        elif outcome.result is probes.Result.UNKNOWN:
            if t not in item.errored:  # the same error every period says nothing new
                item.errored.add(t)
                self.events.event(item.pod, "Warning", "Unhealthy",
                                  f"{t.value} probe errored: {outcome.output}")
            log.info("%s %s: %s probe errored: %s", item.key, item.container["name"],
                     t.value, outcome.output)
        elif outcome.warning:
            self.events.event(item.pod, "Warning", "ProbeWarning",
                              f"{t.value} probe warning: {outcome.output}")

    async def _probe(self, item: _Instance, t: probes.ProbeType) -> Outcome:
        assert item.health is not None
        probe = item.health.probes[t]
        began = time.monotonic()
        try:
            outcome = await self._handle(item, probe)
        except probes.ProbeError as e:
            outcome = Outcome(probes.Result.UNKNOWN, str(e))
        except Exception as e:  # a bug must not end this instance's probing silently
            log.exception("%s %s: %s probe", item.key, item.container["name"], t.value)
            outcome = Outcome(probes.Result.UNKNOWN, f"{type(e).__name__}: {e}")
        if self.metrics is not None:
            self.metrics.observe(t, outcome.result, time.monotonic() - began)
        return outcome

    async def _handle(self, item: _Instance, probe: probes.Probe) -> Outcome:
        h = probe.handler
        if isinstance(h, probes.Exec):
            return await self._exec(item, h, probe.timeout)
        if isinstance(h, probes.HTTPGet | probes.TCPSocket):
            port = probes.container_port(h.port, item.container)
            host = h.host or item.ip
            if not host:
                raise probes.ProbeError("the pod has no IP to probe")
            if isinstance(h, probes.HTTPGet):
                return await http_probe(self._client(), h, host, port, probe.timeout)
            return await tcp_probe(host, port, probe.timeout)
        return Outcome(probes.Result.UNKNOWN, "grpc probes are not supported by this agent")

    async def _exec(self, item: _Instance, h: probes.Exec, timeout: float) -> Outcome:
        try:
            async with self._execs:
                # The runtime keeps the timeout; this one stops a runtime that does not.
                async with asyncio.timeout(timeout + 5):
                    done = await self.runtime.exec_sync(
                        item.instance.pod_uid, item.instance.name, h.command, timeout=timeout)
        except (rt.RuntimeFailure, TimeoutError) as e:
            return Outcome(probes.Result.FAILURE,
                           _cut(str(e) or f"command {list(h.command)} timed out"))
        if done.exit_code == 0:
            return Outcome(probes.Result.SUCCESS)
        return Outcome(probes.Result.FAILURE, _cut(done.output) or
                       f"command {list(h.command)} exited with {done.exit_code}")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, ssl=False),
                cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("Accept-Encoding",))
        return self._session


async def http_probe(session: aiohttp.ClientSession, h: probes.HTTPGet, host: str,
                     port: int, timeout: float) -> Outcome:
    """GET `h.path` on host:port within `timeout`; 200-399 passes. Redirects on the same
    host are followed, a redirect elsewhere passes with a warning (as the kubelet's)."""
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    headers.update(h.headers)  # the probe's own win, Host among them
    url = yarl.URL(f"{h.scheme.lower()}://{_host_port(host, port)}{h.path}")
    deadline = aiohttp.ClientTimeout(total=timeout)
    try:
        for _ in range(MAX_REDIRECTS + 1):
            async with session.get(url, headers=headers, timeout=deadline,
                                   allow_redirects=False) as answer:
                body = await answer.content.read(MAX_OUTPUT)
                location = answer.headers.get("Location")
            if answer.status not in REDIRECTS or not location:
                break
            target = url.join(yarl.URL(location))
            if (target.host, target.port) != (url.host, url.port):
                return Outcome(probes.Result.SUCCESS, f"Probe terminated redirects, "
                               f"Response body: {_cut(body)}", warning=True)
            url = target
        else:
            return Outcome(probes.Result.FAILURE,
                           f'Get "{url}": stopped after {MAX_REDIRECTS} redirects')
    except TimeoutError:
        return Outcome(probes.Result.FAILURE, f'Get "{url}": context deadline exceeded '
                       "(Client.Timeout exceeded while awaiting headers)")
    except (aiohttp.ClientError, OSError) as e:
        return Outcome(probes.Result.FAILURE, f'Get "{url}": {e}')
    if 200 <= answer.status < 400:
        return Outcome(probes.Result.SUCCESS)
    return Outcome(probes.Result.FAILURE,
                   f"HTTP probe failed with statuscode: {answer.status}")


async def tcp_probe(host: str, port: int, timeout: float) -> Outcome:
    """A connection opened within `timeout` passes; it is closed at once."""
    address = _host_port(host, port)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Outcome(probes.Result.FAILURE, f"dial tcp {address}: i/o timeout")
    except OSError as e:
        return Outcome(probes.Result.FAILURE,
                       f"dial tcp {address}: connect: {e.strerror or e}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Outcome(probes.Result.SUCCESS)
