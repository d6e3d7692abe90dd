"""Requests kubectl sends, answered as Kubernetes answers them (each found by running the
real kubectl against a cluster, `tests/cluster/test_kubectl_cluster.py`):

- `kubectl describe` finds an object's Events with a field selector on what they are
  about (`involvedObject.name=...,involvedObject.uid=...`); each kind selects on its own
  fields, and another kind's are refused by name.
- `kubectl get all` lists the kinds whose discovery entry has the category `all`.
- `kubectl diff` shows a dry-run PATCH's answer against the live object: the answer
  carries the live resourceVersion, which the write would replace.
- `kubectl drain` evicts pods through `pods/NAME/eviction` when discovery lists it.
- `kubectl delete` of a Deployment its controller is writing is no Conflict: a delete
  reads again when another wrote in between.
- `kubectl auth whoami`, `auth can-i` and `can-i --list`: self reviews, answered by
  the rules that admit the requests themselves.
- kubectl 1.32+ sends `create service|job` and the auth reviews as protobuf.
- `kubectl describe service` shows `clusterIPs`, `ipFamilies` and `ipFamilyPolicy`,
  which Kubernetes fills in: a Service here is single-stack IPv4, and what asks for more
  is refused naming the field.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from raftkube.api import kinds, selectors
from raftkube.apiserver import objects as ob
from raftkube.apiserver import rest
from raftkube.apiserver import status as stt
from tests.unit.conftest import NODE_TOKEN, Served
from tests.unit.test_rest import (
    CMS,
    DEPLOY,
    EVENTS,
    SVCS,
    call,
    configmap,
    deployment,
    ok,
)
from tests.unit.test_rest_lifecycle import PODS, pod

pytestmark = pytest.mark.unit

SECRETS = "/api/v1/namespaces/default/secrets"


def event(name: str, about: dict[str, Any], reason: str, *, source: str = "kubelet",
          kind: str = "Normal") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name},
            "involvedObject": about, "reason": reason, "message": reason, "type": kind,
            "source": {"component": source}, "reportingComponent": source}


def names(listed: dict[str, Any]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in listed["items"])


async def test_events_are_selected_by_what_they_are_about(served: Served) -> None:
    web = await ok(served, "POST", DEPLOY, deployment("web"))
    db = await ok(served, "POST", DEPLOY, deployment("db"))

    def about(d: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "Deployment", "apiVersion": "apps/v1", "namespace": "default",
                "name": d["metadata"]["name"], "uid": d["metadata"]["uid"]}

    await ok(served, "POST", EVENTS, event("e1", about(web), "ScalingReplicaSet"))
    await ok(served, "POST", EVENTS, event("e2", about(web), "Other", kind="Warning"))
    await ok(served, "POST", EVENTS, event("e3", about(db), "ScalingReplicaSet",
                                           source="scheduler"))
    # What `kubectl describe deployment web` asks for.
    wanted = (f"involvedObject.name=web,involvedObject.namespace=default,"
              f"involvedObject.kind=Deployment,involvedObject.uid={web['metadata']['uid']}")
    got = await ok(served, "GET", f"{EVENTS}?fieldSelector={quote(wanted)}&limit=500")
    assert names(got) == ["e1", "e2"]
    for selector, expected in (("reason=ScalingReplicaSet", ["e1", "e3"]),
                               ("type=Warning", ["e2"]), ("type!=Warning", ["e1", "e3"]),
                               ("source=scheduler", ["e3"]),
                               ("reportingComponent=kubelet", ["e1", "e2"]),
                               ("involvedObject.apiVersion=apps/v1", ["e1", "e2", "e3"])):
        got = await ok(served, "GET", f"{EVENTS}?fieldSelector={quote(selector)}")
        assert names(got) == expected, selector


async def test_each_kind_selects_on_its_own_fields(served: Served) -> None:
    await ok(served, "POST", SECRETS, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                                       "data": {"tls.crt": "", "tls.key": ""}})
    await ok(served, "POST", SECRETS, {"apiVersion": "v1", "kind": "Secret",
                                       "metadata": {"name": "plain"}})
    got = await ok(served, "GET", SECRETS + "?fieldSelector=" + quote("type=kubernetes.io/tls"))
    assert names(got) == ["tls"]
    await ok(served, "POST", CMS, configmap("c"))
    got = await ok(served, "GET", CMS + "?fieldSelector=metadata.name%3Dc")
    assert names(got) == ["c"]
    for path, field in ((CMS, "reason"), (CMS, "spec.nodeName"), (EVENTS, "status.phase")):
        status, out = await call(served, "GET", f"{path}?fieldSelector={field}%3Dx")
        assert status == 400 and f"field label not supported: {field}" in out["message"]


@pytest.mark.parametrize(("kind", "field", "allowed"), [
    ("Pod", "spec.nodeName", True), ("Pod", "status.podIP", True),
    ("Pod", "involvedObject.name", False), ("Event", "involvedObject.uid", True),
    ("Event", "source", True), ("Event", "spec.nodeName", False),
    ("ConfigMap", "metadata.namespace", True), ("ConfigMap", "status.phase", False),
    ("Secret", "type", True), ("Namespace", "status.phase", True),
    ("Deployment", "metadata.name", True), ("Deployment", "spec.replicas", False),
])
def test_selectable_fields(kind: str, field: str, allowed: bool) -> None:
    assert (field in selectors.selectable_fields(kind)) is allowed


def test_an_events_source_is_its_component() -> None:
    e = event("e", {}, "r", source="kubelet")
    assert selectors.field_value(e, "source") == "kubelet"
    assert selectors.parse_field_selector(
        "source=kubelet", allowed=selectors.selectable_fields("Event")).matches(e)


async def test_discovery_names_the_category_all_and_singular_names(served: Served) -> None:
    in_all = set()
    for path in ("/api/v1", "/apis/apps/v1", "/apis/batch/v1", "/apis/coordination.k8s.io/v1"):
        for r in (await ok(served, "GET", path))["resources"]:
            if "/" not in r["name"]:
                assert r["singularName"] == r["kind"].lower()
            if "all" in r.get("categories", []):
                in_all.add(r["name"])
    assert in_all == {"pods", "services", "deployments", "replicasets", "daemonsets", "jobs"}


async def test_a_dry_run_patch_answers_with_the_live_resource_version(served: Served) -> None:
    made = await ok(served, "POST", DEPLOY, deployment("web"))
    live = made["metadata"]["resourceVersion"]
    merge = {"Content-Type": "application/merge-patch+json"}
    dry = await ok(served, "PATCH", DEPLOY + "/web?dryRun=All", {"spec": {"replicas": 5}},
                   headers=merge)
    assert dry["spec"]["replicas"] == 5 and dry["metadata"]["generation"] == 2
    assert dry["metadata"]["resourceVersion"] == live
    body = {**made, "spec": {**made["spec"], "replicas": 4}}
    dry = await ok(served, "PUT", DEPLOY + "/web?dryRun=All", body)
    assert dry["metadata"]["resourceVersion"] == live
    stored = await ok(served, "GET", DEPLOY + "/web")
    assert stored["spec"]["replicas"] == 2 and stored["metadata"]["resourceVersion"] == live


def eviction_of(name: str, **options: Any) -> dict[str, Any]:
    """What `kubectl drain` posts."""
    return {"apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": None},
            "deleteOptions": options}


async def test_an_eviction_deletes_the_pod_as_its_delete_would(served: Served) -> None:
    v1 = await ok(served, "GET", "/api/v1")
    listed = [r for r in v1["resources"] if r["name"] == "pods/eviction"]
    assert listed == [{"name": "pods/eviction", "singularName": "", "namespaced": True,
                       "group": "policy", "version": "v1", "kind": "Eviction",
                       "verbs": ["create"]}]
    await ok(served, "POST", PODS, pod("unbound", node=""))
    status, out = await call(served, "POST", PODS + "/unbound/eviction", eviction_of("unbound"))
    assert status == 201 and out["status"] == "Success" and out["code"] == 201
    assert (await call(served, "GET", PODS + "/unbound"))[0] == 404
    # A bound pod gets its grace period, or the one the Eviction names.
    await ok(served, "POST", PODS, pod("bound"))
    await ok(served, "POST", PODS + "/bound/eviction?dryRun=All", eviction_of("bound"))
    assert "deletionTimestamp" not in (await ok(served, "GET", PODS + "/bound"))["metadata"]
    await ok(served, "POST", PODS + "/bound/eviction",
             eviction_of("bound", gracePeriodSeconds=7))
    marked = await ok(served, "GET", PODS + "/bound")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 7
    status, out = await call(served, "POST", PODS + "/gone/eviction", eviction_of("gone"))
    assert status == 404 and out["reason"] == "NotFound"


@pytest.mark.parametrize(("body", "field"), [
    ({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}},
     "metadata.name"),
    ({"apiVersion": "policy/v1", "kind": "Eviction",
      "metadata": {"name": "p", "namespace": "kube-system"}}, "metadata.namespace"),
    ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}, "Eviction"),
    ({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"},
      "deleteOptions": []}, "deleteOptions"),
    ({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"},
      "deleteOptions": {"gracePeriodSeconds": -1}}, "gracePeriodSeconds"),
])
async def test_a_bad_eviction_is_refused_naming_the_field_and_changes_nothing(
        served: Served, body: dict[str, Any], field: str) -> None:
    await ok(served, "POST", PODS, pod("p"))
    status, out = await call(served, "POST", PODS + "/p/eviction", body)
    assert status == 400 and field in out["message"], out
    assert "deletionTimestamp" not in (await ok(served, "GET", PODS + "/p"))["metadata"]


async def test_evictions_are_posted_only_and_nodes_evict_only_their_own_pods(
        served: Served) -> None:
    await ok(served, "POST", PODS, pod("mine", node="n1"))
    await ok(served, "POST", PODS, pod("theirs", node="n2"))
    status, _ = await call(served, "DELETE", PODS + "/mine/eviction")
    assert status == 405
    node = {"Authorization": f"Bearer {NODE_TOKEN}"}
    status, _ = await call(served, "POST", PODS + "/theirs/eviction", eviction_of("theirs"),
                           headers=node, auth=False)
    assert status == 403
    status, _ = await call(served, "POST", PODS + "/mine/eviction", eviction_of("mine"),
                           headers=node, auth=False)
    assert status == 201


def service(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}


async def test_a_service_is_single_stack_ipv4_with_its_cluster_ips(served: Served) -> None:
    made = (await ok(served, "POST", SVCS, service("web")))["spec"]
    assert made["clusterIPs"] == [made["clusterIP"]]
    assert made["ipFamilies"] == ["IPv4"] and made["ipFamilyPolicy"] == "SingleStack"
    # An address asked for as clusterIPs[0] is the clusterIP; a headless service's is None.
    given = (await ok(served, "POST", SVCS, service("given", clusterIPs=["10.96.7.7"])))
    assert given["spec"]["clusterIP"] == "10.96.7.7"
    assert given["spec"]["clusterIPs"] == ["10.96.7.7"]
    headless = (await ok(served, "POST", SVCS, service("headless", clusterIP="None")))["spec"]
    assert headless["clusterIPs"] == ["None"]
    # A replace that leaves them out keeps them, as it keeps the clusterIP.
    body = {**given, "spec": {"selector": {"app": "x"}, "ports": [{"port": 81}]}}
    replaced = await ok(served, "PUT", SVCS + "/given", body)
    assert replaced["spec"]["clusterIPs"] == ["10.96.7.7"]
    assert replaced["spec"]["clusterIP"] == "10.96.7.7"


@pytest.mark.parametrize(("spec", "field"), [
    ({"clusterIP": "10.96.7.8", "clusterIPs": ["10.96.7.9"]}, "spec.clusterIPs[0]"),
    ({"clusterIPs": ["10.96.7.8", "fd00::8"]}, "spec.clusterIPs[1]"),
    ({"clusterIPs": ["nope"]}, "spec.clusterIP"),
    ({"ipFamilyPolicy": "RequireDualStack"}, "spec.ipFamilyPolicy"),
    ({"ipFamilyPolicy": "Sometimes"}, "spec.ipFamilyPolicy"),
    ({"ipFamilies": ["IPv6"]}, "spec.ipFamilies[0]"),
    ({"ipFamilies": ["IPv4", "IPv4"]}, "spec.ipFamilies[1]"),
    ({"ipFamilies": ["IPv5"]}, "spec.ipFamilies[0]"),
])
async def test_more_than_single_stack_ipv4_is_refused_naming_the_field(
        served: Served, spec: dict[str, Any], field: str) -> None:
    status, out = await call(served, "POST", SVCS, service("bad", **spec))
    assert status == 422, out
    assert field in [c["field"] for c in out["details"]["causes"]], out
    assert (await call(served, "GET", SVCS + "/bad"))[0] == 404


SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
EPS = "/api/v1/namespaces/default/endpoints"


def endpoint_slice(name: str, service: str, ports: list[dict[str, Any]],
                   *endpoints: tuple[str, bool]) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/service-name": service, "app": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                     "uid": f"uid-{service}", "controller": True}]},
            "addressType": "IPv4", "ports": ports,
            "endpoints": [{"addresses": [ip], "nodeName": "n1",
                           "conditions": {"ready": ready}} for ip, ready in endpoints]}


async def test_endpoints_are_made_from_a_services_slices(served: Served) -> None:
    http = [{"name": "http", "port": 8080, "protocol": "TCP"}]
    await ok(served, "POST", SLICES, endpoint_slice("web-a", "web", http,
                                                    ("10.244.1.2", True), ("10.244.1.3", False)))
    await ok(served, "POST", SLICES, endpoint_slice("web-b", "web", http, ("10.244.2.2", True)))
    await ok(served, "POST", SLICES, endpoint_slice("db-a", "db", [], ))
    ep = await ok(served, "GET", EPS + "/web")
    assert ep["kind"] == "Endpoints" and ep["metadata"]["name"] == "web"
    assert ep["metadata"]["labels"] == {"app": "web"} and ep["metadata"]["uid"]
    assert ep["subsets"] == [{
        "addresses": [{"ip": "10.244.1.2", "nodeName": "n1"},
                      {"ip": "10.244.2.2", "nodeName": "n1"}],
        "notReadyAddresses": [{"ip": "10.244.1.3", "nodeName": "n1"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
    listed = await ok(served, "GET", EPS)
    assert listed["kind"] == "EndpointsList"
    assert [e["metadata"]["name"] for e in listed["items"]] == ["db", "web"]
    assert "subsets" not in listed["items"][0]
    assert [e["metadata"]["name"] for e in (await ok(
        served, "GET", "/api/v1/endpoints?labelSelector=app%3Dweb"))["items"]] == ["web"]
    table = await ok(served, "GET", EPS, headers={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Endpoints", "Age"]
    assert [r["cells"][:2] for r in table["rows"]] == [
        ["db", "<none>"], ["web", "10.244.1.2:8080,10.244.2.2:8080"]]
    status, out = await call(served, "GET", EPS + "/nothing")
    assert status == 404 and out["reason"] == "NotFound"
    # A name is a name, never a selector: no other Service's Endpoints, no 500.
    for bad in ("web,app=web", "web,!zzz", "web=x", "((", "a%20in%20(", "Web_x"):
        status, out = await call(served, "GET", EPS + "/" + bad)
        assert status == 404 and out["reason"] == "NotFound", (bad, out)


async def test_endpoints_leave_out_terminating_pods_and_ports_without_a_number(
        served: Served) -> None:
    es = endpoint_slice("api-a", "api", [{"name": "a", "protocol": "TCP"},
                                         {"name": "b", "port": 81, "protocol": "TCP"}],
                        ("10.244.1.5", True), ("10.244.1.6", False))
    es["endpoints"][1]["conditions"]["terminating"] = True
    await ok(served, "POST", SLICES, es)
    ep = await ok(served, "GET", EPS + "/api")
    assert ep["subsets"] == [{"addresses": [{"ip": "10.244.1.5", "nodeName": "n1"}],
                              "ports": [{"name": "b", "port": 81, "protocol": "TCP"}]}]


async def test_endpoints_are_read_only_and_in_discovery(served: Served) -> None:
    listed = [r for r in (await ok(served, "GET", "/api/v1"))["resources"]
              if r["name"] == "endpoints"]
    assert listed == [{"name": "endpoints", "singularName": "endpoints", "namespaced": True,
                       "kind": "Endpoints", "shortNames": ["ep"], "verbs": ["get", "list"]}]
    body = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "x"}}
    for method, path in (("POST", EPS), ("PUT", EPS + "/x"), ("DELETE", EPS + "/x"),
                         ("GET", EPS + "?watch=true")):
        status, out = await call(served, method, path, body if method != "GET" else None)
        assert status == 405 and "EndpointSlices" in out["message"], (method, out)
    node = {"Authorization": f"Bearer {NODE_TOKEN}"}
    assert (await call(served, "GET", EPS, headers=node, auth=False))[0] == 200


def test_endpoints_column_shows_three_then_how_many_more() -> None:
    from datetime import UTC, datetime

    from raftkube.api import printers

    ep = {"subsets": [{"addresses": [{"ip": f"10.0.0.{i}"} for i in range(1, 4)],
                       "ports": [{"port": 80}, {"port": 443}]}]}
    assert printers.endpoints_addresses(ep, datetime.now(UTC)) == \
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more..."
    assert printers.endpoints_addresses({}, datetime.now(UTC)) == "<none>"


async def test_a_delete_reads_again_when_another_writes_in_between(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """A controller's status write between a DELETE's read and its write is no Conflict
    (kubectl delete got one, from a Deployment's first status); a precondition is."""
    objects = ob.Objects(served.replica)
    created = await objects.create(kinds.DEPLOYMENT, "default", deployment("web"))
    commit = objects.commit
    commits = 0

    async def another_writes_first(req: dict[str, Any]) -> Any:
        nonlocal commits
        commits += 1
        if commits == 1:  # the status, written just before the delete's own commit
            await objects.patch(kinds.DEPLOYMENT, "default", "web",
                                {"status": {"replicas": 1}}, subresource="status")
        return await commit(req)

    monkeypatch.setattr(objects, "commit", another_writes_first)
    outcome = await objects.delete(kinds.DEPLOYMENT, "default", "web")
    assert outcome.gone and commits == 3  # its delete, the status, its delete again
    with pytest.raises(stt.ApiError) as refused:
        await objects.delete(kinds.DEPLOYMENT, "default", "web")
    assert refused.value.code == 404
    await objects.create(kinds.DEPLOYMENT, "default", deployment("web"))
    with pytest.raises(stt.ApiError) as refused:
        await objects.delete(kinds.DEPLOYMENT, "default", "web",
                             preconditions={"uid": created["metadata"]["uid"]})
    assert refused.value.code == 409 and "Precondition failed" in refused.value.message


async def test_a_put_without_resource_version_is_unconditional(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kubectl replace -f` of a manifest (no resourceVersion) while a controller writes
    the status: read again, not a Conflict. With a resourceVersion it is a precondition."""
    objects = ob.Objects(served.replica)
    await objects.create(kinds.DEPLOYMENT, "default", deployment("web"))
    commit = objects.commit
    commits = 0

    async def another_writes_first(req: dict[str, Any]) -> Any:
        nonlocal commits
        commits += 1
        if commits == 1:
            await objects.patch(kinds.DEPLOYMENT, "default", "web",
                                {"status": {"replicas": 1}}, subresource="status")
        return await commit(req)

    monkeypatch.setattr(objects, "commit", another_writes_first)
    replaced = await objects.update(kinds.DEPLOYMENT, "default", "web", deployment("web", 3))
    assert replaced["spec"]["replicas"] == 3 and replaced["status"] == {"replicas": 1}
    assert commits == 3
    stale = deployment("web", 4)
    stale["metadata"]["resourceVersion"] = replaced["metadata"]["resourceVersion"]
    await objects.patch(kinds.DEPLOYMENT, "default", "web", {"status": {"replicas": 2}},
                        subresource="status")
    with pytest.raises(stt.ApiError) as refused:
        await objects.update(kinds.DEPLOYMENT, "default", "web", stale)
    assert refused.value.code == 409
    assert (await objects.get(kinds.DEPLOYMENT, "default", "web")).obj["spec"]["replicas"] == 3
    # A saved manifest (resourceVersion removed, uid kept) never overwrites another
    # object that has the name now: the UID is a precondition, as in Kubernetes.
    saved = deployment("web", 5)
    saved["metadata"]["uid"] = "not-the-stored-one"
    with pytest.raises(stt.ApiError, match="the UID in the object") as other:
        await objects.update(kinds.DEPLOYMENT, "default", "web", saved)
    assert other.value.code == 409
    assert (await objects.get(kinds.DEPLOYMENT, "default", "web")).obj["spec"]["replicas"] == 3


AUTHZ = "/apis/authorization.k8s.io/v1"
NODE = {"Authorization": f"Bearer {NODE_TOKEN}"}


def access_review(verb: str, resource: str, *, group: str = "", name: str = "",
                  subresource: str = "", namespace: str = "default") -> dict[str, Any]:
    """What `kubectl auth can-i` posts."""
    return {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {"resourceAttributes": {
                "namespace": namespace, "verb": verb, "group": group, "resource": resource,
                "subresource": subresource, "name": name}},
            "status": {"allowed": False}}


async def can(served: Served, review: dict[str, Any], *, node: bool = False) -> bool:
    status, out = await call(served, "POST", AUTHZ + "/selfsubjectaccessreviews", review,
                             headers=NODE if node else None, auth=not node)
    assert status == 201 and out["kind"] == "SelfSubjectAccessReview", out
    assert out["spec"] == review["spec"]
    return bool(out["status"]["allowed"])


async def test_whoami(served: Served) -> None:
    body = {"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None}}
    path = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
    admin = await ok(served, "POST", path, body)
    assert admin["status"]["userInfo"] == {"username": "admin",
                                           "groups": ["system:masters", "system:authenticated"]}
    status, node = await call(served, "POST", path, body, headers=NODE, auth=False)
    assert status == 201 and node["status"]["userInfo"]["username"] == "system:node:n1"
    assert (await call(served, "POST", path, body, auth=False))[0] == 401


async def test_can_i_answers_by_the_rules_that_admit_requests(served: Served) -> None:
    assert await can(served, access_review("create", "pods"))
    assert await can(served, access_review("delete", "anything", group="example.com"))
    await ok(served, "POST", PODS, pod("mine", node="n1"))
    await ok(served, "POST", PODS, pod("theirs", node="n2"))
    for review, allowed in (
            (access_review("list", "pods"), True),
            (access_review("watch", "endpointslices", group="discovery.k8s.io"), True),
            (access_review("create", "events"), True),
            (access_review("create", "pods"), False),
            (access_review("delete", "pods", name="mine"), True),
            (access_review("delete", "pods", name="theirs"), False),
            # An eviction is decided as the pod's delete; Endpoints are read-only.
            (access_review("create", "pods", name="mine", subresource="eviction"), True),
            (access_review("create", "pods", name="theirs", subresource="eviction"), False),
            (access_review("watch", "endpoints"), False),
            (access_review("delete", "pods"), False),
            (access_review("update", "pods", name="mine", subresource="status"), True),
            (access_review("update", "nodes", name="n1", namespace=""), True),
            (access_review("update", "nodes", name="n2", namespace=""), False),
            (access_review("get", "secrets", name="s"), False),
            (access_review("list", "deployments", group="apps"), False),
            (access_review("get", "pods", subresource="nothing"), False)):
        assert await can(served, review, node=True) is allowed, review["spec"]
        # ... and the request itself is admitted or refused alike.
    assert (await call(served, "DELETE", PODS + "/theirs", headers=NODE, auth=False))[0] == 403
    assert (await call(served, "DELETE", PODS + "/mine", headers=NODE, auth=False))[0] == 200


async def test_can_i_list_and_discovery(served: Served) -> None:
    body = {"kind": "SelfSubjectRulesReview", "apiVersion": "authorization.k8s.io/v1",
            "spec": {"namespace": "default"}}
    admin = await ok(served, "POST", AUTHZ + "/selfsubjectrulesreviews", body)
    assert admin["status"]["resourceRules"] == [{"verbs": ["*"], "apiGroups": ["*"],
                                                 "resources": ["*"]}]
    status, node = await call(served, "POST", AUTHZ + "/selfsubjectrulesreviews", body,
                              headers=NODE, auth=False)
    assert status == 201 and node["status"]["incomplete"] is True
    readable = {r for rule in node["status"]["resourceRules"] if "list" in rule["verbs"]
                for r in rule["resources"]}
    assert readable == rest.NODE_READABLE
    groups = {g["name"] for g in (await ok(served, "GET", "/apis"))["groups"]}
    assert {"authorization.k8s.io", "authentication.k8s.io"} <= groups
    listed = await ok(served, "GET", AUTHZ)
    assert [r["name"] for r in listed["resources"]] == ["selfsubjectaccessreviews",
                                                         "selfsubjectrulesreviews"]


@pytest.mark.parametrize(("method", "path", "body", "code", "words"), [
    ("GET", AUTHZ + "/selfsubjectaccessreviews", None, 405, "POST only"),
    ("POST", AUTHZ + "/nothing", {}, 404, "could not find"),
    ("POST", AUTHZ + "/selfsubjectaccessreviews", {"kind": "Pod", "apiVersion": "v1"}, 400,
     "SelfSubjectAccessReview"),
    ("POST", AUTHZ + "/selfsubjectaccessreviews", {"spec": {}}, 400, "exactly one"),
    ("POST", AUTHZ + "/selfsubjectaccessreviews",
     {"spec": {"resourceAttributes": {"verb": 1}}}, 400, "spec.resourceAttributes.verb"),
])
async def test_a_bad_review_is_refused_naming_what_is_wrong(
        served: Served, method: str, path: str, body: Any, code: int, words: str) -> None:
    status, out = await call(served, method, path, body)
    assert status == code and words in out["message"], out


# What kubectl 1.33 sent for `auth whoami`, `auth can-i create pods` and `auth can-i
# --list`: protobuf, which it does not send again as JSON when refused.
WHOAMI_PB = bytes.fromhex(
    "6b3873000a2d0a1861757468656e7469636174696f6e2e6b38732e696f2f7631121153656c665375626a"
    "656374526576696577121a0a100a0012001a0022002a0032003800420012060a040a0012001a002200")
CAN_I_PB = bytes.fromhex(
    "6b3873000a320a17617574686f72697a6174696f6e2e6b38732e696f2f7631121753656c665375626a65"
    "6374416363657373526576696577123f0a100a0012001a0022002a0032003800420012210a1f0a076465"
    "6661756c7412066372656174651a0022002a04706f647332003a001a08080012001a0020001a002200")
CAN_I_LIST_PB = bytes.fromhex(
    "6b3873000a310a17617574686f72697a6174696f6e2e6b38732e696f2f7631121653656c665375626a65"
    "637452756c657352657669657712230a100a0012001a0022002a0032003800420012090a076465666175"
    "6c741a04180022001a002200")
PROTOBUF = {"Content-Type": "application/vnd.kubernetes.protobuf"}


async def test_reviews_are_read_from_kubectls_protobuf(served: Served) -> None:
    who = await ok(served, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                   raw=WHOAMI_PB, headers=PROTOBUF)
    assert who["status"]["userInfo"]["username"] == "admin"
    status, answer = await call(served, "POST", AUTHZ + "/selfsubjectaccessreviews",
                                raw=CAN_I_PB, headers={**PROTOBUF, **NODE}, auth=False)
    assert status == 201 and answer["status"]["allowed"] is False
    assert answer["spec"] == {"resourceAttributes": {
        "namespace": "default", "verb": "create", "resource": "pods"}}
    listed = await ok(served, "POST", AUTHZ + "/selfsubjectrulesreviews", raw=CAN_I_LIST_PB,
                      headers=PROTOBUF)
    assert listed["spec"] == {"namespace": "default"} and listed["status"]["resourceRules"]


# What kubectl 1.33 sent for `create service nodeport pbn --tcp=80:http --node-port=30080`
# and `create job pbj --image=x:1`.
SERVICE_PB = bytes.fromhex(
    "6b3873000a0d0a027631120753657276696365126d0a1f0a0370626e12001a0022002a00320038004200"
    "5a0a0a03617070120370626e12460a200a0738302d6874747012035443501850220a080110001a046874"
    "74702880eb01120a0a03617070120370626e1a0022084e6f6465506f72743a00420052005a0060006800"
    "1a020a001a002200")
JOB_PB = bytes.fromhex(
    "6b3873000a0f0a0862617463682f763112034a6f6212780a130a0370626a12001a0022002a0032003800"
    "4200125732550a100a0012001a0022002a003200380042001241121e0a0370626a1203783a312a004200"
    "6a007200800100880100900100a201001a054e65766572320042004a0052005800600068008201008a01"
    "009a0100c201001a082000280030003a001a002200")


async def test_services_and_jobs_are_read_from_kubectls_protobuf(served: Served) -> None:
    made = await ok(served, "POST", SVCS, raw=SERVICE_PB, headers=PROTOBUF)
    assert made["spec"]["type"] == "NodePort" and made["spec"]["selector"] == {"app": "pbn"}
    assert made["spec"]["ports"] == [{"name": "80-http", "protocol": "TCP", "port": 80,
                                      "targetPort": "http", "nodePort": 30080}]
    job = await ok(served, "POST", "/apis/batch/v1/namespaces/default/jobs", raw=JOB_PB,
                   headers=PROTOBUF)
    template = job["spec"]["template"]["spec"]
    assert template["restartPolicy"] == "Never"
    assert [(c["name"], c["image"]) for c in template["containers"]] == [("pbj", "x:1")]
    assert "status" not in job or not job["status"].get("active")


@pytest.mark.parametrize(("message", "expected"), [
    (b"\x08\x00\x10\x90\x3f", 8080), (b"\x08\x01\x1a\x04http", "http"),
    (b"\x08\x00\x10\x00\x1a\x00", 0),
])
def test_int_or_string(message: bytes, expected: Any) -> None:
    from raftkube.apiserver import protobuf

    assert protobuf._int_or_string(message, "targetPort", [100]) == expected


@pytest.mark.parametrize(("message", "words"), [
    (b"\x08\x07\x1a\x04http", "an IntOrString of type 7"),
    (b"\x08\x00\x10\xff\xff\xff\xff\x0f", "does not fit an int32"),
    (b"\x08\x00\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f", "overflows 64 bits"),
    (b"\x0b", "invalid wire type 3"),
])
def test_malformed_int_or_string_is_named(message: bytes, words: str) -> None:
    from raftkube.apiserver import protobuf

    with pytest.raises(protobuf.Malformed, match=words):
        protobuf._int_or_string(message, "targetPort", [100])

