"""PATCH of every type and the scale subresource, through the API server: what each
answers, and that bad input is refused naming the field and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.conftest import Served
from tests.unit.test_rest import call, ok
from tests.unit.test_rest_lifecycle import CMS, DEPLOY, cm, deployment

pytestmark = pytest.mark.unit
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
STRATEGIC = {"Content-Type": "application/strategic-merge-patch+json"}
MERGE = {"Content-Type": "application/merge-patch+json"}
RS = "/apis/apps/v1/namespaces/default/replicasets"


async def unchanged(served: Served, path: str, before: dict[str, Any]) -> None:
    after = await ok(served, "GET", path)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_json_patch_applies_and_a_failed_test_is_422(served: Served) -> None:
    await ok(served, "POST", CMS, cm("j", a="1"))
    out = await ok(served, "PATCH", CMS + "/j", [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "2"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}], headers=JSON_PATCH)
    assert out["data"] == {"a": "2"} and out["metadata"]["labels"] == {"x": "y"}
    status, body = await call(served, "PATCH", CMS + "/j", [
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "remove", "path": "/data/a"}], headers=JSON_PATCH)
    assert status == 422 and 'testing value "/data/a" failed' in body["message"]
    await unchanged(served, CMS + "/j", out)


@pytest.mark.parametrize(("headers", "body", "status", "words"), [
    (JSON_PATCH, {"op": "add"}, 400, "must be a list"),
    (JSON_PATCH, [{"op": "add", "path": "/data/b"}], 400, "[0].value: Required value"),
    (JSON_PATCH, [{"op": "remove", "path": "/data/nope"}], 422, '"/data/nope" does not exist'),
    (JSON_PATCH, [{"op": "replace", "path": "/data/a", "value": 5}], 422, "data[a]"),
    (JSON_PATCH, [{"op": "add", "path": "/bogus", "value": 1}], 400,
     'strict decoding error: unknown field "bogus"'),
    (STRATEGIC, [{"data": {}}], 400, "must be a JSON object"),
    (STRATEGIC, {"data": {"$frob": "x"}}, 400, "data.$frob: unknown patch directive"),
    (MERGE, [1], 400, "must be a JSON object"),
    (MERGE, {"data": "text"}, 422, "data"),
    ({"Content-Type": "application/apply-patch+yaml"}, {"data": {}}, 415,
     "application/strategic-merge-patch+json"),
])
async def test_bad_patches_name_the_problem_and_change_nothing(
        served: Served, headers: dict[str, str], body: Any, status: int, words: str) -> None:
    before = await ok(served, "POST", CMS, cm("b", a="1"))
    got, answer = await call(served, "PATCH", CMS + "/b?fieldValidation=Strict", body,
                             headers=headers)
    assert got == status, answer
    assert words in answer["message"], answer["message"]
    await unchanged(served, CMS + "/b", before)


async def test_a_json_patchs_unknown_fields_are_dropped_with_a_warning(
        served: Served) -> None:
    await ok(served, "POST", CMS, cm("w", a="1"))
    async with served.client.patch(CMS + "/w", json=[
            {"op": "add", "path": "/bogus", "value": 1},
            {"op": "add", "path": "/data/b", "value": "2"}],
            headers={**served.auth, **JSON_PATCH}) as resp:
        assert resp.status == 200
        out = await resp.json()
        assert "bogus" in resp.headers.get("Warning", "")
    assert "bogus" not in out and out["data"] == {"a": "1", "b": "2"}


async def test_strategic_patch_of_a_deployment_merges_containers(served: Served) -> None:
    dep = deployment("s")
    dep["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "s:1"})
    await ok(served, "POST", DEPLOY, dep)
    out = await ok(served, "PATCH", DEPLOY + "/s?fieldValidation=Strict", {"spec": {
        "template": {"spec": {
            "$setElementOrder/containers": [{"name": "c"}, {"name": "side"}],
            "containers": [{"name": "side", "image": "s:2"}]}}}}, headers=STRATEGIC)
    images = {c["name"]: c["image"] for c in out["spec"]["template"]["spec"]["containers"]}
    assert images == {"c": "busybox:1", "side": "s:2"}
    assert out["metadata"]["generation"] == 2
    status, body = await call(served, "PATCH", DEPLOY + "/s?fieldValidation=Strict",
                              {"spec": {"bogus": 1}}, headers=STRATEGIC)
    assert status == 400 and 'unknown field "spec.bogus"' in body["message"]


async def test_scale_get_put_and_patch(served: Served) -> None:
    await ok(served, "POST", DEPLOY, deployment("web"))
    sc = await ok(served, "GET", DEPLOY + "/web/scale")
    assert sc["kind"] == "Scale" and sc["apiVersion"] == "autoscaling/v1"
    assert sc["spec"] == {"replicas": 1}
    assert sc["status"]["selector"] == "app=web"
    sc["spec"]["replicas"] = 3
    put = await ok(served, "PUT", DEPLOY + "/web/scale", sc)
    assert put["spec"]["replicas"] == 3
    assert (await ok(served, "GET", DEPLOY + "/web"))["spec"]["replicas"] == 3
    for headers, body, want in [(MERGE, {"spec": {"replicas": 5}}, 5),
                                (STRATEGIC, {"spec": {"replicas": 4}}, 4),
                                (JSON_PATCH, [{"op": "replace", "path": "/spec/replicas",
                                               "value": 0}], 0)]:
        patched = await ok(served, "PATCH", DEPLOY + "/web/scale", body, headers=headers)
        assert patched["spec"]["replicas"] == want
    assert (await ok(served, "GET", DEPLOY + "/web"))["spec"]["replicas"] == 0
    # A stale resourceVersion in the Scale is a precondition: 409.
    status, _ = await call(served, "PUT", DEPLOY + "/web/scale", sc)
    assert status == 409


@pytest.mark.parametrize(("method", "body", "headers", "status", "words"), [
    ("PUT", {"spec": {"replicas": -1}}, {}, 422, "spec.replicas"),
    ("PUT", {"spec": {"replicas": "3"}}, {}, 422, "spec.replicas: Invalid value: '3'"),
    ("PUT", {"kind": "Deployment", "spec": {"replicas": 1}}, {}, 422, "must be autoscaling/v1"),
    ("PATCH", {"spec": {"replicas": True}}, MERGE, 422, "spec.replicas"),
    ("PATCH", [{"op": "remove", "path": "/spec/nope"}], JSON_PATCH, 422, "does not exist"),
    ("PUT", {"metadata": {"name": "other"}, "spec": {"replicas": 1}}, {}, 400,
     "metadata.name: the name of the object (other) does not match"),
    ("PATCH", {"metadata": {"name": "other"}}, MERGE, 400, "metadata.name"),
    ("DELETE", None, {}, 405, "GET, PUT, PATCH only"),
])
async def test_bad_scales_are_refused_and_change_nothing(
        served: Served, method: str, body: Any, headers: dict[str, str], status: int,
        words: str) -> None:
    before = await ok(served, "POST", DEPLOY, deployment("bad"))
    got, answer = await call(served, method, DEPLOY + "/bad/scale", body, headers=headers)
    assert got == status, answer
    assert words in answer["message"], answer["message"]
    await unchanged(served, DEPLOY + "/bad", before)


async def test_scale_is_in_discovery_and_only_for_scalable_kinds(served: Served) -> None:
    apps = await ok(served, "GET", "/apis/apps/v1")
    scales = {r["name"]: r for r in apps["resources"] if r["name"].endswith("/scale")}
    assert set(scales) == {"deployments/scale", "replicasets/scale"}
    assert (scales["deployments/scale"]["group"], scales["deployments/scale"]["version"],
            scales["deployments/scale"]["kind"]) == ("autoscaling", "v1", "Scale")
    status, _ = await call(served, "GET", "/apis/apps/v1/namespaces/default/daemonsets/x/scale")
    assert status == 404


async def test_a_json_patch_can_test_the_resource_version(served: Served) -> None:
    """kubectl's and client-go's optimistic locking: `test` the resourceVersion first."""
    made = await ok(served, "POST", CMS, cm("rv", a="1"))
    rv = made["metadata"]["resourceVersion"]
    out = await ok(served, "PATCH", CMS + "/rv", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/data/a", "value": "2"}], headers=JSON_PATCH)
    assert out["data"] == {"a": "2"} and out["metadata"]["resourceVersion"] != rv
    status, body = await call(served, "PATCH", CMS + "/rv", [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "replace", "path": "/data/a", "value": "3"}], headers=JSON_PATCH)
    assert status == 422 and "resourceVersion" in body["message"]
    await unchanged(served, CMS + "/rv", out)
    # A patch that sets a stale resourceVersion is still a precondition: 409.
    status, body = await call(served, "PATCH", CMS + "/rv", [
        {"op": "replace", "path": "/metadata/resourceVersion", "value": rv}],
        headers=JSON_PATCH)
    assert status == 409, body


async def test_a_json_patch_of_too_many_operations_is_413(served: Served) -> None:
    before = await ok(served, "POST", CMS, cm("big", a="1"))
    status, body = await call(served, "PATCH", CMS + "/big",
                              [{"op": "test", "path": "/data/a", "value": "1"}] * 10_001,
                              headers=JSON_PATCH)
    assert status == 413 and "maximum operations" in body["message"]
    doubling = [{"op": "copy", "from": "/data", "path": "/metadata/labels"}] + [
        {"op": "copy", "from": "/metadata", "path": f"/metadata/m{i}"} for i in range(40)]
    status, body = await call(served, "PATCH", CMS + "/big", doubling, headers=JSON_PATCH)
    assert status == 413 and "copying" in body["message"], body
    await unchanged(served, CMS + "/big", before)


def test_the_scale_selector_is_the_selectors_own_text() -> None:
    from raftkube.api import selectors
    from raftkube.apiserver import scale
    sel = {"matchLabels": {"app": "web"},
           "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]},
                                {"key": "x", "operator": "DoesNotExist"}]}
    assert scale.selector_text(sel) == str(selectors.selector_from_object(sel))
    assert scale.selector_text({"matchLabels": {"a": 1}}) == ""
