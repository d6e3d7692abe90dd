"""kubectl's output formats and Kubernetes' table columns, as pure functions: objects in,
text (or a meta.k8s.io Table) out.

Both the API server (server-side printing: the Table `kubectl get` asks for) and `rk get`
print with these columns, so the two show the same. Nothing here talks to a server or
reads the clock: the caller passes the objects, their kind and `now`, so every format is
checked by unit tests against fixed inputs. The table
columns, the AGE wording (`duration.HumanDuration` in Kubernetes' apimachinery) and the
`tabwriter` padding follow kubectl, so that people and scripts used to kubectl's output
read ours the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import yaml

from raftkube.api import kinds

Obj = dict[str, Any]
FORMATS = ("table", "wide", "yaml", "json", "name")

# kubectl's tabwriter: cells padded by 3 spaces, at least 6 wide; the last one unpadded.
PADDING = 3
MIN_WIDTH = 6


@dataclass(frozen=True)
class Options:
    output: str = "table"  # one of FORMATS
    all_namespaces: bool = False  # adds a NAMESPACE column to tables of namespaced kinds
    with_kind: bool = False  # NAME as `deployment.apps/front`, when several kinds are shown
    no_headers: bool = False  # --no-headers
    show_labels: bool = False  # --show-labels: a LABELS column at the end
    label_columns: tuple[str, ...] = ()  # -L KEY: a column per label key
    # kubectl, once one kind of a request has a NAMESPACE column (-A), keeps it for the
    # cluster-scoped kinds after it (cells empty).
    namespace_column: bool = False


def qualified(kind: kinds.Kind) -> str:
    """kubectl's word for a kind in messages: `deployment.apps`, `service`."""
    lower = kind.kind.lower()
    return f"{lower}.{kind.group}" if kind.group else lower


