"""The kubelet's reconcile over a seeded pod cache and a simulated runtime: what it
writes, what it starts and stops, and when it looks again."""

from __future__ import annotations

import asyncio
import copy
import ipaddress
from collections import deque
from typing import Any

import pytest

from raftkube.agent import actions, simulated
from raftkube.agent import runtime as rt
from raftkube.agent.kubelet import Kubelet
from raftkube.api import kinds, validation
from raftkube.client import events as ev
from raftkube.client import workqueue
from raftkube.client.errors import ApiError
from tests.unit.agent_support import Clock, pod, runtime
from tests.unit.controller_fixture import Fixture, conflict

pytestmark = pytest.mark.unit


class Setup:
    def __init__(self, *pods: dict[str, Any], base: float = 10) -> None:
        self.f = Fixture()
        self.clock = Clock(self.f.now)
        self.f.seed(kinds.POD, *pods)
        self.runtime = runtime(self.clock)
        self.kubelet = Kubelet(
            node_name="n1", host_ip="192.0.2.10", client=self.f.client,  # type: ignore[arg-type]
            runtime=self.runtime, prober=simulated.SimulatedProber(), events=self.f.events,
            clock=self.clock, backoff=actions.CrashBackoff(base=base, cap=300),
            informer=self.f.informers.informer(kinds.POD))
        self.kubelet.queue = workqueue.WorkQueue()  # what seeding queued: tests reconcile

    async def run(self, key: str = "ns/p") -> list[Any]:
        return await self.f.run(self.kubelet, key)

    def cache(self, p: dict[str, Any]) -> None:
        self.f.seed(kinds.POD, p)

    def reasons(self) -> list[str]:
        return [reason for _, reason, _ in self.f.recorded_events()]


def written(actions_: list[Any]) -> dict[str, Any]:
    assert [(a.verb, a.name) for a in actions_] == [("update_status", "p")], actions_
    status: dict[str, Any] = actions_[0].body["status"]
    return status


async def test_a_new_pod_runs_and_its_status_is_written_once() -> None:
    s = Setup(pod())
    status = written(await s.run())
    assert status["phase"] == "Running"
    assert (status["podIP"], status["hostIP"]) == ("10.244.1.2", "192.0.2.10")
    assert s.reasons() == ["Pulled", "Created", "Started"]
    # Nothing changed: the status the kubelet wrote is what it would write again, even
    # though the informer has not brought that write back yet.
    assert await s.run() == []
    assert s.runtime.starts == 1


async def test_the_status_write_carries_the_version_it_read() -> None:
    s = Setup(pod())
    body = (await s.run())[0].body
    assert body["metadata"]["resourceVersion"] == "10"
    s.f.client.fail[("update_status", "p")] = conflict("p")
    s.clock.advance(1)
    s.runtime._runs.clear()  # something changed meanwhile: it writes, and is refused
    s.runtime._sandboxes.clear()
    with pytest.raises(ApiError):
        await s.run()


async def test_readiness_waits_for_the_probes_initial_delay() -> None:
    s = Setup(pod(ready_delay=3))
    status = written(await s.run())
    assert [c["status"] for c in status["conditions"] if c["type"] == "Ready"] == ["False"]
    assert s.kubelet.queue._waiting  # it looks again when the delay has passed
    s.clock.advance(3)
    status = written(await s.run())
    assert [c["status"] for c in status["conditions"] if c["type"] == "Ready"] == ["True"]


