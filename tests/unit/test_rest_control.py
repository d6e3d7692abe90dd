"""What the control plane needs of the REST API: binding, fencing, system namespaces,
dry runs that refuse what the real request would, and a new pod's status."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.apiserver import objects as ob
from raftkube.apiserver import status as stt
from raftkube.store import replica as rep
from tests.unit.conftest import NODE_TOKEN, Served
from tests.unit.test_rest import call, ok

pytestmark = pytest.mark.unit

PODS = "/api/v1/namespaces/default/pods"
CMS = "/api/v1/namespaces/default/configmaps"
NODE = {"Authorization": f"Bearer {NODE_TOKEN}"}
TERM = "X-Raftkube-Term"


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "i", **spec}]}}


def binding(node: str, uid: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p"}
    if uid:
        meta["uid"] = uid
    return {"apiVersion": "v1", "kind": "Binding", "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}}


async def settled_revision(s: Served) -> int:
    await s.replica.barrier()  # everything acknowledged so far is applied here
    with s.replica.lock:
        return s.replica.state.revision


async def test_a_new_pod_is_pending_with_its_qos_class(served: Served) -> None:
    made = await ok(served, "POST", PODS, pod("p"))
    assert made["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    limited = pod("g", resources={"limits": {"cpu": "1", "memory": "64Mi"}})
    assert (await ok(served, "POST", PODS, limited))["status"]["qosClass"] == "Guaranteed"
    burst = pod("b", resources={"requests": {"cpu": "100m"}})
    assert (await ok(served, "POST", PODS, burst))["status"]["qosClass"] == "Burstable"


async def test_binding_assigns_a_pod_once(served: Served) -> None:
    made = await ok(served, "POST", PODS, pod("p"))
    uid = made["metadata"]["uid"]
    status, body = await call(served, "POST", PODS + "/p/binding", binding("n1", uid))
    assert (status, body["status"]) == (201, "Success")
    got = await ok(served, "GET", PODS + "/p")
    assert got["spec"]["nodeName"] == "n1"
    scheduled = [c for c in got["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled[0]["status"] == "True"
    before = await settled_revision(served)
    status, body = await call(served, "POST", PODS + "/p/binding", binding("n2"))
    assert (status, body["reason"]) == (409, "Conflict")
    assert 'already assigned to node "n1"' in body["message"]
    assert await settled_revision(served) == before
    assert (await ok(served, "GET", PODS + "/p"))["spec"]["nodeName"] == "n1"


@pytest.mark.parametrize(("body", "options", "code", "says"), [
    (binding("n1", uid="not-the-pods-uid"), {}, 409, "Operation cannot be fulfilled"),
    ({"target": {"kind": "Node"}}, {}, 400, "target.name: Required value"),
    ({"target": {"kind": "Node", "name": ""}}, {}, 400, "target.name: Required value"),
    ({}, {}, 400, "target.name: Required value"),
    ({"target": {"name": 5}}, {}, 400, "target.name: Invalid value: 5: must be a string"),
    (binding("Node_1"), {}, 400,
     'target.name: Invalid value: "Node_1": a lowercase RFC 1123 subdomain'),
    (binding("n1/../x"), {}, 400, 'target.name: Invalid value: "n1/../x"'),
    (binding("n" * 254), {}, 400, "target.name: Invalid value: \"nnn"),
    ({"target": {"kind": "Pod", "name": "x"}}, {}, 400, 'Unsupported value: "Pod"'),
    (binding("n1"), {"headers": NODE, "auth": False}, 403, "cannot create resource"),
], ids=["uid", "no node", "empty node", "no target", "not a string", "not a subdomain",
        "a path", "too long", "not a node", "node token"])
async def test_a_bad_binding_changes_nothing(served: Served, body: Any, options: Any,
                                             code: int, says: str) -> None:
    await ok(served, "POST", PODS, pod("p"))
    before = await settled_revision(served)
    status, answer = await call(served, "POST", PODS + "/p/binding", body, **options)
    assert status == code and says in answer["message"], answer
    if code == 400:
        assert answer["reason"] == "BadRequest"
        assert answer["details"]["causes"][0]["field"] in ("target.name", "target.kind")
    assert await settled_revision(served) == before
    assert "nodeName" not in (await ok(served, "GET", PODS + "/p"))["spec"]


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
async def test_binding_is_create_only(served: Served, method: str) -> None:
    await ok(served, "POST", PODS, pod("p"))
    status, answer = await call(served, method, PODS + "/p/binding", binding("n1"),
                                headers={"Content-Type": "application/merge-patch+json"})
    assert (status, answer["reason"]) == (405, "MethodNotAllowed")


NSS = "/api/v1/namespaces"


@pytest.mark.parametrize(("method", "path", "options"), [
    ("DELETE", PODS + "/p/status", {}),
    ("DELETE", PODS + "/p/status", {"headers": NODE, "auth": False}),  # the pod's node
    ("POST", PODS + "/p/status", {}),
    ("DELETE", PODS + "/p/binding", {}),
    ("DELETE", NSS + "/team/finalize", {}),
    ("GET", NSS + "/team/finalize", {}),
    ("PATCH", NSS + "/team/finalize", {}),
    ("POST", NSS + "/team/finalize", {}),
    ("DELETE", NSS + "/team/status", {}),
], ids=["delete status", "delete status as its node", "post status", "delete binding",
        "delete finalize", "get finalize", "patch finalize", "post finalize",
        "delete namespace status"])
async def test_a_verb_a_subresource_does_not_have_is_405_and_changes_nothing(
        served: Served, method: str, path: str, options: Any) -> None:
    await ok(served, "POST", NSS, {"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": "team"}})
    await ok(served, "POST", PODS, pod("p"))
    await ok(served, "POST", PODS + "/p/binding", binding("n1"))
    before = await settled_revision(served)
    status, answer = await call(served, method, path, {"metadata": {"name": "team"}},
                                headers={"Content-Type": "application/merge-patch+json",
                                         **options.get("headers", {})},
                                auth=options.get("auth", True))
    assert (status, answer["reason"]) == (405, "MethodNotAllowed"), answer
    assert f"{method} " in answer["message"]
    assert await settled_revision(served) == before
    assert "deletionTimestamp" not in (await ok(served, "GET", PODS + "/p"))["metadata"]
    assert "deletionTimestamp" not in (await ok(served, "GET", NSS + "/team"))["metadata"]


async def test_status_is_still_read_and_written(served: Served) -> None:
    await ok(served, "POST", PODS, pod("p"))
    got = await ok(served, "GET", PODS + "/p/status")
    assert got["metadata"]["name"] == "p"
    patched = await ok(served, "PATCH", PODS + "/p/status", {"status": {"phase": "Running"}},
                       headers={"Content-Type": "application/merge-patch+json"})
    assert patched["status"]["phase"] == "Running"


async def test_rest_writes_of_a_replaced_leader_are_refused(served: Served) -> None:
    term = served.replica.view.term
    stamped = {TERM: str(term)}
    await ok(served, "POST", CMS, {"metadata": {"name": "a"}, "data": {"v": "1"}},
             headers=stamped)
    # A newer leader's first write is a no-op stamped with its term: from then on, every
    # write stamped with an older term is refused.
    await served.replica.propose("noop", term=term + 1)
    before = await settled_revision(served)
    for method, path, body in [
        ("POST", CMS, {"metadata": {"name": "b"}}),
        ("PUT", CMS + "/a", {"metadata": {"name": "a"}, "data": {"v": "2"}}),
        ("PATCH", CMS + "/a", {"data": {"v": "3"}}),
        ("DELETE", CMS + "/a", None),
    ]:
        status, answer = await call(served, method, path, body, headers={
            **stamped, "Content-Type": "application/merge-patch+json"
            if method == "PATCH" else "application/json"})
        assert (status, answer["reason"]) == (409, "Conflict"), (method, answer)
        assert "stale term" in answer["message"]
        assert answer["details"]["causes"][0]["reason"] == "StaleTerm"
    assert await settled_revision(served) == before
    assert (await ok(served, "GET", CMS + "/a"))["data"] == {"v": "1"}
    # Writes not stamped (users', agents') go through.
    await ok(served, "PATCH", CMS + "/a", {"data": {"v": "4"}},
             headers={"Content-Type": "application/merge-patch+json"})


@pytest.mark.parametrize(("value", "says"), [
    ("abc", "expected an integer"), ("0", "must be a positive Raft term"),
    ("99999", "is newer than this member's Raft term"),
])
async def test_a_bad_term_header_is_refused_up_front(served: Served, value: str,
                                                     says: str) -> None:
    before = await settled_revision(served)
    status, answer = await call(served, "POST", CMS, {"metadata": {"name": "x"}},
                                headers={TERM: value})
    assert status == 400 and says in answer["message"]
    assert await settled_revision(served) == before


async def test_kube_system_exists_from_the_start(served: Served) -> None:
    names = [n["metadata"]["name"] for n in
             (await ok(served, "GET", "/api/v1/namespaces"))["items"]]
    assert {"default", "kube-system", "raftkube-system"} <= set(names)


async def test_a_dry_run_refuses_a_missing_namespace_as_the_real_request_does(
        served: Served) -> None:
    path = "/api/v1/namespaces/nope/configmaps"
    for query in ("?dryRun=All", ""):
        status, answer = await call(served, "POST", path + query, {"metadata": {"name": "x"}})
        assert (status, answer["reason"]) == (404, "NotFound"), query
        assert answer["message"] == 'namespaces "nope" not found'


async def test_delete_preconditions_must_hold(served: Served) -> None:
    made = await ok(served, "POST", CMS, {"metadata": {"name": "a"}})
    uid, rv = made["metadata"]["uid"], made["metadata"]["resourceVersion"]
    before = await settled_revision(served)
    for pre, says in [({"uid": "other"}, "UID in precondition: other"),
                      ({"resourceVersion": "1"}, "ResourceVersion in precondition: 1")]:
        status, answer = await call(served, "DELETE", CMS + "/a", {"preconditions": pre})
        assert (status, answer["reason"]) == (409, "Conflict") and says in answer["message"]
    assert await settled_revision(served) == before
    status, answer = await call(served, "DELETE", CMS + "/a",
                                {"preconditions": {"uid": 5}})
    assert status == 400 and "preconditions" in answer["message"]
    await ok(served, "DELETE", CMS + "/a",
             {"preconditions": {"uid": uid, "resourceVersion": rv}})
    assert (await call(served, "GET", CMS + "/a"))[0] == 404


def binding_of(pod: str, node: str, uid: str = "") -> dict[str, Any]:
    b = binding(node, uid)
    b["metadata"]["name"] = pod
    return b


async def test_a_binding_list_binds_every_pod_in_one_revision(served: Served) -> None:
    uids = [(await ok(served, "POST", PODS, pod(f"p{i}")))["metadata"]["uid"]
            for i in range(5)]
    before = await settled_revision(served)
    status, body = await call(served, "POST", PODS, {
        "apiVersion": "v1", "kind": "BindingList",
        "items": [binding_of(f"p{i}", f"n{i}", uids[i]) for i in range(5)]})
    assert status == 201, body
    assert [(a["status"], a["code"]) for a in body["items"]] == [("Success", 201)] * 5
    assert await settled_revision(served) == before + 1  # one transaction
    for i in range(5):
        got = await ok(served, "GET", f"{PODS}/p{i}")
        assert got["spec"]["nodeName"] == f"n{i}"
        assert [c["status"] for c in got["status"]["conditions"]
                if c["type"] == "PodScheduled"] == ["True"]


async def test_each_binding_of_a_list_gets_its_own_answer(served: Served) -> None:
    await ok(served, "POST", PODS, pod("free"))
    await ok(served, "POST", PODS, pod("taken"))
    await ok(served, "POST", PODS + "/taken/binding", binding_of("taken", "n1"))
    await ok(served, "POST", PODS, pod("twice"))
    status, body = await call(served, "POST", PODS, {
        "apiVersion": "v1", "kind": "BindingList",
        "items": [binding_of("free", "n2"), binding_of("taken", "n2"),
                  binding_of("missing", "n2"), binding_of("twice", "n3"),
                  binding_of("twice", "n4"), binding_of("free", "Bad_Node"),
                  binding_of("free", "n5", uid="not-its-uid")]})
    assert status == 201, body
    assert [a["code"] for a in body["items"]] == [201, 409, 404, 201, 409, 400, 409]
    assert 'already assigned to node "n1"' in body["items"][1]["message"]
    assert (await ok(served, "GET", PODS + "/free"))["spec"]["nodeName"] == "n2"
    assert (await ok(served, "GET", PODS + "/taken"))["spec"]["nodeName"] == "n1"
    assert (await ok(served, "GET", PODS + "/twice"))["spec"]["nodeName"] == "n3"


@pytest.mark.parametrize(("body", "says"), [
    ({"apiVersion": "v1", "kind": "BindingList", "items": []}, "non-empty list"),
    ({"apiVersion": "v2", "kind": "BindingList", "items": [binding("n1")]}, "apiVersion v1"),
    ({"apiVersion": "v1", "kind": "BindingList",
      "items": [binding_of(f"p{i}", "n1") for i in range(101)]}, "at most 100"),
])
async def test_a_bad_binding_list_binds_nothing(served: Served, body: dict[str, Any],
                                                says: str) -> None:
    await ok(served, "POST", PODS, pod("p"))
    before = await settled_revision(served)
    status, answer = await call(served, "POST", PODS, body)
    assert status == 400 and says in answer["message"], answer
    assert await settled_revision(served) == before


async def test_a_binding_list_of_a_replaced_leader_is_refused(served: Served) -> None:
    await ok(served, "POST", PODS, pod("p"))
    term = served.replica.view.term
    await served.replica.propose("noop", term=term + 1)
    before = await settled_revision(served)
    status, answer = await call(served, "POST", PODS, {
        "apiVersion": "v1", "kind": "BindingList", "items": [binding_of("p", "n1")] * 2},
        headers={TERM: str(term)})
    # Two of the same pod: the list's transaction has one, the second goes on its own;
    # both are stamped with the old term and refused.
    assert status == 409 and "stale term" in answer["message"], answer
    assert await settled_revision(served) == before
    assert not (await ok(served, "GET", PODS + "/p"))["spec"].get("nodeName")


async def test_a_node_may_not_send_a_binding_list(served: Served) -> None:
    await ok(served, "POST", PODS, pod("p"))
    status, answer = await call(served, "POST", PODS, {
        "apiVersion": "v1", "kind": "BindingList", "items": [binding_of("p", "n1")]},
        headers=NODE, auth=False)
    assert status == 403, answer


async def test_a_binding_list_past_the_store_limit_binds_every_pod(served: Served) -> None:
    # 40 pods of 50 KB: their bound copies are past the store's 1.5 MiB request limit
    # for one txn; those that do not fit are bound on their own, not refused all.
    for i in range(40):
        big = pod(f"p{i}")
        big["metadata"]["annotations"] = {"a": f"{i}" + "x" * 50_000}
        await ok(served, "POST", PODS, big)
    status, body = await call(served, "POST", PODS, {
        "apiVersion": "v1", "kind": "BindingList",
        "items": [binding_of(f"p{i}", "n1") for i in range(40)]})
    assert status == 201, str(body)[:500]
    assert [a["code"] for a in body["items"]] == [201] * 40
    for i in range(40):
        assert (await ok(served, "GET", f"{PODS}/p{i}"))["spec"]["nodeName"] == "n1"


async def test_a_binding_list_whose_txn_was_written_is_never_a_503(served: Served) -> None:
    # The second binding of `p` goes through `bind` on its own after the txn bound the
    # first; a replica that fails it then answers for that binding alone: a 503 for the
    # whole request would tell the client nothing was written and to send it elsewhere.
    await ok(served, "POST", PODS, pod("p"))
    objects = ob.Objects(served.replica)

    async def unavailable(*_: Any, **__: Any) -> dict[str, Any]:
        raise rep.Unavailable("no leader")

    objects.bind = unavailable  # type: ignore[method-assign]
    answers = await objects.bind_batch("default", [binding_of("p", "n1")] * 2)
    assert answers[0] == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                          "status": "Success", "code": 201}
    assert isinstance(answers[1], stt.ApiError) and answers[1].code == 503
    assert (await ok(served, "GET", PODS + "/p"))["spec"]["nodeName"] == "n1"
