"""Streams from the Docker engine: a container's log, an attached exec, its usage, and
the engine's events.

The docker SDK blocks, and a followed log or an interactive exec can last for hours,
so each stream gets its own thread (never one of the runtime's pool, which a few
followers would otherwise exhaust) and hands what it reads to the event loop through a
queue. Stopping a reader closes the engine's response, which ends the thread's read.

- Logs come from the engine's log driver (json-file, kept across restarts of the
  agent), stdout and stderr interleaved as written, honouring follow, tail, since and
  timestamps (the engine's RFC 3339 prefix, as the kubelet's).
- Exec without a tty is multiplexed by the engine (an 8-byte header per frame: stream,
  0, 0, 0, length); with a tty it is one raw stream (stdout). Stdin is written to the
  socket, and its end is a half-close.
- Changes: the engine's event stream, filtered to one node's containers and to the
  events that change them (made, started, ended, removed; an exec's are left out, or
  every exec probe would look like a change).
- Usage: one `one_shot` stats read per running container: cumulative CPU nanoseconds
  and the working set (usage less inactive file pages, as cAdvisor computes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import struct
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar

from raftkube.agent import runtime as rt
from raftkube.api import channels

Obj = dict[str, Any]
T = TypeVar("T")
_END = object()


async def _threaded(open_: Callable[[], Iterator[T]], close: Callable[[], None],
                    name: str) -> AsyncGenerator[T, None]:
    """The items of a blocking iterator, read in a thread of its own."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
    stop = threading.Event()

    def put(item: Any) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(item), loop).result()

    def read() -> None:
        try:
            for item in open_():
                if stop.is_set():
                    break
                put(item)
            put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the reader
            if not stop.is_set():
                put(e)

    thread = threading.Thread(target=read, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise rt.RuntimeFailure(f"{name}: {item}") from None
            yield item
    finally:
        stop.set()
        close()
        while not queue.empty():  # unblock a put() that waits for room
            queue.get_nowait()


# What changes a node's pods: an exec's events (every exec probe) and the others do not.
CHANGE_EVENTS = ("create", "start", "die", "oom", "destroy")


async def changes(api: Any, labels: Sequence[str]) -> AsyncGenerator[None, None]:
    """None once the engine's event stream is open, then None for each event that
    changes a container carrying every one of `labels`."""
    holder: list[Any] = []

    def open_() -> Iterator[Any]:
        stream = api.events(decode=True, filters={
            "type": "container", "label": list(labels), "event": list(CHANGE_EVENTS)})
        holder.append(stream)
        return itertools.chain((None,), stream)

    def close() -> None:
        for stream in holder:
            with contextlib.suppress(Exception):
                stream.close()

    async with contextlib.aclosing(_threaded(open_, close, "engine events")) as items:
        async for _ in items:
            yield None


async def logs(api: Any, cid: str, options: rt.LogOptions) -> AsyncIterator[bytes]:
    holder: list[Any] = []
    lock = threading.Lock()
    closed = threading.Event()

    def shut(stream: Any) -> None:
        try:
            stream.close()
        except Exception:  # noqa: BLE001 - closing what may be closed
            pass

    def open_() -> Iterator[bytes]:
        stream = api.logs(cid, stdout=True, stderr=True, stream=True,
                          follow=options.follow, timestamps=options.timestamps,
                          tail="all" if options.tail is None else options.tail,
                          since=None if options.since is None else int(options.since))
        with lock:
            if closed.is_set():  # the reader left while the engine was answering
                shut(stream)
                return iter(())
            holder.append(stream)
        return iter(stream)

    def close() -> None:
        with lock:
            closed.set()
            for stream in holder:
                shut(stream)

    async with contextlib.aclosing(_threaded(open_, close, f"logs {cid[:12]}")) as chunks:
        async for chunk in chunks:
            yield chunk


def _frames(sock: socket.socket, tty: bool) -> Iterator[tuple[int, bytes]]:
    """(channel, data) as the engine sends an attached exec's output."""
    if tty:
        while chunk := sock.recv(65536):
            yield channels.STDOUT, chunk
        return
    buffer = b""
    while True:
        while len(buffer) < 8 or len(buffer) < 8 + struct.unpack(">I", buffer[4:8])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return
            buffer += chunk
        kind, size = buffer[0], struct.unpack(">I", buffer[4:8])[0]
        data, buffer = buffer[8:8 + size], buffer[8 + size:]
        yield (channels.STDERR if kind == 2 else channels.STDOUT), data


class DockerExec:
    """An exec attached through the engine's hijacked connection."""

    def __init__(self, api: Any, exec_id: str, sock: socket.socket, *, tty: bool) -> None:
        self.api = api
        self.exec_id = exec_id
        self.sock = sock
        self.tty = tty
        self._closed = False
        self._out = _threaded(lambda: iter(_frame_bytes(sock, tty)), self._shut,
                              f"exec {exec_id[:12]}")

    def _shut(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()

    async def read(self) -> tuple[int, bytes] | None:
        try:
            packed = await anext(self._out)
        except StopAsyncIteration:
            return None
        return packed[0], packed[1:]

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self.sock.sendall, data)

    async def close_stdin(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    async def resize(self, width: int, height: int) -> None:
        if self.tty:
            await asyncio.to_thread(self.api.exec_resize, self.exec_id, height=height,
                                    width=width)

    async def wait(self) -> int:
        for _ in range(100):  # the output has ended; the engine notes the exit soon after
            info = await asyncio.to_thread(self.api.exec_inspect, self.exec_id)
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0)
            await asyncio.sleep(0.05)
        return 126

    async def close(self) -> None:
        await self._out.aclose()
        self._shut()


def _frame_bytes(sock: socket.socket, tty: bool) -> Iterator[bytes]:
    for channel, data in _frames(sock, tty):
        yield bytes([channel]) + data


async def start_exec(api: Any, cid: str, command: Sequence[str], *, stdin: bool,
                     tty: bool) -> DockerExec:
    def start() -> tuple[str, socket.socket]:
        created = api.exec_create(cid, list(command), stdin=stdin, tty=tty, stdout=True,
                                  stderr=True)
        exec_id = str(created["Id"])
        raw = api.exec_start(exec_id, tty=tty, socket=True)
        sock: socket.socket = getattr(raw, "_sock", raw)
        # The client's read timeout came with the socket: an interactive shell may be
        # quiet for as long as its user likes.
        sock.settimeout(None)
        return exec_id, sock

    exec_id, sock = await asyncio.to_thread(start)
    return DockerExec(api, exec_id, sock, tty=tty)


def working_set(memory: Obj) -> int:
    """Usage less inactive file pages (cgroup v2 `inactive_file`, v1
    `total_inactive_file`), never below zero: cAdvisor's working set."""
    usage = int(memory.get("usage") or 0)
    stats = memory.get("stats") or {}
    inactive = int(stats.get("inactive_file", stats.get("total_inactive_file", 0)) or 0)
    return max(0, usage - inactive)


def usage_of(stats: Obj, pod_uid: str, name: str, at: float) -> rt.ContainerUsage:
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0
    return rt.ContainerUsage(pod_uid, name, int(cpu) / 1e9,
                             working_set(stats.get("memory_stats") or {}), at)
