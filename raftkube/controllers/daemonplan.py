"""Which pods a DaemonSet wants where: pure decisions over its nodes and pods.

Kubernetes' pkg/controller/daemon in miniature, without I/O:

- `eligibility(ds, node)`: should a daemon pod run there, and may one that runs there
  stay? The node must fit the template's nodeName, nodeSelector and required node
  affinity, and every NoSchedule/NoExecute taint must be tolerated by the template plus
  the tolerations every DaemonSet pod gets (not-ready, unreachable, the pressures,
  unschedulable; network-unavailable for hostNetwork pods). A pod may stay on a node
  whose only untolerated taints are NoSchedule.
- `daemon_pod(ds, node, hash)`: the pod for a node. It names its node with required node
  affinity, `matchFields` on `metadata.name`, replacing the template's terms (which the
  node was already checked against), as Kubernetes has done since 1.12: the scheduler
  places it, so resources, host ports and readiness are checked by the one component
  that counts them, and a pod that does not fit says why (`FailedScheduling`) instead of
  being started on a full node. Setting `spec.nodeName` directly would skip all that.
- `manage(...)`: pods to create and delete so that each eligible node runs exactly one
  (failed pods are handed back separately: the controller deletes them under a back-off).
- `rolling_update(...)`: which old pods to replace now, within maxUnavailable, or which
  nodes get a new pod beside the old one, within maxSurge. A node that is not Ready is
  left out of the budget: whatever its pods are (an old one Terminating with no agent to
  finish it, a new one that will never start), they serve nothing and nothing done
  elsewhere changes that; counting them would stall the rollout on every other node
  for as long as the node stays dark (Kubernetes' does). Its old pod is replaced at
  once, as an old pod that is not ready is anywhere.
- `status(...)`: the counts of `DaemonSetStatus`.

Pods are told apart by the `controller-revision-hash` label: a hash of the pod template.
Kubernetes keeps each template in a ControllerRevision object (for `rollout undo`);
raftkube has no such kind, so the hash is computed from the template alone.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import conditions
from raftkube.controllers import podcontrol, podstate
from raftkube.scheduler import core

Obj = dict[str, Any]
HASH_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"
DEFAULT_TOLERATIONS = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
NETWORK_UNAVAILABLE = ("node.kubernetes.io/network-unavailable", "NoSchedule")
_SAFE = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' alphabet for generated names


@dataclass
class Plan:
    create: list[str] = field(default_factory=list)  # node names
    delete: list[Obj] = field(default_factory=list)
    force: list[Obj] = field(default_factory=list)  # on nodes that are gone: grace 0
    failed: list[Obj] = field(default_factory=list)  # failed pods, deleted under back-off
    succeeded: list[Obj] = field(default_factory=list)  # exited pods, deleted (and told)

    def __bool__(self) -> bool:
        return bool(self.create or self.delete or self.force or self.failed or
                    self.succeeded)


# ---- the pod of a DaemonSet -------------------------------------------------------------


def template_hash(ds: Obj) -> str:
    """A short name for the template: FNV-1a (32 bits) of its canonical JSON, spelled in
    Kubernetes' safe alphabet, as its ControllerRevision names are."""
    template = (ds.get("spec") or {}).get("template") or {}
    h = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return "".join(_SAFE[ord(c) % len(_SAFE)] for c in str(h))


def with_default_tolerations(spec: Obj) -> Obj:
    """A copy of a pod spec with the tolerations every DaemonSet pod has."""
    out = copy.deepcopy(spec)
    wanted = list(DEFAULT_TOLERATIONS)
    if out.get("hostNetwork"):
        wanted.append(NETWORK_UNAVAILABLE)
    tolerations = [t for t in out.get("tolerations") or [] if isinstance(t, dict)]
    for key, effect in wanted:
        ours = {"key": key, "operator": "Exists", "effect": effect}
        same = [i for i, t in enumerate(tolerations) if t.get("key") == key
                and t.get("effect") == effect and t.get("operator") == "Exists"
                and not t.get("value")]
        if same:
            tolerations[same[0]] = ours  # e.g. a user's tolerationSeconds goes
        else:
            tolerations.append(ours)
    out["tolerations"] = tolerations
    return out


def _pinned_affinity(affinity: Any, node: str) -> Obj:
    out = copy.deepcopy(affinity) if isinstance(affinity, dict) else {}
    node_affinity = out.get("nodeAffinity")
    if not isinstance(node_affinity, dict):
        node_affinity = out["nodeAffinity"] = {}
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    return out


def daemon_pod(ds: Obj, node: str, hash_: str) -> Obj:
    """The pod `ds` runs on `node`."""
    template = (ds.get("spec") or {}).get("template") or {}
    pod = podcontrol.from_template(ds, template)
    pod["metadata"]["labels"][HASH_LABEL] = hash_
    pod["metadata"]["labels"][GENERATION_LABEL] = str(ds["metadata"].get("generation", 1))
    spec = with_default_tolerations(pod["spec"])
    spec["affinity"] = _pinned_affinity(spec.get("affinity"), node)
    pod["spec"] = spec
    return pod


