"""The simulated runtime: addresses, exits computed from the clock, and recovery from
what the API last heard."""

from __future__ import annotations

import pytest

from raftkube.agent import podstatus, simulated
from raftkube.agent import runtime as rt
from raftkube.agent.actions import CrashBackoff, plan
from tests.unit.agent_support import T0, Clock, pod, runtime

pytestmark = pytest.mark.unit


async def test_pod_ips_are_the_lowest_free_addresses_and_are_freed() -> None:
    r = runtime(Clock())
    ips = [(await r.run_sandbox(pod(f"p{i}", uid=f"u{i}"))).ip for i in range(3)]
    assert ips == ["10.244.1.2", "10.244.1.3", "10.244.1.4"]  # .1 is the gateway
    assert (await r.run_sandbox(pod("p0", uid="u0"))).ip == "10.244.1.2"  # the same sandbox
    await r.remove_pod("u1", grace=0)
    assert (await r.run_sandbox(pod("p9", uid="u9"))).ip == "10.244.1.3"
    host = pod("h", uid="uh")
    host["spec"]["hostNetwork"] = True
    assert (await r.run_sandbox(host)).ip == "192.0.2.10"


async def test_a_stopped_sandbox_frees_its_ip_and_keeps_its_containers() -> None:
    clock = Clock()
    r = runtime(clock)
    p = pod(exit_after=1, exit_code=0, restart="Never")
    await r.run_sandbox(p)
    await r.start_container(p, p["spec"]["containers"][0], attempt=0)
    clock.advance(2)
    await r.stop_sandbox("uid-p-0001")
    await r.stop_sandbox("uid-p-0001")  # again: nothing more
    (state,) = await r.pods()
    assert not state.sandbox.ready and state.sandbox.ip == ""
    c = state.latest("c")
    assert c is not None and (c.state, c.exit_code) == (rt.EXITED, 0)
    assert (await r.run_sandbox(pod("q", uid="uq"))).ip == "10.244.1.2"  # its IP, freed
    await r.remove_pod("uid-p-0001", grace=0)  # and not freed again from the new owner
    assert (await r.run_sandbox(pod("x", uid="ux"))).ip == "10.244.1.3"


async def test_a_full_range_is_a_runtime_failure() -> None:
    r = runtime(Clock(), cidr="10.244.1.0/30")  # room for two pods
    await r.run_sandbox(pod("a", uid="ua"))
    await r.run_sandbox(pod("b", uid="ub"))
    with pytest.raises(rt.RuntimeFailure):
        await r.run_sandbox(pod("c", uid="uc"))


async def test_a_container_exits_when_its_annotation_says_and_not_before() -> None:
    clock = Clock()
    r = runtime(clock)
    p = pod(exit_after=2.5, exit_code=3)
    await r.run_sandbox(p)
    c = await r.start_container(p, p["spec"]["containers"][0], attempt=0)
    assert (c.state, c.started_at) == (rt.RUNNING, T0)
    assert c.id == simulated.container_id("uid-p-0001", "c", 0, T0)
    clock.advance(2.4)
    assert (await r.pods())[0].latest("c").state == rt.RUNNING  # type: ignore[union-attr]
    clock.advance(0.2)
    done = (await r.pods())[0].latest("c")
    assert done is not None
    assert (done.state, done.exit_code, done.reason, done.finished_at) == \
        (rt.EXITED, 3, "Error", T0 + 2.5)


async def test_without_the_annotation_a_container_runs_until_stopped() -> None:
    clock = Clock()
    r = runtime(clock)
    p = pod()
    await r.run_sandbox(p)
    await r.start_container(p, p["spec"]["containers"][0], attempt=0)
    clock.advance(10**6)
    assert (await r.pods())[0].latest("c").state == rt.RUNNING  # type: ignore[union-attr]
    with pytest.raises(rt.RuntimeFailure):  # never two running instances of one container
        await r.start_container(p, p["spec"]["containers"][0], attempt=1)
    await r.stop_container(p["metadata"]["uid"], "c", grace=30)
    stopped = (await r.pods())[0].latest("c")
    assert stopped is not None and (stopped.state, stopped.exit_code) == (rt.EXITED, 0)


async def test_init_containers_exit_zero_at_once_and_two_instances_are_kept() -> None:
    clock = Clock()
    r = runtime(clock)
    p = pod(init=("setup",), exit_after=1)
    await r.run_sandbox(p)
    init = await r.start_container(p, p["spec"]["initContainers"][0], attempt=0)
    assert (init.state, init.exit_code, init.reason) == (rt.EXITED, 0, "Completed")
    for attempt in range(4):
        await r.start_container(p, p["spec"]["containers"][0], attempt=attempt)
        clock.advance(1)
    state = (await r.pods())[0]
    assert [c.attempt for c in state.containers if c.name == "c"] == [2, 3]
    assert state.previous("c").attempt == 2  # type: ignore[union-attr]


