"""`/openapi/v2` and `/openapi/v3`, generated from the schema the server validates with:
what kubectl reads (kinds by group-version-kind, the PATCH's fieldValidation parameter)
and the ETag that lets it keep its cache."""

from __future__ import annotations

import pytest

from raftkube.api import kinds
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
    assert spec["replicas"] == {"type": "integer", "format": "int64"}
    container = spec["template"]["properties"]["spec"]["properties"]["containers"]["items"]
    assert container["properties"]["image"] == {"type": "string"}
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
