"""podcontrol: slow start, a pod from a template, what a create or a delete tells."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.client.errors import ApiError
from raftkube.controllers import inflight, podcontrol
from tests.unit.controller_fixture import Fixture, conflict, not_found
from tests.unit.workloads import pod, replicaset

pytestmark = pytest.mark.unit


async def test_slow_start_doubles_batches_and_stops_after_a_failing_one() -> None:
    seen: list[int] = []

    async def write(i: int) -> None:
        seen.append(i)
        if i == 4:
            raise RuntimeError("quota")

    done, error = await podcontrol.slow_start(list(range(20)), write)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5, 6]  # batches of 1, 2, 4; the third failed
    assert len(done) == 6 and isinstance(error, RuntimeError)
    assert await podcontrol.slow_start([], write) == ([], None)


@pytest.mark.parametrize(("name", "generate_name", "prefix"), [
    ("front", "", "front-"),
    ("x" * 253, "", "x" * 253),  # `name-` could not start a pod's name: the name alone
    ("pi", "pi-3-", "pi-3-"),
])
def test_a_pod_from_its_owners_template(name: str, generate_name: str, prefix: str) -> None:
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
             "metadata": {"name": name, "namespace": "ns", "uid": "u1"}}
    template = {"metadata": {"labels": {"app": "a"}, "annotations": {"k": "v"},
                             "finalizers": ["f"]},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}
    pod = podcontrol.from_template(owner, template, generate_name=generate_name)
    assert pod["metadata"] == {
        "generateName": prefix, "namespace": "ns", "labels": {"app": "a"},
        "annotations": {"k": "v"}, "finalizers": ["f"],
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
                             "uid": "u1", "controller": True, "blockOwnerDeletion": True}]}
    pod["metadata"]["labels"]["x"] = "y"
    pod["spec"]["containers"][0]["image"] = "j"
    assert template["metadata"]["labels"] == {"app": "a"}  # copies, not the template
    assert template["spec"]["containers"][0]["image"] == "i"


def _error(code: int, reason: str, message: str, *, cause: str = "") -> ApiError:
    status: dict[str, Any] = {"kind": "Status", "code": code, "reason": reason,
                              "message": message}
    if cause:
        status["details"] = {"causes": [{"reason": cause, "message": message}]}
    return ApiError(status)


TERMINATING = _error(403, "Forbidden", 'unable to create new content in namespace ns '
                     'because it is being terminated', cause="NamespaceTerminating")


def _control(f: Fixture) -> tuple[podcontrol.PodControl, inflight.InFlight]:
    flight = inflight.InFlight()
    return podcontrol.PodControl(f.ctx, flight), flight


# What every owner's create tells: (error, made, events, in flight).
@pytest.mark.parametrize(("error", "made", "events", "recorded"), [
    (None, True, [("Normal", "SuccessfulCreate", "Created pod: front-01000")], True),
    (TERMINATING, False, [], False),  # refused, quietly: the namespace is going
    (not_found("ns"), None, [("Warning", "FailedCreate", 'Error creating: "ns" not found')],
     False),
    (_error(403, "Forbidden", "exceeded quota"), None,
     [("Warning", "FailedCreate", "Error creating: exceeded quota")], False),
], ids=["made", "namespace-terminating", "not-found", "forbidden"])
async def test_a_create_and_what_it_tells(error: ApiError | None, made: bool | None,
                                          events: list[tuple[str, str, str]],
                                          recorded: bool) -> None:
    f = Fixture()
    control, flight = _control(f)
    rs = replicaset()
    if error is not None:
        f.client.fail[("create", "front-01000")] = error
    body = podcontrol.from_template(rs, rs["spec"]["template"])
    if made is None:
        with pytest.raises(ApiError):
            await control.create(rs, body)
    else:
        assert (await control.create(rs, body) is not None) == made
    assert f.recorded_events() == events
    assert bool(flight._owners) == recorded


# What every owner's delete tells: (error, deleted now, events, in flight).
@pytest.mark.parametrize(("error", "deleted", "events", "recorded"), [
    (None, True, [("Normal", "SuccessfulDelete", "Deleted pod: p")], True),
    # Gone already: nothing to tell, but the cache may still show it alive.
    (not_found("p"), False, [], True),
    # Another pod of that name, or the pod changed meanwhile: decided again on the news.
    (conflict("p"), False, [], False),
    (_error(500, "InternalError", "store: down"), None,
     [("Warning", "FailedDelete", "Error deleting: store: down")], False),
], ids=["deleted", "not-found", "conflict", "internal"])
async def test_a_delete_and_what_it_tells(error: ApiError | None, deleted: bool | None,
                                          events: list[tuple[str, str, str]],
                                          recorded: bool) -> None:
    f = Fixture()
    control, flight = _control(f)
    rs = replicaset()
    victim = pod("p", rs, node="n1")
    if error is not None:
        f.client.fail[("delete", "p")] = error
    if deleted is None:
        with pytest.raises(ApiError):
            await control.delete(rs, victim)
    else:
        assert await control.delete(rs, victim) is deleted
    assert f.recorded_events() == events
    assert bool(flight._owners) == recorded
    if error is None:
        assert f.client.actions[0].body["uid"] == "uid-p"  # only the pod that was read
