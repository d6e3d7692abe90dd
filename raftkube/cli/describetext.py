"""The pieces `rk describe` builds its text from, as kubectl lays them out: indented
lines aligned by a tab writer, and the sections several kinds share (labels, events,
containers, a pod template, volumes, tolerations).

Pure functions of objects and a clock; `describers` puts them together per kind. kubectl
writes `key:\\tvalue` lines at indentation levels of two spaces and aligns them with Go's
tabwriter (padding 2): a column is aligned over a run of consecutive lines that all have
a cell in it, so a line without a tab ends the run. `Writer.text()` does the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from raftkube.api import printers

Obj = dict[str, Any]
PADDING = 2
# kubectl shows the whole of no annotation that only tools read.
SKIPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})


def get(obj: Any, *path: str) -> Any:
    cur = obj
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def maps(value: Any) -> list[Obj]:
    return [v for v in value or [] if isinstance(v, dict)] if isinstance(value, list) else []


class Writer:
    """Lines at kubectl's levels (0: none, 1: two spaces, ...), tab-separated cells."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, level: int, text: str) -> None:
        self.lines.append("  " * level + text)

    def blank(self) -> None:
        self.lines.append("")

    def text(self) -> str:
        return "".join(line + "\n" for line in align(self.lines))


def align(lines: Sequence[str]) -> list[str]:
    """Go's tabwriter (minwidth 0, padding 2, spaces): every cell but a line's last is
    padded to the widest cell of its column block."""
    rows = [line.split("\t") for line in lines]
    widths: list[list[int]] = [[] for _ in rows]  # per row, the width of each padded cell

    def format_block(column: int, start: int, end: int) -> None:
        i = start
        while i < end:
            if column >= len(rows[i]) - 1:
                i += 1
                continue
            j = i
            width = 0
            while j < end and column < len(rows[j]) - 1:
                width = max(width, len(rows[j][column]) + PADDING)
                j += 1
            for k in range(i, j):
                widths[k].append(width)
            format_block(column + 1, i, j)
            i = j

    format_block(0, 0, len(rows))
    out = []
    for row, ws in zip(rows, widths, strict=True):
        cells = [cell.ljust(w) for cell, w in zip(row, ws, strict=False)]
        out.append("".join(cells) + row[-1] if len(row) > 1 else row[0])
    return out


# ---- values ----------------------------------------------------------------------------

def timestamp(value: Any) -> str:
    """Go's RFC1123Z, as kubectl prints times: `Mon, 02 Jan 2006 15:04:05 +0000`."""
    t = printers.parse_time(value)
    return t.strftime("%a, %d %b %Y %H:%M:%S %z") if t is not None else "<unset>"


def or_none(text: str) -> str:
    return text if text else "<none>"


def multiline(w: Writer, level: int, title: str, pairs: Iterable[str]) -> None:
    """`Title:\\tfirst` and `\\tnext` for the others, or `<none>`: kubectl's labels,
    annotations, taints and tolerations."""
    items = list(pairs)
    if not items:
        w.write(level, f"{title}:\t<none>")
        return
    w.write(level, f"{title}:\t{items[0]}")
    for item in items[1:]:
        w.write(0, "\t" + item)


def label_pairs(labels: Any) -> list[str]:
    if not isinstance(labels, dict):
        return []
    return [f"{k}={v}" for k, v in sorted(labels.items())]


def annotation_pairs(annotations: Any) -> list[str]:
    if not isinstance(annotations, dict):
        return []
    return [f"{k}: {v}" for k, v in sorted(annotations.items())
            if k not in SKIPPED_ANNOTATIONS]


def header(w: Writer, obj: Obj, *, namespaced: bool = True, created: bool = False) -> None:
    """Name, Namespace, (CreationTimestamp,) Labels and Annotations."""
    meta = obj.get("metadata") or {}
    w.write(0, f"Name:\t{meta.get('name', '')}")
    if namespaced:
        w.write(0, f"Namespace:\t{meta.get('namespace', '')}")
    if created:
        w.write(0, f"CreationTimestamp:\t{timestamp(meta.get('creationTimestamp'))}")
    multiline(w, 0, "Labels", label_pairs(meta.get("labels")))
    multiline(w, 0, "Annotations", annotation_pairs(meta.get("annotations")))


def controller_of(obj: Obj) -> str:
    for ref in maps(get(obj, "metadata", "ownerReferences")):
        if ref.get("controller"):
            return f"{ref.get('kind', '')}/{ref.get('name', '')}"
    return ""


