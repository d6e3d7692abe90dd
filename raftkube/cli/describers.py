"""`rk describe`'s text, kind by kind, as kubectl's describers lay it out.

Pure: each describer gets the object, what `describe` fetched beside it (`Related`: its
Events, pods, ReplicaSets, EndpointSlices) and the time AGE is measured from, and returns
the text. A kind without a describer of its own gets the generic one (its fields as
kubectl shows a custom resource's).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from typing import Any

from raftkube.api import printers, qos, quantity, requests
from raftkube.cli import describetext as dt
from raftkube.cli.describetext import Writer, get, maps

Obj = dict[str, Any]


@dataclass
class Related:
    """What a describer shows beside the object; events None: they could not be read."""

    events: list[Obj] | None = None
    pods: list[Obj] = field(default_factory=list)  # selected pods, or a node's pods
    replicasets: list[Obj] = field(default_factory=list)
    slices: list[Obj] = field(default_factory=list)


Describer = Callable[[Obj, Related, datetime], str]


def _labels_and_annotations(w: Writer, meta: Obj) -> None:
    """The Labels: and Annotations: blocks every kind's description has."""
    dt.multiline(w, 0, "Labels", dt.label_pairs(meta.get("labels")))
    dt.multiline(w, 0, "Annotations", dt.annotation_pairs(meta.get("annotations")))


