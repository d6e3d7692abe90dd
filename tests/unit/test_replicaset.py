"""The ReplicaSet controller, one reconcile at a time over seeded caches; which pods go first."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.client import workqueue
from raftkube.controllers import pods as podutil
from raftkube.controllers.replicaset import ManageError, ReplicaSetController
from tests.unit.controller_fixture import T0, Fixture, not_found
from tests.unit.workloads import NS, pod, replicaset

pytestmark = pytest.mark.unit


def make(f: Fixture) -> ReplicaSetController:
    c = ReplicaSetController(f.ctx)
    c.queue = workqueue.WorkQueue()  # what the seeded objects queued: the tests reconcile
    return c


def verbs(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.verb, a.kind) for a in actions]


async def test_a_new_replicaset_creates_its_pods_from_the_template() -> None:
    f = Fixture()
    rs = replicaset(replicas=3)
    f.seed(kinds.REPLICASET, rs)
    f.seed(kinds.POD)
    actions = await f.run(make(f), f"{NS}/front")
    assert verbs(actions) == [("create", "pods")] * 3 + [("update_status", "replicasets")]
    made = actions[0].body
    assert made["metadata"]["generateName"] == "front-"
    assert made["metadata"]["labels"] == {"app": "front"}
    assert made["metadata"]["ownerReferences"] == [{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "front", "uid": "uid-front",
        "controller": True, "blockOwnerDeletion": True}]
    assert made["spec"]["containers"][0]["image"] == "web:1"
    status = actions[-1].body["status"]
    assert status == {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 0,
                      "availableReplicas": 0, "observedGeneration": 1}
    names = [a.name for a in actions[:3]]
    assert f.recorded_events() == [("Normal", "SuccessfulCreate", f"Created pod: {n}")
                                   for n in names]


async def test_pods_created_but_not_yet_seen_are_not_created_again() -> None:
    f = Fixture()
    rs = replicaset(replicas=2)
    f.seed(kinds.REPLICASET, rs)
    f.seed(kinds.POD)
    c = make(f)
    made = [a.body for a in await f.run(c, f"{NS}/front") if a.verb == "create"]
    assert len(made) == 2
    f.informers.informer(kinds.REPLICASET).resource_version = "99999"  # its status seen
    # The pod informer has not delivered them: nothing more to do.
    assert [a for a in await f.run(c, f"{NS}/front") if a.verb == "create"] == []
    # It delivers one, and the other's deletion: the informer is the truth again.
    informer = f.informers.informer(kinds.POD)
    f.seed(kinds.POD, made[0])
    informer.resource_version = str(max(int(m["metadata"]["resourceVersion"])
                                        for m in made))
    actions = await f.run(c, f"{NS}/front")
    assert [a.verb for a in actions if a.verb == "create"] == ["create"]


async def test_nothing_is_done_until_the_informer_shows_the_last_status_written() -> None:
    f = Fixture()
    f.seed(kinds.REPLICASET, replicaset(replicas=1))
    f.seed(kinds.POD)
    c = make(f)
    written = (await f.run(c, f"{NS}/front"))[-1]
    assert written.verb == "update_status"
    # Scaled up meanwhile, but its status write (revision > 1000) is not in the cache
    # yet: a write now would be on a stale resourceVersion.
    f.seed(kinds.REPLICASET, replicaset(replicas=2))
    assert await f.run(c, f"{NS}/front") == []
    f.informers.informer(kinds.REPLICASET).resource_version = "99999"
    assert [a.verb for a in await f.run(c, f"{NS}/front")][0] == "create"


async def test_creates_start_slow_and_stop_at_the_first_failure() -> None:
    f = Fixture()
    f.seed(kinds.REPLICASET, replicaset(replicas=10))
    f.seed(kinds.POD)
    calls = []
    create = f.client.create

    async def failing(kind: Any, namespace: str, obj: Any, **kw: Any) -> Any:
        calls.append(obj)
        if len(calls) == 4:  # in the third batch (1, 2, then 4)
            raise not_found("namespace")
        return await create(kind, namespace, obj, **kw)

    f.client.create = failing  # type: ignore[method-assign]
    c = make(f)
    with pytest.raises(ManageError):
        await f.run(c, f"{NS}/front")
    assert len(calls) == 7  # 1 + 2 + 4, and no batch after the failing one
    status = f.client.actions[-1].body["status"]
    assert status["replicas"] == 6
    cond = status["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == \
        ("ReplicaFailure", "True", "FailedCreate")
    assert ("Warning", "FailedCreate", 'Error creating: "namespace" not found') in \
        f.recorded_events()


async def test_surplus_pods_go_least_valuable_first_and_are_not_deleted_twice() -> None:
    f = Fixture()
    rs = replicaset(replicas=2)
    f.seed(kinds.REPLICASET, rs)
    old_ready = pod("old-ready", rs, node="n1", ready=True, created=T0 - 900)
    new_ready = pod("new-ready", rs, node="n1", ready=True, created=T0 - 100)
    unready = pod("unready", rs, node="n2", created=T0 - 800)
    pending = pod("pending", rs, created=T0 - 950)
    f.seed(kinds.POD, old_ready, new_ready, unready, pending)
    c = make(f)
    actions = await f.run(c, f"{NS}/front")
    deleted = [(a.name, a.body["uid"]) for a in actions if a.verb == "delete"]
    assert deleted == [("pending", "uid-pending"), ("unready", "uid-unready")]
    assert actions[-1].body["status"]["replicas"] == 2
    events = f.recorded_events()
    assert ("Normal", "SuccessfulDelete", "Deleted pod: pending") in events
    # The cache still shows them: they are not counted, nothing more is deleted.
    again = await f.run(c, f"{NS}/front")
    assert [a for a in again if a.verb == "delete"] == []


async def test_terminating_and_finished_pods_do_not_count() -> None:
    f = Fixture()
    rs = replicaset(replicas=2)
    f.seed(kinds.REPLICASET, rs)
    f.seed(kinds.POD, pod("a", rs, node="n1", ready=True),
           pod("going", rs, node="n1", ready=True, deleting=True),
           pod("done", rs, node="n1", phase="Succeeded"))
    actions = await f.run(make(f), f"{NS}/front")
    assert verbs(actions) == [("create", "pods"), ("update_status", "replicasets")]


async def test_orphans_are_adopted_and_pods_that_stop_matching_are_released() -> None:
    f = Fixture()
    rs = replicaset(replicas=2)
    other = replicaset("other", app="other")
    f.seed(kinds.REPLICASET, rs, other)
    orphan = pod("orphan", node="n1", ready=True, labels={"app": "front"})
    stray = pod("stray", rs, node="n1", labels={"app": "elsewhere"})
    theirs = pod("theirs", other, node="n1", labels={"app": "front"})
    mine = pod("mine", rs, node="n1", ready=True)
    f.seed(kinds.POD, orphan, stray, theirs, mine)
    actions = await f.run(make(f), f"{NS}/front")
    assert [(a.verb, a.name) for a in actions] == [
        ("patch", "orphan"), ("patch", "stray"), ("update_status", "front")]
    adopt, release = actions[0].body, actions[1].body
    assert adopt["metadata"]["resourceVersion"] == "20"
    assert [r["uid"] for r in adopt["metadata"]["ownerReferences"]] == ["uid-front"]
    assert release["metadata"]["ownerReferences"] is None
    assert actions[-1].body["status"]["readyReplicas"] == 2


async def test_a_replicaset_being_deleted_creates_nothing() -> None:
    f = Fixture()
    rs = replicaset(replicas=2)
    rs["metadata"]["deletionTimestamp"] = "2023-11-14T22:13:20Z"
    f.seed(kinds.REPLICASET, rs)
    f.seed(kinds.POD, pod("orphan", labels={"app": "front"}))
    assert verbs(await f.run(make(f), f"{NS}/front")) == [("update_status", "replicasets")]


async def test_available_waits_for_min_ready_seconds_and_rechecks_then() -> None:
    f = Fixture()
    rs = replicaset(replicas=2, min_ready=10)
    f.seed(kinds.REPLICASET, rs)
    f.seed(kinds.POD, pod("long", rs, node="n1", ready=True, ready_at=T0 - 60),
           pod("just", rs, node="n1", ready=True, ready_at=T0 - 4))
    c = make(f)
    actions = await f.run(c, f"{NS}/front")
    status = actions[-1].body["status"]
    assert (status["readyReplicas"], status["availableReplicas"]) == (2, 1)
    assert "ns/front" in c.queue._waiting  # checked again once `just` is available
    at = c.queue._waiting["ns/front"][0]
    import asyncio
    assert 6 < at - asyncio.get_running_loop().time() <= 8


async def test_an_unchanged_status_is_not_written_and_a_missing_replicaset_is_ignored(
) -> None:
    f = Fixture()
    rs = replicaset(replicas=1, status={"replicas": 1, "fullyLabeledReplicas": 1,
                                        "readyReplicas": 1, "availableReplicas": 1,
                                        "observedGeneration": 1})
    f.seed(kinds.REPLICASET, rs)
    f.seed(kinds.POD, pod("a", rs, node="n1", ready=True))
    c = make(f)
    assert await f.run(c, f"{NS}/front") == []
    assert await f.run(c, f"{NS}/gone") == []


# ---- which pods go first --------------------------------------------------------------

def _names(chosen: list[dict[str, Any]]) -> list[str]:
    return [p["metadata"]["name"] for p in chosen]


@pytest.mark.parametrize(("first", "second"), [
    (pod("unscheduled"), pod("scheduled", node="n1", phase="Pending")),
    (pod("pending", node="n1", phase="Pending"), pod("running", node="n1")),
    (pod("unready", node="n1"), pod("ready", node="n1", ready=True)),
    (pod("ready-lately", node="n1", ready=True, ready_at=T0 - 10),
     pod("ready-long", node="n1", ready=True, ready_at=T0 - 1000)),
    (pod("newer", node="n1", created=T0 - 10), pod("older", node="n1", created=T0 - 1000)),
])
def test_the_less_valuable_pod_goes_first(first: dict[str, Any],
                                          second: dict[str, Any]) -> None:
    assert _names(podutil.to_delete([second, first], 1)) == [_names([first])[0]]
    assert _names(podutil.to_delete([first, second], 1)) == [_names([first])[0]]


def test_a_crowded_node_gives_up_its_pod_first_and_cost_protects() -> None:
    crowded = [pod(f"c{i}", node="busy", ready=True, ready_at=T0 - 100) for i in range(2)]
    alone = pod("alone", node="quiet", ready=True, ready_at=T0 - 100)
    assert _names(podutil.to_delete([alone, *crowded], 1)) == ["c0"]
    precious = pod("precious", node="n1")
    precious["metadata"]["annotations"] = {podutil.DELETION_COST: "100"}
    cheap = pod("cheap", node="n1")
    assert _names(podutil.to_delete([precious, cheap], 1)) == ["cheap"]
    assert podutil.to_delete([cheap], 0) == []
