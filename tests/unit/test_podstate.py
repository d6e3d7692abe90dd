"""podstate: what a controller reads off a pod, and which pods go first."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.api.timestamps import rfc3339
from raftkube.controllers import podstate
from tests.unit.controller_fixture import T0
from tests.unit.workloads import pod

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def _names(chosen: list[Obj]) -> list[str]:
    return [p["metadata"]["name"] for p in chosen]


def _without(obj: Obj, *path: str) -> Obj:
    *parents, last = path
    here = obj
    for step in parents:
        here = here[step]
    del here[last]
    return obj


def _phase(p: Obj, value: str) -> Obj:
    p["status"]["phase"] = value
    return p


def _restarted(p: Obj, *counts: int) -> Obj:
    p["status"]["containerStatuses"] = [{"name": f"c{i}", "restartCount": n}
                                        for i, n in enumerate(counts)]
    return p


# ---- which pods go first --------------------------------------------------------------

# (less valuable, more valuable): the order of Kubernetes' ActivePods, which a ReplicaSet
# (`to_delete`, with ranks) and a Job (`removal_order`) both follow. The names sort the
# other way (but in the last case), so that each criterion is what decides.
@pytest.mark.parametrize(("first", "second"), [
    (pod("unscheduled"), pod("scheduled", node="n1", phase="Pending")),
    (pod("pending", node="n1", phase="Pending"), pod("ok-running", node="n1")),
    (_phase(pod("z-no-phase", node="n1"), ""), pod("unknown", node="n1", phase="Unknown")),
    (pod("unready", node="n1"), pod("ready", node="n1", ready=True)),
    (pod("ready-since-lately", node="n1", ready=True, ready_at=T0 - 10),
     pod("ready-long", node="n1", ready=True, ready_at=T0 - 1000)),
    (_without(pod("ready-when-unknown", node="n1", ready=True),
              "status", "conditions", 0, "lastTransitionTime"),
     pod("ready-long", node="n1", ready=True, ready_at=T0 - 1000)),
    (_restarted(pod("with-restarts", node="n1"), 2), _restarted(pod("steady", node="n1"), 0)),
    # Kubernetes weighs the most restarted container, not the sum.
    (_restarted(pod("with-a-flapping-one", node="n1"), 3, 0),
     _restarted(pod("restarted-evenly", node="n1"), 2, 2)),
    (pod("young", node="n1", created=T0 - 10), pod("older", node="n1", created=T0 - 1000)),
    (_without(pod("when-made-unknown", node="n1"), "metadata", "creationTimestamp"),
     pod("older", node="n1", created=T0 - 1000)),
    (pod("a", node="n1"), pod("b", node="n1")),  # all else equal: by name
], ids=lambda p: p["metadata"]["name"])
def test_the_less_valuable_pod_goes_first(first: Obj, second: Obj) -> None:
    assert _names(podstate.to_delete([second, first], 1)) == [_names([first])[0]]
    assert _names(podstate.to_delete([first, second], 1)) == [_names([first])[0]]
    assert _names(podstate.removal_order([second, first])) == _names([first, second])
    assert _names(podstate.removal_order([first, second])) == _names([first, second])


def test_a_crowded_node_gives_up_its_pod_first_and_cost_protects() -> None:
    crowded = [pod(f"c{i}", node="busy", ready=True, ready_at=T0 - 100) for i in range(2)]
    alone = pod("alone", node="quiet", ready=True, ready_at=T0 - 100)
    assert _names(podstate.to_delete([alone, *crowded], 1)) == ["c0"]
    precious = pod("precious", node="n1")
    precious["metadata"]["annotations"] = {podstate.DELETION_COST: "100"}
    cheap = pod("cheap", node="n1")
    assert _names(podstate.to_delete([precious, cheap], 1)) == ["cheap"]
    assert podstate.to_delete([cheap], 0) == []
    # Readiness comes first: an unready pod goes before a ready one, whatever its cost.
    assert _names(podstate.to_delete([pod("ready", node="n1", ready=True), precious], 1)) \
        == ["precious"]
    # Without ranks (a Job's order, as Kubernetes' ActivePods) neither counts.
    assert _names(podstate.removal_order([alone, *crowded])) == ["alone", "c0", "c1"]
    assert _names(podstate.removal_order([precious, cheap])) == ["cheap", "precious"]
    assert _names(podstate.removal_order([cheap, precious], ranked_among=[])) == \
        ["cheap", "precious"]
    precious["metadata"]["annotations"] = {podstate.DELETION_COST: "-5"}
    assert _names(podstate.to_delete([precious, cheap], 1)) == ["precious"]


# ---- state ----------------------------------------------------------------------------

@pytest.mark.parametrize(("the_pod", "active", "terminal"), [
    (pod("running", node="n1"), True, False),
    (pod("pending"), True, False),
    (pod("done", node="n1", phase="Succeeded"), False, True),
    (pod("failed", node="n1", phase="Failed"), False, True),
    (pod("going", node="n1", deleting=True), False, False),
], ids=lambda p: p["metadata"]["name"] if isinstance(p, dict) else "")
def test_active_is_neither_finished_nor_being_deleted(the_pod: Obj, active: bool,
                                                      terminal: bool) -> None:
    assert podstate.is_active(the_pod) == active
    assert podstate.is_terminal(the_pod) == terminal


@pytest.mark.parametrize(("ready", "ready_at", "min_ready", "expected"), [
    (False, T0 - 100, 0, None),
    (True, T0 - 100, 0, 0.0),
    (True, T0 - 100, 30, 0.0),
    (True, T0 - 10, 30, 20.0),
    (True, T0 - 30, 30, 0.001),  # Kubernetes: strictly before now - minReadySeconds
])
def test_available_after_min_ready_seconds(ready: bool, ready_at: float, min_ready: int,
                                           expected: float | None) -> None:
    the_pod = pod("p", node="n1", ready=ready, ready_at=ready_at)
    wait = podstate.available_in(the_pod, min_ready, T0)
    if expected is None:
        assert wait is None
    elif expected == 0.0:
        assert wait == 0.0
    else:
        assert wait == pytest.approx(expected, abs=0.01) and wait > 0
    assert podstate.is_available(the_pod, min_ready, T0) == (expected == 0.0)


def test_the_next_pod_to_become_available() -> None:
    pods = [pod("long", node="n1", ready=True, ready_at=T0 - 60),
            pod("just", node="n1", ready=True, ready_at=T0 - 4),
            pod("lately", node="n1", ready=True, ready_at=T0 - 1),
            pod("unready", node="n1")]
    assert podstate.next_available(pods, 10, T0) == pytest.approx(6, abs=0.01)
    assert podstate.next_available(pods, 0, T0) is None
    assert podstate.next_available(pods[:1], 10, T0) is None


def test_restarts_count_init_containers_and_the_target_node_its_affinity() -> None:
    the_pod = pod("p", node="n1")
    the_pod["status"]["initContainerStatuses"] = [{"name": "i", "restartCount": 2}]
    _restarted(the_pod, 1, 3)
    assert podstate.restarts(the_pod) == 6
    assert podstate.target_node(the_pod) == "n1"
    unbound = pod("q")
    unbound["spec"]["affinity"] = {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n7"]}]}]}}}
    assert podstate.target_node(unbound) == "n7"
    assert podstate.target_node(pod("nowhere")) == ""


def test_a_finished_pod_finished_when_its_last_container_did() -> None:
    done = pod("done", node="n1", phase="Succeeded", created=T0 - 100)
    assert podstate.finished_at(done) == T0 - 100  # nothing else said: when it was made
    done["status"]["containerStatuses"] = [
        {"name": "a", "state": {"terminated": {"finishedAt": rfc3339(T0 - 50)}}},
        {"name": "b", "state": {"terminated": {"finishedAt": rfc3339(T0 - 40)}}}]
    assert podstate.finished_at(done) == T0 - 40
