"""chaos.workload's clients against a fake KV API: what they send and record."""

from __future__ import annotations

import random

import pytest

from chaos import checks
from chaos.history import History
from chaos.workload import Answer, Workload

pytestmark = pytest.mark.unit


class FakeCluster:
    names = ["m1", "m2", "m3"]


class CarelessStore:
    """Acknowledges every write, whatever its term stamp (a store without fencing)."""

    def __init__(self, workload: Workload, writes: int) -> None:
        self.workload = workload
        self.writes = writes
        self.revision = 0

    async def put(self, server: str, key: str, value: str, *, kind: str = "put",
                  headers: dict[str, str] | None = None) -> Answer:
        self.revision += 1
        if self.revision >= self.writes:
            self.workload._stop.set()
        return Answer("ok", {"header": {"revision": str(self.revision)}})


async def test_the_stale_term_check_fails_on_a_store_that_ignores_the_stamps() -> None:
    """The fenced writer must sometimes stamp a term older than the newest (as a
    deposed leader's loop does): with only newest-term stamps from one client, stamps
    only go up in revision order, and the check passes even a store without fencing."""
    w = Workload(FakeCluster(), History(), random.Random(7))  # type: ignore[arg-type]
    w.claims = {3: {"1"}, 4: {"2"}}
    w.term = 4
    store = CarelessStore(w, writes=200)
    w.kv = store  # type: ignore[assignment]
    await w._fenced()
    assert len(w.fenced) == 200
    assert checks.stale_term_writes(w.fenced), "a store applying stale stamps went unseen"
    assert {stamp for stamp, _rev in w.fenced} == {3, 4}


async def test_a_single_term_is_always_stamped_as_is() -> None:
    w = Workload(FakeCluster(), History(), random.Random(7))  # type: ignore[arg-type]
    w.claims = {4: {"2"}}
    w.term = 4
    w.kv = CarelessStore(w, writes=50)  # type: ignore[assignment]
    await w._fenced()
    assert {stamp for stamp, _rev in w.fenced} == {4}
    assert checks.stale_term_writes(w.fenced) == []
