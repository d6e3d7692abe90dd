"""Where a pod goes: `schedule(snapshot, pod, rng=...)`, a pure function.

Kubernetes' scheduling cycle in miniature, and nothing else (Nomad's scheduler package
is the model: business logic only, the plumbing elsewhere). The snapshot is what the
caller read from the store: every node with what is already placed on it. A pod first
meets the filters, which each say why a node will not do, in the words Kubernetes uses
(`0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint ...`);
the nodes left are scored (the least allocated, then preferred node affinity) and the
best one wins, ties broken by the caller's random generator so that a seeded test, or
a replayed decision, is the same every time. No clock, no I/O: the leader loop that
calls it binds with a compare-and-swap and asks again on conflict.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from raftkube.api import quantity

Obj = dict[str, Any]
RESOURCES = ("cpu", "memory")
DEFAULT_MAX_PODS = 110  # Kubernetes' kubelet default, when a node states none


@dataclass(frozen=True)
class NodeInfo:
    """One node as the scheduler sees it: its object and what its pods already ask for."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Obj, ...]
    allocatable: Mapping[str, Fraction]  # cpu in cores, memory in bytes, pods
    requested: Mapping[str, Fraction]
    pods: int
    host_ports: frozenset[tuple[str, int]]  # (protocol, port) taken by its pods
    ready: bool
    unschedulable: bool


@dataclass(frozen=True)
class Snapshot:
    nodes: tuple[NodeInfo, ...]


@dataclass(frozen=True)
class Placement:
    node: str
    score: int


@dataclass(frozen=True)
class Unschedulable:
    """Why no node will do: the number of nodes turned away for each reason."""

    reasons: Mapping[str, int] = field(default_factory=dict)
    total: int = 0

    @property
    def message(self) -> str:
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.reasons.items()))
        return f"0/{self.total} nodes are available" + (f": {parts}." if parts else ".")


# ---- building a snapshot from API objects ---------------------------------------------


def pod_requests(pod: Obj) -> dict[str, Fraction]:
    """What a pod asks for: the sum over its containers, or the largest init container if
    that is more (init containers run one at a time), as Kubernetes computes it."""
    spec = pod.get("spec") or {}

    def total(containers: Iterable[Any]) -> dict[str, Fraction]:
        out = dict.fromkeys(RESOURCES, Fraction(0))
        for c in containers:
            requests = ((c or {}).get("resources") or {}).get("requests") or {}
            for name in RESOURCES:
                if name in requests:
                    out[name] += quantity.parse_quantity(requests[name])
        return out

    regular = total(spec.get("containers") or [])
    for init in spec.get("initContainers") or []:
        single = total([init])
        for name in RESOURCES:
            regular[name] = max(regular[name], single[name])
    return regular


def host_ports(pod: Obj) -> set[tuple[str, int]]:
    ports: set[tuple[str, int]] = set()
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in (c or {}).get("ports") or []:
            if isinstance(p, dict) and p.get("hostPort"):
                ports.add((str(p.get("protocol", "TCP")), int(p["hostPort"])))
    return ports


