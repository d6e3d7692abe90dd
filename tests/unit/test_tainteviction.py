"""The taint eviction controller over seeded caches and a set clock: when a pod on a
tainted node goes, what it is told, and what a read through the API stops; and pod GC's
table of pods nobody else will finish deleting."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkube.api import kinds, taints
from raftkube.client import workqueue
from raftkube.controllers import base, podgc
from raftkube.controllers.tainteviction import TaintEviction, eviction_due
from tests.unit.controller_fixture import T0, Fixture

pytestmark = pytest.mark.unit
UNREACHABLE = {"key": taints.UNREACHABLE, "effect": "NoExecute"}


def node(name: str, *node_taints: dict[str, Any], ready: str = "Unknown") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "uid": f"u-{name}"},
            "spec": {"taints": list(node_taints)},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def pod(name: str, on: str = "n1", *tolerations: dict[str, Any], **meta: Any
        ) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}]}
    if on:
        spec["nodeName"] = on
    if tolerations:
        spec["tolerations"] = list(tolerations)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}", **meta},
            "spec": spec, "status": {"phase": "Running"}}


def make(f: Fixture) -> TaintEviction:
    c = TaintEviction(f.ctx)
    c.queue = workqueue.WorkQueue()
    return c


async def test_a_pod_goes_when_its_default_toleration_runs_out() -> None:
    f = Fixture(options=base.Options(eviction_timeout=30))
    f.seed(kinds.NODE, node("n1", UNREACHABLE))
    f.seed(kinds.POD, pod("p"))
    c = make(f)
    assert await f.run(c, "ns/p") == []  # seen tainted now: 30 s to go
    f.now = T0 + 29
    assert await f.run(c, "ns/p") == []
    f.now = T0 + 30
    actions = await f.run(c, "ns/p")
    assert [(a.verb, a.name, a.body["uid"], a.body["grace"]) for a in actions] == [
        ("delete", "p", "u-p", None)]  # its own grace period; its uid as precondition
    assert f.client.reads == [("nodes", "", "n1")]  # the taint confirmed first
    assert f.recorded_events() == [("Normal", "TaintManagerEviction",
                                    "Marking for deletion Pod ns/p")]


async def test_the_tuned_flag_and_the_pods_own_toleration_decide_the_wait() -> None:
    f = Fixture(options=base.Options(eviction_timeout=5))
    f.seed(kinds.NODE, node("n1", UNREACHABLE))
    quick = {"key": taints.UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 1}
    forever = {"key": taints.UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}
    f.seed(kinds.POD, pod("default"), pod("quick", "n1", quick), pod("stays", "n1", forever))
    c = make(f)
    for key in ("ns/default", "ns/quick", "ns/stays"):
        assert await f.run(c, key) == []
    f.now = T0 + 1
    assert [a.name for a in await f.run(c, "ns/quick")] == ["quick"]
    assert await f.run(c, "ns/default") == []
    f.now = T0 + 5
    assert [a.name for a in await f.run(c, "ns/default")] == ["default"]
    f.now = T0 + 10_000
    assert await f.run(c, "ns/stays") == []


async def test_an_untolerated_taint_evicts_at_once() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", {"key": "maintenance", "effect": "NoExecute"}))
    f.seed(kinds.POD, pod("p"))
    assert [a.verb for a in await f.run(make(f), "ns/p")] == ["delete"]


async def test_a_node_whose_taint_is_gone_behind_a_stale_cache_evicts_nothing() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", UNREACHABLE))
    f.seed(kinds.POD, pod("p"))
    f.client.live[("nodes", "", "n1")] = node("n1", ready="True")  # back already
    c = make(f)
    await f.run(c, "ns/p")
    f.now = T0 + 31
    assert await f.run(c, "ns/p") == []
    # Not at once, which would spin on the same stale cache (and the same confirmed
    # read) without a pause: the node's update re-queues it, and a re-check comes once
    # the read is old enough to be made again.
    assert len(c.queue) == 0
    assert "ns/p" in c.queue._waiting


class Spun(BaseException):
    pass


async def test_a_stale_cache_makes_no_busy_loop() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", UNREACHABLE))
    f.seed(kinds.POD, pod("p"))
    f.client.live[("nodes", "", "n1")] = node("n1", ready="True")
    c = make(f)
    await f.run(c, "ns/p")  # seen tainted now
    f.now = T0 + 31  # the toleration has run out (the clock stays there)
    turns = 0
    reconcile = c.reconcile

    async def counted(key: str) -> None:
        nonlocal turns
        turns += 1
        if turns > 1000:
            raise Spun  # a loop that never suspends cannot be cancelled
        await reconcile(key)

    c.reconcile = counted  # type: ignore[method-assign]
    c.queue.add("ns/p")
    workers = asyncio.ensure_future(c.run())
    await asyncio.sleep(0.3)
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    assert turns == 1 and f.client.actions == []


async def test_an_eviction_is_cancelled_when_the_taint_goes() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", UNREACHABLE))
    f.seed(kinds.POD, pod("p"))
    c = make(f)
    await f.run(c, "ns/p")
    f.seed(kinds.NODE, node("n1", ready="True"))
    f.now = T0 + 40
    assert await f.run(c, "ns/p") == []
    assert f.recorded_events() == [("Normal", "TaintManagerEviction",
                                    "Cancelling deletion of Pod ns/p")]
    f.seed(kinds.NODE, node("n1", UNREACHABLE))  # dark again: a fresh 30 s
    await f.run(c, "ns/p")
    f.now = T0 + 69
    assert await f.run(c, "ns/p") == []


async def test_pods_being_deleted_or_unbound_are_not_evicted() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", {"key": "maintenance", "effect": "NoExecute"}))
    f.seed(kinds.POD, pod("going", deletionTimestamp="2024-01-01T00:00:00Z"), pod("free", ""))
    c = make(f)
    assert await f.run(c, "ns/going") == [] and await f.run(c, "ns/free") == []


async def test_a_node_taint_change_queues_its_pods() -> None:
    f = Fixture()
    f.seed(kinds.POD, pod("a"), pod("b"), pod("elsewhere", "n2"))
    c = make(f)
    c._node_updated(node("n1"), node("n1", UNREACHABLE))
    assert sorted([await c.queue.get(), await c.queue.get()]) == ["ns/a", "ns/b"]
    assert len(c.queue) == 0


@pytest.mark.parametrize(("node_taints", "tolerations", "due"), [
    ([], [], None),
    ([UNREACHABLE], [], 100.0 + 30),
    ([UNREACHABLE, {"key": "x", "effect": "NoExecute"}], [], 100.0),
    ([UNREACHABLE], [{"operator": "Exists"}], None),
    ([UNREACHABLE], [{"key": taints.UNREACHABLE, "operator": "Exists",
                      "tolerationSeconds": 0}], 100.0),
])
def test_eviction_due(node_taints: list[dict[str, Any]], tolerations: list[dict[str, Any]],
                      due: float | None) -> None:
    p = pod("p", "n1", *tolerations)
    assert eviction_due(p, node_taints, first_seen=100.0, not_ready=30, unreachable=30) == due


OUT = {"key": taints.OUT_OF_SERVICE, "value": "nodeshutdown", "effect": "NoExecute"}
GOING = {"deletionTimestamp": "2024-01-01T00:00:00Z"}


@pytest.mark.parametrize(("the_pod", "the_node", "known", "why"), [
    (pod("p", "gone"), None, True, "its node does not exist"),
    (pod("p", ""), None, False, ""),
    (pod("p", "", **GOING), None, False, "unscheduled and terminating"),
    (pod("p", "n1", **GOING), node("n1", UNREACHABLE), True, ""),  # merely unreachable
    (pod("p", "n1", **GOING), node("n1", UNREACHABLE, OUT), True,
     "terminating on an out-of-service node"),
    (pod("p", "n1", **GOING), node("n1", OUT, ready="True"), True, ""),
    (pod("p", "n1"), node("n1", OUT), True, ""),  # not being deleted: the taint evicts it
])
def test_what_pod_gc_collects(the_pod: dict[str, Any], the_node: dict[str, Any] | None,
                              known: bool, why: str) -> None:
    assert podgc.collectable(the_pod, the_node, node_known=known) == why


async def test_pod_gc_confirms_a_missing_node_before_force_deleting() -> None:
    f = Fixture()
    f.seed(kinds.POD, pod("orphan", "gone"), pod("young", "new"))
    f.client.live[("nodes", "", "new")] = node("new")  # registered, not cached yet
    gc = podgc.PodGC(f.ctx)
    f.client.actions.clear()
    await gc.sweep()
    assert [(a.verb, a.name, a.body["grace"], a.body["uid"]) for a in f.client.actions] == [
        ("delete", "orphan", 0, "u-orphan")]


async def test_a_deleted_node_leaves_no_confirmed_read_behind() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", {"key": "maintenance", "effect": "NoExecute"}))
    f.seed(kinds.POD, pod("p"))
    c = make(f)
    await f.run(c, "ns/p")
    assert "n1" in c.confirmed
    gone = f.informers.informer(kinds.NODE).cache.remove("n1")
    assert gone is not None
    c._node_gone(gone)
    assert c.confirmed == {}
