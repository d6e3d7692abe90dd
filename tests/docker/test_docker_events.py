"""The engine's change events, as the kubelet follows them (dockerio.changes), on the
real engine: a container of the node is told as it is made, started, ended and removed;
an exec in it (every exec probe) and another node's containers are not."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator

import docker
import pytest

from raftkube.agent import dockerio
from raftkube.agent import dockerspec as ds
from tests.docker.conftest import engine

pytestmark = pytest.mark.docker

IMAGE = "busybox:1.36"


class Told:
    """The items of the stream, counted by a task of their own (a cancelled `anext`
    would end the generator)."""

    def __init__(self, stream: AsyncGenerator[None, None]) -> None:
        self.count = 0
        self.stream = stream
        self.task = asyncio.ensure_future(self._follow())

    async def _follow(self) -> None:
        async with contextlib.aclosing(self.stream) as items:
            async for _ in items:
                self.count += 1

    async def reaches(self, count: int, within: float) -> bool:
        for _ in range(int(within / 0.05)):
            if self.count >= count:
                return True
            await asyncio.sleep(0.05)
        return self.count >= count

    async def close(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_a_nodes_container_changes_are_told_and_execs_are_not() -> None:
    client = engine()
    cluster = f"events-{uuid.uuid4().hex[:8]}"
    mine = ds.selector(cluster, "n1")
    labels = dict(item.split("=", 1) for item in mine)
    other = {**labels, ds.NODE: "n2"}
    made: list[docker.models.containers.Container] = []
    told = Told(dockerio.changes(client.api, mine))
    try:
        assert await told.reaches(1, 30), "no item once subscribed"
        theirs = await asyncio.to_thread(client.containers.run, IMAGE, ["sleep", "60"],
                                         detach=True, labels=other)
        made.append(theirs)
        await asyncio.sleep(1.5)
        assert told.count == 1, "another node's container was told"
        ours = await asyncio.to_thread(client.containers.run, IMAGE, ["sleep", "60"],
                                       detach=True, labels=labels)
        made.append(ours)
        assert await told.reaches(3, 30)  # create, start
        await asyncio.to_thread(ours.exec_run, ["true"])
        await asyncio.sleep(1.5)
        assert told.count == 3, "an exec was told as a change"
        await asyncio.to_thread(ours.kill)
        assert await told.reaches(4, 30)  # die
    finally:
        await told.close()
        for c in made:
            with contextlib.suppress(docker.errors.NotFound):
                c.remove(force=True)
        client.close()
