"""The API's listening socket: a cap on client connections, idle timeouts, and the
process's file-descriptor budget.

A master shares one descriptor table between its API clients and what keeps it a Raft
member: the journal and dump files, the snapshot child's pipe, its peers' connections,
the tick thread's wake-up pipe. With 20,000 idle connections on the API port, accept()
took the last descriptors, the journal's meta write failed with EMFILE in the tick, and
asyncio logged a traceback for every failed accept. So:

- `connection_budget()` lifts the soft RLIMIT_NOFILE to the hard limit at start;
- the API holds at most `connection_cap()` connections: the limit less what is open at
  start, `RESERVE` for the store and the peers, and `BACKLOG`, the connections asyncio
  may accept in one go before any of them is seen here. A connection over the cap is
  accepted, answered with a minimal 503 and closed at once (before any TLS handshake:
  a TLS client sees its handshake fail and moves on): a clear refusal, no
  traceback, and the descriptor is back before the next accept;
- a connection that sends no complete request within `FIRST_REQUEST_TIMEOUT` is closed,
  and a keep-alive connection idle for `KEEPALIVE_TIMEOUT` (longer than the 15 s that
  aiohttp's client keeps an idle connection, so the client lets go first). A request in
  progress, a watch stream above all, is never timed out here;
- requests are paced (`watch.Pacer`) and long-lived connections are kept out of the
  garbage collector's walks (`GcPolicy`), so that thousands of them do not hold up the
  Raft tick thread, which shares the GIL (docs/pysyncobj-findings.md, 11).

aiohttp is subclassed at two documented seams (`web.AppRunner` makes the `web.Server`,
which makes one `RequestHandler` per connection); the first-request timer re-arms
aiohttp's own keep-alive timer, which already closes a connection idle before its first
request, only sooner.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import resource
import ssl
import weakref
from collections.abc import Callable
from typing import Any

from aiohttp import web, web_protocol

from raftkube.apiserver import app as apiapp
from raftkube.store import watch

log = logging.getLogger(__name__)

RESERVE = 256  # the journal, dump, snapshot child, Raft peers and handshakes, pipes, logs
BACKLOG = 128  # the listen backlog: asyncio accepts up to this many before one is refused
MIN_CONNECTIONS = 64
FIRST_REQUEST_TIMEOUT = 5.0
KEEPALIVE_TIMEOUT = 60.0
# At stop, requests in progress get this long to finish before they are cancelled, and
# a TLS connection this long for its close_notify: watch streams never finish, and
# aiohttp's default (60 s, then 30 s for TLS) held a stopping master up for two minutes
# while a kubectl watch was open. Its clients resume their watches on another master.
SHUTDOWN_GRACE = 1.0

_BODY = json.dumps({
    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
    "message": "too many connections to this master; retry, or try another master",
    "reason": "ServiceUnavailable", "code": 503}).encode()
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
           b"Retry-After: 1\r\nConnection: close\r\n"
           b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY)


def raise_fd_limit() -> int:
    """Lift the soft descriptor limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log.warning("could not raise the descriptor limit from %d to %d: %s", soft, target, e)
        return soft
    return target


def open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connection_cap(*, soft_limit: int, in_use: int) -> int:
    """How many API connections the descriptor limit allows, all else kept in reserve."""
    cap = soft_limit - in_use - RESERVE - BACKLOG
    if cap < MIN_CONNECTIONS:
        raise ValueError(
            f"the descriptor limit (ulimit -n) is {soft_limit}: too low for a master, which "
            f"keeps {in_use + RESERVE + BACKLOG} for itself; raise it to at least "
            f"{in_use + RESERVE + BACKLOG + MIN_CONNECTIONS}")
    return cap


def _break_cycle(transport: asyncio.BaseTransport | None) -> None:
    """asyncio's socket transport keeps a bound method of itself (`_read_ready_cb`): a
    closed one is cyclic garbage, which a frozen generation (see `GcPolicy`) would keep
    for ever. Nothing reads from a transport whose connection is lost."""
    if transport is not None and hasattr(transport, "_read_ready_cb"):
        transport._read_ready_cb = None


