"""The agent's service networking (raftkube's kube-proxy and node-local DNS), one per
agent process: informers on Services, EndpointSlices and Nodes feed the service map
(servicemap.py), and every change is made true in

- the proxy (proxy.py): NodePort listeners on the node's address, ClusterIP listeners
  on the proxy address, and a LoadBalancer Service's listener on the node's address at
  its own port when its ingress lists that address;
- the DNS server (dns.py), which answers from the newest map;
- the packet rules (netrules.py): this agent's pods' packets for a ClusterIP port, or
  for the cluster DNS address, go to this agent's listeners;
- the relay (relay.py), through which other machines' nodes reach this node's pods.

A change is applied within `debounce` seconds of its watch event (so a burst of
EndpointSlice writes is applied once), and everything is re-checked every
`resync_period` seconds. The kubelet asks `sandbox_config(pod)` for each sandbox it
makes (the pod's resolv.conf: Kubernetes' dnsPolicy and dnsConfig) and tells
`sandbox_ready()` once it has its IP, so the pod's rules are in place before its first
container starts; the runtime's list of sandboxes (a call to the engine) is read only
every `pods_period` seconds, to drop the rules of pods that are gone (until then a
stale rule only sends a reused address's packets to this agent's proxy, which serves
them as any agent's would). On exit everything is closed and the rules removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import prometheus_client as prom

from raftkube.agent import dns, dockerspec, netrules, network, relay
from raftkube.agent import proxy as px
from raftkube.agent import runtime as rt
from raftkube.agent import servicemap as sm
from raftkube.api import kinds
from raftkube.client import informer as inf
from raftkube.client import rest

log = logging.getLogger(__name__)

Obj = dict[str, Any]
CLUSTER_DNS = "169.254.20.10"  # NodeLocal DNSCache's link-local address, never a ClusterIP
RELAY_PORT = 10263


@dataclass
class ServiceOptions:
    node_address: str
    proxy_address: str | None = None  # None: no ClusterIP listeners (nor iptables rules)
    iptables: bool = False
    cluster_domain: str = "cluster.local"
    cluster_dns: str = CLUSTER_DNS
    dns_port: int = 0  # 0: the kernel picks (pods reach it through the DNAT rule)
    dns_upstreams: list[str] = field(default_factory=list)
    relay_port: int = RELAY_PORT  # 0: no relay (a one-machine cluster needs none)
    debounce: float = 0.05
    resync_period: float = 2.0
    pods_period: float = 10.0


def pod_dns(pod: Obj, *, server: str, domain: str) -> dns.PodDns | None:
    """A pod's resolv.conf from its dnsPolicy and dnsConfig, as the kubelet writes it;
    None for the runtime's default (dnsPolicy Default, and any hostNetwork pod: its
    packets leave from the host, where no rule leads them to this agent's DNS server,
    so ClusterFirstWithHostNet gets the host's resolver here)."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    config = spec.get("dnsConfig") or {}
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and not spec.get("hostNetwork"):
        base = dns.pod_dns(namespace=namespace, server=server, domain=domain)
    elif policy == "None":
        base = dns.PodDns(servers=(), searches=(), options=())
    else:
        base = None
    if not config:
        return base
    base = base or dns.PodDns(servers=(), searches=(), options=())
    servers = [*base.servers, *(str(s) for s in config.get("nameservers") or [])]
    searches = [*base.searches, *(str(s) for s in config.get("searches") or [])]
    options: dict[str, str] = {}
    for text in base.options:
        options[text.partition(":")[0]] = text
    for opt in config.get("options") or []:
        if isinstance(opt, dict) and opt.get("name"):
            name, value = str(opt["name"]), opt.get("value")
            options[name] = f"{name}:{value}" if value else name
    return dns.PodDns(servers=tuple(dict.fromkeys(servers))[:3],
                      searches=tuple(dict.fromkeys(searches))[:32],
                      options=tuple(options.values()))


