"""Revisions as `rk rollout` needs them: the template hash, and `undo` as a merge patch."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from raftkube.api import merge, rollout
from tests.unit.workloads import deployment, owned_rs

pytestmark = pytest.mark.unit


def test_the_hash_is_stable_safe_and_moved_by_a_collision_count() -> None:
    template = deployment()["spec"]["template"]
    h = rollout.template_hash(template)
    assert h == rollout.template_hash(copy.deepcopy(template))
    assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789") and 6 <= len(h) <= 10
    assert rollout.template_hash(template, 1) != h
    changed = copy.deepcopy(template)
    changed["spec"]["containers"][0]["image"] = "web:2"
    assert rollout.template_hash(changed) != h


def test_templates_are_equal_but_for_the_hash_label() -> None:
    a = deployment()["spec"]["template"]
    b = copy.deepcopy(a)
    b["metadata"]["labels"][rollout.HASH_LABEL] = "abc"
    assert rollout.equal_ignore_hash(a, b)
    b["metadata"]["labels"]["tier"] = "x"
    assert not rollout.equal_ignore_hash(a, b)


def _history(d: dict[str, Any]) -> list[dict[str, Any]]:
    first = owned_rs(d, image="web:1", revision=1)
    first["metadata"]["annotations"][rollout.CHANGE_CAUSE] = "first"
    second = owned_rs(d, image="web:2", revision=2)
    third = owned_rs(d, image="web:3", revision=3)
    stranger = owned_rs(deployment("other"), image="web:9", revision=9)
    return [first, second, third, stranger]


def test_undo_goes_back_to_the_previous_revision_by_default() -> None:
    d = deployment(image="web:3", revision="3")
    d["metadata"]["annotations"][rollout.CHANGE_CAUSE] = "third"
    result = rollout.undo(d, _history(d))
    assert (result.revision, result.message) == (2, "rolled back")
    assert result.patch is not None
    assert result.patch["metadata"]["resourceVersion"] == "5"
    rolled = merge.merge_patch(d, result.patch)
    assert rolled["spec"]["template"]["spec"]["containers"][0]["image"] == "web:2"
    assert rollout.HASH_LABEL not in rolled["spec"]["template"]["metadata"]["labels"]
    # The revision annotation stays the Deployment's; the change-cause is the old
    # revision's (it had none).
    assert rolled["metadata"]["annotations"] == {rollout.REVISION: "3"}


def test_undo_to_a_named_revision_brings_its_annotations() -> None:
    d = deployment(image="web:3", revision="3")
    result = rollout.undo(d, _history(d), to_revision=1)
    assert result.patch is not None
    rolled = merge.merge_patch(d, result.patch)
    assert rolled["spec"]["template"] == deployment(image="web:1")["spec"]["template"]
    assert rolled["metadata"]["annotations"][rollout.CHANGE_CAUSE] == "first"


def test_undo_to_the_current_template_changes_nothing() -> None:
    d = deployment(image="web:2", revision="4")
    result = rollout.undo(d, _history(d), to_revision=2)
    assert result.patch is None
    assert result.message == "skipped rollback (current template already matches revision 2)"


@pytest.mark.parametrize(("to_revision", "paused", "history", "message"), [
    (7, False, True, "unable to find specified revision 7 in history"),
    (9, False, True, "unable to find specified revision 9 in history"),  # not its own
    (0, False, False, 'no rollout history found for deployment "front"'),
    (0, True, True, "you cannot rollback a paused deployment; resume it first with "
                    "'rk rollout resume deployment/front' and try again"),
])
def test_undo_refuses_as_kubectl_does(to_revision: int, paused: bool, history: bool,
                                      message: str) -> None:
    d = deployment(image="web:3", revision="3", paused=paused)
    replicasets = _history(d) if history else _history(d)[2:3]
    with pytest.raises(rollout.RollbackError) as e:
        rollout.undo(d, replicasets, to_revision=to_revision)
    assert str(e.value) == message
