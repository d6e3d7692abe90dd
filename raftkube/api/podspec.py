"""Validation of a pod spec, whether in a Pod or in a workload's pod template.

One function serves Pods, Deployments, ReplicaSets, DaemonSets and Jobs, because a
template becomes a pod unchanged: a template that passes here makes pods that pass here.
Only the allowed restart policies differ (a controller that recreates pods needs `Always`,
a Job needs pods that stop), so the caller passes them in. Container-level rules live in
`raftkube.api.containers`.
"""

from __future__ import annotations

import re
from typing import Any

from raftkube.api import causes, containers, metadata, names, schema

RESTART_POLICIES = ("Always", "OnFailure", "Never")
DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
TOLERATION_OPERATORS = ("Equal", "Exists")
TAINT_EFFECTS = ("NoExecute", "NoSchedule", "PreferNoSchedule")
NODE_SELECTOR_OPERATORS = ("DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn")
HOST_PATH_TYPES = ("", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File",
                   "FileOrCreate", "Socket")
EMPTY_DIR_MEDIA = ("", "HugePages", "Memory")
# Sources a volume may have; exactly one of them must be set.
VOLUME_SOURCES = ("emptyDir", "hostPath", "configMap", "secret", "persistentVolumeClaim",
                  "projected", "downwardAPI", "nfs", "csi", "ephemeral", "iscsi", "gitRepo")
MAX_INT32 = 2**31 - 1


def validate_pod_spec(spec: Any, *, path: str, errs: causes.Causes,
                      restart_policies: tuple[str, ...] = RESTART_POLICIES) -> None:
    """Every rule of a pod spec; `restart_policies` are those the owner of the pod allows."""
    spec = schema.as_map(spec)
    if spec is None:
        spec = {}
    volumes = _volumes(spec.get("volumes"), path=causes.child(path, "volumes"), errs=errs)
    if not schema.get_list(spec, "containers") and not _wrong_type(spec.get("containers")):
        errs.required(causes.child(path, "containers"))
    seen: set[str] = set()
    for field in ("initContainers", "containers"):
        for i, c in schema.maps(spec.get(field)):
            at = causes.index(causes.child(path, field), i)
            _container_name(c.get("name"), path=causes.child(at, "name"), seen=seen, errs=errs)
            containers.validate_container(c, path=at, volumes=volumes, errs=errs)
            if schema.get_bool(spec, "hostNetwork"):
                _host_network_ports(c, path=at, errs=errs)
    _restart_policy(spec.get("restartPolicy"), path=causes.child(path, "restartPolicy"),
                    allowed=restart_policies, errs=errs)
    dns = schema.get_str(spec, "dnsPolicy")
    if dns is not None and dns not in DNS_POLICIES:
        errs.not_supported(causes.child(path, "dnsPolicy"), dns, DNS_POLICIES)
    errs.non_negative(causes.child(path, "terminationGracePeriodSeconds"),
                      schema.get_int(spec, "terminationGracePeriodSeconds"))
    deadline = schema.get_int(spec, "activeDeadlineSeconds")
    if deadline is not None and not 1 <= deadline <= MAX_INT32:
        errs.invalid(causes.child(path, "activeDeadlineSeconds"), deadline,
                     f"must be between 1 and {MAX_INT32}, inclusive")
    metadata.validate_labels(spec.get("nodeSelector"), path=causes.child(path, "nodeSelector"),
                             errs=errs)
    for field, check in (("nodeName", names.dns1123_subdomain_errors),
                         ("serviceAccountName", names.dns1123_subdomain_errors),
                         ("priorityClassName", names.dns1123_subdomain_errors),
                         ("hostname", names.dns1123_label_errors),
                         ("subdomain", names.dns1123_label_errors)):
        value = schema.get_str(spec, field)
        if value:
            errs.invalid_each(causes.child(path, field), value, check(value))
    for i, toleration in schema.maps(spec.get("tolerations")):
        _toleration(toleration, path=causes.index(causes.child(path, "tolerations"), i),
                    errs=errs)
    affinity = schema.get_map(spec, "affinity")
    node_affinity = schema.get_map(affinity, "nodeAffinity")
    if node_affinity is not None:
        _node_affinity(node_affinity, errs=errs,
                       path=causes.child(causes.child(path, "affinity"), "nodeAffinity"))


def _wrong_type(value: Any) -> bool:
    return value is not None and not isinstance(value, list)