def holds_resources(pod: Obj) -> bool:
    """Whether a pod bound to a node counts against it: finished pods hold nothing."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def node_info(node: Obj, pods: Iterable[Obj]) -> NodeInfo:
    """One node as the scheduler sees it, with the pods bound to it."""
    name = node["metadata"]["name"]
    status, spec = node.get("status") or {}, node.get("spec") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    alloc = {r: quantity.parse_quantity(allocatable[r]) for r in RESOURCES
             if r in allocatable}
    alloc["pods"] = quantity.parse_quantity(allocatable.get("pods", DEFAULT_MAX_PODS))
    requested = dict.fromkeys(RESOURCES, Fraction(0))
    ports: set[tuple[str, int]] = set()
    count = 0
    for pod in pods:
        if not holds_resources(pod):
            continue
        count += 1
        for r, amount in pod_requests(pod).items():
            requested[r] += amount
        ports |= host_ports(pod)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [] if isinstance(c, dict))
    return NodeInfo(
        name=name, labels=dict(node["metadata"].get("labels") or {}),
        taints=tuple(t for t in spec.get("taints") or [] if isinstance(t, dict)),
        allocatable=alloc, requested=requested, pods=count, host_ports=frozenset(ports),
        ready=ready, unschedulable=bool(spec.get("unschedulable")))


def snapshot_of(nodes: Sequence[Obj], pods: Sequence[Obj]) -> Snapshot:
    """The snapshot for `nodes`, with every pod already bound to one of them."""
    bound: dict[str, list[Obj]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            bound.setdefault(node, []).append(pod)
    infos = [node_info(node, bound.get(node["metadata"]["name"], [])) for node in nodes]
    return Snapshot(tuple(sorted(infos, key=lambda n: n.name)))


# ---- filters: each answers None (fits) or the reason it does not ---------------------


@dataclass(frozen=True)
class Ask:
    """The pod being placed, with what it asks for worked out once, not once per node."""

    pod: Obj
    requests: Mapping[str, Fraction]
    host_ports: frozenset[tuple[str, int]]

    @classmethod
    def of(cls, pod: Obj) -> Ask:
        return cls(pod, pod_requests(pod), frozenset(host_ports(pod)))


def _unschedulable(node: NodeInfo, ask: Ask) -> str | None:
    if node.unschedulable and not tolerates(ask.pod, {"key": "node.kubernetes.io/unschedulable",
                                                  "effect": "NoSchedule"}):
        return "node(s) were unschedulable"
    return None


def _not_ready(node: NodeInfo, ask: Ask) -> str | None:
    return None if node.ready else "node(s) were not ready"


def _affinity(node: NodeInfo, ask: Ask) -> str | None:
    if not fits_node_affinity(ask.pod, node.name, node.labels):
        return "node(s) didn't match Pod's node affinity/selector"
    return None


def fits_node_affinity(pod: Obj, node_name: str, labels: Mapping[str, str]) -> bool:
    """Whether the pod's nodeSelector and required node affinity accept the node (the
    DaemonSet controller asks the same question before it makes a pod for a node)."""
    spec = pod.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    return not terms or any(_term_matches(t, labels, node_name) for t in terms)


def _taints(node: NodeInfo, ask: Ask) -> str | None:
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and \
                not tolerates(ask.pod, taint):
            shown = f"{taint.get('key')}: {taint['value']}" if taint.get("value") \
                else str(taint.get("key"))
            return f"node(s) had untolerated taint {{{shown}}}"
    return None


def _resources(node: NodeInfo, ask: Ask) -> str | None:
    if node.pods + 1 > node.allocatable.get("pods", DEFAULT_MAX_PODS):
        return "Too many pods"
    for name in RESOURCES:
        wanted = ask.requests[name]
        if wanted and node.requested.get(name, 0) + wanted > node.allocatable.get(name, 0):
            return f"Insufficient {name}"
    return None


def _ports(node: NodeInfo, ask: Ask) -> str | None:
    if ask.host_ports & node.host_ports:
        return "node(s) didn't have free ports for the requested pod ports"
    return None


FILTERS = (_unschedulable, _not_ready, _affinity, _taints, _resources, _ports)


def tolerates(pod: Obj, taint: Obj) -> bool:
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if not isinstance(t, dict):
            continue
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and \
                (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _term_matches(term: Obj, labels: Mapping[str, str], name: str) -> bool:
    """A node selector term: every expression on the labels and every field requirement
    (only `metadata.name`, as in Kubernetes, which DaemonSet pods use) holds; an empty
    term matches nothing."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    return bool(expressions or fields) and \
        all(_expression_holds(e, labels) for e in expressions) and \
        all(isinstance(f, dict) and f.get("key") == "metadata.name"
            and _expression_holds({**f, "key": "name"}, {"name": name}) for f in fields)


def _expression_holds(expr: Obj, labels: Mapping[str, str]) -> bool:
    key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
    present = key in labels
    value = labels.get(str(key), "")
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


# ---- scores and the decision ------------------------------------------------------------


def _score(node: NodeInfo, ask: Ask) -> int:
    """0-100 for the least allocated node (after this pod), plus the weights of the
    preferred node-affinity terms it matches."""
    free = []
    for name in RESOURCES:
        capacity = node.allocatable.get(name, Fraction(0))
        if capacity > 0:
            used = node.requested.get(name, Fraction(0)) + ask.requests[name]
            free.append(max(Fraction(0), capacity - used) / capacity)
    score = int(100 * sum(free) / len(free)) if free else 0
    preferred = ((((ask.pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
                 .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    for p in preferred:
        if isinstance(p, dict) and _term_matches(p.get("preference") or {}, node.labels,
                                                      node.name):
            score += int(p.get("weight", 0))
    return score


def schedule(snapshot: Snapshot, pod: Obj, *, rng: random.Random) -> Placement | Unschedulable:
    """The node for `pod`, or why there is none."""
    ask = Ask.of(pod)
    reasons: Counter[str] = Counter()
    feasible = []
    for node in snapshot.nodes:
        reason = next((r for f in FILTERS if (r := f(node, ask)) is not None), None)
        if reason is None:
            feasible.append(node)
        else:
            reasons[reason] += 1
    if not feasible:
        return Unschedulable(dict(reasons), len(snapshot.nodes))
    scored = [(_score(node, ask), node.name) for node in feasible]
    best = max(score for score, _ in scored)
    return Placement(rng.choice(sorted(name for score, name in scored if score == best)), best)
