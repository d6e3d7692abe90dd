"""The DaemonSet controller over seeded caches: one reconcile, the actions it takes."""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.api.timestamps import rfc3339
from raftkube.client import workqueue
from raftkube.client.errors import ApiError
from raftkube.controllers import daemonplan
from raftkube.controllers.daemonset import DaemonSetController
from tests.unit.controller_fixture import T0, Fixture, conflict

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def node(name: str, *, labels: dict[str, str] | None = None, taints: list[Obj] | None = None,
         unschedulable: bool = False) -> Obj:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "uid": f"n-{name}",
                         "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def daemonset(name: str = "agent", *, generation: int = 1, **spec: Any) -> Obj:
    template_spec = {"containers": [{"name": "c", "image": "busybox:1.36"}],
                     "restartPolicy": "Always"}
    template_spec.update(spec.pop("pod", {}))
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "generation": generation, "resourceVersion": "7"},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": template_spec},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {
                         "maxUnavailable": 1, "maxSurge": 0}},
                     **spec}}


def pod_of(ds: Obj, on: str, name: str, *, hash_: str | None = None, phase: str = "Running",
           ready: bool = True, age: float = 100.0, bound: bool = True,
           **meta: Any) -> Obj:
    pod = daemonplan.daemon_pod(ds, on, hash_ or daemonplan.template_hash(ds))
    pod["metadata"].update(name=name, uid=f"u-{name}", resourceVersion="3",
                           creationTimestamp=rfc3339(T0 - age), **meta)
    if bound:
        pod["spec"]["nodeName"] = on
    pod["status"] = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False",
         "lastTransitionTime": rfc3339(T0 - age)}]}
    return pod


def make(f: Fixture) -> DaemonSetController:
    c = DaemonSetController(f.ctx)
    c.queue = workqueue.WorkQueue()  # what seeding queued: the tests reconcile by hand
    return c


def writes(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.verb, a.name) for a in actions if a.verb != "update_status"]


def status_of(actions: list[Any]) -> Obj:
    [update] = [a for a in actions if a.verb == "update_status"]
    status: Obj = update.body["status"]
    return status


async def test_a_pod_for_every_eligible_node_and_none_elsewhere() -> None:
    f = Fixture()
    f.seed(kinds.NODE,
           node("n1", labels={"role": "worker"}),
           node("n2", labels={"role": "db"}),  # not selected
           node("n3", labels={"role": "worker"},
                taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]),
           node("n4", labels={"role": "worker"}, unschedulable=True,
                taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
           node("n5", labels={"role": "worker"},
                taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]))
    ds = daemonset(pod={"nodeSelector": {"role": "worker"}})
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD)
    actions = await f.run(make(f), "ns/agent")
    created = [a.body for a in actions if a.verb == "create"]
    targets = sorted(p["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchFields"][0]["values"][0] for p in created)
    assert targets == ["n1", "n4", "n5"]  # cordoned and not-ready nodes are tolerated
    pod = created[0]
    assert pod["metadata"]["generateName"] == "agent-"
    assert pod["metadata"]["labels"] == {
        "app": "agent", "controller-revision-hash": daemonplan.template_hash(ds),
        "pod-template-generation": "1"}
    assert pod["metadata"]["ownerReferences"] == [{
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "u-agent",
        "controller": True, "blockOwnerDeletion": True}]
    assert "nodeName" not in pod["spec"]  # the scheduler places it
    assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
            "effect": "NoExecute"} in pod["spec"]["tolerations"]
    assert sorted(e for e in f.recorded_events()) == sorted(
        ("Normal", "SuccessfulCreate", f"Created pod: {p['metadata']['name']}")
        for p in created)
    assert status_of(actions) == {
        "desiredNumberScheduled": 3, "currentNumberScheduled": 0, "numberMisscheduled": 0,
        "numberReady": 0, "updatedNumberScheduled": 0, "numberAvailable": 0,
        "numberUnavailable": 3, "observedGeneration": 1}


