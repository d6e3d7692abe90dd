"""A follower never cuts entries it holds with the leader's terms (Raft's rule), though
pysyncobj cuts its log back to every append's prevLogIdx: the transport takes the
entries it holds off the front of an append first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raftkube.store import journal as jr
from raftkube.store.wire import RaftTransport

pytestmark = pytest.mark.unit

LEADER = object()


class FakeSyncObj:
    def __init__(self, term: int) -> None:
        self._SyncObj__raftCurrentTerm = term
        self._SyncObj__raftLeader = LEADER


def transport(tmp_path: Path, terms: list[int]) -> tuple[RaftTransport, list[Any]]:
    journal = jr.open_journal(str(tmp_path), sync=False)
    for i, term in enumerate(terms, start=1):
        journal.add(b"\x00e%d" % i, i, term)
    t = RaftTransport.__new__(RaftTransport)
    t._syncObj = FakeSyncObj(term=max(terms))
    t.journal = journal
    sent: list[Any] = []
    t.send = lambda node, message: sent.append((node, message)) or True  # type: ignore[method-assign]
    return t, sent


def append(prev: int, prev_term: int, entries: list[tuple[int, int]], *, term: int = 2,
           ) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": 1, "prevLogIdx": prev,
            "prevLogTerm": prev_term,
            "entries": [(b"\x00e%d" % i, i, t) for i, t in entries]}


def test_entries_held_are_answered_not_cut(tmp_path: Path) -> None:
    t, sent = transport(tmp_path, [1, 1, 2, 2, 2, 2])
    # All held, and the follower holds more: answered success, pysyncobj never sees it.
    assert t._without_entries_held(LEADER, append(2, 1, [(3, 2), (4, 2)])) is None
    assert sent == [(LEADER, {"type": "next_node_idx", "next_node_idx": 5, "reset": False,
                              "success": True})]


def test_held_entries_are_taken_off_the_front(tmp_path: Path) -> None:
    t, sent = transport(tmp_path, [1, 1, 2, 2])
    out = t._without_entries_held(LEADER, append(2, 1, [(3, 2), (4, 2), (5, 2), (6, 2)]))
    assert out is not None and out["prevLogIdx"] == 4 and out["prevLogTerm"] == 2
    assert [e[1] for e in out["entries"]] == [5, 6]
    # Up to the end exactly: a heartbeat at the last index, nothing to cut.
    out = t._without_entries_held(LEADER, append(2, 1, [(3, 2), (4, 2)]))
    assert out is not None and (out["prevLogIdx"], out["entries"]) == (4, [])
    assert sent == []


def test_a_conflict_is_still_cut_from_the_conflicting_entry(tmp_path: Path) -> None:
    t, _ = transport(tmp_path, [1, 1, 2, 2, 2])
    message = append(2, 1, [(3, 2), (4, 3), (5, 3)], term=3)
    assert t._without_entries_held(LEADER, message) is message  # a newer term: pysyncobj's
    t._syncObj._SyncObj__raftCurrentTerm = 3
    out = t._without_entries_held(LEADER, append(2, 1, [(3, 2), (4, 3), (5, 3)], term=3))
    assert out is not None and out["prevLogIdx"] == 3
    assert [e[1] for e in out["entries"]] == [4, 5]  # pysyncobj cuts from 4, as Raft does


@pytest.mark.parametrize("change", [
    {"prevLogTerm": 2},  # prevLogIdx does not match: pysyncobj answers reset
    {"term": 1},  # not this term's leader
    {"prevLogIdx": 9},  # beyond the log
])
def test_anything_else_is_left_to_pysyncobj(tmp_path: Path, change: dict[str, Any]) -> None:
    t, sent = transport(tmp_path, [1, 1, 2, 2])
    message = {**append(2, 1, [(3, 2)]), **change}
    assert t._without_entries_held(LEADER, message) is message
    assert t._without_entries_held(object(), append(2, 1, [(3, 2)])) is not None
    assert sent == []
