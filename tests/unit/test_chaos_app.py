"""The app scenarios' pure part (chaos/app.py): unavailability windows from HTTP ticks,
and the pod tracker's counts and double-binding findings, fed made-up observations."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos import app

pytestmark = pytest.mark.unit


def tick(start: float, ok: bool, took: float = 0.05) -> app.Tick:
    return app.Tick(start, start + took, ok)


@pytest.mark.parametrize(("ticks", "total", "longest", "windows"), [
    ([], 0.0, 0.0, []),
    ([tick(0, True), tick(0.1, True)], 0.0, 0.0, []),
    # One window: from the first failed tick to the start of the next good one.
    ([tick(0, True), tick(0.1, False), tick(0.2, False), tick(0.3, True)],
     0.2, 0.2, [(0.1, 0.3)]),
    # Two windows; the longest is the second.
    ([tick(0, False), tick(0.1, True), tick(1.0, False), tick(1.5, False, took=1.0),
      tick(2.5, True)], 1.6, 1.5, [(0, 0.1), (1.0, 2.5)]),
    # Still unavailable at the end: the window closes when the last tick ended.
    ([tick(0, True), tick(1.0, False, took=1.0)], 1.0, 1.0, [(1.0, 2.0)]),
])
def test_unavailable_windows(ticks: list[app.Tick], total: float, longest: float,
                             windows: list[tuple[float, float]]) -> None:
    u = app.unavailable(ticks)
    assert (u.total, u.longest) == (pytest.approx(total), pytest.approx(longest))
    assert u.windows == [(pytest.approx(a), pytest.approx(b)) for a, b in windows]


def test_unavailable_ignores_the_order_ticks_were_recorded_in() -> None:
    ticks = [tick(0.3, True), tick(0.1, False), tick(0, True), tick(0.2, False)]
    assert app.unavailable(ticks).windows == [(0.1, 0.3)]


@given(st.lists(st.booleans(), max_size=40))
def test_unavailable_is_bounded_by_the_failed_ticks(oks: list[bool]) -> None:
    """Ticks every 0.1 s lasting 0.1 s: the total is exactly the failed ticks' time, and
    every window starts at a failed tick."""
    ticks = [app.Tick(i / 10, (i + 1) / 10, ok) for i, ok in enumerate(oks)]
    u = app.unavailable(ticks)
    assert u.total == pytest.approx(oks.count(False) / 10, abs=1e-6)
    assert u.longest <= u.total + 1e-9
    failed = {t.start for t in ticks if not t.ok}
    assert all(start in failed for start, _ in u.windows)


def pod(name: str, *, uid: str = "", node: str = "", app_label: str = "web",
        deleting: bool = False, phase: str = "Running", version: str = "1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": uid or f"u-{name}",
                            "labels": {"app": app_label},
                            "annotations": {"chaos/version": version}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": node} if node else {},
            "status": {"phase": phase}}


def test_tracker_counts_the_most_pods_alive_at_once() -> None:
    t = app.PodTracker("web")
    for name in ("a", "b", "c"):
        t.add(pod(name, node="n1"))
    t.add(pod("d"))  # the surge pod, not yet bound
    assert (t.alive(), t.peak) == (4, 4)
    t.update(pod("a", node="n1"), pod("a", node="n1", deleting=True))  # terminating
    t.add(pod("e", node="n2", phase="Succeeded"))  # finished pods do not count
    t.add(pod("x", node="n2", app_label="other"))  # another app's
    assert t.alive() == 3 and t.peak == 4
    t.reset_peak()
    assert t.peak == 3
    t.delete(pod("a"))
    assert t.alive() == 3 and "a" not in t.nodes()
    assert t.nodes() == {"b": "n1", "c": "n1", "d": ""}
    assert t.rebound == []


def test_tracker_finds_a_pod_moved_to_another_node() -> None:
    t = app.PodTracker("web")
    t.add(pod("a"))
    t.update(pod("a"), pod("a", node="n1"))  # bound once: fine
    t.update(pod("a", node="n1"), pod("a", node="n1"))  # status updates: fine
    assert t.rebound == []
    t.update(pod("a", node="n1"), pod("a", node="n2"))
    assert len(t.rebound) == 1 and "from node 'n1' to 'n2'" in t.rebound[0]


def test_tracker_finds_a_pod_bound_a_second_time() -> None:
    t = app.PodTracker("web")
    t.add(pod("a", node="n1"))  # first seen bound (after a relist): one binding
    t.update(pod("a", node="n1"), pod("a"))  # unbound (never legal: reported as moved)
    t.update(pod("a"), pod("a", node="n1"))  # and bound again
    assert any("bound a second time" in r for r in t.rebound)


def test_a_pod_made_again_under_the_same_name_is_a_new_pod() -> None:
    t = app.PodTracker("web")
    t.add(pod("a", uid="1", node="n1"))
    t.delete(pod("a", uid="1", node="n1"))
    t.add(pod("a", uid="2", node="n2"))  # a new uid: a new pod, not a move
    assert t.rebound == [] and t.nodes() == {"a": "n2"}


def test_template_change_is_an_annotation_merge_patch() -> None:
    d = app.deployment("web", 3, 1, version="7")
    template = d["spec"]["template"]
    assert template["metadata"]["annotations"] == {"chaos/version": "7"}
    assert d["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert app.version_of(pod("p", version="7")) == "7"
    assert app.service("web")["spec"]["type"] == "NodePort"