async def test_pods_follow_their_nodes_as_they_change_and_leave() -> None:
    f = Fixture()
    ds = daemonset()
    f.seed(kinds.NODE,
           node("keep"),
           node("twice"),
           node("relabelled", labels={"role": "db"}),
           node("noschedule", taints=[{"key": "k", "effect": "NoSchedule"}]),
           node("noexecute", taints=[{"key": "k", "effect": "NoExecute"}]))
    ds["spec"]["template"]["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["db"]}]}]}}}
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD,
           pod_of(ds, "keep", "a"),
           pod_of(ds, "twice", "old", age=200), pod_of(ds, "twice", "young", age=10),
           pod_of(ds, "relabelled", "b"),
           pod_of(ds, "noschedule", "c"),  # a NoSchedule taint lets a running pod stay
           pod_of(ds, "noexecute", "d"),
           pod_of(ds, "vanished", "e"),  # its node was deleted
           pod_of(ds, "vanished-too", "f", bound=False))
    actions = await f.run(make(f), "ns/agent")
    assert sorted(writes(actions)) == [("delete", "b"), ("delete", "d"), ("delete", "e"),
                                       ("delete", "f"), ("delete", "young")]
    graces = {a.name: a.body["grace"] for a in actions if a.verb == "delete"}
    assert graces["e"] == 0 and graces["f"] is None  # bound to a gone node: forced
    assert all(a.body["uid"] == f"u-{a.name}" for a in actions if a.verb == "delete")
    status = status_of(actions)
    assert (status["desiredNumberScheduled"], status["currentNumberScheduled"],
            status["numberMisscheduled"]) == (2, 2, 3)
    assert ("Normal", "SuccessfulDelete", "Deleted pod: young") in f.recorded_events()


async def test_no_second_decision_before_the_cache_shows_the_first() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"), node("n2"))
    f.seed(kinds.DAEMONSET, daemonset())
    f.seed(kinds.POD)
    c = make(f)
    first = await f.run(c, "ns/agent")
    made = [a.body for a in first if a.verb == "create"]
    assert len(made) == 2
    assert writes(await f.run(c, "ns/agent")) == []  # the creates are not in the cache yet
    f.seed(kinds.POD, made[0])
    assert writes(await f.run(c, "ns/agent")) == []  # one of them is
    f.seed(kinds.POD, made[1])
    assert writes(await f.run(c, "ns/agent")) == []  # both: nothing left to do
    assert not c.inflight._owners


