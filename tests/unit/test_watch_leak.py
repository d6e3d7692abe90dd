"""A REST watch whose response cannot be prepared leaves no store watcher behind.

A watch without a resourceVersion lists first (a read through Raft), then opens the
store watch, then starts its response. A client that hangs up during the list is gone
by then: the response's preparation fails, and the store watcher that was just opened
must be closed, or the hub feeds it every event of the prefix for as long as the master
runs. The list is held (the replica's read barrier waits for the test) so that the
client is surely gone when it ends; and the response's start is made to fail, as a
transport lost while the headers go out (or a cancellation there) makes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp import web

from tests.unit.conftest import Served, wait_for
from tests.unit.test_rest import CMS, call

pytestmark = pytest.mark.unit

GENEROUS = 30.0


async def test_a_watch_whose_client_left_during_its_list_closes_its_store_watcher(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = served.replica
    watchers = len(replica.hub)
    release = asyncio.Event()
    held = asyncio.Event()
    barrier: Callable[..., object] = replica.barrier

    async def held_barrier(*args: object, **kwargs: object) -> None:
        held.set()
        await release.wait()
        await barrier(*args, **kwargs)  # type: ignore[misc]

    monkeypatch.setattr(replica, "barrier", held_barrier)
    server = served.client.server
    connections = server.runner.server.connections  # type: ignore[union-attr]
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"GET {CMS}?watch=true HTTP/1.1\r\nHost: x\r\n"
                 f"Authorization: Bearer {served.token}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(held.wait(), GENEROUS)
    writer.close()  # the client leaves while its list is being read
    await wait_for(lambda: not connections, deadline=GENEROUS,
                   what="the server to see the client go")
    monkeypatch.setattr(replica, "barrier", barrier)
    release.set()
    await wait_for(lambda: len(replica.hub) == watchers, deadline=GENEROUS,
                   what=f"the store watchers to fall back to {watchers} "
                        f"(now {len(replica.hub)})")
    # And the server serves watches as before.
    assert (await call(served, "GET", CMS))[0] == 200
    del reader


@pytest.mark.parametrize("failure", [ConnectionResetError, asyncio.CancelledError],
                         ids=["reset", "cancelled"])
async def test_a_watch_whose_response_fails_to_start_closes_its_store_watcher(
        served: Served, monkeypatch: pytest.MonkeyPatch, failure: type[BaseException]
) -> None:
    """The same, where the response's start itself fails (a transport that went away as
    the headers were written, or the handler cancelled there by its client leaving)."""
    replica = served.replica
    watchers = len(replica.hub)

    async def failing_prepare(self: web.StreamResponse, request: web.BaseRequest) -> None:
        raise failure()

    monkeypatch.setattr(web.StreamResponse, "prepare", failing_prepare)
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
        await asyncio.wait_for(call(served, "GET", CMS + "?watch=true&resourceVersion=1"),
                               GENEROUS)
    monkeypatch.undo()
    await wait_for(lambda: len(replica.hub) == watchers, deadline=GENEROUS,
                   what=f"the store watchers to fall back to {watchers} "
                        f"(now {len(replica.hub)})")
