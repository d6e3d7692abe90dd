"""Liveness, readiness and startup probes: their settings and what their results mean.

Pure, like `actions.py`: nothing here runs a probe or reads a clock. `prober.py` runs
the probes on their schedule and feeds the results in; the kubelet reads the verdict.

`probes_of(container)` reads a container's probes with Kubernetes' defaults (a zero or
missing timing is the default, as in Go: initialDelaySeconds 0, periodSeconds 10,
timeoutSeconds 1, successThreshold 1, failureThreshold 3), and a probe that cannot be
run is a `ProbeError` naming the field.

`Health` is the state of the probes of one container *instance* (a restart is a new
instance with a fresh `Health`), following the kubelet's prober workers:

- a probe is first due `initialDelaySeconds` after the container started, then every
  `periodSeconds` after its previous run;
- a result only counts after `failureThreshold` failures or `successThreshold`
  successes in a row; an error (the probe could not be run) counts as nothing;
- readiness starts False, liveness starts True, startup starts unknown;
- while a startup probe has not succeeded the container is not `started`, and neither
  liveness nor readiness runs; once it succeeds it runs no more;
- a liveness or startup probe that fails past its threshold asks for the container to
  be killed (`failed`) and then holds: it never runs again for this instance;
- a container is `ready` when it is started and its readiness probe (if any) says so;
- an instance the agent finds running after it restarted resumes from what it last
  reported (`resume`), as KEP-4781 has the kubelet do: a restart of the agent takes no
  ready pod out of its Services, and runs no startup probe again.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from raftkube.agent import runtime as rt

Obj = dict[str, Any]


class ProbeType(enum.Enum):
    LIVENESS = "Liveness"
    READINESS = "Readiness"
    STARTUP = "Startup"

    @property
    def field(self) -> str:
        """The container's field: `livenessProbe`..."""
        return self.value[0].lower() + self.value[1:] + "Probe"


class Result(enum.Enum):
    SUCCESS = "successful"
    FAILURE = "failed"
    UNKNOWN = "unknown"  # the probe could not be run (an error): it counts as nothing


# What a probe says before its first counted result (the kubelet's initial values).
INITIAL = {ProbeType.LIVENESS: Result.SUCCESS, ProbeType.READINESS: Result.FAILURE,
           ProbeType.STARTUP: Result.UNKNOWN}

DEFAULTS = {"initialDelaySeconds": 0, "periodSeconds": 10, "timeoutSeconds": 1,
            "successThreshold": 1, "failureThreshold": 3}


class ProbeError(ValueError):
    """A probe that cannot be run as written; the message names the field."""


@dataclass(frozen=True)
class Exec:
    command: tuple[str, ...]


@dataclass(frozen=True)
class HTTPGet:
    port: int | str  # a number, or the name of one of the container's ports
    path: str = "/"
    host: str = ""  # empty: the pod's IP
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TCPSocket:
    port: int | str
    host: str = ""


@dataclass(frozen=True)
class GRPC:
    port: int
    service: str = ""


Handler = Exec | HTTPGet | TCPSocket | GRPC


@dataclass(frozen=True)
class Probe:
    handler: Handler
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: float | None = None  # the probe's own terminationGracePeriodSeconds


# ---- reading a container's probes ---------------------------------------------------------


def _number(obj: Obj, name: str, path: str) -> float:
    value = obj.get(name)
    if value is None or value == 0:
        return float(DEFAULTS[name])
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ProbeError(f"{path}.{name}: must be a non-negative number, not {value!r}")
    return float(value)


