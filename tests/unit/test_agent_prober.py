"""The prober (agent/prober.py) with the kubelet over the simulated runtime: exec probes
answered by a fake `exec_sync`, httpGet and tcpSocket probes against real listeners on
127.0.0.1, and what the kubelet does with the verdicts (Ready conditions, Killing and
restarts, Events). Probes run on the real clock with short periods."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import prometheus_client as prom
import pytest
from aiohttp import web

from raftkube.agent import actions, metrics, prober, probes, simulated
from raftkube.agent import runtime as rt
from raftkube.agent.kubelet import Kubelet
from raftkube.api import kinds
from raftkube.client import workqueue
from tests.unit.agent_support import pod
from tests.unit.controller_fixture import Fixture

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
WAIT = 20.0  # generous: 2 shared cores


class ExecRuntime(simulated.SimulatedRuntime):
    """The simulated runtime, whose exec answers what the test says."""

    def __init__(self) -> None:
        super().__init__(pod_cidr="10.244.1.0/24", host_ip="192.0.2.10", clock=time.time)
        self.answer: rt.ExecResult | Exception = rt.ExecResult(0, b"")
        self.calls: list[tuple[str, tuple[str, ...], float]] = []
        self.delay = 0.0
        self.running = self.peak = 0

    async def exec_sync(self, pod_uid: str, name: str, command: Sequence[str], *,
                        timeout: float) -> rt.ExecResult:
        await super().exec_sync(pod_uid, name, command, timeout=timeout)
        self.calls.append((name, tuple(command), timeout))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class Setup:
    def __init__(self, p: Obj, max_execs: int = 8) -> None:
        self.f = Fixture()
        self.f.seed(kinds.POD, p)
        self.runtime = ExecRuntime()
        self.registry = prom.CollectorRegistry()
        self.prober = prober.Prober(runtime=self.runtime, events=self.f.events,
                                    metrics=prober.ProbeMetrics(self.registry),
                                    clock=time.time, max_execs=max_execs)
        self.kubelet = Kubelet(
            node_name="n1", host_ip="192.0.2.10", client=self.f.client,  # type: ignore[arg-type]
            runtime=self.runtime, prober=self.prober, events=self.f.events, clock=time.time,
            backoff=actions.CrashBackoff(base=10, cap=300),
            informer=self.f.informers.informer(kinds.POD))
        self.kubelet.queue = workqueue.WorkQueue()  # what seeding queued: tests reconcile
        self.status: Obj = {}

    async def sync(self) -> Obj:
        """One reconcile of ns/p; the status it wrote (or the one before)."""
        for a in await self.f.run(self.kubelet, "ns/p"):
            if a.verb == "update_status":
                self.status = a.body["status"]
        return self.status

    async def notified(self) -> None:
        """Wait until the prober enqueues the pod."""
        key = await asyncio.wait_for(self.kubelet.queue.get(), WAIT)
        self.kubelet.queue.done(key)
        assert key == "ns/p"

    def events(self) -> list[tuple[str, str]]:
        return [(reason, message) for _, reason, message in self.f.recorded_events()]

    def count(self, probe_type: str, result: str) -> float:
        return self.registry.get_sample_value(
            "raftkube_agent_probe_total", {"probe_type": probe_type, "result": result}) or 0


@contextlib.asynccontextmanager
async def running(p: Obj, max_execs: int = 8) -> AsyncIterator[Setup]:
    s = Setup(p, max_execs)
    task = asyncio.ensure_future(s.prober.run())
    try:
        yield s
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert not s.prober._instances  # every worker was cancelled


def probed(restart: str = "Always", **probes_: Obj) -> Obj:
    p = pod(restart=restart)
    p["spec"]["terminationGracePeriodSeconds"] = 30
    p["spec"]["containers"][0].update(probes_)
    return p


def condition(status: Obj, kind: str) -> str:
    return next(c["status"] for c in status["conditions"] if c["type"] == kind)


CAT = {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 0.1, "timeoutSeconds": 2}
MISSING = rt.ExecResult(1, b"cat: can't open '/tmp/healthy': No such file or directory\n")


async def test_a_liveness_failure_kills_and_restarts_the_container_with_events() -> None:
    async with running(probed(livenessProbe={**CAT, "failureThreshold": 2})) as s:
        status = await s.sync()
        assert status["containerStatuses"][0]["restartCount"] == 0
        s.events()
        await asyncio.sleep(0.3)
        assert s.runtime.calls[0] == ("c", ("cat", "/tmp/healthy"), 2)
        assert condition(s.status, "Ready") == "True"  # liveness says nothing of it
        s.runtime.answer = MISSING
        await s.notified()
        status = await s.sync()
        c = status["containerStatuses"][0]
        assert c["restartCount"] == 1 and "running" in c["state"]
        assert c["lastState"]["terminated"]["finishedAt"]
        told = s.events()
        failed = "Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory"
        assert told[:3] == [("Unhealthy", failed), ("Unhealthy", failed),
                            ("Killing", "Container c failed liveness probe, will be restarted")]
        assert [r for r, _ in told[3:]] == ["Pulled", "Created", "Started"]
        assert s.count("Liveness", "failed") == 2 and s.count("Liveness", "successful") >= 1
        # The new instance is probed afresh: liveness starts True again.
        (instance,) = s.prober._instances.values()
        assert instance.instance.attempt == 1 and instance.health is not None
        assert instance.health.failed is None


async def test_a_liveness_failure_restarts_an_on_failure_pod_whatever_its_exit_code() -> None:
    # The simulated container exits 0 on SIGTERM: OnFailure alone would not restart it.
    async with running(probed("OnFailure", livenessProbe={**CAT, "failureThreshold": 1})) as s:
        await s.sync()
        s.runtime.answer = MISSING
        await s.notified()
        status = await s.sync()
        assert status["phase"] == "Running"
        assert status["containerStatuses"][0]["restartCount"] == 1


async def test_a_never_pod_is_killed_and_not_restarted() -> None:
    async with running(probed("Never", livenessProbe={**CAT, "failureThreshold": 1})) as s:
        await s.sync()
        s.events()
        s.runtime.answer = MISSING
        await s.notified()
        status = await s.sync()
        assert ("Killing", "Container c failed liveness probe") in s.events()
        c = status["containerStatuses"][0]
        assert c["restartCount"] == 0 and "terminated" in c["state"]
        assert status["phase"] == "Succeeded"  # it exited 0 on SIGTERM
        assert not s.prober._instances


async def test_the_probes_grace_period_is_used_for_the_kill(monkeypatch: Any) -> None:
    graces: list[float] = []
    async with running(probed(livenessProbe={**CAT, "failureThreshold": 1,
                                             "terminationGracePeriodSeconds": 3})) as s:
        stop = s.runtime.stop_container

        async def recording(uid: str, name: str, *, grace: float) -> None:
            graces.append(grace)
            await stop(uid, name, grace=grace)

        monkeypatch.setattr(s.runtime, "stop_container", recording)
        await s.sync()
        s.runtime.answer = MISSING
        await s.notified()
        await s.sync()
        assert graces == [3.0]


async def test_an_exec_that_cannot_run_fails_the_probe() -> None:
    async with running(probed(readinessProbe={**CAT})) as s:
        s.runtime.answer = rt.RuntimeFailure("exec did not end within 2 s")
        assert condition(await s.sync(), "Ready") == "False"
        await asyncio.sleep(0.5)
        assert ("Unhealthy", "Readiness probe failed: exec did not end within 2 s") \
            in s.events()
        s.runtime.answer = rt.ExecResult(0, b"")
        await s.notified()
        assert condition(await s.sync(), "Ready") == "True"


async def test_a_startup_probe_holds_readiness_and_started_until_it_passes() -> None:
    async with running(probed(startupProbe={**CAT, "failureThreshold": 100})) as s:
        s.runtime.answer = MISSING
        status = await s.sync()
        c = status["containerStatuses"][0]
        assert (c["started"], c["ready"], condition(status, "Ready")) == (False, False, "False")
        await asyncio.sleep(0.3)
        assert s.count("Startup", "failed") >= 2
        s.runtime.answer = rt.ExecResult(0, b"")
        await s.notified()
        status = await s.sync()
        c = status["containerStatuses"][0]
        assert (c["started"], c["ready"], condition(status, "Ready")) == (True, True, "True")


async def test_a_startup_failure_past_its_threshold_kills_the_container() -> None:
    async with running(probed(startupProbe={**CAT, "failureThreshold": 2})) as s:
        s.runtime.answer = MISSING
        await s.sync()
        s.events()
        await s.notified()
        status = await s.sync()
        assert status["containerStatuses"][0]["restartCount"] == 1
        assert ("Killing", "Container c failed startup probe, will be restarted") \
            in s.events()


async def test_a_deleted_pod_is_no_longer_probed() -> None:
    async with running(probed(livenessProbe=CAT)) as s:
        await s.sync()
        assert s.prober._instances
        deleting = probed(livenessProbe=CAT)
        deleting["metadata"].update(deletionTimestamp="2023-11-14T22:14:00Z",
                                    deletionGracePeriodSeconds=30, resourceVersion="2000")
        s.f.seed(kinds.POD, deleting)
        await s.sync()
        assert not s.prober._instances


# ---- httpGet and tcpSocket against real listeners ---------------------------------------


class Web:
    """An HTTP server on 127.0.0.1 whose /healthz answers `code`."""

    def __init__(self) -> None:
        self.code = 200
        self.seen: list[dict[str, str]] = []
        self.delay = 0.0
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/moved", self.moved)
        app.router.add_get("/away", self.away)
        self.runner = web.AppRunner(app)
        self.port = 0

    async def healthz(self, request: web.Request) -> web.Response:
        self.seen.append(dict(request.headers))
        await asyncio.sleep(self.delay)
        return web.Response(status=self.code, text="not yet" if self.code >= 400 else "ok")

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/healthz")

    async def away(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.2:1/elsewhere")

    async def __aenter__(self) -> Web:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def test_an_http_readiness_probe_drives_the_ready_conditions() -> None:
    async with Web() as server:
        probe = {"httpGet": {"host": "127.0.0.1", "port": "http", "path": "/healthz",
                             "httpHeaders": [{"name": "X-Check", "value": "yes"},
                                             {"name": "Host", "value": "web.local"}]},
                 "periodSeconds": 0.1, "failureThreshold": 1}
        p = probed(readinessProbe=probe)
        p["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": server.port}]
        async with running(p) as s:
            status = await s.sync()  # ready is False until the first success
            assert (condition(status, "Ready"), condition(status, "ContainersReady")) == \
                ("False", "False")
            await s.notified()
            status = await s.sync()
            assert (condition(status, "Ready"), condition(status, "ContainersReady")) == \
                ("True", "True")
            assert status["containerStatuses"][0]["ready"] is True
            headers = server.seen[0]
            assert (headers["X-Check"], headers["Host"], headers["User-Agent"]) == \
                ("yes", "web.local", prober.USER_AGENT)
            server.code = 503
            await s.notified()
            status = await s.sync()
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")
            assert ready["status"] == "False" and ready["reason"] == "ContainersNotReady"
            assert ("Unhealthy", "Readiness probe failed: HTTP probe failed with "
                                 "statuscode: 503") in s.events()
            assert status["containerStatuses"][0]["restartCount"] == 0  # never killed
            server.code = 200
            await s.notified()
            assert condition(await s.sync(), "Ready") == "True"


async def test_a_tcp_liveness_probe_fails_when_nothing_listens() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = {"tcpSocket": {"host": "127.0.0.1", "port": port}, "periodSeconds": 0.1,
             "failureThreshold": 2}
    try:
        async with running(probed(livenessProbe=probe)) as s:
            await s.sync()
            await asyncio.sleep(0.3)
            assert s.count("Liveness", "successful") >= 2
            server.close()
            await server.wait_closed()
            s.events()
            await s.notified()
            assert (await s.sync())["containerStatuses"][0]["restartCount"] == 1
            told = s.events()
            assert told[0][0] == "Unhealthy"
            assert told[0][1].startswith(f"Liveness probe failed: dial tcp 127.0.0.1:{port}: "
                                         "connect: ")
    finally:
        server.close()


async def test_http_probe_answers() -> None:
    async with Web() as server, aiohttp.ClientSession() as session:
        def get(path: str, timeout: float = 5.0) -> Any:
            return prober.http_probe(session, probes.HTTPGet(port=server.port, path=path),
                                     "127.0.0.1", server.port, timeout)

        assert (await get("/healthz")).result is probes.Result.SUCCESS
        server.code = 500
        failed = await get("/healthz")
        assert (failed.result, failed.output) == (probes.Result.FAILURE,
                                                  "HTTP probe failed with statuscode: 500")
        moved = await get("/moved")  # followed on the same host: to the failing page
        assert moved.result is probes.Result.FAILURE
        away = await get("/away")  # elsewhere: passes with a warning
        assert (away.result, away.warning) == (probes.Result.SUCCESS, True)
        assert (await get("/nothing")).output == "HTTP probe failed with statuscode: 404"
        server.code, server.delay = 200, 1.0
        slow = await get("/healthz", timeout=0.2)
        assert slow.result is probes.Result.FAILURE and "deadline exceeded" in slow.output
    refused = await prober.tcp_probe("127.0.0.1", server.port, 1.0)  # the server is gone
    assert refused.result is probes.Result.FAILURE
    assert refused.output.startswith(f"dial tcp 127.0.0.1:{server.port}: connect: ")


async def test_a_probe_that_cannot_run_is_told_once_and_never_kills() -> None:
    grpc = {"grpc": {"port": 9000}, "periodSeconds": 0.05, "failureThreshold": 1}
    async with running(probed(livenessProbe=grpc)) as s:
        await s.sync()
        s.events()
        await asyncio.sleep(0.4)
        assert s.count("Liveness", "unknown") >= 3
        assert s.events() == [("Unhealthy", "Liveness probe errored: grpc probes are not "
                                            "supported by this agent")]
        assert (await s.sync())["containerStatuses"][0]["restartCount"] == 0


def test_probe_results_are_served_with_the_agents_metrics() -> None:
    served = metrics.AgentMetrics()
    counts = prober.ProbeMetrics(served.registry)
    counts.observe(probes.ProbeType.LIVENESS, probes.Result.FAILURE, 0.01)
    body, _ = served.render({})
    assert b'raftkube_agent_probe_total{probe_type="Liveness",result="failed"} 1.0' in body
    assert b"raftkube_agent_probe_duration_seconds_bucket" in body


async def test_an_agent_restart_keeps_a_ready_container_ready() -> None:
    first = Setup(probed(readinessProbe={**CAT, "failureThreshold": 3}))
    status = await first.sync()
    first.prober.forget("uid-p-0001")  # that agent is gone
    ran = {**probed(readinessProbe={**CAT, "failureThreshold": 3}), "status": status}
    ran["status"]["containerStatuses"][0]["ready"] = True  # as the probe had said
    async with running(ran) as s:  # a new agent: the container outlived the old one
        await s.runtime.recover([ran])
        s.runtime.answer = MISSING
        status = await s.sync()
        assert condition(status, "Ready") == "True" and s.runtime.starts == 0
        await s.notified()  # failureThreshold failures later
        assert condition(await s.sync(), "Ready") == "False"


async def test_a_probe_that_breaks_is_an_error_and_probing_goes_on() -> None:
    async with running(probed(readinessProbe=CAT)) as s:
        s.runtime.answer = ValueError("a bug")  # not a RuntimeFailure: unexpected
        await s.sync()
        s.events()
        await asyncio.sleep(0.3)
        assert s.events() == [("Unhealthy", "Readiness probe errored: ValueError: a bug")]
        s.runtime.answer = rt.ExecResult(0, b"")
        await s.notified()
        assert condition(await s.sync(), "Ready") == "True"


async def test_exec_probes_take_turns_past_the_limit() -> None:
    p = pod(containers=("a", "b", "c"))
    for c in p["spec"]["containers"]:
        c["readinessProbe"] = CAT
    async with running(p, max_execs=2) as s:
        s.runtime.delay = 0.2
        await s.sync()
        await asyncio.sleep(1.0)
        assert len(s.runtime.calls) >= 4 and s.runtime.peak == 2
        assert s.count("Readiness", "failed") == 0  # waiting for a turn is no timeout


def with_sidecar(restart: str = "Always", **probes_: Obj) -> Obj:
    """A pod whose sidecar `s` (an init container with restartPolicy Always) has the
    probes; its app container `c` has none."""
    p = pod(restart=restart, init=("s",))
    p["spec"]["terminationGracePeriodSeconds"] = 30
    p["spec"]["initContainers"][0].update(restartPolicy="Always", **probes_)
    return p


async def test_a_sidecars_liveness_failure_restarts_it_with_events() -> None:
    """Even in a Never pod: a sidecar restarts whatever the pod's policy."""
    async with running(with_sidecar("Never", livenessProbe={**CAT, "failureThreshold": 1})
                       ) as s:
        status = await s.sync()
        assert "running" in status["containerStatuses"][0]["state"]
        s.events()
        s.runtime.answer = MISSING
        await s.notified()
        status = await s.sync()
        (side,) = status["initContainerStatuses"]
        assert side["restartCount"] == 1 and "running" in side["state"]
        told = s.events()
        assert ("Killing", "Container s failed liveness probe, will be restarted") in told
        assert s.runtime.calls[0][0] == "s"
        assert status["containerStatuses"][0]["restartCount"] == 0  # the app runs on


