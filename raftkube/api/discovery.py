"""Validation of `discovery.k8s.io/v1` EndpointSlices, with Kubernetes' limits and words.

An EndpointSlice is what service proxies and DNS read to find a Service's pods, so what
it promises must be usable as written: every address parses as its slice's
`addressType`, ports are real port numbers with unique names, and the sizes stay under
Kubernetes' caps (1000 endpoints, 100 addresses each, 100 ports), which is what keeps one
slice a bounded write.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from raftkube.api import causes, names, schema

ADDRESS_TYPES = ("FQDN", "IPv4", "IPv6")
PROTOCOLS = ("SCTP", "TCP", "UDP")
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
MAX_PORTS = 100


def validate_endpointslice(obj: dict[str, Any], *, errs: causes.Causes) -> None:
    address_type = obj.get("addressType")
    if address_type is None or address_type == "":
        errs.required("addressType")
    elif isinstance(address_type, str) and address_type not in ADDRESS_TYPES:
        errs.not_supported("addressType", address_type, ADDRESS_TYPES)
    endpoints = schema.maps(obj.get("endpoints"))
    if len(endpoints) > MAX_ENDPOINTS:
        errs.too_many("endpoints", len(endpoints), MAX_ENDPOINTS)
    for i, endpoint in endpoints:
        _endpoint(endpoint, address_type, path=f"endpoints[{i}]", errs=errs)
    ports = schema.maps(obj.get("ports"))
    if len(ports) > MAX_PORTS:
        errs.too_many("ports", len(ports), MAX_PORTS)
    seen: set[str] = set()
    for i, port in ports:
        at = f"ports[{i}]"
        name = schema.get_str(port, "name") or ""
        if name:
            errs.invalid_each(f"{at}.name", name, names.port_name_errors(name))
        if name in seen:
            errs.duplicate(f"{at}.name", name)
        seen.add(name)
        number = schema.get_int(port, "port")
        if number is not None:
            errs.invalid_each(f"{at}.port", number, names.port_number_errors(number))
        protocol = schema.get_str(port, "protocol")
        if protocol and protocol not in PROTOCOLS:
            errs.not_supported(f"{at}.protocol", protocol, PROTOCOLS)


def _endpoint(endpoint: dict[str, Any], address_type: Any, *, path: str,
              errs: causes.Causes) -> None:
    addresses = schema.get_list(endpoint, "addresses") or []
    if not addresses:
        errs.required(f"{path}.addresses", "must contain at least 1 address")
    elif len(addresses) > MAX_ADDRESSES:
        errs.too_many(f"{path}.addresses", len(addresses), MAX_ADDRESSES)
    for j, address in enumerate(addresses):
        if isinstance(address, str):
            problem = _address_problem(address, address_type)
            if problem:
                errs.invalid(f"{path}.addresses[{j}]", address, problem)
    node = schema.get_str(endpoint, "nodeName")
    if node:
        errs.invalid_each(f"{path}.nodeName", node, names.dns1123_subdomain_errors(node))
    hostname = schema.get_str(endpoint, "hostname")
    if hostname:
        errs.invalid_each(f"{path}.hostname", hostname, names.dns1123_label_errors(hostname))


def _address_problem(address: str, address_type: Any) -> str:
    if address_type == "FQDN":
        return "; ".join(names.dns1123_subdomain_errors(address))
    if address_type not in ("IPv4", "IPv6"):
        return ""  # the addressType is reported already
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        parsed = None
    if parsed is None or (parsed.version == 4) != (address_type == "IPv4"):
        return f"must be a valid {address_type} address"
    return ""
