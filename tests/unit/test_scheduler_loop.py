"""The scheduler's leader loop over seeded caches: binds, assumptions, unschedulable pods."""

from __future__ import annotations

import random
from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.client import workqueue
from raftkube.scheduler.loop import Scheduler
from tests.unit.controller_fixture import Fixture, conflict

pytestmark = pytest.mark.unit


def node(name: str, cpu: str = "4", ready: bool = True, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": spec,
            "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
                       "conditions": [{"type": "Ready",
                                       "status": "True" if ready else "False"}]}}


def pod(name: str, cpu: str = "1", node_name: str = "", **meta: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i", "resources": {
        "requests": {"cpu": cpu}}}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", **meta},
            "spec": spec, "status": {"phase": "Pending"}}


def make(f: Fixture) -> Scheduler:
    s = Scheduler(client=f.ctx.client, informers=f.informers, events=f.events,
                  rng=random.Random(1), clock=f.ctx.clock)
    for n in f.informers.informer(kinds.NODE).cache.list():
        s._node_changed(n)
    s.queue = workqueue.WorkQueue()  # what the seeded pods queued: the tests reconcile
    return s


async def test_a_pending_pod_is_bound_and_counted_before_the_binding_comes_back() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", cpu="2"), node("n2", cpu="2"))
    f.seed(kinds.POD, pod("a", cpu="2"), pod("b", cpu="2"), pod("c", cpu="2"))
    s = make(f)
    placed = []
    for name in ("a", "b"):
        actions = await f.run(s, f"ns/{name}")
        assert [(a.verb, a.name) for a in actions] == [("bind", name)]
        placed.append(actions[0].body)
    assert sorted(placed) == ["n1", "n2"]  # the second decision counted the first
    actions = await f.run(s, "ns/c")  # no room left anywhere
    assert [(a.verb, a.name) for a in actions] == [("update_status", "c")]
    cond = actions[0].body["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == \
        ("PodScheduled", "False", "Unschedulable")
    assert cond["message"] == "0/2 nodes are available: 2 Insufficient cpu."
    assert f.recorded_events()[-1] == ("Warning", "FailedScheduling", cond["message"])
    assert "ns/c" in s.unschedulable


async def test_an_unschedulable_pod_is_retried_when_a_node_joins() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", cpu="1"))
    f.seed(kinds.POD, pod("big", cpu="2"))
    s = make(f)
    await f.run(s, "ns/big")
    assert "ns/big" in s.unschedulable and len(s.queue) == 0
    f.seed(kinds.NODE, node("n2", cpu="4"))
    s._node_changed(node("n2", cpu="4"))
    assert len(s.queue) == 1 and not s.unschedulable
    actions = await f.run(s, "ns/big")
    assert [(a.verb, a.body) for a in actions] == [("bind", "n2")]


async def test_the_same_unschedulable_message_is_not_written_twice() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", ready=False))
    stuck = pod("p")
    stuck["status"]["conditions"] = [{"type": "PodScheduled", "status": "False",
                                      "reason": "Unschedulable",
                                      "message": "0/1 nodes are available: 1 node(s) had "
                                                 "untolerated taint "
                                                 "{node.kubernetes.io/not-ready: }."}]
    f.seed(kinds.POD, stuck)
    assert await f.run(make(f), "ns/p") == []


async def test_a_conflicting_bind_forgets_its_assumption() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", cpu="1"))
    f.seed(kinds.POD, pod("a", cpu="1"), pod("b", cpu="1"))
    s = make(f)
    f.client.fail[("bind", "a")] = conflict("a")  # bound meanwhile by someone else
    await f.run(s, "ns/a")
    assert s.assumed == {} and s.infos["n1"].pods == 0
    assert [(a.verb, a.name) for a in await f.run(s, "ns/b")] == [("bind", "b")]


async def test_pods_that_are_not_ours_are_left_alone() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    other = pod("other")
    other["spec"]["schedulerName"] = "my-scheduler"
    gone = pod("gone", deletionTimestamp="2024-01-01T00:00:00Z")
    f.seed(kinds.POD, other, gone, pod("bound", node_name="n1"))
    s = make(f)
    for key in ("ns/other", "ns/gone", "ns/bound", "ns/missing"):
        assert await f.run(s, key) == [], key


async def test_a_heartbeat_does_not_wake_the_unschedulable_pods() -> None:
    # Agents post their node's status every few seconds; with many nodes, waking every
    # parked pod on each post would keep the scheduler busy deciding the same thing.
    f = Fixture()
    f.seed(kinds.NODE, node("n1", cpu="1"))
    f.seed(kinds.POD, pod("big", cpu="2"))
    s = make(f)
    await f.run(s, "ns/big")
    old = node("n1", cpu="1")
    beat = node("n1", cpu="1")
    beat["status"]["conditions"][0]["lastHeartbeatTime"] = "2024-01-01T00:00:10Z"
    s._node_updated(old, beat)
    assert "ns/big" in s.unschedulable and len(s.queue) == 0
    bigger = node("n1", cpu="4")  # what counts for scheduling changed: looked at again
    f.seed(kinds.NODE, bigger)  # the informer's cache has it before its handlers hear
    s._node_updated(beat, bigger)
    assert not s.unschedulable and len(s.queue) == 1
    assert s.infos["n1"].allocatable["cpu"] == 4000


async def test_a_bound_pods_status_post_does_not_rebuild_its_node() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", cpu="4"))
    f.seed(kinds.POD, pod("a", cpu="1", node_name="n1"))
    s = make(f)
    info = s.infos["n1"]
    assert info.requested["cpu"] == 1000
    old = pod("a", cpu="1", node_name="n1")
    running = {**old, "status": {"phase": "Running", "podIP": "10.0.0.2"}}
    s._pod_updated(old, running)
    assert s.infos["n1"] is info  # nothing it counts changed: not rebuilt
    relabelled = {**running, "metadata": {**running["metadata"], "labels": {"x": "y"}}}
    s._pod_updated(running, relabelled)
    assert s.infos["n1"] is not info  # labels count (spreading, affinity)
    finished = {**relabelled, "status": {"phase": "Succeeded"}}
    f.informers.informer(kinds.POD).cache.put(finished)
    s._pod_updated(relabelled, finished)
    assert s.infos["n1"].requested["cpu"] == 0  # a finished pod holds nothing
