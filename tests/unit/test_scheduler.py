"""`schedule(snapshot, pod)`: each filter with Kubernetes' reason, scoring, seeded ties,
and the invariant that no node is ever filled past what it can hold."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from raftkube.scheduler import core as sched

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: int = 110,
         labels: dict[str, str] | None = None, taints: list[Obj] | None = None,
         ready: bool | str = True, unschedulable: bool = False) -> Obj:
    status = ready if isinstance(ready, str) else "True" if ready else "False"
    conditions = [{"type": "Ready", "status": status}] if status else []
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"taints": taints or [], "unschedulable": unschedulable},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": str(pods)},
                       "conditions": conditions}}


NOT_READY = "node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
UNREACHABLE = "node(s) had untolerated taint {node.kubernetes.io/unreachable: }"


def pod(name: str = "p", *, cpu: str | None = None, memory: str | None = None,
        node_name: str = "", phase: str = "", host_port: int = 0, **spec: Any) -> Obj:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    container: Obj = {"name": "c", "image": "i", "resources": {"requests": requests}}
    if host_port:
        container["ports"] = [{"containerPort": 80, "hostPort": host_port}]
    body: Obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                 "spec": {"containers": [container], **spec}}
    if node_name:
        body["spec"]["nodeName"] = node_name
    if phase:
        body["status"] = {"phase": phase}
    return body


def decide(nodes: list[Obj], new: Obj, bound: list[Obj] | None = None,
           seed: int = 1) -> sched.Placement | sched.Unschedulable:
    return sched.schedule(sched.snapshot_of(nodes, bound or []), new, rng=random.Random(seed))


@pytest.mark.parametrize(("nodes", "bound", "new", "reason"), [
    ([node("a", cpu="1")], [pod("x", cpu="800m", node_name="a")], pod(cpu="300m"),
     "Insufficient cpu"),
    ([node("a", memory="1Gi")], [], pod(memory="2Gi"), "Insufficient memory"),
    ([node("a", pods=1)], [pod("x", node_name="a")], pod(), "Too many pods"),
    ([node("a", ready=False)], [], pod(), NOT_READY),
    ([node("a", ready="Unknown")], [], pod(), UNREACHABLE),
    ([node("a", ready="")], [], pod(), NOT_READY),  # registering: not ready yet
    # The node lifecycle's taints, with Kubernetes' words for a taint without a value.
    ([node("a", ready="Unknown", taints=[
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}])], [], pod(),
     UNREACHABLE),
    ([node("a", taints=[{"key": "dedicated", "effect": "NoExecute"}])], [], pod(),
     "node(s) had untolerated taint {dedicated: }"),
    ([node("a", unschedulable=True)], [], pod(), "node(s) were unschedulable"),
    ([node("a", labels={"disk": "hdd"})], [], pod(nodeSelector={"disk": "ssd"}),
     "node(s) didn't match Pod's node affinity/selector"),
    ([node("a", labels={"zone": "b"})], [], pod(affinity={"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}),
     "node(s) didn't match Pod's node affinity/selector"),
    ([node("a", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}])], [], pod(),
     "node(s) had untolerated taint {gpu: yes}"),
    ([node("a")], [pod("x", host_port=8080, node_name="a")], pod(host_port=8080),
     "node(s) didn't have free ports for the requested pod ports"),
], ids=["cpu", "memory", "pods", "not-ready", "unknown", "no-condition", "unreachable-taints",
        "no-execute", "cordoned", "selector", "affinity", "taint", "host-port"])
def test_each_filter_turns_a_node_away_with_kubernetes_words(
        nodes: list[Obj], bound: list[Obj], new: Obj, reason: str) -> None:
    result = decide(nodes, new, bound)
    assert isinstance(result, sched.Unschedulable)
    assert result.reasons == {reason: 1}
    assert result.message == f"0/1 nodes are available: 1 {reason}."


def test_the_reasons_are_counted_over_all_nodes() -> None:
    nodes = [node("a", cpu="1"), node("b", cpu="1"), node("c", ready=False)]
    result = decide(nodes, pod(cpu="2"))
    assert isinstance(result, sched.Unschedulable)
    assert result.message == ("0/3 nodes are available: 2 Insufficient cpu, "
                              f"1 {NOT_READY}.")


def test_a_pod_that_tolerates_a_node_being_down_may_go_there() -> None:
    # Kubernetes' scheduler has no readiness filter, only the taints readiness implies:
    # a pod that tolerates those NoSchedule may go to such a node.
    down = [node("a", ready=False), node("b", ready="Unknown", taints=[
        {"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}])]
    both = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists"},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]
    assert isinstance(decide(down[:1], pod(tolerations=both[:1])), sched.Placement)
    assert isinstance(decide(down[1:], pod(tolerations=both[1:])), sched.Placement)
    # NoExecute only (a DaemonSet pod's defaults): the NoSchedule one still turns it away.
    no_execute = [dict(t, effect="NoExecute", tolerationSeconds=300) for t in both]
    result = decide(down, pod(tolerations=no_execute))
    assert isinstance(result, sched.Unschedulable)
    assert result.message == f"0/2 nodes are available: 1 {NOT_READY}, 1 {UNREACHABLE}."
    assert isinstance(decide(down, pod(tolerations=[{"operator": "Exists"}])),
                      sched.Placement)


def test_what_lets_a_pod_through() -> None:
    tainted = node("a", taints=[{"key": "gpu", "value": "yes", "effect": "NoSchedule"}],
                   labels={"zone": "a", "cores": "16"})
    tolerant = pod(tolerations=[{"key": "gpu", "operator": "Equal", "value": "yes"}],
                   affinity={"nodeAffinity": {
                       "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                           {"matchExpressions": [{"key": "zone", "operator": "NotIn",
                                                  "values": ["b"]}]},
                           {"matchExpressions": [{"key": "cores", "operator": "Gt",
                                                  "values": ["8"]}]}]}}})
    assert decide([tainted], tolerant) == sched.Placement("a", 100)
    everything = pod(tolerations=[{"operator": "Exists"}])
    assert isinstance(decide([tainted], everything), sched.Placement)
    prefer_no_schedule = node("b", taints=[{"key": "k", "effect": "PreferNoSchedule"}])
    assert isinstance(decide([prefer_no_schedule], pod()), sched.Placement)
    cordoned_ok = pod(tolerations=[{"key": "node.kubernetes.io/unschedulable",
                                    "operator": "Exists", "effect": "NoSchedule"}])
    assert isinstance(decide([node("c", unschedulable=True)], cordoned_ok), sched.Placement)


def test_a_daemon_pod_goes_to_the_node_its_match_fields_name() -> None:
    """DaemonSet pods name their node with matchFields on metadata.name (Kubernetes'
    ReplaceDaemonSetPodNodeNameNodeAffinity); every other node turns them away."""
    pinned = pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                "values": ["b"]}]}]}}})
    for seed in range(5):
        assert decide([node("a"), node("b"), node("c")], pinned, seed=seed) == \
            sched.Placement("b", 100)
    result = decide([node("a"), node("c")], pinned)
    assert isinstance(result, sched.Unschedulable)
    assert result.reasons == {"node(s) didn't match Pod's node affinity/selector": 2}
    both = pod(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                "values": ["b"]}],
                               "matchExpressions": [{"key": "zone", "operator": "In",
                                                     "values": ["x"]}]}]}}})
    assert isinstance(decide([node("b")], both), sched.Unschedulable)  # both must hold
    assert isinstance(decide([node("b", labels={"zone": "x"})], both), sched.Placement)


def test_finished_pods_hold_nothing() -> None:
    bound = [pod("done", cpu="1", node_name="a", phase="Succeeded"),
             pod("failed", cpu="1", node_name="a", phase="Failed")]
    assert isinstance(decide([node("a", cpu="1")], pod(cpu="1"), bound), sched.Placement)


def test_init_containers_count_one_at_a_time() -> None:
    new = pod(cpu="500m")
    new["spec"]["initContainers"] = [
        {"name": f"i{n}", "image": "i", "resources": {"requests": {"cpu": "900m"}}}
        for n in range(3)]
    assert sched.pod_requests(new)["cpu"] == 900  # millicores
    assert isinstance(decide([node("a", cpu="1")], new), sched.Placement)


def test_the_least_allocated_node_wins_and_preferences_add_weight() -> None:
    nodes = [node("busy", cpu="4"), node("idle", cpu="4")]
    bound = [pod("x", cpu="3", memory="4Gi", node_name="busy")]
    assert decide(nodes, pod(cpu="1"), bound) == sched.Placement("idle", 87)
    preferring = pod(cpu="1", affinity={"nodeAffinity": {
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": {"matchExpressions": [
                {"key": "fast", "operator": "Exists"}]}}]}})
    nodes[0]["metadata"]["labels"] = {"fast": "1"}
    placed = decide(nodes, preferring, bound)
    assert placed == sched.Placement("busy", 125)  # 25 left free, plus the weight


def test_ties_are_broken_by_the_seed_and_only_by_it() -> None:
    nodes = [node(n) for n in "abcdef"]
    chosen = {seed: decide(nodes, pod(), seed=seed) for seed in range(20)}
    assert all(decide(nodes, pod(), seed=s) == p for s, p in chosen.items())
    assert len({p.node for p in chosen.values() if isinstance(p, sched.Placement)}) > 1


@settings(max_examples=60, deadline=None)
@given(capacities=hs.lists(hs.integers(1, 8), min_size=1, max_size=5),
       asks=hs.lists(hs.integers(0, 5), min_size=1, max_size=30),
       seed=hs.integers(0, 2**32))
def test_no_node_is_ever_filled_past_its_capacity(
        capacities: list[int], asks: list[int], seed: int) -> None:
    """Binding one pod after another as the scheduler says, every node's requests stay
    within what it can hold, and a refusal happens only when no node has room."""
    nodes = [node(f"n{i}", cpu=str(c), pods=4) for i, c in enumerate(capacities)]
    bound: list[Obj] = []
    placed: list[tuple[str, int]] = []  # (node, cpu asked): the test's own bookkeeping
    rng = random.Random(seed)
    for i, ask in enumerate(asks):
        new = pod(f"p{i}", cpu=str(ask) if ask else None)
        result = sched.schedule(sched.snapshot_of(nodes, bound), new, rng=rng)
        # What is used, from the asks this test made, not from the scheduler's own sums.
        used = {n["metadata"]["name"]: (0, 0) for n in nodes}
        for where, asked in placed:
            c, k = used[where]
            used[where] = (c + asked, k + 1)
        fits = [n for n, cap in zip(nodes, capacities, strict=True)
                if used[n["metadata"]["name"]][0] + ask <= cap
                and used[n["metadata"]["name"]][1] < 4]
        if isinstance(result, sched.Unschedulable):
            assert not fits, (result.message, fits)
            continue
        assert result.node in {n["metadata"]["name"] for n in fits}
        new["spec"]["nodeName"] = result.node
        bound.append(new)
        placed.append((result.node, ask))


NODE_SHAPES = hs.builds(
    lambda i, cpu, mem, pods, bound, label, taint, ready, cordoned: (
        node(f"n{i}", cpu=cpu, memory=mem, pods=pods, labels={"disk": label} if label else {},
             taints=[{"key": "gpu", "effect": "NoSchedule"}] if taint else [],
             ready=ready, unschedulable=cordoned),
        [pod(f"b{i}-{k}", cpu=c, memory=m, node_name=f"n{i}", host_port=h)
         for k, (c, m, h) in enumerate(bound)]),
    hs.integers(0, 10**6), hs.sampled_from(["0", "500m", "1", "4"]),
    hs.sampled_from(["0", "256Mi", "1Gi", "8Gi"]), hs.integers(0, 3),
    hs.lists(hs.tuples(hs.sampled_from([None, "100m", "900m", "2"]),
                       hs.sampled_from([None, "128Mi", "1Gi"]), hs.sampled_from([0, 80])),
             max_size=3),
    hs.sampled_from(["", "ssd", "hdd"]), hs.booleans(), hs.booleans(), hs.booleans())
POD_SHAPES = hs.builds(
    lambda cpu, mem, port, selector, tolerate: pod(
        cpu=cpu, memory=mem, host_port=port,
        **({"nodeSelector": {"disk": selector}} if selector else {}),
        **({"tolerations": [{"operator": "Exists"}]} if tolerate else {})),
    hs.sampled_from([None, "0", "100m", "1", "3"]), hs.sampled_from([None, "64Mi", "2Gi"]),
    hs.sampled_from([0, 80]), hs.sampled_from(["", "ssd"]), hs.booleans())


@given(shapes=hs.lists(NODE_SHAPES, min_size=1, max_size=6), new=POD_SHAPES)
@settings(max_examples=300, deadline=None)
def test_the_fast_filter_and_score_paths_say_what_the_plain_ones_say(
        shapes: list[tuple[Obj, list[Obj]]], new: Obj) -> None:
    infos = [sched.node_info(n, bound) for n, bound in shapes]
    ask = sched.Ask.of(new)
    by_affinity = bool(new["spec"].get("nodeSelector")) or ask.node_terms is not None
    for info in infos:
        plain = next((r for f in sched.FILTERS if (r := f(info, ask)) is not None), None)
        assert sched._first_reason(info, ask, by_affinity=by_affinity,
                                   by_ports=bool(ask.host_ports)) == plain
    assert sched._least_allocated_all(infos, ask) == \
        [sched._least_allocated(info, ask) for info in infos]
