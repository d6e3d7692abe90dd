"""The service map: Services, EndpointSlices and Nodes -> what a node proxies and names.

Pure, as kube-proxy's `ServicePortMap`/`EndpointsMap` are: the agent's informers hand
their caches to `build()`, and the proxy (proxy.py), the packet rules (netrules.py) and
the DNS server (dns.py) read the result; none of them reads an API object itself. One
`Frontend` per Service port: the ClusterIP and port, the NodePort if the Service has
one, and the backends that take new connections.

Which backends take new connections is Kubernetes' rule: the endpoints whose `ready`
condition holds; if none does, the ones still `serving` while `terminating` (so that a
rolling update's last old pod keeps answering until its replacement is ready, as
kube-proxy does since ProxyTerminatingEndpoints). An endpoint that is neither leaves
rotation as soon as its slice says so: the kubelet writes Ready=False at the first failed
readiness probe past its threshold, the EndpointSlice controller copies it, and the
agent rebuilds the map from the slice's watch event.

Each backend carries the InternalIP of the node it runs on, so that the proxy can tell
a pod on this machine's Docker bridge (dialled at its pod IP) from a pod on another
machine (reached through that node's address; docs/networking.md).

A LoadBalancer Service's frontends also carry its load balancer: the IPs of its
`status.loadBalancer.ingress` (an agent whose address is listed there answers at the
Service's own `port` on it, as k3s's ServiceLB does; raftkube/cloud/nodelb.py chooses
them), its `loadBalancerSourceRanges` (the clients it admits there; none listed: all),
and for NodePort and LoadBalancer Services whether `externalTrafficPolicy` is `Local`
(traffic from outside goes only to endpoints on the node it came to).

Names, for DNS: `NAME.NAMESPACE` maps to the Service's ClusterIP, or for a headless
Service (clusterIP None) to its ready endpoints' addresses, or for an ExternalName
Service to its externalName (an alias).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
SERVICE_NAME = "kubernetes.io/service-name"  # the label that ties a slice to its Service
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True, order=True)
class Backend:
    """One endpoint of one Service port: the pod's address and port, and its node."""

    ip: str
    port: int
    node: str = ""  # the endpoint's nodeName ("" if the slice does not say)
    node_ip: str = ""  # that node's InternalIP ("" if the node is unknown)


@dataclass(frozen=True)
class Frontend:
    """One port of one Service, with the backends that take new connections now."""

    namespace: str
    service: str
    port_name: str
    protocol: str  # TCP, UDP, SCTP
    cluster_ip: str  # "" when the Service has none (headless)
    port: int
    node_port: int | None
    backends: tuple[Backend, ...]  # those that take new connections
    present: frozenset[Backend] = frozenset()  # every endpoint, ready or not
    load_balancer_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress[*].ip
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges ("": any client)
    external_local: bool = False  # externalTrafficPolicy: Local (NodePort, LoadBalancer)

    def has(self, backend: Backend) -> bool:
        """Whether `backend` is still an endpoint of this port at all (an unready one
        keeps its open connections; a removed one does not)."""
        return backend in self.present or backend in self.backends

    @property
    def key(self) -> str:
        """`NAMESPACE/NAME:PORTNAME`: a stable name for logs, metrics and rule comments."""
        return f"{self.namespace}/{self.service}:{self.port_name or self.port}"


@dataclass(frozen=True)
class ServiceMap:
    frontends: tuple[Frontend, ...] = ()
    # `NAME.NAMESPACE` -> the addresses a DNS A/AAAA query gets (ClusterIP, or for a
    # headless Service its ready endpoints)
    names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # `NAME.NAMESPACE` -> an ExternalName Service's externalName (a DNS CNAME)
    aliases: Mapping[str, str] = field(default_factory=dict)

    def frontend(self, key: str) -> Frontend | None:
        return next((f for f in self.frontends if f.key == key), None)

    def alias(self, name: str, namespace: str) -> str | None:
        """The externalName of ExternalName Service `name`, if it is one."""
        return self.aliases.get(f"{name.lower()}.{namespace.lower()}")

    def lookup(self, name: str, namespace: str) -> tuple[str, ...] | None:
        """The addresses of Service `name` in `namespace`; None if there is no such
        Service (a headless Service with no ready endpoint has an empty tuple)."""
        return self.names.get(f"{name.lower()}.{namespace.lower()}")


def node_addresses(nodes: Iterable[Obj]) -> dict[str, str]:
    """Node name -> its InternalIP (the first one), for nodes that report one."""
    out: dict[str, str] = {}
    for node in nodes:
        for address in (node.get("status") or {}).get("addresses") or []:
            if isinstance(address, dict) and address.get("type") == "InternalIP" and \
                    isinstance(address.get("address"), str):
                out[node["metadata"]["name"]] = address["address"]
                break
    return out


def _valid_ip(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def load_balancer_ips(svc: Obj) -> tuple[str, ...]:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return tuple(sorted({str(i["ip"]) for i in ingress
                         if isinstance(i, dict) and _valid_ip(i.get("ip"))}))


def source_ranges(spec: Obj) -> tuple[str, ...]:
    """The Service's loadBalancerSourceRanges that are CIDRs (the API refuses others)."""
    out = []
    for text in spec.get("loadBalancerSourceRanges") or []:
        try:
            out.append(str(ipaddress.ip_network(str(text).strip(), strict=False)))
        except ValueError:
            continue
    return tuple(out)


def admits(ranges: tuple[str, ...], client_ip: str) -> bool:
    """Whether a client at `client_ip` may use a load balancer limited to `ranges`."""
    if not ranges:
        return True
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(r) for r in ranges
               if ipaddress.ip_network(r).version == ip.version)


