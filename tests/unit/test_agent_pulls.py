"""Image pulls that fail: the back-off, what the plan does with it, what the status
says (ErrImagePull, then ImagePullBackOff; ErrImageNeverPull), and the kubelet between."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.agent import actions, podstatus, simulated
from raftkube.agent import runtime as rt
from tests.unit.agent_support import T0, pod
from tests.unit.test_agent_kubelet import Setup, written

pytestmark = pytest.mark.unit

MISSING = "img-c:1"  # the image of agent_support's container `c`


def test_pull_backoff_doubles_to_the_cap_and_starts_afresh_for_a_new_image() -> None:
    b = actions.PullBackoff(base=10, cap=300)
    now, waits = T0, []
    for _ in range(7):
        b.failed("u/c", MISSING, rt.ERR_IMAGE_PULL, "no such host", now)
        blocked = b.blocked("u/c", MISSING, now)
        assert blocked is not None and blocked[:2] == (
            rt.IMAGE_PULL_BACKOFF, f'Back-off pulling image "{MISSING}"')
        waits.append(blocked[2] - now)
        now = blocked[2]
        assert b.blocked("u/c", MISSING, now) is None  # its time has come
    assert waits == [10, 20, 40, 80, 160, 300, 300]
    assert b.blocked("u/c", "other:2", now - 1) is None  # the spec changed its image
    b.failed("u/c", "other:2", rt.ERR_IMAGE_PULL, "x", now)
    blocked = b.blocked("u/c", "other:2", now)
    assert blocked is not None and blocked[2] == now + 10
    b.succeeded("u/c")
    assert b.blocked("u/c", "other:2", now) is None


def test_never_pull_keeps_its_reason_while_it_waits() -> None:
    b = actions.PullBackoff()
    b.failed("u/c", MISSING, rt.ERR_IMAGE_NEVER_PULL, "not present", T0)
    assert b.blocked("u/c", MISSING, T0 + 1) == (rt.ERR_IMAGE_NEVER_PULL, "not present",
                                                 T0 + 10)
    b.forget_pod("u")
    assert b.blocked("u/c", MISSING, T0 + 1) is None


def test_the_plan_holds_a_container_whose_pull_backs_off_and_starts_the_others() -> None:
    p = pod(containers=("c", "d"))
    pulls = actions.PullBackoff()
    pulls.failed(actions.backoff_key(p, "c"), MISSING, rt.ERR_IMAGE_PULL, "x", T0)
    out = actions.plan(p, None, now=T0 + 1, backoff=actions.CrashBackoff(), pulls=pulls)
    assert [c["name"] for c, _ in out.start] == ["d"]
    assert out.waiting == {"c": (rt.IMAGE_PULL_BACKOFF, f'Back-off pulling image "{MISSING}"')}
    assert out.recheck == T0 + 10
    later = actions.plan(p, None, now=T0 + 10, backoff=actions.CrashBackoff(), pulls=pulls)
    assert [c["name"] for c, _ in later.start] == ["c", "d"]


def test_a_container_that_never_ran_reports_why_it_waits() -> None:
    p = pod()
    plan = actions.Plan(waiting={"c": (rt.ERR_IMAGE_PULL, "Failed to pull image")})
    state = rt.PodState(rt.Sandbox("uid-p-0001", "ns", "p", "10.244.1.2", T0), ())
    status = podstatus.pod_status(p, state, now=T0, host_ip="h", ready={}, plan=plan)
    (c,) = status["containerStatuses"]
    assert c["state"] == {"waiting": {"reason": rt.ERR_IMAGE_PULL,
                                      "message": "Failed to pull image"}}
    assert status["phase"] == "Pending"


class PullingRuntime(simulated.SimulatedRuntime):
    """The simulated runtime, whose images named in `missing` cannot be pulled."""

    missing: dict[str, tuple[str, str]]

    async def start_container(self, pod: Any, container: Any, *, attempt: int,
                              request: rt.ContainerRequest | None = None) -> rt.Container:
        failure = self.missing.get(container.get("image"))
        if failure is not None:
            raise rt.ImagePullFailure(*failure)
        return await super().start_container(pod, container, attempt=attempt,
                                             request=request)


def pulling(s: Setup, **missing: tuple[str, str]) -> PullingRuntime:
    r = PullingRuntime(pod_cidr="10.244.1.0/24", host_ip="192.0.2.10", clock=s.clock)
    r.missing = {k.replace("_", "-").replace("-1", ":1"): v for k, v in missing.items()}
    s.runtime = s.kubelet.runtime = r
    return r


async def test_the_kubelet_says_errimagepull_then_imagepullbackoff_then_runs_it() -> None:
    s = Setup(pod(containers=("c", "d")))
    r = pulling(s, img_c_1=(rt.ERR_IMAGE_PULL, 'Failed to pull image "img-c:1": no host'))
    status = written(await s.run())
    c, d = status["containerStatuses"]
    assert c["state"] == {"waiting": {"reason": rt.ERR_IMAGE_PULL,
                                      "message": 'Failed to pull image "img-c:1": no host'}}
    assert "running" in d["state"]
    assert ("Warning", "Failed") in [(t, r_) for t, r_, _ in s.f.recorded_events()]
    s.cache({**pod(containers=("c", "d")), "status": status})
    s.clock.advance(1)
    status = written(await s.run())
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == \
        rt.IMAGE_PULL_BACKOFF
    assert s.reasons().count("BackOff") == 1
    s.cache({**pod(containers=("c", "d")), "status": status})
    s.clock.advance(1)
    assert await s.run() == []  # nothing new to say while it backs off
    assert "BackOff" not in s.reasons()  # told once, by the run before
    r.missing.clear()  # the image arrives; after the back-off, it runs
    s.clock.advance(9)
    status = written(await s.run())
    assert "running" in status["containerStatuses"][0]["state"]
    assert status["phase"] == "Running"


async def test_a_never_pull_failure_stays_errimageneverpull() -> None:
    s = Setup(pod())
    pulling(s, img_c_1=(rt.ERR_IMAGE_NEVER_PULL, 'Container image "img-c:1" is not '
                                                 'present with pull policy of Never'))
    status = written(await s.run())
    s.cache({**pod(), "status": status})
    s.clock.advance(1)
    assert await s.run() == []  # the same reason as before: nothing to write
    assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == \
        rt.ERR_IMAGE_NEVER_PULL
