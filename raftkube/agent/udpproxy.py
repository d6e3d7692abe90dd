"""The UDP half of the service proxy: one listener per UDP Service port, as kube-proxy's
userspace mode had.

UDP has no connections, so the proxy makes sessions: the first datagram from a client
address picks a backend (round robin over the ready ones) and opens a socket to it; the
client's next datagrams go the same way, and whatever the backend sends back is sent to
the client from the Service's address. A session ends after `idle` seconds without a
datagram either way, when its backend is removed from the Service (unready backends
keep their sessions, as TCP connections are kept), or when the listener closes. At
most `max_sessions` are open per listener: a datagram that would open one more is
dropped (UDP's own answer to overload). Backends on other machines are not reached
(the relay speaks TCP): such a Service is served from the backends on this machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from raftkube.agent import servicemap as sm

log = logging.getLogger(__name__)

Addr = tuple[Any, ...]


class _Front(asyncio.DatagramProtocol):
    def __init__(self, listener: UdpListener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.listener.received(data, addr)


class _Back(asyncio.DatagramProtocol):
    def __init__(self, session: _Session) -> None:
        self.session = session

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        self.session.replied(data)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable from the backend: this session is over.
        self.session.listener.end(self.session.client)


class _Session:
    def __init__(self, listener: UdpListener, client: Addr, backend: sm.Backend) -> None:
        self.listener = listener
        self.client = client
        self.backend = backend
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []  # datagrams that came before the socket was open
        self.used = time.monotonic()

    def replied(self, data: bytes) -> None:
        self.used = time.monotonic()
        front = self.listener.transport
        if front is not None and not front.is_closing():
            front.sendto(data, self.client)

    def send(self, data: bytes) -> None:
        self.used = time.monotonic()
        if self.transport is None:
            if len(self.pending) < 64:
                self.pending.append(data)
            return
        self.transport.sendto(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class UdpListener:
    def __init__(self, *, frontend: sm.Frontend, pick: Callable[[UdpListener, str],
                                                                 sm.Backend | None],
                 idle: float = 30.0, max_sessions: int = 1024,
                 admit: Callable[[UdpListener, str], bool] | None = None) -> None:
        self.frontend = frontend
        self.pick = pick
        self.admit = admit  # whether a new client's address may open a session
        self.idle = idle
        self.max_sessions = max_sessions
        self.next = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.sessions: dict[Addr, _Session] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Front(self),
                                                           local_addr=(host, port))
        self.transport = transport
        self._sweeper = asyncio.ensure_future(self._sweep())

    def update(self, frontend: sm.Frontend) -> None:
        self.frontend = frontend
        for client, session in list(self.sessions.items()):
            if not frontend.has(session.backend):
                self.end(client)

    def received(self, data: bytes, client: Addr) -> None:
        session = self.sessions.get(client)
        if session is None:
            if len(self.sessions) >= self.max_sessions:
                return
            if self.admit is not None and not self.admit(self, str(client[0])):
                return  # not in the load balancer's source ranges: dropped
            backend = self.pick(self, str(client[0]))
            if backend is None:
                return  # no endpoint: dropped (the client times out, as with a REJECT)
            session = self.sessions[client] = _Session(self, client, backend)
            task = asyncio.ensure_future(self._open(session))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        session.send(data)

    async def _open(self, session: _Session) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Back(session), remote_addr=(session.backend.ip, session.backend.port))
        except OSError as e:
            log.info("udp proxy %s: %s:%d: %s", self.frontend.key, session.backend.ip,
                     session.backend.port, e)
            self.end(session.client)
            return
        if self.sessions.get(session.client) is not session:
            transport.close()  # ended meanwhile
            return
        session.transport = transport
        for data in session.pending:
            session.transport.sendto(data)
        session.pending.clear()

    def end(self, client: Addr) -> None:
        session = self.sessions.pop(client, None)
        if session is not None:
            session.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.idle / 4))
            now = time.monotonic()
            for client, session in list(self.sessions.items()):
                if now - session.used > self.idle:
                    self.end(client)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self.sessions):
            self.end(client)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._sweeper] if self._sweeper else []),
                             return_exceptions=True)
        if self.transport is not None:
            self.transport.close()
