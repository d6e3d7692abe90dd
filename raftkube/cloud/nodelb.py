"""A load balancer served by the agents themselves, as k3s's ServiceLB serves one.

The `local` provider (and `vagrant`, whose VMs run agents) make no load balancer of
their own: every Ready agent whose address is listed in a Service's
`status.loadBalancer.ingress` listens on that address at the Service's own `port` and
proxies to its ready endpoints (agent/proxy.py). So ensuring a load balancer is only
choosing those addresses, from what the cluster knows:

- the InternalIP of every Ready Node, but not of one labelled
  `node.kubernetes.io/exclude-from-external-load-balancers` (Kubernetes' label), nor of
  one that is unschedulable (cordoned: being drained);
- with `externalTrafficPolicy: Local`, only nodes that run a ready endpoint of the
  Service, since such a node sends traffic only to its own endpoints (a cloud's load
  balancer learns the same through its health checks);
- one address answers one Service on a port: when another LoadBalancer Service that came
  first (older, then by namespace/name) already has the same port and protocol, this one
  gets an error that says which (`Unavailable`: it keeps no ingress), and stays pending
  until that one goes, as a second ServiceLB on a taken host port does.

Pure: the View in, the addresses (or a ProviderError) out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from raftkube.api import conditions
from raftkube.cloud import provider as pv

Obj = dict[str, Any]
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME = "kubernetes.io/service-name"


def internal_ip(node: Obj) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if isinstance(address, dict) and address.get("type") == "InternalIP" and \
                isinstance(address.get("address"), str):
            return str(address["address"])
    return ""


def serving_nodes(nodes: Iterable[Obj]) -> list[Obj]:
    """The nodes that may carry a load balancer's traffic."""
    out = []
    for node in nodes:
        labels = (node.get("metadata") or {}).get("labels") or {}
        if EXCLUDE in labels or (node.get("spec") or {}).get("unschedulable"):
            continue
        if conditions.is_true(node, "Ready") and internal_ip(node):
            out.append(node)
    return out


def endpoint_nodes(service: Obj, slices: Iterable[Obj]) -> set[str]:
    """The nodes that run a ready endpoint of `service`."""
    meta = service.get("metadata") or {}
    out: set[str] = set()
    for s in slices:
        smeta = s.get("metadata") or {}
        if smeta.get("namespace") != meta.get("namespace") or \
                (smeta.get("labels") or {}).get(SERVICE_NAME) != meta.get("name"):
            continue
        for endpoint in s.get("endpoints") or []:
            if isinstance(endpoint, dict) and endpoint.get("nodeName") and \
                    (endpoint.get("conditions") or {}).get("ready") is not False:
                out.add(str(endpoint["nodeName"]))
    return out


def _ports(service: Obj) -> set[tuple[int, str]]:
    return {(p["port"], str(p.get("protocol") or "TCP"))
            for p in (service.get("spec") or {}).get("ports") or []
            if isinstance(p, dict) and type(p.get("port")) is int}


def _order(service: Obj) -> tuple[str, str, str]:
    meta = service.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""),
            str(meta.get("name") or ""))


def conflict(service: Obj, services: Iterable[Obj]) -> str:
    """Why `service` cannot have its ports on the nodes ("" if it can)."""
    mine = _ports(service)
    uid = (service.get("metadata") or {}).get("uid")
    for other in sorted(services, key=_order):
        if (other.get("metadata") or {}).get("uid") == uid:
            return ""  # every Service that came first was looked at
        if not pv.wants_load_balancer(other):
            continue
        taken = mine & _ports(other)
        if taken:
            port, protocol = min(taken)
            meta = other["metadata"]
            return (f"port {port}/{protocol} is already served on every node by the load "
                    f"balancer of Service {meta.get('namespace')}/{meta.get('name')}; "
                    "choose another port (or delete that Service)")
    return ""


def addresses(service: Obj, view: pv.View) -> list[str]:
    """The ingress IPs of `service`'s load balancer (a ProviderError if its port is taken)."""
    why = conflict(service, view.services)
    if why:
        raise pv.Unavailable(why)
    nodes = serving_nodes(view.nodes)
    if (service.get("spec") or {}).get("externalTrafficPolicy") == "Local":
        local = endpoint_nodes(service, view.slices)
        nodes = [n for n in nodes if n["metadata"]["name"] in local]
    return sorted({internal_ip(n) for n in nodes}, key=_ip_key)


def _ip_key(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in ip.split("."))
    except ValueError:
        return (1 << 16,)
