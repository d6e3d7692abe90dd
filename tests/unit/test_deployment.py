"""The Deployment controller, one reconcile at a time over seeded caches."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkube.api import kinds, rollout
from raftkube.api.timestamps import rfc3339
from raftkube.client import workqueue
from raftkube.controllers.deployment import DeploymentController
from tests.unit.controller_fixture import T0, Fixture
from tests.unit.workloads import NS, deployment, owned_rs, pod, replicaset

pytestmark = pytest.mark.unit
KEY = f"{NS}/front"


def make(f: Fixture, *objs: dict[str, Any]) -> DeploymentController:
    for kind in (kinds.DEPLOYMENT, kinds.REPLICASET, kinds.POD):
        f.seed(kind, *[o for o in objs if o["kind"] == kind.kind])
    c = DeploymentController(f.ctx)
    c.queue = workqueue.WorkQueue()
    return c


def steps(actions: list[Any]) -> list[tuple[str, str, str]]:
    return [(a.verb, a.kind, a.name) for a in actions]


def scaled(actions: list[Any]) -> dict[str, int]:
    return {a.name: a.body["spec"]["replicas"] for a in actions
            if a.verb == "update" and a.kind == "replicasets"}


def last_status(actions: list[Any]) -> dict[str, Any]:
    return [a.body["status"] for a in actions if a.verb == "update_status"][-1]


def cond(status: dict[str, Any], type_: str) -> tuple[str, str, str]:
    c = next(c for c in status["conditions"] if c["type"] == type_)
    return c["status"], c["reason"], c["message"]


async def test_a_new_deployment_creates_its_first_replicaset() -> None:
    f = Fixture()
    d = deployment(replicas=3)
    actions = await f.run(make(f, d), KEY)
    pod_hash = rollout.template_hash(d["spec"]["template"])
    name = f"front-{pod_hash}"
    assert steps(actions) == [("create", "replicasets", name),
                              ("update", "deployments", "front"),
                              ("update_status", "deployments", "front"),
                              ("update_status", "deployments", "front")]
    rs = actions[0].body
    assert rs["spec"]["replicas"] == 3
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "front",
                                                     "pod-template-hash": pod_hash}
    assert rs["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == pod_hash
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "uid-front"
    assert {k: v for k, v in rs["metadata"]["annotations"].items()} == {
        rollout.REVISION: "1", rollout.DESIRED_REPLICAS: "3", rollout.MAX_REPLICAS: "4"}
    assert actions[1].body["metadata"]["annotations"][rollout.REVISION] == "1"
    assert cond(actions[2].body["status"], "Progressing") == \
        ("True", "NewReplicaSetCreated", f'Created new replica set "{name}"')
    status = last_status(actions)
    assert cond(status, "Available") == \
        ("False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    assert f.recorded_events() == [("Normal", "ScalingReplicaSet",
                                    f"Scaled up replica set {name} to 3 from 0")]


async def test_a_template_change_surges_one_new_pod_then_retires_an_old_one() -> None:
    f = Fixture()
    d = deployment(replicas=3, image="web:2", revision="1", generation=2)
    old = owned_rs(d, image="web:1", replicas=3, revision=1)
    c = make(f, d, old)
    actions = await f.run(c, KEY)
    new = next(a.body for a in actions if a.verb == "create")
    assert new["spec"]["replicas"] == 1  # 3 + maxSurge 1 (25% of 3, rounded up) - 3
    assert new["metadata"]["annotations"][rollout.REVISION] == "2"
    assert scaled(actions) == {}  # nothing old goes before a new pod is available
    # The new pod is available: one old one may go (maxUnavailable 0: 25% rounded down).
    new_rs = owned_rs(d, image="web:2", replicas=1, revision=2, created=T0 - 10)
    f2 = Fixture()
    actions = await f2.run(make(f2, deployment(replicas=3, image="web:2", revision="2",
                                               generation=2), old, new_rs), KEY)
    assert scaled(actions) == {old["metadata"]["name"]: 2}
    assert ("Normal", "ScalingReplicaSet",
            f"Scaled down replica set {old['metadata']['name']} to 2 from 3") in \
        f2.recorded_events()


async def test_an_old_replicaset_still_holding_pods_keeps_the_new_one_from_growing() -> None:
    f = Fixture()
    d = deployment(replicas=3, image="web:2", revision="2")
    # Scaled down to 2, but its controller has not deleted the third pod yet.
    old = owned_rs(d, image="web:1", replicas=2, reported=3, revision=1)
    new = owned_rs(d, image="web:2", replicas=1, revision=2, created=T0 - 10)
    actions = await f.run(make(f, d, old, new), KEY)
    assert scaled(actions) == {}
    # Once it has, the new one grows.
    f2 = Fixture()
    old = owned_rs(d, image="web:1", replicas=2, revision=1)
    actions = await f2.run(make(f2, d, old, new), KEY)
    assert scaled(actions) == {new["metadata"]["name"]: 2}


async def test_unavailable_old_pods_go_first_and_availability_never_drops() -> None:
    f = Fixture()
    d = deployment(replicas=4, image="web:2", revision="2",
                   strategy={"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}})
    old = owned_rs(d, image="web:1", replicas=4, available=2, revision=1)
    new = owned_rs(d, image="web:2", replicas=0, revision=2, created=T0 - 10)
    # 2 available, 3 must be: only unavailable pods may go, and as many as the budget.
    actions = await f.run(make(f, d, old, new), KEY)
    assert scaled(actions) == {old["metadata"]["name"]: 3}


async def test_recreate_empties_the_old_replicasets_waits_for_their_pods_then_scales_up(
) -> None:
    strategy = {"type": "Recreate"}
    d = deployment(replicas=2, image="web:2", revision="1", strategy=strategy)
    old = owned_rs(d, image="web:1", replicas=2, revision=1)
    f = Fixture()
    actions = await f.run(make(f, d, old), KEY)
    assert scaled(actions) == {old["metadata"]["name"]: 0}
    assert not [a for a in actions if a.verb == "create"]
    # Scaled to 0, a pod still terminating: wait.
    emptied = owned_rs(d, image="web:1", replicas=0, revision=1)
    going = pod("going", emptied, node="n1", ready=True, deleting=True)
    f = Fixture()
    actions = await f.run(make(f, d, emptied, going), KEY)
    assert not [a for a in actions if a.verb in ("create", "update")]
    # Gone: the new ReplicaSet comes, at full size.
    f = Fixture()
    actions = await f.run(make(f, d, emptied), KEY)
    made = next(a.body for a in actions if a.verb == "create")
    assert made["spec"]["replicas"] == 2


async def test_a_resize_mid_rollout_is_shared_in_proportion() -> None:
    f = Fixture()
    d = deployment(replicas=6, image="web:2", revision="2", status={"replicas": 4})
    old = owned_rs(d, image="web:1", replicas=2, revision=1, desired=3, most=4)
    new = owned_rs(d, image="web:2", replicas=2, revision=2, created=T0 - 10, desired=3,
                   most=4)
    actions = await f.run(make(f, d, old, new), KEY)
    # Room for 6 + 2 (25% of 6, rounded up); each had half of the 4: each gets half of 8.
    assert scaled(actions) == {old["metadata"]["name"]: 4, new["metadata"]["name"]: 4}
    for a in actions:
        if a.verb == "update" and a.kind == "replicasets":
            assert a.body["metadata"]["annotations"][rollout.DESIRED_REPLICAS] == "6"
            assert a.body["metadata"]["annotations"][rollout.MAX_REPLICAS] == "8"


async def test_a_paused_deployment_does_not_roll_out_but_still_resizes() -> None:
    f = Fixture()
    d = deployment(replicas=5, image="web:2", revision="1", paused=True)
    old = owned_rs(d, image="web:1", replicas=3, revision=1)
    actions = await f.run(make(f, d, old), KEY)
    assert not [a for a in actions if a.verb == "create"]
    assert scaled(actions) == {old["metadata"]["name"]: 5}
    assert cond(actions[0].body["status"], "Progressing") == \
        ("Unknown", "DeploymentPaused", "Deployment is paused")
    # Resumed: Progressing says so, and the rollout starts.
    f = Fixture()
    paused_status = {"conditions": [{"type": "Progressing", "status": "Unknown",
                                     "reason": "DeploymentPaused",
                                     "message": "Deployment is paused",
                                     "lastUpdateTime": rfc3339(T0 - 50),
                                     "lastTransitionTime": rfc3339(T0 - 50)}]}
    d = deployment(replicas=3, image="web:2", revision="1", status=paused_status)
    old = owned_rs(d, image="web:1", replicas=3, revision=1)
    actions = await f.run(make(f, d, old), KEY)
    assert cond(actions[0].body["status"], "Progressing") == \
        ("Unknown", "DeploymentResumed", "Deployment is resumed")
    assert [a.verb for a in actions if a.kind == "replicasets"][0] == "create"


def _progressing(reason: str, since: float) -> dict[str, Any]:
    return {"type": "Progressing", "status": "True", "reason": reason, "message": "m",
            "lastUpdateTime": rfc3339(since), "lastTransitionTime": rfc3339(since)}


async def test_no_progress_past_the_deadline_sets_progressing_false() -> None:
    d0 = deployment(replicas=3, image="web:2", revision="2", deadline=600)
    old = owned_rs(d0, image="web:1", replicas=3, revision=1)
    new = owned_rs(d0, image="web:2", replicas=1, available=0, revision=2, created=T0 - 10)
    counts = {"observedGeneration": 1, "replicas": 4, "updatedReplicas": 1,
              "readyReplicas": 3, "availableReplicas": 3, "unavailableReplicas": 1}
    # Stuck for 100 s of 600: nothing to write; a re-check when the deadline passes.
    f = Fixture()
    stuck = deployment(replicas=3, image="web:2", revision="2", status={
        **counts, "conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
             "message": "Deployment has minimum availability.",
             "lastUpdateTime": rfc3339(T0 - 900), "lastTransitionTime": rfc3339(T0 - 900)},
            _progressing("ReplicaSetUpdated", T0 - 100)]})
    c = make(f, stuck, old, new)
    assert await f.run(c, KEY) == []
    at = c.queue._waiting[KEY][0] - asyncio.get_running_loop().time()
    assert 499 < at <= 502
    # Half a second before the deadline: not looked at again at once (nothing would
    # have changed, and the same answer would come back, a busy loop until the
    # deadline), but once it has passed.
    f = Fixture(now=T0 + 599.5 - 100)
    c = make(f, stuck, old, new)
    assert await f.run(c, KEY) == []
    assert len(c.queue) == 0
    at = c.queue._waiting[KEY][0] - asyncio.get_running_loop().time()
    assert 0.5 < at <= 2.0
    # Stuck for 700 s: timed out.
    f = Fixture()
    late = deployment(replicas=3, image="web:2", revision="2", status={
        **counts, "conditions": [_progressing("ReplicaSetUpdated", T0 - 700)]})
    status = last_status(await f.run(make(f, late, old, new), KEY))
    name = new["metadata"]["name"]
    assert cond(status, "Progressing") == \
        ("False", "ProgressDeadlineExceeded", f'ReplicaSet "{name}" has timed out progressing.')


async def test_a_complete_rollout_says_so_and_prunes_history() -> None:
    f = Fixture()
    d = deployment(replicas=2, image="web:3", revision="3", history=1, status={
        "conditions": [_progressing("ReplicaSetUpdated", T0 - 5)]})
    oldest = owned_rs(d, image="web:1", replicas=0, revision=1, created=T0 - 900)
    old = owned_rs(d, image="web:2", replicas=0, revision=2, created=T0 - 500)
    new = owned_rs(d, image="web:3", replicas=2, revision=3, created=T0 - 10)
    c = make(f, d, oldest, old, new)
    # The status first says so; once it does, the history is pruned.
    status = last_status(await f.run(c, KEY))
    assert cond(status, "Progressing") == (
        "True", "NewReplicaSetAvailable",
        f'ReplicaSet "{new["metadata"]["name"]}" has successfully progressed.')
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == \
        (2, 2, 2)
    f = Fixture()
    done = deployment(replicas=2, image="web:3", revision="3", history=1, status=status)
    actions = await f.run(make(f, done, oldest, old, new), KEY)
    assert steps(actions) == [("delete", "replicasets", oldest["metadata"]["name"])]


async def test_a_rollback_revives_the_old_replicaset_under_a_new_revision() -> None:
    f = Fixture()
    d = deployment(replicas=2, image="web:1", revision="2")  # the template of revision 1
    first = owned_rs(d, image="web:1", replicas=0, revision=1, created=T0 - 900)
    second = owned_rs(d, image="web:2", replicas=2, revision=2, created=T0 - 500)
    actions = await f.run(make(f, d, first, second), KEY)
    assert not [a for a in actions if a.verb == "create"]
    revived = next(a.body for a in actions if a.verb == "update"
                   and a.name == first["metadata"]["name"])
    annotations = revived["metadata"]["annotations"]
    assert (annotations[rollout.REVISION], annotations[rollout.REVISION_HISTORY]) == ("3", "1")
    bumped = next(a.body for a in actions if a.verb == "update" and a.kind == "deployments")
    assert bumped["metadata"]["annotations"][rollout.REVISION] == "3"
    assert scaled(actions)[first["metadata"]["name"]] == 1  # surging back


async def test_an_orphan_replicaset_is_adopted_and_one_owned_elsewhere_left() -> None:
    f = Fixture()
    d = deployment(replicas=1)
    orphan = replicaset("stray", replicas=1, app="front")
    other_owner = deployment("other", app="front")
    theirs = replicaset("theirs", replicas=1, app="front", owner=other_owner)
    actions = await f.run(make(f, d, orphan, theirs), KEY)
    adopted = [a for a in actions if a.name == "stray"]
    assert adopted and adopted[0].verb == "patch"
    assert adopted[0].body["metadata"]["ownerReferences"][0]["uid"] == "uid-front"
    assert not [a for a in actions if a.name == "theirs"]


async def test_a_deployment_waits_for_its_own_writes_before_deciding_again() -> None:
    f = Fixture()
    c = make(f, deployment(replicas=2))
    made = next(a.body for a in await f.run(c, KEY) if a.verb == "create")
    # The new ReplicaSet is not in the cache yet: another create would only conflict.
    assert await f.run(c, KEY) == []
    for kind in (kinds.DEPLOYMENT, kinds.REPLICASET):
        f.informers.informer(kind).resource_version = "99999"
    f.seed(kinds.REPLICASET, made)
    actions = await f.run(c, KEY)
    assert not [a for a in actions if a.verb == "create"]
