"""The garbage collector, one reconcile over seeded caches: what it deletes, patches and
leaves alone, and the reads through the API it makes before it believes an owner gone."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.client import workqueue
from raftkube.controllers.garbagecollector import GarbageCollector
from tests.unit.controller_fixture import Fixture

pytestmark = pytest.mark.unit

CM = kinds.CONFIGMAP


def cm(name: str, *owners: dict[str, Any], rv: str = "10", **meta: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
        "name": name, "namespace": "ns", "uid": f"u-{name}", "resourceVersion": rv, **meta}}
    if owners:
        out["metadata"]["ownerReferences"] = list(owners)
    return out


def ref(owner: dict[str, Any], *, block: bool = False) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block}


def deleting(obj: dict[str, Any], *finalizers: str) -> dict[str, Any]:
    obj["metadata"].update(deletionTimestamp="2024-01-01T00:00:00Z",
                           finalizers=list(finalizers))
    return obj


def make(f: Fixture, *, rv: str = "100") -> GarbageCollector:
    gc = GarbageCollector(f.ctx)
    for informer in gc.informers.values():
        informer.synced.set()
        informer.resource_version = rv  # every informer has seen up to `rv`
    gc.queue = workqueue.WorkQueue()  # what seeding queued: the tests reconcile
    return gc


def verbs(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.verb, a.name) for a in actions]


async def test_an_object_whose_owner_is_gone_is_deleted_after_a_read_confirms_it() -> None:
    f = Fixture()
    gone = cm("owner")
    f.seed(CM, cm("dep", ref(gone)))
    gc = make(f)
    actions = await f.run(gc, "configmaps/ns/dep")
    assert verbs(actions) == [("delete", "dep")]
    assert actions[0].body == {"propagation": "Background", "grace": None, "uid": "u-dep",
                               "resourceVersion": "10"}  # both are preconditions
    assert ("configmaps", "ns", "owner") in f.client.reads


async def test_an_owner_missing_only_from_the_cache_is_not_presumed_gone() -> None:
    f = Fixture()
    owner = cm("owner")
    f.seed(CM, cm("dep", ref(owner)))
    f.client.live[("configmaps", "ns", "owner")] = owner  # made just now: not cached yet
    assert await f.run(make(f), "configmaps/ns/dep") == []


async def test_an_owner_recreated_under_the_same_name_is_another_owner() -> None:
    f = Fixture()
    old = cm("owner")
    new = cm("owner")
    new["metadata"]["uid"] = "u-owner-2"
    f.seed(CM, new, cm("dep", ref(old)))
    assert verbs(await f.run(make(f), "configmaps/ns/dep")) == [("delete", "dep")]


async def test_a_dependent_keeps_its_live_owners_and_forgets_the_others() -> None:
    f = Fixture()
    alive, gone = cm("alive"), cm("gone")
    f.seed(CM, alive, cm("dep", ref(alive), ref(gone)))
    actions = await f.run(make(f), "configmaps/ns/dep")
    assert verbs(actions) == [("patch", "dep")]
    assert actions[0].body == {"metadata": {"ownerReferences": [ref(alive)],
                                            "resourceVersion": "10"}}


async def test_an_object_with_live_owners_or_unknown_owner_kinds_is_left_alone() -> None:
    f = Fixture()
    alive = cm("alive")
    odd = {"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "u-w"}
    f.seed(CM, alive, cm("dep", ref(alive)), cm("odd", odd))
    gc = make(f)
    assert await f.run(gc, "configmaps/ns/dep") == []
    assert await f.run(gc, "configmaps/ns/odd") == []
    assert f.client.reads == []  # the cache sufficed


async def test_the_dependents_of_a_foreground_owner_are_deleted_and_it_waits() -> None:
    f = Fixture()
    owner = deleting(cm("owner"), "foregroundDeletion")
    leaf = cm("leaf", ref(owner, block=True))
    middle = cm("middle", ref(owner, block=True))
    f.seed(CM, owner, leaf, middle, cm("below", ref(middle)))
    gc = make(f)
    assert await f.run(gc, "configmaps/ns/owner") == []  # blocked by both
    assert len(gc.queue) == 2  # both dependents looked at next
    assert verbs(await f.run(gc, "configmaps/ns/leaf")) == [("delete", "leaf")]
    actions = await f.run(gc, "configmaps/ns/middle")  # it has dependents: foreground too
    assert [(a.verb, a.name, a.body["propagation"]) for a in actions] == [
        ("delete", "middle", "Foreground")]


async def test_a_foreground_owner_lets_go_once_no_blocking_dependent_is_left() -> None:
    f = Fixture()
    owner = deleting(cm("owner", rv="50"), "foregroundDeletion", "example.com/h")
    f.seed(CM, owner, cm("loose", ref(owner, block=False)))
    actions = await f.run(make(f), "configmaps/ns/owner")
    assert verbs(actions) == [("patch", "owner")]
    assert actions[0].body == {"metadata": {"finalizers": ["example.com/h"],
                                            "resourceVersion": "50"}}


async def test_a_lagging_informer_is_listed_before_an_owner_is_let_go() -> None:
    f = Fixture()
    owner = deleting(cm("owner", rv="200"), "foregroundDeletion")
    f.seed(CM, owner)
    gc = make(f, rv="150")  # no informer has seen the owner's own revision
    late = cm("late", ref(owner, block=True))
    f.client.live[("configmaps", "ns", "late")] = late  # in the store, not in the cache
    assert await f.run(gc, "configmaps/ns/owner") == []
    assert ("configmaps", "ns", "") in f.client.reads
    assert ("nodes", "", "") not in f.client.reads  # cluster-scoped: cannot depend on it
    del f.client.live[("configmaps", "ns", "late")]
    for informer in gc.informers.values():
        informer.resource_version = "200"
    assert verbs(await f.run(gc, "configmaps/ns/owner")) == [("patch", "owner")]


async def test_a_cycle_of_foreground_owners_is_unblocked() -> None:
    f = Fixture()
    a = deleting(cm("a"), "foregroundDeletion")
    b = cm("b", ref(a, block=True), rv="20")
    a["metadata"]["ownerReferences"] = [ref(b, block=True)]
    f.seed(CM, a, b)
    actions = await f.run(make(f), "configmaps/ns/b")
    assert verbs(actions) == [("patch", "b"), ("delete", "b")]
    assert actions[0].body["metadata"]["ownerReferences"] == [ref(a, block=False)]
    assert actions[1].body["propagation"] == "Foreground"


async def test_an_orphaning_owner_strips_itself_from_dependents_then_lets_go() -> None:
    f = Fixture()
    owner = deleting(cm("owner", rv="30"), "orphan")
    other = cm("other")
    f.seed(CM, owner, other, cm("d1", ref(owner), rv="11"),
           cm("d2", ref(owner), ref(other), rv="12"))
    actions = await f.run(make(f), "configmaps/ns/owner")
    assert [(a.verb, a.name, a.body) for a in actions] == [
        ("patch", "d1", {"metadata": {"ownerReferences": None, "resourceVersion": "11"}}),
        ("patch", "d2", {"metadata": {"ownerReferences": [ref(other)],
                                      "resourceVersion": "12"}}),
        ("patch", "owner", {"metadata": {"finalizers": None, "resourceVersion": "30"}})]


async def test_a_dependent_is_collected_with_the_policy_of_its_own_finalizers() -> None:
    f = Fixture()
    f.seed(CM, cm("dep", ref(cm("gone")), finalizers=["orphan"]))
    actions = await f.run(make(f), "configmaps/ns/dep")
    assert actions[0].body["propagation"] == "Orphan"


async def test_an_owner_found_gone_once_is_not_read_again() -> None:
    f = Fixture()
    gone = cm("owner")
    f.seed(CM, cm("d1", ref(gone)), cm("d2", ref(gone)))
    gc = make(f)
    await f.run(gc, "configmaps/ns/d1")
    await f.run(gc, "configmaps/ns/d2")
    assert f.client.reads.count(("configmaps", "ns", "owner")) == 1


async def test_a_cluster_scoped_object_is_never_collected_for_a_namespaced_owner() -> None:
    f = Fixture()
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "n1", "uid": "u-n1", "resourceVersion": "3",
        "ownerReferences": [ref(cm("owner"))]}}
    f.seed(kinds.NODE, node)
    assert await f.run(make(f), "nodes/n1") == []
    assert [e[1] for e in f.recorded_events()] == ["OwnerRefInvalidNamespace"]


async def test_handlers_queue_the_dependents_of_what_goes() -> None:
    f = Fixture()
    owner = cm("owner")
    f.seed(CM, owner, cm("dep", ref(owner)), cm("unrelated"))
    gc = make(f)
    gc._deleted(CM, owner)
    assert len(gc.queue) == 1 and await gc.queue.get() == "configmaps/ns/dep"
