"""What the Docker runtime asks the engine for, computed from a pod: pure functions.

A pod is one *sandbox* container (the pause image: it holds the pod's network, IPC and
UTS namespaces, its IP, /etc/hosts and /etc/resolv.conf) and one container per instance
of each of its containers, joined to the sandbox with `network_mode=container:ID` so
that they share localhost and the pod IP, as Kubernetes' dockershim did. A hostNetwork
pod's sandbox is on the host's network.

Every container carries labels that say whose it is (cluster, node, pod uid, namespace
and name, container name and attempt): the runtime keeps no other record, so an agent
that restarts finds its pods again, agents of several clusters and nodes share one
engine without seeing each other's containers, and `rk down` finds its cluster's. The
labels also keep what stopping a container needs and the API may no longer tell (its
preStop hook, with named ports resolved).

The functions here return the keyword arguments of docker's low-level API
(`create_container` and `create_host_config`); `docker.py` sends them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raftkube.agent import runtime as rt
from raftkube.api import defaults, quantity

Obj = dict[str, Any]

PAUSE_IMAGE = "raftkube/pause:1"

PREFIX = "io.raftkube."
CLUSTER = PREFIX + "cluster"
NODE = PREFIX + "node"
KIND = PREFIX + "kind"  # SANDBOX or CONTAINER
POD_UID = PREFIX + "pod.uid"
POD_NAMESPACE = PREFIX + "pod.namespace"
POD_NAME = PREFIX + "pod.name"
CONTAINER_NAME = PREFIX + "container.name"
ATTEMPT = PREFIX + "container.attempt"
IMAGE = PREFIX + "container.image"  # the image as the pod's spec names it
PRE_STOP = PREFIX + "container.prestop"  # the preStop hook, JSON, ports resolved
HOST_NETWORK = PREFIX + "pod.hostnetwork"

SANDBOX = "sandbox"
CONTAINER = "container"

# As the kubelet rotates container logs: 10 MiB a file, a few files kept.
LOG_CONFIG = {"type": "json-file", "config": {"max-size": "10m", "max-file": "3"}}
# The pause container writes nothing: no log file, and no copier in the engine for it
# (30 pods made by hand, 4 at once: 7.36 s against 7.68 s with json-file, median of 4).
SANDBOX_LOG_CONFIG = {"type": "none"}

_NAME_UNSAFE = re.compile(r"[^a-zA-Z0-9_.-]")


@dataclass(frozen=True)
class Spec:
    """One container as the engine is asked for it: its name and the keyword arguments
    of `create_container` and of `create_host_config`."""

    name: str
    create: Obj = field(default_factory=dict)
    host: Obj = field(default_factory=dict)


def _safe(text: str) -> str:
    return _NAME_UNSAFE.sub("-", text)


def container_name(pod: Obj, name: str, attempt: int) -> str:
    """`rk_NAME_POD_NAMESPACE_UID_ATTEMPT` (the sandbox is NAME `POD`), as the kubelet's
    `k8s_...` names: unique on the engine, and readable in `docker ps`."""
    meta = pod["metadata"]
    return "_".join(("rk", _safe(name), _safe(meta["name"]), _safe(meta.get("namespace", "")),
                     _safe(meta["uid"]), str(attempt)))


def selector(cluster: str, node: str) -> list[str]:
    """The label filter of one node's containers."""
    return [f"{CLUSTER}={cluster}", f"{NODE}={node}"]


def pod_labels(pod: Obj, *, cluster: str, node: str) -> dict[str, str]:
    meta = pod["metadata"]
    return {CLUSTER: cluster, NODE: node, POD_UID: meta["uid"],
            POD_NAMESPACE: meta.get("namespace", ""), POD_NAME: meta["name"]}


def host_network(pod: Obj) -> bool:
    return bool((pod.get("spec") or {}).get("hostNetwork"))