async def test_a_rolling_update_replaces_max_unavailable_pods_at_a_time() -> None:
    f = Fixture()
    ds = daemonset(generation=2)
    old = "oldhash"
    f.seed(kinds.NODE, node("n1"), node("n2"), node("n3"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, *(pod_of(ds, n, f"p{n}", hash_=old) for n in ("n1", "n2", "n3")))
    c = make(f)
    assert writes(await f.run(c, "ns/agent")) == [("delete", "pn1")]
    # The next round: n1's old pod is gone and a new one is not ready yet.
    f2 = Fixture()
    f2.seed(kinds.NODE, node("n1"), node("n2"), node("n3"))
    f2.seed(kinds.DAEMONSET, ds)
    f2.seed(kinds.POD, pod_of(ds, "n1", "new1", ready=False),
            *(pod_of(ds, n, f"p{n}", hash_=old) for n in ("n2", "n3")))
    actions = await f2.run(make(f2), "ns/agent")
    assert writes(actions) == []  # the one unavailable pod is the whole budget
    assert status_of(actions)["updatedNumberScheduled"] == 1
    # Once it is ready, the next old pod goes.
    f2.seed(kinds.POD, pod_of(ds, "n1", "new1"))
    assert writes(await f2.run(make(f2), "ns/agent")) == [("delete", "pn2")]
    # An old pod still terminating holds the budget: no new pod yet, no other deletion.
    f3 = Fixture()
    f3.seed(kinds.NODE, node("n1"), node("n2"), node("n3"))
    f3.seed(kinds.DAEMONSET, ds)
    f3.seed(kinds.POD, pod_of(ds, "n1", "pn1", hash_=old, deletionTimestamp=rfc3339(T0)),
            *(pod_of(ds, n, f"p{n}", hash_=old) for n in ("n2", "n3")))
    assert writes(await f3.run(make(f3), "ns/agent")) == []


async def test_a_surging_update_starts_the_new_pod_beside_the_old_one() -> None:
    f = Fixture()
    ds = daemonset()
    ds["spec"]["updateStrategy"]["rollingUpdate"] = {"maxUnavailable": 0, "maxSurge": 1}
    f.seed(kinds.NODE, node("n1"), node("n2"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, pod_of(ds, "n1", "o1", hash_="old"), pod_of(ds, "n2", "o2", hash_="old"))
    actions = await f.run(make(f), "ns/agent")
    [made] = [a.body for a in actions if a.verb == "create"]
    assert writes(actions) == [("create", made["metadata"]["name"])]
    assert daemonplan.pods_by_node([made]).keys() == {"n1"}
    f2 = Fixture()
    f2.seed(kinds.NODE, node("n1"), node("n2"))
    f2.seed(kinds.DAEMONSET, ds)
    f2.seed(kinds.POD, pod_of(ds, "n1", "o1", hash_="old"), pod_of(ds, "n1", "new1", age=5),
            pod_of(ds, "n2", "o2", hash_="old"))
    # The new pod on n1 serves: its old pod goes, and n2 gets its new pod next time.
    assert writes(await f2.run(make(f2), "ns/agent")) == [("delete", "o1")]


async def test_on_delete_leaves_old_pods_alone() -> None:
    f = Fixture()
    ds = daemonset()
    ds["spec"]["updateStrategy"] = {"type": "OnDelete"}
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, pod_of(ds, "n1", "o1", hash_="old"))
    assert writes(await f.run(make(f), "ns/agent")) == []


async def test_a_failed_daemon_pod_is_killed_under_a_back_off() -> None:
    f = Fixture()
    ds = daemonset()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, pod_of(ds, "n1", "dead", phase="Failed", ready=False))
    c = make(f)
    assert writes(await f.run(c, "ns/agent")) == [("delete", "dead")]
    assert ("Warning", "FailedDaemonPod",
            "Found failed daemon pod ns/dead on node n1, will try to kill it") \
        in f.recorded_events()
    # Its replacement fails at once: it is not killed again until the back-off has passed.
    f.seed(kinds.POD, pod_of(ds, "n1", "dead2", phase="Failed", ready=False))
    f.informers.informer(kinds.POD).cache.remove("ns/dead")
    c.inflight.forget("u-agent")
    f.now += 0.5
    assert writes(await f.run(c, "ns/agent")) == []
    assert "ns/agent" in c.queue._waiting
    f.now += 0.6
    assert writes(await f.run(c, "ns/agent")) == [("delete", "dead2")]
    assert c.failed_backoff["u-agent/n1"][1] == 2.0  # the next wait doubles


async def test_a_daemon_pod_that_exited_is_replaced() -> None:
    f = Fixture()
    ds = daemonset()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, pod_of(ds, "n1", "done", phase="Succeeded", ready=False))
    assert writes(await f.run(make(f), "ns/agent")) == [("delete", "done")]
    assert ("Normal", "SucceededDaemonPod",
            "Found succeeded daemon pod ns/done on node n1, will try to delete it") \
        in f.recorded_events()


