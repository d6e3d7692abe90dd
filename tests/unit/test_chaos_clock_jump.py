"""clock-jump's cleanup when a round breaks midway: nothing of it keeps running."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from chaos import scenarios_clock as sc
from chaos.history import Faults
from chaos.scenarios import Context

pytestmark = pytest.mark.unit


class FakeCluster:
    names = ["m1", "m2", "m3"]

    async def leader(self, **_: object) -> str:
        return "m1"

    async def caught_up(self, **_: object) -> None:
        pass

    def pid(self, name: str) -> int | None:
        return None


class FakeClock:
    def __init__(self, cluster: FakeCluster, name: str) -> None:
        pass

    async def start(self) -> None:
        pass

    async def restore(self) -> None:
        pass

    def jump(self, seconds: float) -> None:
        pass


class FakeChecks:
    def __init__(self, ctx: Context) -> None:
        self.armed = ""
        self.terms: set[int] = set()
        self.violations: list[str] = []

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


async def test_the_keepalive_task_stops_when_a_round_breaks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def etcd(*_: Any) -> dict[str, Any]:
        return {}

    async def leased_key(*_: Any) -> str:
        return "7"

    async def poke_nodes(*_: Any) -> None:
        raise RuntimeError("the API refused the Node update")

    async def no_pause() -> None:
        pass

    monkeypatch.setattr(sc.clock, "FakeClock", FakeClock)
    monkeypatch.setattr(sc, "Checks", FakeChecks)
    monkeypatch.setattr(sc, "etcd", etcd)
    monkeypatch.setattr(sc, "leased_key", leased_key)
    monkeypatch.setattr(sc, "poke_nodes", poke_nodes)
    ctx = Context(FakeCluster(), random.Random(1), 1, Faults())  # type: ignore[arg-type]
    monkeypatch.setattr(ctx, "pause_between", no_pause)
    with pytest.raises(RuntimeError, match="refused the Node update"):
        await sc.clock_jump(ctx)
    await asyncio.sleep(0)
    left = [t for t in asyncio.all_tasks()
            if not t.done() and "keep_alive" in repr(t.get_coro())]
    assert left == [], "the lease keepalive of the broken round still runs"
