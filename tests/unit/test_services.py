"""The agent's service networking as a component: a pod's resolv.conf from its
dnsPolicy and dnsConfig, the sandbox settings the kubelet gets, and the map built from
the informers' caches."""

from __future__ import annotations

from typing import Any

import prometheus_client as prom
import pytest

from raftkube.agent import runtime as rt
from raftkube.agent import services
from raftkube.client import rest, transport
from tests.unit.service_support import endpoint, endpoint_slice, node, service

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
SEARCH = ("shop.svc.cluster.local", "svc.cluster.local", "cluster.local")


def pod(**spec: Any) -> Obj:
    return {"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}


@pytest.mark.parametrize(("spec", "expected"), [
    ({}, (("169.254.20.10",), SEARCH, ("ndots:5",))),
    ({"dnsPolicy": "ClusterFirst"}, (("169.254.20.10",), SEARCH, ("ndots:5",))),
    ({"dnsPolicy": "Default"}, None),
    ({"hostNetwork": True}, None),
    ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}, None),  # the host's
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.53"],
                                         "searches": ["example.com"],
                                         "options": [{"name": "edns0"}]}},
     (("192.0.2.53",), ("example.com",), ("edns0",))),
    ({"dnsConfig": {"searches": ["example.com"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     (("169.254.20.10",), (*SEARCH, "example.com"), ("ndots:2", "edns0"))),
])
def test_pod_dns_follows_dns_policy_and_dns_config(spec: Obj, expected: Any) -> None:
    got = services.pod_dns(pod(**spec), server="169.254.20.10", domain="cluster.local")
    assert (got if got is None else (got.servers, got.searches, got.options)) == expected


async def test_the_component_builds_its_map_and_answers_the_kubelet() -> None:
    async with transport.Transport(["http://127.0.0.1:9"], "t" * 24) as tp:
        net = services.ServiceNetwork(
            node="n1", client=rest.RestClient(tp),
            options=services.ServiceOptions(node_address="127.0.0.1",
                                            proxy_address="127.0.0.1", dns_port=0,
                                            relay_port=0),
            registry=prom.CollectorRegistry(), pod_ips=_no_pods)
        try:
            net.services.cache.put(service("web"))
            net.slices.cache.put(endpoint_slice("web", [endpoint("172.17.0.2",
                                                                 node="n9")]))
            net.nodes.cache.put(node("n9", "192.0.2.9"))
            await net.sync()
            assert net.lookup("web", "default") == ("10.96.0.10",)
            (f,) = net.map.frontends
            assert f.backends[0].node_ip == "192.0.2.9"
            # no relay port: every backend is dialled at its pod IP
            assert (net.route(f.backends[0]).host, net.route(f.backends[0]).port) == \
                ("172.17.0.2", 8080)
            assert [(r.ip, r.port, r.protocol) for r in net.redirects()] == \
                [("10.96.0.10", 80, "tcp")]  # no DNS server (no port, no iptables)
            assert net.sandbox_config(pod()) == rt.SandboxConfig(hostname="p")
        finally:
            await net.close()


async def test_a_remote_backend_goes_through_its_nodes_relay() -> None:
    async with transport.Transport(["http://127.0.0.1:9"], "t" * 24) as tp:
        net = services.ServiceNetwork(
            node="n1", client=rest.RestClient(tp),
            options=services.ServiceOptions(node_address="127.0.0.1", relay_port=10263),
            registry=prom.CollectorRegistry(), pod_ips=_no_pods)
        try:
            net.services.cache.put(service("web"))
            net.slices.cache.put(endpoint_slice("web", [endpoint("172.17.0.2", node="n9"),
                                                        endpoint("172.17.0.3", node="n1")]))
            net.nodes.cache.put(node("n9", "192.0.2.9"))  # another machine's address
            net.nodes.cache.put(node("n1", "127.0.0.1"))
            net.map = services.sm.build(net.services.cache.list(), net.slices.cache.list(),
                                        net.nodes.cache.list())
            far, near = net.map.frontends[0].backends
            assert net.route(far) == services.px.Route("192.0.2.9", 10263,
                                                       b"RELAY 172.17.0.2 8080\n")
            assert net.route(near) == services.px.Route("172.17.0.3", 8080)
        finally:
            await net.close()


async def _no_pods() -> set[str]:
    return set()


async def test_the_sandbox_keeps_hostname_and_host_ports_and_gets_the_resolv_conf() -> None:
    async with transport.Transport(["http://127.0.0.1:9"], "t" * 24) as tp:
        net = services.ServiceNetwork(
            node="n1", client=rest.RestClient(tp),
            options=services.ServiceOptions(node_address="127.0.0.1", dns_port=5353,
                                            relay_port=0),
            registry=prom.CollectorRegistry(), pod_ips=_no_pods)
        p = pod(containers=[{"name": "c", "image": "busybox",
                             "ports": [{"containerPort": 80, "hostPort": 8080}]}])
        assert net.sandbox_config(p) == rt.SandboxConfig(
            hostname="p", dns_servers=("169.254.20.10",), dns_searches=SEARCH,
            dns_options=("ndots:5",), port_mappings=((80, "TCP", "", 8080),))
        await net.close()
