"""A body that trickles in is refused when its deadline passes, on both APIs.

A client that sends its headers, then a byte of body now and then, would hold its
connection, a handler and what it had sent for as long as it liked. Every read here
gets a byte in time; only the whole body's deadline can refuse it. The deadline is
shortened for the test; the waits around it are generous.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from raftkube.apiserver import inputs
from tests.unit.conftest import Served
from tests.unit.test_rest import CMS, call, revision

pytestmark = pytest.mark.unit

GENEROUS = 60.0


async def trickle(served: Served, path: str, *, deadline: float) -> bytes:
    """Send headers and then a byte of body every tenth of a second until the server
    answers; what it answered, up to the connection's close."""
    server = served.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Bearer {served.token}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"
                     .encode())
        answered = asyncio.ensure_future(reader.read(4096))
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline + GENEROUS
        while not answered.done() and loop.time() < give_up:
            writer.write(b" ")
            await writer.drain()
            await asyncio.wait([answered], timeout=0.1)
        head = await asyncio.wait_for(answered, 1.0)
        # The whole answer, by its Content-Length: waiting for the close instead would
        # wait out aiohttp's lingering read of the rest of the body (10 s).
        while b"\r\n\r\n" not in head:
            more = await asyncio.wait_for(reader.read(4096), GENEROUS)
            assert more, f"the connection closed inside the answer's head: {head!r}"
            head += more
        top, _, body = head.partition(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", top)
        assert length, f"an answer without a Content-Length: {top!r}"
        if int(length[1]) > len(body):
            body += await asyncio.wait_for(reader.readexactly(int(length[1]) - len(body)),
                                           GENEROUS)
        return top + b"\r\n\r\n" + body
    finally:
        writer.close()


@pytest.mark.parametrize(("path", "status", "says"), [
    (CMS, b"408", b'"reason": "RequestTimeout"'),
    ("/v3/kv/put", b"400", b'"code": 3'),
])
async def test_a_trickled_body_is_refused_at_its_deadline(
        served: Served, monkeypatch: pytest.MonkeyPatch, path: str, status: bytes,
        says: bytes) -> None:
    monkeypatch.setattr(inputs, "BODY_DEADLINE", 1.0)
    before = revision(served)
    answer = await trickle(served, path, deadline=1.0)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert b"not received within 1 seconds" in answer and says in answer, answer
    # The server went on serving meanwhile, and nothing was written.
    listed, out = await asyncio.wait_for(call(served, "GET", CMS), GENEROUS)
    assert listed == 200 and out["items"] == []
    await served.replica.barrier()
    assert revision(served) == before