def name_of(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def object_ref(kind: kinds.Kind, obj: Obj) -> str:
    return f"{qualified(kind)}/{name_of(obj)}"


# ---- time -------------------------------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (`2024-05-01T12:00:00Z`, fractions allowed), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def human_duration(d: timedelta) -> str:
    """apimachinery's HumanDuration: `45s`, `2m30s`, `3h5m`, `4d`, `1y30d`."""
    seconds = int(d.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(value: Any, now: datetime) -> str:
    """The age of a timestamp as kubectl shows it, `<unknown>` without one."""
    t = parse_time(value)
    return "<unknown>" if t is None else human_duration(now - t)


def age(obj: Obj, now: datetime) -> str:
    return since((obj.get("metadata") or {}).get("creationTimestamp"), now)


# ---- columns per kind ------------------------------------------------------------------

def _get(obj: Obj, *path: str) -> Any:
    cur: Any = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _count(obj: Obj, *path: str) -> str:
    return str(_int(_get(obj, *path)))


def _or_none(text: str) -> str:
    return text or "<none>"


@dataclass(frozen=True)
class _PodView:
    ready: int
    total: int
    reason: str
    restarts: int
    last_restart: datetime | None


def _pod_view(pod: Obj) -> _PodView:
    """kubectl's reading of a pod (printPod): READY counts running ready containers (and
    started sidecars), STATUS is the phase refined by init and container states,
    RESTARTS sums restart counts, with the newest previous termination."""
    spec = _get(pod, "spec") or {}
    status = _get(pod, "status") or {}
    containers_ = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    inits = [c for c in spec.get("initContainers") or [] if isinstance(c, dict)]
    sidecars = {str(c.get("name")) for c in inits if c.get("restartPolicy") == "Always"}
    total = len(containers_) + len(sidecars)
    ready = 0
    reason = str(status.get("reason") or status.get("phase") or "Pending")
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "PodScheduled" \
                and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"
    restarts = 0
    last: datetime | None = None
    sidecar_restarts = 0
    sidecar_last: datetime | None = None

    def later(a: datetime | None, cs: Obj) -> datetime | None:
        finished = parse_time(((cs.get("lastState") or {}).get("terminated") or {})
                              .get("finishedAt"))
        return finished if finished is not None and (a is None or finished > a) else a

    initializing = False
    init_statuses = [s for s in status.get("initContainerStatuses") or []
                     if isinstance(s, dict)]
    for i, cs in enumerate(init_statuses):
        restarts += _int(cs.get("restartCount"))
        last = later(last, cs)
        state = cs.get("state") or {}
        terminated, waiting = state.get("terminated"), state.get("waiting") or {}
        if cs.get("name") in sidecars:
            sidecar_restarts += _int(cs.get("restartCount"))
            sidecar_last = later(sidecar_last, cs)
            if cs.get("started") and cs.get("ready"):
                ready += 1
            continue
        if isinstance(terminated, dict) and _int(terminated.get("exitCode")) == 0 \
                and terminated:
            continue
        if isinstance(terminated, dict) and terminated:
            if terminated.get("reason"):
                reason = f"Init:{terminated['reason']}"
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{_int(terminated.get('exitCode'))}"
        elif waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{len(inits)}"
        initializing = True
        break
    initialized = any(isinstance(c, dict) and c.get("type") == "Initialized"
                      and c.get("status") == "True" for c in status.get("conditions") or [])
    if not initializing or initialized:
        restarts, last = sidecar_restarts, sidecar_last
        running = False
        for cs in reversed([s for s in status.get("containerStatuses") or []
                            if isinstance(s, dict)]):
            restarts += _int(cs.get("restartCount"))
            last = later(last, cs)
            state = cs.get("state") or {}
            waiting, terminated = state.get("waiting") or {}, state.get("terminated")
            if waiting.get("reason"):
                reason = str(waiting["reason"])
            elif isinstance(terminated, dict) and terminated.get("reason"):
                reason = str(terminated["reason"])
            elif isinstance(terminated, dict):
                reason = (f"Signal:{terminated['signal']}" if terminated.get("signal")
                          else f"ExitCode:{_int(terminated.get('exitCode'))}")
            elif cs.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            ready_condition = any(isinstance(c, dict) and c.get("type") == "Ready"
                                  and c.get("status") == "True"
                                  for c in status.get("conditions") or [])
            reason = "Running" if ready_condition else "NotReady"
    if _get(pod, "metadata", "deletionTimestamp"):
        if status.get("reason") == "NodeLost":
            reason = "Unknown"
        elif status.get("phase") not in ("Succeeded", "Failed"):
            reason = "Terminating"
    return _PodView(ready, total, reason, restarts, last)


def pod_ready(pod: Obj, now: datetime) -> str:
    view = _pod_view(pod)
    return f"{view.ready}/{view.total}"


def pod_status(pod: Obj, now: datetime) -> str:
    """The phase, refined like kubectl: an init container's progress (`Init:0/1`), a
    container's waiting or terminated reason (`CrashLoopBackOff`, `ErrImagePull`,
    `ContainerCreating`, `Completed`), and `Terminating` once deletion has begun."""
    return _pod_view(pod).reason


def pod_restarts(pod: Obj, now: datetime) -> str:
    """`3`, or `3 (5m ago)` when the newest previous termination is known."""
    view = _pod_view(pod)
    if view.restarts and view.last_restart is not None:
        return f"{view.restarts} ({human_duration(now - view.last_restart)} ago)"
    return str(view.restarts)


def _replicas(obj: Obj) -> int:
    value = _get(obj, "spec", "replicas")
    return 1 if value is None else _int(value)


def deployment_ready(d: Obj, now: datetime) -> str:
    return f"{_int(_get(d, 'status', 'readyReplicas'))}/{_replicas(d)}"


def job_completions(job: Obj, now: datetime) -> str:
    completions = _get(job, "spec", "completions")
    succeeded = _int(_get(job, "status", "succeeded"))
    if completions is not None:
        return f"{succeeded}/{_int(completions)}"
    parallelism = _int(_get(job, "spec", "parallelism"))
    return f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"


def job_status(job: Obj, now: datetime) -> str:
    """What the job came to (Kubernetes 1.28's printJob): a true condition, in this order,
    or Terminating once deleted, else Running."""
    true = {c.get("type") for c in _get(job, "status", "conditions") or []
            if isinstance(c, dict) and c.get("status") == "True"}
    for condition in ("Complete", "Failed"):
        if condition in true:
            return condition
    if _get(job, "metadata", "deletionTimestamp"):
        return "Terminating"
    for condition in ("Suspended", "FailureTarget", "SuccessCriteriaMet"):
        if condition in true:
            return condition
    return "Running"


def job_duration(job: Obj, now: datetime) -> str:
    start = parse_time(_get(job, "status", "startTime"))
    if start is None:
        return ""
    end = parse_time(_get(job, "status", "completionTime")) or now
    return human_duration(end - start)


def service_type(svc: Obj, now: datetime) -> str:
    return str(_get(svc, "spec", "type") or "ClusterIP")


def service_external_ip(svc: Obj, now: datetime) -> str:
    external = [str(ip) for ip in _get(svc, "spec", "externalIPs") or []]
    if service_type(svc, now) == "LoadBalancer":
        ingress = _get(svc, "status", "loadBalancer", "ingress") or []
        found = [str(i.get("ip") or i.get("hostname")) for i in ingress
                 if isinstance(i, dict) and (i.get("ip") or i.get("hostname"))]
        return ",".join(found + external) or "<pending>"
    if service_type(svc, now) == "ExternalName":
        return str(_get(svc, "spec", "externalName") or "<none>")
    return _or_none(",".join(external))


def service_ports(svc: Obj, now: datetime) -> str:
    out = []
    for p in _get(svc, "spec", "ports") or []:
        if not isinstance(p, dict):
            continue
        text = str(p.get("port", ""))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        out.append(f"{text}/{p.get('protocol') or 'TCP'}")
    return _or_none(",".join(out))


def node_status(node: Obj, now: datetime) -> str:
    status = "Unknown"
    for c in _get(node, "status", "conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            status = {"True": "Ready", "False": "NotReady"}.get(str(c.get("status")), "Unknown")
    if _get(node, "spec", "unschedulable"):
        status += ",SchedulingDisabled"
    return status


def node_roles(node: Obj, now: datetime) -> str:
    prefix = "node-role.kubernetes.io/"
    labels = _get(node, "metadata", "labels") or {}
    roles = sorted(k[len(prefix):] for k in labels if k.startswith(prefix) and k != prefix)
    return _or_none(",".join(roles))


def node_address(kind: str) -> Callable[[Obj, datetime], str]:
    def column(node: Obj, now: datetime) -> str:
        for a in _get(node, "status", "addresses") or []:
            if isinstance(a, dict) and a.get("type") == kind:
                return str(a.get("address", ""))
        return "<none>"
    return column


def event_last_seen(ev: Obj, now: datetime) -> str:
    seen = ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp") \
        or _get(ev, "metadata", "creationTimestamp")
    return since(seen, now)


def event_object(ev: Obj, now: datetime) -> str:
    involved = ev.get("involvedObject") or {}
    return f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}"


def containers(obj: Obj, now: datetime) -> str:
    spec = _get(obj, "spec", "template", "spec") or _get(obj, "spec") or {}
    return ",".join(str(c.get("name", "")) for c in spec.get("containers") or [])


def images(obj: Obj, now: datetime) -> str:
    spec = _get(obj, "spec", "template", "spec") or _get(obj, "spec") or {}
    return ",".join(str(c.get("image", "")) for c in spec.get("containers") or [])


def selector(obj: Obj, now: datetime) -> str:
    sel = _get(obj, "spec", "selector") or {}
    labels = sel.get("matchLabels", sel) if isinstance(sel, dict) else {}
    if not isinstance(labels, dict):
        labels = {}
    text = ",".join(f"{k}={v}" for k, v in labels.items() if not isinstance(v, dict | list))
    return _or_none(text)


def field(*path: str, default: str = "") -> Callable[[Obj, datetime], str]:
    def column(obj: Obj, now: datetime) -> str:
        value = _get(obj, *path)
        return default if value is None or value == "" else str(value)
    return column


def counter(*path: str) -> Callable[[Obj, datetime], str]:
    return lambda obj, now: _count(obj, *path)


def _name(obj: Obj, now: datetime) -> str:
    return name_of(obj)


def _data_count(obj: Obj, now: datetime) -> str:
    return str(len(obj.get("data") or {}) + len(obj.get("binaryData") or {}))


def _node_selector(obj: Obj, now: datetime) -> str:
    chosen = _get(obj, "spec", "template", "spec", "nodeSelector") or {}
    if not isinstance(chosen, dict):
        return "<none>"
    return _or_none(",".join(f"{k}={v}" for k, v in sorted(chosen.items())))


def readiness_gates(pod: Obj, now: datetime) -> str:
    gates = [g.get("conditionType") for g in _get(pod, "spec", "readinessGates") or []
             if isinstance(g, dict)]
    if not gates:
        return "<none>"
    conditions = {c.get("type"): c.get("status")
                  for c in _get(pod, "status", "conditions") or [] if isinstance(c, dict)}
    met = sum(1 for g in gates if conditions.get(g) == "True")
    return f"{met}/{len(gates)}"


def slice_ports(es: Obj, now: datetime) -> str:
    ports = [str(p.get("port")) for p in es.get("ports") or []
             if isinstance(p, dict) and p.get("port") is not None]
    return ",".join(ports) if ports else "<unset>"


def slice_endpoints(es: Obj, now: datetime) -> str:
    """Kubernetes' way: the first three addresses, then how many more."""
    addresses = [str(a) for ep in es.get("endpoints") or [] if isinstance(ep, dict)
                 for a in ep.get("addresses") or []]
    if not addresses:
        return "<unset>"
    shown = ",".join(addresses[:3])
    return shown + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")


def endpoints_addresses(ep: Obj, now: datetime) -> str:
    """Kubernetes' way: IP:PORT of ready addresses, subset by subset and port by port,
    the first three."""
    shown: list[str] = []
    for subset in ep.get("subsets") or []:
        if not isinstance(subset, dict):
            continue
        ports = [p.get("port") for p in subset.get("ports") or [] if isinstance(p, dict)]
        ips = [str(a.get("ip")) for a in subset.get("addresses") or [] if isinstance(a, dict)]
        shown += [f"{ip}:{port}" for port in ports for ip in ips] if ports else ips
    if not shown:
        return "<none>"
    return ",".join(shown[:3]) + (f" + {len(shown) - 3} more..." if len(shown) > 3 else "")


def event_source(ev: Obj, now: datetime) -> str:
    source = ev.get("source") or {}
    component = str(source.get("component") or ev.get("reportingComponent") or "")
    host = str(source.get("host") or ev.get("reportingInstance") or "")
    return ", ".join(p for p in (component, host) if p)


def event_first_seen(ev: Obj, now: datetime) -> str:
    return since(ev.get("firstTimestamp") or ev.get("eventTime")
                 or _get(ev, "metadata", "creationTimestamp"), now)


def event_count(ev: Obj, now: datetime) -> str:
    return str(_int(ev.get("count")) or 1)


@dataclass(frozen=True)
class Column:
    """One column of a kind's table, as Kubernetes' printers declare it: `name` in their
    wording ("Nominated Node"; kubectl shows it upper-cased), the cell as text, and
    `priority` 1 for the columns only `-o wide` shows. `type` is the OpenAPI type of the
    cell in a server-side Table ("integer" cells are sent as numbers)."""

    name: str
    cell: Callable[[Obj, datetime], str]
    priority: int = 0
    type: str = "string"
    description: str = ""

    @property
    def header(self) -> str:
        return self.name.upper()


def _c(name: str, cell: Callable[[Obj, datetime], str], description: str = "", *,
       wide: bool = False, integer: bool = False) -> Column:
    return Column(name, cell, priority=1 if wide else 0,
                  type="integer" if integer else "string", description=description)


NAME = _c("Name", _name, "Name must be unique within a namespace.")
AGE = _c("Age", age, "The time since the object was created (metadata.creationTimestamp).")
WORKLOAD_WIDE = [
    _c("Containers", containers, "Names of each container in the template.", wide=True),
    _c("Images", images, "Images referenced by each container in the template.", wide=True),
    _c("Selector", selector, "Label selector for pods.", wide=True)]

# Every kind's columns, in Kubernetes' order (pkg/printers/internalversion): the ones
# `-o wide` adds are priority 1, wherever they stand.
COLUMNS: dict[str, list[Column]] = {
    "Pod": [NAME,
            _c("Ready", pod_ready, "Ready containers out of all containers."),
            _c("Status", pod_status, "The pod's phase, or why it is not running."),
            _c("Restarts", pod_restarts, "Restarts of all its containers."),
            AGE,
            _c("IP", field("status", "podIP", default="<none>"), "The pod's IP.", wide=True),
            _c("Node", field("spec", "nodeName", default="<none>"),
               "The node it is bound to.", wide=True),
            _c("Nominated Node", field("status", "nominatedNodeName", default="<none>"),
               "The node preemption nominated it for.", wide=True),
            _c("Readiness Gates", readiness_gates, "Readiness gates met out of all.",
               wide=True)],
    "Deployment": [NAME,
                   _c("Ready", deployment_ready, "Ready replicas out of those wanted."),
                   _c("Up-to-date", counter("status", "updatedReplicas"),
                      "Replicas of the current template.", integer=True),
                   _c("Available", counter("status", "availableReplicas"),
                      "Replicas available to serve.", integer=True),
                   AGE, *WORKLOAD_WIDE],
    "ReplicaSet": [NAME,
                   _c("Desired", lambda o, now: str(_replicas(o)), "Replicas wanted.",
                      integer=True),
                   _c("Current", counter("status", "replicas"), "Replicas that exist.",
                      integer=True),
                   _c("Ready", counter("status", "readyReplicas"), "Replicas ready.",
                      integer=True),
                   AGE, *WORKLOAD_WIDE],
    "DaemonSet": [NAME,
                  _c("Desired", counter("status", "desiredNumberScheduled"),
                     "Nodes that should run its pod.", integer=True),
                  _c("Current", counter("status", "currentNumberScheduled"),
                     "Nodes that run its pod.", integer=True),
                  _c("Ready", counter("status", "numberReady"),
                     "Nodes whose pod is ready.", integer=True),
                  _c("Up-to-date", counter("status", "updatedNumberScheduled"),
                     "Nodes that run the current template.", integer=True),
                  _c("Available", counter("status", "numberAvailable"),
                     "Nodes whose pod is available.", integer=True),
                  _c("Node Selector", _node_selector, "The template's node selector."),
                  AGE, *WORKLOAD_WIDE],
    "Job": [NAME,
            _c("Status", job_status, "Status of the job."),
            _c("Completions", job_completions, "Succeeded pods out of those wanted."),
            _c("Duration", job_duration, "How long the job ran (or has been running)."),
            AGE, *WORKLOAD_WIDE],
    "Service": [NAME,
                _c("Type", service_type, "How the service is exposed."),
                _c("Cluster-IP", field("spec", "clusterIP", default="<none>"),
                   "The service's virtual IP."),
                _c("External-IP", service_external_ip, "Addresses outside the cluster."),
                _c("Port(s)", service_ports, "The ports it serves."),
                AGE,
                _c("Selector", selector, "Label selector of its pods.", wide=True)],
    "ConfigMap": [NAME, _c("Data", _data_count, "Keys of data and binaryData."), AGE],
    "Secret": [NAME, _c("Type", field("type", default="Opaque"), "The secret's type."),
               _c("Data", _data_count, "Keys of data."), AGE],
    "Namespace": [NAME, _c("Status", field("status", "phase", default="Active"),
                           "Active, or Terminating once deleted."), AGE],
    "Node": [NAME, _c("Status", node_status, "Ready, NotReady or Unknown, and whether it "
                                             "takes new pods."),
             _c("Roles", node_roles, "Its node-role.kubernetes.io labels."), AGE,
             _c("Version", field("status", "nodeInfo", "kubeletVersion"),
                "The node agent's version."),
             _c("Internal-IP", node_address("InternalIP"), "Its internal address.",
                wide=True),
             _c("External-IP", node_address("ExternalIP"), "Its external address.",
                wide=True),
             _c("OS-Image", field("status", "nodeInfo", "osImage", default="<unknown>"),
                "Its operating system.", wide=True),
             _c("Kernel-Version",
                field("status", "nodeInfo", "kernelVersion", default="<unknown>"),
                "Its kernel.", wide=True),
             _c("Container-Runtime",
                field("status", "nodeInfo", "containerRuntimeVersion", default="<unknown>"),
                "Its container runtime.", wide=True)],
    "Lease": [NAME, _c("Holder", field("spec", "holderIdentity"), "Who holds the lease."),
              AGE],
    "Endpoints": [NAME, _c("Endpoints", endpoints_addresses, "Ready addresses and ports."),
                  AGE],
    "EndpointSlice": [NAME, _c("AddressType", field("addressType"), "IPv4, IPv6 or FQDN."),
                      _c("Ports", slice_ports, "The ports of its endpoints."),
                      _c("Endpoints", slice_endpoints, "The first of its addresses."), AGE],
    # Events have no AGE and show NAME only when wide: what happened to which object.
    "Event": [_c("Last Seen", event_last_seen, "When it last happened."),
              _c("Type", field("type"), "Normal or Warning."),
              _c("Reason", field("reason"), "Why it happened, in a word."),
              _c("Object", event_object, "The object it is about."),
              _c("Subobject", field("involvedObject", "fieldPath"),
                 "The part of the object it is about.", wide=True),
              _c("Source", event_source, "Who reported it.", wide=True),
              _c("Message", field("message"), "What happened."),
              _c("First Seen", event_first_seen, "When it first happened.", wide=True),
              _c("Count", event_count, "How often it happened.", wide=True, integer=True),
              _c("Name", _name, "The event's name.", wide=True)],
}


def columns(kind: kinds.Kind, *, wide: bool = False) -> list[Column]:
    """The kind's columns (NAME and AGE for kinds without a printer of their own), the
    wide ones only when asked for."""
    every = COLUMNS.get(kind.kind, [NAME, AGE])
    return [c for c in every if wide or c.priority == 0]


# ---- server-side tables ---------------------------------------------------------------------

TABLE_VERSIONS = ("v1", "v1beta1")  # meta.k8s.io's versions of Table that we answer
INCLUDE_OBJECT = ("None", "Metadata", "Object")


def _typed_cell(column: Column, text: str) -> Any:
    if column.type == "integer":
        try:
            return int(text)
        except ValueError:
            return text
    return text


def row_object(kind: kinds.Kind, obj: Obj, include: str) -> Obj | None:
    """What a Table row carries of its object: nothing, its metadata (as a
    PartialObjectMetadata, which is what kubectl needs for the NAMESPACE column and
    `--show-labels`), or all of it."""
    if include == "None":
        return None
    if include == "Metadata":
        return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata") or {}}
    return _typed(obj, kind)


def table_object(kind: kinds.Kind, objs: Sequence[Obj], *, now: datetime,
                 version: str = "v1", include: str = "Metadata",
                 list_meta: Obj | None = None, definitions: bool = True) -> Obj:
    """A meta.k8s.io Table of `objs`, as Kubernetes' API server answers a client that asks
    for `application/json;as=Table`: every column with its priority (kubectl shows the
    priority-1 ones with `-o wide`), a row of cells per object and, per `include`
    (`INCLUDE_OBJECT`), the object or its metadata. `definitions=False` leaves the
    column definitions out (watch events after the first)."""
    cols = COLUMNS.get(kind.kind, [NAME, AGE])
    rows = []
    for obj in objs:
        row: Obj = {"cells": [_typed_cell(c, c.cell(obj, now)) for c in cols]}
        carried = row_object(kind, obj, include)
        if carried is not None:
            row["object"] = carried
        rows.append(row)
    return {"kind": "Table", "apiVersion": f"meta.k8s.io/{version}",
            "metadata": dict(list_meta or {}),
            "columnDefinitions": [
                {"name": c.name, "type": c.type, "format": "name" if c is NAME else "",
                 "description": c.description, "priority": c.priority}
                for c in cols] if definitions else [],
            "rows": rows}


# ---- formats -----------------------------------------------------------------------------


def tabulate(rows: Sequence[Sequence[str]]) -> str:
    """Rows as kubectl's tabwriter lays them out: left-aligned, padded, no trailing pad."""
    if not rows:
        return ""
    widths = [max(MIN_WIDTH, max(len(r[i]) for r in rows if i < len(r)) + PADDING)
              for i in range(max(len(r) for r in rows))]
    lines = []
    for row in rows:
        cells = [c.ljust(widths[i]) for i, c in enumerate(row[:-1])] + list(row[-1:])
        lines.append("".join(cells))
    return "\n".join(lines) + "\n"


def label_header(key: str) -> str:
    """kubectl's header for `-L KEY`: the key's last path segment, upper-cased."""
    return key.rsplit("/", 1)[-1].upper()


def labels_text(obj: Obj) -> str:
    labels = _get(obj, "metadata", "labels") or {}
    if not isinstance(labels, dict) or not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def table_rows(objs: Sequence[Obj], kind: kinds.Kind, *, now: datetime,
               options: Options = Options(), headers: bool = True) -> list[list[str]]:
    """The cells of a table, its header row first when `headers` (and not no_headers)."""
    cols = columns(kind, wide=options.output == "wide")
    with_namespace = options.all_namespaces and (kind.namespaced or options.namespace_column)
    header = [c.header for c in cols] + [label_header(k) for k in options.label_columns]
    if options.show_labels:
        header.append("LABELS")
    if with_namespace:
        header.insert(0, "NAMESPACE")
    rows = [header] if headers and not options.no_headers else []
    for obj in objs:
        row = [c.cell(obj, now) for c in cols]
        if options.with_kind and kind.kind != "Event":
            row[0] = object_ref(kind, obj)
        labels = _get(obj, "metadata", "labels") or {}
        row += [str(labels.get(k, "")) if isinstance(labels, dict) else ""
                for k in options.label_columns]
        if options.show_labels:
            row.append(labels_text(obj))
        if with_namespace:
            row.insert(0, str(_get(obj, "metadata", "namespace") or ""))
        rows.append(row)
    return rows


def table(objs: Sequence[Obj], kind: kinds.Kind, *, now: datetime,
          options: Options = Options()) -> str:
    return tabulate(table_rows(objs, kind, now=now, options=options))


def _typed(obj: Obj, kind: kinds.Kind) -> Obj:
    """The object with apiVersion and kind, which list items may leave out."""
    if obj.get("apiVersion") and obj.get("kind"):
        return obj
    return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}


def typed(obj: Obj, kind: kinds.Kind) -> Obj:
    """The object with apiVersion and kind, which list items may leave out."""
    return _typed(obj, kind)


def as_list(items: Sequence[Obj]) -> Obj:
    """kubectl's wrapper for several objects: `apiVersion: v1, kind: List`."""
    return {"apiVersion": "v1", "items": list(items), "kind": "List",
            "metadata": {"resourceVersion": ""}}


class _Dumper(yaml.SafeDumper):
    """Strings that need quotes get double ones, as in kubectl's `resourceVersion: "6"`."""

    def choose_scalar_style(self) -> str:
        style: str = super().choose_scalar_style()
        return '"' if style == "'" else style


def to_yaml(doc: Any) -> str:
    # Sorted keys, block style, no line folding: kubectl's YAML (JSON through
    # sigs.k8s.io/yaml), which keeps a long annotation on one line.
    text: str = yaml.dump(doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False,
                          allow_unicode=True, width=1 << 20)
    return text


def to_json(doc: Any) -> str:
    return json.dumps(doc, indent=4, ensure_ascii=False) + "\n"


def render(groups: Sequence[tuple[kinds.Kind, Sequence[Obj]]], *, now: datetime,
           options: Options = Options(), single: bool = False) -> str:
    """Objects of one or more kinds in one format. `single`: exactly one object was asked
    for by name, so yaml and json show it alone rather than in a List."""
    if options.output in ("yaml", "json"):
        typed = [_typed(o, k) for k, objs in groups for o in objs]
        doc = typed[0] if single and len(typed) == 1 else as_list(typed)
        return to_yaml(doc) if options.output == "yaml" else to_json(doc)
    if options.output == "name":
        return "".join(f"{object_ref(k, o)}\n" for k, objs in groups for o in objs)
    tables = [table(objs, k, now=now, options=options) for k, objs in groups if objs]
    return "\n".join(tables)
