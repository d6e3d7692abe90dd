"""The API's listening socket (serving.py) over real loopback sockets: the connection
cap's refusal, the first-request and keep-alive timeouts, a long stream left alone; and
the repeated-line log filter."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from raftkube.apiserver import serving
from raftkube.cli import logfilter

pytestmark = pytest.mark.unit

CAP = 3
FIRST = 0.3
IDLE = 2.0


async def stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    await resp.prepare(request)
    for _ in range(int(request.query.get("n", "10"))):
        await resp.write(b"tick\n")
        await asyncio.sleep(0.2)
    return resp


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/stream", stream)
    runner = serving.Runner(app, max_connections=CAP, first_request_timeout=FIRST,
                            keepalive_timeout=IDLE, access_log=None,
                            handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None and server.sockets
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        await runner.cleanup()


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes | None:
    """Everything the server sent before closing, or None if it still holds it open."""
    try:
        return await asyncio.wait_for(reader.read(), seconds)
    except TimeoutError:
        return None
    except ConnectionResetError:
        return b""


def get(path: str = "/") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def close(*writers: asyncio.StreamWriter) -> None:
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)


async def test_connections_over_the_cap_get_a_503_and_are_closed(port: int) -> None:
    held = [await connect(port) for _ in range(CAP)]
    await asyncio.sleep(0.05)  # let the server see them
    r, w = await connect(port)
    w.write(get())
    answer = await closed_within(r, 2.0)
    assert answer is not None, "a connection over the cap was held open"
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b'"reason": "ServiceUnavailable"' in answer
    await close(w, *(hw for _, hw in held))

    async def answered() -> bool:
        r, w = await connect(port)
        try:
            w.write(get())
            head = await asyncio.wait_for(r.readline(), 2.0)
            return head.startswith(b"HTTP/1.1 200")
        finally:
            await close(w)

    await wait_for_async(answered, deadline=5.0, what="the API to answer once they closed")


async def wait_for_async(pred: Callable[[], Awaitable[bool]], *, deadline: float,
                         what: str) -> None:
    give_up = time.monotonic() + deadline
    while not await pred():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_connection_without_a_request_is_closed_soon(port: int) -> None:
    r, w = await connect(port)
    started = time.monotonic()
    assert await closed_within(r, FIRST + 2.0) == b""
    assert FIRST - 0.05 <= time.monotonic() - started < IDLE - 0.5
    await close(w)
    # A request line that never ends counts as no request.
    r, w = await connect(port)
    w.write(b"GET / HTTP/1.1\r\nHost:")
    assert await closed_within(r, FIRST + 2.0) == b""
    await close(w)


async def test_an_idle_keepalive_connection_is_closed_after_its_bound(port: int) -> None:
    r, w = await connect(port)
    asked = time.monotonic()
    w.write(get())
    head = await r.readuntil(b"hello")
    assert head.startswith(b"HTTP/1.1 200")
    answered = time.monotonic()
    assert await closed_within(r, IDLE + 2.0) == b""
    closed = time.monotonic()
    # The keep-alive bound, not the shorter first-request one. The server's idle timer
    # starts between the request and the client's reading of the answer: the lower
    # bound counts from the first (a slow read of the answer does not shorten it), the
    # upper from the second.
    assert closed - asked >= IDLE - 0.05, closed - asked
    assert closed - answered < IDLE + 1.0, closed - answered
    await close(w)


async def test_a_long_stream_is_never_timed_out(port: int) -> None:
    r, w = await connect(port)
    w.write(get("/stream?n=15"))  # 3 s: longer than both timeouts
    body = await asyncio.wait_for(r.readuntil(b"0\r\n\r\n"), 5.0)
    assert body.count(b"tick") == 15
    await close(w)


def test_the_cap_leaves_a_reserve_and_refuses_a_tiny_limit() -> None:
    cap = serving.connection_cap(soft_limit=4096, in_use=20)
    assert cap == 4096 - 20 - serving.RESERVE - serving.BACKLOG
    with pytest.raises(ValueError, match="ulimit -n"):
        serving.connection_cap(soft_limit=256, in_use=20)


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 512), hard))
        assert serving.raise_fd_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, *args: object, exc: bool = False, name: str = "x") -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise OSError(24, "Too many open files")
        except OSError:
            exc_info = sys.exc_info()
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, exc_info)


def test_a_repeated_line_passes_a_few_times_per_window() -> None:
    clock = Clock()
    f = logfilter.RepeatFilter(burst=3, window=10.0, clock=clock)
    passed = []
    for i in range(1000):
        r = record("socket.accept() out of system resource\nsocket: %s", i, exc=True)
        if f.filter(r):
            passed.append(r)
        clock.now += 0.001
    assert len(passed) == 3
    assert passed[0].exc_info is not None, "the first keeps its traceback"
    assert all(r.exc_info is None for r in passed[1:])
    assert "(traceback as above)" in passed[1].getMessage()
    # Other lines are counted apart.
    assert f.filter(record("another line %d", 1))
    assert f.filter(record("socket.accept() out of system resource", name="other"))
    clock.now += 10.0
    r = record("socket.accept() out of system resource\nsocket: %s", 0, exc=True)
    assert f.filter(r)
    assert "997 similar lines were not logged" in r.getMessage()
    assert r.exc_info is not None


def test_the_filter_forgets_old_groups() -> None:
    clock = Clock()
    f = logfilter.RepeatFilter(burst=1, window=1.0, clock=clock)
    for i in range(logfilter.MAX_GROUPS + 10):
        assert f.filter(record(f"line {i}"))
    assert len(f._groups) <= logfilter.MAX_GROUPS
    clock.now += 2.0
    assert f.filter(record("fresh"))
    assert len(f._groups) <= logfilter.MAX_GROUPS