def eligibility(ds: Obj, node: Obj) -> tuple[bool, bool]:
    """(should run, may continue running) for a daemon pod of `ds` on `node`."""
    template_spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    pod = {"spec": with_default_tolerations(template_spec)}
    meta = node.get("metadata") or {}
    name = str(meta.get("name", ""))
    if template_spec.get("nodeName") and template_spec["nodeName"] != name:
        return False, False
    if not core.fits_node_affinity(pod, name, meta.get("labels") or {}):
        return False, False
    untolerated = [t for t in (node.get("spec") or {}).get("taints") or []
                   if isinstance(t, dict) and t.get("effect") in ("NoSchedule", "NoExecute")
                   and not core.tolerates(pod, t)]
    if untolerated:
        return False, not any(t.get("effect") == "NoExecute" for t in untolerated)
    return True, True


# ---- what is where ------------------------------------------------------------------------


def pods_by_node(pods: Iterable[Obj]) -> dict[str, list[Obj]]:
    """The DaemonSet's pods by the node each is for, oldest scheduled first; pods that
    are both finished and deleted are left out (Kubernetes does the same)."""
    out: dict[str, list[Obj]] = {}
    for pod in pods:
        if podstate.is_terminal(pod) and podstate.is_deleting(pod):
            continue
        node = podstate.target_node(pod)
        if node:
            out.setdefault(node, []).append(pod)
    for group in out.values():
        group.sort(key=_oldest_scheduled_first)
    return out


def _oldest_scheduled_first(pod: Obj) -> tuple[bool, float, str]:
    return (not (pod.get("spec") or {}).get("nodeName"), podstate.created(pod),
            str(pod["metadata"].get("name", "")))


