"""The EndpointSlice controller: the slices a Service should have (a pure function, as
tables) and the writes one reconcile makes to get there from the cached ones."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from raftkube.api import kinds, validation
from raftkube.client import workqueue
from raftkube.controllers import disruption
from raftkube.controllers import endpointslice as eps
from tests.unit.conftest import Served
from tests.unit.controller_fixture import Fixture
from tests.unit.loops import converge, running
from tests.unit.test_rest import ok

pytestmark = pytest.mark.unit


def service(*ports: dict[str, Any], selector: dict[str, str] | None = None,
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "ns", "uid": "u-web",
                         "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"} if selector is None else selector,
                     "ports": list(ports) or [{"name": "http", "port": 80,
                                               "targetPort": "http", "protocol": "TCP"}],
                     **spec}}


def pod(name: str, ip: str | None = "10.1.0.1", *, ready: bool = True, node: str = "n1",
        labels: dict[str, str] | None = None, port: int = 8080, **meta: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}",
                         "labels": {"app": "web"} if labels is None else labels, **meta},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i", "ports": [
                {"name": "http", "containerPort": port}]}]},
            "status": status}


def endpoints(slices: list[dict[str, Any]]) -> list[tuple[str, bool, bool, bool]]:
    return [(e["targetRef"]["name"], e["conditions"]["ready"], e["conditions"]["serving"],
             e["conditions"]["terminating"]) for s in slices for e in s["endpoints"]]


def test_ready_not_ready_and_terminating_pods_are_told_apart() -> None:
    slices = eps.desired(service(), [
        pod("a"), pod("b", ready=False), pod("c", deletionTimestamp="2024-01-01T00:00:00Z"),
        pod("d", ip=None), pod("e", labels={"app": "other"}),
        pod("f") | {"status": {"phase": "Succeeded", "podIP": "10.1.0.9"}}], {"n1": "z1"})
    assert endpoints(slices) == [("a", True, True, False), ("b", False, False, False),
                                 ("c", False, True, True)]
    assert len(slices) == 1
    s = slices[0]
    assert s["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    assert s["endpoints"][0] == {
        "addresses": ["10.1.0.1"], "nodeName": "n1", "zone": "z1",
        "conditions": {"ready": True, "serving": True, "terminating": False},
        "targetRef": {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "u-a"}}
    assert s["metadata"]["labels"] == {"team": "a", eps.SERVICE_NAME: "web",
                                       eps.MANAGED_BY: eps.CONTROLLER}
    assert s["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Service", "name": "web", "uid": "u-web",
        "controller": True, "blockOwnerDeletion": True}]
    assert validation.validate(s) == []


GOING = {"deletionTimestamp": "2024-01-01T00:00:00Z"}


@pytest.mark.parametrize(("ready", "meta", "publish", "conditions"), [
    (True, {}, False, (True, True, False)),
    (False, {}, False, (False, False, False)),
    (True, GOING, False, (False, True, True)),  # draining: not ready, still serving
    (False, GOING, False, (False, False, True)),
    (True, GOING, True, (True, True, True)),  # published anyway, as Kubernetes does
    (False, {}, True, (True, False, False)),
], ids=["ready", "not-ready", "terminating-serving", "terminating-done",
        "terminating-published", "not-ready-published"])
def test_endpoint_conditions_are_kubernetes(ready: bool, meta: dict[str, Any], publish: bool,
                                            conditions: tuple[bool, bool, bool]) -> None:
    slices = eps.desired(service(publishNotReadyAddresses=publish),
                         [pod("a", ready=ready, **meta)], {})
    assert endpoints(slices) == [("a", *conditions)]


def test_a_named_port_is_looked_up_with_its_protocol_in_every_container() -> None:
    svc = service({"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"})
    udp = pod("a")
    udp["spec"]["containers"].append({"name": "side", "image": "i", "ports": [
        {"name": "dns", "containerPort": 5353, "protocol": "TCP"},
        {"name": "dns", "containerPort": 5354, "protocol": "UDP"}]})
    tcp_only = pod("b", "10.1.0.2")
    tcp_only["spec"]["containers"][0]["ports"] = [{"name": "dns", "containerPort": 53}]
    by_pod = {e["targetRef"]["name"]: s["ports"] for s in eps.desired(svc, [udp, tcp_only], {})
              for e in s["endpoints"]}
    assert by_pod == {"a": [{"name": "dns", "protocol": "UDP", "port": 5354}], "b": []}


def test_publish_not_ready_addresses_makes_every_endpoint_ready() -> None:
    slices = eps.desired(service(publishNotReadyAddresses=True), [pod("b", ready=False)], {})
    assert endpoints(slices) == [("b", True, False, False)]


def test_ports_resolve_per_pod_and_group_the_endpoints() -> None:
    svc = service({"name": "http", "port": 80, "targetPort": "http"},
                  {"name": "admin", "port": 9000, "targetPort": 9001, "protocol": "UDP"})
    slices = eps.desired(svc, [pod("a", port=8080), pod("b", "10.1.0.2", port=8081),
                               pod("c", "10.1.0.3", port=8080)], {})
    by_ports = {tuple(p["port"] for p in s["ports"]): [e["targetRef"]["name"]
                                                        for e in s["endpoints"]]
                for s in slices}
    assert by_ports == {(8080, 9001): ["a", "c"], (8081, 9001): ["b"]}
    names = [s["metadata"]["name"] for s in slices]
    assert len(set(names)) == 2 and all(n.startswith("web-") for n in names)
    assert eps.desired(svc, [pod("a", port=8080)], {})[0]["metadata"]["name"] in names


def test_a_named_port_a_pod_lacks_is_left_out_for_that_pod() -> None:
    svc = service({"name": "metrics", "port": 90, "targetPort": "metrics"})
    slices = eps.desired(svc, [pod("a")], {})
    assert slices[0]["ports"] == [] and endpoints(slices) == [("a", True, True, False)]


def test_a_service_without_pods_has_one_empty_slice() -> None:
    slices = eps.desired(service(), [], {})
    assert [(s["endpoints"], s["ports"]) for s in slices] == [([], [])]


def test_slices_hold_at_most_a_hundred_endpoints_each() -> None:
    pods = [pod(f"p{i:03d}", f"10.1.{i // 250}.{i % 250 + 1}") for i in range(250)]
    slices = eps.desired(service(), pods, {})
    assert [len(s["endpoints"]) for s in slices] == [100, 100, 50]
    assert len({s["metadata"]["name"] for s in slices}) == 3
    ipv6 = eps.desired(service(), [pod("a", "fd00::1"), pod("b")], {})
    assert sorted(s["addressType"] for s in ipv6) == ["IPv4", "IPv6"]


def make(f: Fixture) -> eps.EndpointSliceController:
    c = eps.EndpointSliceController(f.ctx)
    c.queue = workqueue.WorkQueue()
    return c


async def test_a_reconcile_creates_updates_and_deletes_only_what_differs() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service())
    f.seed(kinds.POD, pod("a"))
    f.seed(kinds.NODE, {"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": "n1", "labels": {disruption.ZONE: "z1"}}})
    f.seed(kinds.ENDPOINTSLICE)
    c = make(f)
    actions = await f.run(c, "ns/web")
    assert [(a.verb, a.kind) for a in actions] == [("create", "endpointslices")]
    made = copy.deepcopy(actions[0].body)
    made["metadata"].update(uid="u-slice", resourceVersion="33")
    stale = copy.deepcopy(made)
    stale["metadata"].update(name="web-old", uid="u-old", resourceVersion="34")
    f.seed(kinds.ENDPOINTSLICE, made, stale)
    actions = await f.run(c, "ns/web")
    assert [(a.verb, a.name, a.body.get("uid")) for a in actions] == [
        ("delete", "web-old", "u-old")]
    f.seed(kinds.POD, pod("a", ready=False))
    actions = await f.run(c, "ns/web")
    assert [(a.verb, a.name) for a in actions][:1] == [("update", made["metadata"]["name"])]
    assert actions[0].body["metadata"]["resourceVersion"] == "33"  # a compare-and-swap
    assert actions[0].body["endpoints"][0]["conditions"]["ready"] is False


async def test_services_without_a_selector_are_left_to_their_authors() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service(selector={}))
    f.seed(kinds.POD, pod("a"))
    f.seed(kinds.ENDPOINTSLICE)
    assert await f.run(make(f), "ns/web") == []


async def test_pod_changes_queue_the_services_that_select_it() -> None:
    f = Fixture()
    other = service(selector={"app": "db"})
    other["metadata"].update(name="db", uid="u-db")
    f.seed(kinds.SERVICE, service(), other)
    c = make(f)
    c._pod(pod("a", ready=False), pod("a"))
    assert len(c.queue) == 1 and await c.queue.get() == "ns/web"
    c.queue.done("ns/web")
    c._pod(pod("a"), pod("a") | {"metadata": {**pod("a")["metadata"], "resourceVersion": "9"}})
    assert len(c.queue) == 0  # nothing an endpoint shows changed
    c._pod(pod("a", labels={"app": "db"}), pod("a"))
    assert len(c.queue) == 2  # it left one Service and joined the other


async def test_slices_follow_pods_and_go_with_their_service(served: Served) -> None:
    from raftkube.controllers.garbagecollector import GarbageCollector

    slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    async with running(served, eps.EndpointSliceController, GarbageCollector):
        svc = service()
        svc["metadata"] = {"name": "web"}
        await ok(served, "POST", "/api/v1/namespaces/default/services", svc)
        body = pod("a")
        body["metadata"] = {"name": "a", "labels": {"app": "web"}}
        made = await ok(served, "POST", "/api/v1/namespaces/default/pods", body)
        made["status"] = body["status"]
        await ok(served, "PUT", "/api/v1/namespaces/default/pods/a/status", made)

        async def ready_endpoint() -> Any:
            items = (await ok(served, "GET", slices + "?labelSelector="
                              "kubernetes.io/service-name%3Dweb"))["items"]
            return [e["conditions"]["ready"] for s in items for e in s["endpoints"]] == [True]

        await converge(ready_endpoint, what="a slice with the pod's ready endpoint")
        await ok(served, "DELETE", "/api/v1/namespaces/default/services/web")

        async def none_left() -> bool:
            return (await ok(served, "GET", slices))["items"] == []

        await converge(none_left, what="the garbage collector to remove the slices")