async def test_a_sidecars_startup_probe_holds_the_app_until_it_passes() -> None:
    async with running(with_sidecar(startupProbe={**CAT, "failureThreshold": 100})) as s:
        s.runtime.answer = MISSING
        status = await s.sync()
        assert status["initContainerStatuses"][0]["started"] is False
        assert status["containerStatuses"][0]["state"]["waiting"]["reason"] == \
            "PodInitializing"
        assert condition(status, "Initialized") == "False"
        s.runtime.answer = rt.ExecResult(0, b"")
        await s.notified()
        status = await s.sync()
        assert status["initContainerStatuses"][0]["started"] is True
        assert "running" in status["containerStatuses"][0]["state"]
        assert condition(status, "Ready") == "True"


async def test_a_sidecars_readiness_probe_drives_the_pods_ready_condition() -> None:
    async with running(with_sidecar(readinessProbe=CAT)) as s:
        status = await s.sync()
        assert condition(status, "ContainersReady") == "False"
        await s.notified()  # it passed
        status = await s.sync()
        assert condition(status, "Ready") == "True"
        assert status["initContainerStatuses"][0]["ready"] is True
        s.runtime.answer = MISSING
        await s.notified()
        status = await s.sync()
        assert condition(status, "Ready") == "False"
        assert status["initContainerStatuses"][0]["ready"] is False
        assert "running" in status["initContainerStatuses"][0]["state"]  # not restarted


