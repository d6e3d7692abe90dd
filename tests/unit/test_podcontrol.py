"""podcontrol: slow start, a pod from a template."""

from __future__ import annotations

import pytest

from raftkube.controllers import podcontrol

pytestmark = pytest.mark.unit


async def test_slow_start_doubles_batches_and_stops_after_a_failing_one() -> None:
    seen: list[int] = []

    async def write(i: int) -> None:
        seen.append(i)
        if i == 4:
            raise RuntimeError("quota")

    done, error = await podcontrol.slow_start(list(range(20)), write)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5, 6]  # batches of 1, 2, 4; the third failed
    assert done == 6 and isinstance(error, RuntimeError)
    assert await podcontrol.slow_start([], write) == (0, None)


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
