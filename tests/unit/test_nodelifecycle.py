"""The node lifecycle controller over seeded caches and a set clock: when a node is
marked Unknown (and when a read through the API stops it), how it is tainted, at what
rate, and what master disruption mode does; the zone rules as tables."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.api import kinds, taints
from raftkube.api.timestamps import rfc3339
from raftkube.client import workqueue
from raftkube.controllers import base, disruption
from raftkube.controllers.nodelifecycle import NodeLifecycle
from tests.unit.controller_fixture import T0, Fixture, _status

pytestmark = pytest.mark.unit
UNREACHABLE_NS = {"key": taints.UNREACHABLE, "effect": "NoSchedule"}


def node(name: str, ready: str | None = "True", *, zone: str = "",
         node_taints: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": f"u-{name}", "resourceVersion": "5",
                     "creationTimestamp": rfc3339(T0 - 100),
                     "labels": {disruption.ZONE: zone} if zone else {}},
        "spec": {"taints": node_taints} if node_taints else {},
        "status": {"conditions": []}}
    if ready is not None:
        out["status"]["conditions"] = [
            {"type": "Ready", "status": ready, "reason": "KubeletReady",
             "lastHeartbeatTime": rfc3339(T0 - 3), "lastTransitionTime": rfc3339(T0 - 90)},
            {"type": "MemoryPressure", "status": "False",
             "lastHeartbeatTime": rfc3339(T0 - 3)}]
    return out


def lease(name: str, rv: str = "40") -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "raftkube-system", "resourceVersion": rv},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                     "renewTime": "2099-01-01T00:00:00.000000Z"}}


def pod(name: str, on: str, ready: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "resourceVersion": "9"},
            "spec": {"nodeName": on, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True" if ready else "False"}]}}


def make(f: Fixture, *names: str) -> NodeLifecycle:
    c = NodeLifecycle(f.ctx)
    for name in names:  # what the informers tell it when they list, at T0
        c._lease_seen(f.informers.informer(kinds.LEASE).cache.get(
            f"raftkube-system/{name}") or lease(name))
    c.queue = workqueue.WorkQueue()
    return c


def taint_list(action: Any) -> list[tuple[str, str]]:
    return sorted((t["key"], t["effect"]) for t in action.body["spec"].get("taints") or [])


async def test_a_node_heard_from_within_its_grace_period_is_left_alone() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1"))
    c = make(f, "n1")
    f.now = T0 + 9.5
    assert await f.run(c, "n1") == []
    assert f.client.reads == []  # nothing to confirm: no read at all


async def test_each_renewal_seen_restarts_the_countdown_on_the_leaders_clock() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1", rv="40"))
    c = make(f, "n1")
    f.now = T0 + 8
    c._lease_seen(lease("n1", rv="41"))
    f.client.live[("leases", "raftkube-system", "n1")] = lease("n1", rv="41")
    f.now = T0 + 12
    assert await f.run(c, "n1") == []
    f.now = T0 + 18.5
    assert [a.verb for a in await f.run(c, "n1")] == ["update_status"]


async def test_a_silent_node_is_marked_unknown_once_a_read_confirms_the_silence() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1"))
    c = make(f, "n1")
    f.now = T0 + 10.5
    actions = await f.run(c, "n1")
    assert f.client.reads == [("leases", "raftkube-system", "n1")]
    assert [(a.verb, a.name) for a in actions] == [("update_status", "n1")]
    conds = {x["type"]: x for x in actions[0].body["status"]["conditions"]}
    assert conds["Ready"] == {
        "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": rfc3339(T0 - 3), "lastTransitionTime": rfc3339(T0 + 10.5)}
    assert conds["MemoryPressure"]["status"] == "Unknown"
    assert actions[0].body["metadata"]["resourceVersion"] == "5"  # a compare-and-swap
    assert f.recorded_events() == [("Normal", "NodeNotReady",
                                    "Node n1 status is now: NodeNotReady")]


async def test_a_lease_renewed_behind_a_stale_cache_restarts_the_countdown() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1", rv="40"))
    c = make(f, "n1")
    f.client.live[("leases", "raftkube-system", "n1")] = lease("n1", rv="77")
    f.now = T0 + 30
    assert await f.run(c, "n1") == []
    assert c.health["n1"].probe_at == T0 + 30 and c.health["n1"].lease_version == "77"


async def test_a_leader_that_cannot_read_through_raft_marks_nothing() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1"))
    c = make(f, "n1")
    f.client.fail[("get", "n1")] = _status(503, "ServiceUnavailable", "no quorum")
    f.now = T0 + 60
    with pytest.raises(Exception, match="no quorum"):
        await f.run(c, "n1")
    assert f.client.actions == []


async def test_nothing_is_marked_while_the_store_is_out_of_reach_nor_right_after() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1"))
    c = make(f, "n1")
    f.client.fail[("get", "raftkube-system")] = _status(503, "ServiceUnavailable", "no quorum")
    f.now = T0 + 5
    await c.probe_store()
    assert c.store_lost == T0 + 5
    f.now = T0 + 30  # the agents could not renew either
    assert await f.run(c, "n1") == [] and f.client.reads[-1] != ("leases", "raftkube-system",
                                                                 "n1")
    del f.client.fail[("get", "raftkube-system")]
    await c.probe_store()  # the store answers again: a full grace period from now
    assert c.store_lost is None and c.health["n1"].probe_at == T0 + 30
    assert len(c.queue) == 1
    f.now = T0 + 39
    assert await f.run(c, "n1") == []
    f.now = T0 + 41
    assert [a.verb for a in await f.run(c, "n1")] == ["update_status"]


async def test_a_new_leader_gives_every_node_a_full_grace_period() -> None:
    f = Fixture(now=T0 + 500)  # the lease was last renewed long ago, by the agent's clock
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1"))
    c = make(f, "n1")
    f.now = T0 + 509
    assert await f.run(c, "n1") == []


async def test_an_unknown_node_is_tainted_and_its_pods_marked_not_ready() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", "Unknown"))
    f.seed(kinds.POD, pod("a", "n1"), pod("b", "n1", ready=False), pod("c", "n2"))
    c = make(f, "n1")
    actions = await f.run(c, "n1")
    assert [(a.verb, a.kind, a.name) for a in actions] == [
        ("update", "nodes", "n1"), ("update_status", "pods", "a")]
    assert taint_list(actions[0]) == [(taints.UNREACHABLE, "NoExecute"),
                                      (taints.UNREACHABLE, "NoSchedule")]
    no_execute = [t for t in actions[0].body["spec"]["taints"] if t["effect"] == "NoExecute"]
    assert no_execute[0]["timeAdded"] == rfc3339(T0)
    ready = actions[1].body["status"]["conditions"][0]
    assert (ready["type"], ready["status"]) == ("Ready", "False")
    assert f.recorded_events() == [("Warning", "NodeNotReady", "Node is not ready")]


async def test_noexecute_taints_are_rate_limited_per_zone() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("a", "Unknown", zone="z1"), node("b", "Unknown", zone="z1"),
           node("c", "Unknown", zone="z2"), *(node(f"ok{i}", zone="z1") for i in range(5)))
    c = make(f)
    taint_a = taint_list((await f.run(c, "a"))[0])
    taint_b = taint_list((await f.run(c, "b"))[0])
    taint_c = taint_list((await f.run(c, "c"))[0])
    assert (taints.UNREACHABLE, "NoExecute") in taint_a
    assert taint_b == [(taints.UNREACHABLE, "NoSchedule")]  # z1's token is spent
    assert (taints.UNREACHABLE, "NoExecute") in taint_c  # another zone, another bucket
    assert "b" in c.waiting
    f.now = T0 + 10.1  # 0.1 nodes a second: the next token
    f.seed(kinds.NODE, node("b", "Unknown", zone="z1", node_taints=[UNREACHABLE_NS]))
    assert (taints.UNREACHABLE, "NoExecute") in taint_list((await f.run(c, "b"))[0])


async def test_swapping_not_ready_for_unreachable_is_not_rate_limited() -> None:
    f = Fixture()
    was = [{"key": taints.NOT_READY, "effect": "NoExecute", "timeAdded": rfc3339(T0 - 5)},
           {"key": taints.NOT_READY, "effect": "NoSchedule"}]
    f.seed(kinds.NODE, node("a", "Unknown", node_taints=was))
    c = make(f)
    c.disruption.buckets[""] = disruption.Bucket(0.1, tokens=0.0, last=T0)
    assert taint_list((await f.run(c, "a"))[0]) == [(taints.UNREACHABLE, "NoExecute"),
                                                    (taints.UNREACHABLE, "NoSchedule")]


async def test_master_disruption_mode_taints_nothing_and_lifts_what_it_set() -> None:
    f = Fixture()
    tainted = [{"key": taints.UNREACHABLE, "effect": "NoExecute", "timeAdded": rfc3339(T0)},
               UNREACHABLE_NS]
    f.seed(kinds.NODE, node("a", "Unknown", node_taints=tainted), node("b", "Unknown"),
           node("c", "Unknown"))
    c = make(f)
    c.monitor()
    assert c.disruption.master_mode and len(c.queue) == 3
    assert taint_list((await f.run(c, "a"))[0]) == [(taints.UNREACHABLE, "NoSchedule")]
    assert taint_list((await f.run(c, "b"))[0]) == [(taints.UNREACHABLE, "NoSchedule")]
    f.seed(kinds.NODE, node("c", "True"))
    f.now = T0 + 3
    c.monitor()
    assert not c.disruption.master_mode
    assert all(h.probe_at == T0 + 3 for h in c.health.values())  # a fresh countdown


async def test_a_node_ready_again_loses_the_node_controller_taints_only() -> None:
    f = Fixture()
    mine = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    f.seed(kinds.NODE, node("a", "True", node_taints=[
        mine, UNREACHABLE_NS, {"key": taints.UNREACHABLE, "effect": "NoExecute"}]))
    c = make(f, "a")
    actions = await f.run(c, "a")
    assert [a.body["spec"]["taints"] for a in actions] == [[mine]]


async def test_a_node_its_agent_says_is_not_ready_gets_the_not_ready_taints() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("a", "False"))
    c = make(f, "a")
    assert taint_list((await f.run(c, "a"))[0]) == [(taints.NOT_READY, "NoExecute"),
                                                    (taints.NOT_READY, "NoSchedule")]


async def test_a_registering_node_is_not_tainted_before_its_agent_speaks() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("new", None))
    c = make(f)
    assert await f.run(c, "new") == []


@pytest.mark.parametrize(("ready", "state"), [
    ([True, True, True], disruption.NORMAL),
    ([False, False, True], disruption.NORMAL),  # not more than two down
    ([False, False, False, True, True], disruption.PARTIAL),  # 3 of 5 = 60 % ≥ 55 %
    ([False, False, False, True, True, True], disruption.NORMAL),  # 50 %
    ([False], disruption.FULL),
    ([False] * 4, disruption.FULL),
    ([], disruption.NORMAL),
])
def test_zone_state(ready: list[bool], state: str) -> None:
    assert disruption.zone_state(ready, unhealthy_threshold=0.55) == state


@pytest.mark.parametrize(("state", "size", "rate"), [
    (disruption.NORMAL, 10, 0.1), (disruption.FULL, 10, 0.1),
    (disruption.PARTIAL, 50, 0.0), (disruption.PARTIAL, 51, 0.01)])
def test_rates(state: str, size: int, rate: float) -> None:
    assert disruption.Limits().rate(state, size) == rate


def test_the_bucket_gives_one_now_then_one_per_interval() -> None:
    b = disruption.Bucket(0.5)
    assert b.take(100.0) and not b.take(100.0)
    assert b.wait(100.5) == pytest.approx(1.5)
    assert not b.take(101.9) and b.take(102.0)
    b.set_rate(0.0, 103.0)
    assert b.wait(104.0) is None and not b.take(1000.0)


def test_master_disruption_mode_is_entered_and_left() -> None:
    d = disruption.Disruption()
    assert d.observe({"z1": [True, False], "z2": [False]}, 0.0) == ""
    assert d.observe({"z1": [False, False], "z2": [False]}, 1.0) == "entered"
    assert not d.may_taint("z1", 2.0) and d.wait("z1", 2.0) is None
    assert d.observe({"z1": [False, False], "z2": [False]}, 3.0) == ""
    assert d.observe({"z1": [True, False], "z2": [False]}, 4.0) == "left"
    assert d.may_taint("z2", 5.0)


def test_options_defaults_are_the_issues() -> None:
    o = base.Options()
    assert (o.node_grace, o.eviction_timeout, o.eviction_rate) == (10.0, 30.0, 0.1)


async def test_nothing_is_kept_for_a_node_that_was_deleted() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("a", "Unknown", zone="z1"), node("b", "Unknown", zone="z1"),
           *(node(f"ok{i}", zone="z1") for i in range(5)))
    c = make(f, "a", "b")
    await f.run(c, "a")
    await f.run(c, "b")
    assert "b" in c.waiting  # its NoExecute taint waits for the zone's next token
    for name in ("a", "b"):
        gone = f.informers.informer(kinds.NODE).cache.remove(name)
        assert gone is not None
        c._node_gone(gone)
    # Its agent, still running somewhere, renews the lease that outlived the Node.
    c._lease_seen(lease("a", rv="41"))
    assert "a" not in c.health and "b" not in c.health and not c.waiting
    c.monitor()
    assert len(c.queue) == 0  # nothing looked at again, period after period


async def test_a_lease_seen_before_its_node_starts_no_countdown_of_its_own() -> None:
    f = Fixture()
    c = make(f)
    c._lease_seen(lease("new"))  # the agent's lease came before its Node
    assert "new" not in c.health
    c._node_seen(node("new"))  # the countdown starts with the Node, now
    assert c.health["new"].probe_at == T0


def test_a_zone_that_is_gone_takes_its_bucket_with_it() -> None:
    d = disruption.Disruption()
    d.observe({"z1": [False]}, 0.0)
    d.may_taint("z2", 1.0)  # a node of a zone not observed yet
    d.observe({"z1": [True]}, 2.0)
    assert set(d.buckets) == {"z1"} and set(d.states) == {"z1"}


async def test_a_jump_of_the_leaders_wall_clock_marks_no_node() -> None:
    """Countdowns run on the leader's monotonic clock (Kubernetes' controller compares
    Go times, whose monotonic readings a wall-clock step does not move): an NTP step of
    an hour, then an event about the node before its next lease renewal, marks nothing.
    Timestamps it writes still come from the wall clock."""
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.LEASE, lease("n1"))
    c = make(f, "n1")
    f.now = T0 + 1
    f.wall_jump = 3600.0
    c._node_seen(node("n1"))  # a status update, heartbeat unchanged: a reconcile
    assert await f.run(c, "n1") == []
    assert f.client.reads == []
    f.now = T0 + 10.5  # truly silent for the grace period: marked, stamped on the wall clock
    actions = await f.run(c, "n1")
    assert [a.verb for a in actions] == ["update_status"]
    conds = {x["type"]: x for x in actions[0].body["status"]["conditions"]}
    assert conds["Ready"]["lastTransitionTime"] == rfc3339(T0 + 10.5 + 3600)