async def test_a_crash_loop_restarts_at_once_then_backs_off() -> None:
    s = Setup(pod(exit_after=1, exit_code=1))
    await s.run()
    s.clock.advance(1.5)  # the first exit: restarted at once
    status = written(await s.run())
    assert status["containerStatuses"][0]["restartCount"] == 1
    assert "running" in status["containerStatuses"][0]["state"]
    s.f.recorded_events()
    s.clock.advance(1.5)  # the second: it waits 10 s
    status = written(await s.run())
    c = status["containerStatuses"][0]
    assert c["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert c["lastState"]["terminated"]["exitCode"] == 1 and c["restartCount"] == 1
    assert status["phase"] == "Running"
    assert s.reasons() == ["BackOff"]
    assert await s.run() == [] and s.reasons() == []  # told once
    s.clock.advance(10)
    status = written(await s.run())
    assert status["containerStatuses"][0]["restartCount"] == 2
    assert s.runtime.starts == 3


@pytest.mark.parametrize(("code", "phase"), [(0, "Succeeded"), (3, "Failed")])
async def test_a_never_pod_ends_with_its_exit_code(code: int, phase: str) -> None:
    s = Setup(pod(restart="Never", exit_after=2, exit_code=code))
    await s.run()
    s.clock.advance(2)
    status = written(await s.run())
    assert status["phase"] == phase
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == code
    # Once the API says it ended, it is never run again, even if the runtime forgot it.
    s.cache(pod(restart="Never", exit_after=2, exit_code=code, phase=phase))
    s.runtime._sandboxes.clear()
    s.runtime._runs.clear()
    assert await s.run() == [] and s.runtime.starts == 1


async def test_an_ended_pod_has_its_sandbox_stopped_once() -> None:
    """Kubernetes stops the sandbox of a pod that ended (its IP goes back to the node)
    and keeps its exited containers, for their logs, until the pod is deleted."""
    s = Setup(pod(restart="Never", exit_after=2, exit_code=0))
    await s.run()
    s.clock.advance(2)
    status = written(await s.run())
    assert status["phase"] == "Succeeded"
    stops: list[str] = []
    stop = s.runtime.stop_sandbox

    async def counted(pod_uid: str) -> None:
        stops.append(pod_uid)
        await stop(pod_uid)

    s.runtime.stop_sandbox = counted  # type: ignore[method-assign]
    s.cache(pod(restart="Never", exit_after=2, exit_code=0, phase="Succeeded"))
    assert await s.run() == [] and await s.run() == []
    assert stops == ["uid-p-0001"]
    (state,) = await s.runtime.pods()
    assert not state.sandbox.ready and [c.name for c in state.containers] == ["c"]
    assert s.runtime.starts == 1


async def test_a_deleted_pod_is_stopped_then_finished_with_grace_0() -> None:
    s = Setup(pod())
    await s.run()
    s.f.recorded_events()
    deleting = pod()
    deleting["metadata"].update(deletionTimestamp="2023-11-14T22:14:00Z",
                                deletionGracePeriodSeconds=30, resourceVersion="2000")
    s.cache(deleting)
    assert await s.run() == []  # its containers are stopped in the background
    await s.kubelet._terminating["uid-p-0001"]
    assert s.kubelet.queue._queue == deque(["ns/p"])  # then it is looked at again
    acts = await s.run()
    assert [(a.verb, a.name, a.body["grace"], a.body["uid"]) for a in acts] == \
        [("delete", "p", 0, "uid-p-0001")]
    assert await s.runtime.pods() == []
    assert s.reasons() == ["Killing"]


def deleting(name: str = "p") -> dict[str, Any]:
    out = pod(name)
    out["metadata"].update(deletionTimestamp="2023-11-14T22:14:00Z",
                           deletionGracePeriodSeconds=30, resourceVersion="2000")
    return out


class SlowRemoval:
    """The runtime's remove_pod held until `release` (a long grace period)."""

    def __init__(self, s: Setup) -> None:
        self.entered = 0
        self.release = asyncio.Event()
        self._remove = s.runtime.remove_pod
        s.runtime.remove_pod = self  # type: ignore[method-assign]

    async def __call__(self, pod_uid: str, *, grace: float) -> None:
        self.entered += 1
        await self.release.wait()
        await self._remove(pod_uid, grace=grace)


async def until(what: Any) -> None:
    async def poll() -> None:
        while not await what():
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), 60)


