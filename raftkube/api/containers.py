"""Validation of one container: image, ports, env, resources, volume mounts and probes.

Split from `podspec` because a container is the unit the agent runs: everything here is
what the agent will hand to the container runtime, so each rule is one that would
otherwise fail late, on a node, where the user cannot see it (a port of 0, a request above
its limit, a mount of a volume that does not exist, a probe with no handler).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from raftkube.api import causes, names, quantity, schema

PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("SCTP", "TCP", "UDP")
TERMINATION_MESSAGE_POLICIES = ("FallbackToLogsOnError", "File")
PROBE_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")
PROBE_TIMINGS = ("initialDelaySeconds", "timeoutSeconds", "periodSeconds",
                 "successThreshold", "failureThreshold", "terminationGracePeriodSeconds")
SCHEMES = ("HTTP", "HTTPS")
STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")
FIELD_PATHS = ("metadata.annotations", "metadata.labels", "metadata.name",
               "metadata.namespace", "metadata.uid", "spec.nodeName",
               "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP",
               "status.podIPs")
RESOURCE_FIELD_REFS = ("limits.cpu", "limits.ephemeral-storage", "limits.memory",
                       "requests.cpu", "requests.ephemeral-storage", "requests.memory")
_SUBSCRIPTED_FIELD = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")


def validate_container(c: dict[str, Any], *, path: str, volumes: Collection[str],
                       errs: causes.Causes) -> None:
    """Everything about one container except the uniqueness of its name (the pod's job)."""
    image = errs.require(c, "image", path)
    if isinstance(image, str) and image.strip() != image:
        errs.invalid(causes.child(path, "image"), image,
                     "must not have leading or trailing whitespace")
    _one_of(c.get("imagePullPolicy"), PULL_POLICIES, path=causes.child(path, "imagePullPolicy"),
            errs=errs)
    _one_of(c.get("terminationMessagePolicy"), TERMINATION_MESSAGE_POLICIES,
            path=causes.child(path, "terminationMessagePolicy"), errs=errs)
    _ports(c.get("ports"), path=causes.child(path, "ports"), errs=errs)
    _env(c.get("env"), path=causes.child(path, "env"), errs=errs)
    _env_from(c.get("envFrom"), path=causes.child(path, "envFrom"), errs=errs)
    validate_resources(c.get("resources"), path=causes.child(path, "resources"), errs=errs)
    _mounts(c.get("volumeMounts"), path=causes.child(path, "volumeMounts"), volumes=volumes,
            errs=errs)
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe in c and c[probe] is not None:
            _probe(c[probe], path=causes.child(path, probe), errs=errs,
                   single_success=probe != "readinessProbe")


def _one_of(value: Any, supported: tuple[str, ...], *, path: str, errs: causes.Causes) -> None:
    """An enum that defaulting fills in: "" is Required, a value outside the set NotSupported.

    Absent passes: after defaulting it is absent only where a type error (reported by the
    schema walk) kept the default from being computed, and one cause per mistake is enough.
    """
    if value == "":
        errs.required(path)
    elif isinstance(value, str) and value not in supported:
        errs.not_supported(path, value, supported)


def port_number(value: Any, *, path: str, errs: causes.Causes, required: bool = True) -> None:
    number = schema.as_int(value)
    if value is None or number == 0:
        if required:
            errs.required(path)
    elif number is not None:
        errs.invalid_each(path, number, names.port_number_errors(number))


def int_or_port_name(value: Any, *, path: str, errs: causes.Causes) -> None:
    """A port given as a number (1-65535) or as the name of a container port."""
    if isinstance(value, bool):
        return  # a type error, reported by the schema walk
    if value is None or value == "" or value == 0:
        errs.required(path)
    elif isinstance(value, str):
        errs.invalid_each(path, value, names.port_name_errors(value))
    else:
        port_number(value, path=path, errs=errs)


def _ports(ports: Any, *, path: str, errs: causes.Causes) -> None:
    seen: set[str] = set()
    for i, port in schema.maps(ports):
        at = causes.index(path, i)
        name = schema.get_str(port, "name")
        if name:
            errs.invalid_each(causes.child(at, "name"), name, names.port_name_errors(name))
            if name in seen:
                errs.duplicate(causes.child(at, "name"), name)
            seen.add(name)
        port_number(port.get("containerPort"), path=causes.child(at, "containerPort"),
                    errs=errs)
        port_number(port.get("hostPort"), path=causes.child(at, "hostPort"), errs=errs,
                    required=False)
        _one_of(port.get("protocol"), PROTOCOLS, path=causes.child(at, "protocol"), errs=errs)


def _env(env: Any, *, path: str, errs: causes.Causes) -> None:
    for i, var in schema.maps(env):
        at = causes.index(path, i)
        name = errs.require(var, "name", at)
        if isinstance(name, str):
            errs.invalid_each(causes.child(at, "name"), name, names.env_var_name_errors(name))
        source = schema.get_map(var, "valueFrom")
        if source is not None:
            _value_from(source, has_value=bool(schema.get_str(var, "value")),
                        path=causes.child(at, "valueFrom"), errs=errs)


def _value_from(source: dict[str, Any], *, has_value: bool, path: str,
                errs: causes.Causes) -> None:
    kinds = [k for k in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
             if source.get(k) is not None]
    if not kinds:
        errs.invalid(path, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                               "`configMapKeyRef` or `secretKeyRef`")
    elif has_value:
        errs.invalid(path, "", "may not be specified when `value` is not empty")
    elif len(kinds) > 1:
        errs.invalid(path, "", "may not have more than one field specified at a time")
    for kind in kinds:
        ref = schema.get_map(source, kind)
        if ref is None:
            continue
        at = causes.child(path, kind)
        if kind == "fieldRef":
            _field_ref(ref, path=at, errs=errs)
        elif kind == "resourceFieldRef":
            resource = errs.require(ref, "resource", at)
            if isinstance(resource, str) and resource not in RESOURCE_FIELD_REFS:
                errs.not_supported(causes.child(at, "resource"), resource, RESOURCE_FIELD_REFS)
        else:
            key_selector(ref, path=at, errs=errs)


def key_selector(ref: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    """A `configMapKeyRef` or `secretKeyRef`: a named object and a valid key in it."""
    errs.require(ref, "name", path)
    key = errs.require(ref, "key", path)
    if isinstance(key, str):
        errs.invalid_each(causes.child(path, "key"), key, names.config_key_errors(key))


def _field_ref(ref: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    errs.require(ref, "apiVersion", path)
    field = errs.require(ref, "fieldPath", path)
    if field is None:
        return
    if not isinstance(field, str) or field in FIELD_PATHS:
        return
    subscripted = _SUBSCRIPTED_FIELD.fullmatch(field)
    if subscripted:
        errs.invalid_each(causes.child(path, "fieldPath"), field,
                          names.qualified_name_errors(subscripted.group(2).lower()))
    else:
        errs.not_supported(causes.child(path, "fieldPath"), field, FIELD_PATHS)


def _env_from(sources: Any, *, path: str, errs: causes.Causes) -> None:
    for i, source in schema.maps(sources):
        at = causes.index(path, i)
        prefix = schema.get_str(source, "prefix")
        if prefix:
            errs.invalid_each(causes.child(at, "prefix"), prefix,
                              names.env_var_name_errors(prefix))
        refs = [k for k in ("configMapRef", "secretRef") if source.get(k) is not None]
        if not refs:
            errs.invalid(at, "", "must specify one of: `configMapRef` or `secretRef`")
        elif len(refs) > 1:
            errs.invalid(at, "", "may not have more than one field specified at a time")
        for ref in refs:
            target = schema.get_map(source, ref)
            if target is not None and target.get("name") in (None, ""):
                errs.required(causes.child(causes.child(at, ref), "name"))


def validate_resources(resources: Any, *, path: str, errs: causes.Causes) -> None:
    """Names and quantities of requests and limits; no request above its limit."""
    amounts: dict[str, dict[str, Any]] = {}
    for part in ("limits", "requests"):
        found = amounts[part] = {}
        for name, raw in (schema.get_map(resources, part) or {}).items():
            at = causes.key(causes.child(path, part), name)
            if not isinstance(name, str) or not _resource_name_ok(name):
                errs.invalid(at, name, "must be a standard resource for containers")
                continue
            amount = quantity_value(raw, path=at, errs=errs)
            if amount is not None:
                found[name] = (raw, amount)
    for name, (raw, request) in amounts["requests"].items():
        if name in amounts["limits"]:
            limit_raw, limit = amounts["limits"][name]
            if request > limit:
                errs.invalid(causes.key(causes.child(path, "requests"), name), str(raw),
                             f"must be less than or equal to {name} limit of {limit_raw}")


def quantity_value(raw: Any, *, path: str, errs: causes.Causes) -> Any:
    """The parsed, non-negative quantity at `path`, or None after reporting why not."""
    if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int | float):
        return None  # absent, or a type error the schema walk has reported
    try:
        amount = quantity.parse_quantity(raw)
    except quantity.QuantityError as e:
        errs.invalid(path, raw, str(e))
        return None
    if amount < 0:
        errs.invalid(path, raw, "must be greater than or equal to 0")
        return None
    return amount


def _resource_name_ok(name: str) -> bool:
    if name in STANDARD_RESOURCES or name.startswith("hugepages-"):
        return True
    return "/" in name and not names.qualified_name_errors(name)


def _mounts(mounts: Any, *, path: str, volumes: Collection[str], errs: causes.Causes) -> None:
    paths: set[str] = set()
    for i, mount in schema.maps(mounts):
        at = causes.index(path, i)
        name = errs.require(mount, "name", at)
        if isinstance(name, str) and name not in volumes:
            errs.not_found(causes.child(at, "name"), name)
        mount_path = errs.require(mount, "mountPath", at)
        if isinstance(mount_path, str):
            if mount_path in paths:
                errs.invalid(causes.child(at, "mountPath"), mount_path, "must be unique")
            paths.add(mount_path)
        sub = schema.get_str(mount, "subPath")
        if sub:
            relative_path(sub, path=causes.child(at, "subPath"), errs=errs)


def relative_path(value: str, *, path: str, errs: causes.Causes) -> None:
    if value.startswith("/"):
        errs.invalid(path, value, "must be a relative path")
    if ".." in value.split("/"):
        errs.invalid(path, value, "must not contain '..'")


def _probe(probe: Any, *, path: str, errs: causes.Causes, single_success: bool) -> None:
    probe = schema.as_map(probe)
    if probe is None:
        return
    handlers = [h for h in PROBE_HANDLERS if probe.get(h) is not None]
    if not handlers:
        errs.required(path, "must specify a handler type")
    for extra in handlers[1:]:
        errs.forbidden(causes.child(path, extra), "may not specify more than 1 handler type")
    exec_ = schema.get_map(probe, "exec")
    if exec_ is not None and not schema.get_list(exec_, "command"):
        errs.required(causes.child(causes.child(path, "exec"), "command"))
    http = schema.get_map(probe, "httpGet")
    if http is not None:
        at = causes.child(path, "httpGet")
        int_or_port_name(http.get("port"), path=causes.child(at, "port"), errs=errs)
        _one_of(http.get("scheme"), SCHEMES, path=causes.child(at, "scheme"), errs=errs)
    tcp = schema.get_map(probe, "tcpSocket")
    if tcp is not None:
        int_or_port_name(tcp.get("port"), path=causes.child(causes.child(path, "tcpSocket"),
                                                            "port"), errs=errs)
    grpc = schema.get_map(probe, "grpc")
    if grpc is not None:
        port_number(grpc.get("port"), path=causes.child(causes.child(path, "grpc"), "port"),
                    errs=errs)
    for timing in PROBE_TIMINGS:
        errs.non_negative(causes.child(path, timing), schema.get_int(probe, timing))
    success = schema.get_int(probe, "successThreshold")
    if single_success and success is not None and success != 1:
        errs.invalid(causes.child(path, "successThreshold"), success, "must be 1")
