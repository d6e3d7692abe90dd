"""Where pods go relative to each other: a controller's pods spread over nodes, topology
spread constraints, pod affinity and anti-affinity (both ways), and the early stop of the
search in large clusters."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from raftkube.scheduler import core as sched

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def node(name: str, zone: str = "", cpu: str = "8") -> Obj:
    labels = {"kubernetes.io/hostname": name}
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    return {"metadata": {"name": name, "labels": labels}, "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": "16Gi", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def pod(name: str, app: str = "web", owner: str = "", **spec: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": "ns", "labels": {"app": app}}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "uid": owner,
                                    "controller": True}]
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "image": "i"}], **spec}}


def place_all(nodes: list[Obj], pods: list[Obj], seed: int = 7) -> list[str | None]:
    """Schedule and bind one pod after another; where each went (None: nowhere)."""
    rng = random.Random(seed)
    bound: list[Obj] = []
    where: list[str | None] = []
    for p in pods:
        result = sched.schedule(sched.snapshot_of(nodes, bound), p, rng=rng)
        if isinstance(result, sched.Unschedulable):
            where.append(None)
            continue
        p["spec"]["nodeName"] = result.node
        bound.append(p)
        where.append(result.node)
    return where


def anti(app: str, key: str = "kubernetes.io/hostname") -> Obj:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}


@settings(max_examples=50, deadline=None)
@given(n_nodes=hs.integers(1, 8), n_pods=hs.integers(1, 40), seed=hs.integers(0, 2**16),
       others=hs.lists(hs.integers(0, 7), max_size=10))
def test_a_controllers_pods_spread_within_one_of_even(n_nodes: int, n_pods: int, seed: int,
                                                      others: list[int]) -> None:
    """Whatever else runs on the nodes (pods of no controller, no requests), the pods of
    one ReplicaSet end up as evenly spread as they can be: counts differ by at most one."""
    nodes = [node(f"n{i}") for i in range(n_nodes)]
    bystanders = [pod(f"o{j}", app="other") for j in range(len(others))]
    for j, i in enumerate(others):
        bystanders[j]["spec"]["nodeName"] = f"n{i % n_nodes}"
    rng = random.Random(seed)
    bound = list(bystanders)
    for k in range(n_pods):
        p = pod(f"p{k}", owner="rs-1")
        result = sched.schedule(sched.snapshot_of(nodes, bound), p, rng=rng)
        assert isinstance(result, sched.Placement)
        p["spec"]["nodeName"] = result.node
        bound.append(p)
    counts = Counter(p["spec"]["nodeName"] for p in bound[len(bystanders):])
    per_node = [counts.get(f"n{i}", 0) for i in range(n_nodes)]
    assert max(per_node) - min(per_node) <= 1, per_node


def test_hard_topology_spread_over_zones() -> None:
    nodes = [node("a1", "a"), node("a2", "a"), node("b1", "b")]
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
               "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    where = place_all(nodes, [pod(f"p{i}", topologySpreadConstraints=spread)
                              for i in range(6)])
    zones = Counter(w[0] for w in where if w)
    assert zones == {"a": 3, "b": 3}


def test_a_hard_spread_that_cannot_hold_is_refused_with_kubernetes_words() -> None:
    nodes = [node("a1", "a"), node("b1", "b", cpu="1")]
    spread = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
               "whenUnsatisfiable": "DoNotSchedule",
               "labelSelector": {"matchLabels": {"app": "web"}}}]
    heavy = {"resources": {"requests": {"cpu": "800m"}}}
    pods = [pod(f"p{i}", topologySpreadConstraints=spread) for i in range(4)]
    for p in pods:
        p["spec"]["containers"][0].update(heavy)
    where = place_all(nodes, pods)
    # b1 is full after one pod; a skew of one lets zone a take a second, not a third.
    assert Counter(where) == {"a1": 2, "b1": 1, None: 1} and where[3] is None
    result = sched.schedule(sched.snapshot_of(nodes, pods[:3]), pods[3], rng=random.Random(1))
    assert isinstance(result, sched.Unschedulable)
    assert result.message == ("0/2 nodes are available: 1 Insufficient cpu, 1 node(s) didn't "
                              "match pod topology spread constraints.")
    unlabelled = [node("plain")]
    unlabelled[0]["metadata"]["labels"].clear()
    result = sched.schedule(sched.snapshot_of(unlabelled, []),
                            pod("y", topologySpreadConstraints=spread), rng=random.Random(1))
    assert isinstance(result, sched.Unschedulable)
    assert "(missing required label)" in result.message


def test_required_anti_affinity_on_hostname_puts_one_per_node() -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    where = place_all(nodes, [pod(f"p{i}", affinity=anti("web")) for i in range(4)])
    assert sorted(w for w in where if w) == ["n0", "n1", "n2"] and where[3] is None
    result = sched.schedule(sched.snapshot_of(nodes, []), pod("x"), rng=random.Random(1))
    assert isinstance(result, sched.Placement)


def test_an_existing_pods_anti_affinity_refuses_the_newcomer() -> None:
    nodes = [node("n0"), node("n1")]
    loner = pod("loner", app="db", affinity=anti("web"))
    loner["spec"]["nodeName"] = "n0"
    for seed in range(10):
        result = sched.schedule(sched.snapshot_of(nodes, [loner]), pod("w"),
                                rng=random.Random(seed))
        assert result == sched.Placement("n1", result.score)  # type: ignore[union-attr]
    alone = sched.schedule(sched.snapshot_of([nodes[0]], [loner]), pod("w"),
                           rng=random.Random(1))
    assert isinstance(alone, sched.Unschedulable)
    assert alone.reasons == {"node(s) didn't satisfy existing pods anti-affinity rules": 1}


def test_required_affinity_follows_the_pods_it_names() -> None:
    nodes = [node(f"n{i}") for i in range(4)]
    db = pod("db", app="db")
    db["spec"]["nodeName"] = "n2"
    near = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}},
         "topologyKey": "kubernetes.io/hostname"}]}}
    for seed in range(10):
        result = sched.schedule(sched.snapshot_of(nodes, [db]), pod("cache", affinity=near),
                                rng=random.Random(seed))
        assert isinstance(result, sched.Placement) and result.node == "n2"
    # No db anywhere: refused, unless the pod is itself one the term selects.
    result = sched.schedule(sched.snapshot_of(nodes, []), pod("cache", affinity=near),
                            rng=random.Random(1))
    assert isinstance(result, sched.Unschedulable)
    assert "node(s) didn't match pod affinity rules" in result.message
    first = sched.schedule(sched.snapshot_of(nodes, []), pod("db2", app="db", affinity=near),
                           rng=random.Random(1))
    assert isinstance(first, sched.Placement)


def test_preferred_anti_affinity_spreads_and_soft_spread_prefers_the_emptier_zone() -> None:
    nodes = [node("n0"), node("n1")]
    prefer_apart = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}},
                                            "topologyKey": "kubernetes.io/hostname"}}]}}
    where = place_all(nodes, [pod(f"p{i}", affinity=prefer_apart) for i in range(2)])
    assert sorted(w for w in where if w) == ["n0", "n1"]
    zoned = [node("a1", "a"), node("b1", "b")]
    soft = [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": {"app": "web"}}}]
    where = place_all(zoned, [pod(f"s{i}", topologySpreadConstraints=soft)
                              for i in range(4)])
    assert Counter(w for w in where if w) == {"a1": 2, "b1": 2}


def test_large_clusters_stop_looking_once_enough_nodes_fit() -> None:
    assert [sched.feasible_enough(n) for n in (1, 100, 101, 1000, 5000, 50000)] == \
        [1, 100, 100, 420, 500, 2500]
    nodes = [node(f"n{i:04d}") for i in range(1000)]
    snapshot = sched.snapshot_of(nodes, [])
    chosen = {sched.schedule(snapshot, pod("p"), rng=random.Random(seed)).node  # type: ignore[union-attr]
              for seed in range(30)}
    assert len(chosen) > 10  # where the search starts moves with the seed
    full = [node(f"f{i:04d}", cpu="1") for i in range(300)]
    big = pod("big")
    big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "2"}}
    refused = sched.schedule(sched.snapshot_of(full, []), big, rng=random.Random(1))
    assert isinstance(refused, sched.Unschedulable)
    assert refused.message == "0/300 nodes are available: 300 Insufficient cpu."