class _Refusal(asyncio.Protocol):
    """A connection over the cap: a 503 and the door, before reading anything."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(REFUSAL)
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        _break_cycle(self.transport)


class _Handler(web_protocol.RequestHandler):
    """aiohttp's handler, with a shorter deadline for the first request."""

    __slots__ = ("_first_request_timeout", "raw_transport", "__weakref__")

    def __init__(self, manager: web.Server, *, first_request_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._first_request_timeout = first_request_timeout
        # Under TLS, the socket's own transport beneath the TLS one: its cycle is broken
        # too when the connection is lost.
        self.raw_transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(self._manager, CappedServer)
        self._manager.starting.discard(self)
        super().connection_made(transport)
        # aiohttp arms its keep-alive timer here (a connection idle before its first
        # request is closed when it fires); bring it forward.
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
        due = self._loop.time() + self._first_request_timeout
        self._next_keepalive_close_time = due
        self._keepalive_handle = self._loop.call_at(due, self._process_keepalive)

    def connection_lost(self, exc: BaseException | None) -> None:
        transport = self.transport
        super().connection_lost(exc)
        _break_cycle(transport)
        _break_cycle(self.raw_transport)

    def abandon(self) -> None:
        """Never connected (its TLS handshake failed): it holds no place under the cap."""
        assert isinstance(self._manager, CappedServer)
        self._manager.starting.discard(self)


class CappedServer(web.Server):
    """aiohttp's server with a cap on open connections."""

    def __init__(self, plain: web.Server, *, max_connections: int,
                 first_request_timeout: float,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        handle = plain.request_handler
        pacer = watch.Pacer()

        async def paced(request: web.BaseRequest) -> web.StreamResponse:
            # A burst of requests (10,000 watches opened at once) keeps the loop as busy
            # as a fan-out does: let the Raft tick have the GIL now and then.
            pacer.step()
            return await handle(request)

        super().__init__(paced, request_factory=plain.request_factory,
                         handler_cancellation=plain.handler_cancellation,
                         loop=plain._loop, **plain._kwargs)
        self.max_connections = max_connections
        self.first_request_timeout = first_request_timeout
        self.ssl_context = ssl_context
        self.handshakes: set[asyncio.Task[None]] = set()  # TLS handshakes under way
        self.accepted = 0
        self.refused = 0
        # Handlers made but not yet connected: asyncio accepts a whole backlog's worth of
        # connections before the first of them reaches connection_made. Weak, so that one
        # that never connects (the server closing) is not counted for ever.
        self.starting: weakref.WeakSet[_Handler] = weakref.WeakSet()

    def held(self) -> int:
        """Connections that hold a place under the cap: connected, or accepted and not
        yet connected (a TLS handshake under way)."""
        return len(self._connections) + len(self.starting)

    def __call__(self) -> Any:  # a protocol factory for loop.create_server
        self.accepted += 1
        held = self.held()
        if held >= self.max_connections:
            self.refused += 1
            log.warning("refusing API connections: %d open, the cap is %d (--max-connections)",
                        held, self.max_connections)
            return _Refusal()
        handler = _Handler(self, loop=self._loop,
                           first_request_timeout=self.first_request_timeout, **self._kwargs)
        self.starting.add(handler)
        if self.ssl_context is not None:
            return _TlsGate(self, handler, self.ssl_context, self.first_request_timeout)
        return handler

    async def stop_handshakes(self) -> None:
        """Cancel the TLS handshakes under way (the server is stopping)."""
        tasks = list(self.handshakes)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _TlsGate(asyncio.Protocol):
    """A connection inside the cap, until its TLS handshake is done (within the
    first-request timeout): then it is the handler's. The handler counts against the
    cap from accept (`CappedServer.starting`), through the handshake."""

    def __init__(self, server: CappedServer, handler: _Handler, context: ssl.SSLContext,
                 timeout: float) -> None:
        self.server = server
        self.handler = handler
        self.context = context
        self.timeout = timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self.server.handshakes.add(task)
        task.add_done_callback(self.server.handshakes.discard)

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        try:
            tls = await loop.start_tls(transport, self.handler, self.context,
                                       server_side=True, ssl_handshake_timeout=self.timeout,
                                       ssl_shutdown_timeout=SHUTDOWN_GRACE)
        except OSError:  # ssl.SSLError, a timeout, a reset: start_tls closed it
            # A client that does not speak TLS, or not in time.
            self.handler.abandon()
            _break_cycle(transport)
            return
        except asyncio.CancelledError:  # the server is stopping
            self.handler.abandon()
            transport.abort()
            _break_cycle(transport)
            raise
        if tls is None or tls.is_closing():
            self.handler.abandon()
            return
        self.handler.raw_transport = transport
        try:
            self.handler.connection_made(tls)
        except Exception:  # noqa: BLE001 - one connection must not take the server down
            log.exception("serving a TLS connection")
            self.handler.abandon()
            tls.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # lost before the handshake began: start_tls times out on it and returns


GEN0_THRESHOLD = 20_000


class GcPolicy:
    """Keep long-lived connections out of the garbage collector's full collections.

    A full collection holds the GIL while it walks every tracked object, and a watch
    stream keeps ~50 of them (handler, request, response, task, transport...): with
    10,000 streams one collection took ~1 s, and the Raft tick, which needs the GIL,
    missed its heartbeats. So when the number of open connections has grown, every
    tracked object is frozen (gc.freeze: moved to a generation no collection walks;
    O(1)). Frozen objects that die are still freed by reference counting; cyclic garbage
    among them is kept, which is why a closed transport's cycle is broken
    (`_break_cycle`), and why everything is unfrozen again when the connections have
    fallen to half, so that a later collection reclaims the rest.
    """

    def __init__(self, count: Callable[[], int], *, every: float = 0.5, grow: float = 0.05,
                 floor: int = 32) -> None:
        self.count = count
        self.every = every
        self.grow = grow
        self.floor = floor
        self.frozen_at = 0

    def step(self) -> str:
        n = self.count()
        if n >= self.frozen_at * (1 + self.grow) + self.floor:
            # No collection first: that would be the pause this avoids. Cyclic garbage
            # younger than `every` is frozen with the rest; a fall unfreezes it.
            gc.freeze()
            self.frozen_at = n
            return "froze"
        if n < self.frozen_at / 2 - self.floor:
            gc.unfreeze()
            self.frozen_at = n
            return "unfroze"
        return ""

    async def run(self) -> None:
        gc.collect()
        gc.freeze()  # what start-up made lives as long as the process
        # Python collects the youngest generation every 700 new objects, so under a
        # fan-out the futures and lists that live ~100 ms between two events are
        # promoted to the older generations, which then fill and are collected over and
        # over (30-50 ms each, and ~200 ms for the oldest). A larger first threshold lets
        # them die of reference counting first.
        _gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
        while True:
            await asyncio.sleep(self.every)
            self.step()


class Runner(web.AppRunner):
    def __init__(self, app: web.Application, *, max_connections: int,
                 first_request_timeout: float = FIRST_REQUEST_TIMEOUT,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=keepalive_timeout, **kwargs)
        self.max_connections = max_connections
        self.first_request_timeout = first_request_timeout
        self.ssl_context = ssl_context
        self._gc: asyncio.Task[None] | None = None

    async def _make_server(self) -> web.Server:
        server = CappedServer(await super()._make_server(), max_connections=self.max_connections,
                              first_request_timeout=self.first_request_timeout,
                              ssl_context=self.ssl_context)
        metrics = self.app.get(apiapp.METRICS)
        if metrics is not None:
            metrics.watch_connections(open_count=server.held,
                                      accepted_count=lambda: server.accepted,
                                      refused_count=lambda: server.refused,
                                      cap=server.max_connections)
        return server

    def keep_connections_out_of_gc(self) -> None:
        server = self.server
        assert server is not None
        self._gc = asyncio.get_running_loop().create_task(
            GcPolicy(lambda: len(server.connections)).run())

    async def cleanup(self) -> None:
        if self._gc is not None:
            self._gc.cancel()
            await asyncio.gather(self._gc, return_exceptions=True)
        await super().cleanup()

    async def shutdown(self) -> None:
        # Called by cleanup() once the listening socket is closed, before the app's
        # shutdown: no connection finishes its handshake into an app being stopped.
        if isinstance(self.server, CappedServer):
            await self.server.stop_handshakes()
        await super().shutdown()


def connection_budget(max_connections: int | None = None) -> int:
    """Raise the descriptor limit and decide the cap, before the store opens anything;
    ValueError (a start-up error) when the limit leaves too little."""
    soft = raise_fd_limit()
    cap = connection_cap(soft_limit=soft, in_use=open_descriptors())
    if max_connections is not None:
        if max_connections > cap:
            log.warning("--max-connections %d is over the %d that the descriptor limit "
                        "(%d) leaves: the store may run out of descriptors",
                        max_connections, cap, soft)
        cap = max_connections
    log.info("api: at most %d client connections (descriptor limit %d)", cap, soft)
    return cap


async def start(app: web.Application, *, host: str, port: int, max_connections: int,
                ssl_context: ssl.SSLContext | None = None) -> Runner:
    """Serve `app` on host:port (HTTPS with `ssl_context`); the runner, to clean up."""
    runner = Runner(app, max_connections=max_connections, access_log=None,
                    handler_cancellation=True, ssl_context=ssl_context,
                    shutdown_timeout=SHUTDOWN_GRACE)
    await runner.setup()
    # TLS is not the listening socket's (asyncio would make a connection over the cap
    # wait for its handshake before it could be refused): `_TlsGate` starts it.
    site = web.TCPSite(runner, host, port, reuse_address=True, backlog=BACKLOG)
    await site.start()
    runner.keep_connections_out_of_gc()
    return runner