async def test_status_counts_ready_available_and_updated_pods() -> None:
    f = Fixture()
    ds = daemonset(generation=3, minReadySeconds=30)
    f.seed(kinds.NODE, node("n1"), node("n2"), node("n3"), node("n4"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD,
           pod_of(ds, "n1", "a", age=100),  # ready long enough
           pod_of(ds, "n2", "b", age=10),  # ready, not yet for 30 s
           pod_of(ds, "n3", "c", ready=False, hash_="old"),
           pod_of(ds, "n4", "d", age=100, hash_="old"))
    c = make(f)
    ds["spec"]["updateStrategy"] = {"type": "OnDelete"}
    f.seed(kinds.DAEMONSET, ds)
    actions = await f.run(c, "ns/agent")
    assert writes(actions) == []
    assert status_of(actions) == {
        "desiredNumberScheduled": 4, "currentNumberScheduled": 4, "numberMisscheduled": 0,
        "numberReady": 3, "updatedNumberScheduled": 2, "numberAvailable": 2,
        "numberUnavailable": 2, "observedGeneration": 3}
    at, _ = c.queue._waiting["ns/agent"]  # looked at again once b has been ready 30 s
    assert 19 < at - asyncio.get_running_loop().time() <= 21
    # The same status again is not written again.
    ds["status"] = status_of(actions)
    f.seed(kinds.DAEMONSET, ds)
    assert await f.run(c, "ns/agent") == []


async def test_a_status_conflict_is_left_to_the_newer_object() -> None:
    f = Fixture()
    f.seed(kinds.NODE)
    f.seed(kinds.DAEMONSET, daemonset())
    f.seed(kinds.POD)
    f.client.fail[("update_status", "agent")] = conflict("agent")
    await f.run(make(f), "ns/agent")  # no exception: nothing to retry


async def test_orphans_are_adopted_and_strays_released() -> None:
    f = Fixture()
    ds = daemonset()
    f.seed(kinds.NODE, node("n1"), node("n2"))
    f.seed(kinds.DAEMONSET, ds)
    orphan = pod_of(ds, "n1", "orphan")
    del orphan["metadata"]["ownerReferences"]
    stray = pod_of(ds, "n2", "stray")
    stray["metadata"]["labels"]["app"] = "other"
    f.seed(kinds.POD, orphan, stray)
    actions = await f.run(make(f), "ns/agent")
    patches = {a.name: a.body for a in actions if a.verb == "patch"}
    assert patches["orphan"]["metadata"]["ownerReferences"][0]["uid"] == "u-agent"
    assert patches["orphan"]["metadata"]["resourceVersion"] == "3"
    assert patches["stray"]["metadata"]["ownerReferences"] is None
    # n1 is served by the adopted pod; n2 lost its pod and gets a new one.
    created = [a.body for a in actions if a.verb == "create"]
    assert [daemonplan.pods_by_node([p]).keys() for p in created] == [{"n2"}]


async def test_a_node_change_wakes_only_the_daemonsets_it_concerns() -> None:
    f = Fixture()
    everywhere = daemonset("everywhere")
    gpu = daemonset("gpu", pod={"nodeSelector": {"gpu": "yes"}})
    f.seed(kinds.DAEMONSET, everywhere, gpu)
    c = make(f)
    plain = node("n1")
    c._node_changed(plain, copy.deepcopy(plain))  # a heartbeat: nobody cares
    assert len(c.queue) == 0
    c._node_changed(plain, node("n1", labels={"gpu": "yes"}))
    assert c.queue._queue == deque(["ns/gpu"])
    c._node_changed(None, node("n2"))  # a node joins
    assert set(c.queue._queue) == {"ns/gpu", "ns/everywhere"}
    c = make(f)
    c._node_changed(plain, not_ready("n1"))  # dark: a rolling update may go on without it
    assert set(c.queue._queue) == {"ns/gpu", "ns/everywhere"}


async def test_a_daemonset_being_deleted_is_left_to_the_server() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    ds = daemonset()
    ds["metadata"]["deletionTimestamp"] = rfc3339(T0)
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD)
    assert await f.run(make(f), "ns/agent") == []
    assert await f.run(make(f), "ns/missing") == []


async def test_a_refused_create_is_told_retried_and_stops_nothing_else() -> None:
    f = Fixture()
    ds = daemonset()
    f.seed(kinds.NODE, node("n1"), node("n2", labels={"role": "db"}))
    ds["spec"]["template"]["spec"]["nodeSelector"] = {"role": "worker"}
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.NODE, node("n1", labels={"role": "worker"}))
    f.seed(kinds.POD, pod_of(ds, "n2", "stale"))
    f.client.fail[("create", "agent-01000")] = ApiError({
        "kind": "Status", "code": 403, "reason": "Forbidden",
        "message": 'pods "agent-01000" is forbidden: exceeded quota'})
    c = make(f)
    with pytest.raises(ApiError, match="exceeded quota"):  # the queue retries it
        await c.reconcile("ns/agent")
    assert writes(f.client.actions) == [("delete", "stale")]
    assert status_of(f.client.actions)["observedGeneration"] == 1
    assert [e[:2] for e in f.recorded_events()] == [("Warning", "FailedCreate"),
                                                     ("Normal", "SuccessfulDelete")]


