"""`daemonplan`: eligibility, the daemon pod, and the rolling update's budget."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from raftkube.api.timestamps import rfc3339
from raftkube.controllers import daemonplan, podutil
from tests.unit.test_daemonset import daemonset, node, pod_of

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
NOW = 1_700_000_000.0


@pytest.mark.parametrize(("pod", "the_node", "verdict"), [
    ({}, node("n"), (True, True)),
    ({"nodeSelector": {"disk": "ssd"}}, node("n", labels={"disk": "hdd"}), (False, False)),
    ({"nodeName": "other"}, node("n"), (False, False)),
    ({"nodeName": "n"}, node("n"), (True, True)),
    ({}, node("n", taints=[{"key": "k", "effect": "NoSchedule"}]), (False, True)),
    ({}, node("n", taints=[{"key": "k", "effect": "NoExecute"}]), (False, False)),
    ({}, node("n", taints=[{"key": "k", "effect": "PreferNoSchedule"}]), (True, True)),
    ({"tolerations": [{"key": "k", "operator": "Exists"}]},
     node("n", taints=[{"key": "k", "effect": "NoExecute"}]), (True, True)),
    ({}, node("n", taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                           {"key": "node.kubernetes.io/disk-pressure",
                            "effect": "NoSchedule"}]), (True, True)),
    ({}, node("n", taints=[{"key": "node.kubernetes.io/network-unavailable",
                            "effect": "NoSchedule"}]), (False, True)),
    ({"hostNetwork": True}, node("n", taints=[{"key": "node.kubernetes.io/network-unavailable",
                                               "effect": "NoSchedule"}]), (True, True)),
], ids=["plain", "selector", "other-node-name", "own-node-name", "noschedule", "noexecute",
        "prefer", "tolerated", "default-tolerations", "network", "network-hostnet"])
def test_eligibility(pod: Obj, the_node: Obj, verdict: tuple[bool, bool]) -> None:
    assert daemonplan.eligibility(daemonset(pod=pod), the_node) == verdict


def test_default_tolerations_are_added_once_and_replace_a_users_seconds() -> None:
    spec = {"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 5},
                            {"key": "mine", "operator": "Exists"}]}
    once = daemonplan.with_default_tolerations(spec)
    assert daemonplan.with_default_tolerations(once) == once
    assert len(once["tolerations"]) == 7
    assert {"key": "mine", "operator": "Exists"} in once["tolerations"]
    assert not any("tolerationSeconds" in t for t in once["tolerations"])
    assert spec["tolerations"][0]["tolerationSeconds"] == 5  # the input is left alone


def test_the_hash_follows_the_template_and_nothing_else() -> None:
    a, b = daemonset(), daemonset()
    b["metadata"]["generation"] = 9
    b["status"] = {"numberReady": 3}
    assert daemonplan.template_hash(a) == daemonplan.template_hash(b)
    assert set(daemonplan.template_hash(a)) <= set("bcdfghjklmnpqrstvwxz2456789")
    b["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.37"
    assert daemonplan.template_hash(a) != daemonplan.template_hash(b)


def test_the_daemon_pod_replaces_the_templates_node_affinity() -> None:
    ds = daemonset(pod={"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "role", "operator": "In", "values": ["w"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [
                {"key": "z", "operator": "Exists"}]}}]}}})
    pod = daemonplan.daemon_pod(ds, "n7", "h")
    affinity = pod["spec"]["affinity"]["nodeAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                "values": ["n7"]}]}]}
    assert len(affinity["preferredDuringSchedulingIgnoredDuringExecution"]) == 1
    assert podutil.target_node(pod) == "n7"
    assert ds["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0].get(
        "matchFields") is None  # the DaemonSet is left alone


@pytest.mark.parametrize(("value", "total", "expected"), [
    (1, 10, 1), ("10%", 10, 1), ("25%", 10, 3), ("0%", 10, 0), ("100%", 3, 3), (None, 5, 0)])
def test_percentages_round_up(value: Any, total: int, expected: int) -> None:
    assert daemonplan._scaled(value, total) == expected


STATES = ("new-ready", "new-unready", "old-ready", "old-unready", "none", "terminating",
          "old+new-unready", "old+new-ready")


def _pods_for(ds: Obj, name: str, state: str, hash_: str) -> list[Obj]:
    age = {"age": 1000.0}
    if state == "none":
        return []
    if state == "terminating":
        return [pod_of(ds, name, f"{name}-t", hash_="old", deletionTimestamp=rfc3339(NOW),
                       **age)]
    pods = []
    if state.startswith("old"):
        pods.append(pod_of(ds, name, f"{name}-o", hash_="old", ready=state != "old-unready",
                           **age))
    if "new" in state:
        pods.append(pod_of(ds, name, f"{name}-n", hash_=hash_,
                           ready=not state.endswith("new-unready"), age=500.0))
    return pods


@settings(max_examples=200, deadline=None)
@given(states=hs.lists(hs.sampled_from(STATES), min_size=1, max_size=8),
       max_unavailable=hs.one_of(hs.integers(0, 4), hs.sampled_from(["10%", "50%"])),
       max_surge=hs.one_of(hs.integers(0, 3), hs.sampled_from(["0%", "30%"])))
def test_a_rolling_update_never_takes_more_than_its_budget(
        states: list[str], max_unavailable: Any, max_surge: Any) -> None:
    ds = daemonset()
    ds["spec"]["updateStrategy"]["rollingUpdate"] = {"maxUnavailable": max_unavailable,
                                                     "maxSurge": max_surge}
    hash_ = daemonplan.template_hash(ds)
    nodes = [node(f"n{i}") for i in range(len(states))]
    pods = [p for i, s in enumerate(states) for p in _pods_for(ds, f"n{i}", s, hash_)]
    by_node = daemonplan.pods_by_node(pods)
    plan = daemonplan.rolling_update(ds, nodes, by_node, hash_, NOW)
    desired = len(nodes)
    surge = daemonplan._scaled(max_surge, desired)
    unavailable_budget = daemonplan._scaled(max_unavailable, desired)
    if surge == 0 and unavailable_budget == 0:
        unavailable_budget = 1
    assert all(p["metadata"]["labels"]["controller-revision-hash"] == "old"
               for p in plan.delete)  # only old pods are ever replaced

    def serving(node_pods: list[Obj], gone: set[str]) -> bool:
        return any(podutil.is_available(p, 0, NOW) and not podutil.is_deleting(p)
                   and p["metadata"]["name"] not in gone for p in node_pods)

    gone = {p["metadata"]["name"] for p in plan.delete}
    before = sum(serving(by_node.get(n["metadata"]["name"], []), set()) for n in nodes)
    after = sum(serving(by_node.get(n["metadata"]["name"], []), gone) for n in nodes)
    if surge == 0:
        assert not plan.create
        assert after >= min(before, desired - unavailable_budget)
    else:
        assert after == before  # with surge, a pod goes only once its successor serves
        surged = sum(1 for s in states if s in ("old+new-unready",))
        starting = sum(1 for s in states if s == "old-unready")
        assert len(plan.create) <= max(surge - surged, 0) + starting
