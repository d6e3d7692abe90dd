"""Where a pod goes: `schedule(snapshot, pod, rng=...)`, a pure function.

Kubernetes' scheduling cycle in miniature, and nothing else (Nomad's scheduler package
is the model: business logic only, the plumbing elsewhere). The snapshot is what the
caller read from the store: every node with what is already placed on it. A pod first
meets the filters, which each say why a node will not do, in the words Kubernetes uses
(`0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint ...`);
the nodes left are scored and the best one wins, ties broken by the caller's random
generator so that a seeded test, or a replayed decision, is the same every time. No
clock, no I/O: the leader loop that calls it binds with a compare-and-swap.

Filters: cordon, taints, node selector and required node affinity, cpu / memory / pod
count, host ports, required pod affinity and anti-affinity (both ways: a
pod already placed may refuse the newcomer), and `topologySpreadConstraints` with
`whenUnsatisfiable: DoNotSchedule`. Scores (Kubernetes' plugins and weights, in
miniature): least allocated (0-100), preferred node affinity (the weights of the terms
that match), spreading a controller's pods over nodes (0-100, weight 2), soft topology
spread (0-100, weight 2) and preferred pod affinity (the weights, signed).

Readiness is a taint, as in Kubernetes (TaintNodesByCondition): a node whose Ready
condition is False (or not posted yet) counts as tainted `node.kubernetes.io/not-ready:
NoSchedule`, one whose Ready is Unknown as `node.kubernetes.io/unreachable:NoSchedule`,
whether or not the node lifecycle controller has written the taint yet. So a pod that
tolerates them NoSchedule may still go there (a DaemonSet pod's default tolerations are
NoExecute only: it waits, as in Kubernetes), and the reason a pod is turned away reads
as Kubernetes' does: `node(s) had untolerated taint {node.kubernetes.io/unreachable: }`.

Amounts are integers: millicores and bytes, rounded up as Kubernetes rounds them.

At scale the search stops early, as Kubernetes' `percentageOfNodesToScore` does: once
enough feasible nodes are found (all of them up to 100 nodes; 50% less one point per
125 nodes beyond, never under 5% or 100 nodes), starting at a random node so that no
node is always looked at last. Reasons are then counted over the nodes looked at.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import conditions, quantity, requests, selectors, taints

Obj = dict[str, Any]
RESOURCES = ("cpu", "memory")
DEFAULT_MAX_PODS = 110  # Kubernetes' kubelet default, when a node states none
HOSTNAME = "kubernetes.io/hostname"
SPREAD_WEIGHT = 2
TOPOLOGY_WEIGHT = 2


@dataclass(frozen=True)
class NodeInfo:
    """One node as the scheduler sees it: its object and what its pods already ask for."""

    name: str
    labels: Mapping[str, str]
    taints: tuple[Obj, ...]  # as the node states them, then what its readiness implies
    allocatable: Mapping[str, int]  # cpu in millicores, memory in bytes, pods
    requested: Mapping[str, int]
    pods: int
    host_ports: frozenset[tuple[str, int]]  # (protocol, port) taken by its pods
    ready: bool
    unschedulable: bool
    owners: Mapping[str, int] = field(default_factory=dict)  # controller uid -> pods here
    placed: tuple[Obj, ...] = ()  # the pods holding room here, for pod (anti)affinity
    # Those of them with pod (anti-)affinity of their own: an existing pod's required
    # anti-affinity may refuse a newcomer, and most pods have none, so only these are
    # looked at on every decision.
    with_affinity: tuple[Obj, ...] = ()
    # Worked out once from the above, for the filters and the least-allocated score that
    # look at hundreds of nodes per decision: (pods it still takes, free cpu, free
    # memory, allocatable cpu, allocatable memory).
    room: tuple[int, int, int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alloc, used = self.allocatable, self.requested
        cpu, memory = alloc.get("cpu", 0), alloc.get("memory", 0)
        object.__setattr__(self, "room", (
            alloc.get("pods", DEFAULT_MAX_PODS) - self.pods, cpu - used.get("cpu", 0),
            memory - used.get("memory", 0), cpu, memory))


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


def pod_requests(pod: Obj) -> dict[str, int]:
    """What a pod asks for (`api.requests`: its effective requests, sidecars and init
    containers counted as they run, and its overhead), the node agent's numbers too."""
    return requests.pod_requests(pod, RESOURCES)


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


