"""The probes' settings and state machine (agent/probes.py): tables of results in, what
the kubelet hears out."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.agent import probes
from raftkube.agent.probes import ProbeType as T
from raftkube.agent.probes import Result as R

pytestmark = pytest.mark.unit

EXEC = {"exec": {"command": ["cat", "/tmp/healthy"]}}


def test_a_probe_gets_kubernetes_defaults() -> None:
    p = probes.parse(EXEC, path="p")
    assert p == probes.Probe(probes.Exec(("cat", "/tmp/healthy")), initial_delay=0,
                             period=10, timeout=1, success_threshold=1, failure_threshold=3)
    # Zero is "unset", as in Go.
    zeros = {**EXEC, "periodSeconds": 0, "timeoutSeconds": 0, "failureThreshold": 0}
    assert probes.parse(zeros, path="p") == p


def test_a_probe_keeps_its_own_settings() -> None:
    p = probes.parse({"httpGet": {"port": "http", "path": "healthz", "host": "10.0.0.1",
                                  "scheme": "https",
                                  "httpHeaders": [{"name": "Host", "value": "web"}]},
                      "initialDelaySeconds": 5, "periodSeconds": 2, "timeoutSeconds": 3,
                      "successThreshold": 2, "failureThreshold": 4,
                      "terminationGracePeriodSeconds": 7}, path="p")
    assert p.handler == probes.HTTPGet(port="http", path="/healthz", host="10.0.0.1",
                                       scheme="HTTPS", headers=(("Host", "web"),))
    assert (p.initial_delay, p.period, p.timeout, p.success_threshold,
            p.failure_threshold, p.termination_grace) == (5, 2, 3, 2, 4, 7)
    assert probes.parse({"tcpSocket": {"port": "8080"}}, path="p").handler == \
        probes.TCPSocket(port=8080)
    assert probes.parse({"grpc": {"port": 9000}}, path="p").handler == probes.GRPC(9000)


@pytest.mark.parametrize(("probe", "error"), [
    ({}, "p: must have exactly one of exec, httpGet, tcpSocket, grpc (has none)"),
    ({**EXEC, "tcpSocket": {"port": 1}}, "(has exec, tcpSocket)"),
    ({"exec": {"command": []}}, "p.exec.command: must be a non-empty list"),
    ({"exec": {"command": "true"}}, "p.exec.command: must be a non-empty list"),
    ({"httpGet": {"port": 0}}, "p.httpGet.port: must be between 1 and 65535, not 0"),
    ({"httpGet": {}}, "p.httpGet.port: must be a port number or a port name, not None"),
    ({"httpGet": {"port": 80, "scheme": "ftp"}}, "p.httpGet.scheme: must be HTTP or HTTPS"),
    ({"httpGet": {"port": 80, "httpHeaders": [{"value": "x"}]}},
     "p.httpGet.httpHeaders[0]: must have a name"),
    ({"grpc": {"port": "grpc"}}, "p.grpc.port: must be a port number"),
    ({**EXEC, "periodSeconds": -1}, "p.periodSeconds: must be a non-negative number"),
    ({**EXEC, "timeoutSeconds": "1s"}, "p.timeoutSeconds: must be a non-negative number"),
    ({**EXEC, "failureThreshold": 1.5}, "p.failureThreshold: must be a whole number"),
    ({**EXEC, "terminationGracePeriodSeconds": -3},
     "p.terminationGracePeriodSeconds: must be a non-negative number"),
    ("exec", "p: must be an object"),
])
def test_a_probe_that_cannot_run_names_its_field(probe: Any, error: str) -> None:
    with pytest.raises(probes.ProbeError) as e:
        probes.parse(probe, path="p")
    assert error in str(e.value)


def test_a_containers_probes_are_named_by_their_field() -> None:
    c = {"name": "web", "livenessProbe": EXEC, "readinessProbe": None,
         "startupProbe": {**EXEC, "periodSeconds": -2}}
    with pytest.raises(probes.ProbeError, match=r"containers\[web\]\.startupProbe\."
                                                 r"periodSeconds"):
        probes.probes_of(c)
    del c["startupProbe"]
    assert list(probes.probes_of(c)) == [T.LIVENESS]


def test_a_port_name_is_looked_up_in_the_containers_ports() -> None:
    c = {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}
    assert probes.container_port("http", c) == 8080
    assert probes.container_port(81, c) == 81
    with pytest.raises(probes.ProbeError, match="'metrics' is not the name of a port"):
        probes.container_port("metrics", c)


# ---- one probe's results ---------------------------------------------------------------

S, F, U = R.SUCCESS, R.FAILURE, R.UNKNOWN


@pytest.mark.parametrize(("kind", "success", "failure", "results", "reported"), [
    # readiness starts False; one success is enough by default
    (T.READINESS, 1, 3, [S], [S]),
    # three failures in a row to turn unready; an error counts as nothing
    (T.READINESS, 1, 3, [S, F, F, U, S, F, F, F], [S, S, S, S, S, S, S, F]),
    # successThreshold 2: two in a row to turn ready again
    (T.READINESS, 2, 1, [S, S, F, S, F, S, S], [F, S, F, F, F, F, S]),
    # liveness starts True and fails after failureThreshold failures in a row
    (T.LIVENESS, 1, 3, [F, F, S, F, F, F], [S, S, S, S, S, F]),
    (T.LIVENESS, 1, 1, [U, U, F], [S, S, F]),
    # startup is unknown until it passes or fails past its threshold
    (T.STARTUP, 1, 2, [F, S], [U, S]),
    (T.STARTUP, 1, 2, [F, F], [U, F]),
])
def test_results_count_after_their_threshold(kind: T, success: int, failure: int,
                                              results: list[R], reported: list[R]) -> None:
    tracker = probes.Tracker(kind, probes.Probe(probes.Exec(("x",)),
                                                success_threshold=success,
                                                failure_threshold=failure),
                             probes.INITIAL[kind])
    seen = []
    for i, r in enumerate(results):
        tracker.observe(r, float(i))
        seen.append(tracker.result)
    assert seen == reported


def test_a_liveness_failure_holds_and_readiness_does_not() -> None:
    probe = probes.Probe(probes.Exec(("x",)), failure_threshold=1)
    live = probes.Tracker(T.LIVENESS, probe, S)
    ready = probes.Tracker(T.READINESS, probe, S)
    assert live.observe(F, 0) and ready.observe(F, 0)
    assert live.hold and not ready.hold


# ---- one container instance --------------------------------------------------------------


def probe(**settings: float) -> probes.Probe:
    return probes.Probe(probes.Exec(("x",)), **settings)  # type: ignore[arg-type]


def test_a_container_without_probes_is_started_and_ready_at_once() -> None:
    h = probes.Health({}, started_at=100)
    assert (h.started, h.ready, h.failed, h.due()) == (True, True, None, None)


def test_readiness_is_false_until_its_first_success_then_runs_every_period() -> None:
    h = probes.Health({T.READINESS: probe(initial_delay=5, period=2)}, started_at=100)
    assert (h.started, h.ready) == (True, False)
    assert h.due() == 105 and h.due_types(104.9) == [] and h.due_types(105) == [T.READINESS]
    assert h.record(T.READINESS, S, 105.1) is True
    assert h.ready and h.due() == 107.1
    assert h.record(T.READINESS, S, 107.1) is False  # nothing the kubelet must hear


def test_startup_gates_liveness_and_readiness_then_stops() -> None:
    h = probes.Health({T.STARTUP: probe(period=1, failure_threshold=30),
                       T.LIVENESS: probe(initial_delay=2, period=10),
                       T.READINESS: probe(period=3)}, started_at=100)
    assert (h.started, h.ready) == (False, False)
    assert h.due_types(100) == [T.STARTUP] and h.due_at(T.LIVENESS) is None
    assert h.record(T.STARTUP, F, 100) is False and h.due() == 101
    assert h.record(T.STARTUP, S, 101) is True  # started: the kubelet hears it
    assert h.started and not h.ready and h.due_at(T.STARTUP) is None
    # Liveness is due at its delay (102), readiness at once (not before 101).
    assert (h.due_at(T.LIVENESS), h.due_at(T.READINESS)) == (102, 101)
    assert h.record(T.READINESS, S, 101) and h.ready


def test_a_startup_failure_past_its_threshold_asks_for_a_kill() -> None:
    h = probes.Health({T.STARTUP: probe(failure_threshold=2), T.LIVENESS: probe()},
                      started_at=100)
    assert h.record(T.STARTUP, F, 100) is False
    assert h.record(T.STARTUP, F, 110) is True
    assert h.failed is T.STARTUP and not h.started and h.due() is None  # held


def test_a_liveness_failure_asks_for_a_kill_while_readiness_goes_on() -> None:
    h = probes.Health({T.LIVENESS: probe(failure_threshold=1), T.READINESS: probe()},
                      started_at=100)
    h.record(T.READINESS, S, 100)
    assert h.record(T.LIVENESS, F, 100) is True
    assert h.failed is T.LIVENESS and h.ready
    assert h.due_at(T.LIVENESS) is None and h.due_at(T.READINESS) == 110


def test_passing_runs_forward_as_if_every_probe_passed() -> None:
    h = probes.Health({T.STARTUP: probe(initial_delay=4),
                       T.READINESS: probe(period=5, success_threshold=2)}, started_at=100)
    assert probes.passing(h, 103) == 104 and not h.started
    assert probes.passing(h, 106) == 109 and h.started and not h.ready
    assert probes.passing(h, 109) is None and h.ready


def test_an_instance_resumes_from_what_it_reported_before_the_agent_restarted() -> None:
    h = probes.Health({T.STARTUP: probe(), T.READINESS: probe(period=5, failure_threshold=2),
                       T.LIVENESS: probe()}, started_at=100)
    h.resume(started=True, ready=True, at=500)
    assert (h.started, h.ready) == (True, True)
    assert h.due_at(T.STARTUP) is None and h.due_at(T.READINESS) == 500  # probed at once
    assert h.record(T.READINESS, F, 500) is False  # one failure of two: still ready
    assert h.record(T.READINESS, F, 505) is True and not h.ready
    fresh = probes.Health({T.READINESS: probe()}, started_at=100)
    fresh.resume(started=True, ready=False, at=500)
    assert not fresh.ready
