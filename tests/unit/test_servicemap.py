"""The service map: Services + EndpointSlices + Nodes -> frontends, backends and names."""

from __future__ import annotations

import pytest

from raftkube.agent import servicemap as sm
from tests.unit.service_support import endpoint, endpoint_slice, node, service

pytestmark = pytest.mark.unit


def test_cluster_ip_frontend_with_ready_backends_and_their_nodes() -> None:
    smap = sm.build(
        [service("web")],
        [endpoint_slice("web", [endpoint("172.17.0.3", node="n2"),
                                endpoint("172.17.0.2", node="n1")])],
        [node("n1", "127.0.0.2"), node("n2", "127.0.0.3")])
    (f,) = smap.frontends
    assert (f.key, f.cluster_ip, f.port, f.protocol, f.node_port) == \
        ("default/web:http", "10.96.0.10", 80, "TCP", None)
    assert f.backends == (sm.Backend("172.17.0.2", 8080, "n1", "127.0.0.2"),
                          sm.Backend("172.17.0.3", 8080, "n2", "127.0.0.3"))
    assert smap.lookup("web", "default") == ("10.96.0.10",)
    assert smap.lookup("WEB", "Default") == ("10.96.0.10",)
    assert smap.lookup("web", "other") is None


def test_unready_endpoints_leave_rotation_but_stay_present() -> None:
    smap = sm.build([service("web")],
                    [endpoint_slice("web", [endpoint("172.17.0.2"),
                                            endpoint("172.17.0.3", ready=False)])], [])
    (f,) = smap.frontends
    assert [b.ip for b in f.backends] == ["172.17.0.2"]
    unready = sm.Backend("172.17.0.3", 8080, "n1", "")
    assert f.has(unready)  # its open connections may finish
    assert not f.has(sm.Backend("172.17.0.9", 8080, "n1", ""))


def test_terminating_serving_endpoints_are_used_only_when_none_is_ready() -> None:
    old = endpoint("172.17.0.2", ready=False, serving=True, terminating=True)
    smap = sm.build([service("web")], [endpoint_slice("web", [old])], [])
    assert [b.ip for b in smap.frontends[0].backends] == ["172.17.0.2"]
    smap = sm.build([service("web")],
                    [endpoint_slice("web", [old, endpoint("172.17.0.3")])], [])
    assert [b.ip for b in smap.frontends[0].backends] == ["172.17.0.3"]


@pytest.mark.parametrize(("type_", "expected"), [("NodePort", 30080), ("LoadBalancer", 30080),
                                                  ("ClusterIP", None)])
def test_node_port_only_for_node_port_and_load_balancer_services(type_: str,
                                                                 expected: int | None) -> None:
    ports = [{"name": "http", "protocol": "TCP", "port": 80, "nodePort": 30080}]
    smap = sm.build([service("web", type_=type_, ports=ports)], [], [])
    assert smap.frontends[0].node_port == expected


def test_ports_are_matched_by_name_and_protocol() -> None:
    ports = [{"name": "http", "protocol": "TCP", "port": 80},
             {"name": "dns", "protocol": "UDP", "port": 53}]
    slices = [endpoint_slice("web", [endpoint("172.17.0.2")],
                             ports=[{"name": "http", "protocol": "TCP", "port": 8080},
                                    {"name": "dns", "protocol": "UDP", "port": 5353}])]
    smap = sm.build([service("web", ports=ports)], slices, [])
    got = {(f.port_name, f.protocol): [(b.ip, b.port) for b in f.backends]
           for f in smap.frontends}
    assert got == {("http", "TCP"): [("172.17.0.2", 8080)],
                   ("dns", "UDP"): [("172.17.0.2", 5353)]}


def test_slices_of_other_services_and_namespaces_do_not_mix() -> None:
    smap = sm.build([service("web"), service("web", ns="b", cluster_ip="10.96.0.11")],
                    [endpoint_slice("web", [endpoint("172.17.0.2")]),
                     endpoint_slice("web", [endpoint("172.17.0.3")], ns="b"),
                     endpoint_slice("api", [endpoint("172.17.0.4")])], [])
    got = {f.namespace: [b.ip for b in f.backends] for f in smap.frontends}
    assert got == {"default": ["172.17.0.2"], "b": ["172.17.0.3"]}
    assert smap.lookup("web", "b") == ("10.96.0.11",)


def test_headless_service_names_its_ready_pods_and_has_no_cluster_frontend() -> None:
    svc = service("db", cluster_ip="None", ports=[])
    slices = [endpoint_slice("db", [endpoint("172.17.0.5"), endpoint("172.17.0.4"),
                                    endpoint("172.17.0.6", ready=False)], ports=[])]
    smap = sm.build([svc], slices, [])
    assert smap.frontends == ()
    assert smap.lookup("db", "default") == ("172.17.0.4", "172.17.0.5")
    assert sm.build([svc], [], []).lookup("db", "default") == ()


def test_bad_and_foreign_entries_are_ignored() -> None:
    slices = [endpoint_slice("web", [endpoint("not-an-ip"), {"addresses": []}, "junk"]),
              endpoint_slice("web", [endpoint("example.com")], address_type="FQDN",
                             name="web-fqdn")]
    smap = sm.build([service("web"), service("ext", type_="ExternalName", cluster_ip="")],
                    slices, [{"metadata": {"name": "n9"}, "status": {}}])
    (f,) = smap.frontends
    assert f.backends == ()
    assert smap.lookup("ext", "default") is None


def test_an_external_name_service_is_an_alias_only() -> None:
    ext = service("db", type_="ExternalName", cluster_ip="", ports=[])
    ext["spec"]["externalName"] = "Database.Example.COM."
    smap = sm.build([ext], [], [])
    assert smap.frontends == () and smap.lookup("db", "default") is None
    assert smap.alias("db", "default") == "database.example.com."
