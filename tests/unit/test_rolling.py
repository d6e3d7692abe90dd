"""A Deployment's arithmetic as tables and properties: fenceposts, how far the new
ReplicaSet grows, how far old ones shrink, resizes shared in proportion; its status."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkube.api import rollout
from raftkube.api.timestamps import rfc3339
from raftkube.controllers import progress, rolling
from tests.unit.controller_fixture import T0

pytestmark = pytest.mark.unit
Obj = dict[str, Any]


def dep(replicas: int, surge: Any = "25%", unavailable: Any = "25%", **spec: Any) -> Obj:
    return {"metadata": {"name": "d", "generation": 1},
            "spec": {"replicas": replicas, "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
                **spec}}


def rs(name: str, spec: int, *, reported: int | None = None, available: int = 0,
       created: float = 0.0, most: int | None = None) -> Obj:
    obj: Obj = {"metadata": {"name": name, "creationTimestamp": rfc3339(T0 + created)},
                "spec": {"replicas": spec},
                "status": {"replicas": spec if reported is None else reported,
                           "availableReplicas": available}}
    if most is not None:
        obj["metadata"]["annotations"] = {rollout.MAX_REPLICAS: str(most)}
    return obj


@pytest.mark.parametrize(("replicas", "surge", "unavailable", "expected", "most_gone"), [
    (10, "25%", "25%", (3, 2), 2),  # surge rounds up, unavailable down
    (3, "25%", "25%", (1, 0), 0),
    (4, 0, 1, (0, 1), 1),
    (4, "0%", "10%", (0, 1), 1),  # both resolve to 0: one may be unavailable
    (5, 2, "100%", (2, 5), 5),
    (2, 0, 5, (0, 5), 2),  # never more than there are
    (0, "25%", "25%", (0, 1), 0),
])
def test_fenceposts(replicas: int, surge: Any, unavailable: Any,
                    expected: tuple[int, int], most_gone: int) -> None:
    d = dep(replicas, surge, unavailable)
    assert rolling.fenceposts(d) == expected
    assert rolling.max_unavailable(d) == most_gone


def test_recreate_has_no_fenceposts_and_wants_everything_at_once() -> None:
    d = {"metadata": {"name": "d"}, "spec": {"replicas": 4, "strategy": {"type": "Recreate"}}}
    assert rolling.fenceposts(d) == (0, 0)
    assert rolling.new_replicas(d, [rs("old", 4)], rs("new", 0)) == 4


@pytest.mark.parametrize(("sizes", "new_spec", "expected"), [
    ([3], 0, 1),  # 3 + 1 surge
    ([2], 1, 2),
    ([3], 1, 1),  # at 4 already
    ([], 0, 3),  # nothing old: all at once, never past replicas
    ([1], 3, 3),
])
def test_how_far_the_new_replicaset_grows(sizes: list[int], new_spec: int,
                                          expected: int) -> None:
    d = dep(3)
    new = rs("new", new_spec)
    olds = [rs(f"o{i}", n) for i, n in enumerate(sizes)]
    assert rolling.new_replicas(d, olds + [new], new) == expected


# ---- properties -----------------------------------------------------------------------

fence = st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"]))


@st.composite
def rollouts(draw: st.DrawFn) -> tuple[Obj, list[Obj], Obj]:
    replicas = draw(st.integers(1, 12))
    surge, unavailable = draw(fence), draw(fence)
    d = dep(replicas, surge, unavailable)
    olds = []
    for i in range(draw(st.integers(0, 3))):
        spec = draw(st.integers(0, 12))
        reported = draw(st.integers(0, 12))
        olds.append(rs(f"old{i}", spec, reported=reported, created=i,
                       available=draw(st.integers(0, reported))))
    spec = draw(st.integers(0, replicas))
    reported = draw(st.integers(0, spec))
    new = rs("new", spec, reported=reported, created=10,
             available=draw(st.integers(0, reported)))
    return d, olds, new


@given(rollouts())
@settings(max_examples=400, deadline=None)
def test_the_new_replicaset_never_takes_pods_past_replicas_plus_surge(
        case: tuple[Obj, list[Obj], Obj]) -> None:
    d, olds, new = case
    ceiling = rolling.replicas(d) + rolling.max_surge(d)
    before = sum(rolling.pods_of(r) for r in olds + [new])
    grown = dict(new, spec={"replicas": rolling.new_replicas(d, olds + [new], new)})
    after = sum(rolling.pods_of(r) for r in olds + [grown])
    assert rolling.replicas(grown) >= rolling.replicas(new)
    assert rolling.replicas(grown) <= max(rolling.replicas(d), rolling.replicas(new))
    if rolling.replicas(grown) > rolling.replicas(new):
        assert after <= ceiling
    else:
        assert after == before


@given(rollouts())
@settings(max_examples=400, deadline=None)
def test_old_replicasets_never_shrink_availability_below_the_floor(
        case: tuple[Obj, list[Obj], Obj]) -> None:
    d, olds, new = case
    floor = rolling.replicas(d) - rolling.max_unavailable(d)
    sizes = rolling.old_sizes(d, new, olds)
    shrunk = [dict(r, spec={"replicas": sizes.get(r["metadata"]["name"],
                                                  rolling.replicas(r))}) for r in olds]
    before = sum(rolling.available_of(r) for r in olds + [new])
    after = sum(rolling.available_of(r) for r in shrunk + [new])
    assert all(0 <= sizes[r["metadata"]["name"]] < rolling.replicas(r)
               for r in olds if r["metadata"]["name"] in sizes)
    assert after >= min(before, floor)


@given(st.lists(st.integers(1, 10), min_size=2, max_size=4), st.integers(0, 20),
       st.integers(1, 20))
@settings(max_examples=300, deadline=None)
def test_a_resize_shares_out_exactly_the_room_there_is(sizes: list[int], replicas: int,
                                                       before: int) -> None:
    d = dep(replicas, 1, 0)
    rss = [rs(f"r{i}", n, created=i, most=before) for i, n in enumerate(sizes)]
    out = rolling.proportional_sizes(d, rss)
    room = replicas + 1 if replicas else 0
    assert all(v >= 0 for v in out.values())
    assert set(out) == {r["metadata"]["name"] for r in rss}
    if room >= sum(sizes) or min(out.values()) > 0:
        assert sum(out.values()) == room


def test_a_resize_to_zero_empties_everything() -> None:
    out = rolling.proportional_sizes(dep(0), [rs("a", 3, most=4), rs("b", 1, most=4)])
    assert out == {"a": 0, "b": 0}


# ---- status ---------------------------------------------------------------------------

def test_the_status_adds_up_the_replicasets() -> None:
    d = dep(4, 1, 1, progressDeadlineSeconds=600)
    old = rs("old", 2, available=2)
    old["status"]["readyReplicas"] = 2
    new = rs("new", 3, reported=2, available=1)
    new["status"]["readyReplicas"] = 1
    status = progress.calculate_status(d, [old, new], new, T0)
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 1, "replicas": 4, "updatedReplicas": 2, "readyReplicas": 3,
        "availableReplicas": 3, "unavailableReplicas": 2}
    assert progress.get_condition(status, "Available")["status"] == "True"  # 3 >= 4 - 1


def test_a_condition_keeps_its_times_while_its_status_and_reason_stay() -> None:
    status: Obj = {}
    progress.set_condition(status, progress.condition("Progressing", "True", "A", "m", T0))
    progress.set_condition(status, progress.condition("Progressing", "True", "A", "n", T0 + 5))
    c = status["conditions"][0]
    assert (c["message"], c["lastUpdateTime"]) == ("m", rfc3339(T0))
    progress.set_condition(status, progress.condition("Progressing", "True", "B", "n", T0 + 9))
    c = status["conditions"][0]
    assert (c["reason"], c["lastUpdateTime"], c["lastTransitionTime"]) == \
        ("B", rfc3339(T0 + 9), rfc3339(T0))
    progress.set_condition(status, progress.condition("Progressing", "False", "C", "x", T0 + 20))
    assert status["conditions"][0]["lastTransitionTime"] == rfc3339(T0 + 20)


def test_progress_without_a_new_replicaset_is_the_deployments() -> None:
    d = dep(2, progressDeadlineSeconds=600)
    d["metadata"]["name"] = "front"
    d["status"] = {"replicas": 2, "updatedReplicas": 0}
    old = rs("old", 0, reported=1)  # Recreate, emptying the old one first
    status = progress.rollout_status(d, [old], None, T0)
    cond = progress.get_condition(status, "Progressing")
    assert cond is not None
    assert (cond["reason"], cond["message"]) == \
        ("ReplicaSetUpdated", 'Deployment "front" is progressing.')
