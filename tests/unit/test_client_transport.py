"""The client's failover rules against scripted servers on real loopback sockets.

Each scripted server is a tiny aiohttp app whose handler answers what the test says
(an answer, a 503, silence) and records what it received, so a test can say "the write
that timed out was never sent to the second master".
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from raftkube.client import errors, rest, transport
from raftkube.client.errors import ApiError, NoServer, Unauthorized, UnknownOutcome

pytestmark = pytest.mark.unit

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


class Scripted:
    """One server: `handler` answers, `seen` records (method, path, body)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.seen: list[tuple[str, str, bytes]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, await request.read()))
        return await self.handler(request)

    async def start(self, port: int = 0) -> Scripted:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, handler_cancellation=True)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def status(code: int, reason: str, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "code": code, "reason": reason, "message": message},
                             status=code)


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})


async def unavailable(request: web.Request) -> web.Response:
    return status(503, "ServiceUnavailable", "no leader")


async def silent(request: web.Request) -> web.Response:
    await asyncio.sleep(30)
    return web.json_response({})


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[Scripted]]]:
    started: list[Scripted] = []

    async def make(handler: Handler, port: int = 0) -> Scripted:
        s = await Scripted(handler).start(port)
        started.append(s)
        return s

    yield make
    for s in started:
        await s.stop()


async def test_a_refused_connection_moves_on_at_once_and_the_answerer_is_preferred(
        servers: Any) -> None:
    good = await servers(ok)
    dead = f"http://127.0.0.1:{closed_port()}"
    async with transport.Transport([dead, good.url], "t", wait=0) as tp:
        answer = await tp.request("POST", "/api/v1/namespaces/d/configmaps", body=b"{}")
        assert answer.status == 200 and answer.server == good.url
        assert tp.servers[0] == good.url  # next time, the one that answered goes first


async def test_503_moves_on_for_reads_and_writes(servers: Any) -> None:
    busy, good = await servers(unavailable), await servers(ok)
    async with transport.Transport([busy.url, good.url], "t", wait=0) as tp:
        for method in ("GET", "POST", "DELETE"):
            answer = await tp.request(method, "/x", body=b"{}")
            assert answer.server == good.url
            tp.servers = [busy.url, good.url]
    assert len(busy.seen) == 3 and len(good.seen) == 3


async def test_a_write_whose_answer_never_came_is_not_sent_again(servers: Any) -> None:
    slow, good = await servers(silent), await servers(ok)
    async with transport.Transport([slow.url, good.url], "t", timeout=0.3) as tp:
        with pytest.raises(UnknownOutcome, match="may or may not have been applied"):
            await tp.request("POST", "/api/v1/namespaces/d/configmaps", body=b"{}")
    assert len(slow.seen) == 1 and good.seen == []


async def test_a_read_whose_answer_never_came_moves_on(servers: Any) -> None:
    slow, good = await servers(silent), await servers(ok)
    async with transport.Transport([slow.url, good.url], "t", timeout=0.3) as tp:
        answer = await tp.request("GET", "/api/v1/namespaces/d/configmaps/x")
    assert answer.server == good.url


async def test_504_is_an_unknown_outcome_for_a_write_and_moves_on_for_a_read(
        servers: Any) -> None:
    async def timeout(request: web.Request) -> web.Response:
        return status(504, "Timeout", "the write may still be applied")

    late, good = await servers(timeout), await servers(ok)
    async with transport.Transport([late.url, good.url], "t") as tp:
        with pytest.raises(UnknownOutcome):
            await tp.request("PUT", "/x", body=b"{}")
        assert good.seen == []
        assert (await tp.request("GET", "/x")).server == good.url


async def test_etcd_503_to_a_write_is_an_unknown_outcome(servers: Any) -> None:
    async def timed_out(request: web.Request) -> web.Response:
        return web.json_response({"error": "etcdserver: request timed out", "code": 14,
                                  "message": "etcdserver: request timed out"}, status=503)

    late, good = await servers(timed_out), await servers(ok)
    async with transport.Transport([late.url, good.url], "t") as tp:
        with pytest.raises(UnknownOutcome):
            await tp.request("POST", "/v3/kv/put", body=b"{}", unavailable_is_unknown=True)
        assert good.seen == []
        answer = await tp.request("POST", "/v3/kv/range", body=b"{}", idempotent=True,
                                  unavailable_is_unknown=True)
        assert answer.server == good.url


