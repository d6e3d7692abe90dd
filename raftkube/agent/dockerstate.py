"""What the Docker engine's answers mean to the kubelet: pure readers of `inspect`.

The runtime keeps no record but the containers' labels (`dockerspec.py`), so a pod's
state is read back from the engine: an inspect answer becomes a `Container` instance
(running; exited with its code and reason, `OOMKilled` when the engine says so; or
`StartError` for one the engine made but could not start, such as a missing binary) or
the pod's `Sandbox` (its IP on the bridge, or the node's address with hostNetwork),
and `keep` says which instances a pod keeps: the newest two of each container.
"""

from __future__ import annotations

from collections.abc import Container as Names
from datetime import datetime
from typing import Any

from raftkube.agent import dockerspec as ds
from raftkube.agent import runtime as rt

Obj = dict[str, Any]
KEEP = 2  # instances kept per container: the newest and the one before (its lastState)


def parse_engine_time(text: Any) -> float | None:
    """Seconds since the epoch of the engine's RFC 3339 times (nanoseconds, `Z`); None
    for the zero time `0001-01-01T00:00:00Z` it gives for never."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    zone = ""
    for sign in ("+", "-"):
        if sign in frac:
            frac, _, rest = frac.partition(sign)
            zone = sign + rest
    if len(head) > 19:  # an offset without a fraction
        head, zone = head[:19], head[19:]
    try:
        t = datetime.fromisoformat(head + (zone or "+00:00")).timestamp()
    except ValueError:
        return None
    return t + (float("0." + frac[:9]) if frac.isdigit() else 0.0)


def container(info: Obj, *, now: float, creating: Names[str] = ()) -> rt.Container | None:
    """The instance an inspect answer tells of; None for one being started now (its
    name in `creating`) or with unreadable labels."""
    labels = ds.labels_of(info)
    state = info.get("State") or {}
    status = state.get("Status")
    try:
        attempt = int(labels.get(ds.ATTEMPT, "0"))
    except ValueError:
        return None
    created = parse_engine_time(info.get("Created")) or now
    pod_uid, name = labels.get(ds.POD_UID, ""), labels.get(ds.CONTAINER_NAME, "")
    cid, image = f"docker://{info['Id']}", labels.get(ds.IMAGE, "")
    image_id = f"docker://{info.get('Image', '')}"
    started = parse_engine_time(state.get("StartedAt"))
    if status in ("running", "paused", "restarting"):
        return rt.Container(pod_uid, name, attempt, cid, image, image_id, rt.RUNNING,
                            started or created)
    if status == "created":
        if str(info.get("Name", "")).lstrip("/") in creating:
            return None
        code = int(state.get("ExitCode") or 0) or 128
        return rt.Container(pod_uid, name, attempt, cid, image, image_id, rt.EXITED,
                            created, created, code, "StartError")
    code = int(state.get("ExitCode") or 0)
    reason = "OOMKilled" if state.get("OOMKilled") else \
        ("Completed" if code == 0 else "Error")
    finished = parse_engine_time(state.get("FinishedAt")) or started or created
    return rt.Container(pod_uid, name, attempt, cid, image, image_id, rt.EXITED,
                        started or created, finished, code, reason)


def sandbox(info: Obj, *, host_ip: str, now: float) -> rt.Sandbox:
    labels = ds.labels_of(info)
    if labels.get(ds.HOST_NETWORK) == "true":
        ip = host_ip
    else:
        net = info.get("NetworkSettings") or {}
        ip = net.get("IPAddress") or next(
            (n.get("IPAddress") for n in (net.get("Networks") or {}).values()
             if n.get("IPAddress")), "")
    return rt.Sandbox(labels.get(ds.POD_UID, ""), labels.get(ds.POD_NAMESPACE, ""),
                      labels.get(ds.POD_NAME, ""), str(ip or ""),
                      parse_engine_time(info.get("Created")) or now,
                      ready=(info.get("State") or {}).get("Status") == "running")


def keep(found: list[tuple[rt.Container, str]]
         ) -> tuple[list[rt.Container], list[str]]:
    """(the newest KEEP instances of each container, the ids of the older exited ones
    to remove), from (instance, engine id) pairs."""
    by_name: dict[str, list[tuple[rt.Container, str]]] = {}
    for c, cid in found:
        by_name.setdefault(c.name, []).append((c, cid))
    kept: list[rt.Container] = []
    drop: list[str] = []
    for runs in by_name.values():
        runs.sort(key=lambda r: r[0].attempt, reverse=True)
        kept += [c for c, _ in runs[:KEEP]]
        drop += [cid for c, cid in runs[KEEP:] if c.state == rt.EXITED]
    return kept, drop
