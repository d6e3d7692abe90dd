"""The REST layer's object lifecycle where Kubernetes' rules are subtle: graceful pod
deletion, finalizers and cascading (the API marks, the garbage collector and namespace
controller converge), preconditions, Event leases, Service addresses, a node's rights to
Secrets, and bookmarks that never run ahead of the events sent."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from tests.unit.conftest import NODE_TOKEN, Served
from tests.unit.loops import converge
from tests.unit.test_rest import call, ok, revision

pytestmark = pytest.mark.unit

PODS = "/api/v1/namespaces/default/pods"
SVCS = "/api/v1/namespaces/default/services"
CMS = "/api/v1/namespaces/default/configmaps"
SECRETS = "/api/v1/namespaces/default/secrets"
EVENTS = "/api/v1/namespaces/default/events"
DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
NODE = {"Authorization": f"Bearer {NODE_TOKEN}"}
MERGE = {"Content-Type": "application/merge-patch+json"}


def deployment(name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}, **meta},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "containers": [{"name": "c", "image": "busybox:1"}]}}}}


def pod(name: str, node: str = "n1", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}], **spec}}


def svc(name: str, node_port: int | None = None, **spec: Any) -> dict[str, Any]:
    port: dict[str, Any] = {"port": 80, "targetPort": 8080}
    if node_port:
        port["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [port], **spec}}


def cm(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def event(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Started", "message": "started", "type": "Normal"}


async def test_status_write_on_terminating_pod_does_not_delete_it(served: Served) -> None:
    await ok(served, "POST", PODS, pod("p"))
    marked = await ok(served, "DELETE", PODS + "/p")  # graceful: 30 s
    assert marked["metadata"]["deletionTimestamp"]
    # The agent reports the pod is still shutting down.
    await ok(served, "PUT", PODS + "/p/status", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "status": {"phase": "Running"}}, headers=NODE, auth=False)
    status, _ = await call(served, "GET", PODS + "/p")
    assert status == 200, "pod vanished before its grace period / final delete"


async def test_node_token_cannot_read_arbitrary_secrets(served: Served) -> None:
    await ok(served, "POST", "/api/v1/namespaces/raftkube-system/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "admin-creds"},
        "data": {"k": "c2VjcmV0"}})
    status, _ = await call(served, "GET", "/api/v1/namespaces/raftkube-system/secrets/admin-creds",
                           headers=NODE, auth=False)
    assert status == 403
    status, _ = await call(served, "GET", "/api/v1/secrets", headers=NODE, auth=False)
    assert status == 403


async def test_merge_patch_resource_version_is_a_precondition(served: Served) -> None:
    made = await ok(served, "POST", CMS, cm("c", a="1"))
    await ok(served, "PATCH", CMS + "/c", {"data": {"a": "2"}}, headers=MERGE)
    status, out = await call(served, "PATCH", CMS + "/c", {
        "metadata": {"resourceVersion": made["metadata"]["resourceVersion"]},
        "data": {"a": "3"}}, headers=MERGE)
    assert status == 409, (status, out)


async def test_update_of_event_keeps_its_expiry_lease(served: Served) -> None:
    await ok(served, "POST", EVENTS, event("e1"))
    await ok(served, "PATCH", EVENTS + "/e1", {"count": 2}, headers=MERGE)
    async with asyncio.timeout(10):  # event_ttl=2 in the fixture
        while (await call(served, "GET", EVENTS + "/e1"))[0] != 404:
            await asyncio.sleep(0.2)


async def test_oversized_update_is_413_not_500(served: Served) -> None:
    await ok(served, "POST", DEPLOY, deployment("web"))
    d = await ok(served, "GET", DEPLOY + "/web")
    d["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": f"V{i}", "value": "x" * 500_000} for i in range(4)]
    status, out = await call(served, "PUT", DEPLOY + "/web", d)
    assert status == 413, (status, out)


async def test_service_put_that_keeps_addresses_does_not_bump_generation(served: Served) -> None:
    a = await ok(served, "POST", SVCS, svc("a"))
    fresh = svc("a")
    fresh["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"]
    kept = await ok(served, "PUT", SVCS + "/a", fresh)
    assert kept["metadata"]["generation"] == 1, kept["metadata"]
    assert kept["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"]


async def test_dry_run_event_writes_nothing(served: Served) -> None:
    with served.replica.lock:
        leases = len(served.replica.state.leases)
    await ok(served, "POST", EVENTS + "?dryRun=All", event("e1"))
    with served.replica.lock:
        assert len(served.replica.state.leases) == leases


async def test_requested_cluster_ip_taken_is_invalid_not_conflict(served: Served) -> None:
    await ok(served, "POST", SVCS, svc("a", clusterIP="10.96.5.5"))
    status, out = await call(served, "POST", SVCS, svc("b", clusterIP="10.96.5.5"))
    assert status == 422, (status, out)


async def test_cluster_ip_outside_range_is_refused(served: Served) -> None:
    status, out = await call(served, "POST", SVCS, svc("b", clusterIP="192.168.1.1"))
    assert status == 422, (status, out)


async def test_bookmark_never_runs_ahead_of_delivered_events(served: Served) -> None:
    r = served.replica
    loop = asyncio.get_running_loop()
    real = r._deliver
    start = revision(served)
    resp = await served.client.get(
        f"{CMS}?watch=true&allowWatchBookmarks=true&resourceVersion={start}", headers=served.auth)
    # Simulate a slow loop tick: the applied write reaches the hub 0.6 s after the state.
    r._deliver = lambda *a: loop.call_later(0.6, real, *a)  # type: ignore[method-assign]
    try:
        task = asyncio.ensure_future(ok(served, "POST", CMS, cm("late")))
        bookmark_rv = None
        async with asyncio.timeout(5):
            while True:
                line = json.loads(await resp.content.readline())
                if line["type"] == "BOOKMARK":
                    bookmark_rv = int(line["object"]["metadata"]["resourceVersion"])
                elif line["type"] == "ADDED":
                    rv = int(line["object"]["metadata"]["resourceVersion"])
                    assert bookmark_rv is None or rv > bookmark_rv, (
                        f"BOOKMARK {bookmark_rv} sent before the event at {rv}: a client "
                        "resuming from the bookmark misses it")
                    break
        await task
    finally:
        r._deliver = real  # type: ignore[method-assign]
        resp.close()


async def test_namespace_delete_racing_service_creates_frees_all_addresses(
        collected: Served) -> None:
    served = collected
    await ok(served, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": "race"}})
    path = "/api/v1/namespaces/race/services"
    for i in range(5):
        await ok(served, "POST", path, svc(f"pre{i}"))

    async def creates() -> None:
        for i in range(40):
            await call(served, "POST", path, svc(f"s{i}"))

    _, (del_status, _) = await asyncio.gather(
        creates(), call(served, "DELETE", "/api/v1/namespaces/race"))
    assert del_status == 200, del_status  # a namespace delete only marks: it never conflicts

    async def gone() -> bool:
        return (await call(served, "GET", "/api/v1/namespaces/race"))[0] == 404

    await converge(gone, what="the namespace to be emptied and finalized")
    leaked = [v for v in allocations(served).values() if v.startswith(b"race/")]
    assert not leaked, f"{len(leaked)} allocations of deleted services leaked: {leaked[:5]}"


async def test_cascade_happens_when_last_finalizer_is_removed(collected: Served) -> None:
    served = collected
    d = await ok(served, "POST", DEPLOY, deployment("d", finalizers=["example.com/hold"]))
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
             "uid": d["metadata"]["uid"]}
    await ok(served, "POST", CMS, {**cm("child"), "metadata": {
        "name": "child", "ownerReferences": [owner]}})
    await ok(served, "DELETE", DEPLOY + "/d")  # Background; held by the finalizer
    assert (await ok(served, "GET", CMS + "/child"))["metadata"]["ownerReferences"]
    await ok(served, "PATCH", DEPLOY + "/d", {"metadata": {"finalizers": None}}, headers=MERGE)
    assert (await call(served, "GET", DEPLOY + "/d"))[0] == 404

    async def child_gone() -> bool:
        return (await call(served, "GET", CMS + "/child"))[0] == 404

    await converge(child_gone, what="the dependent of a deleted owner to be collected")


async def test_foreground_keeps_owner_until_dependents_are_gone(collected: Served) -> None:
    served = collected
    d = await ok(served, "POST", DEPLOY, deployment("d"))
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d",
             "uid": d["metadata"]["uid"], "blockOwnerDeletion": True}
    await ok(served, "POST", CMS, {**cm("child"), "metadata": {
        "name": "child", "finalizers": ["example.com/hold"], "ownerReferences": [owner]}})
    marked = await ok(served, "DELETE", DEPLOY + "/d?propagationPolicy=Foreground")
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert marked["metadata"]["deletionTimestamp"]

    async def child_marked() -> bool:
        child = await ok(served, "GET", CMS + "/child")
        return bool(child["metadata"].get("deletionTimestamp"))

    await converge(child_marked, what="the collector to delete the dependent")
    got = await ok(served, "GET", DEPLOY + "/d")  # held: its dependent blocks it
    assert "foregroundDeletion" in got["metadata"]["finalizers"]
    await ok(served, "PATCH", CMS + "/child", {"metadata": {"finalizers": None}},
             headers=MERGE)
    assert (await call(served, "GET", CMS + "/child"))[0] == 404

    async def owner_gone() -> bool:
        return (await call(served, "GET", DEPLOY + "/d"))[0] == 404

    await converge(owner_gone, what="the owner to follow its last blocking dependent")


async def test_continue_token_with_future_revision_is_400_not_500(served: Served) -> None:
    raw = json.dumps({"start": base64.b64encode(
        b"/registry/core/configmaps/default/").decode(), "rv": 99999})
    token = base64.urlsafe_b64encode(raw.encode()).decode()
    status, out = await call(served, "GET", CMS + "?limit=1&continue=" + token)
    assert status in (400, 410), (status, out)


async def test_dry_run_delete_of_system_namespace_answers_as_real_delete(served: Served) -> None:
    status, _ = await call(served, "DELETE", "/api/v1/namespaces/default?dryRun=All")
    assert status == 403


async def test_a_terminating_pod_goes_when_its_node_deletes_it_with_grace_0(
        served: Served) -> None:
    await ok(served, "POST", PODS, pod("p"))
    first = await ok(served, "DELETE", PODS + "/p?gracePeriodSeconds=60")
    assert first["metadata"]["deletionGracePeriodSeconds"] == 60
    shorter = await ok(served, "DELETE", PODS + "/p?gracePeriodSeconds=10")
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 10
    assert shorter["metadata"]["deletionTimestamp"] < first["metadata"]["deletionTimestamp"]
    longer = await ok(served, "DELETE", PODS + "/p?gracePeriodSeconds=600")
    assert longer["metadata"]["deletionGracePeriodSeconds"] == 10  # never lengthened
    await ok(served, "DELETE", PODS + "/p?gracePeriodSeconds=0", headers=NODE, auth=False)
    assert (await call(served, "GET", PODS + "/p"))[0] == 404


async def test_a_node_reads_the_secrets_and_configmaps_its_pods_use(served: Served) -> None:
    await ok(served, "POST", SECRETS, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "db"}, "data": {"k": "eA=="}})
    await ok(served, "POST", CMS, cm("conf", a="1"))
    await ok(served, "POST", CMS, cm("other", a="1"))
    status, _ = await call(served, "GET", SECRETS + "/db", headers=NODE, auth=False)
    assert status == 403  # no pod of this node refers to it yet
    await ok(served, "POST", PODS, pod("p", node="n1", volumes=[
        {"name": "s", "secret": {"secretName": "db"}}], containers=[
        {"name": "c", "image": "i", "envFrom": [{"configMapRef": {"name": "conf"}}]}]))
    assert (await call(served, "GET", SECRETS + "/db", headers=NODE, auth=False))[0] == 200
    assert (await call(served, "GET", CMS + "/conf", headers=NODE, auth=False))[0] == 200
    assert (await call(served, "GET", CMS + "/other", headers=NODE, auth=False))[0] == 403
    assert (await call(served, "GET", CMS, headers=NODE, auth=False))[0] == 403


async def test_a_grace_period_of_an_int64_is_a_deletion_at_the_end_of_time(
        served: Served) -> None:
    """Valid input (an int64), so not a 500: the deadline is the last second RFC 3339
    can write."""
    await ok(served, "POST", PODS, pod("p"))
    marked = await ok(served, "DELETE", PODS + f"/p?gracePeriodSeconds={2**63 - 1}")
    assert marked["metadata"]["deletionTimestamp"] == "9999-12-31T23:59:59Z"
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 2**63 - 1


async def test_a_node_asking_for_a_secret_with_no_namespace_is_forbidden(
        served: Served) -> None:
    """Authorization comes before lookup, as in Kubernetes: without a namespace no pod
    can refer to the Secret, so a node is refused (403) even where its pods use one of
    that name; the admin is told there is no such object (404)."""
    await ok(served, "POST", SECRETS, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "db"}, "data": {"k": "eA=="}})
    await ok(served, "POST", PODS, pod("p", node="n1", volumes=[
        {"name": "s", "secret": {"secretName": "db"}}]))
    assert (await call(served, "GET", SECRETS + "/db", headers=NODE, auth=False))[0] == 200
    for path in ("/api/v1/secrets/db", "/api/v1/configmaps/db"):
        status, out = await call(served, "GET", path, headers=NODE, auth=False)
        assert (status, out["reason"]) == (403, "Forbidden"), out
        assert (await call(served, "GET", path))[0] == 404


async def test_a_nodeport_service_turned_clusterip_frees_its_ports(served: Served) -> None:
    made = await ok(served, "POST", SVCS, svc("a", node_port=30123))
    changed = dict(made)
    changed["spec"] = {**made["spec"], "type": "ClusterIP"}
    out = await ok(served, "PUT", SVCS + "/a", changed)
    assert "nodePort" not in out["spec"]["ports"][0]
    await ok(served, "POST", SVCS, svc("b", node_port=30123))  # the port is free again


async def test_status_is_a_subresource_only_of_kinds_that_have_one(served: Served) -> None:
    await ok(served, "POST", CMS, cm("c", a="1"))
    status, out = await call(served, "PUT", CMS + "/c/status", cm("c", a="2"))
    assert status == 404 and out["reason"] == "NotFound", out


async def test_delete_with_an_empty_body(served: Served) -> None:
    await ok(served, "POST", CMS, cm("c", a="1"))
    status, _ = await call(served, "DELETE", CMS + "/c", raw=b"",
                           headers={"Content-Type": "application/json"})
    assert status == 200


def allocations(s: Served) -> dict[bytes, bytes]:
    with s.replica.lock:
        res = s.replica.state.range({"key": b"/registry/ranges/",
                                     "range_end": b"/registry/ranges0"})
    return {kv["key"]: kv["value"] for kv in res.get("kvs") or []}


async def test_a_service_port_change_keeps_or_replaces_its_nodeport(served: Served) -> None:
    named = svc("named")
    named["spec"]["ports"][0]["name"] = "http"
    made = await ok(served, "POST", SVCS, named)
    node_port = made["spec"]["ports"][0]["nodePort"]
    named["spec"]["ports"][0]["port"] = 81  # same name, new number: the nodePort stays
    out = await ok(served, "PUT", SVCS + "/named", named)
    assert out["spec"]["ports"][0]["nodePort"] == node_port

    plain = await ok(served, "POST", SVCS, svc("plain"))
    old_port = plain["spec"]["ports"][0]["nodePort"]
    out = await ok(served, "PUT", SVCS + "/plain", svc("plain") | {"spec": {
        **svc("plain")["spec"], "ports": [{"port": 82, "targetPort": 8080}]}})
    new_port = out["spec"]["ports"][0]["nodePort"]  # an unnamed port is a new port
    assert new_port
    # The service holds exactly its new port: the old one (unless drawn again) is freed.
    held = {k for k, v in allocations(served).items()
            if v == b"default/plain" and k.startswith(b"/registry/ranges/nodeports/")}
    assert held == {f"/registry/ranges/nodeports/{new_port}".encode()}, (old_port, held)
    await ok(served, "DELETE", SVCS + "/plain")
    await ok(served, "DELETE", SVCS + "/named")
    assert not [v for v in allocations(served).values() if v.startswith(b"default/")]


async def test_foreground_deletion_ends_on_cycles_of_owners(collected: Served) -> None:
    served = collected
    a = await ok(served, "POST", CMS, cm("a"))
    b = await ok(served, "POST", CMS, {**cm("b"), "metadata": {"name": "b", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": a["metadata"]["uid"]}]}})
    await ok(served, "PATCH", CMS + "/a", {"metadata": {"ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": b["metadata"]["uid"]},
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": a["metadata"]["uid"]}]}},
        headers=MERGE)
    await ok(served, "DELETE", CMS + "/a?propagationPolicy=Foreground")

    async def both_gone() -> bool:
        return [(await call(served, "GET", CMS + f"/{n}"))[0] for n in "ab"] == [404, 404]

    await converge(both_gone, what="both objects of the cycle to go")


async def test_kinds_without_a_spec_have_no_generation(served: Served) -> None:
    made = await ok(served, "POST", CMS, cm("g", a="1"))
    assert "generation" not in made["metadata"]
    changed = await ok(served, "PATCH", CMS + "/g", {"data": {"a": "2"}}, headers=MERGE)
    assert "generation" not in changed["metadata"]
    assert "generation" in (await ok(served, "POST", PODS, pod("g")))["metadata"]