class ServiceNetwork:
    def __init__(self, *, node: str, client: rest.RestClient, options: ServiceOptions,
                 registry: prom.CollectorRegistry,
                 pod_ips: Callable[[], Awaitable[set[str]]],
                 rng: random.Random | None = None,
                 rules: netrules.NetRules | None = None,
                 services: inf.Informer | None = None) -> None:
        """`services`: the process's Services informer, run by its owner (the kubelets
        read it for the pods' service variables); None: one of our own."""
        self.node = node
        self.options = options
        self.pod_ips = pod_ips
        self._own_services = services is None
        self.services = services if services is not None else inf.Informer(client,
                                                                            kinds.SERVICE)
        self.slices = inf.Informer(client, kinds.ENDPOINTSLICE)
        self.nodes = inf.Informer(client, kinds.NODE)
        self.map = sm.ServiceMap()
        self.proxy = px.Proxy(node_address=options.node_address,
                              cluster_address=options.proxy_address,
                              metrics=px.ProxyMetrics(registry), route=self.route, rng=rng,
                              node_name=node, internal=self._is_internal)
        self.resolver = dns.Resolver(lookup=self.lookup, alias=self.alias,
                                     domain=options.cluster_domain,
                                     upstreams=options.dns_upstreams)
        self.dns: dns.DnsServer | None = None
        if options.iptables or options.dns_port:
            self.dns = dns.DnsServer(resolver=self.resolver,
                                     host=options.proxy_address or options.node_address,
                                     port=options.dns_port)
        self.relay: relay.Relay | None = None
        if options.relay_port:
            self.relay = relay.Relay(host=options.node_address, port=options.relay_port,
                                     allowed=self._is_pod)
        self.rules = rules
        if self.rules is None and options.iptables:
            self.rules = netrules.NetRules(node=node, address=options.node_address)
        self._known_pods: set[str] = set()
        self._pods_listed = -float("inf")
        self._fresh: dict[str, float] = {}  # pod IP -> when sandbox_ready told it
        self._rules_lock = asyncio.Lock()  # one iptables-restore at a time
        self._changed = asyncio.Event()
        self.synced = asyncio.Event()
        self.syncs = 0
        for informer in (self.services, self.slices, self.nodes):
            informer.add_handler(inf.Handler(add=self._touch,
                                             update=lambda _o, _n: self._touch(_n),
                                             delete=self._touch))

    # ---- what others ask ---------------------------------------------------------------

    def lookup(self, name: str, namespace: str) -> tuple[str, ...] | None:
        return self.map.lookup(name, namespace)

    def alias(self, name: str, namespace: str) -> str | None:
        return self.map.alias(name, namespace)

    def route(self, backend: sm.Backend) -> px.Route:
        """At its pod IP when its node is on this machine (one Docker bridge), else
        through its node's relay."""
        if backend.node_ip and self.options.relay_port and \
                not network.is_local(backend.node_ip):
            return relay.route_via(backend.node_ip, self.options.relay_port, backend.ip,
                                   backend.port)
        return px.direct(backend)

    def sandbox_config(self, pod: Obj) -> rt.SandboxConfig:
        """What the pod's sandbox is made with: the runtime's default (its hostname and
        host ports) and the pod's resolv.conf."""
        base = dockerspec.default_sandbox_config(pod)
        conf = None
        if self.dns is not None:
            conf = pod_dns(pod, server=self.options.cluster_dns,
                           domain=self.options.cluster_domain)
        if conf is None:
            return base
        return dataclasses.replace(base, dns_servers=conf.servers,
                                   dns_searches=conf.searches, dns_options=conf.options)

    async def sandbox_ready(self, pod: Obj, sandbox: rt.Sandbox) -> None:
        """A new sandbox has its IP: its rules go in now, before its containers start."""
        if (pod.get("spec") or {}).get("hostNetwork"):
            return  # the host's address: not a pod's to match on
        if sandbox.ip:
            self._fresh[sandbox.ip] = time.monotonic()
        if sandbox.ip and sandbox.ip not in self._known_pods:
            self._known_pods.add(sandbox.ip)
            if self.rules is not None:
                try:
                    await self._sync_rules(self._known_pods)
                except netrules.RulesError as e:
                    # The pod starts anyway; the next sync (every resync_period) retries.
                    log.warning("%s: rules for pod %s: %s", self.node, sandbox.ip, e)

    def _is_pod(self, ip: str) -> bool:
        return ip in self._known_pods

    def _is_internal(self, ip: str) -> bool:
        """A client inside this node (its own address, or one of its pods):
        externalTrafficPolicy Local does not apply to it, as with kube-proxy."""
        return ip == self.options.node_address or self._is_pod(ip)

    def _touch(self, _obj: Obj) -> None:
        self._changed.set()

    # ---- running -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            if self.dns is not None:
                try:
                    await self.dns.start()
                    log.info("%s: cluster DNS on %s:%d", self.node, *self.dns.address)
                except OSError as e:
                    # The node runs on without names rather than not at all; its pods'
                    # lookups fail (no DNAT rule is written for a server that is not).
                    log.error("%s: cluster DNS cannot listen on %s:%d: %s", self.node,
                              *self.dns.address, e)
                    self.dns = None
            if self.relay is not None:
                try:
                    await self.relay.start()
                except OSError as e:
                    log.error("%s: the pod relay cannot listen on %s:%d: %s (pods on "
                              "other machines cannot reach this node's pods)", self.node,
                              self.relay.host, self.relay.port, e)
                    self.relay = None
            async with asyncio.TaskGroup() as group:
                for informer in (self.services, self.slices, self.nodes):
                    if informer is not self.services or self._own_services:
                        group.create_task(informer.run())
                for informer in (self.services, self.slices, self.nodes):
                    await informer.wait_synced()
                group.create_task(self._loop())
        finally:
            await self.close()

    async def _loop(self) -> None:
        while True:
            self._changed.clear()
            try:
                await self.sync()
            except (netrules.RulesError, rt.RuntimeFailure) as e:
                log.warning("%s: service sync failed (retried): %s", self.node, e)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.resync_period):
                    await self._changed.wait()
            await asyncio.sleep(self.options.debounce)

    async def sync(self) -> None:
        """Build the map from the caches and make it true everywhere."""
        self.map = sm.build(self.services.cache.list(), self.slices.cache.list(),
                            self.nodes.cache.list())
        await self.proxy.apply(self.map)
        now = time.monotonic()
        if now - self._pods_listed >= self.options.pods_period:
            listed = set(await self.pod_ips())
            # A sandbox told while the list was being read may be missing from it.
            self._fresh = {ip: t for ip, t in self._fresh.items() if t >= now}
            self._known_pods = listed | set(self._fresh)
            self._pods_listed = now
        if self.rules is not None:
            await self._sync_rules(self._known_pods)
        self.syncs += 1
        self.synced.set()

    def redirects(self) -> list[netrules.Redirect]:
        out = []
        for protocol in ("TCP", "UDP"):
            for (ip, port), (to_ip, to_port) in self.proxy.cluster_ports(protocol).items():
                f = next((f for f in self.map.frontends
                          if (f.cluster_ip, f.port, f.protocol) == (ip, port, protocol)), None)
                out.append(netrules.Redirect(ip, port, protocol.lower(), to_ip, to_port,
                                             f.key if f is not None else ""))
        if self.dns is not None:
            to_ip, to_port = self.dns.address
            for proto in ("udp", "tcp"):
                out.append(netrules.Redirect(self.options.cluster_dns, 53, proto, to_ip,
                                             to_port, "cluster dns"))
        return out

    async def _sync_rules(self, pod_ips: set[str]) -> None:
        assert self.rules is not None
        async with self._rules_lock:
            rules, redirects = self.rules, self.redirects()
            await asyncio.to_thread(rules.sync, pod_ips=set(pod_ips), redirects=redirects)

    async def close(self) -> None:
        await self.proxy.close()
        if self.dns is not None:
            await self.dns.close()
        if self.relay is not None:
            await self.relay.close()
        if self.rules is not None:
            try:
                self.rules.remove()
            except netrules.RulesError as e:
                log.warning("%s: removing the packet rules failed: %s", self.node, e)


async def sandbox_ips(runtimes: Sequence[rt.ContainerRuntime]) -> set[str]:
    """The pod IPs of every sandbox the runtimes hold."""
    out: set[str] = set()
    for runtime in runtimes:
        out.update(s.sandbox.ip for s in await runtime.pods() if s.sandbox.ip)
    return out
