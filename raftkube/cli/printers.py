"""kubectl's output formats as pure functions: objects in, text out.

Nothing here talks to a server or reads the clock: the caller passes the objects, their
kind and `now`, so every format is checked by unit tests against fixed inputs. The table
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

Column = tuple[str, Callable[[Obj, datetime], str]]


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


def pod_ready(pod: Obj, now: datetime) -> str:
    statuses = _get(pod, "status", "containerStatuses") or []
    ready = sum(1 for s in statuses if isinstance(s, dict) and s.get("ready"))
    return f"{ready}/{len(_get(pod, 'spec', 'containers') or [])}"


def pod_status(pod: Obj, now: datetime) -> str:
    """The phase, refined like kubectl: a container's waiting or terminated reason
    (`CrashLoopBackOff`, `Completed`), and `Terminating` once deletion has begun."""
    reason = str(_get(pod, "status", "reason") or _get(pod, "status", "phase") or "Pending")
    for cs in reversed(_get(pod, "status", "containerStatuses") or []):
        state = cs.get("state") or {} if isinstance(cs, dict) else {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason"):
            reason = str(waiting["reason"])
        elif terminated.get("reason"):
            reason = str(terminated["reason"])
        elif terminated:
            code = terminated.get("exitCode", 0)
            signal = terminated.get("signal")
            reason = f"Signal:{signal}" if signal else f"ExitCode:{code}"
    if _get(pod, "metadata", "deletionTimestamp"):
        reason = "Terminating"
    return reason


def pod_restarts(pod: Obj, now: datetime) -> str:
    statuses = _get(pod, "status", "containerStatuses") or []
    return str(sum(_int(s.get("restartCount")) for s in statuses if isinstance(s, dict)))


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


AGE: Column = ("AGE", age)

# Columns between NAME and AGE, and those `-o wide` adds after AGE, per kind.
COLUMNS: dict[str, list[Column]] = {
    "Pod": [("READY", pod_ready), ("STATUS", pod_status), ("RESTARTS", pod_restarts)],
    "Deployment": [("READY", deployment_ready),
                   ("UP-TO-DATE", counter("status", "updatedReplicas")),
                   ("AVAILABLE", counter("status", "availableReplicas"))],
    "ReplicaSet": [("DESIRED", lambda o, now: str(_replicas(o))),
                   ("CURRENT", counter("status", "replicas")),
                   ("READY", counter("status", "readyReplicas"))],
    "DaemonSet": [("DESIRED", counter("status", "desiredNumberScheduled")),
                  ("CURRENT", counter("status", "currentNumberScheduled")),
                  ("READY", counter("status", "numberReady")),
                  ("UP-TO-DATE", counter("status", "updatedNumberScheduled")),
                  ("AVAILABLE", counter("status", "numberAvailable"))],
    "Job": [("COMPLETIONS", job_completions), ("DURATION", job_duration)],
    "Service": [("TYPE", service_type),
                ("CLUSTER-IP", field("spec", "clusterIP", default="<none>")),
                ("EXTERNAL-IP", service_external_ip), ("PORT(S)", service_ports)],
    "ConfigMap": [("DATA", _data_count)],
    "Secret": [("TYPE", field("type", default="Opaque")), ("DATA", _data_count)],
    "Namespace": [("STATUS", field("status", "phase", default="Active"))],
    "Node": [("STATUS", node_status), ("ROLES", node_roles)],
    "Lease": [("HOLDER", field("spec", "holderIdentity"))],
}
AFTER_AGE: dict[str, list[Column]] = {
    "Node": [("VERSION", field("status", "nodeInfo", "kubeletVersion"))],
}
WIDE: dict[str, list[Column]] = {
    "Pod": [("IP", field("status", "podIP", default="<none>")),
            ("NODE", field("spec", "nodeName", default="<none>"))],
    "Deployment": [("CONTAINERS", containers), ("IMAGES", images), ("SELECTOR", selector)],
    "ReplicaSet": [("CONTAINERS", containers), ("IMAGES", images), ("SELECTOR", selector)],
    "DaemonSet": [("CONTAINERS", containers), ("IMAGES", images), ("SELECTOR", selector)],
    "Job": [("CONTAINERS", containers), ("IMAGES", images), ("SELECTOR", selector)],
    "Service": [("SELECTOR", selector)],
    "Node": [("INTERNAL-IP", node_address("InternalIP")),
             ("EXTERNAL-IP", node_address("ExternalIP")),
             ("OS-IMAGE", field("status", "nodeInfo", "osImage", default="<unknown>")),
             ("CONTAINER-RUNTIME",
              field("status", "nodeInfo", "containerRuntimeVersion", default="<unknown>"))],
}
# Events have no NAME or AGE: kubectl shows what happened to which object, and when.
EVENT_COLUMNS: list[Column] = [
    ("LAST SEEN", event_last_seen), ("TYPE", field("type")), ("REASON", field("reason")),
    ("OBJECT", event_object), ("MESSAGE", field("message"))]


def columns(kind: kinds.Kind, *, wide: bool = False) -> list[Column]:
    if kind.kind == "Event":
        return list(EVENT_COLUMNS)
    out = [("NAME", _name), *COLUMNS.get(kind.kind, []), AGE, *AFTER_AGE.get(kind.kind, [])]
    if wide:
        out += WIDE.get(kind.kind, [])
    return out


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


def table(objs: Sequence[Obj], kind: kinds.Kind, *, now: datetime,
          options: Options = Options()) -> str:
    cols = columns(kind, wide=options.output == "wide")
    with_namespace = options.all_namespaces and kind.namespaced
    header = [c[0] for c in cols]
    if with_namespace:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for obj in objs:
        row = [fn(obj, now) for _, fn in cols]
        if options.with_kind and kind.kind != "Event":
            row[0] = object_ref(kind, obj)
        if with_namespace:
            row.insert(0, str(_get(obj, "metadata", "namespace") or ""))
        rows.append(row)
    return tabulate(rows)


def _typed(obj: Obj, kind: kinds.Kind) -> Obj:
    """The object with apiVersion and kind, which list items may leave out."""
    if obj.get("apiVersion") and obj.get("kind"):
        return obj
    return {"apiVersion": kind.api_version, "kind": kind.kind, **obj}


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