def controller_uid(pod: Obj) -> str:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return str(ref.get("uid") or "")
    return ""


def _has_pod_affinity(pod: Obj) -> bool:
    affinity = (pod.get("spec") or {}).get("affinity") or {}
    return bool(affinity.get("podAffinity") or affinity.get("podAntiAffinity"))


def node_info(node: Obj, pods: Iterable[Obj]) -> NodeInfo:
    """One node as the scheduler sees it, with the pods bound to it."""
    name = node["metadata"]["name"]
    status, spec = node.get("status") or {}, node.get("spec") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    alloc = {r: requests.amount(r, allocatable[r]) for r in RESOURCES if r in allocatable}
    alloc["pods"] = int(quantity.parse_quantity(allocatable.get("pods", DEFAULT_MAX_PODS)))
    requested = dict.fromkeys(RESOURCES, 0)
    ports: set[tuple[str, int]] = set()
    owners: Counter[str] = Counter()
    placed = []
    for pod in pods:
        if not holds_resources(pod):
            continue
        placed.append(pod)
        for r, n in pod_requests(pod).items():
            requested[r] += n
        ports |= host_ports(pod)
        owner = controller_uid(pod)
        if owner:
            owners[owner] += 1
    ready = readiness_taint(node)
    labels = dict(node["metadata"].get("labels") or {})
    labels.setdefault(HOSTNAME, name)
    return NodeInfo(
        name=name, labels=labels,
        taints=tuple(t for t in spec.get("taints") or [] if isinstance(t, dict)) + (
            (ready,) if ready is not None else ()),
        allocatable=alloc, requested=requested, pods=len(placed),
        host_ports=frozenset(ports), ready=ready is None,
        unschedulable=bool(spec.get("unschedulable")), owners=dict(owners),
        placed=tuple(placed),
        with_affinity=tuple(p for p in placed if _has_pod_affinity(p)))


def readiness_taint(node: Obj) -> Obj | None:
    """The NoSchedule taint the node's Ready condition implies; None when it is Ready."""
    found = (conditions.get(node, "Ready") or {}).get("status")
    if found == "True":
        return None
    key = taints.UNREACHABLE if found == "Unknown" else taints.NOT_READY
    return {"key": key, "effect": taints.NO_SCHEDULE}


