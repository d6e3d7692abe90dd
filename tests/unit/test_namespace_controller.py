"""The namespace controller, one reconcile at a time: it empties a terminating namespace
through the API, reports what remains in Kubernetes' conditions, and finalizes only a
namespace a read through the API found empty."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.client import workqueue
from raftkube.controllers import namespace as nsc
from tests.unit.controller_fixture import Fixture

pytestmark = pytest.mark.unit


def namespace(name: str = "team", *, terminating: bool = True,
              finalizers: tuple[str, ...] = ("kubernetes",)) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"u-{name}", "resourceVersion": "7"}
    if terminating:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta,
            "spec": {"finalizers": list(finalizers)},
            "status": {"phase": "Terminating" if terminating else "Active"}}


def obj(kind: kinds.Kind, name: str, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": kind.api_version, "kind": kind.kind,
            "metadata": {"name": name, "namespace": "team", "uid": f"u-{name}", **meta}}


def make(f: Fixture) -> nsc.NamespaceController:
    c = nsc.NamespaceController(f.ctx)
    c.queue = workqueue.WorkQueue()
    return c


async def test_a_terminating_namespace_is_emptied_and_says_what_remains() -> None:
    f = Fixture()
    f.seed(kinds.NAMESPACE, namespace())
    f.client.live.update({
        ("configmaps", "team", "a"): obj(kinds.CONFIGMAP, "a"),
        ("pods", "team", "p"): obj(kinds.POD, "p", deletionTimestamp="2024-01-01T00:00:01Z",
                                   finalizers=["example.com/h"]),
        ("configmaps", "other", "b"): obj(kinds.CONFIGMAP, "b") | {"metadata": {
            "name": "b", "namespace": "other"}},
    })
    c = make(f)
    actions = await f.run(c, "team")
    deletes = [(a.kind, a.name, a.body["propagation"], a.body["uid"])
               for a in actions if a.verb == "delete"]
    assert deletes == [("configmaps", "a", "Background", "u-a")]  # p is going already
    assert [a.verb for a in actions][-1] == "update_status"  # the fake deletes nothing
    found = {c["type"]: c for c in actions[-1].body["status"]["conditions"]}
    assert found["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: configmaps. has 1 resource instances, pods. has 1 "
        "resource instances")
    assert found["NamespaceFinalizersRemaining"]["message"] == (
        "Some content in the namespace has finalizers remaining: example.com/h in 1 "
        "resource instances")
    assert found["NamespaceDeletionContentFailure"]["status"] == "False"
    assert not any(a.verb == "finalize" for a in actions)


async def test_an_empty_namespace_is_finalized_through_the_subresource() -> None:
    f = Fixture()
    f.seed(kinds.NAMESPACE, namespace(finalizers=("kubernetes", "example.com/keep")))
    actions = await f.run(make(f), "team")
    assert [a.verb for a in actions] == ["update_status", "finalize"]
    found = {c["type"]: (c["status"], c["reason"])
             for c in actions[0].body["status"]["conditions"]}
    assert found == {"NamespaceDeletionContentFailure": ("False", "ContentDeleted"),
                     "NamespaceContentRemaining": ("False", "ContentRemoved"),
                     "NamespaceFinalizersRemaining": ("False", "ContentHasNoFinalizers")}
    assert actions[1].body["spec"]["finalizers"] == ["example.com/keep"]
    assert actions[1].body["metadata"]["resourceVersion"]  # a compare-and-swap


async def test_content_in_the_cache_only_does_not_hold_a_namespace() -> None:
    f = Fixture()
    f.seed(kinds.NAMESPACE, namespace())
    f.seed(kinds.CONFIGMAP, obj(kinds.CONFIGMAP, "stale"))  # deleted: the cache is behind
    del f.client.live[("configmaps", "team", "stale")]
    actions = await f.run(make(f), "team")
    assert [a.verb for a in actions] == ["update_status", "finalize"]


@pytest.mark.parametrize("ns", [namespace(terminating=False),
                                namespace(finalizers=("example.com/other",))])
async def test_a_live_or_finalized_namespace_is_left_alone(ns: dict[str, Any]) -> None:
    f = Fixture()
    f.seed(kinds.NAMESPACE, ns)
    f.client.live[("configmaps", "team", "a")] = obj(kinds.CONFIGMAP, "a")
    assert await f.run(make(f), "team") == []
    assert f.client.reads == []


def test_conditions_read_like_kubernetes() -> None:
    out = nsc.content_conditions({"deployments.apps": 2}, {}, ["pods.: timeout"])
    assert out == [
        {"type": "NamespaceDeletionContentFailure", "status": "True",
         "reason": "ContentDeletionFailed",
         "message": "Failed to delete all resource types, 1 remaining: pods.: timeout"},
        {"type": "NamespaceContentRemaining", "status": "True",
         "reason": "SomeResourcesRemain",
         "message": "Some resources are remaining: deployments.apps has 2 resource instances"},
        {"type": "NamespaceFinalizersRemaining", "status": "False",
         "reason": "ContentHasNoFinalizers",
         "message": "All content-preserving finalizers finished"}]