async def test_a_terminating_pod_does_not_hold_a_worker() -> None:
    """One worker: while pod p spends its grace period stopping, pod q still starts;
    when p's containers are gone, p is enqueued again and deleted with grace 0."""
    s = Setup(pod())
    await s.run()
    slow = SlowRemoval(s)
    s.cache(deleting())
    s.cache(pod("q"))
    s.f.client.actions.clear()
    workers = asyncio.create_task(workqueue.run_workers(s.kubelet.queue, s.kubelet.reconcile,
                                                        workers=1))

    async def q_runs() -> bool:
        return any(st.sandbox.name == "q" for st in await s.runtime.pods())

    async def p_deleted() -> bool:
        return any(a.verb == "delete" for a in s.f.client.actions)

    try:
        s.kubelet.queue.add("ns/p")
        await until(lambda: asyncio.sleep(0, slow.entered == 1))
        s.kubelet.queue.add("ns/q")
        await until(q_runs)
        s.kubelet.queue.add("ns/p")  # another event: no second termination
        await until(lambda: asyncio.sleep(0, not s.kubelet.queue._processing))
        assert slow.entered == 1 and not await p_deleted()
        slow.release.set()
        await until(p_deleted)
        assert [(a.name, a.body["grace"], a.body["uid"]) for a in s.f.client.actions
                if a.verb == "delete"] == [("p", 0, "uid-p-0001")]
        assert [st.sandbox.name for st in await s.runtime.pods()] == ["q"]
        assert s.reasons().count("Killing") == 1
    finally:
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)
        await s.kubelet.cancel_terminations()


async def test_a_termination_that_fails_is_retried_after_a_pause() -> None:
    s = Setup(pod())
    await s.run()

    async def failing(pod_uid: str, *, grace: float) -> None:
        raise rt.RuntimeFailure("the engine is away")

    s.runtime.remove_pod = failing  # type: ignore[method-assign]
    s.cache(deleting())
    assert await s.run() == []
    await s.kubelet._terminating["uid-p-0001"]
    assert not s.kubelet._terminating and "ns/p" in s.kubelet.queue._waiting
    s.kubelet.queue.shutdown()


async def test_terminations_are_cancelled_on_shutdown() -> None:
    s = Setup(pod())
    await s.run()
    slow = SlowRemoval(s)
    s.cache(deleting())
    assert await s.run() == []  # not deleted yet: its containers are stopping
    await until(lambda: asyncio.sleep(0, slow.entered == 1))
    task = s.kubelet._terminating["uid-p-0001"]
    await s.kubelet.cancel_terminations()
    assert task.cancelled() and not s.kubelet._terminating


async def test_a_pod_gone_from_the_api_is_removed_from_the_runtime() -> None:
    s = Setup(pod())
    await s.run()
    s.f.informers.informer(kinds.POD).cache.remove("ns/p")
    assert await s.run() == []
    assert await s.runtime.pods() == []


async def test_a_pod_replaced_by_one_of_the_same_name_starts_afresh() -> None:
    s = Setup(pod())
    await s.run()
    s.cache(pod(uid="uid-p-0002"))
    status = written(await s.run())
    assert [p.sandbox.uid for p in await s.runtime.pods()] == ["uid-p-0002"]
    assert status["containerStatuses"][0]["containerID"] == \
        simulated.container_id("uid-p-0002", "c", 0, s.clock.now)
    assert s.runtime.starts == 2


async def test_init_containers_run_first_in_one_reconcile() -> None:
    s = Setup(pod(init=("setup", "migrate")))
    status = written(await s.run())
    assert [c["state"]["terminated"]["reason"] for c in status["initContainerStatuses"]] \
        == ["Completed", "Completed"]
    assert status["phase"] == "Running"


async def test_the_relister_enqueues_pods_whose_containers_changed() -> None:
    s = Setup(pod(exit_after=5))
    await s.run()
    await s.kubelet.relist()
    s.kubelet.queue = workqueue.WorkQueue()
    await s.kubelet.relist()
    assert len(s.kubelet.queue) == 0  # nothing changed
    s.clock.advance(5)
    await s.kubelet.relist()
    assert await s.kubelet.queue.get() == "ns/p"