def default_sandbox_config(pod: Obj) -> rt.SandboxConfig:
    """What a sandbox is made with when the kubelet says nothing more: the pod's
    hostname and the host ports its containers ask for."""
    spec = pod.get("spec") or {}
    mappings = []
    for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
        for p in (c.get("ports") or []) if isinstance(c, dict) else []:
            if isinstance(p, dict) and p.get("hostPort") and p.get("containerPort"):
                mappings.append((int(p["containerPort"]), str(p.get("protocol") or "TCP"),
                                 str(p.get("hostIP") or ""), int(p["hostPort"])))
    return rt.SandboxConfig(hostname=str(spec.get("hostname") or pod["metadata"]["name"]),
                            port_mappings=tuple(mappings))


def sandbox_spec(pod: Obj, config: rt.SandboxConfig, *, cluster: str, node: str,
                 image: str = PAUSE_IMAGE) -> Spec:
    labels = {**pod_labels(pod, cluster=cluster, node=node), KIND: SANDBOX,
              CONTAINER_NAME: "POD", ATTEMPT: "0"}
    create: Obj = {"image": image, "labels": labels, "detach": True}
    host: Obj = {"ipc_mode": "shareable", "log_config": SANDBOX_LOG_CONFIG,
                 "restart_policy": {"Name": "no"}}
    if host_network(pod):
        labels[HOST_NETWORK] = "true"
        host["network_mode"] = "host"
    else:
        host["network_mode"] = "bridge"
        if config.hostname:
            create["hostname"] = config.hostname[:63]
        if config.port_mappings:
            ports: dict[str, list[Any]] = {}
            for container_port, protocol, host_ip, host_port in config.port_mappings:
                key = f"{container_port}/{protocol.lower()}"
                ports.setdefault(key, []).append((host_ip, host_port) if host_ip
                                                 else host_port)
            create["ports"] = [tuple(k.split("/")) for k in ports]
            host["port_bindings"] = {k: v[0] if len(v) == 1 else v for k, v in ports.items()}
    if config.dns_servers:
        host["dns"] = list(config.dns_servers)
    if config.dns_searches:
        host["dns_search"] = list(config.dns_searches)
    if config.dns_options:
        host["dns_opt"] = list(config.dns_options)
    return Spec(container_name(pod, "POD", 0), create, host)


def request_from_spec(container: Obj) -> rt.ContainerRequest:
    """What a container runs with when the kubelet resolved nothing for it: its own
    command, args, literal env values and workingDir, no volumes."""
    def strings(v: Any) -> tuple[str, ...] | None:
        return tuple(str(x) for x in v) if isinstance(v, list) else None

    env = tuple((str(e["name"]), str(e.get("value") or ""))
                for e in container.get("env") or []
                if isinstance(e, dict) and e.get("name") and "valueFrom" not in e)
    return rt.ContainerRequest(command=strings(container.get("command")),
                               args=strings(container.get("args")), env=env,
                               working_dir=container.get("workingDir") or None)


def pull_policy(container: Obj) -> str:
    image = str(container.get("image") or "")
    return str(container.get("imagePullPolicy") or defaults.pull_policy(image))


def _limits(container: Obj) -> Obj:
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    out: Obj = {}
    try:
        if limits.get("cpu") is not None:
            out["nano_cpus"] = max(1_000_000, int(quantity.parse_quantity(limits["cpu"])
                                                  * 1_000_000_000))
        if limits.get("memory") is not None:
            # The engine's floor is 6 MiB; a smaller limit would be refused at create.
            out["mem_limit"] = max(6 * 2**20, math.ceil(
                quantity.parse_quantity(limits["memory"])))
            out["memswap_limit"] = out["mem_limit"]  # no swap beyond it, as the kubelet
        cpu_request = requests.get("cpu", limits.get("cpu"))
        if cpu_request is not None:  # relative weight, as the kubelet's cpu.shares
            out["cpu_shares"] = max(2, int(quantity.parse_quantity(cpu_request) * 1024))
    except (ValueError, TypeError) as e:
        raise rt.RuntimeFailure(f"container {container.get('name')}: resources: {e}") from None
    return out