def _port(value: Any, path: str) -> int | str:
    if isinstance(value, bool) or value is None:
        raise ProbeError(f"{path}: must be a port number or a port name, not {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ProbeError(f"{path}: must be between 1 and 65535, not {value}")
        return value
    if isinstance(value, str) and value:
        return int(value) if value.isdigit() else value
    raise ProbeError(f"{path}: must be a port number or a port name, not {value!r}")


def _text(obj: Obj, name: str, path: str, default: str = "") -> str:
    value = obj.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ProbeError(f"{path}.{name}: must be a string, not {value!r}")
    return value


def _handler(probe: Obj, path: str) -> Handler:
    found = [h for h in ("exec", "httpGet", "tcpSocket", "grpc") if probe.get(h) is not None]
    if len(found) != 1:
        raise ProbeError(f"{path}: must have exactly one of exec, httpGet, tcpSocket, grpc"
                         f" (has {', '.join(found) or 'none'})")
    kind = found[0]
    body, at = probe[kind], f"{path}.{kind}"
    if not isinstance(body, dict):
        raise ProbeError(f"{at}: must be an object")
    if kind == "exec":
        command = body.get("command")
        if not isinstance(command, list) or not command or \
                not all(isinstance(a, str) for a in command):
            raise ProbeError(f"{at}.command: must be a non-empty list of strings")
        return Exec(tuple(command))
    if kind == "httpGet":
        scheme = _text(body, "scheme", at, "HTTP").upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise ProbeError(f"{at}.scheme: must be HTTP or HTTPS, not {scheme!r}")
        headers = []
        for i, h in enumerate(body.get("httpHeaders") or []):
            if not isinstance(h, dict) or not isinstance(h.get("name"), str) or \
                    not h["name"] or not isinstance(h.get("value", ""), str):
                raise ProbeError(f"{at}.httpHeaders[{i}]: must have a name and a value")
            headers.append((h["name"], str(h.get("value", ""))))
        path_ = _text(body, "path", at, "/") or "/"
        return HTTPGet(port=_port(body.get("port"), f"{at}.port"),
                       path=path_ if path_.startswith("/") else "/" + path_,
                       host=_text(body, "host", at), scheme=scheme, headers=tuple(headers))
    if kind == "tcpSocket":
        return TCPSocket(port=_port(body.get("port"), f"{at}.port"),
                         host=_text(body, "host", at))
    port = _port(body.get("port"), f"{at}.port")
    if not isinstance(port, int):
        raise ProbeError(f"{at}.port: must be a port number, not {port!r}")
    return GRPC(port=port, service=_text(body, "service", at))


def parse(probe: Any, *, path: str) -> Probe:
    """One probe, with Kubernetes' defaults; `path` names it in errors."""
    if not isinstance(probe, dict):
        raise ProbeError(f"{path}: must be an object")
    threshold = {name: _number(probe, name, path)
                 for name in ("successThreshold", "failureThreshold")}
    for name, value in threshold.items():
        if value != int(value):
            raise ProbeError(f"{path}.{name}: must be a whole number, not {value}")
    grace = probe.get("terminationGracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int | float)
                              or grace < 0):
        raise ProbeError(f"{path}.terminationGracePeriodSeconds: must be a non-negative "
                         f"number, not {grace!r}")
    return Probe(handler=_handler(probe, path),
                 initial_delay=_number(probe, "initialDelaySeconds", path),
                 period=_number(probe, "periodSeconds", path),
                 timeout=_number(probe, "timeoutSeconds", path),
                 success_threshold=int(threshold["successThreshold"]),
                 failure_threshold=int(threshold["failureThreshold"]),
                 termination_grace=None if grace is None else float(grace))


def probes_of(container: Obj) -> dict[ProbeType, Probe]:
    """The probes a container spec sets; ProbeError for the first that cannot be run."""
    out = {}
    for t in ProbeType:
        if container.get(t.field) is not None:
            out[t] = parse(container[t.field],
                           path=f"containers[{container.get('name', '')}].{t.field}")
    return out


def container_port(port: int | str, container: Obj) -> int:
    """A probe's port as a number: a name is looked up in the container's ports."""
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if isinstance(p, dict) and p.get("name") == port and \
                isinstance(p.get("containerPort"), int):
            return int(p["containerPort"])
    raise ProbeError(f"port {port!r} is not the name of a port of container "
                     f"{container.get('name', '')!r}")


# ---- the results of one container instance ------------------------------------------------


@dataclass
class Tracker:
    """One probe of one container instance: its reported result and the run of equal
    results that has not reached its threshold yet."""

    type: ProbeType
    probe: Probe
    result: Result
    last: Result | None = None  # the newest counted result
    run: int = 0  # how many times in a row it came
    hold: bool = False  # failed for good (liveness, startup): runs no more
    probed_at: float | None = None

    def observe(self, result: Result, at: float) -> bool:
        """Count one result; True if the reported result changed."""
        self.probed_at = at
        if result is Result.UNKNOWN:
            return False
        if result is self.last:
            self.run += 1
        else:
            self.last, self.run = result, 1
        threshold = (self.probe.failure_threshold if result is Result.FAILURE
                     else self.probe.success_threshold)
        if self.run < threshold:
            return False
        changed = result is not self.result
        self.result = result
        if result is Result.FAILURE and self.type is not ProbeType.READINESS:
            self.hold, self.run = True, 0
        return changed


@dataclass
class Health:
    """The probes of one container instance (started at `started_at`)."""

    probes: Mapping[ProbeType, Probe]
    started_at: float
    trackers: dict[ProbeType, Tracker] = field(init=False)
    started_since: float | None = field(init=False)  # when the startup probe passed

    def __post_init__(self) -> None:
        self.trackers = {t: Tracker(t, p, INITIAL[t]) for t, p in self.probes.items()}
        self.started_since = self.started_at if self.started else None

    @property
    def started(self) -> bool:
        startup = self.trackers.get(ProbeType.STARTUP)
        return startup is None or startup.result is Result.SUCCESS

    @property
    def ready(self) -> bool:
        readiness = self.trackers.get(ProbeType.READINESS)
        return self.started and (readiness is None or readiness.result is Result.SUCCESS)

    @property
    def failed(self) -> ProbeType | None:
        """The probe that failed for good and asks for the container to be killed."""
        for t in (ProbeType.STARTUP, ProbeType.LIVENESS):
            tracker = self.trackers.get(t)
            if tracker is not None and tracker.result is Result.FAILURE:
                return t
        return None

    def resume(self, *, started: bool, ready: bool, at: float) -> None:
        """Carry on from what was reported of this instance before the agent restarted:
        started (its startup probe passed) and ready (its readiness probe passed); the
        next results count from there."""
        startup = self.trackers.get(ProbeType.STARTUP)
        if started and startup is not None:
            startup.result = Result.SUCCESS
            self.started_since = at
        readiness = self.trackers.get(ProbeType.READINESS)
        if ready and self.started and readiness is not None:
            readiness.result = Result.SUCCESS

    def _state(self) -> tuple[bool, bool, ProbeType | None]:
        return self.started, self.ready, self.failed

    def active(self, t: ProbeType) -> bool:
        tracker = self.trackers.get(t)
        if tracker is None or tracker.hold:
            return False
        return not self.started if t is ProbeType.STARTUP else self.started

    def due_at(self, t: ProbeType) -> float | None:
        """When probe `t` runs next (None: it does not run now)."""
        if not self.active(t):
            return None
        tracker = self.trackers[t]
        first = self.started_at + tracker.probe.initial_delay
        if t is not ProbeType.STARTUP and self.started_since is not None:
            first = max(first, self.started_since)  # not before the startup probe passed
        if tracker.probed_at is None:
            return first
        return max(first, tracker.probed_at + tracker.probe.period)

    def due(self) -> float | None:
        """When the next probe of this instance runs (None: none will)."""
        times = [at for at in map(self.due_at, self.trackers) if at is not None]
        return min(times) if times else None

    def due_types(self, now: float) -> list[ProbeType]:
        return [t for t in self.trackers if (at := self.due_at(t)) is not None and at <= now]

    def record(self, t: ProbeType, result: Result, at: float) -> bool:
        """Count a result of probe `t` run at `at`; True if started, ready or failed
        changed (what the kubelet must hear about)."""
        before = self._state()
        self.trackers[t].observe(result, at)
        if self.started and self.started_since is None:
            self.started_since = at
        return self._state() != before


def passing(health: Health, now: float, *, limit: int = 1000) -> float | None:
    """Run `health` forward to `now` as if every probe passed when due, as far as
    `started` and `ready` can change; the time they change next, if they will."""
    for _ in range(limit):
        if health.ready:
            return None
        at = health.due()
        if at is None:
            return None
        if at > now:
            return at
        for t in health.due_types(at):
            health.record(t, Result.SUCCESS, at)
    return now  # a very long run of successes to pass: look again


# ---- what the kubelet hears ----------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the probes say of a running container instance now."""

    ready: bool
    started: bool
    kill: ProbeType | None = None  # failed this probe for good: stop the container
    grace: float | None = None  # the failed probe's terminationGracePeriodSeconds
    message: str = ""  # why, for the Killing event
    recheck: float | None = None  # when the answer changes by itself (no notification)


class Prober(Protocol):
    """What the kubelet asks of a prober. `track` is told, after every sync of a pod,
    which of its container instances run; the prober probes them (and stops probing
    the others) and calls the function given to `subscribe` with the pod's key when a
    verdict changes, so the kubelet never polls it."""

    def subscribe(self, notify: Callable[[str], None]) -> None:
        ...

    def track(self, pod: Obj, state: rt.PodState | None) -> None:
        ...

    def verdict(self, pod: Obj, container: Obj, instance: rt.Container, now: float
                ) -> Verdict:
        ...

    def forget(self, pod_uid: str) -> None:
        """The pod is gone or going: stop probing it."""

    async def run(self) -> None:
        """Hold what the probes need (connections) until cancelled, then stop them."""
