"""claims: what an owner adopts and releases, the patches that do it, the orphans index."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError
from raftkube.controllers import claims
from tests.unit.controller_fixture import Fixture, conflict, not_found
from tests.unit.workloads import NS, pod, replicaset

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
OWNER = replicaset("front")
OTHER = replicaset("other", app="other")


def _pod(name: str, *, owner: Obj | None = None, app: str = "front", **kw: Any) -> Obj:
    return pod(name, owner, labels={"app": app}, **kw)


def _elsewhere(obj: Obj) -> Obj:
    obj["metadata"]["namespace"] = "elsewhere"
    return obj


def _names(objs: list[Obj]) -> list[str]:
    return [o["metadata"]["name"] for o in objs]


# (the object, whether it is in the OWNER index or an orphan, what the owner does with
# it: mine, adopt (and mine), release, or nothing).
CASES = [
    (_pod("own", owner=OWNER), "owned", "mine"),
    (_pod("stray", owner=OWNER, app="elsewhere"), "owned", "release"),
    (_pod("theirs", owner=OTHER), "owned", "nothing"),  # another controller's
    (_pod("orphan"), "orphan", "adopt"),
    (_pod("orphan-going", deleting=True), "orphan", "nothing"),
    (_pod("orphan-unmatched", app="elsewhere"), "orphan", "nothing"),
    (_elsewhere(_pod("orphan-abroad")), "orphan", "nothing"),
]


@pytest.mark.parametrize(("obj", "where", "fate"), CASES,
                         ids=[c[0]["metadata"]["name"] for c in CASES])
@pytest.mark.parametrize("deleting", [False, True], ids=["owner", "owner-deleting"])
def test_what_an_owner_claims(obj: Obj, where: str, fate: str, deleting: bool) -> None:
    owner = copy.deepcopy(OWNER)
    if deleting:  # an owner being deleted adopts and releases nothing
        owner["metadata"]["deletionTimestamp"] = "2023-11-14T22:13:20Z"
        fate = {"adopt": "nothing", "release": "nothing"}.get(fate, fate)
    owned, orphans = ([obj], []) if where == "owned" else ([], [obj])
    got = claims.claim(owner, claims.selector_of(owner), owned, orphans)
    assert (got.adopt, got.release) == ([obj] if fate == "adopt" else [],
                                        [obj] if fate == "release" else [])
    assert got.mine == ([obj] if fate in ("mine", "adopt") else [])


async def test_adoptions_then_releases_carry_the_version_decided_on() -> None:
    f = Fixture()
    orphan, stray, own = _pod("orphan", rv=21), _pod("stray", owner=OWNER, app="x", rv=22), \
        _pod("own", owner=OWNER)
    decided = claims.claim(OWNER, claims.selector_of(OWNER), [own, stray], [orphan])
    answers: list[Obj] = []
    client: Any = f.client
    mine = await claims.send(client, kinds.POD, OWNER, decided, wrote=answers.append)
    assert [(a.verb, a.name) for a in f.client.actions] == [("patch", "orphan"),
                                                            ("patch", "stray")]
    adopt, release = (a.body["metadata"] for a in f.client.actions)
    assert adopt["resourceVersion"] == "21" and release["resourceVersion"] == "22"
    assert [r["uid"] for r in adopt["ownerReferences"]] == ["uid-front"]
    assert release["ownerReferences"] is None
    assert _names(mine) == ["own", "orphan"]
    adopted = mine[1]
    assert adopted["metadata"]["ownerReferences"] == adopt["ownerReferences"]
    assert adopted["metadata"]["resourceVersion"] == inf.resource_version(answers[0])
    assert orphan["metadata"].get("ownerReferences") is None  # the cached one is left alone
    assert len(answers) == 2


@pytest.mark.parametrize(("verb_on", "error", "mine", "raised"), [
    ("orphan", not_found("orphan"), ["own"], False),  # gone: not adopted, not ours
    ("stray", not_found("stray"), ["own", "orphan"], False),
    ("orphan", conflict("orphan"), None, True),  # changed since read: retried on the news
    ("stray", conflict("stray"), None, True),
])
async def test_a_claim_on_a_changed_or_vanished_object(verb_on: str, error: ApiError,
                                                       mine: list[str] | None,
                                                       raised: bool) -> None:
    f = Fixture()
    orphan, stray, own = _pod("orphan"), _pod("stray", owner=OWNER, app="x"), \
        _pod("own", owner=OWNER)
    decided = claims.claim(OWNER, claims.selector_of(OWNER), [own, stray], [orphan])
    f.client.fail[("patch", verb_on)] = error
    client: Any = f.client
    if raised:
        with pytest.raises(ApiError):
            await claims.send(client, kinds.POD, OWNER, decided)
    else:
        got = await claims.send(client, kinds.POD, OWNER, decided)
        assert _names(got) == mine


def test_orphans_are_kept_by_namespace_from_the_informers_events() -> None:
    cache = inf.Cache()
    index = claims.Orphans(cache)
    handler = index.handler()
    assert handler.add is not None and handler.update is not None \
        and handler.delete is not None
    orphan, owned = _pod("orphan"), _pod("own", owner=OWNER)
    abroad = _elsewhere(_pod("abroad"))
    for obj in (orphan, owned, abroad):
        cache.put(obj)
        handler.add(obj)
    assert _names(index.in_namespace(NS)) == ["orphan"]
    assert _names(index.in_namespace("elsewhere")) == ["abroad"]
    adopted = _pod("orphan", owner=OWNER)
    cache.put(adopted)
    handler.update(orphan, adopted)
    assert index.in_namespace(NS) == []
    released = _pod("own")
    cache.put(released)
    handler.update(owned, released)
    assert _names(index.in_namespace(NS)) == ["own"]
    cache.remove(inf.key_of(released))
    handler.delete(released)
    assert index.in_namespace(NS) == [] and index._keys == {"elsewhere": {"elsewhere/abroad"}}


def _owners() -> inf.Cache:
    cache = inf.Cache()
    everything = replicaset("everything", app="front")
    everything["spec"]["selector"] = {}  # selects nothing, not everything
    for owner in (OWNER, OTHER, everything):
        cache.put(owner)
    return cache


def _with(obj: Obj, **labels: str) -> Obj:
    out = copy.deepcopy(obj)
    out["metadata"]["labels"] = labels
    return out


def _as_running(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    out["status"]["phase"] = "Running"
    return out


DEPLOYMENT_POD = _pod("by-deployment")
DEPLOYMENT_POD["metadata"]["ownerReferences"] = [{
    "apiVersion": "apps/v1", "kind": "Deployment", "name": "front", "uid": "uid-d",
    "controller": True}]

# (event, old, new, the keys woken): Kubernetes' addPod/updatePod/deletePod.
ROUTES = [
    ("add", None, _pod("own", owner=OWNER), ["ns/front"]),
    ("add", None, DEPLOYMENT_POD, []),  # another kind's: not this controller's business
    ("add", None, _pod("orphan"), ["ns/front"]),
    ("add", None, _pod("orphan", app="nobody"), []),
    ("delete", None, _pod("own", owner=OWNER), ["ns/front"]),
    ("delete", None, _pod("orphan"), ["ns/front"]),
    ("update", _pod("own", owner=OWNER), _as_running(_pod("own", owner=OWNER)), ["ns/front"]),
    ("update", _pod("moved", owner=OWNER), _pod("moved", owner=OTHER), ["ns/front", "ns/other"]),
    ("update", _pod("released", owner=OWNER), _pod("released"), ["ns/front", "ns/front"]),
    ("update", _pod("orphan"), _as_running(_pod("orphan")), []),  # news to nobody
    ("update", _pod("orphan"), _with(_pod("orphan"), app="other"), ["ns/other"]),
]


@pytest.mark.parametrize(("event", "old", "new", "woken"), ROUTES,
                         ids=[f"{r[0]}-{r[2]['metadata']['name']}-{i}"
                              for i, r in enumerate(ROUTES)])
def test_which_owners_hear_of_an_event(event: str, old: Obj | None, new: Obj,
                                       woken: list[str]) -> None:
    keys: list[str] = []
    routes = claims.OwnerEvents("ReplicaSet", _owners(), keys.append)
    if event == "update":
        assert old is not None
        routes.updated(old, new)
    else:
        routes.changed(new)
    assert keys == woken
