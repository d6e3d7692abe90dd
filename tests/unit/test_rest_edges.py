"""Edges of the object lifecycle found in review: namespaces and pods held by finalizers,
orphaning and foreground deletion with cycles, unknown fields, Service addresses under odd
or changing ports, a namespace delete racing address allocation, and `rk apply` (the real
client) against the real server."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from raftkube.api import kinds, yamltext
from raftkube.cli import apply, manifests
from raftkube.client import rest, transport
from tests.unit.conftest import Served
from tests.unit.loops import converge
from tests.unit.test_rest import call, ok
from tests.unit.test_rest_lifecycle import (
    CMS,
    DEPLOY,
    MERGE,
    NODE,
    PODS,
    SVCS,
    allocations,
    cm,
    deployment,
    pod,
    svc,
)

pytestmark = pytest.mark.unit
NS = "/api/v1/namespaces"
DEP = kinds.by_kind("apps/v1", "Deployment")


def manifest(obj: dict[str, Any]) -> manifests.Manifest:
    assert DEP is not None
    return manifests.Manifest("m.yaml", 1, None, obj, DEP, "default")


async def test_a_namespace_held_by_a_finalizer_empties_when_released(
        collected: Served) -> None:
    served = collected
    await ok(served, "POST", NS, {"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": "x", "finalizers": ["example.com/h"]}})
    await ok(served, "POST", NS + "/x/configmaps", cm("c", a="1"))
    await ok(served, "POST", NS + "/x/services", svc("s", node_port=30200))
    await ok(served, "DELETE", NS + "/x")

    async def finalized() -> bool:
        ns = await ok(served, "GET", NS + "/x")
        return "kubernetes" not in (ns.get("spec") or {}).get("finalizers", [])

    await converge(finalized, what="the namespace controller to empty the namespace")
    assert (await call(served, "GET", NS + "/x/configmaps/c"))[0] == 404, "cm leaked"
    assert not [v for v in allocations(served).values() if v.startswith(b"x/")], "addr leaked"
    ns = await ok(served, "GET", NS + "/x")  # still held by its own finalizer
    removed = {c["type"]: c for c in ns["status"]["conditions"]}["NamespaceContentRemaining"]
    assert (removed["status"], removed["reason"]) == ("False", "ContentRemoved")
    await ok(served, "PATCH", NS + "/x", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert (await call(served, "GET", NS + "/x"))[0] == 404


async def test_a_held_pod_goes_once_its_node_deleted_it_and_the_finalizer_goes(
        served: Served) -> None:
    p = pod("p")
    p["metadata"]["finalizers"] = ["example.com/h"]
    await ok(served, "POST", PODS, p)
    await ok(served, "DELETE", PODS + "/p")  # graceful: 30s
    await ok(served, "DELETE", PODS + "/p?gracePeriodSeconds=0", headers=NODE, auth=False)
    got = await ok(served, "GET", PODS + "/p")
    await ok(served, "PATCH", PODS + "/p", {"metadata": {"finalizers": None}}, headers=MERGE)
    status, got2 = await call(served, "GET", PODS + "/p")
    assert status == 404, (got["metadata"], got2["metadata"])


async def test_orphan_deletion_orphans_even_while_another_finalizer_holds_the_owner(
        collected: Served) -> None:
    served = collected
    d = await ok(served, "POST", DEPLOY, deployment("d", finalizers=["example.com/h"]))
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
             "uid": d["metadata"]["uid"]}
    await ok(served, "POST", CMS, {**cm("child"), "metadata": {
        "name": "child", "ownerReferences": [owner]}})
    marked = await ok(served, "DELETE", DEPLOY + "/d?propagationPolicy=Orphan")
    assert marked["metadata"]["finalizers"] == ["example.com/h", "orphan"]

    async def orphaned() -> bool:
        d = await ok(served, "GET", DEPLOY + "/d")
        return d["metadata"]["finalizers"] == ["example.com/h"]

    await converge(orphaned, what="the collector to orphan the dependent")
    child = await ok(served, "GET", CMS + "/child")
    assert "ownerReferences" not in child["metadata"]
    status, refused = await call(served, "PATCH", DEPLOY + "/d", {"metadata": {
        "finalizers": ["example.com/h", "example.com/new"]}}, headers=MERGE)
    assert status == 422 and "no new finalizers can be added" in refused["message"], refused
    await ok(served, "PATCH", DEPLOY + "/d", {"metadata": {"finalizers": None}},
             headers=MERGE)  # the holder lets go of its own finalizer
    assert (await call(served, "GET", DEPLOY + "/d"))[0] == 404
    assert (await call(served, "GET", CMS + "/child"))[0] == 200


async def test_foreground_deletion_ends_on_a_cycle_of_blocking_owners(
        collected: Served) -> None:
    served = collected
    a = await ok(served, "POST", CMS, cm("a"))
    b = await ok(served, "POST", CMS, {**cm("b"), "metadata": {"name": "b", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": a["metadata"]["uid"],
         "blockOwnerDeletion": True}]}})
    await ok(served, "PATCH", CMS + "/a", {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": b["metadata"]["uid"],
         "blockOwnerDeletion": True}]}}, headers=MERGE)
    await ok(served, "DELETE", CMS + "/a?propagationPolicy=Foreground")

    async def both_gone() -> bool:
        return [(await call(served, "GET", CMS + f"/{n}"))[0] for n in "ab"] == [404, 404]

    await converge(both_gone, what="both owners of the blocking cycle to go")


async def test_unknown_fields_are_dropped_under_warn(served: Served) -> None:
    body = cm("c", a="1")
    body["bogus"] = 1
    await ok(served, "POST", CMS, body)
    got = await ok(served, "GET", CMS + "/c")
    assert "bogus" not in got, "Kubernetes drops unknown fields; raftkube stores them"


async def test_a_loadbalancer_turned_clusterip_frees_its_nodeports(served: Served) -> None:
    made = await ok(served, "POST", SVCS, svc("lb", node_port=30124, type="LoadBalancer"))
    changed = dict(made)
    changed["spec"] = {**made["spec"], "type": "ClusterIP"}
    status, out = await call(served, "PUT", SVCS + "/lb", changed)
    assert status == 200, out
    assert "nodePort" not in out["spec"]["ports"][0], out["spec"]
    assert b"/registry/ranges/nodeports/30124" not in allocations(served)


@pytest.mark.parametrize("port", [{"name": ["x"], "port": 80}, {"port": {"a": 1}},
                                  {"port": 80, "nodePort": {"a": 1}}])
async def test_service_put_with_odd_port_is_not_500(served: Served, port: dict[str, Any]) -> None:
    made = await ok(served, "POST", SVCS, svc("s"))
    body = {**made, "spec": {**made["spec"], "ports": [port]}}
    status, out = await call(served, "PUT", SVCS + "/s", body)
    assert status == 422, (status, out)


async def test_service_patch_to_clusterip_with_odd_nodeport_is_not_500(served: Served) -> None:
    await ok(served, "POST", SVCS, svc("s"))
    status, out = await call(served, "PATCH", SVCS + "/s", {"spec": {"type": "ClusterIP",
        "ports": [{"port": 80, "nodePort": [1]}]}}, headers=MERGE)
    assert status == 422, (status, out)


async def test_namespace_delete_frees_an_address_another_namespace_just_took(
        collected: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    served = collected
    for n in ("a", "b"):
        await ok(served, "POST", NS, {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": n}})
    made = await ok(served, "POST", NS + "/a/services", svc("s", clusterIP="10.96.0.50"))
    assert made["spec"]["clusterIP"] == "10.96.0.50"
    real = served.replica.range
    fired = False

    async def racing(req: dict[str, Any], **kw: Any) -> Any:
        nonlocal fired
        out = await real(req, **kw)
        if req.get("key") == b"/registry/core/services/a/" and not fired:
            fired = True  # after the namespace controller listed a's Services
            await ok(served, "DELETE", NS + "/a/services/s")
            await ok(served, "POST", NS + "/b/services", svc("t", clusterIP="10.96.0.50"))
        return out

    monkeypatch.setattr(served.replica, "range", racing)
    await ok(served, "DELETE", NS + "/a")

    async def gone() -> bool:
        return (await call(served, "GET", NS + "/a"))[0] == 404

    await converge(gone, what="namespace a to be emptied and finalized")
    monkeypatch.setattr(served.replica, "range", real)
    assert fired
    t = await ok(served, "GET", NS + "/b/services/t")
    assert t["spec"]["clusterIP"] == "10.96.0.50"
    assert b"/registry/ranges/clusterips/10.96.0.50" in allocations(served), \
        "b/t's ClusterIP was freed by a's namespace delete"

async def test_rk_apply_is_not_refused_for_a_field_someone_else_wrote(served: Served) -> None:
    tp = transport.Transport([str(served.client.make_url("")).rstrip("/")], served.token)
    client = rest.RestClient(tp)
    d = deployment("d")
    await apply.apply_one(client, manifest(copy.deepcopy(d)))
    # someone else (curl/kubectl default fieldValidation=Warn) adds a field to the container
    live = await ok(served, "GET", DEPLOY + "/d")
    live["spec"]["template"]["spec"]["containers"][0]["someNewField"] = "x"
    await ok(served, "PUT", DEPLOY + "/d", live)
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    outcome = await apply.apply_one(client, manifest(d))
    assert outcome == "configured"
    await tp.close()


def test_yaml_merge_key_override_is_not_a_duplicate() -> None:
    text = """