def _security(pod: Obj, container: Obj) -> tuple[Obj, Obj]:
    """(create kwargs, host kwargs) from the pod's and the container's securityContext;
    the container's fields win, as in Kubernetes."""
    pod_ctx = (pod.get("spec") or {}).get("securityContext") or {}
    ctx = {**pod_ctx, **(container.get("securityContext") or {})}
    create: Obj = {}
    host: Obj = {}
    uid, gid = ctx.get("runAsUser"), ctx.get("runAsGroup")
    if uid is not None or gid is not None:
        # The engine's user is `uid[:gid]`; a group alone runs as root in that group.
        create["user"] = f"{int(uid or 0)}" + (f":{int(gid)}" if gid is not None else "")
    groups = [str(g) for g in pod_ctx.get("supplementalGroups") or []]
    if pod_ctx.get("fsGroup") is not None:
        groups.append(str(pod_ctx["fsGroup"]))
    if groups:
        host["group_add"] = groups
    if ctx.get("readOnlyRootFilesystem"):
        host["read_only"] = True
    if ctx.get("privileged"):
        host["privileged"] = True
    caps = ctx.get("capabilities") or {}
    if caps.get("add"):
        host["cap_add"] = [str(c) for c in caps["add"]]
    if caps.get("drop"):
        host["cap_drop"] = [str(c) for c in caps["drop"]]
    if ctx.get("allowPrivilegeEscalation") is False:
        host["security_opt"] = ["no-new-privileges"]
    return create, host


def _port_number(port: Any, container: Obj) -> int:
    """A hook's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if isinstance(p, dict) and p.get("name") == port and p.get("containerPort"):
            return int(p["containerPort"])
    raise rt.RuntimeFailure(f"container {container.get('name')}: no port named {port!r}")


def resolved_hook(container: Obj, which: str) -> Obj | None:
    """The container's `lifecycle.<which>` hook (postStart, preStop) with a named port
    made a number; None if it has none."""
    hook = (container.get("lifecycle") or {}).get(which)
    if not isinstance(hook, dict):
        return None
    out = json.loads(json.dumps(hook))
    for kind in ("httpGet", "tcpSocket"):
        if isinstance(out.get(kind), dict):
            out[kind]["port"] = _port_number(out[kind].get("port"), container)
    return out if out else None


def container_spec(pod: Obj, container: Obj, request: rt.ContainerRequest, *,
                   attempt: int, sandbox_id: str, cluster: str, node: str) -> Spec:
    """The engine's arguments for instance `attempt` of `container` in the sandbox."""
    name = container["name"]
    image = str(container.get("image") or "")
    labels = {**pod_labels(pod, cluster=cluster, node=node), KIND: CONTAINER,
              CONTAINER_NAME: name, ATTEMPT: str(attempt), IMAGE: image}
    pre_stop = resolved_hook(container, "preStop")
    if pre_stop is not None:
        labels[PRE_STOP] = json.dumps(pre_stop, separators=(",", ":"))
    create: Obj = {"image": image, "labels": labels, "detach": True,
                   "environment": [f"{k}={v}" for k, v in request.env],
                   "tty": bool(container.get("tty")),
                   "stdin_open": bool(container.get("stdin"))}
    # Kubernetes' command is the image's ENTRYPOINT and args its CMD; an entrypoint
    # given without a cmd makes the engine drop the image's cmd, as Kubernetes does.
    if request.command is not None:
        create["entrypoint"] = list(request.command)
    if request.args is not None:
        create["command"] = list(request.args)
    if request.working_dir:
        create["working_dir"] = request.working_dir
    sec_create, sec_host = _security(pod, container)
    create.update(sec_create)
    host: Obj = {"network_mode": f"container:{sandbox_id}",
                 "ipc_mode": f"container:{sandbox_id}",
                 "log_config": LOG_CONFIG, "restart_policy": {"Name": "no"},
                 **_limits(container), **sec_host}
    if (pod.get("spec") or {}).get("shareProcessNamespace"):
        host["pid_mode"] = f"container:{sandbox_id}"
    binds = [f"{m.source}:{m.target}:{'ro' if m.read_only else 'rw'}"
             for m in request.mounts]
    if binds:
        host["binds"] = binds
    return Spec(container_name(pod, name, attempt), create, host)


def labels_of(row: Mapping[str, Any]) -> dict[str, str]:
    """The labels of a container, from a list row or an inspect answer."""
    labels = row.get("Labels")
    if labels is None:
        labels = (row.get("Config") or {}).get("Labels")
    return dict(labels or {})