async def test_an_adoption_is_not_sent_again_before_the_pod_informer_shows_it() -> None:
    f = Fixture()
    ds = daemonset()
    f.seed(kinds.NODE, node("n1"))
    f.seed(kinds.DAEMONSET, ds)
    orphan = pod_of(ds, "n1", "orphan")
    del orphan["metadata"]["ownerReferences"]
    f.seed(kinds.POD, orphan)
    c = make(f)
    assert writes(await f.run(c, "ns/agent")) == [("patch", "orphan")]
    # The pod cache still shows the orphan as it was: adopting it again would carry a
    # stale resourceVersion (a Conflict, and a failed reconcile).
    assert await f.run(c, "ns/agent") == []
    f.seed(kinds.POD, pod_of(ds, "n1", "orphan"))
    f.informers.informer(kinds.POD).resource_version = "99999"
    assert writes(await f.run(c, "ns/agent")) == []


def not_ready(name: str) -> Obj:
    n = node(name)
    n["status"]["conditions"] = [{"type": "Ready", "status": "Unknown"}]
    return n


async def test_a_rolling_update_goes_on_past_a_node_that_is_not_ready() -> None:
    ds = daemonset(generation=2)
    # n2 is dark: its old pod was deleted and stays Terminating (no agent to finish it).
    f = Fixture()
    f.seed(kinds.NODE, node("n1"), not_ready("n2"), node("n3"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, pod_of(ds, "n1", "pn1", hash_="old"),
           pod_of(ds, "n2", "pn2", hash_="old", ready=False, deletionTimestamp=rfc3339(T0)),
           pod_of(ds, "n3", "pn3", hash_="old"))
    assert writes(await f.run(make(f), "ns/agent")) == [("delete", "pn1")]
    # Its old pod still says Ready (the node lifecycle has not marked it yet): it goes
    # now, as an unready one would, and the budget still replaces one more elsewhere.
    f = Fixture()
    f.seed(kinds.NODE, node("n1"), not_ready("n2"), node("n3"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, *(pod_of(ds, n, f"p{n}", hash_="old") for n in ("n1", "n2", "n3")))
    assert sorted(writes(await f.run(make(f), "ns/agent"))) == [("delete", "pn1"),
                                                                ("delete", "pn2")]
    # An old pod that is not ready on a ready node is replaced at once too, and holds
    # the budget until its successor serves.
    f = Fixture()
    f.seed(kinds.NODE, node("n1"), node("n2"), node("n3"))
    f.seed(kinds.DAEMONSET, ds)
    f.seed(kinds.POD, pod_of(ds, "n1", "pn1", hash_="old"),
           pod_of(ds, "n2", "pn2", hash_="old", ready=False),
           pod_of(ds, "n3", "pn3", hash_="old"))
    assert writes(await f.run(make(f), "ns/agent")) == [("delete", "pn2")]


async def test_a_surging_update_goes_on_past_a_node_that_is_not_ready() -> None:
    ds = daemonset()
    ds["spec"]["updateStrategy"]["rollingUpdate"] = {"maxUnavailable": 0, "maxSurge": 1}
    f = Fixture()
    f.seed(kinds.NODE, node("n1"), not_ready("n2"))
    f.seed(kinds.DAEMONSET, ds)
    # n2 got its new pod beside the old one, and then went dark: it will never be ready.
    f.seed(kinds.POD, pod_of(ds, "n1", "o1", hash_="old"), pod_of(ds, "n2", "o2", hash_="old"),
           pod_of(ds, "n2", "new2", ready=False, age=5))
    actions = await f.run(make(f), "ns/agent")
    [made] = [a.body for a in actions if a.verb == "create"]
    assert daemonplan.pods_by_node([made]).keys() == {"n1"}