async def test_an_outage_is_waited_out_within_the_wait(servers: Any) -> None:
    port = closed_port()

    async def come_up_later() -> None:
        await asyncio.sleep(0.5)
        await servers(ok, port)

    async with transport.Transport([f"http://127.0.0.1:{port}"], "t", wait=5) as tp:
        starting = asyncio.ensure_future(come_up_later())
        answer = await tp.request("POST", "/x", body=b"{}")
        await starting
    assert answer.status == 200


async def test_no_server_within_the_wait_names_every_server_tried() -> None:
    a, b = closed_port(), closed_port()
    async with transport.Transport([f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"], "t",
                                   wait=0.3) as tp:
        with pytest.raises(NoServer) as caught:
            await tp.request("GET", "/x")
    assert str(a) in str(caught.value) and str(b) in str(caught.value)


async def test_a_refused_token_is_final(servers: Any) -> None:
    async def refuse(request: web.Request) -> web.Response:
        return status(401, "Unauthorized", "Unauthorized")

    first, second = await servers(refuse), await servers(ok)
    async with transport.Transport([first.url, second.url], "t") as tp:
        with pytest.raises(Unauthorized):
            await tp.request("GET", "/x")
    assert second.seen == []


async def test_something_that_is_not_an_api_server_is_skipped(servers: Any) -> None:
    async def other(request: web.Request) -> web.Response:
        return web.Response(status=404, text="<html>not found</html>")

    stranger, good = await servers(other), await servers(ok)
    async with transport.Transport([stranger.url, good.url], "t") as tp:
        assert (await tp.request("GET", "/x")).server == good.url


async def test_a_status_answer_is_an_api_error_with_kubectl_words(servers: Any) -> None:
    async def missing(request: web.Request) -> web.Response:
        return status(404, "NotFound", 'pods "nope" not found')

    s = await servers(missing)
    async with transport.Transport([s.url], "t") as tp:
        with pytest.raises(ApiError) as caught:
            await rest.RestClient(tp).get(rest_kind("pods"), "default", "nope")
    assert caught.value.code == 404 and errors.is_reason(caught.value, "NotFound")
    assert str(caught.value) == 'Error from server (NotFound): pods "nope" not found'


async def test_writes_carry_the_term_and_reads_do_not(servers: Any) -> None:
    terms: list[str | None] = []

    async def record(request: web.Request) -> web.Response:
        terms.append(request.headers.get(transport.TERM_HEADER))
        return web.json_response({"metadata": {"name": "x"}})

    s = await servers(record)
    async with transport.Transport([s.url], "t") as tp:
        client = rest.RestClient(tp).with_term(7)
        kind = rest_kind("configmaps")
        await client.get(kind, "d", "x")
        await client.create(kind, "d", {"metadata": {"name": "x"}})
        await client.patch(kind, "d", "x", {"data": {}})
        await client.delete(kind, "d", "x")
    assert terms == [None, "7", "7", "7"]


async def test_a_watch_stream_opens_on_the_first_server_that_answers(servers: Any) -> None:
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(3):
            obj = {"metadata": {"name": f"o{i}", "resourceVersion": str(10 + i)}}
            line = json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n"
            await resp.write(line[:7])  # lines arrive in pieces
            await resp.write(line[7:])
        return resp

    busy, good = await servers(unavailable), await servers(stream)
    async with transport.Transport([busy.url, good.url], "t") as tp:
        events = [e async for e in rest.RestClient(tp).watch(rest_kind("configmaps"))]
    assert [e.resource_version for e in events] == ["10", "11", "12"]
    assert good.seen[0][1].startswith("/api/v1/configmaps?watch=true")


def rest_kind(plural: str) -> Any:
    from raftkube.api import kinds

    kind = kinds.by_plural("", "v1", plural)
    assert kind is not None
    return kind
