"""What the API server itself does on delete, now that cascading is the controllers' job:
it marks (deletionTimestamp, the garbage collector's finalizer, a namespace Terminating)
and stores, and never looks for dependents. Tests without controllers running: what
the API promises on its own."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import Served
from tests.unit.test_rest import call, ok
from tests.unit.test_rest_lifecycle import CMS, MERGE, NODE, PODS, cm, pod

pytestmark = pytest.mark.unit
NS = "/api/v1/namespaces"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


def namespace(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, **meta}}


async def test_a_delete_never_touches_dependents(served: Served) -> None:
    owner = await ok(served, "POST", CMS, cm("owner"))
    await ok(served, "POST", CMS, {**cm("dep"), "metadata": {"name": "dep", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
         "uid": owner["metadata"]["uid"]}]}})
    await ok(served, "DELETE", CMS + "/owner")
    assert (await call(served, "GET", CMS + "/owner"))[0] == 404
    assert (await call(served, "GET", CMS + "/dep"))[0] == 200  # the collector's to delete


@pytest.mark.parametrize(("policy", "finalizers"), [
    ("Foreground", ["example.com/h", "foregroundDeletion"]),
    ("Orphan", ["example.com/h", "orphan"]),
])
async def test_a_policy_is_a_finalizer_and_a_later_background_delete_drops_it(
        served: Served, policy: str, finalizers: list[str]) -> None:
    await ok(served, "POST", CMS, {**cm("o"), "metadata": {"name": "o",
                                                            "finalizers": ["example.com/h"]}})
    marked = await ok(served, "DELETE", CMS + f"/o?propagationPolicy={policy}")
    assert marked["metadata"]["finalizers"] == finalizers
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 0
    again = await ok(served, "DELETE", CMS + "/o?propagationPolicy=Background")
    assert again["metadata"]["finalizers"] == ["example.com/h"]
    assert again["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]


async def test_foreground_marks_even_an_object_without_dependents(served: Served) -> None:
    await ok(served, "POST", CMS, cm("lone"))
    marked = await ok(served, "DELETE", CMS + "/lone?propagationPolicy=Foreground")
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    await ok(served, "PATCH", CMS + "/lone", {"metadata": {"finalizers": None}},
             headers=MERGE)  # what the garbage collector does
    assert (await call(served, "GET", CMS + "/lone"))[0] == 404


async def test_a_finished_or_unbound_pod_is_deleted_at_once(served: Served) -> None:
    await ok(served, "POST", PODS, pod("done"))
    done = await ok(served, "GET", PODS + "/done")
    done["status"] = {"phase": "Succeeded"}
    await ok(served, "PUT", PODS + "/done/status", done)
    await ok(served, "DELETE", PODS + "/done")
    assert (await call(served, "GET", PODS + "/done"))[0] == 404
    await ok(served, "POST", PODS, pod("unbound", node=""))
    await ok(served, "DELETE", PODS + "/unbound")
    assert (await call(served, "GET", PODS + "/unbound"))[0] == 404
    await ok(served, "POST", PODS, pod("running"))
    marked = await ok(served, "DELETE", PODS + "/running")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 30


async def test_no_finalizer_may_be_added_to_an_object_being_deleted(served: Served) -> None:
    await ok(served, "POST", CMS, {**cm("f"), "metadata": {"name": "f",
                                                            "finalizers": ["example.com/a"]}})
    await ok(served, "DELETE", CMS + "/f")
    status, out = await call(served, "PATCH", CMS + "/f", {"metadata": {
        "finalizers": ["example.com/a", "example.com/b"]}}, headers=MERGE)
    assert status == 422, out
    assert out["details"]["causes"] == [{
        "reason": "FieldValueForbidden", "field": "metadata.finalizers",
        "message": 'Forbidden: no new finalizers can be added if the object is being '
                   'deleted, found new finalizers []string{"example.com/b"}'}]
    await ok(served, "PATCH", CMS + "/f", {"metadata": {"finalizers": []}}, headers=MERGE)
    assert (await call(served, "GET", CMS + "/f"))[0] == 404


async def test_a_namespace_is_marked_and_refuses_new_content(served: Served) -> None:
    await ok(served, "POST", NS, namespace("t"))
    await ok(served, "POST", NS + "/t/configmaps", cm("before"))
    marked = await ok(served, "DELETE", NS + "/t")
    assert marked["status"]["phase"] == "Terminating"
    assert marked["spec"]["finalizers"] == ["kubernetes"]
    assert marked["metadata"]["deletionTimestamp"]
    status, out = await call(served, "POST", NS + "/t/configmaps", cm("after"))
    assert (status, out["reason"]) == (403, "Forbidden"), out
    assert out["details"]["causes"] == [{
        "reason": "NamespaceTerminating", "field": "metadata.namespace",
        "message": "namespace t is being terminated"}]
    status, out = await call(served, "POST", NS + "/t/configmaps?dryRun=All", cm("dry"))
    assert status == 403, out  # a dry run is refused as the real request is
    assert (await call(served, "GET", NS + "/t/configmaps/before"))[0] == 200
    assert (await call(served, "DELETE", NS + "/t/configmaps/before"))[0] == 200


async def test_spec_finalizers_change_only_through_finalize(served: Served) -> None:
    await ok(served, "POST", NS, namespace("f"))
    patched = await ok(served, "PATCH", NS + "/f", {"spec": {"finalizers": None}},
                       headers=MERGE)
    assert patched["spec"]["finalizers"] == ["kubernetes"]  # ignored, as in Kubernetes
    await ok(served, "DELETE", NS + "/f")
    held = await ok(served, "GET", NS + "/f")
    status, out = await call(served, "PUT", NS + "/f/finalize", {
        **held, "spec": {"finalizers": []}}, headers=NODE, auth=False)
    assert status == 403, out  # a node may not finalize a namespace
    await ok(served, "PUT", NS + "/f/finalize", {**held, "spec": {"finalizers": []}})
    assert (await call(served, "GET", NS + "/f"))[0] == 404  # nothing holds it any more


async def test_finalize_of_a_live_namespace_keeps_it(served: Served) -> None:
    made = await ok(served, "POST", NS, namespace("live"))
    out = await ok(served, "PUT", NS + "/live/finalize", {**made, "spec": {"finalizers": []}})
    assert "finalizers" not in out["spec"]
    assert (await ok(served, "GET", NS + "/live"))["status"]["phase"] == "Active"
    status, _ = await call(served, "PUT", CMS + "/x/finalize", cm("x"))
    assert status == 404  # finalize is a subresource of namespaces only


async def test_a_namespace_nothing_holds_goes_at_once(served: Served) -> None:
    made = await ok(served, "POST", NS, namespace("bare"))
    await ok(served, "PUT", NS + "/bare/finalize", {**made, "spec": {"finalizers": []}})
    await ok(served, "DELETE", NS + "/bare")
    assert (await call(served, "GET", NS + "/bare"))[0] == 404


async def test_a_namespace_held_by_its_own_finalizer_waits_for_it(served: Served) -> None:
    await ok(served, "POST", NS, namespace("h", finalizers=["example.com/h"]))
    marked = await ok(served, "DELETE", NS + "/h")
    await ok(served, "PUT", NS + "/h/finalize", {**marked, "spec": {"finalizers": []}})
    assert (await ok(served, "GET", NS + "/h"))["metadata"]["finalizers"] == ["example.com/h"]
    await ok(served, "PATCH", NS + "/h", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert (await call(served, "GET", NS + "/h"))[0] == 404


async def test_endpointslices_are_served_validated_and_readable_by_nodes(
        served: Served) -> None:
    body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.1.0.5"], "nodeName": "n1",
                           "conditions": {"ready": True, "serving": True,
                                          "terminating": False},
                           "targetRef": {"kind": "Pod", "name": "p", "namespace": "default"}}],
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}
    made = await ok(served, "POST", SLICES + "?fieldValidation=Strict", body)
    assert made["metadata"]["generation"] == 1
    listed = await ok(served, "GET", SLICES + "?labelSelector=kubernetes.io/service-name%3Dweb",
                      headers=NODE, auth=False)
    assert [s["metadata"]["name"] for s in listed["items"]] == ["web-1"]
    status, _ = await call(served, "DELETE", SLICES + "/web-1", headers=NODE, auth=False)
    assert status == 403  # read only
    bad = {**body, "metadata": {"name": "bad"}, "endpoints": [{"addresses": ["fe80::1"]}]}
    status, out = await call(served, "POST", SLICES, bad)
    assert status == 422 and out["details"]["causes"][0]["field"] == \
        "endpoints[0].addresses[0]", out
    changed = {**made, "addressType": "IPv6", "endpoints": []}
    status, out = await call(served, "PUT", SLICES + "/web-1", changed)
    assert status == 422 and "addressType" in out["message"], out
