"""Real leader loops against the one-replica API of a unit test (`Served`).

`running(served, Make, ...)` builds the loops on a `Context` whose client talks to the
test server through the real client layer (transport, informers, event recorder), starts
them once the informers have listed, and cancels everything on the way out. Tests of the
API's contracts that a controller completes (cascading deletion, emptying a namespace)
then wait on `converge` for the state they promise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from raftkube.client import events as ev
from raftkube.client import informer as inf
from raftkube.client import rest, transport
from raftkube.controllers import base
from tests.unit.conftest import Served


@contextlib.asynccontextmanager
async def running(served: Served, *makers: Callable[[base.Context], Any],
                  options: base.Options | None = None) -> AsyncIterator[base.Context]:
    url = str(served.client.make_url("")).rstrip("/")
    async with transport.Transport([url], served.token, wait=5.0, timeout=10.0) as tp:
        client = rest.RestClient(tp)
        informers = inf.InformerFactory(client, resync=options.resync if options else 30.0)
        events = ev.EventRecorder(client, "test")
        ctx = base.Context(client=client, informers=informers, events=events,
                           options=options or base.Options())
        loops = [make(ctx) for make in makers]
        tasks = [asyncio.ensure_future(informers.run()), asyncio.ensure_future(events.run())]
        try:
            await informers.wait_synced(timeout=10)
            tasks += [asyncio.ensure_future(loop.run()) for loop in loops]
            yield ctx
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def converge(predicate: Callable[[], Awaitable[Any]], *, what: str,
                   timeout: float = 10.0) -> Any:
    """Poll until `predicate()` is true; fail naming `what` after `timeout` seconds."""
    give_up = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