def selector_text(selector: Any) -> str:
    """A LabelSelector in the label selector syntax (`app=web,tier in (a,b)`)."""
    if not isinstance(selector, dict):
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in maps(selector.get("matchExpressions")):
        key, op = expr.get("key", ""), expr.get("operator", "")
        values = ",".join(str(v) for v in expr.get("values") or [])
        parts.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, f"{key} {op}"))
    return ",".join(parts)


def taint_text(taint: Obj) -> str:
    text = str(taint.get("key", ""))
    if taint.get("value"):
        text += f"={taint['value']}"
    return text + f":{taint.get('effect', '')}"


def toleration_text(t: Obj) -> str:
    text = str(t.get("key") or "")
    if t.get("value"):
        text += f"={t['value']}"
    if t.get("effect"):
        text += f":{t['effect']}"
    if t.get("operator") == "Exists" and not t.get("value"):
        text += " op=Exists" if t.get("key") else "op=Exists"
    if t.get("tolerationSeconds") is not None:
        text += f" for {t['tolerationSeconds']}s"
    return text


# ---- events ----------------------------------------------------------------------------

def events(w: Writer, found: Sequence[Obj] | None, now: datetime) -> None:
    """kubectl's Events table (oldest first), `<none>` without any; nothing at all when
    the events could not be read (None)."""
    if found is None:
        return
    if not found:
        w.write(0, "Events:\t<none>")
        return
    w.write(0, "Events:")
    w.write(1, "Type\tReason\tAge\tFrom\tMessage")
    w.write(1, "----\t------\t----\t----\t-------")

    def last(ev: Obj) -> tuple[str, int]:
        """When it was last seen; the order they were written in within one second."""
        t = printers.parse_time(ev.get("lastTimestamp") or ev.get("eventTime")
                                or ev.get("firstTimestamp"))
        version = str(get(ev, "metadata", "resourceVersion") or "0")
        return (t.isoformat() if t else "", int(version) if version.isdigit() else 0)

    for ev in sorted(found, key=last):
        first = printers.since(ev.get("eventTime") or ev.get("firstTimestamp")
                               or get(ev, "metadata", "creationTimestamp"), now)
        count: int = ev["count"] if isinstance(ev.get("count"), int) else 1
        series = ev.get("series") if isinstance(ev.get("series"), dict) else None
        if series and isinstance(series.get("count"), int):
            age = (f"{printers.since(series.get('lastObservedTime'), now)} "
                   f"(x{series['count']} over {first})")
        elif count > 1:
            age = f"{printers.since(ev.get('lastTimestamp'), now)} (x{count} over {first})"
        else:
            age = first
        source = get(ev, "source", "component") or ev.get("reportingComponent") or ""
        message = str(ev.get("message") or "").strip()
        w.write(1, f"{ev.get('type', '')}\t{ev.get('reason', '')}\t{age}\t{source}\t"
                   f"{message}")


# ---- containers ------------------------------------------------------------------------

def probe_text(probe: Obj) -> str:
    """kubectl's one line: `http-get http://:8080/ delay=0s timeout=1s period=10s
    #success=1 #failure=3`."""
    attrs = (f"delay={probe.get('initialDelaySeconds') or 0}s "
             f"timeout={probe.get('timeoutSeconds') or 1}s "
             f"period={probe.get('periodSeconds') or 10}s "
             f"#success={probe.get('successThreshold') or 1} "
             f"#failure={probe.get('failureThreshold') or 3}")
    if isinstance(probe.get("exec"), dict):
        command = " ".join(str(c) for c in probe["exec"].get("command") or [])
        return f"exec [{command}] {attrs}"
    if isinstance(probe.get("httpGet"), dict):
        h = probe["httpGet"]
        scheme = str(h.get("scheme") or "HTTP").lower()
        host = str(h.get("host") or "")
        port = str(h.get("port", ""))
        where = (f"[{host}]:{port}" if ":" in host else f"{host}:{port}") if port else host
        return f"http-get {scheme}://{where}{h.get('path') or ''} {attrs}"
    if isinstance(probe.get("tcpSocket"), dict):
        t = probe["tcpSocket"]
        return f"tcp-socket {t.get('host') or ''}:{t.get('port', '')} {attrs}"
    if isinstance(probe.get("grpc"), dict):
        g = probe["grpc"]
        return f"grpc <pod>:{g.get('port', '')} {g.get('service') or ''} {attrs}"
    return f"unknown {attrs}"


