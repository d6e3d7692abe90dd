"""Validation of the core kinds that are not workloads: Service, ConfigMap, Secret,
Namespace, Node, Event and Lease.

Services get the most rules because their fields are promises the cluster must keep on
every node (a port, a node port in the allocated range, a cluster IP); the others mostly
guard keys that become file names (ConfigMap and Secret keys) and values that other code
decodes (base64 Secret data, taints, lease durations).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from typing import Any

from raftkube.api import causes, containers, metadata, names, schema

SERVICE_TYPES = ("ClusterIP", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
SESSION_AFFINITIES = ("ClientIP", "None")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILY_POLICIES = ("PreferDualStack", "RequireDualStack", "SingleStack")
IP_FAMILIES = ("IPv4", "IPv6")
NODE_PORT_RANGE = (30000, 32767)
TAINT_EFFECTS = ("NoExecute", "NoSchedule", "PreferNoSchedule")
EVENT_TYPES = ("Normal", "Warning")
MAX_DATA_BYTES = 1024 * 1024
IP_EXAMPLES = "(e.g. 10.9.8.7 or 2001:db8::ffff)"
# Secret types whose data must hold particular keys.
SECRET_KEYS = {
    "kubernetes.io/tls": ("tls.crt", "tls.key"),
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson",),
    "kubernetes.io/dockercfg": (".dockercfg",),
    "kubernetes.io/ssh-auth": ("ssh-privatekey",),
}
_BASE64 = re.compile("[A-Za-z0-9+/=]*")


def validate_service(spec: dict[str, Any], *, errs: causes.Causes) -> None:
    kind = schema.get_str(spec, "type") or "ClusterIP"
    if kind not in SERVICE_TYPES:
        errs.not_supported("spec.type", kind, SERVICE_TYPES)
    cluster_ip = schema.get_str(spec, "clusterIP") or ""
    if cluster_ip == "None" and kind in ("NodePort", "LoadBalancer"):
        errs.invalid("spec.clusterIP", cluster_ip, f"may not be set to 'None' for {kind} services")
    elif cluster_ip not in ("", "None") and not _is_ip(cluster_ip):
        errs.invalid("spec.clusterIP", cluster_ip, f"must be a valid IP address, {IP_EXAMPLES}")
    _ip_families(spec, cluster_ip, errs=errs)
    for i, ip in enumerate(schema.get_list(spec, "externalIPs") or []):
        if isinstance(ip, str) and not _is_ip(ip):
            errs.invalid(f"spec.externalIPs[{i}]", ip, f"must be a valid IP address, {IP_EXAMPLES}")
    _source_ranges(spec, kind, errs=errs)
    ports = schema.maps(spec.get("ports"))
    if not ports and cluster_ip != "None" and not _wrong_type(spec.get("ports"), list):
        errs.required("spec.ports")
    _service_ports(ports, kind=kind, errs=errs)
    metadata.validate_labels(spec.get("selector"), path="spec.selector", errs=errs)
    for field, supported in (("sessionAffinity", SESSION_AFFINITIES),
                             ("externalTrafficPolicy", TRAFFIC_POLICIES),
                             ("internalTrafficPolicy", TRAFFIC_POLICIES)):
        value = schema.get_str(spec, field)
        if value is not None and value not in supported:
            errs.not_supported(f"spec.{field}", value, supported)


def _source_ranges(spec: dict[str, Any], kind: str, *, errs: causes.Causes) -> None:
    """`loadBalancerSourceRanges`: CIDRs, and only on a LoadBalancer Service (the agents
    admit only those clients at its load balancer; Kubernetes' rules)."""
    ranges = schema.get_list(spec, "loadBalancerSourceRanges") or []
    if ranges and kind != "LoadBalancer":
        errs.forbidden("spec.loadBalancerSourceRanges",
                       "may only be used when `type` is 'LoadBalancer'")
        return
    for i, text in enumerate(ranges):
        try:
            ipaddress.ip_network(str(text).strip(), strict=False)
            ok = isinstance(text, str) and "/" in text
        except ValueError:
            ok = False
        if not ok:
            errs.invalid(f"spec.loadBalancerSourceRanges[{i}]", text,
                         "must be a list of IP ranges. For example, 10.240.0.0/24,"
                         "10.250.0.0/24")


def _ip_families(spec: dict[str, Any], cluster_ip: str, *, errs: causes.Causes) -> None:
    """Services here are single-stack IPv4 (the service range is IPv4): `clusterIPs` is
    `[clusterIP]`, the one family IPv4. What asks for more is refused, as Kubernetes
    refuses it on a cluster not configured for dual stack."""
    policy = schema.get_str(spec, "ipFamilyPolicy")
    if policy is not None and policy not in IP_FAMILY_POLICIES:
        errs.not_supported("spec.ipFamilyPolicy", policy, IP_FAMILY_POLICIES)
    elif policy == "RequireDualStack":
        errs.invalid("spec.ipFamilyPolicy", policy,
                     "this cluster is not configured for dual-stack services")
    seen: set[str] = set()
    for i, family in enumerate(schema.get_list(spec, "ipFamilies") or []):
        at = f"spec.ipFamilies[{i}]"
        if not isinstance(family, str):
            continue  # a type error, reported by the schema
        if family not in IP_FAMILIES:
            errs.not_supported(at, family, IP_FAMILIES)
        elif family in seen:
            errs.duplicate(at, family)
        elif family != "IPv4":
            errs.invalid(at, family, "not configured on this cluster")
        seen.add(family)
    for i, ip in enumerate(schema.get_list(spec, "clusterIPs") or []):
        at = f"spec.clusterIPs[{i}]"
        if not isinstance(ip, str):
            continue
        if i > 0:
            errs.invalid(at, ip, "this cluster is not configured for dual-stack services: "
                                 "a service has one cluster IP")
        elif cluster_ip and ip != cluster_ip:
            errs.invalid(at, ip, "must be the same as spec.clusterIP")
        elif ip != "None" and not _is_ip(ip):
            errs.invalid(at, ip, f"must be a valid IP address, {IP_EXAMPLES}")


def _service_ports(ports: list[tuple[int, dict[str, Any]]], *, kind: str,
                   errs: causes.Causes) -> None:
    names_seen: set[str] = set()
    node_ports: set[int] = set()
    pairs: set[tuple[int, str]] = set()
    for i, port in ports:
        at = f"spec.ports[{i}]"
        name = port.get("name")
        if name is None or name == "":
            if len(ports) > 1:
                errs.required(f"{at}.name")
        elif isinstance(name, str):
            errs.invalid_each(f"{at}.name", name, names.dns1123_label_errors(name))
            if name in names_seen:
                errs.duplicate(f"{at}.name", name)
            names_seen.add(name)
        containers.port_number(port.get("port"), path=f"{at}.port", errs=errs)
        protocol = schema.get_str(port, "protocol")
        if protocol is not None and protocol not in PROTOCOLS:
            errs.not_supported(f"{at}.protocol", protocol, PROTOCOLS)
        number = schema.get_int(port, "port")
        if number is not None and protocol is not None:
            if (number, protocol) in pairs:
                errs.duplicate(at, {"port": number, "protocol": protocol})
            pairs.add((number, protocol))
        target = port.get("targetPort")
        if isinstance(target, str):
            errs.invalid_each(f"{at}.targetPort", target, names.port_name_errors(target))
        elif schema.as_int(target) is not None:
            containers.port_number(target, path=f"{at}.targetPort", errs=errs)
        _node_port(schema.get_int(port, "nodePort"), path=f"{at}.nodePort", kind=kind,
                   seen=node_ports, errs=errs)


def _node_port(value: int | None, *, path: str, kind: str, seen: set[int],
               errs: causes.Causes) -> None:
    if not value:
        return
    if kind not in ("NodePort", "LoadBalancer"):
        errs.forbidden(path, f"may not be used when `type` is '{kind}'")
        return
    low, high = NODE_PORT_RANGE
    if not low <= value <= high:
        errs.invalid(path, value, "provided port is not in the valid range. The range of "
                                  f"valid ports is {low}-{high}")
    if value in seen:
        errs.duplicate(path, value)
    seen.add(value)


def validate_configmap(obj: dict[str, Any], *, errs: causes.Causes) -> None:
    data = schema.str_map(obj.get("data"))
    binary = schema.str_map(obj.get("binaryData"))
    for key in data:
        errs.invalid_each(f"data[{key}]", key, names.config_key_errors(key))
    for key, value in binary.items():
        errs.invalid_each(f"binaryData[{key}]", key, names.config_key_errors(key))
        if key in data:
            errs.invalid(f"binaryData[{key}]", key, "duplicate of key present in data")
        problem = _base64_problem(value)
        if problem:
            errs.invalid(f"binaryData[{key}]", "<binary data>", problem)
    size = sum(len(k) + len(v) for k, v in data.items()) + sum(
        len(k) + len(v) * 3 // 4 for k, v in binary.items())
    if size > MAX_DATA_BYTES:
        errs.too_long("data", MAX_DATA_BYTES)


def validate_secret(obj: dict[str, Any], *, errs: causes.Causes) -> None:
    data = schema.str_map(obj.get("data"))
    size = 0
    for key, value in data.items():
        errs.invalid_each(f"data[{key}]", key, names.config_key_errors(key))
        problem = _base64_problem(value)
        if problem:
            # Kubernetes never echoes secret contents in an error.
            errs.invalid(f"data[{key}]", "<secret contents redacted>", problem)
        size += len(key) + len(value) * 3 // 4
    for key in schema.str_map(obj.get("stringData")):
        errs.invalid_each(f"stringData[{key}]", key, names.config_key_errors(key))
    if size > MAX_DATA_BYTES:
        errs.too_long("data", MAX_DATA_BYTES)
    kind = obj.get("type")
    if kind == "":
        errs.required("type")
    for needed in SECRET_KEYS.get(kind, ()) if isinstance(kind, str) else ():
        if needed not in data:
            errs.required(f"data[{needed}]")


def _base64_problem(value: str) -> str:
    """Go's wording for data that is not standard padded base64; "" when it is."""
    valid = _BASE64.match(value)
    end = valid.end() if valid else 0
    if end < len(value):
        return f"illegal base64 data at input byte {end}"
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        pad = value.find("=")
        at = pad if pad >= 0 else len(value) - len(value) % 4
        return f"illegal base64 data at input byte {at}"
    return ""


def validate_namespace(obj: dict[str, Any], *, errs: causes.Causes) -> None:
    for i, finalizer in enumerate(schema.get_list(schema.get_map(obj, "spec"), "finalizers")
                                  or []):
        if isinstance(finalizer, str):
            errs.invalid_each(f"spec.finalizers[{i}]", finalizer,
                              names.qualified_name_errors(finalizer))


def validate_node(obj: dict[str, Any], *, errs: causes.Causes) -> None:
    spec = schema.get_map(obj, "spec") or {}
    cidr = schema.get_str(spec, "podCIDR")
    if cidr and not _is_cidr(cidr):
        errs.invalid("spec.podCIDR", cidr,
                     "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")
    seen: set[tuple[str, str]] = set()
    for i, taint in schema.maps(spec.get("taints")):
        at = f"spec.taints[{i}]"
        key, effect = taint.get("key"), taint.get("effect")
        if key is None or key == "":
            errs.required(f"{at}.key")
        elif isinstance(key, str):
            errs.invalid_each(f"{at}.key", key, names.label_key_errors(key))
        value = schema.get_str(taint, "value")
        if value:
            errs.invalid_each(f"{at}.value", value, names.label_value_errors(value))
        if effect is None or effect == "":
            errs.required(f"{at}.effect")
        elif isinstance(effect, str) and effect not in TAINT_EFFECTS:
            errs.not_supported(f"{at}.effect", effect, TAINT_EFFECTS)
        if isinstance(key, str) and isinstance(effect, str):
            if (key, effect) in seen:
                errs.duplicate(at, {"key": key, "effect": effect})
            seen.add((key, effect))
    status = schema.get_map(obj, "status") or {}
    for part in ("capacity", "allocatable"):
        for name, amount in (schema.get_map(status, part) or {}).items():
            containers.quantity_value(amount, path=f"status.{part}[{name}]", errs=errs)


def validate_event(obj: dict[str, Any], *, errs: causes.Causes) -> None:
    kind = schema.get_str(obj, "type")
    if kind and kind not in EVENT_TYPES:
        errs.not_supported("type", kind, EVENT_TYPES)
    errs.non_negative("count", schema.get_int(obj, "count"))
    involved = schema.get_map(obj, "involvedObject") or {}
    theirs = schema.get_str(involved, "namespace")
    ours = schema.get_str(schema.get_map(obj, "metadata"), "namespace")
    if theirs and ours and theirs != ours:
        errs.invalid("involvedObject.namespace", theirs, "does not match event.namespace")


def validate_lease(obj: dict[str, Any], *, errs: causes.Causes) -> None:
    spec = schema.get_map(obj, "spec") or {}
    duration = schema.get_int(spec, "leaseDurationSeconds")
    if duration is not None and duration <= 0:
        errs.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    errs.non_negative("spec.leaseTransitions", schema.get_int(spec, "leaseTransitions"))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_cidr(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return "/" in text


def _wrong_type(value: Any, expected: type) -> bool:
    return value is not None and not isinstance(value, expected)