async def test_the_runtimes_change_events_list_at_once_and_a_failure_falls_back() -> None:
    """With events arriving, a change is listed when told, not after the relist period
    (an hour here); when the stream fails, listing falls back to the relist period."""
    s = Setup(pod())
    told: asyncio.Queue[BaseException | None] = asyncio.Queue()
    subscriptions = 0

    async def changes() -> Any:
        nonlocal subscriptions
        subscriptions += 1
        if subscriptions > 1:  # the engine stays away
            raise rt.RuntimeFailure("cannot connect to the engine")
        yield None  # subscribed
        while True:
            item = await told.get()
            if item is not None:
                raise item
            yield None

    listed = 0
    pods = s.runtime.pods

    async def counting() -> list[rt.PodState]:
        nonlocal listed
        listed += 1
        return await pods()

    s.runtime.changes = changes  # type: ignore[method-assign]
    s.runtime.pods = counting  # type: ignore[method-assign]
    s.kubelet.relist_period = s.kubelet.evented_relist_period = 3600
    tasks = [asyncio.create_task(s.kubelet._relist_forever()),
             asyncio.create_task(s.kubelet._changes_forever())]

    async def until(predicate: Any) -> None:
        for _ in range(200):
            if predicate():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("not within 2 s")

    try:
        await until(lambda: listed == 1 and s.kubelet._evented)  # the subscription
        await told.put(None)
        await until(lambda: listed == 2)  # a change
        s.kubelet.relist_period = 0.01
        await told.put(rt.RuntimeFailure("the engine went away"))
        await until(lambda: subscriptions >= 2)  # it tries again after a pause
        assert not s.kubelet._evented
        before = listed  # and lists every relist_period meanwhile, not every hour
        await until(lambda: listed >= before + 3)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_status_already_current_in_the_api_is_not_written() -> None:
    s = Setup(pod())
    status = written(await s.run())
    other = Setup(copy.deepcopy({**pod(), "status": status}))
    other.clock.now = s.clock.now
    await other.runtime.recover([{**pod(), "status": status}])
    assert await other.run() == [] and other.runtime.starts == 0


async def test_a_runtime_failure_is_told_and_retried() -> None:
    s = Setup(pod("a", uid="ua"), pod("b", uid="ub"))
    s.runtime.network = ipaddress.ip_network("10.244.1.0/32")  # one address
    await s.run("ns/a")
    s.f.recorded_events()
    with pytest.raises(Exception, match="no free pod address"):
        await s.run("ns/b")
    assert s.f.recorded_events()[-1][:2] == ("Warning", "FailedCreatePodSandBox")


def test_a_kubelets_events_name_its_node() -> None:
    recorder = ev.EventRecorder(None, "kubelet", host="n1",  # type: ignore[arg-type]
                                clock=lambda: 1.0)
    recorder.event(pod(), "Normal", "Started", "Started container c")
    recorder.event(pod(), "Normal", "Started", "Started container c")
    bodies = [recorder._queue.get_nowait()[1] for _ in range(2)]
    assert bodies[0]["source"] == {"component": "kubelet", "host": "n1"}
    assert bodies[0]["metadata"]["name"] != bodies[1]["metadata"]["name"]
    assert bodies[0]["metadata"]["name"].startswith("p.")
    assert validation.validate(bodies[0]) == []


async def test_a_pod_that_does_not_fit_is_rejected_for_good() -> None:
    s = Setup(pod("a", uid="ua"), pod("b", uid="ub"), pod("c", uid="uc", phase="Succeeded"))
    s.kubelet.allocatable = {"cpu": "4", "memory": "8Gi", "pods": "1"}
    await s.run("ns/a")  # admitted: it counts before its status comes back
    s.f.recorded_events()
    acts = await s.run("ns/b")
    assert [(a.verb, a.name) for a in acts] == [("update_status", "b")]
    status = acts[0].body["status"]
    assert (status["phase"], status["reason"]) == ("Failed", "OutOfpods")
    assert status["message"] == ("Pod was rejected: Node didn't have enough resource: "
                                 "pods, requested: 1, used: 1, capacity: 1")
    assert s.f.recorded_events() == [("Warning", "OutOfpods", status["message"])]
    assert [p.sandbox.uid for p in await s.runtime.pods()] == ["ua"]
    # Once a is gone, a new pod fits (the ended pod c never counted).
    s.f.informers.informer(kinds.POD).cache.remove("ns/a")
    await s.run("ns/a")
    s.cache(pod("d", uid="ud"))
    assert (await s.run("ns/d"))[0].body["status"]["phase"] == "Running"
