"""Server-side printing: the meta.k8s.io Table that kubectl asks for, with Kubernetes'
columns per kind (the same `rk get` prints), for one object, a list and a watch."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from raftkube.api import kinds, printers
from tests.unit.conftest import Served
from tests.unit.test_rest import call, ok, read_events
from tests.unit.test_rest_lifecycle import CMS, PODS, cm, pod

pytestmark = pytest.mark.unit
# What kubectl 1.32 sends on every `get`.
KUBECTL = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,"
                     "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"}
BETA = {"Accept": "application/json;as=Table;v=v1beta1;g=meta.k8s.io"}


def names(table: dict[str, Any]) -> list[str]:
    return [c["name"] for c in table["columnDefinitions"]]


async def test_a_pod_list_as_a_table_has_kubernetes_columns_and_wide_ones(
        served: Served) -> None:
    await ok(served, "POST", PODS, pod("web", node="n1"))
    table = await ok(served, "GET", PODS, headers=KUBECTL)
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert names(table) == ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node",
                            "Nominated Node", "Readiness Gates"]
    assert [c["priority"] for c in table["columnDefinitions"]] == [0] * 5 + [1] * 4
    assert table["metadata"]["resourceVersion"]
    (row,) = table["rows"]
    assert row["cells"][:4] == ["web", "0/1", "Pending", "0"]
    assert row["cells"][6] == "n1"
    # The default includeObject=Metadata: what kubectl needs for NAMESPACE and labels.
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["object"]["metadata"]["namespace"] == "default"
    assert "spec" not in row["object"]


@pytest.mark.parametrize(("include", "has"), [("None", None), ("Object", "ConfigMap")])
async def test_include_object(served: Served, include: str, has: str | None) -> None:
    await ok(served, "POST", CMS, cm("c", a="1"))
    table = await ok(served, "GET", CMS + f"?includeObject={include}", headers=KUBECTL)
    (row,) = [r for r in table["rows"] if r["cells"][0] == "c"]
    assert row["cells"][1] == "1"
    if has is None:
        assert "object" not in row
    else:
        assert row["object"]["kind"] == has and row["object"]["data"] == {"a": "1"}


async def test_one_object_and_v1beta1(served: Served) -> None:
    await ok(served, "POST", CMS, cm("one"))
    table = await ok(served, "GET", CMS + "/one", headers=BETA)
    assert table["apiVersion"] == "meta.k8s.io/v1beta1"
    assert [r["cells"][0] for r in table["rows"]] == ["one"]


async def test_plain_json_is_unchanged_and_a_bad_include_object_is_named(
        served: Served) -> None:
    listed = await ok(served, "GET", CMS, headers={"Accept": "application/json"})
    assert listed["kind"] == "ConfigMapList"
    status, body = await call(served, "GET", CMS + "?includeObject=All", headers=KUBECTL)
    assert status == 400 and "includeObject" in body["message"]


async def test_a_watch_of_tables(served: Served) -> None:
    await ok(served, "POST", CMS, cm("first"))
    async with served.client.get(CMS + "?watch=true", headers={**served.auth, **KUBECTL}
                                 ) as resp:
        assert resp.status == 200
        (initial,) = await read_events(resp, 1)
        assert initial["type"] == "ADDED" and initial["object"]["kind"] == "Table"
        assert initial["object"]["rows"][0]["cells"][0] == "first"
        await ok(served, "POST", CMS, cm("second", a="1", b="2"))
        await ok(served, "DELETE", CMS + "/second")
        added, deleted = await read_events(resp, 2)
        assert added["type"] == "ADDED" and deleted["type"] == "DELETED"
        assert names(added["object"]) == ["Name", "Data", "Age"]
        assert added["object"]["rows"][0]["cells"][:2] == ["second", "2"]


def test_integer_columns_are_numbers_and_text_matches_rk_get() -> None:
    rs = kinds.by_plural("apps", "v1", "replicasets")
    assert rs is not None
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    obj = {"metadata": {"name": "r", "creationTimestamp": "2024-05-01T11:55:00Z"},
           "spec": {"replicas": 3}, "status": {"replicas": 2, "readyReplicas": 1}}
    table = printers.table_object(rs, [obj], now=now)
    assert table["rows"][0]["cells"][:5] == ["r", 3, 2, 1, "5m"]
    assert [c["type"] for c in table["columnDefinitions"]][:4] == ["string", "integer",
                                                                   "integer", "integer"]
    # rk get prints the same columns, upper-cased as kubectl does, the wide ones aside.
    text = printers.table([obj], rs, now=now)
    assert text.split("\n")[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