async def test_after_an_agent_restart_a_started_sidecar_holds_nothing_up() -> None:
    """The sidecar's startup probe had passed (its status says started) but the next
    init container had not run when the agent went: the new agent resumes the probe
    from that status and runs the next init container in its first sync, even though
    the probe would fail now."""
    def spec() -> Obj:
        p = pod(init=("s", "i2"))
        p["spec"]["initContainers"][0].update(
            restartPolicy="Always", startupProbe={**CAT, "failureThreshold": 100})
        return p

    first = Setup(spec())
    first.runtime.answer = MISSING
    status = await first.sync()
    assert [s["name"] for s in status["initContainerStatuses"]
            if "running" in s["state"]] == ["s"]
    first.prober.forget("uid-p-0001")  # that agent is gone
    ran = {**spec(), "status": status}
    ran["status"]["initContainerStatuses"][0]["started"] = True  # as the probe had said
    async with running(ran) as s:
        await asyncio.sleep(0)  # the prober runs (nothing else here waits)
        await s.runtime.recover([ran])
        s.runtime.answer = MISSING
        status = await s.sync()
        inits = {c["name"]: c for c in status["initContainerStatuses"]}
        assert inits["s"]["started"] is True and inits["s"]["restartCount"] == 0
        assert inits["i2"]["state"]["terminated"]["exitCode"] == 0
        assert "running" in status["containerStatuses"][0]["state"]
