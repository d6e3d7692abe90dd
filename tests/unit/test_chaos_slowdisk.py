"""slow-disk's cleanup: every master's data dir comes off FaultFS whatever broke."""

from __future__ import annotations

import random

import pytest

from chaos import scenarios_disk
from chaos.history import Faults
from chaos.scenarios import Context

pytestmark = pytest.mark.unit


class FakeCluster:
    names = ["m1", "m2", "m3"]

    def __init__(self) -> None:
        self.broken = False

    async def leader(self, **_: object) -> str:
        if self.broken:
            raise TimeoutError("no leader agreed")
        return "m1"

    async def caught_up(self, **_: object) -> None:
        await self.leader()


class FakeDisk:
    mounted: set[str] = set()

    def __init__(self, cluster: FakeCluster, name: str) -> None:
        self.cluster, self.name, self.fs = cluster, name, None

    async def mount(self) -> None:
        if self.name == "m3":
            raise RuntimeError("fusermount3: mount failed")
        self.fs = object()  # type: ignore[assignment]
        FakeDisk.mounted.add(self.name)

    async def unmount(self) -> None:
        self.fs = None
        FakeDisk.mounted.discard(self.name)
        self.cluster.broken = True  # the member does not come back in time


async def test_every_disk_is_unmounted_when_one_member_does_not_come_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenarios_disk.slowdisk, "SlowDisk", FakeDisk)
    FakeDisk.mounted = set()
    cluster = FakeCluster()
    ctx = Context(cluster, random.Random(1), 1, Faults())  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="mount failed"):
        await scenarios_disk.slow_disk(ctx)
    assert FakeDisk.mounted == set(), "a FaultFS mount was left behind"
    assert any("m1 back off FaultFS" in v for v in ctx.report["violations"])