def _port_number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
        return value
    return None


Grouped = tuple[list[Backend], list[Backend], list[Backend]]


def endpoints_by_port(slices: Iterable[Obj], node_ips: Mapping[str, str]
                      ) -> dict[tuple[str, str], Grouped]:
    """(port name, protocol) -> (ready backends, serving-and-terminating backends, the
    others), from the slices of one Service; addresses of type FQDN are not proxied."""
    out: dict[tuple[str, str], Grouped] = {}
    for s in slices:
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for port in s.get("ports") or []:
            if not isinstance(port, dict):
                continue
            number = _port_number(port.get("port"))
            if number is None:
                continue
            ready, fallback, others = out.setdefault(
                (str(port.get("name") or ""), str(port.get("protocol") or "TCP")),
                ([], [], []))
            for endpoint in s.get("endpoints") or []:
                if not isinstance(endpoint, dict):
                    continue
                cond = endpoint.get("conditions") or {}
                node = str(endpoint.get("nodeName") or "")
                for ip in (endpoint.get("addresses") or [])[:1]:  # Kubernetes uses the first
                    if not _valid_ip(ip):
                        continue
                    backend = Backend(ip=ip, port=number, node=node,
                                      node_ip=node_ips.get(node, ""))
                    # `ready` unset means ready (the API's own reading of a nil pointer).
                    if cond.get("ready") is not False:
                        ready.append(backend)
                    elif cond.get("serving") is True and cond.get("terminating") is True:
                        fallback.append(backend)
                    else:
                        others.append(backend)
    return out


def ready_addresses(slices: Iterable[Obj]) -> tuple[str, ...]:
    """The addresses of the ready endpoints in a Service's slices, whatever their
    ports (a headless Service's DNS answer; it may have no ports at all)."""
    out: set[str] = set()
    for s in slices:
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue
        for endpoint in s.get("endpoints") or []:
            if isinstance(endpoint, dict) and \
                    (endpoint.get("conditions") or {}).get("ready") is not False:
                out.update(ip for ip in (endpoint.get("addresses") or [])[:1] if _valid_ip(ip))
    return tuple(sorted(out))


def build(services: Iterable[Obj], slices: Iterable[Obj], nodes: Iterable[Obj]) -> ServiceMap:
    """The map of every Service (an ExternalName Service has no frontend, only an
    alias: a DNS CNAME)."""
    node_ips = node_addresses(nodes)
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for s in slices:
        meta = s.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME)
        if owner:
            by_service.setdefault((meta.get("namespace") or "", owner), []).append(s)
    frontends: list[Frontend] = []
    names: dict[str, tuple[str, ...]] = {}
    aliases: dict[str, str] = {}
    for svc in sorted(services, key=lambda o: (o["metadata"].get("namespace") or "",
                                                o["metadata"]["name"])):
        meta = svc["metadata"]
        spec = svc.get("spec") or {}
        namespace, name = meta.get("namespace") or "", meta["name"]
        kind = spec.get("type") or "ClusterIP"
        if kind == "ExternalName":
            target = spec.get("externalName")
            if isinstance(target, str) and target.strip("."):
                aliases[f"{name}.{namespace}".lower()] = target.strip(".").lower() + "."
            continue
        headless = spec.get("clusterIP") == "None"
        cluster_ip = str(spec["clusterIP"]) if _valid_ip(spec.get("clusterIP")) else ""
        lb_ips = load_balancer_ips(svc) if kind == "LoadBalancer" else ()
        ranges = source_ranges(spec) if lb_ips else ()
        external_local = kind in NODE_PORT_TYPES and \
            spec.get("externalTrafficPolicy") == "Local"
        endpoints = endpoints_by_port(by_service.get((namespace, name), []), node_ips)
        for sp in spec.get("ports") or []:
            if not isinstance(sp, dict):
                continue
            port = _port_number(sp.get("port"))
            if port is None:
                continue
            port_name = str(sp.get("name") or "")
            protocol = str(sp.get("protocol") or "TCP")
            ready, fallback, others = endpoints.get((port_name, protocol), ([], [], []))
            chosen = ready or fallback
            node_port = _port_number(sp.get("nodePort")) if kind in NODE_PORT_TYPES else None
            frontends.append(Frontend(
                namespace=namespace, service=name, port_name=port_name, protocol=protocol,
                cluster_ip=cluster_ip, port=port, node_port=node_port,
                backends=tuple(sorted(set(chosen))),
                present=frozenset(ready + fallback + others),
                load_balancer_ips=lb_ips, source_ranges=ranges,
                external_local=external_local))
        if headless:
            names[f"{name}.{namespace}".lower()] = ready_addresses(by_service.get((namespace, name),
                                                                          []))
        elif cluster_ip:
            names[f"{name}.{namespace}".lower()] = (cluster_ip,)
    return ServiceMap(frontends=tuple(frontends), names=names, aliases=aliases)