def snapshot_of(nodes: Sequence[Obj], pods: Sequence[Obj]) -> Snapshot:
    """The snapshot for `nodes`, with every pod already bound to one of them."""
    bound: dict[str, list[Obj]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            bound.setdefault(node, []).append(pod)
    infos = [node_info(node, bound.get(node["metadata"]["name"], [])) for node in nodes]
    return Snapshot(tuple(sorted(infos, key=lambda n: n.name)))


# ---- what the pod asks, worked out once per decision ------------------------------------


@dataclass(frozen=True)
class Term:
    """A pod (anti-)affinity term or spread constraint: which pods, which domains."""

    selector: selectors.LabelSelector
    topology_key: str
    namespaces: frozenset[str]
    weight: int = 0  # preferred terms only
    max_skew: int = 1  # spread constraints only
    hard: bool = True

    def selects(self, pod: Obj) -> bool:
        meta = pod.get("metadata") or {}
        return meta.get("namespace", "default") in self.namespaces and \
            self.selector.matches(meta.get("labels"))


@dataclass(frozen=True)
class NodeTerm:
    """A node selector term: requirements on the node's labels (`matchExpressions`) and
    on its name (`matchFields` on `metadata.name`, the only field Kubernetes allows there,
    and what DaemonSet pods name their node with); all must hold."""

    labels: selectors.LabelSelector | None
    name: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (In or NotIn, values)

    def matches(self, node_name: str, labels: Mapping[str, str]) -> bool:
        if self.labels is not None and not self.labels.matches(labels):
            return False
        return all((node_name in values) == (op == "In") for op, values in self.name)


def node_term(raw: Any) -> NodeTerm | None:
    """A node selector term, or None when it can match no node (empty, or not valid)."""
    if not isinstance(raw, Mapping):
        return None
    fields = raw.get("matchFields") or []
    labels = None
    if raw.get("matchExpressions"):
        labels = selectors.node_selector_term(raw)
        if labels is None:
            return None
    elif not fields:
        return None
    name = []
    for f in fields if isinstance(fields, list) else [None]:
        values = f.get("values") if isinstance(f, Mapping) else None
        if not isinstance(f, Mapping) or f.get("key") != "metadata.name" or \
                f.get("operator") not in ("In", "NotIn") or not isinstance(values, list):
            return None
        name.append((str(f["operator"]), tuple(str(v) for v in values)))
    return NodeTerm(labels, tuple(name))


@dataclass(frozen=True)
class Ask:
    """The pod being placed, with what it asks for worked out once, not once per node."""

    pod: Obj
    requests: Mapping[str, int]
    host_ports: frozenset[tuple[str, int]]
    node_terms: tuple[NodeTerm | None, ...] | None  # None: no requirement
    owner: str
    affinity: tuple[Term, ...] = ()
    anti_affinity: tuple[Term, ...] = ()
    preferred: tuple[Term, ...] = ()  # weight > 0 affinity, < 0 anti-affinity
    spread: tuple[Term, ...] = ()

    @classmethod
    def of(cls, pod: Obj) -> Ask:
        spec = pod.get("spec") or {}
        affinity = spec.get("affinity") or {}
        required = ((affinity.get("nodeAffinity") or {})
                    .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
        terms = required.get("nodeSelectorTerms") or []
        namespace = (pod.get("metadata") or {}).get("namespace", "default")
        pod_aff = affinity.get("podAffinity") or {}
        pod_anti = affinity.get("podAntiAffinity") or {}
        preferred = [t for p in pod_aff.get("preferredDuringSchedulingIgnoredDuringExecution")
                     or [] if (t := _term(p.get("podAffinityTerm"), namespace,
                                          weight=int(p.get("weight", 0)))) is not None]
        preferred += [t for p in pod_anti.get(
            "preferredDuringSchedulingIgnoredDuringExecution") or []
            if (t := _term(p.get("podAffinityTerm"), namespace,
                           weight=-int(p.get("weight", 0)))) is not None]
        return cls(
            pod, pod_requests(pod), frozenset(host_ports(pod)),
            tuple(node_term(t) for t in terms) if terms else None,
            controller_uid(pod),
            _terms(pod_aff.get("requiredDuringSchedulingIgnoredDuringExecution"), namespace),
            _terms(pod_anti.get("requiredDuringSchedulingIgnoredDuringExecution"), namespace),
            tuple(preferred), _spread(spec.get("topologySpreadConstraints"), namespace))


def _term(raw: Any, namespace: str, *, weight: int = 0) -> Term | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("topologyKey"), str):
        return None
    try:
        selector = selectors.selector_from_object(raw.get("labelSelector"))
    except selectors.SelectorError:
        return None
    if raw.get("labelSelector") is None:
        return None  # Kubernetes: a term without a selector selects no pods
    namespaces = raw.get("namespaces") or [namespace]
    return Term(selector, raw["topologyKey"], frozenset(namespaces), weight=weight)


def _terms(raw: Any, namespace: str) -> tuple[Term, ...]:
    return tuple(t for r in raw or [] if (t := _term(r, namespace)) is not None)


def _spread(raw: Any, namespace: str) -> tuple[Term, ...]:
    out = []
    for c in raw or []:
        if not isinstance(c, dict) or not isinstance(c.get("topologyKey"), str):
            continue
        try:
            selector = selectors.selector_from_object(c.get("labelSelector"))
        except selectors.SelectorError:
            continue
        out.append(Term(selector, c["topologyKey"], frozenset([namespace]),
                        max_skew=max(1, int(c.get("maxSkew", 1))),
                        hard=c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule"))
    return tuple(out)


# ---- filters: each answers None (fits) or the reason it does not ---------------------


def _unschedulable(node: NodeInfo, ask: Ask) -> str | None:
    if node.unschedulable and not tolerates(ask.pod, {"key": "node.kubernetes.io/unschedulable",
                                                  "effect": "NoSchedule"}):
        return "node(s) were unschedulable"
    return None


def _node_affinity(node: NodeInfo, ask: Ask) -> str | None:
    if not _matches_node(node, ask):
        return "node(s) didn't match Pod's node affinity/selector"
    return None


def _matches_node(node: NodeInfo, ask: Ask) -> bool:
    selector = (ask.pod.get("spec") or {}).get("nodeSelector") or {}
    if any(node.labels.get(k) != v for k, v in selector.items()):
        return False
    if ask.node_terms is None:
        return True
    return any(t is not None and t.matches(node.name, node.labels) for t in ask.node_terms)


def fits_node_affinity(pod: Obj, node_name: str, labels: Mapping[str, str]) -> bool:
    """Whether the pod's nodeSelector and required node affinity accept the node (the
    DaemonSet controller asks the same question before it makes a pod for a node)."""
    spec = pod.get("spec") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    terms = ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
              .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
             .get("nodeSelectorTerms") or [])
    return not terms or any(t is not None and t.matches(node_name, labels)
                            for t in map(node_term, terms))


def _taints(node: NodeInfo, ask: Ask) -> str | None:
    for taint in node.taints:
        if taint.get("effect") in (taints.NO_SCHEDULE, taints.NO_EXECUTE) and \
                not tolerates(ask.pod, taint):
            # Kubernetes' words, the space included when the taint has no value.
            return (f"node(s) had untolerated taint {{{taint.get('key') or ''}: "
                    f"{taint.get('value') or ''}}}")
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


# Kubernetes' order (NodeUnschedulable, TaintToleration, NodeAffinity, ...): a node
# is turned away for the first reason found.
FILTERS = (_unschedulable, _taints, _node_affinity, _resources, _ports)


def _first_reason(node: NodeInfo, ask: Ask, *, by_affinity: bool, by_ports: bool
                  ) -> str | None:
    """What `FILTERS` say, in their order, without asking those that cannot refuse this
    node or this pod: with 1,000 nodes a decision looks at 420 of them, and calling six
    filters through a generator for each was most of the scheduler's time."""
    if node.unschedulable and (reason := _unschedulable(node, ask)) is not None:
        return reason
    # Readiness is a taint (not-ready or unreachable) among the node's taints.
    if node.taints and (reason := _taints(node, ask)) is not None:
        return reason
    if by_affinity and not _matches_node(node, ask):
        return "node(s) didn't match Pod's node affinity/selector"
    pods, cpu, memory, _cpu, _memory = node.room
    if pods < 1:
        return "Too many pods"
    wanted = ask.requests
    if wanted["cpu"] > cpu and wanted["cpu"]:
        return "Insufficient cpu"
    if wanted["memory"] > memory and wanted["memory"]:
        return "Insufficient memory"
    if by_ports and ask.host_ports & node.host_ports:
        return "node(s) didn't have free ports for the requested pod ports"
    return None


def tolerates(pod: Obj, taint: Obj) -> bool:
    """Whether one of the pod's tolerations matches the taint (`api.taints`' rule)."""
    return any(isinstance(t, dict) and taints.tolerates(t, taint)
               for t in (pod.get("spec") or {}).get("tolerations") or [])


# ---- pod (anti-)affinity and topology spread: counted once per decision -----------------


@dataclass
class Domains:
    """For one term: how many selected pods each topology domain holds."""

    term: Term
    counts: Counter[str] = field(default_factory=Counter)
    eligible: set[str] = field(default_factory=set)  # domains of nodes the pod could use


def _count(term: Term, nodes: Sequence[NodeInfo], ask: Ask | None) -> Domains:
    found = Domains(term)
    for node in nodes:
        domain = node.labels.get(term.topology_key)
        if domain is None:
            continue
        if ask is not None and _matches_node(node, ask):
            found.eligible.add(domain)
        n = sum(1 for p in node.placed if term.selects(p))
        if n:
            found.counts[domain] += n
    return found


@dataclass
class Context:
    """What the pod-level filters and scores need, computed once for the whole snapshot."""

    affinity: list[Domains]
    anti: list[Domains]
    existing_anti: Counter[tuple[str, str]]  # (topology key, domain) refusing this pod
    preferred: list[Domains]
    spread: list[Domains]
    self_matches: list[bool]  # per affinity term: the pod matches its own term

    @classmethod
    def of(cls, nodes: Sequence[NodeInfo], ask: Ask) -> Context | None:
        pod_level = ask.affinity or ask.anti_affinity or ask.preferred or ask.spread
        existing: Counter[tuple[str, str]] = Counter()
        for node in [n for n in nodes if n.with_affinity]:  # most nodes have none
            for placed in node.with_affinity:
                namespace = (placed.get("metadata") or {}).get("namespace", "default")
                anti = ((placed.get("spec") or {}).get("affinity") or {}).get(
                    "podAntiAffinity") or {}
                for term in _terms(anti.get("requiredDuringSchedulingIgnoredDuringExecution"),
                                   namespace):
                    domain = node.labels.get(term.topology_key)
                    if domain is not None and term.selects(ask.pod):
                        existing[(term.topology_key, domain)] += 1
        if not pod_level and not existing:
            return None
        return cls(
            affinity=[_count(t, nodes, None) for t in ask.affinity],
            anti=[_count(t, nodes, None) for t in ask.anti_affinity],
            existing_anti=existing,
            preferred=[_count(t, nodes, None) for t in ask.preferred],
            spread=[_count(t, nodes, ask) for t in ask.spread],
            self_matches=[t.selects(ask.pod) for t in ask.affinity])


def _pod_level(node: NodeInfo, ask: Ask, ctx: Context) -> str | None:
    for key, refused in ctx.existing_anti:
        if node.labels.get(key) == refused:
            return "node(s) didn't satisfy existing pods anti-affinity rules"
    for domains in ctx.anti:
        domain = node.labels.get(domains.term.topology_key)
        if domain is not None and domains.counts.get(domain):
            return "node(s) didn't match pod anti-affinity rules"
    for domains, self_match in zip(ctx.affinity, ctx.self_matches, strict=True):
        domain = node.labels.get(domains.term.topology_key)
        if domain is None:
            return "node(s) didn't match pod affinity rules"
        if not domains.counts.get(domain):
            # Kubernetes' exception: the first pod of a group that selects itself.
            if not (self_match and not domains.counts):
                return "node(s) didn't match pod affinity rules"
    for domains in ctx.spread:
        if not domains.term.hard:
            continue
        domain = node.labels.get(domains.term.topology_key)
        if domain is None:
            return "node(s) didn't match pod topology spread constraints (missing required " \
                   "label)"
        low = min((domains.counts.get(d, 0) for d in domains.eligible), default=0)
        mine = 1 if domains.term.selects(ask.pod) else 0
        if domains.counts.get(domain, 0) + mine - low > domains.term.max_skew:
            return "node(s) didn't match pod topology spread constraints"
    return None


# ---- scores and the decision ------------------------------------------------------------


def _least_allocated(node: NodeInfo, ask: Ask) -> int:
    """0-100: how much of the node would still be free after this pod."""
    free = []
    for name in RESOURCES:
        capacity = node.allocatable.get(name, 0)
        if capacity > 0:
            used = node.requested.get(name, 0) + ask.requests[name]
            free.append(max(0, capacity - used) / capacity)
    return int(100 * sum(free) / len(free)) if free else 0


def _preferred_node_affinity(node: NodeInfo, ask: Ask) -> int:
    preferred = ((((ask.pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
                 .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    score = 0
    for p in preferred:
        if isinstance(p, dict):
            term = node_term(p.get("preference"))
            if term is not None and term.matches(node.name, node.labels):
                score += int(p.get("weight", 0))
    return score


def _preferred_terms(ask: Ask) -> list[tuple[NodeTerm, int]]:
    """The pod's preferred node affinity terms, read once per decision."""
    preferred = ((((ask.pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
                 .get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    out = []
    for p in preferred:
        if isinstance(p, dict):
            term = node_term(p.get("preference"))
            if term is not None:
                out.append((term, int(p.get("weight", 0))))
    return out


def _least_allocated_all(feasible: Sequence[NodeInfo], ask: Ask) -> list[int]:
    """`_least_allocated` of each node, the same arithmetic in one loop."""
    cpu_asked, memory_asked = ask.requests["cpu"], ask.requests["memory"]
    out = []
    for node in feasible:
        _pods, cpu, memory, cpu_total, memory_total = node.room
        if cpu_total > 0 and memory_total > 0:
            cpu_left, memory_left = cpu - cpu_asked, memory - memory_asked
            free = (cpu_left if cpu_left > 0 else 0) / cpu_total
            free += (memory_left if memory_left > 0 else 0) / memory_total
            out.append(int(100 * free / 2))
        elif cpu_total > 0:
            out.append(int(100 * (max(0, cpu - cpu_asked) / cpu_total) / 1))
        elif memory_total > 0:
            out.append(int(100 * (max(0, memory - memory_asked) / memory_total) / 1))
        else:
            out.append(0)
    return out


def _scores(feasible: Sequence[NodeInfo], ask: Ask, ctx: Context | None) -> list[int]:
    scores = _least_allocated_all(feasible, ask)
    preferred = _preferred_terms(ask)
    if preferred:
        scores = [s + sum(weight for term, weight in preferred
                          if term.matches(n.name, n.labels))
                  for s, n in zip(scores, feasible, strict=True)]
    if ask.owner:
        # Spread a controller's pods over nodes: 100 where it has fewest.
        mine = [n.owners.get(ask.owner, 0) for n in feasible]
        most = max(mine)
        if most:
            scores = [s + SPREAD_WEIGHT * (100 * (most - m) // most)
                      for s, m in zip(scores, mine, strict=True)]
    if ctx is not None:
        for domains in ctx.spread:
            if domains.term.hard:
                continue
            counts = [domains.counts.get(n.labels.get(domains.term.topology_key, ""), 0)
                      for n in feasible]
            most = max(counts)
            if most:
                scores = [s + TOPOLOGY_WEIGHT * (100 * (most - c) // most)
                          for s, c in zip(scores, counts, strict=True)]
        for domains in ctx.preferred:
            scores = [s + (domains.term.weight
                           if domains.counts.get(n.labels.get(domains.term.topology_key, ""))
                           else 0) for s, n in zip(scores, feasible, strict=True)]
    return scores


def feasible_enough(total: int) -> int:
    """How many feasible nodes to look for before scoring (Kubernetes' adaptive rule)."""
    if total <= 100:
        return total
    percent = max(5, 50 - total // 125)
    return max(100, total * percent // 100)


def schedule(snapshot: Snapshot, pod: Obj, *, rng: random.Random) -> Placement | Unschedulable:
    """The node for `pod`, or why there is none."""
    nodes = snapshot.nodes
    if not nodes:
        return Unschedulable({}, 0)
    ask = Ask.of(pod)
    ctx = Context.of(nodes, ask)
    want = feasible_enough(len(nodes))
    start = rng.randrange(len(nodes)) if want < len(nodes) else 0
    reasons: Counter[str] = Counter()
    feasible: list[NodeInfo] = []
    by_affinity = bool((pod.get("spec") or {}).get("nodeSelector")) or \
        ask.node_terms is not None
    by_ports = bool(ask.host_ports)
    for node in itertools.chain(nodes[start:], nodes[:start]):
        reason = _first_reason(node, ask, by_affinity=by_affinity, by_ports=by_ports)
        if reason is None and ctx is not None:
            reason = _pod_level(node, ask, ctx)
        if reason is None:
            feasible.append(node)
            if len(feasible) >= want:
                break
        else:
            reasons[reason] += 1
    if not feasible:
        return Unschedulable(dict(reasons), len(nodes))
    scored = list(zip(_scores(feasible, ask, ctx), (n.name for n in feasible), strict=True))
    best = max(score for score, _ in scored)
    return Placement(rng.choice(sorted(name for score, name in scored if score == best)), best)