def pod(p: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    meta = p.get("metadata") or {}
    spec = p.get("spec") or {}
    status = p.get("status") or {}
    w.write(0, f"Name:\t{meta.get('name', '')}")
    w.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    if spec.get("priority") is not None:
        w.write(0, f"Priority:\t{spec['priority']}")
    if spec.get("priorityClassName"):
        w.write(0, f"Priority Class Name:\t{spec['priorityClassName']}")
    w.write(0, f"Service Account:\t{spec.get('serviceAccountName') or 'default'}")
    node = spec.get("nodeName") or "<none>"
    if spec.get("nodeName") and status.get("hostIP"):
        node += f"/{status['hostIP']}"
    w.write(0, f"Node:\t{node}")
    if status.get("startTime"):
        w.write(0, f"Start Time:\t{dt.timestamp(status['startTime'])}")
    _labels_and_annotations(w, meta)
    phase = str(status.get("phase") or "")
    if meta.get("deletionTimestamp"):
        grace = meta.get("deletionGracePeriodSeconds")
        phase = f"Terminating (lasts {printers.since(meta['deletionTimestamp'], now)})"
        w.write(0, f"Status:\t{phase}")
        if grace is not None:
            w.write(0, f"Termination Grace Period:\t{grace}s")
    else:
        w.write(0, f"Status:\t{phase}")
    if status.get("reason"):
        w.write(0, f"Reason:\t{status['reason']}")
    if status.get("message"):
        w.write(0, f"Message:\t{status['message']}")
    w.write(0, f"IP:\t{status.get('podIP') or ''}")
    ips = [str(i.get("ip", "")) for i in maps(status.get("podIPs"))]
    if ips:
        w.write(0, "IPs:")
        for ip in ips:
            w.write(1, f"IP:\t{ip}")
    else:
        w.write(0, "IPs:\t<none>")
    controller = dt.controller_of(p)
    if controller:
        w.write(0, f"Controlled By:\t{controller}")
    if status.get("nominatedNodeName"):
        w.write(0, f"NominatedNodeName:\t{status['nominatedNodeName']}")
    if maps(spec.get("initContainers")):
        dt.containers(w, "Init Containers", maps(spec.get("initContainers")),
                      maps(status.get("initContainerStatuses")))
    dt.containers(w, "Containers", maps(spec.get("containers")),
                  maps(status.get("containerStatuses")))
    dt.conditions(w, maps(status.get("conditions")), ("Type", "Status"), dashes=False)
    dt.volumes(w, 0, maps(spec.get("volumes")))
    w.write(0, f"QoS Class:\t{status.get('qosClass') or qos.qos_class(p)}")
    dt.multiline(w, 0, "Node-Selectors", dt.label_pairs(spec.get("nodeSelector")))
    dt.multiline(w, 0, "Tolerations", [dt.toleration_text(t)
                                       for t in maps(spec.get("tolerations"))])
    dt.events(w, rel.events, now)
    return w.text()


def _replicaset_line(rs: Obj) -> str:
    name = get(rs, "metadata", "name") or ""
    return (f"{name} ({get(rs, 'status', 'replicas') or 0}/"
            f"{get(rs, 'spec', 'replicas') or 0} replicas created)")


def deployment(d: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    spec = d.get("spec") or {}
    status = d.get("status") or {}
    dt.header(w, d, created=True)
    w.write(0, f"Selector:\t{dt.selector_text(spec.get('selector'))}")
    w.write(0, f"Replicas:\t{spec.get('replicas', 1)} desired | "
               f"{status.get('updatedReplicas') or 0} updated | "
               f"{status.get('replicas') or 0} total | "
               f"{status.get('availableReplicas') or 0} available | "
               f"{status.get('unavailableReplicas') or 0} unavailable")
    strategy = spec.get("strategy") or {}
    w.write(0, f"StrategyType:\t{strategy.get('type') or 'RollingUpdate'}")
    w.write(0, f"MinReadySeconds:\t{spec.get('minReadySeconds') or 0}")
    rolling = strategy.get("rollingUpdate")
    if isinstance(rolling, dict):
        w.write(0, f"RollingUpdateStrategy:\t{rolling.get('maxUnavailable', '25%')} max "
                   f"unavailable, {rolling.get('maxSurge', '25%')} max surge")
    dt.pod_template(w, spec.get("template") or {})
    dt.conditions(w, maps(status.get("conditions")), ("Type", "Status", "Reason"))
    # The ReplicaSet whose template is the Deployment's is the new one, as the
    # deployment controller decides it: the newest by revision among those it owns.
    owned = sorted(rel.replicasets, key=_revision)
    new = owned[-1] if owned and _same_template(owned[-1], d) else None
    old = [rs for rs in owned if rs is not new
           and (get(rs, "spec", "replicas") or get(rs, "status", "replicas"))]
    w.write(0, f"OldReplicaSets:\t{dt.or_none(', '.join(_replicaset_line(r) for r in old))}")
    w.write(0, f"NewReplicaSet:\t{_replicaset_line(new) if new else '<none>'}")
    dt.events(w, rel.events, now)
    return w.text()


def _revision(rs: Obj) -> int:
    text = (get(rs, "metadata", "annotations") or {}).get(
        "deployment.kubernetes.io/revision", "0")
    return int(text) if str(text).isdigit() else 0


def _same_template(rs: Obj, d: Obj) -> bool:
    def bare(t: Any) -> Any:
        t = dict(t or {})
        meta = dict(t.get("metadata") or {})
        labels = dict(meta.get("labels") or {})
        labels.pop("pod-template-hash", None)
        meta["labels"] = labels
        t["metadata"] = meta
        return t
    return bool(bare(get(rs, "spec", "template")) == bare(get(d, "spec", "template")))


def _pods_status(pods: Sequence[Obj]) -> str:
    phases = [get(p, "status", "phase") for p in pods]
    return (f"{phases.count('Running')} Running / {phases.count('Pending')} Waiting / "
            f"{phases.count('Succeeded')} Succeeded / {phases.count('Failed')} Failed")


def replicaset(rs: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    spec = rs.get("spec") or {}
    meta = rs.get("metadata") or {}
    w.write(0, f"Name:\t{meta.get('name', '')}")
    w.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    w.write(0, f"Selector:\t{dt.selector_text(spec.get('selector'))}")
    _labels_and_annotations(w, meta)
    controller = dt.controller_of(rs)
    if controller:
        w.write(0, f"Controlled By:\t{controller}")
    w.write(0, f"Replicas:\t{get(rs, 'status', 'replicas') or 0} current / "
               f"{spec.get('replicas', 1)} desired")
    w.write(0, f"Pods Status:\t{_pods_status(rel.pods)}")
    dt.pod_template(w, spec.get("template") or {})
    dt.conditions(w, maps(get(rs, "status", "conditions")), ("Type", "Status", "Reason"))
    dt.events(w, rel.events, now)
    return w.text()


def daemonset(ds: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    spec = ds.get("spec") or {}
    status = ds.get("status") or {}
    meta = ds.get("metadata") or {}
    w.write(0, f"Name:\t{meta.get('name', '')}")
    w.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    w.write(0, f"Selector:\t{dt.selector_text(spec.get('selector'))}")
    node_selector = dt.label_pairs(get(spec, "template", "spec", "nodeSelector"))
    w.write(0, f"Node-Selector:\t{dt.or_none(','.join(node_selector))}")
    _labels_and_annotations(w, meta)
    for title, key in (("Desired Number of Nodes Scheduled", "desiredNumberScheduled"),
                       ("Current Number of Nodes Scheduled", "currentNumberScheduled"),
                       ("Number of Nodes Scheduled with Up-to-date Pods",
                        "updatedNumberScheduled"),
                       ("Number of Nodes Scheduled with Available Pods", "numberAvailable"),
                       ("Number of Nodes Misscheduled", "numberMisscheduled")):
        w.write(0, f"{title}:\t{status.get(key) or 0}")
    w.write(0, f"Pods Status:\t{_pods_status(rel.pods)}")
    dt.pod_template(w, spec.get("template") or {})
    dt.events(w, rel.events, now)
    return w.text()


def job(j: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    spec = j.get("spec") or {}
    status = j.get("status") or {}
    meta = j.get("metadata") or {}
    w.write(0, f"Name:\t{meta.get('name', '')}")
    w.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    w.write(0, f"Selector:\t{dt.selector_text(spec.get('selector'))}")
    _labels_and_annotations(w, meta)
    controller = dt.controller_of(j)
    if controller:
        w.write(0, f"Controlled By:\t{controller}")
    w.write(0, f"Parallelism:\t{spec.get('parallelism', 1)}")
    completions = spec.get("completions")
    w.write(0, f"Completions:\t{completions if completions is not None else '<unset>'}")
    w.write(0, f"Completion Mode:\t{spec.get('completionMode') or 'NonIndexed'}")
    w.write(0, f"Suspend:\t{dt.plain(bool(spec.get('suspend')))}")
    w.write(0, f"Backoff Limit:\t{spec.get('backoffLimit', 6)}")
    if status.get("startTime"):
        w.write(0, f"Start Time:\t{dt.timestamp(status['startTime'])}")
    if status.get("completionTime"):
        w.write(0, f"Completed At:\t{dt.timestamp(status['completionTime'])}")
    if status.get("startTime"):
        w.write(0, f"Duration:\t{printers.job_duration(j, now)}")
    if spec.get("activeDeadlineSeconds") is not None:
        w.write(0, f"Active Deadline Seconds:\t{spec['activeDeadlineSeconds']}s")
    w.write(0, f"Pods Statuses:\t{status.get('active') or 0} Active "
               f"({status.get('ready') or 0} Ready) / {status.get('succeeded') or 0} "
               f"Succeeded / {status.get('failed') or 0} Failed")
    dt.pod_template(w, spec.get("template") or {})
    dt.events(w, rel.events, now)
    return w.text()


MAX_ENDPOINTS_SHOWN = 3  # kubectl's: `a:80,b:80,c:80 + 2 more...`


def _endpoints(slices: Sequence[Obj], port: Obj) -> str:
    name = port.get("name") or ""
    found: list[str] = []
    for s in slices:
        numbers = [p.get("port") for p in maps(s.get("ports")) if (p.get("name") or "") == name]
        for ep in maps(s.get("endpoints")):
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:
                found += [f"{addr}:{n}" for n in numbers if n is not None]
    if not found:
        return "<none>"
    text = ",".join(found[:MAX_ENDPOINTS_SHOWN])
    more = len(found) - MAX_ENDPOINTS_SHOWN
    return text + (f" + {more} more..." if more > 0 else "")


def service(svc: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    spec = svc.get("spec") or {}
    dt.header(w, svc)
    selector = spec.get("selector") if isinstance(spec.get("selector"), dict) else {}
    w.write(0, f"Selector:\t{dt.or_none(','.join(dt.label_pairs(selector)))}")
    kind = spec.get("type") or "ClusterIP"
    w.write(0, f"Type:\t{kind}")
    if spec.get("ipFamilyPolicy"):
        w.write(0, f"IP Family Policy:\t{spec['ipFamilyPolicy']}")
    if spec.get("ipFamilies"):
        w.write(0, f"IP Families:\t{','.join(spec['ipFamilies'])}")
    if kind == "ExternalName":
        w.write(0, f"External Name:\t{spec.get('externalName', '')}")
    else:
        w.write(0, f"IP:\t{spec.get('clusterIP') or '<none>'}")
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        w.write(0, f"IPs:\t{dt.or_none(','.join(ips))}")
    if spec.get("externalIPs"):
        w.write(0, f"External IPs:\t{','.join(spec['externalIPs'])}")
    ingress = [str(i.get("ip") or i.get("hostname") or "")
               for i in maps(get(svc, "status", "loadBalancer", "ingress"))]
    if ingress:
        w.write(0, f"LoadBalancer Ingress:\t{', '.join(ingress)}")
    for port in maps(spec.get("ports")):
        proto = port.get("protocol") or "TCP"
        w.write(0, f"Port:\t{port.get('name') or '<unset>'}\t{port.get('port', '')}/{proto}")
        target = port.get("targetPort", port.get("port", ""))
        w.write(0, f"TargetPort:\t{target}/{proto}")
        if port.get("nodePort"):
            w.write(0, f"NodePort:\t{port.get('name') or '<unset>'}\t"
                       f"{port['nodePort']}/{proto}")
        w.write(0, f"Endpoints:\t{_endpoints(rel.slices, port)}")
    w.write(0, f"Session Affinity:\t{spec.get('sessionAffinity') or 'None'}")
    if kind in ("NodePort", "LoadBalancer"):
        w.write(0, f"External Traffic Policy:\t{spec.get('externalTrafficPolicy') or 'Cluster'}")
    dt.events(w, rel.events, now)
    return w.text()


SYSTEM_INFO = (("Machine ID", "machineID"), ("System UUID", "systemUUID"),
               ("Boot ID", "bootID"), ("Kernel Version", "kernelVersion"),
               ("OS Image", "osImage"), ("Operating System", "operatingSystem"),
               ("Architecture", "architecture"),
               ("Container Runtime Version", "containerRuntimeVersion"),
               ("Kubelet Version", "kubeletVersion"),
               ("Kube-Proxy Version", "kubeProxyVersion"))


def _share(amount: int, total: int) -> str:
    return f"({amount * 100 // total if total else 0}%)"


def _amount(resource: str, value: int) -> str:
    if resource == "cpu":
        return quantity.format_quantity(Fraction(value, 1000))
    return quantity.format_quantity(value, binary=True)


def _limits(p: Obj) -> dict[str, int]:
    out = dict.fromkeys(requests.RESOURCES, 0)
    for c in maps(get(p, "spec", "containers")):
        limits = get(c, "resources", "limits") or {}
        for r in requests.RESOURCES:
            if r in limits:
                try:
                    out[r] += requests.amount(r, limits[r])
                except ValueError:
                    pass
    return out


def node(n: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    meta = n.get("metadata") or {}
    spec = n.get("spec") or {}
    status = n.get("status") or {}
    w.write(0, f"Name:\t{meta.get('name', '')}")
    w.write(0, f"Roles:\t{printers.node_roles(n, now)}")
    _labels_and_annotations(w, meta)
    w.write(0, f"CreationTimestamp:\t{dt.timestamp(meta.get('creationTimestamp'))}")
    dt.multiline(w, 0, "Taints", [dt.taint_text(t) for t in maps(spec.get("taints"))])
    w.write(0, f"Unschedulable:\t{dt.plain(bool(spec.get('unschedulable')))}")
    dt.conditions(w, maps(status.get("conditions")),
                  ("Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason",
                   "Message"))
    w.write(0, "Addresses:")
    for a in maps(status.get("addresses")):
        w.write(1, f"{a.get('type', '')}:\t{a.get('address', '')}")
    for title, key in (("Capacity", "capacity"), ("Allocatable", "allocatable")):
        if isinstance(status.get(key), dict):
            w.write(0, f"{title}:")
            for r, q in sorted(status[key].items()):
                w.write(1, f"{r}:\t{q}")
    info = status.get("nodeInfo") or {}
    w.write(0, "System Info:")
    for title, key in SYSTEM_INFO:
        w.write(1, f"{title}:\t{info.get(key, '')}")
    if spec.get("podCIDR"):
        w.write(0, f"PodCIDR:\t{spec['podCIDR']}")
        w.write(0, f"PodCIDRs:\t{','.join(spec.get('podCIDRs') or [spec['podCIDR']])}")
    allocatable = status.get("allocatable") or {}
    total = {r: requests.amount(r, allocatable[r]) if r in allocatable else 0
             for r in requests.RESOURCES}
    pods = [p for p in rel.pods if get(p, "status", "phase") not in ("Succeeded", "Failed")]
    w.write(0, f"Non-terminated Pods:\t({len(pods)} in total)")
    w.write(1, "Namespace\tName\t\tCPU Requests\tCPU Limits\tMemory Requests\t"
               "Memory Limits\tAge")
    w.write(1, "---------\t----\t\t------------\t----------\t---------------\t"
               "-------------\t---")
    sums = {"requests": dict.fromkeys(requests.RESOURCES, 0),
            "limits": dict.fromkeys(requests.RESOURCES, 0)}
    for p in sorted(pods, key=lambda p: (get(p, "metadata", "namespace") or "",
                                         get(p, "metadata", "name") or "")):
        asked, capped = requests.pod_requests(p), _limits(p)
        cells = []
        for r in requests.RESOURCES:
            for which, values in (("requests", asked), ("limits", capped)):
                sums[which][r] += values[r]
                cells.append(f"{_amount(r, values[r])} {_share(values[r], total[r])}")
        w.write(1, f"{get(p, 'metadata', 'namespace') or ''}\t"
                   f"{get(p, 'metadata', 'name') or ''}\t\t" + "\t".join(cells)
                + f"\t{printers.age(p, now)}")
    w.write(0, "Allocated resources:")
    w.write(1, "(Total limits may be over 100 percent, i.e., overcommitted.)")
    w.write(1, "Resource\tRequests\tLimits")
    w.write(1, "--------\t--------\t------")
    for r in requests.RESOURCES:
        asked_sum, capped_sum = sums["requests"][r], sums["limits"][r]
        w.write(1, f"{r}\t{_amount(r, asked_sum)} {_share(asked_sum, total[r])}\t"
                   f"{_amount(r, capped_sum)} {_share(capped_sum, total[r])}")
    dt.events(w, rel.events, now)
    return w.text()


def namespace(ns: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    dt.header(w, ns, namespaced=False)
    w.write(0, f"Status:\t{get(ns, 'status', 'phase') or 'Active'}")
    w.blank()
    w.write(0, "No resource quota.")
    w.blank()
    w.write(0, "No LimitRange resource.")
    return w.text()


def configmap(cm: Obj, rel: Related, now: datetime) -> str:
    w = Writer()
    dt.header(w, cm)
    w.blank()
    w.write(0, "Data")
    w.write(0, "====")
    for key, value in sorted((cm.get("data") or {}).items()):
        w.write(0, f"{key}:")
        w.write(0, "----")
        w.lines += str(value).split("\n")
        w.blank()
    w.blank()
    w.write(0, "BinaryData")
    w.write(0, "====")
    for key, value in sorted((cm.get("binaryData") or {}).items()):
        w.write(0, f"{key}: {len(_decoded(value))} bytes")
    w.blank()
    dt.events(w, rel.events if rel.events is not None else [], now)
    return w.text()


def _decoded(value: Any) -> bytes:
    import base64
    import binascii

    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        return str(value).encode()


def secret(s: Obj, rel: Related, now: datetime) -> str:
    """Sizes only: describe never shows a secret's values."""
    w = Writer()
    dt.header(w, s)
    w.blank()
    w.write(0, f"Type:\t{s.get('type') or 'Opaque'}")
    w.blank()
    w.write(0, "Data")
    w.write(0, "====")
    data = {k: len(_decoded(v)) for k, v in (s.get("data") or {}).items()}
    data.update({k: len(str(v).encode()) for k, v in (s.get("stringData") or {}).items()})
    for key, size in sorted(data.items()):
        w.write(0, f"{key}:\t{size} bytes")
    return w.text()


ACRONYMS = frozenset({"api", "cidr", "dns", "http", "https", "id", "ip", "ips", "tls",
                      "uid", "url", "uuid"})


def _words(key: str) -> str:
    """`creationTimestamp` as kubectl's generic describer titles it: `Creation Timestamp`,
    with the usual acronyms in capitals (`API Version`, `UID`)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", key)
    return " ".join(w.upper() if w.lower() in ACRONYMS else w[:1].upper() + w[1:]
                    for w in spaced.split(" "))


def _generic_value(w: Writer, level: int, key: str, value: Any) -> None:
    if isinstance(value, dict):
        w.write(level, f"{key}:")
        for k, v in value.items():
            _generic_value(w, level + 1, _words(str(k)), v)
    elif isinstance(value, list):
        w.write(level, f"{key}:")
        for item in value:
            if isinstance(item, dict):
                for k, v in item.items():
                    _generic_value(w, level + 1, _words(str(k)), v)
            else:
                w.write(level + 1, dt.plain(item))
    else:
        w.write(level, f"{key}:\t{dt.plain(value)}")


def generic(obj: Obj, rel: Related, now: datetime) -> str:
    """Any other kind: its fields, one per line, under kubectl's titles."""
    w = Writer()
    meta = obj.get("metadata") or {}
    w.write(0, f"Name:\t{meta.get('name', '')}")
    if meta.get("namespace"):
        w.write(0, f"Namespace:\t{meta['namespace']}")
    _labels_and_annotations(w, meta)
    for key, value in obj.items():
        if key == "metadata":
            rest = {k: v for k, v in value.items()
                    if k not in ("name", "namespace", "labels", "annotations")} \
                if isinstance(value, dict) else value
            _generic_value(w, 0, "Metadata", rest)
        else:
            _generic_value(w, 0, _words(key), value)
    dt.events(w, rel.events, now)
    return w.text()


DESCRIBERS: dict[str, Describer] = {
    "Pod": pod, "Deployment": deployment, "ReplicaSet": replicaset,
    "DaemonSet": daemonset, "Job": job, "Service": service, "Node": node,
    "Namespace": namespace, "ConfigMap": configmap, "Secret": secret,
}


def describe(kind: str, obj: Obj, rel: Related, now: datetime) -> str:
    return DESCRIBERS.get(kind, generic)(obj, rel, now)