def _container_name(name: Any, *, path: str, seen: set[str], errs: causes.Causes) -> None:
    if name is None or name == "":
        errs.required(path)
    elif isinstance(name, str):
        errs.invalid_each(path, name, names.dns1123_label_errors(name))
        if name in seen:
            errs.duplicate(path, name)
        seen.add(name)


def _host_network_ports(c: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    for i, port in schema.maps(c.get("ports")):
        host, container = schema.get_int(port, "hostPort"), schema.get_int(port, "containerPort")
        if host and container and host != container:
            errs.invalid(causes.child(causes.index(causes.child(path, "ports"), i), "hostPort"),
                         host, "must match `containerPort` when `hostNetwork` is true")


def _restart_policy(value: Any, *, path: str, allowed: tuple[str, ...],
                    errs: causes.Causes) -> None:
    if value is None or value == "":
        errs.required(path, "valid values: " + ", ".join(f'"{p}"' for p in allowed))
    elif isinstance(value, str) and value not in allowed:
        errs.not_supported(path, value, allowed)


def _volumes(volumes: Any, *, path: str, errs: causes.Causes) -> set[str]:
    """Check the volumes and return their names, for the containers' volume mounts."""
    found: set[str] = set()
    for i, volume in schema.maps(volumes):
        at = causes.index(path, i)
        name = errs.require(volume, "name", at)
        if isinstance(name, str):
            errs.invalid_each(causes.child(at, "name"), name, names.dns1123_label_errors(name))
            if name in found:
                errs.duplicate(causes.child(at, "name"), name)
            found.add(name)
        sources = [s for s in VOLUME_SOURCES if volume.get(s) is not None]
        if not sources:
            errs.required(at, "must specify a volume type")
        for extra in sources[1:]:
            errs.forbidden(causes.child(at, extra), "may not specify more than 1 volume type")
        _volume_source(volume, path=at, errs=errs)
    return found


def _volume_source(volume: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    host = schema.get_map(volume, "hostPath")
    if host is not None:
        at = causes.child(path, "hostPath")
        host_path = errs.require(host, "path", at)
        if isinstance(host_path, str) and ".." in host_path.split("/"):
            errs.invalid(causes.child(at, "path"), host_path, "must not contain '..'")
        kind = schema.get_str(host, "type")
        if kind is not None and kind not in HOST_PATH_TYPES:
            errs.not_supported(causes.child(at, "type"), kind, HOST_PATH_TYPES)
    empty = schema.get_map(volume, "emptyDir")
    if empty is not None:
        at = causes.child(path, "emptyDir")
        medium = schema.get_str(empty, "medium")
        if medium is not None and medium not in EMPTY_DIR_MEDIA:
            errs.not_supported(causes.child(at, "medium"), medium, EMPTY_DIR_MEDIA)
        containers.quantity_value(empty.get("sizeLimit"), path=causes.child(at, "sizeLimit"),
                                  errs=errs)
    for source, name_field in (("configMap", "name"), ("secret", "secretName"),
                               ("persistentVolumeClaim", "claimName")):
        found = schema.get_map(volume, source)
        if found is None:
            continue
        at = causes.child(path, source)
        errs.require(found, name_field, at)
        _file_mode(found.get("defaultMode"), path=causes.child(at, "defaultMode"), errs=errs)
        for j, item in schema.maps(found.get("items")):
            _key_to_path(item, path=causes.index(causes.child(at, "items"), j), errs=errs)


def _key_to_path(item: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    errs.require(item, "key", path)
    target = errs.require(item, "path", path)
    if isinstance(target, str):
        containers.relative_path(target, path=causes.child(path, "path"), errs=errs)
    _file_mode(item.get("mode"), path=causes.child(path, "mode"), errs=errs)


def _file_mode(mode: Any, *, path: str, errs: causes.Causes) -> None:
    value = schema.as_int(mode)
    if value is not None and not 0 <= value <= 0o777:
        errs.invalid(path, value, "must be a number between 0 and 0777 (octal), both inclusive")


def _toleration(t: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    key = schema.get_str(t, "key") or ""
    if key:
        errs.invalid_each(causes.child(path, "key"), key, names.label_key_errors(key))
    operator = schema.get_str(t, "operator") or "Equal"
    value = schema.get_str(t, "value") or ""
    if operator not in TOLERATION_OPERATORS:
        errs.not_supported(causes.child(path, "operator"), operator, TOLERATION_OPERATORS)
    elif not key and operator != "Exists":
        errs.invalid(causes.child(path, "operator"), operator,
                     'operator must be Exists when `key` is empty, which means "match all '
                     'values and all keys"')
    elif operator == "Exists" and value:
        errs.invalid(causes.child(path, "operator"), value,
                     "value must be empty when `operator` is 'Exists'")
    elif operator == "Equal" and value:
        errs.invalid_each(causes.child(path, "value"), value, names.label_value_errors(value))
    effect = schema.get_str(t, "effect") or ""
    if effect and effect not in TAINT_EFFECTS:
        errs.not_supported(causes.child(path, "effect"), effect, TAINT_EFFECTS)
    if schema.get_int(t, "tolerationSeconds") is not None and effect != "NoExecute":
        errs.invalid(causes.child(path, "effect"), effect,
                     "effect must be 'NoExecute' when `tolerationSeconds` is set")


def _node_affinity(affinity: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    required = schema.get_map(affinity, "requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None:
        at = causes.child(causes.child(path, "requiredDuringSchedulingIgnoredDuringExecution"),
                          "nodeSelectorTerms")
        terms = schema.maps(required.get("nodeSelectorTerms"))
        if not terms and not _wrong_type(required.get("nodeSelectorTerms")):
            errs.required(at, "must have at least one node selector term")
        for i, term in terms:
            _node_selector_term(term, path=causes.index(at, i), errs=errs)
    preferred = causes.child(path, "preferredDuringSchedulingIgnoredDuringExecution")
    for i, pref in schema.maps(affinity.get("preferredDuringSchedulingIgnoredDuringExecution")):
        at = causes.index(preferred, i)
        weight = schema.get_int(pref, "weight")
        if weight is not None and not 1 <= weight <= 100:
            errs.invalid(causes.child(at, "weight"), weight, "must be in the range 1-100")
        preference = schema.get_map(pref, "preference")
        if preference is not None:
            _node_selector_term(preference, path=causes.child(at, "preference"), errs=errs)


def _node_selector_term(term: dict[str, Any], *, path: str, errs: causes.Causes) -> None:
    for i, req in schema.maps(term.get("matchExpressions")):
        at = causes.index(causes.child(path, "matchExpressions"), i)
        key = errs.require(req, "key", at)
        if isinstance(key, str):
            errs.invalid_each(causes.child(at, "key"), key, names.label_key_errors(key))
        _node_selector_values(req, path=at, errs=errs, label_values=True)
    for i, req in schema.maps(term.get("matchFields")):
        at = causes.index(causes.child(path, "matchFields"), i)
        key = schema.get_str(req, "key")
        if key is not None and key != "metadata.name":
            errs.not_supported(causes.child(at, "key"), key, ("metadata.name",))
        if schema.get_str(req, "operator") in ("In", "NotIn") and len(
                schema.get_list(req, "values") or []) != 1:
            errs.required(causes.child(at, "values"),
                          "must be only one value when `operator` is 'In' or 'NotIn' for "
                          "node field selector")
        _node_selector_values(req, path=at, errs=errs, label_values=False)


def _node_selector_values(req: dict[str, Any], *, path: str, errs: causes.Causes,
                          label_values: bool) -> None:
    operator = req.get("operator")
    values = schema.get_list(req, "values") or []
    at = causes.child(path, "values")
    if operator is None or operator == "":
        errs.required(causes.child(path, "operator"))
    elif not isinstance(operator, str):
        return
    elif operator not in NODE_SELECTOR_OPERATORS:
        errs.not_supported(causes.child(path, "operator"), operator, NODE_SELECTOR_OPERATORS)
    elif operator in ("In", "NotIn") and not values:
        errs.required(at, "must be specified when `operator` is 'In' or 'NotIn'")
    elif operator in ("Exists", "DoesNotExist") and values:
        errs.forbidden(at, "may not be specified when `operator` is 'Exists' or "
                           "'DoesNotExist'")
    elif operator in ("Gt", "Lt"):
        if len(values) != 1:
            errs.required(at, "must be specified single value when `operator` is 'Lt' or 'Gt'")
        elif isinstance(values[0], str) and not _is_int(values[0]):
            errs.invalid(causes.index(at, 0), values[0], "must be an integer")
    for j, value in enumerate(values):
        if label_values and isinstance(value, str) and operator in ("In", "NotIn"):
            errs.invalid_each(causes.index(at, j), value, names.label_value_errors(value))


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?[0-9]+", text) is not None
