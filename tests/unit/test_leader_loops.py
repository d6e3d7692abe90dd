"""The leader's loops as a unit, against a scripted `/v3/maintenance/status`: they start
when this master leads, survive a role read that fails now and then, stop when it no
longer leads, and poll over one connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from raftkube.controllers import base
from raftkube.controllers.manager import LeaderLoops

pytestmark = pytest.mark.unit
ME = "7"


class Status:
    """Answers the role reads: `answer` is "lead", "follow", "fail" or "drop"."""

    def __init__(self) -> None:
        self.answer = "lead"
        self.term = 3
        self.reads = 0
        self.peers: set[Any] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.reads += 1
        assert request.transport is not None
        self.peers.add(request.transport.get_extra_info("peername"))
        header = {"raft_term": str(self.term), "member_id": ME, "revision": "1"}
        if self.answer == "fail":
            return web.json_response({"error": "busy", "code": 14, "message": "busy"},
                                     status=503)
        if self.answer == "drop":
            request.transport.abort()
            return web.Response()
        leader = ME if self.answer == "lead" else "8"
        return web.json_response({"header": header, "leader": leader})


class Idle:
    name = "idle"

    def __init__(self, runs: list[int]) -> None:
        self.runs = runs

    async def run(self) -> None:
        self.runs.append(1)
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def serving(status: Status) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v3/maintenance/status", status.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


async def until(pred: Any, what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def reads(status: Status, n: int) -> None:
    seen = status.reads
    await until(lambda: status.reads >= seen + n, f"{n} reads")


async def test_a_failed_role_read_now_and_then_keeps_the_loops_running() -> None:
    status = Status()
    runs: list[int] = []
    async with serving(status) as url:
        loops = LeaderLoops(api_url=url, token="t", member_id=ME, poll=0.02, role_grace=5.0,
                            make_loops=lambda ctx: [Idle(runs)])
        task = asyncio.ensure_future(loops.run())
        try:
            await until(lambda: runs == [1], "the loops to start")
            await until(lambda: status.reads >= 10, "ten reads")
            # One connection for every poll, not a new session each time.
            assert len(status.peers) == 1, status.peers
            for answer in ("fail", "drop", "lead", "fail", "lead"):  # /status under load
                status.answer = answer
                await reads(status, 3)
            assert runs == [1] and loops.started == 1 and loops.term == 3
            status.answer = "follow"  # an answer that says so stops them at once
            await until(lambda: loops.term == 0, "the loops to stop")
            status.answer = "lead"
            status.term = 4
            await until(lambda: loops.term == 4, "the loops to start for the new term")
            assert loops.started == 2
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_reads_failing_past_the_grace_stop_the_loops() -> None:
    status = Status()
    runs: list[int] = []
    async with serving(status) as url:
        loops = LeaderLoops(api_url=url, token="t", member_id=ME, poll=0.02, role_grace=5.0,
                            make_loops=lambda ctx: [Idle(runs)],
                            options=base.Options())
        task = asyncio.ensure_future(loops.run())
        try:
            await until(lambda: runs == [1], "the loops to start")
            status.answer = "fail"
            await until(lambda: loops.term == 0, "the loops to stop")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class SlowToStop:
    """A loop that takes a moment to wind down once cancelled."""

    name = "slow"

    def __init__(self, stopping: asyncio.Event) -> None:
        self.stopping = stopping

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self.stopping.set()
            await asyncio.sleep(0.5)


async def test_cancelled_while_stopping_the_loops_it_ends_instead_of_going_on() -> None:
    """`rk master` stops by cancelling run(). If that cancel lands while run() waits for
    the loops of a lost leadership to wind down, it must end there: it used to swallow
    the cancel as the loops' own, poll on, start the loops again for the next term, and
    the master never exited on SIGTERM."""
    status = Status()
    stopping = asyncio.Event()
    async with serving(status) as url:
        loops = LeaderLoops(api_url=url, token="t", member_id=ME, poll=0.02, role_grace=5.0,
                            make_loops=lambda ctx: [SlowToStop(stopping)])
        task = asyncio.ensure_future(loops.run())
        try:
            await until(lambda: loops.term == 3, "the loops to start")
            status.answer = "follow"
            await asyncio.wait_for(stopping.wait(), 5)  # run() is in _stop now
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 5)
            assert loops.term == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