def _state(w: Writer, title: str, state: Obj) -> None:
    if isinstance(state.get("running"), dict):
        w.write(2, f"{title}:\tRunning")
        w.write(3, f"Started:\t{timestamp(state['running'].get('startedAt'))}")
    elif isinstance(state.get("terminated"), dict):
        t = state["terminated"]
        w.write(2, f"{title}:\tTerminated")
        if t.get("reason"):
            w.write(3, f"Reason:\t{t['reason']}")
        if t.get("message"):
            w.write(3, f"Message:\t{t['message']}")
        w.write(3, f"Exit Code:\t{t.get('exitCode', 0)}")
        if t.get("signal"):
            w.write(3, f"Signal:\t{t['signal']}")
        w.write(3, f"Started:\t{timestamp(t.get('startedAt'))}")
        w.write(3, f"Finished:\t{timestamp(t.get('finishedAt'))}")
    else:
        waiting: Obj = state["waiting"] if isinstance(state.get("waiting"), dict) else {}
        w.write(2, f"{title}:\tWaiting")
        if waiting.get("reason"):
            w.write(3, f"Reason:\t{waiting['reason']}")


def _ports(ports: list[Obj], key: str) -> str:
    return ", ".join(f"{p.get(key) or 0}/{p.get('protocol') or 'TCP'}" for p in ports)


def _env(w: Writer, env: list[Obj]) -> None:
    if not env:
        w.write(2, "Environment:\t<none>")
        return
    w.write(2, "Environment:")
    for e in env:
        name = e.get("name", "")
        source = e.get("valueFrom") if isinstance(e.get("valueFrom"), dict) else None
        if source is None:
            w.write(3, f"{name}:\t{e.get('value', '')}")
        elif isinstance(source.get("fieldRef"), dict):
            ref = source["fieldRef"]
            w.write(3, f"{name}:\t ({ref.get('apiVersion') or 'v1'}:{ref.get('fieldPath', '')})")
        elif isinstance(source.get("resourceFieldRef"), dict):
            ref = source["resourceFieldRef"]
            w.write(3, f"{name}:\t{ref.get('resource', '')}")
        elif isinstance(source.get("configMapKeyRef"), dict):
            ref = source["configMapKeyRef"]
            w.write(3, f"{name}:\t<set to the key '{ref.get('key', '')}' of config map "
                       f"'{ref.get('name', '')}'>\tOptional: {_bool(ref.get('optional'))}")
        elif isinstance(source.get("secretKeyRef"), dict):
            ref = source["secretKeyRef"]
            w.write(3, f"{name}:\t<set to the key '{ref.get('key', '')}' in secret "
                       f"'{ref.get('name', '')}'>\tOptional: {_bool(ref.get('optional'))}")
        else:
            w.write(3, f"{name}:\t<unknown>")


def _bool(value: Any) -> str:
    return "true" if value is True else "false"


def _mounts(w: Writer, mounts: list[Obj]) -> None:
    if not mounts:
        w.write(2, "Mounts:\t<none>")
        return
    w.write(2, "Mounts:")
    for m in sorted(mounts, key=lambda m: str(m.get("mountPath", ""))):
        flags = "ro" if m.get("readOnly") else "rw"
        if m.get("subPath"):
            flags += f",path=\"{m['subPath']}\""
        w.write(3, f"{m.get('mountPath', '')} from {m.get('name', '')} ({flags})")


def containers(w: Writer, title: str, specs: list[Obj], statuses: list[Obj] | None, *,
               prefix: str = "") -> None:
    """A pod's (statuses given) or a template's containers; a template's names are
    indented one space more, as kubectl does."""
    base = 0 if statuses is not None else 1
    by_name = {s.get("name"): s for s in statuses or []}
    w.write(base, f"{title}:")
    for c in specs:
        status = by_name.get(c.get("name"))
        w.lines.append("  " + prefix + f"{c.get('name', '')}:")
        lvl = w  # a template's container fields sit where a pod's do
        if status is not None:
            lvl.write(2, f"Container ID:\t{status.get('containerID', '')}")
        lvl.write(2, f"Image:\t{c.get('image', '')}")
        if status is not None:
            lvl.write(2, f"Image ID:\t{status.get('imageID', '')}")
        ports = maps(c.get("ports"))
        text = _ports(ports, "containerPort")
        lvl.write(2, f"Ports:\t{text}" if "," in text else f"Port:\t{or_none(text)}")
        hosts = _ports(ports, "hostPort")
        lvl.write(2, f"Host Ports:\t{hosts}" if "," in hosts else f"Host Port:\t{or_none(hosts)}")
        for key, name in (("command", "Command"), ("args", "Args")):
            if c.get(key):
                lvl.write(2, f"{name}:")
                for part in c[key]:
                    lvl.write(3, str(part))
        if status is not None:
            _state(lvl, "State", status.get("state") or {})
            last = status.get("lastState") or {}
            if isinstance(last.get("terminated"), dict):
                _state(lvl, "Last State", last)
            lvl.write(2, f"Ready:\t{'True' if status.get('ready') else 'False'}")
            lvl.write(2, f"Restart Count:\t{status.get('restartCount', 0)}")
        resources = c.get("resources") or {}
        for key, name in (("limits", "Limits"), ("requests", "Requests")):
            if resources.get(key):
                lvl.write(2, f"{name}:")
                for r, q in sorted(resources[key].items()):
                    lvl.write(3, f"{r}:\t{q}")
        for key, name in (("livenessProbe", "Liveness"), ("readinessProbe", "Readiness"),
                          ("startupProbe", "Startup")):
            if isinstance(c.get(key), dict):
                lvl.write(2, f"{name}:\t{probe_text(c[key])}")
        _env(lvl, maps(c.get("env")))
        _mounts(lvl, maps(c.get("volumeMounts")))


