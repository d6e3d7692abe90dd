"""Kubernetes' defaults: the fields a manifest may leave out, filled in before validation.

Defaulting happens once, in the API server, before validation and before the object is
stored, so that controllers, the scheduler and agents read every field explicitly instead
of each re-implementing "absent means 30 seconds". It only adds: a field the user wrote is
never changed (the one exception is Secret `stringData`, which Kubernetes folds into
`data`), and a `null` or, for text fields, an empty string counts as absent, as it does
when Go decodes JSON. The result is a new object; the input is left as it was, because
callers keep it (to compare, to retry, to report).

Identity is not defaulted here: the namespace comes from the URL and the uid, timestamps
and resourceVersion from the server, which owns the clock and the randomness.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

from raftkube.api import podspec

SECRET_TYPE = "Opaque"
WORKLOADS = ("Deployment", "ReplicaSet", "DaemonSet", "Job")


def apply_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy of `obj` with Kubernetes' defaults; applying it twice changes nothing more."""
    out = copy.deepcopy(obj)
    if not isinstance(out, dict):
        return out
    kind = out.get("kind")
    spec = out.get("spec")
    if kind == "Pod" and isinstance(spec, dict):
        pod_spec(spec, restart=True)
    elif kind in WORKLOADS and isinstance(spec, dict):
        _workload(kind, spec)
    elif kind == "Service" and isinstance(spec, dict):
        _service(spec)
    elif kind == "Secret":
        _secret(out)
    elif kind == "Namespace":
        if out.get("spec") is None:
            out["spec"] = {}
        if isinstance(out["spec"], dict):
            _set(out["spec"], "finalizers", ["kubernetes"])
    return out


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    """`d[key] = value` unless the user set it; "" counts as unset only for text fields."""
    current = d.get(key)
    if current is None or (current == "" and isinstance(value, str)):
        d[key] = copy.deepcopy(value)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _child(d: dict[str, Any], key: str) -> dict[str, Any] | None:
    """`d[key]`, created as {} when absent; None when it is something other than a map."""
    _set(d, key, {})
    found = d[key]
    return found if isinstance(found, dict) else None


def _workload(kind: str, spec: dict[str, Any]) -> None:
    if kind == "Deployment":
        _set(spec, "replicas", 1)
        _set(spec, "revisionHistoryLimit", 10)
        _set(spec, "progressDeadlineSeconds", 600)
        _strategy(spec, "strategy", surge="25%", unavailable="25%")
    elif kind == "ReplicaSet":
        _set(spec, "replicas", 1)
    elif kind == "DaemonSet":
        _set(spec, "revisionHistoryLimit", 10)
        _strategy(spec, "updateStrategy", surge=0, unavailable=1)
    else:  # Job
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = 1
        _set(spec, "parallelism", 1)
        _set(spec, "backoffLimit", 6)
        _set(spec, "completionMode", "NonIndexed")
        _set(spec, "suspend", False)
    template = spec.get("template")
    pod = template.get("spec") if isinstance(template, dict) else None
    if isinstance(pod, dict):
        # A Job's pods must stop, so its restart policy is the user's choice, never Always.
        pod_spec(pod, restart=kind != "Job")


def _strategy(spec: dict[str, Any], field: str, *, surge: Any, unavailable: Any) -> None:
    strategy = _child(spec, field)
    if strategy is None:
        return
    _set(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = _child(strategy, "rollingUpdate")
        if rolling is not None:
            _set(rolling, "maxUnavailable", unavailable)
            _set(rolling, "maxSurge", surge)


def pod_spec(spec: dict[str, Any], *, restart: bool) -> None:
    """Default a pod spec in place (it is always a copy made by `apply_defaults`)."""
    if restart:
        _set(spec, "restartPolicy", "Always")
    _set(spec, "dnsPolicy", "ClusterFirst")
    _set(spec, "terminationGracePeriodSeconds", 30)
    _set(spec, "schedulerName", "default-scheduler")
    _set(spec, "securityContext", {})
    for c in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
        _container(c)
    for volume in _dicts(spec.get("volumes")):
        if all(volume.get(source) is None for source in podspec.VOLUME_SOURCES):
            volume["emptyDir"] = {}
        for source in ("configMap", "secret"):
            if isinstance(volume.get(source), dict):
                _set(volume[source], "defaultMode", 0o644)
        if isinstance(volume.get("hostPath"), dict):
            _set(volume["hostPath"], "type", "")


def _container(c: dict[str, Any]) -> None:
    image = c.get("image")
    if isinstance(image, str) and image:
        _set(c, "imagePullPolicy", pull_policy(image))
    _set(c, "terminationMessagePath", "/dev/termination-log")
    _set(c, "terminationMessagePolicy", "File")
    _set(c, "resources", {})
    for port in _dicts(c.get("ports")):
        _set(port, "protocol", "TCP")
    for name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(name)
        if isinstance(probe, dict):
            _set(probe, "timeoutSeconds", 1)
            _set(probe, "periodSeconds", 10)
            _set(probe, "successThreshold", 1)
            _set(probe, "failureThreshold", 3)
            if isinstance(probe.get("httpGet"), dict):
                _set(probe["httpGet"], "scheme", "HTTP")
    for var in _dicts(c.get("env")):
        source = var.get("valueFrom")
        if isinstance(source, dict) and isinstance(source.get("fieldRef"), dict):
            _set(source["fieldRef"], "apiVersion", "v1")


def pull_policy(image: str) -> str:
    """`Always` for `:latest` or no tag, else `IfNotPresent`; a digest pins the image."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _service(spec: dict[str, Any]) -> None:
    _set(spec, "type", "ClusterIP")
    # Single-stack IPv4, as Kubernetes fills it in on such a cluster; `clusterIPs` is
    # `[clusterIP]` once the address is allocated (a clusterIP given only as
    # clusterIPs[0] is taken from there).
    ips = spec.get("clusterIPs")
    if spec.get("clusterIP") in (None, "") and isinstance(ips, list) and ips \
            and isinstance(ips[0], str):
        spec["clusterIP"] = ips[0]
    _set(spec, "ipFamilyPolicy", "SingleStack")
    if spec.get("ipFamilies") in (None, []):
        spec["ipFamilies"] = ["IPv4"]
    _set(spec, "sessionAffinity", "None")
    _set(spec, "internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        _set(spec, "externalTrafficPolicy", "Cluster")
    for port in _dicts(spec.get("ports")):
        _set(port, "protocol", "TCP")
        number, target = port.get("port"), port.get("targetPort")
        unset = target is None or target == "" or (type(target) is int and target == 0)
        if unset and type(number) is int:
            port["targetPort"] = number


def _secret(obj: dict[str, Any]) -> None:
    _set(obj, "type", SECRET_TYPE)
    plain = obj.get("stringData")
    data = obj.get("data")
    if plain is None and "stringData" in obj:
        del obj["stringData"]
        return
    if not isinstance(plain, dict) or not (data is None or isinstance(data, dict)):
        return  # left for validation to report
    if not all(isinstance(v, str) for v in plain.values()):
        return
    if plain:
        merged = dict(data or {})
        for key, value in plain.items():
            merged[key] = base64.b64encode(value.encode("utf-8")).decode("ascii")
        obj["data"] = merged
    del obj["stringData"]
