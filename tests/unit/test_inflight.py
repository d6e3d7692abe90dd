"""inflight: a controller's own writes until its informer shows them."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.controllers import inflight
from tests.unit.workloads import pod

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def _marked(obj: Obj) -> Obj:
    return pod(obj["metadata"]["name"], rv=int(obj["metadata"]["resourceVersion"]) + 1,
               deleting=True)


def _names(objs: list[Obj]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objs)


def test_writes_in_flight_settle_when_seen_or_expired() -> None:
    flight = inflight.InFlight(ttl=60)
    a, b = pod("a", rv=30), pod("b", rv=20)
    flight.created("owner", a, 100.0)
    flight.deleted("owner", b, 100.0)
    cached = [b]
    assert not flight.settled("owner", cached, seen_revision=25, now=100.0)
    cached.append(a)
    # b is still there, not marked
    assert not flight.settled("owner", cached, seen_revision=25, now=100.0)
    cached[0] = _marked(b)
    assert flight.settled("owner", cached, seen_revision=25, now=100.0)
    flight.created("owner", pod("never", rv=40), 100.0)
    # its watch event was lost for good: the owner is not stalled forever
    assert not flight.settled("owner", cached, seen_revision=25, now=160.0)
    assert flight.settled("owner", cached, seen_revision=25, now=161.0)
    assert flight.settled("other", cached, seen_revision=25, now=161.0)


@pytest.mark.parametrize(("write", "revision", "cached", "settled"), [
    # A create is seen once the cache shows it, or the informer has passed its revision
    # (the pod may have come and gone meanwhile).
    ("create", 29, [], False),
    ("create", 29, ["a"], True),
    ("create", 30, [], True),
    # A delete is seen once the cache shows it marked, or not at all from a revision the
    # informer had reached when it was read.
    ("delete", 29, ["b"], False),
    ("delete", 29, ["b-marked"], True),
    ("delete", 19, [], False),
    ("delete", 20, [], True),
])
def test_what_the_informer_has_seen(write: str, revision: int, cached: list[str],
                                    settled: bool) -> None:
    flight = inflight.InFlight()
    a, b = pod("a", rv=30), pod("b", rv=20)
    if write == "create":
        flight.created("owner", a, 100.0)
    else:
        flight.deleted("owner", b, 100.0)
    shown = {"a": a, "b": b, "b-marked": _marked(b)}
    assert flight.settled("owner", [shown[n] for n in cached], seen_revision=revision,
                          now=100.0) == settled
    assert not flight._owners if settled else flight._owners


def test_a_view_adds_what_was_created_and_leaves_out_what_was_deleted() -> None:
    flight = inflight.InFlight()
    made, doomed, kept = pod("made", rv=30), pod("doomed", rv=20), pod("kept", rv=10)
    flight.created("owner", made, 100.0)
    flight.deleted("owner", doomed, 100.0)
    assert _names(flight.view("owner", [doomed, kept], seen_revision=25, now=100.0)) == \
        ["kept", "made"]
    assert _names(flight.view("other", [doomed, kept], seen_revision=25, now=100.0)) == \
        ["doomed", "kept"]
    flight.forget("owner")
    assert _names(flight.view("owner", [doomed, kept], seen_revision=25, now=100.0)) == \
        ["doomed", "kept"]