base: &base {x: 0}
a:
  m: &m
    <<: *base
    x: 1
b:
  <<: *m
"""
    docs = list(yamltext.load_all(text))
    assert docs[0]["a"]["m"]["x"] == 1


async def test_rk_apply_does_not_overwrite_a_write_that_landed_after_its_read(
        served: Served) -> None:
    url = str(served.client.make_url("")).rstrip("/")
    tp = transport.Transport([url], served.token)
    client = rest.RestClient(tp)
    other = rest.RestClient(tp)
    d = deployment("d")
    await apply.apply_one(client, manifest(copy.deepcopy(d)))
    real_get, raced = client.get, []

    async def get_then_someone_writes(*args: Any) -> dict[str, Any]:
        live = await real_get(*args)
        if not raced:  # between our read and our patch, `kubectl set env` lands
            raced.append(True)
            assert DEP is not None
            await other.patch(DEP, "default", "d", {"spec": {"template": {"spec": {"containers": [
                {**live["spec"]["template"]["spec"]["containers"][0],
                 "env": [{"name": "INJECTED", "value": "x"}]}]}}}})
        return live

    client.get = get_then_someone_writes  # type: ignore[method-assign]
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    assert await apply.apply_one(client, manifest(d)) == "configured"
    await tp.close()
    container = (await ok(served, "GET", DEPLOY + "/d"))["spec"]["template"]["spec"][
        "containers"][0]
    assert container["image"] == "busybox:2"
    assert container["env"] == [{"name": "INJECTED", "value": "x"}]