def _is_updated(pod: Obj, hash_: str) -> bool:
    return ((pod.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) == hash_


def _scaled(value: Any, total: int) -> int:
    """An int-or-percent of `total`, percentages rounded up (as Kubernetes does for
    both maxSurge and maxUnavailable of a DaemonSet)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value or 0)


def _rolling(ds: Obj) -> Obj | None:
    strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return None
    rolling = strategy.get("rollingUpdate")
    return rolling if isinstance(rolling, dict) else {"maxUnavailable": 1, "maxSurge": 0}


def allows_surge(ds: Obj) -> bool:
    rolling = _rolling(ds)
    return rolling is not None and _scaled(rolling.get("maxSurge"), 1) > 0


def _min_ready(ds: Obj) -> float:
    return float((ds.get("spec") or {}).get("minReadySeconds") or 0)


# ---- decisions ------------------------------------------------------------------------------


def manage(ds: Obj, nodes: Sequence[Obj], by_node: dict[str, list[Obj]], hash_: str,
           now: float) -> Plan:
    """One daemon pod on every eligible node, none elsewhere (Kubernetes' manage)."""
    plan = Plan()
    names = set()
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        names.add(name)
        should_run, may_stay = eligibility(ds, node)
        pods = by_node.get(name, [])
        if should_run and not pods:
            plan.create.append(name)
        elif may_stay:
            running = []
            for pod in pods:
                if podstate.is_deleting(pod):
                    continue
                if podstate.phase(pod) == "Failed":
                    plan.failed.append(pod)
                elif podstate.phase(pod) == "Succeeded":
                    plan.succeeded.append(pod)  # a daemon should not exit; start it again
                else:
                    running.append(pod)
            plan.delete += _excess(ds, running, hash_, now)
        else:
            plan.delete += [p for p in pods if not podstate.is_deleting(p)]
    # Pods for nodes that are gone: Kubernetes' pod GC force-deletes those bound there
    # (no agent is left to stop them), and the DaemonSet deletes those never bound.
    for name in sorted(set(by_node) - names):
        for pod in by_node[name]:
            if not podstate.is_deleting(pod):
                (plan.force if (pod.get("spec") or {}).get("nodeName") else
                 plan.delete).append(pod)
    return plan


def _excess(ds: Obj, running: list[Obj], hash_: str, now: float) -> list[Obj]:
    """Of several live daemon pods on one node, those to delete. Without surge, all but
    the oldest. With surge, an old and a new pod may overlap while the new one is not yet
    available and the old one is ready; otherwise only the newest kind stays."""
    if len(running) <= 1:
        return []
    if not allows_surge(ds):
        return running[1:]
    excess: list[Obj] = []
    oldest_new = oldest_old = None
    for pod in running:  # oldest first
        if _is_updated(pod, hash_):
            if oldest_new is None:
                oldest_new = pod
                continue
        elif oldest_old is None:
            oldest_old = pod
            continue
        excess.append(pod)
    if oldest_new is not None and oldest_old is not None and (
            not podstate.is_ready(oldest_old)
            or podstate.is_available(oldest_new, _min_ready(ds), now)):
        excess.append(oldest_old)
    return excess


def _new_and_old(pods: list[Obj], hash_: str) -> tuple[Obj | None, Obj | None, bool]:
    """The live updated and old pod on a node; False if there are two of either."""
    new = old = None
    for pod in pods:
        if podstate.is_deleting(pod):
            continue
        if _is_updated(pod, hash_):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def rolling_update(ds: Obj, nodes: Sequence[Obj], by_node: dict[str, list[Obj]],
                   hash_: str, now: float) -> Plan:
    """Old pods to delete (maxSurge 0) or nodes to surge onto, within the budget
    (Kubernetes' rollingUpdate); nothing for the OnDelete strategy."""
    rolling = _rolling(ds)
    if rolling is None:
        return Plan()
    wanted = {node: list(pods) for node, pods in by_node.items()}
    dark: set[str] = set()  # nodes that are not Ready: outside the budget
    desired = 0
    for node in nodes:
        name = node["metadata"]["name"]
        if not conditions.is_true(node, "Ready"):
            dark.add(name)
        if eligibility(ds, node)[0]:
            desired += 1
            wanted.setdefault(name, [])
    plan = Plan()
    for name in sorted(dark & set(wanted)):
        _, old, ok = _new_and_old(wanted.pop(name), hash_)
        if ok and old is not None:
            plan.delete.append(old)  # serves nothing: its successor comes when it is gone
    max_surge = _scaled(rolling.get("maxSurge"), desired)
    max_unavailable = _scaled(rolling.get("maxUnavailable"), desired)
    if max_surge == 0 and max_unavailable == 0:
        max_unavailable = 1  # an impossible setting: Kubernetes' default instead
    min_ready = _min_ready(ds)
    if max_surge == 0:
        unavailable = 0
        replace_now: list[Obj] = []
        candidates: list[Obj] = []
        for name in sorted(wanted):
            new, old, ok = _new_and_old(wanted[name], hash_)
            if not ok or (new is None) == (old is None):
                unavailable += 1  # manage() is still creating or cleaning up here
            elif new is not None:
                if not podstate.is_available(new, min_ready, now):
                    unavailable += 1
            elif old is not None and not podstate.is_available(old, min_ready, now):
                replace_now.append(old)  # not serving anyway: replace it at once
                unavailable += 1
            elif unavailable < max_unavailable and old is not None:
                candidates.append(old)
        room = max(0, min(max_unavailable - unavailable, len(candidates)))
        plan.delete += replace_now + candidates[:room]
        return plan
    surging = 0
    surge_now: list[str] = []
    surge_candidates: list[str] = []
    for name in sorted(wanted):
        new, old, ok = _new_and_old(wanted[name], hash_)
        if not ok:
            surging += 1
        elif old is None:
            continue  # manage() creates what is missing
        elif new is None:
            if not podstate.is_available(old, min_ready, now):
                surge_now.append(name)  # not serving anyway: its successor starts now
                surging += 1
            elif surging < max_surge:
                surge_candidates.append(name)
        elif podstate.is_available(new, min_ready, now):
            plan.delete.append(old)  # the new one serves: the old one may go
        else:
            surging += 1
    room = max(0, min(max_surge - surging, len(surge_candidates)))
    plan.create = surge_now + surge_candidates[:room]
    return plan


def status(ds: Obj, nodes: Sequence[Obj], by_node: dict[str, list[Obj]], hash_: str,
           now: float) -> tuple[Obj, float | None]:
    """The counts of DaemonSetStatus, and when a pod not yet available for
    minReadySeconds will be (for the caller to look again)."""
    desired = current = misscheduled = ready = updated = available = 0
    min_ready = _min_ready(ds)
    soonest: float | None = None
    for node in nodes:
        pods = by_node.get(node["metadata"]["name"], [])
        if eligibility(ds, node)[0]:
            desired += 1
            if not pods:
                continue
            current += 1
            pod = pods[0]  # the oldest
            if podstate.is_ready(pod):
                ready += 1
                wait = podstate.available_in(pod, min_ready, now)
                if wait == 0.0:
                    available += 1
                elif wait is not None:
                    soonest = wait if soonest is None else min(soonest, wait)
            if _is_updated(pod, hash_):
                updated += 1
        elif pods:
            misscheduled += 1
    return ({"desiredNumberScheduled": desired, "currentNumberScheduled": current,
             "numberMisscheduled": misscheduled, "numberReady": ready,
             "updatedNumberScheduled": updated, "numberAvailable": available,
             "numberUnavailable": desired - available}, soonest)
