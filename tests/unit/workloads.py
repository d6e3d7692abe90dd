"""Objects for the workload controllers' tests: ReplicaSets, Deployments and their pods,
as the server would store them (defaults applied, uids, generations, timestamps)."""

from __future__ import annotations

import copy
from typing import Any

from raftkube.api import defaults
from raftkube.api.timestamps import rfc3339
from tests.unit.controller_fixture import T0

Obj = dict[str, Any]
NS = "ns"


def template(image: str = "web:1", app: str = "front", **labels: str) -> Obj:
    return {"metadata": {"labels": {"app": app, **labels}},
            "spec": {"containers": [{"name": "c", "image": image}]}}


def replicaset(name: str = "front", replicas: int = 3, *, app: str = "front",
               generation: int = 1, min_ready: int = 0, created: float = T0 - 1000,
               owner: Obj | None = None, status: Obj | None = None,
               annotations: dict[str, str] | None = None, image: str = "web:1",
               **extra_labels: str) -> Obj:
    labels = {"app": app, **extra_labels}
    obj: Obj = {
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                     "resourceVersion": "10", "generation": generation,
                     "creationTimestamp": rfc3339(created), "labels": dict(labels)},
        "spec": {"replicas": replicas, "minReadySeconds": min_ready,
                 "selector": {"matchLabels": dict(labels)},
                 "template": template(image, **labels)},
    }
    if annotations:
        obj["metadata"]["annotations"] = dict(annotations)
    if owner is not None:
        obj["metadata"]["ownerReferences"] = [ref(owner)]
    if status is not None:
        obj["status"] = dict(status)
    return defaults.apply_defaults(obj)


def ref(owner: Obj) -> Obj:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def pod(name: str, owner: Obj | None = None, *, node: str = "", phase: str = "",
        ready: bool = False, ready_at: float = T0 - 500, created: float = T0 - 600,
        labels: dict[str, str] | None = None, deleting: bool = False,
        rv: int = 20) -> Obj:
    if labels is None:
        labels = dict(((owner or {}).get("spec") or {}).get("template", {}).get(
            "metadata", {}).get("labels") or {"app": "front"})
    meta: Obj = {"name": name, "namespace": NS, "uid": f"uid-{name}",
                 "resourceVersion": str(rv), "creationTimestamp": rfc3339(created),
                 "labels": labels}
    if owner is not None:
        meta["ownerReferences"] = [ref(owner)]
    if deleting:
        meta["deletionTimestamp"] = rfc3339(T0 + 30)
    status: Obj = {"phase": phase or ("Running" if node else "Pending")}
    if ready:
        status["conditions"] = [{"type": "Ready", "status": "True",
                                 "lastTransitionTime": rfc3339(ready_at)}]
    spec: Obj = {"containers": [{"name": "c", "image": "web:1"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": status}


def with_status(obj: Obj, **status: Any) -> Obj:
    out = copy.deepcopy(obj)
    out["status"] = {**(out.get("status") or {}), **status}
    return out


def deployment(name: str = "front", replicas: int = 3, *, image: str = "web:1",
               app: str = "front", generation: int = 1, strategy: Obj | None = None,
               paused: bool = False, status: Obj | None = None, revision: str = "",
               history: int = 10, deadline: int | None = 600, min_ready: int = 0) -> Obj:
    obj: Obj = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}",
                     "resourceVersion": "5", "generation": generation,
                     "creationTimestamp": rfc3339(T0 - 2000), "labels": {"app": app}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": template(image, app), "revisionHistoryLimit": history,
                 "minReadySeconds": min_ready},
    }
    if deadline is not None:
        obj["spec"]["progressDeadlineSeconds"] = deadline
    else:
        obj["spec"]["progressDeadlineSeconds"] = 2**31 - 1
    if strategy is not None:
        obj["spec"]["strategy"] = strategy
    if paused:
        obj["spec"]["paused"] = True
    if revision:
        obj["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": revision}
    if status is not None:
        obj["status"] = dict(status)
    return defaults.apply_defaults(obj)


def owned_rs(d: Obj, *, image: str = "web:1", replicas: int = 3, revision: int = 1,
             available: int | None = None, ready: int | None = None,
             reported: int | None = None, created: float = T0 - 1000,
             desired: int | None = None, most: int | None = None) -> Obj:
    """A ReplicaSet of Deployment `d` as its controller made it, with a status."""
    from raftkube.api import rollout

    tpl = template(image, d["metadata"]["labels"]["app"])
    tpl = defaults.apply_defaults({"kind": "ReplicaSet", "spec": {"template": tpl}})[
        "spec"]["template"]
    pod_hash = rollout.template_hash(tpl)
    tpl["metadata"]["labels"][rollout.HASH_LABEL] = pod_hash
    want = d["spec"]["replicas"]
    annotations = {rollout.REVISION: str(revision),
                   rollout.DESIRED_REPLICAS: str(want if desired is None else desired),
                   rollout.MAX_REPLICAS: str(want + 1 if most is None else most)}
    rs = replicaset(f"{d['metadata']['name']}-{pod_hash}", replicas, app="front",
                    created=created, owner=d, annotations=annotations,
                    min_ready=d["spec"].get("minReadySeconds", 0))
    rs["metadata"]["labels"][rollout.HASH_LABEL] = pod_hash
    rs["spec"]["selector"]["matchLabels"][rollout.HASH_LABEL] = pod_hash
    rs["spec"]["template"] = tpl
    got = replicas if reported is None else reported
    avail = got if available is None else available
    rs["status"] = {"replicas": got, "fullyLabeledReplicas": got,
                    "readyReplicas": avail if ready is None else ready,
                    "availableReplicas": avail, "observedGeneration": 1}
    return rs
