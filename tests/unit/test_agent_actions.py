"""What the kubelet decides for a pod (plan), the crash-loop back-off, and the status
it reports (phase, conditions, container statuses)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkube.agent import actions, admission, podstatus
from raftkube.agent import runtime as rt
from tests.unit.agent_support import T0, pod

pytestmark = pytest.mark.unit


def instance(name: str = "c", attempt: int = 0, *, exited_at: float | None = None,
             code: int = 0, started: float = T0) -> rt.Container:
    c = rt.Container("uid-p-0001", name, attempt, f"sim://{name}-{attempt}", "img", "iid",
                     rt.RUNNING, started)
    if exited_at is None:
        return c
    return rt.Container(c.pod_uid, name, attempt, c.id, "img", "iid", rt.EXITED, started,
                        exited_at, code, "Completed" if code == 0 else "Error")


def state(*containers: rt.Container) -> rt.PodState:
    return rt.PodState(rt.Sandbox("uid-p-0001", "ns", "p", "10.244.1.2", T0), containers)


# ---- back-off ------------------------------------------------------------------------


def test_backoff_is_none_then_base_doubling_to_the_cap() -> None:
    b = actions.CrashBackoff(base=10, cap=300)
    key, now, waits = "u/c", T0, []
    for _ in range(8):
        finished = now  # each run exits at once
        left = b.remaining(key, finished, now)
        waits.append(left)
        now += left
        b.restarted(key, finished, now)
    assert waits == [0, 10, 20, 40, 80, 160, 300, 300]


def test_a_container_that_ran_long_enough_is_forgiven() -> None:
    b = actions.CrashBackoff(base=10, cap=300)
    for i in range(5):
        b.restarted("u/c", T0 + i, T0 + i)
    assert b.remaining("u/c", T0 + 100, T0 + 100) > 0
    assert b.remaining("u/c", T0 + 5 + 601, T0 + 5 + 601) == 0  # ran > 2 x cap
    b.restarted("u/c", T0 + 606, T0 + 606)
    assert b.delay("u/c") == 10
    b.forget_pod("u")
    assert b.remaining("u/c", T0 + 607, T0 + 607) == 0


@pytest.mark.parametrize(("seconds", "text"), [
    (10, "10s"), (0.2, "200ms"), (80, "1m20s"), (300, "5m0s"), (2.5, "2.5s")])
def test_durations_read_as_go_prints_them(seconds: float, text: str) -> None:
    assert actions.go_duration(seconds) == text


# ---- plan ----------------------------------------------------------------------------


def starts(p: actions.Plan) -> list[tuple[str, int]]:
    return [(c["name"], attempt) for c, attempt in p.start]


@pytest.mark.parametrize(("policy", "code", "restarts"), [
    ("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False),
    ("OnFailure", 2, True), ("Never", 0, False), ("Never", 1, False)])
def test_restart_policies(policy: str, code: int, restarts: bool) -> None:
    p = pod(restart=policy)
    out = actions.plan(p, state(instance(exited_at=T0 + 1, code=code)), now=T0 + 2,
                       backoff=actions.CrashBackoff())
    assert starts(out) == ([("c", 1)] if restarts else [])
    assert not out.sandbox and out.recheck is None


def test_a_new_pod_gets_a_sandbox_and_every_container() -> None:
    out = actions.plan(pod(containers=("a", "b")), None, now=T0,
                       backoff=actions.CrashBackoff())
    assert out.sandbox and starts(out) == [("a", 0), ("b", 0)]


def test_a_second_crash_waits_its_back_off_and_says_so() -> None:
    b = actions.CrashBackoff(base=10, cap=300)
    p = pod()
    b.restarted("uid-p-0001/c", T0, T0)  # the first crash restarted at once
    crashed = state(instance(attempt=1, exited_at=T0 + 3, code=1))
    out = actions.plan(p, crashed, now=T0 + 4, backoff=b)
    assert starts(out) == [] and out.recheck == T0 + 13
    assert out.waiting == {"c": ("CrashLoopBackOff", "back-off 10s restarting failed "
                                 "container=c pod=p_ns(uid-p-0001)")}
    assert starts(actions.plan(p, crashed, now=T0 + 13, backoff=b)) == [("c", 2)]


def test_init_containers_run_one_at_a_time_before_the_others() -> None:
    p = pod(init=("i1", "i2"), containers=("a",))
    b = actions.CrashBackoff()
    assert starts(actions.plan(p, None, now=T0, backoff=b)) == [("i1", 0)]
    first_ran = state(instance("i1", exited_at=T0))
    assert starts(actions.plan(p, first_ran, now=T0, backoff=b)) == [("i2", 0)]
    assert starts(actions.plan(p, state(instance("i1", exited_at=T0), instance("i2")),
                               now=T0, backoff=b)) == []
    both = state(instance("i1", exited_at=T0), instance("i2", exited_at=T0))
    assert starts(actions.plan(p, both, now=T0, backoff=b)) == [("a", 0)]


def test_a_failed_init_container_fails_a_never_pod() -> None:
    p = pod(init=("i1",), restart="Never")
    out = actions.plan(p, state(instance("i1", exited_at=T0, code=1)), now=T0,
                       backoff=actions.CrashBackoff())
    assert out.init_failed and starts(out) == []
    retried = actions.plan(pod(init=("i1",), restart="Always"),
                           state(instance("i1", exited_at=T0, code=1)), now=T0,
                           backoff=actions.CrashBackoff())
    assert starts(retried) == [("i1", 1)]


def with_sidecar(p: dict[str, Any], name: str = "s") -> dict[str, Any]:
    for c in p["spec"]["initContainers"]:
        if c["name"] == name:
            c["restartPolicy"] = "Always"
    return p


def test_a_sidecar_starts_in_its_turn_and_keeps_running_beside_the_app() -> None:
    """KEP-753: the init container after a sidecar starts once the sidecar runs (not
    once it ends), the app containers after every init container; a sidecar that exits
    is restarted (with back-off) whatever the pod's policy, and blocks nothing once the
    app has run."""
    p = with_sidecar(pod(init=("s", "i2"), containers=("a",), restart="Never"))
    b = actions.CrashBackoff()
    assert starts(actions.plan(p, None, now=T0, backoff=b)) == [("s", 0)]
    assert starts(actions.plan(p, state(instance("s")), now=T0, backoff=b)) == [("i2", 0)]
    ready = state(instance("s"), instance("i2", exited_at=T0))
    assert starts(actions.plan(p, ready, now=T0, backoff=b)) == [("a", 0)]
    sidecar_died = state(instance("s", exited_at=T0 + 1, code=0),
                         instance("i2", exited_at=T0), instance("a"))
    assert starts(actions.plan(p, sidecar_died, now=T0 + 1, backoff=b)) == [("s", 1)]
    before_app = state(instance("s", exited_at=T0, code=1))
    assert starts(actions.plan(p, before_app, now=T0, backoff=b)) == [("s", 1)]


def test_a_running_sidecar_counts_as_initialized_and_never_ends_the_pod() -> None:
    p = with_sidecar(pod(init=("s",), containers=("c",), restart="Never"))
    s = state(instance("s"), instance("c", exited_at=T0 + 2, code=0))
    status = podstatus.pod_status(p, s, now=T0 + 5, host_ip="192.0.2.10",
                                  ready={"c": True}, plan=actions.Plan())
    assert status["phase"] == "Succeeded"
    assert [c for c in status["conditions"] if c["type"] == "Initialized"][0][
        "status"] == "True"
    (side,) = status["initContainerStatuses"]
    assert side["ready"] is True and "running" in side["state"]
    waiting = podstatus.pod_status(p, state(instance("s")), now=T0 + 5,
                                   host_ip="192.0.2.10", ready={}, plan=actions.Plan())
    assert waiting["phase"] == "Pending"
    assert [c for c in waiting["conditions"] if c["type"] == "Initialized"][0][
        "status"] == "True"


# ---- status --------------------------------------------------------------------------


def running(s: str = "c", *, ready: bool = True) -> dict[str, Any]:
    return {"name": s, "ready": ready, "state": {"running": {}}}


def ended(code: int) -> dict[str, Any]:
    return {"name": "c", "state": {"terminated": {"exitCode": code}}}


CRASHLOOP = {"name": "c", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
             "lastState": {"terminated": {"exitCode": 1}}}
CREATING = {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}


@pytest.mark.parametrize(("policy", "main", "want"), [
    ("Always", [running()], "Running"),
    ("Always", [CREATING], "Pending"),
    ("Always", [running(), CREATING], "Pending"),
    ("Always", [ended(0)], "Running"),  # it will run again
    ("Always", [CRASHLOOP], "Running"),
    ("OnFailure", [CRASHLOOP], "Running"),
    ("OnFailure", [ended(0)], "Succeeded"),
    ("Never", [ended(0)], "Succeeded"),
    ("Never", [ended(0), ended(3)], "Failed"),
    ("Never", [running(), ended(3)], "Running"),
    ("Never", [], "Pending"),
])
def test_phase(policy: str, main: list[dict[str, Any]], want: str) -> None:
    assert podstatus.phase(policy, [], main, init_failed=False) == want


def test_phase_waits_for_init_containers() -> None:
    assert podstatus.phase("Always", [ended(0), CREATING], [running()],
                           init_failed=False) == "Pending"
    assert podstatus.phase("Never", [ended(1)], [], init_failed=True) == "Failed"


def status_of(p: dict[str, Any], s: rt.PodState | None, *, now: float = T0 + 5,
              ready: dict[str, bool] | None = None,
              plan: actions.Plan | None = None) -> dict[str, Any]:
    return podstatus.pod_status(p, s, now=now, host_ip="192.0.2.10",
                                ready={"c": True} if ready is None else ready,
                                plan=plan or actions.Plan())


def conds(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c.get("reason", "")) for c in status["conditions"]}


def test_a_running_ready_pod() -> None:
    status = status_of(pod(), state(instance()))
    assert status["phase"] == "Running"
    assert (status["podIP"], status["podIPs"], status["hostIP"]) == \
        ("10.244.1.2", [{"ip": "10.244.1.2"}], "192.0.2.10")
    assert conds(status) == {"Initialized": ("True", ""), "Ready": ("True", ""),
                             "ContainersReady": ("True", ""), "PodScheduled": ("True", "")}
    assert status["containerStatuses"] == [{
        "name": "c", "image": "img-c:1", "imageID": "iid", "containerID": "sim://c-0",
        "ready": True, "restartCount": 0, "started": True, "lastState": {},
        "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}}}]
    assert status["startTime"] == "2023-11-14T22:13:25Z"


def test_an_unready_container_is_named_and_ready_flips_without_moving_the_rest() -> None:
    p = pod(containers=("c", "d"))
    s = state(instance(), instance("d"))
    unready = status_of(p, s, ready={"c": True, "d": False})
    assert conds(unready)["Ready"] == ("False", "ContainersNotReady")
    assert [c["message"] for c in unready["conditions"] if c["type"] == "Ready"] == \
        ["containers with unready status: [d]"]
    ready = status_of({**p, "status": unready}, s, now=T0 + 9, ready={"c": True, "d": True})
    assert conds(ready)["Ready"] == ("True", "")
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times["Ready"] == "2023-11-14T22:13:29Z"
    assert times["Initialized"] == "2023-11-14T22:13:25Z"  # it did not change
    assert ready["startTime"] == unready["startTime"]


def test_a_crash_looping_container_waits_with_its_last_exit() -> None:
    p = pod()
    s = state(instance(attempt=0, exited_at=T0 + 1, code=1),
              instance(attempt=1, exited_at=T0 + 3, code=1, started=T0 + 2))
    plan = actions.Plan(waiting={"c": ("CrashLoopBackOff", "back-off 10s ...")})
    status = status_of(p, s, plan=plan)
    c = status["containerStatuses"][0]
    assert status["phase"] == "Running" and c["restartCount"] == 1
    assert c["state"] == {"waiting": {"reason": "CrashLoopBackOff",
                                      "message": "back-off 10s ..."}}
    assert c["lastState"]["terminated"]["exitCode"] == 1
    assert c["lastState"]["terminated"]["finishedAt"] == "2023-11-14T22:13:23Z"


def test_a_pod_that_ended_is_not_ready_with_reason_pod_completed() -> None:
    status = status_of(pod(restart="Never"), state(instance(exited_at=T0 + 2, code=3)))
    assert status["phase"] == "Failed"
    assert conds(status)["Ready"] == ("False", "PodCompleted")
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_the_schedulers_condition_is_kept() -> None:
    scheduled = {"type": "PodScheduled", "status": "True",
                 "lastTransitionTime": "2023-01-01T00:00:00Z"}
    status = status_of(pod(conditions=[scheduled]), state(instance()))
    assert status["conditions"][0] == scheduled


@given(steps=st.lists(st.tuples(st.sampled_from(["run", "exit0", "exit1", "ready"]),
                                st.floats(0, 100)), max_size=8),
       policy=st.sampled_from(["Always", "OnFailure", "Never"]))
def test_computing_the_status_again_changes_nothing(steps: list[tuple[str, float]],
                                                    policy: str) -> None:
    """Whatever happened, a second computation from the reported status (later, with
    nothing new) gives the same status: the kubelet writes only on change."""
    p = pod(restart=policy)
    now, attempt, current = T0, 0, None
    ready = False
    for what, dt in steps:
        now += dt
        if what == "ready":
            ready = True
            continue
        current = instance(attempt=attempt, started=now, code=int(what == "exit1"),
                           exited_at=None if what == "run" else now + 1)
        attempt += 1
    s = state(current) if current else None
    first = status_of(p, s, now=now + 2, ready={"c": ready})
    second = status_of({**p, "status": first}, s, now=now + 50, ready={"c": ready})
    assert second == first


# ---- admission -----------------------------------------------------------------------


def asking(cpu: str = "", memory: str = "", *, limit_cpu: str = "",
           init_cpu: str = "") -> dict[str, Any]:
    p = pod()
    resources: dict[str, Any] = {}
    if cpu or memory:
        resources["requests"] = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    if limit_cpu:
        resources["limits"] = {"cpu": limit_cpu}
    p["spec"]["containers"][0]["resources"] = resources
    if init_cpu:
        p["spec"]["initContainers"] = [{"name": "i", "image": "i",
                                        "resources": {"requests": {"cpu": init_cpu}}}]
    return p


@pytest.mark.parametrize(("p", "want"), [
    (asking(), {"cpu": 0, "memory": 0}),
    (asking("250m", "64Mi"), {"cpu": 250, "memory": 64 * 2**20}),
    (asking(limit_cpu="1"), {"cpu": 1000, "memory": 0}),  # a limit stands for the request
    (asking("100m", init_cpu="2"), {"cpu": 2000, "memory": 0}),
    (asking("3", init_cpu="2"), {"cpu": 3000, "memory": 0}),
    (asking("0.0001"), {"cpu": 1, "memory": 0}),  # rounded up, as Kubernetes does
])
def test_what_a_pod_asks_for(p: dict[str, Any], want: dict[str, int]) -> None:
    assert admission.pod_requests(p) == want


ALLOCATABLE = {"cpu": "4", "memory": "8Gi", "pods": "3"}


@pytest.mark.parametrize(("new", "others", "want"), [
    (asking("1"), [asking("3")], None),  # exactly full fits
    (asking("1"), [asking("3"), asking("100m")],
     ("OutOfcpu", "Pod was rejected: Node didn't have enough resource: cpu, requested: "
                  "1000, used: 3100, capacity: 4000")),
    (asking(memory="5Gi"), [asking(memory="4Gi")],
     ("OutOfmemory", "Pod was rejected: Node didn't have enough resource: memory, "
                     "requested: 5368709120, used: 4294967296, capacity: 8589934592")),
    (asking(), [asking(), asking(), asking()],
     ("OutOfpods", "Pod was rejected: Node didn't have enough resource: pods, "
                   "requested: 1, used: 3, capacity: 3")),
    (asking(), [asking("4"), asking(memory="8Gi")], None),  # asks nothing: only a pod
])
def test_admission(new: dict[str, Any], others: list[dict[str, Any]],
                   want: tuple[str, str] | None) -> None:
    assert admission.rejection(new, others, ALLOCATABLE) == want


def test_the_sidecars_of_an_ended_pod_are_stopped_and_not_started_again() -> None:
    p = with_sidecar(pod(init=("s",), containers=("c",), restart="Never"))
    b = actions.CrashBackoff()
    ended_app = state(instance("s"), instance("c", exited_at=T0 + 2, code=0))
    out = actions.plan(p, ended_app, now=T0 + 3, backoff=b)
    assert out.stop == ["s"] and starts(out) == [] and not out.idle
    stopped = state(instance("s", exited_at=T0 + 3, code=143),
                    instance("c", exited_at=T0 + 2, code=0))
    after = actions.plan(p, stopped, now=T0 + 4, backoff=b)
    assert after.idle and not after.init_failed
    always = with_sidecar(pod(init=("s",), containers=("c",), restart="Always"))
    assert actions.plan(always, ended_app, now=T0 + 3, backoff=b).stop == []


def test_what_follows_a_sidecar_waits_for_its_startup_probe() -> None:
    """A sidecar has started once its startup probe passed (the kubelet's `unstarted`):
    until then the next init container and the app containers wait; once the app has
    run, a sidecar restarting with a startup probe blocks nothing."""
    p = with_sidecar(pod(init=("s", "i2"), containers=("a",)))
    b = actions.CrashBackoff()
    up = state(instance("s"))
    assert starts(actions.plan(p, up, now=T0, backoff=b, unstarted={"s"})) == []
    assert starts(actions.plan(p, up, now=T0, backoff=b)) == [("i2", 0)]
    ran = state(instance("s", 1), instance("i2", exited_at=T0), instance("a"))
    assert actions.plan(p, ran, now=T0, backoff=b, unstarted={"s"}).idle


def test_a_sidecar_killed_by_its_probe_restarts_whatever_the_pods_policy() -> None:
    p = with_sidecar(pod(init=("s",), containers=("a",), restart="Never"))
    killed = state(instance("s", exited_at=T0 + 1, code=137), instance("a"))
    assert starts(actions.plan(p, killed, now=T0 + 1, backoff=actions.CrashBackoff(),
                               killed={"s"})) == [("s", 1)]


def test_a_sidecars_probes_feed_the_pods_conditions() -> None:
    """Kubernetes' prober manager and ContainersReady: a sidecar is ready as its
    readiness probe says and counts for ContainersReady and Ready (named first); the
    pod is Initialized only once the sidecar has started (its startup probe passed)."""
    p = with_sidecar(pod(init=("s",), containers=("c",)))
    s = state(instance("s"), instance("c"))
    unready = status_of(p, s, ready={"s": False, "c": True})
    assert conds(unready)["ContainersReady"] == ("False", "ContainersNotReady")
    ready_cond = next(c for c in unready["conditions"] if c["type"] == "Ready")
    assert ready_cond["message"] == "containers with unready status: [s]"
    assert unready["initContainerStatuses"][0]["ready"] is False
    both = status_of(p, s, ready={"s": True, "c": True})
    assert conds(both)["Ready"] == ("True", "")
    assert both["initContainerStatuses"][0]["ready"] is True
    starting = podstatus.pod_status(p, state(instance("s")), now=T0 + 5,
                                    host_ip="192.0.2.10", ready={"s": False},
                                    started={"s": False}, plan=actions.Plan())
    assert conds(starting)["Initialized"] == ("False", "ContainersNotInitialized")
    assert starting["initContainerStatuses"][0]["started"] is False
    assert starting["phase"] == "Pending"
    started = podstatus.pod_status(p, state(instance("s")), now=T0 + 5,
                                   host_ip="192.0.2.10", ready={"s": True},
                                   started={"s": True}, plan=actions.Plan())
    assert conds(started)["Initialized"] == ("True", "")
