"""The pod relay: how a node reaches a pod that runs on another machine, without an
overlay network.

Every machine's Docker bridge has the same private range, so a pod IP means something
only on its own machine. A node's proxy that picks a backend on another machine dials
that node's relay instead, at the node's address (its InternalIP, which every node can
reach) and the relay port, and says which pod it wants in one line:

    RELAY 172.17.0.5 8080\\n   ->   OK\\n   (then the stream is the pod's)
                              ->   ERR why\\n   (and the connection closes)

The relay dials only the pods of its own node (`allowed`, from the runtime's
sandboxes), so it is no open proxy into the machine, and bounds what it reads: one line
of at most 128 bytes within `handshake_timeout` seconds. A cluster on one machine never
needs it: its pods share one bridge and are dialled directly (docs/networking.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable

from raftkube.agent import proxy as px

log = logging.getLogger(__name__)

MAX_LINE = 128


def preamble(ip: str, port: int) -> bytes:
    return f"RELAY {ip} {port}\n".encode()


def route_via(node_ip: str, relay_port: int, ip: str, port: int) -> px.Route:
    return px.Route(node_ip, relay_port, preamble(ip, port))


def parse(line: bytes) -> tuple[str, int]:
    """(pod IP, port) from a request line; ValueError saying what is wrong."""
    parts = line.decode("ascii", "replace").split()
    if len(parts) != 3 or parts[0] != "RELAY":
        raise ValueError("expected `RELAY IP PORT`")
    ip = str(ipaddress.ip_address(parts[1]))
    port = int(parts[2])
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return ip, port


class Relay:
    def __init__(self, *, host: str, port: int, allowed: Callable[[str], bool],
                 connect_timeout: float = 2.0, handshake_timeout: float = 5.0) -> None:
        self.host = host
        self.port = port
        self.allowed = allowed
        self.connect_timeout = connect_timeout
        self.handshake_timeout = handshake_timeout
        self.server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port,
                                                 reuse_address=True)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _refuse(self, writer: asyncio.StreamWriter, why: str) -> None:
        with contextlib.suppress(OSError):
            writer.write(f"ERR {why}\n".encode())
            await writer.drain()
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        try:
            try:
                async with asyncio.timeout(self.handshake_timeout):
                    line = await reader.readuntil(b"\n")
                if len(line) > MAX_LINE:
                    raise ValueError(f"request line over {MAX_LINE} bytes")
                ip, port = parse(line)
            except (ValueError, TimeoutError, asyncio.LimitOverrunError,
                    asyncio.IncompleteReadError, OSError) as e:
                await self._refuse(writer, str(e) or "bad request")
                return
            if not self.allowed(ip):
                await self._refuse(writer, f"{ip} is not a pod of this node")
                return
            try:
                upstream = await px.dial(px.Route(ip, port), self.connect_timeout)
            except (OSError, TimeoutError) as e:
                await self._refuse(writer, f"{ip}:{port}: {e}")
                return
            writer.write(b"OK\n")
            await px.splice((reader, writer), upstream)
        finally:
            self._open.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._open):
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