async def _run_for(r: simulated.SimulatedRuntime, clock: Clock, p: dict, seconds: float,
                   backoff: CrashBackoff) -> dict:
    """What a kubelet would do for `p` over `seconds`, a tenth of a second at a time;
    the pod as it would then be reported."""
    for _ in range(int(seconds * 10)):
        state = next(iter(await r.pods()), None)
        steps = plan(p, state, now=clock(), backoff=backoff)
        if steps.sandbox:
            await r.run_sandbox(p)
        for c, attempt in steps.start:
            if attempt:
                latest = state.latest(c["name"])  # type: ignore[union-attr]
                backoff.restarted(f"{p['metadata']['uid']}/{c['name']}",
                                  latest.finished_at, clock())  # type: ignore[union-attr]
            await r.start_container(p, c, attempt=attempt)
        clock.advance(0.1)
    state = next(iter(await r.pods()), None)
    steps = plan(p, state, now=clock(), backoff=backoff)
    status = podstatus.pod_status(p, state, now=clock(), host_ip="192.0.2.10",
                                  ready={"c": True}, plan=steps)
    return {**p, "status": status}


@pytest.mark.parametrize("exit_after", [None, 3.0, 0.5])
async def test_a_restarted_agent_recovers_its_pods_and_starts_nothing(
        exit_after: float | None) -> None:
    clock = Clock()
    before = runtime(clock)
    p = pod(exit_after=exit_after, exit_code=1, init=("setup",))
    reported = await _run_for(before, clock, p, 4.0, CrashBackoff(base=1, cap=4))
    after = runtime(clock)
    await after.recover([reported])
    again = await after.pods()
    assert after.starts == 0
    assert [s.sandbox.ip for s in again] == [reported["status"]["podIP"]]
    status = reported["status"]["containerStatuses"][0]
    latest = again[0].latest("c")
    assert latest is not None
    assert (latest.id, latest.attempt) == (status["containerID"], status["restartCount"])
    assert latest.state == (rt.RUNNING if "running" in status["state"] else rt.EXITED)
    # The address is taken: a new pod gets another one.
    assert (await after.run_sandbox(pod("q", uid="uq"))).ip != reported["status"]["podIP"]


async def test_a_recovered_container_still_exits_on_time() -> None:
    clock = Clock()
    before = runtime(clock)
    p = pod(exit_after=5, restart="Never")
    reported = await _run_for(before, clock, p, 1.0, CrashBackoff())
    after = runtime(clock)
    await after.recover([reported])
    clock.advance(3.9)
    assert (await after.pods())[0].latest("c").state == rt.RUNNING  # type: ignore[union-attr]
    clock.advance(0.2)  # 5 s after it started
    latest = (await after.pods())[0].latest("c")
    assert latest is not None and latest.state == rt.EXITED


def _answer(p: dict, c: rt.Container, now: float) -> tuple[bool, bool, float | None]:
    v = simulated.SimulatedProber().verdict(p, p["spec"]["containers"][0], c, now)
    assert v.kill is None
    return v.ready, v.started, v.recheck


def test_the_prober_passes_once_the_initial_delay_has_passed() -> None:
    p = pod(ready_delay=3)
    c = rt.Container("u", "c", 0, "id", "i", "iid", rt.RUNNING, T0)
    assert _answer(p, c, T0 + 1) == (False, True, T0 + 3)
    assert _answer(p, c, T0 + 3) == (True, True, None)
    assert _answer(pod(), c, T0) == (True, True, None)


def test_the_simulated_startup_probe_gates_readiness_and_thresholds_count() -> None:
    p = pod()
    p["spec"]["containers"][0].update(
        startupProbe={"exec": {"command": ["true"]}, "initialDelaySeconds": 5},
        readinessProbe={"tcpSocket": {"port": 80}, "initialDelaySeconds": 2,
                        "periodSeconds": 4, "successThreshold": 3})
    c = rt.Container("u", "c", 0, "id", "i", "iid", rt.RUNNING, T0)
    # started at T0+5; readiness passes at +5, +9, +13: ready from T0+13
    assert _answer(p, c, T0 + 1) == (False, False, T0 + 5)
    assert _answer(p, c, T0 + 5) == (False, True, T0 + 9)
    assert _answer(p, c, T0 + 12) == (False, True, T0 + 13)
    assert _answer(p, c, T0 + 13) == (True, True, None)
    exited = rt.Container("u", "c", 0, "id", "i", "iid", rt.EXITED, T0)
    assert _answer(p, exited, T0 + 20) == (False, False, None)


@pytest.mark.parametrize(("notes", "want"), [
    ({}, (None, 0)),
    ({simulated.EXIT_AFTER: "1.5"}, (1.5, 0)),
    ({simulated.EXIT_AFTER: "0", simulated.EXIT_CODE: "42"}, (0.0, 42)),
    ({simulated.EXIT_AFTER: "soon", simulated.EXIT_CODE: "x"}, (None, 0)),
    ({simulated.EXIT_AFTER: "-1"}, (None, 0)),
    ({simulated.EXIT_AFTER: "nan"}, (None, 0)),
])
def test_exit_annotations(notes: dict[str, str], want: tuple[float | None, int]) -> None:
    assert simulated.exit_plan({"metadata": {"annotations": notes}}) == want


def test_container_ids_tell_every_start_apart() -> None:
    ids = {simulated.container_id("u", "c", attempt, T0 + t)
           for attempt in range(3) for t in (0, 0.5)}
    ids.add(simulated.container_id("v", "c", 0, T0))
    assert len(ids) == 7 and all(i.startswith("simulated://") for i in ids)
