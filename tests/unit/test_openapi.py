"""`/openapi/v2` and `/openapi/v3`, generated from the schema the server validates with:
what kubectl reads (kinds by group-version-kind, the PATCH's fieldValidation parameter)
and the ETag that lets it keep its cache."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from raftkube.api import fielddocs, kinds, schema
from raftkube.apiserver import openapi
from tests.unit.conftest import Served
from tests.unit.test_rest import call

pytestmark = pytest.mark.unit


async def get(served: Served, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with served.client.get(path, headers={**served.auth, **headers}) as resp:
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, await resp.read()


async def test_v3_lists_every_group_version_and_each_document_has_its_kinds(
        served: Served) -> None:
    status, index = await call(served, "GET", "/openapi/v3")
    assert status == 200
    assert set(index["paths"]) == {"api/v1", "apis/apps/v1", "apis/batch/v1",
                                   "apis/coordination.k8s.io/v1", "apis/discovery.k8s.io/v1"}
    url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1?hash=")
    status, doc = await call(served, "GET", url)
    assert status == 200 and doc["openapi"].startswith("3.")
    dep = doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    assert dep["x-kubernetes-group-version-kind"] == [
        {"group": "apps", "version": "v1", "kind": "Deployment"}]
    spec = dep["properties"]["spec"]["properties"]
    assert spec["replicas"] == {"type": "integer", "format": "int64",
                                "description": "The number of pods wanted. Default 1."}
    # Shared structures are components, referred to as Kubernetes does.
    schemas = doc["components"]["schemas"]
    assert spec["template"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.api.core.v1.PodTemplateSpec"}]
    pod_spec = schemas["io.k8s.api.core.v1.PodSpec"]["properties"]
    assert pod_spec["containers"]["items"] == {
        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}]}
    container = schemas["io.k8s.api.core.v1.Container"]
    assert container["properties"]["image"]["type"] == "string"
    # kubectl leaves field validation to the server when the PATCH names the parameter.
    item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    assert item["patch"]["x-kubernetes-group-version-kind"]["kind"] == "Deployment"
    assert any(p["name"] == "fieldValidation" and p["in"] == "query"
               for p in item["parameters"])


async def test_every_kind_is_described_in_v2_and_v3(served: Served) -> None:
    _, v2 = await call(served, "GET", "/openapi/v2")
    kinds_v2 = {gvk["kind"] for d in v2["definitions"].values()
                for gvk in d["x-kubernetes-group-version-kind"]}
    assert kinds_v2 == {k.kind for k in kinds.KINDS}
    assert v2["swagger"] == "2.0"
    status, _ = await call(served, "GET", "/openapi/v3/apis/nothing/v1")
    assert status == 404


async def test_etags_and_v2_protobuf_refused_so_clients_ask_for_json(served: Served) -> None:
    status, headers, body = await get(served, "/openapi/v3/api/v1")
    assert status == 200 and headers["etag"]
    again, _, empty = await get(served, "/openapi/v3/api/v1", **{"If-None-Match":
                                                                 headers["etag"]})
    assert again == 304 and empty == b""
    status, _, _ = await get(served, "/openapi/v2", Accept=(
        "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"))
    assert status == 406
    status, _, _ = await get(served, "/openapi/v2", Accept="application/json")
    assert status == 200
    assert (await call(served, "GET", "/openapi/v2", auth=False))[0] == 401


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or the component its `allOf: [{$ref}]` names."""
    if "allOf" in node:
        return dict(doc["components"]["schemas"][node["allOf"][0]["$ref"].rsplit("/", 1)[1]])
    return node


async def test_v3_describes_kinds_and_fields_and_every_ref_resolves(served: Served) -> None:
    """What `kubectl explain` shows: a kind's description, its fields' and their types'
    names; every `$ref` of a document names a component of the same document."""
    _, index = await call(served, "GET", "/openapi/v3")
    for entry in index["paths"].values():
        _, doc = await call(served, "GET", entry["serverRelativeURL"])
        refs = re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc))
        assert refs and set(refs) <= set(doc["components"]["schemas"])
    _, doc = await call(served, "GET", index["paths"]["api/v1"]["serverRelativeURL"])
    schemas = doc["components"]["schemas"]
    pod = schemas["io.k8s.api.core.v1.Pod"]
    assert pod["description"].startswith("A Pod is one or more containers")
    assert pod["properties"]["apiVersion"]["description"]
    assert pod["properties"]["metadata"]["description"].startswith("Standard object metadata")
    meta = resolve(doc, pod["properties"]["metadata"])
    assert meta["properties"]["labels"]["description"]
    ports = schemas["io.k8s.api.core.v1.Service"]["properties"]["spec"]["properties"]["ports"]
    target = ports["items"]["properties"]["targetPort"]
    assert target["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.util.intstr.IntOrString"}]
    assert "container port" in target["description"]
    assert resolve(doc, target)["x-kubernetes-int-or-string"] is True


async def test_v2_is_inline_with_the_same_descriptions(served: Served) -> None:
    _, v2 = await call(served, "GET", "/openapi/v2")
    assert "$ref" not in json.dumps(v2["definitions"])
    dep = v2["definitions"]["io.k8s.api.apps.v1.Deployment"]
    assert dep["description"] == fielddocs.kind("Deployment")
    containers = dep["properties"]["spec"]["properties"]["template"]["properties"]["spec"][
        "properties"]["containers"]
    assert containers["description"] == fielddocs.field("PodSpec", "containers")
    assert containers["items"]["properties"]["image"]["description"] == \
        fielddocs.field("Container", "image")
    target = v2["definitions"]["io.k8s.api.core.v1.Service"]["properties"]["spec"][
        "properties"]["ports"]["items"]["properties"]["targetPort"]
    assert target["x-kubernetes-int-or-string"] is True


def test_every_description_names_a_field_the_schema_has() -> None:
    """A description under a name the schema does not have would never be shown."""
    named = {name.rsplit(".", 1)[1]: s for s, name in openapi.NAMED}
    for structure, fields in fielddocs.FIELDS.items():
        root, *path = structure.split(".")
        node: Any = named.get(root) or schema.object_schema(root)
        for part in path:
            while isinstance(node, schema.Arr):
                node = node.items
            node = node.fields[part]
        while isinstance(node, schema.Arr):
            node = node.items
        assert isinstance(node, schema.Obj), structure
        assert set(fields) <= set(node.fields), (structure, set(fields) - set(node.fields))
    assert set(fielddocs.KINDS) == {k.kind for k in kinds.KINDS}
