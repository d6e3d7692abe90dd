"""The Kubernetes-style REST API on a real single-member replica.

Bad input gets the right status, a Status naming the field, and changes nothing (the
store revision is compared before and after). Good input follows Kubernetes' rules:
defaults, resourceVersion = mod_revision, 409 on stale updates, generation on spec
changes, status subresource, merge patch, dry run, selectors, pagination, watch with
bookmarks and 410, node-token rights, NodePort/ClusterIP allocation, namespaces.
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any
from urllib.parse import quote

import pytest

from tests import hostile
from tests.unit.conftest import NODE_TOKEN, Served
from tests.unit.loops import converge

pytestmark = pytest.mark.unit

DEPLOY = "/apis/apps/v1/namespaces/default/deployments"
PODS = "/api/v1/namespaces/default/pods"
SVCS = "/api/v1/namespaces/default/services"
CMS = "/api/v1/namespaces/default/configmaps"
EVENTS = "/api/v1/namespaces/default/events"


def deployment(name: str = "web", replicas: Any = 2, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}},
    }
    body["spec"].update(spec)
    return body


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data}


async def call(s: Served, method: str, path: str, body: Any = None, *,
               headers: dict[str, str] | None = None, raw: bytes | None = None,
               auth: bool = True) -> tuple[int, Any]:
    h = dict(s.auth) if auth else {}
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        h.setdefault("Content-Type", "application/json")
    # A BytesIO, not bytes: aiohttp warns (an error under filterwarnings) on big raw bodies.
    payload = io.BytesIO(data) if data is not None else None
    async with s.client.request(method, path, data=payload, headers=h) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def ok(s: Served, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, out = await call(s, method, path, body, **kw)
    assert status in (200, 201), (method, path, status, out)
    return out


def revision(s: Served) -> int:
    with s.replica.lock:
        return s.replica.state.revision


# ---- bad input: the table ---------------------------------------------------------------

BIG = "x" * 1_600_000
NODE = {"Authorization": f"Bearer {NODE_TOKEN}"}
YAML = {"Content-Type": "application/yaml"}

BAD: list[tuple[str, str, str, Any, dict[str, Any], int, str, str]] = [
    # (id, method, path, body, options, status, reason, text in message)
    ("no token", "GET", PODS, None, {"auth": False}, 401, "Unauthorized", "Unauthorized"),
    ("wrong token", "GET", PODS, None, {"auth": False, "headers": {
        "Authorization": "Bearer nope"}}, 401, "Unauthorized", "Unauthorized"),
    ("malformed JSON", "POST", CMS, None, {"raw": b"{nope"}, 400, "BadRequest", "not valid JSON"),
    ("body is a list", "POST", CMS, [1, 2], {}, 400, "BadRequest", "JSON object"),
    ("unknown kind path", "GET", "/api/v1/namespaces/default/widgets", None, {}, 404, "NotFound",
     "widgets"),
    ("unknown group", "GET", "/apis/widgets.io/v1/things", None, {}, 404, "NotFound", "things"),
    ("kind mismatch", "POST", CMS, {"apiVersion": "v1", "kind": "Secret",
                                    "metadata": {"name": "x"}}, {}, 400, "BadRequest",
     "do not match"),
    ("namespace mismatch", "POST", CMS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": "x", "namespace": "other"}}, {}, 400, "BadRequest", "namespace"),
    ("bad name", "POST", CMS, configmap("Not_DNS"), {}, 422, "Invalid", "metadata.name"),
    ("name too long", "POST", CMS, configmap("a" * 254), {}, 422, "Invalid", "metadata.name"),
    ("missing name", "POST", CMS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}},
     {}, 422, "Invalid", "metadata.name"),
    ("bad label value", "POST", CMS, configmap("x", {"app": "no spaces"}), {}, 422, "Invalid",
     "metadata.labels"),
    ("bad configmap key", "POST", CMS, configmap("x", **{"bad key": "v"}), {}, 422, "Invalid",
     "data"),
    ("negative replicas", "POST", DEPLOY, deployment(replicas=-1), {}, 422, "Invalid",
     "spec.replicas"),
    ("replicas wrong type", "POST", DEPLOY, deployment(replicas="three"), {}, 422, "Invalid",
     "spec.replicas"),
    ("selector mismatch", "POST", DEPLOY, deployment(selector={"matchLabels": {"app": "x"}}),
     {}, 422, "Invalid", "selector"),
    ("no containers", "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p"}, "spec": {"containers": []}}, {}, 422, "Invalid", "spec.containers"),
    ("duplicate container names", "POST", PODS, {"apiVersion": "v1", "kind": "Pod",
                                                 "metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "a", "image": "i"}, {"name": "a", "image": "i"}]}}, {}, 422,
     "Invalid", "containers[1].name"),
    ("missing image", "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p"}, "spec": {"containers": [{"name": "a"}]}}, {}, 422, "Invalid",
     "containers[0].image"),
    ("bad quantity", "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                                    "spec": {"containers": [{"name": "a", "image": "i",
                                                             "resources": {"limits": {
                                                                 "memory": "12XB"}}}]}}, {},
     422, "Invalid", "resources.limits"),
    ("port out of range", "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p"}, "spec": {"containers": [{"name": "a", "image": "i", "ports": [
            {"containerPort": 70000}]}]}}, {}, 422, "Invalid", "containerPort"),
    ("bad restartPolicy", "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p"}, "spec": {"restartPolicy": "Sometimes", "containers": [
            {"name": "a", "image": "i"}]}}, {}, 422, "Invalid", "restartPolicy"),
    ("nodePort out of range", "POST", SVCS, {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}}, {},
     422, "Invalid", "nodePort"),
    ("service name not a label", "POST", SVCS, {"apiVersion": "v1", "kind": "Service",
                                                "metadata": {"name": "a.b"}, "spec": {
        "ports": [{"port": 80}]}}, {}, 422, "Invalid", "metadata.name"),
    ("configmap data over 1 MiB", "POST", CMS, configmap("big", v=BIG), {}, 422, "Invalid",
     "data: Too long"),
    ("oversize object", "POST", PODS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p"}, "spec": {"containers": [{"name": "a", "image": "i", "env": [
            {"name": "BIG", "value": BIG}]}]}}, {}, 413, "RequestEntityTooLarge", "too large"),
    ("oversize body", "POST", CMS, None, {"raw": b"{" + b" " * (4 * 1024 * 1024) + b"}"}, 413,
     "RequestEntityTooLarge", "too large"),
    ("get missing", "GET", CMS + "/nope", None, {}, 404, "NotFound", 'configmaps "nope" not found'),
    ("delete missing", "DELETE", CMS + "/nope", None, {}, 404, "NotFound", "not found"),
    ("put missing", "PUT", CMS + "/nope", configmap("nope"), {}, 404, "NotFound", "not found"),
    ("put name mismatch", "PUT", CMS + "/a", configmap("b"), {}, 400, "BadRequest",
     "does not match"),
    ("patch of an unknown type", "PATCH", CMS + "/a", {"data": {}}, {"headers": {
        "Content-Type": "application/apply-patch+yaml"}}, 415, "UnsupportedMediaType",
     "application/json-patch+json, application/merge-patch+json, "
     "application/strategic-merge-patch+json"),
    ("missing namespace", "POST", "/api/v1/namespaces/ghost/configmaps", configmap("x"), {}, 404,
     "NotFound", 'namespaces "ghost" not found'),
    ("bad label selector", "GET", CMS + "?labelSelector=app%20in%20(", None, {}, 400,
     "BadRequest", "labelSelector" if False else "parse"),
    ("bad field selector", "GET", PODS + "?fieldSelector=spec.foo%3Dx", None, {}, 400,
     "BadRequest", "spec.foo"),
    ("negative limit", "GET", CMS + "?limit=-1", None, {}, 400, "BadRequest", "limit"),
    ("bad continue", "GET", CMS + "?limit=1&continue=garbage", None, {}, 400, "BadRequest",
     "continue"),
    ("bad propagation", "DELETE", CMS + "/a?propagationPolicy=Sometimes", None, {}, 400,
     "BadRequest", "propagationPolicy"),
    ("bad dryRun", "POST", CMS + "?dryRun=Yes", configmap("x"), {}, 400, "BadRequest", "dryRun"),
    ("node creates deployment", "POST", DEPLOY, deployment(), {"auth": False, "headers": NODE},
     403, "Forbidden", "system:node:n1"),
    ("node reads deployments", "GET", DEPLOY, None, {"auth": False, "headers": NODE}, 403,
     "Forbidden", "deployments"),
    ("node writes another node", "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                                            "metadata": {"name": "n2"}},
     {"auth": False, "headers": NODE}, 403, "Forbidden", "nodes"),
    ("node deletes a configmap", "DELETE", CMS + "/a", None, {"auth": False, "headers": NODE},
     403, "Forbidden", "configmaps"),
    ("cluster kind under namespace", "GET", "/api/v1/namespaces/default/nodes/x", None, {}, 404,
     "NotFound", "not namespaced"),
    ("unknown subresource", "GET", CMS + "/a/scale", None, {}, 404, "NotFound",
     "could not find"),
    ("delete system namespace", "DELETE", "/api/v1/namespaces/default", None, {}, 403,
     "Forbidden", "may not be deleted"),
    ("unknown field, strict", "POST", DEPLOY + "?fieldValidation=Strict",
     {**deployment(), "spec": {**deployment()["spec"], "replcas": 3}}, {}, 400, "BadRequest",
     'strict decoding error: unknown field "spec.replcas"'),
    ("bad fieldValidation", "POST", CMS + "?fieldValidation=Loose", configmap("x"), {}, 400,
     "BadRequest", "fieldValidation"),
    ("stale resourceVersion", "PUT", CMS + "/a", {**configmap("a"), "metadata": {
        "name": "a", "resourceVersion": "1"}}, {}, 409, "Conflict", "the object has been modified"),
    ("create existing", "POST", CMS, configmap("a"), {}, 409, "AlreadyExists",
     'configmaps "a" already exists'),
    ("malformed YAML", "POST", CMS, None, {"raw": b"kind: ConfigMap\nmetadata: {name: [x\n",
                                          "headers": YAML}, 400, "BadRequest", "not valid YAML"),
    ("YAML indented with a tab", "POST", CMS, None, {
        "raw": b"kind: ConfigMap\nmetadata:\n\tname: x\n", "headers": YAML}, 400, "BadRequest",
     "yaml: line 3"),
    ("two YAML documents", "POST", CMS, None, {"raw": b"kind: ConfigMap\n---\nkind: Secret\n",
                                              "headers": YAML}, 400, "BadRequest",
     "one YAML document"),
    ("YAML key given twice", "POST", CMS, None, {
        "raw": b"kind: ConfigMap\nmetadata: {name: x}\ndata: {}\ndata: {a: b}\n",
        "headers": YAML}, 400, "BadRequest", 'mapping key "data" already defined at line 3'),
    ("YAML scalar body", "POST", CMS, None, {"raw": b"just words", "headers": YAML}, 400,
     "BadRequest", "JSON object"),
    ("data value not a string", "POST", CMS, {**configmap("x"), "data": {"k": 5}}, {}, 422,
     "Invalid", "data[k]"),
    ("labels not a map", "POST", CMS, {**configmap("x"), "metadata": {"name": "x", "labels": [
        "a"]}}, {}, 422, "Invalid", "metadata.labels"),
    ("bad generateName", "POST", CMS, {**configmap("x"), "metadata": {"generateName": "Bad_"}},
     {}, 422, "Invalid", "metadata.generateName"),
    ("patch to a wrong type", "PATCH", CMS + "/a", {"data": "text"}, {"headers": {
        "Content-Type": "application/merge-patch+json"}}, 422, "Invalid", "data"),
    # Hostile input: YAML aliases that expand without bound, from a node (which may create
    # Events), bodies nested past what any reader may recurse into, lax integers.
    *[(f"YAML {name} {a}x{n} from a node", "POST", EVENTS, None, {
        "raw": bomb(a, n), "auth": False, "headers": {**NODE, **YAML}}, 400, "BadRequest",
       "more than 3145728 bytes of JSON once its aliases are expanded")
      for name, bomb in (("alias bomb", hostile.alias_bomb),
                         ("merge-key bomb", hostile.merge_bomb))
      for a, n in ((9, 8), (9, 9), (10, 20))],
    ("YAML alias of itself", "POST", CMS, None, {"raw": b"kind: ConfigMap\ndata: &d {a: *d}\n",
                                                 "headers": YAML}, 400, "BadRequest",
     "an alias refers to a node that contains it"),
    ("YAML binary tag", "POST", CMS, None, {
        "raw": b"kind: ConfigMap\nmetadata: {name: x}\nbinaryData: {a: !!binary aGk=}\n",
        "headers": YAML}, 400, "BadRequest", "tag:yaml.org,2002:binary has no JSON value"),
    ("YAML integer of 200 characters", "POST", CMS, None, {
        "raw": b"kind: ConfigMap\nx: " + b"1:" * 100 + b"0\n", "headers": YAML}, 400,
     "BadRequest", "an integer of more than 100 characters"),
    ("YAML nested 100,000 deep", "POST", CMS, None, {
        "raw": b"kind: ConfigMap\ndata: " + hostile.nested(100_000), "headers": YAML}, 400,
     "BadRequest", "nests deeper than 100 levels"),
    ("JSON POST nested 100,000 deep", "POST", CMS, None, {
        "raw": hostile.with_field(configmap("x"), "x", hostile.nested(100_000))}, 400,
     "BadRequest", "body: nested deeper than 100 levels"),
    ("JSON POST nested 101 deep", "POST", CMS, None, {
        "raw": hostile.with_field(configmap("x"), "x", hostile.nested(100))}, 400,
     "BadRequest", "body: nested deeper than 100 levels"),
    ("JSON PUT nested 100,000 deep", "PUT", CMS + "/a", None, {
        "raw": hostile.with_field(configmap("a"), "x", hostile.nested(100_000))}, 400,
     "BadRequest", "body: nested deeper than 100 levels"),
    ("JSON PATCH nested 100,000 deep", "PATCH", CMS + "/a", None, {
        "raw": b'{"data": ' + hostile.nested(100_000) + b"}", "headers": {
            "Content-Type": "application/merge-patch+json"}}, 400, "BadRequest",
     "body: nested deeper than 100 levels"),
    ("event from a node nested 100,000 deep", "POST", EVENTS, None, {
        "raw": hostile.with_field({"apiVersion": "v1", "kind": "Event"}, "x",
                                  hostile.nested(100_000)), "auth": False, "headers": NODE},
     400, "BadRequest", "body: nested deeper than 100 levels"),
    ("event from a node of a million values", "POST", EVENTS, None, {
        "raw": hostile.with_field({"apiVersion": "v1", "kind": "Event"}, "series",
                                  b'{"x": ' + hostile.many(1_000_000) + b"}"),
        "auth": False, "headers": NODE}, 400, "BadRequest", "body: more than 100000 values"),
    ("limit of 23 digits", "GET", CMS + "?limit=" + "1" * 23, None, {}, 400, "BadRequest",
     "limit: Invalid value: out of the int64 range"),
    ("limit beyond int64 by one", "GET", CMS + f"?limit={2**63}", None, {}, 400, "BadRequest",
     "limit: Invalid value: out of the int64 range"),
    *[(f"limit {text!r}", "GET", CMS + "?limit=" + quote(text), None, {}, 400, "BadRequest",
       f"limit: Invalid value: expected an integer, got {text!r}")
      for text in (" 5", "+3", "5_0", "\u0665", "\uff15", "0x1")],
    ("gracePeriodSeconds +3", "DELETE", CMS + "/a?gracePeriodSeconds=%2B3", None, {}, 400,
     "BadRequest", "gracePeriodSeconds: Invalid value: expected an integer, got '+3'"),
    ("gracePeriodSeconds beyond int64", "DELETE", CMS + "/a?gracePeriodSeconds=" + "9" * 19,
     None, {}, 400, "BadRequest", "gracePeriodSeconds: Invalid value: out of the int64 range"),
    ("timeoutSeconds 1_0", "GET", CMS + "?watch=true&timeoutSeconds=1_0", None, {}, 400,
     "BadRequest", "timeoutSeconds: Invalid value: expected an integer, got '1_0'"),
    ("watch resourceVersion ' 5'", "GET", CMS + "?watch=true&resourceVersion=%205", None, {},
     400, "BadRequest", "resourceVersion: Invalid value: expected an integer, got ' 5'"),
    ("list resourceVersion of 23 digits", "GET", CMS + "?resourceVersion=" + "1" * 23, None,
     {}, 400, "BadRequest", "resourceVersion: Invalid value: out of the int64 range"),
    ("put with resourceVersion ' 5 '", "PUT", CMS + "/a", {**configmap("a"), "metadata": {
        "name": "a", "resourceVersion": " 5 "}}, {}, 400, "BadRequest",
     "metadata.resourceVersion: Invalid value: expected an integer, got ' 5 '"),
    ("grace period beyond int64 in a pod", "POST", PODS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
            "terminationGracePeriodSeconds": 2**63, "containers": [{"name": "a", "image": "i"}]}},
     {}, 422, "Invalid", "spec.terminationGracePeriodSeconds"),
    ("grace period beyond int64 in DeleteOptions", "DELETE", CMS + "/a", {
        "gracePeriodSeconds": 2**63}, {}, 400, "BadRequest",
     "gracePeriodSeconds: must be a non-negative int64"),
    ("node gets a secret with no namespace", "GET", "/api/v1/secrets/a", None,
     {"auth": False, "headers": NODE}, 403, "Forbidden", 'secrets "a" is forbidden'),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
async def test_bad_request_is_refused_with_a_status_and_changes_nothing(
        served: Served, case: tuple[Any, ...]) -> None:
    _id, method, path, body, options, code, reason, text = case
    await ok(served, "POST", CMS, configmap("a", x="1"))
    before = revision(served)
    status, out = await call(served, method, path, body, **options)
    assert status == code, out
    assert isinstance(out, dict) and out.get("kind") == "Status", out
    assert out["reason"] == reason and out["code"] == code, out
    assert text in out["message"], out["message"]
    # Read through a barrier: anything the request (wrongly) proposed is applied by then.
    await served.replica.barrier()
    assert revision(served) == before, "a refused request changed the store"


async def test_invalid_lists_every_cause_with_its_field(served: Served) -> None:
    bad = deployment(replicas=-1)
    bad["spec"]["template"]["spec"]["containers"] = [{"name": "Bad_Name"}]
    status, out = await call(served, "POST", DEPLOY, bad)
    assert status == 422
    fields = {c["field"] for c in out["details"]["causes"]}
    assert {"spec.replicas", "spec.template.spec.containers[0].name",
            "spec.template.spec.containers[0].image"} <= fields
    assert out["message"].startswith('Deployment.apps "web" is invalid: [')


# ---- create, read, update ---------------------------------------------------------------


async def test_create_defaults_and_resource_version(served: Served) -> None:
    created = await ok(served, "POST", DEPLOY, deployment())
    meta = created["metadata"]
    assert meta["namespace"] == "default" and meta["generation"] == 1 and meta["uid"]
    assert meta["resourceVersion"] == str(revision(served))
    strategy = created["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate",
                        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    pod_spec = created["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Always"
    assert pod_spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    got = await ok(served, "GET", DEPLOY + "/web")
    assert got == created
    status, out = await call(served, "POST", DEPLOY, deployment())
    assert status == 409 and out["reason"] == "AlreadyExists"


async def test_a_manifest_may_be_posted_as_yaml(served: Served) -> None:
    text = (b"# as written\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n"
            b"data:\n  when: 2024-05-01\n")
    status, out = await call(served, "POST", CMS, raw=text, headers=YAML)
    assert status == 201, out
    assert out["data"] == {"when": "2024-05-01"}  # a date stays a string


async def test_unknown_fields_are_warned_about_by_default(served: Served) -> None:
    body = {**configmap("w", a="1"), "dta": {"b": "2"}}
    async with served.client.post(CMS, json=body, headers=served.auth) as resp:
        assert resp.status == 201
        assert resp.headers.getall("Warning") == ['299 - "unknown field \\"dta\\""']
    async with served.client.post(CMS + "?fieldValidation=Ignore", json={
            **configmap("i"), "dta": {}}, headers=served.auth) as resp:
        assert resp.status == 201 and "Warning" not in resp.headers


async def test_generate_name(served: Served) -> None:
    body = configmap("")
    body["metadata"] = {"generateName": "cfg-"}
    created = await ok(served, "POST", CMS, body)
    assert created["metadata"]["name"].startswith("cfg-")
    assert len(created["metadata"]["name"]) == len("cfg-") + 5


async def test_update_conflict_generation_and_status_subresource(served: Served) -> None:
    created = await ok(served, "POST", DEPLOY, deployment())
    stale = json.loads(json.dumps(created))
    created["spec"]["replicas"] = 5
    updated = await ok(served, "PUT", DEPLOY + "/web", created)
    assert updated["metadata"]["generation"] == 2
    stale["spec"]["replicas"] = 7
    before = revision(served)
    status, out = await call(served, "PUT", DEPLOY + "/web", stale)
    assert status == 409 and out["reason"] == "Conflict"
    assert "the object has been modified" in out["message"]
    assert revision(served) == before
    # Labels only: no generation bump.
    updated["metadata"]["labels"]["tier"] = "front"
    relabeled = await ok(served, "PUT", DEPLOY + "/web", updated)
    assert relabeled["metadata"]["generation"] == 2
    # status through the main resource is ignored; through /status it is kept, spec is not.
    relabeled["status"] = {"replicas": 5}
    ignored = await ok(served, "PUT", DEPLOY + "/web", relabeled)
    assert "status" not in ignored
    ignored["status"] = {"replicas": 5}
    ignored["spec"]["replicas"] = 1
    with_status = await ok(served, "PUT", DEPLOY + "/web/status", ignored)
    assert with_status["status"] == {"replicas": 5} and with_status["spec"]["replicas"] == 5
    # Writing the same object again writes nothing.
    same = await ok(served, "PUT", DEPLOY + "/web", with_status)
    assert same["metadata"]["resourceVersion"] == with_status["metadata"]["resourceVersion"]


async def test_immutable_selector(served: Served) -> None:
    created = await ok(served, "POST", DEPLOY, deployment())
    created["spec"]["selector"] = {"matchLabels": {"app": "web", "x": "y"}}
    created["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    status, out = await call(served, "PUT", DEPLOY + "/web", created)
    assert status == 422 and "immutable" in out["message"]


async def test_merge_patch_and_dry_run(served: Served) -> None:
    await ok(served, "POST", CMS, configmap("p", a="1", b="2"))
    before = revision(served)
    dry = await ok(served, "PATCH", CMS + "/p?dryRun=All", {"data": {"a": None, "c": "3"}},
                   headers={"Content-Type": "application/merge-patch+json"})
    assert dry["data"] == {"b": "2", "c": "3"}
    assert revision(served) == before
    patched = await ok(served, "PATCH", CMS + "/p", {"data": {"a": None, "c": "3"}},
                       headers={"Content-Type": "application/merge-patch+json"})
    assert patched["data"] == {"b": "2", "c": "3"}
    assert (await ok(served, "POST", CMS + "?dryRun=All", configmap("q")))["metadata"]["name"]
    status, _ = await call(served, "GET", CMS + "/q")
    assert status == 404


async def test_secret_string_data_is_folded(served: Served) -> None:
    created = await ok(served, "POST", "/api/v1/namespaces/default/secrets", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "stringData": {"user": "admin"}})
    assert created["data"] == {"user": "YWRtaW4="} and "stringData" not in created
    assert created["type"] == "Opaque"


# ---- lists ------------------------------------------------------------------------------


async def test_list_selectors_and_pagination(served: Served) -> None:
    for i in range(7):
        await ok(served, "POST", CMS, configmap(f"c{i}", {"tier": "a" if i % 2 else "b",
                                                         "n": str(i)}))
    listed = await ok(served, "GET", CMS)
    assert listed["kind"] == "ConfigMapList"
    assert [o["metadata"]["name"] for o in listed["items"]] == [f"c{i}" for i in range(7)]
    sel = await ok(served, "GET", CMS + "?labelSelector=tier%3Da")
    assert [o["metadata"]["name"] for o in sel["items"]] == ["c1", "c3", "c5"]
    setb = await ok(served, "GET", CMS + "?labelSelector=n%20in%20(1,2),tier!%3Da")
    assert [o["metadata"]["name"] for o in setb["items"]] == ["c2"]
    names = await ok(served, "GET", CMS + "?fieldSelector=metadata.name%3Dc4")
    assert [o["metadata"]["name"] for o in names["items"]] == ["c4"]
    # Pages, at the revision of the first page even while objects change.
    page = await ok(served, "GET", CMS + "?limit=3")
    seen = [o["metadata"]["name"] for o in page["items"]]
    first_rv = page["metadata"]["resourceVersion"]
    await ok(served, "POST", CMS, configmap("c9"))
    while page["metadata"].get("continue"):
        page = await ok(served, "GET", CMS + f"?limit=3&continue={page['metadata']['continue']}")
        assert page["metadata"]["resourceVersion"] == first_rv
        seen += [o["metadata"]["name"] for o in page["items"]]
    assert seen == [f"c{i}" for i in range(7)]
    everywhere = await ok(served, "GET", "/api/v1/configmaps")
    assert len(everywhere["items"]) == 8


# ---- watch ------------------------------------------------------------------------------


async def read_events(resp: Any, n: int, *, skip_bookmarks: bool = True) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while len(out) < n:
            line = await resp.content.readline()
            assert line, "the watch ended"
            ev = json.loads(line)
            if skip_bookmarks and ev["type"] == "BOOKMARK":
                continue
            out.append(ev)
    return out


async def test_watch_from_a_resource_version_with_bookmarks(served: Served) -> None:
    listed = await ok(served, "GET", CMS)
    rv = listed["metadata"]["resourceVersion"]
    async with served.client.get(CMS + f"?watch=true&resourceVersion={rv}"
                                 "&allowWatchBookmarks=true", headers=served.auth) as resp:
        assert resp.status == 200
        await ok(served, "POST", CMS, configmap("w", a="1"))
        await ok(served, "PATCH", CMS + "/w", {"data": {"a": "2"}},
                 headers={"Content-Type": "application/merge-patch+json"})
        await ok(served, "DELETE", CMS + "/w")
        events = await read_events(resp, 3)
        assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
        revs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
        assert revs == sorted(revs) and revs[-1] == revision(served)
        bookmark = (await read_events(resp, 1, skip_bookmarks=False))[0]
        assert bookmark["type"] == "BOOKMARK"
        assert int(bookmark["object"]["metadata"]["resourceVersion"]) >= revs[-1]


async def test_watch_with_selector_sends_deleted_when_an_object_stops_matching(
        served: Served) -> None:
    await ok(served, "POST", CMS, configmap("m", {"app": "x"}))
    async with served.client.get(CMS + "?watch=true&labelSelector=app%3Dx",
                                 headers=served.auth) as resp:
        (initial,) = await read_events(resp, 1)
        assert initial["type"] == "ADDED"  # no resourceVersion: current state first
        await ok(served, "PATCH", CMS + "/m", {"metadata": {"labels": {"app": "y"}}},
                 headers={"Content-Type": "application/merge-patch+json"})
        await ok(served, "PATCH", CMS + "/m", {"metadata": {"labels": {"app": "x"}}},
                 headers={"Content-Type": "application/merge-patch+json"})
        events = await read_events(resp, 2)
        assert [e["type"] for e in events] == ["DELETED", "ADDED"]


async def test_watch_from_a_compacted_version_is_gone(served: Served) -> None:
    for i in range(3):
        await ok(served, "POST", CMS, configmap(f"g{i}"))
    result = await served.replica.propose("compact", {"revision": revision(served)})
    assert "error" not in result
    status, out = await call(served, "GET", CMS + "?watch=true&resourceVersion=2")
    assert status == 410 and out["reason"] == "Gone"


# ---- deletes, namespaces, services ------------------------------------------------------


async def test_delete_cascades_to_dependents_unless_orphaned(collected: Served) -> None:
    served = collected
    owner = await ok(served, "POST", CMS, configmap("owner"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"]}
    for name in ("dep1", "dep2"):
        body = configmap(name)
        body["metadata"]["ownerReferences"] = [ref]
        await ok(served, "POST", CMS, body)
    await ok(served, "DELETE", CMS + "/owner?propagationPolicy=Background")
    assert (await call(served, "GET", CMS + "/owner"))[0] == 404  # the owner goes at once

    async def collected_all() -> bool:
        return [(await call(served, "GET", CMS + f"/{n}"))[0] for n in ("dep1", "dep2")] \
            == [404, 404]

    await converge(collected_all, what="the garbage collector to delete both dependents")
    owner = await ok(served, "POST", CMS, configmap("owner2"))
    body = configmap("kept")
    body["metadata"]["ownerReferences"] = [{**ref, "name": "owner2",
                                            "uid": owner["metadata"]["uid"]}]
    await ok(served, "POST", CMS, body)
    marked = await ok(served, "DELETE", CMS + "/owner2?propagationPolicy=Orphan")
    assert marked["metadata"]["finalizers"] == ["orphan"]

    async def orphaned() -> bool:
        return (await call(served, "GET", CMS + "/owner2"))[0] == 404

    await converge(orphaned, what="the owner to go once its dependent is orphaned")
    kept = await ok(served, "GET", CMS + "/kept")
    assert not kept["metadata"].get("ownerReferences")


async def test_finalizers_hold_deletion_until_removed(served: Served) -> None:
    body = configmap("fin")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await ok(served, "POST", CMS, body)
    marked = await ok(served, "DELETE", CMS + "/fin")
    assert marked["metadata"]["deletionTimestamp"]
    still = await ok(served, "GET", CMS + "/fin")
    await ok(served, "PATCH", CMS + "/fin", {"metadata": {"finalizers": None}},
             headers={"Content-Type": "application/merge-patch+json"})
    status, _ = await call(served, "GET", CMS + "/fin")
    assert status == 404 and still


async def test_deleting_a_namespace_deletes_everything_in_it(collected: Served) -> None:
    served = collected
    await ok(served, "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                     "metadata": {"name": "team"}})
    await ok(served, "POST", "/api/v1/namespaces/team/configmaps", configmap("a"))
    await ok(served, "POST", "/apis/apps/v1/namespaces/team/deployments", deployment())
    svc = await ok(served, "POST", "/api/v1/namespaces/team/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30111}]}})
    assert svc["spec"]["ports"][0]["nodePort"] == 30111
    marked = await ok(served, "DELETE", "/api/v1/namespaces/team")
    assert marked["status"]["phase"] == "Terminating" and marked["metadata"]["deletionTimestamp"]
    status, refused = await call(served, "POST", "/api/v1/namespaces/team/configmaps",
                                 configmap("late"))
    assert status == 403 and refused["message"] == (
        'configmaps "late" is forbidden: unable to create new content in namespace team '
        "because it is being terminated"), refused
    assert refused["details"]["causes"][0]["reason"] == "NamespaceTerminating"

    async def gone() -> bool:
        return (await call(served, "GET", "/api/v1/namespaces/team"))[0] == 404

    await converge(gone, what="the namespace controller to empty and finalize the namespace")
    for path in ("/api/v1/namespaces/team/configmaps", "/apis/apps/v1/namespaces/team/deployments",
                 "/api/v1/namespaces/team/services"):
        assert (await ok(served, "GET", path))["items"] == []
    # The NodePort was freed with its Service.
    again = await ok(served, "POST", SVCS, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s2"},
        "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30111}]}})
    assert again["spec"]["ports"][0]["nodePort"] == 30111


async def test_nodeports_and_cluster_ips_are_allocated_once(served: Served) -> None:
    def svc(name: str, node_port: int | None = None) -> dict[str, Any]:
        port: dict[str, Any] = {"port": 80, "targetPort": 8080}
        if node_port:
            port["nodePort"] = node_port
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [port]}}

    a = await ok(served, "POST", SVCS, svc("a"))
    port_a = a["spec"]["ports"][0]["nodePort"]
    assert 30000 <= port_a <= 32767
    assert a["spec"]["clusterIP"].startswith("10.96.")
    b = await ok(served, "POST", SVCS, svc("b", 30500))
    assert b["spec"]["ports"][0]["nodePort"] == 30500
    before = revision(served)
    status, out = await call(served, "POST", SVCS, svc("c", 30500))
    assert status == 422 and "already allocated" in out["message"]
    assert revision(served) == before
    # An update that leaves the addresses out keeps them; changing them is refused.
    fresh = svc("a")
    fresh["metadata"]["resourceVersion"] = a["metadata"]["resourceVersion"]
    kept = await ok(served, "PUT", SVCS + "/a", fresh)
    assert kept["spec"]["clusterIP"] == a["spec"]["clusterIP"]
    assert kept["spec"]["ports"][0]["nodePort"] == port_a
    kept["spec"]["clusterIP"] = "10.96.9.9"
    status, out = await call(served, "PUT", SVCS + "/a", kept)
    assert status == 422 and "immutable" in out["message"]


# ---- node tokens ------------------------------------------------------------------------


async def test_node_token_rights(served: Served) -> None:
    node = {"Authorization": f"Bearer {NODE_TOKEN}"}
    await ok(served, "POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                                "metadata": {"name": "n1"}}, headers=node,
             auth=False)
    await ok(served, "PATCH", "/api/v1/nodes/n1/status", {"status": {"phase": "Running"}},
             headers={**node, "Content-Type": "application/merge-patch+json"}, auth=False)
    await ok(served, "POST", "/apis/coordination.k8s.io/v1/namespaces/raftkube-system/leases", {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "n1"},
        "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40}}, headers=node, auth=False)
    for name, node_name in (("mine", "n1"), ("theirs", "n2")):
        await ok(served, "POST", PODS, {"apiVersion": "v1", "kind": "Pod",
                                        "metadata": {"name": name},
                                        "spec": {"nodeName": node_name, "containers": [
                                            {"name": "c", "image": "i"}]}})
    await ok(served, "PUT", PODS + "/mine/status", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mine"},
        "status": {"phase": "Running"}}, headers=node, auth=False)
    status, out = await call(served, "PUT", PODS + "/theirs/status", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "theirs"},
        "status": {"phase": "Running"}}, headers=node, auth=False)
    assert status == 403 and out["reason"] == "Forbidden"
    status, _ = await call(served, "PUT", PODS + "/mine", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "mine"}}, headers=node,
        auth=False)
    assert status == 403
    assert (await ok(served, "GET", PODS + "?fieldSelector=spec.nodeName%3Dn1", headers=node,
                     auth=False))["items"][0]["metadata"]["name"] == "mine"


async def test_events_expire(served: Served) -> None:
    """Events are written on a lease (here a 2 s TTL; 1 h by default)."""
    created = await ok(served, "POST", "/api/v1/namespaces/default/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started", "message": "started", "type": "Normal"})
    assert created["metadata"]["name"] == "e1"
    async with asyncio.timeout(15):
        while True:
            status, _ = await call(served, "GET", "/api/v1/namespaces/default/events/e1")
            if status == 404:
                break
            await asyncio.sleep(0.2)