VOLUME_TYPES: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "emptyDir": ("EmptyDir (a temporary directory that shares a pod's lifetime)",
                 (("Medium", "medium"), ("SizeLimit", "sizeLimit"))),
    "configMap": ("ConfigMap (a volume populated by a ConfigMap)",
                  (("Name", "name"), ("Optional", "optional"))),
    "secret": ("Secret (a volume populated by a Secret)",
               (("SecretName", "secretName"), ("Optional", "optional"))),
    "hostPath": ("HostPath (bare host directory volume)",
                 (("Path", "path"), ("HostPathType", "type"))),
    "persistentVolumeClaim": (
        "PersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same "
        "namespace)", (("ClaimName", "claimName"), ("ReadOnly", "readOnly"))),
    "downwardAPI": ("DownwardAPI (a volume populated by information about the pod)", ()),
    "projected": ("Projected (a volume that contains injected data from multiple "
                  "sources)", ()),
}


def volumes(w: Writer, level: int, vols: list[Obj]) -> None:
    if not vols:
        w.write(level, "Volumes:\t<none>")
        return
    w.write(level, "Volumes:")
    for v in vols:
        w.write(level + 1, f"{v.get('name', '')}:")
        source = next(((k, v[k]) for k in VOLUME_TYPES if k in v), None)
        if source is None:
            w.write(level + 2, "Type:\t<unknown>")
            continue
        key, body = source
        text, fields = VOLUME_TYPES[key]
        w.write(level + 2, f"Type:\t{text}")
        body = body if isinstance(body, dict) else {}
        for title, field in fields:
            value = body.get(field)
            if isinstance(value, bool) or field in ("optional", "readOnly"):
                shown = _bool(value)
            elif value is None:
                shown = "<unset>" if field == "sizeLimit" else ""
            else:
                shown = str(value)
            w.write(level + 2, f"{title}:\t{shown}")


def pod_template(w: Writer, template: Obj) -> None:
    """kubectl's `Pod Template:` section, one level in."""
    meta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    w.write(0, "Pod Template:")
    multiline(w, 1, "Labels", label_pairs(meta.get("labels")))
    if annotation_pairs(meta.get("annotations")):
        multiline(w, 1, "Annotations", annotation_pairs(meta.get("annotations")))
    if spec.get("serviceAccountName"):
        w.write(1, f"Service Account:\t{spec['serviceAccountName']}")
    if maps(spec.get("initContainers")):
        containers(w, "Init Containers", maps(spec.get("initContainers")), None, prefix=" ")
    containers(w, "Containers", maps(spec.get("containers")), None, prefix=" ")
    volumes(w, 1, maps(spec.get("volumes")))
    multiline(w, 1, "Node-Selectors", label_pairs(spec.get("nodeSelector")))
    multiline(w, 1, "Tolerations", [toleration_text(t)
                                   for t in maps(spec.get("tolerations"))])


def conditions(w: Writer, conds: list[Obj], columns: Sequence[str], *,
               dashes: bool = True) -> None:
    """A conditions table with kubectl's trailing spaces, under `Conditions:` (a pod's
    has no line of dashes)."""
    if not conds:
        return
    w.write(0, "Conditions:")
    w.write(1, "\t".join(columns))
    if dashes:
        w.write(1, "\t".join("-" * len(c) for c in columns))
    keys = [c[0].lower() + c[1:].replace(" ", "") for c in columns]
    for cond in conds:
        cells = []
        for key in keys:
            value = cond.get(key)
            if key.endswith("Time"):
                value = timestamp(value)
            cells.append(str(value if value is not None else ""))
        w.write(1, " \t".join(cells))


def plain(value: Any) -> str:
    if isinstance(value, bool):
        return _bool(value)
    return "" if value is None else str(value)
