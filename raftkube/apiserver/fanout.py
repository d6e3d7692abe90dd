"""Watch fan-out shared by the REST and `/v3` streams: an event is encoded once per kind
of stream, not once per watcher.

10,000 REST watches on a leader each decoded, filtered and re-encoded every event for
itself; the profile of the leader showed that JSON work, the wake-up of every watcher and
the socket writes taking the process's CPU, and the Raft tick, which needs the same GIL,
missing heartbeats. What a watcher sends for a revision depends only on the revision and
on what kind of stream it is (the key range or REST path, the selectors, the options), so
the bytes are made by the first watcher that needs them and shared by the rest, and
written by the hub straight to each client's transport (`sink`), framed as aiohttp frames
the rest of the response.

`pump` is the one loop of both kinds of stream: it writes what the watcher was opened
with, hands the live events to the sink, writes itself what the sink refused (the client
was behind), sends an idle line (a BOOKMARK, a progress notice) when one is due, ends on
a cancellation, a deadline or the client's leaving, and closes the store watcher
whatever happens. Each API gives it its own lines.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from aiohttp import web

from raftkube.api import selectors
from raftkube.store import state as st
from raftkube.store import watch
from raftkube.store.watch import Batch, Sink, Watcher

MAX_BYTES = 16 * 1024 * 1024  # encodings kept; a value can be 1.5 MiB, so bound bytes
MAX_ENTRIES = 4096
# A client with more than this waiting in its socket's buffer gets events through its
# handler, with back-pressure, until it has caught up.
SINK_HIGH_WATER = 256 * 1024


class SharedEncodings:
    """Bytes per (revision, kind of stream), least recently made first out."""

    def __init__(self, *, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._cache: OrderedDict[tuple[int, Hashable], bytes] = OrderedDict()
        self._bytes = 0
        self.made = 0
        self.shared = 0

    def get(self, revision: int, kind: Hashable, make: Callable[[], bytes]) -> bytes:
        key = (revision, kind)
        data = self._cache.get(key)
        if data is not None:
            self.shared += 1
            return data
        data = make()
        self.made += 1
        if len(data) <= self.max_bytes // 4:
            self._cache[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes or len(self._cache) > self.max_entries:
                _key, old = self._cache.popitem(last=False)
                self._bytes -= len(old)
        return data


class Decoded:
    """Each stored value decoded once, and each watch line encoded once, however many
    watchers it goes to. Streams with selectors are rarely alike (every node agent
    watches `spec.nodeName=ITSELF`), so per-stream sharing (`SharedEncodings`) does not
    help them: without this, 200 node agents meant 200 JSON decodes and encodes of every
    pod event. Decoded objects are shared: never change one.
    """

    def __init__(self, *, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._objs: OrderedDict[tuple[bytes, int], dict[str, Any]] = OrderedDict()
        self._lines: OrderedDict[tuple[str, bytes, int, bool], bytes] = OrderedDict()

    def obj(self, kv: st.KeyValue) -> dict[str, Any]:
        """The object a stored value holds, with its resourceVersion."""
        key = (kv.key, kv.mod_revision)
        found = self._objs.get(key)
        if found is None:
            found = json.loads(kv.value)
            found.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
            self._objs[key] = found
            if len(self._objs) > self.max_entries:
                self._objs.popitem(last=False)
        return found

    def line(self, kind: str, event: st.Event, *, of_prev: bool,
             make: Callable[[], bytes]) -> bytes:
        """The watch line `kind` for an event, about its new value or (`of_prev`) the one
        it replaced."""
        key = (kind, event.kv.key, event.kv.mod_revision, of_prev)
        found = self._lines.get(key)
        if found is None:
            found = self._lines[key] = make()
            if len(self._lines) > self.max_entries:
                self._lines.popitem(last=False)
        return found


class Routes:
    """Routes for REST watches with a `field=value` selector: the hub offers such a
    watcher only the events whose object (new or previous) has that value, read from
    the shared decodings. Every node agent watches `spec.nodeName=ITSELF`; without a
    route each pod event went to all of them, to be matched and dropped by all but one.
    """

    def __init__(self, decoded: Decoded) -> None:
        self.decoded = decoded
        self._routers: dict[str, watch.Router] = {}

    def route(self, fields: selectors.FieldSelector | None) -> watch.Route | None:
        for field, op, value in fields.requirements if fields is not None else ():
            if op == "=":
                return watch.Route(field, value, self._router(field))
        return None

    def _router(self, field: str) -> watch.Router:
        found = self._routers.get(field)
        if found is None:
            decoded = self.decoded

            def values(ev: st.Event) -> set[str]:
                out = set()
                if ev.type == st.PUT:
                    out.add(selectors.field_value(decoded.obj(ev.kv), field))
                if ev.prev_kv is not None:
                    out.add(selectors.field_value(decoded.obj(ev.prev_kv), field))
                return out

            found = self._routers[field] = values
        return found


def chunk(data: bytes) -> bytes:
    """HTTP/1.1 chunked framing, as aiohttp's writer frames a write (never an empty chunk:
    that would end the response)."""
    return b"%x\r\n%b\r\n" % (len(data), data) if data else b""


def is_chunked(headers: object) -> bool:
    get = getattr(headers, "get", None)
    return get is not None and get("Transfer-Encoding", "") == "chunked"


def sink(transport: asyncio.BaseTransport,
         encode: Callable[[int, list[st.Event]], bytes]) -> Sink:
    """A watcher's sink onto `transport`, `encode` giving a revision's bytes as they go on
    the wire. Refuses while the client is behind; drops silently once it has gone (the
    handler finds out on its next pulse)."""
    assert isinstance(transport, asyncio.WriteTransport)

    def write(entries: list[tuple[int, list[st.Event]]]) -> bool:
        if transport.is_closing():
            return True
        if transport.get_write_buffer_size() > SINK_HIGH_WATER:
            return False
        if len(entries) == 1:
            data = encode(*entries[0])
        else:
            data = b"".join(encode(revision, events) for revision, events in entries)
        if data:
            transport.write(data)
        return True

    return write


async def pump(request: web.Request, resp: web.StreamResponse, watcher: Watcher, *,
               preface: Iterable[bytes] = (),
               history: list[tuple[int, list[st.Event]]],
               lines: Callable[[int, list[st.Event]], bytes],
               wire: Callable[[int, list[st.Event]], bytes],
               idle_every: float = math.inf,
               idle_line: Callable[[int], bytes] | None = None,
               cancel_line: Callable[[Batch], bytes],
               deadline: float = math.inf) -> None:
    """Serve one watch stream until it ends; the store watcher is closed on the way out.

    `lines` gives a revision's bytes on this stream (b"" for none), `wire` the same
    framed for a chunked response (the sink writes to the transport itself).
    `idle_line(revision)` is sent after `idle_every` seconds with nothing sent: every
    event up to `revision` has been sent (never the store's revision, which runs ahead
    of events still on their way). `cancel_line` is the stream's last line when the hub
    cancels it; the stream also ends at `deadline` (monotonic) or when the client has
    gone. The response is prepared here if it was not yet: its start failing must close
    the watcher too.
    """

    def alive() -> bool:
        return request.transport is not None and not request.transport.is_closing()

    watcher.alive = alive
    try:
        if not resp.prepared:
            await resp.prepare(request)
        for line in preface:
            await resp.write(line)
        for revision, events in history:
            data = lines(revision, events)
            if data:
                await resp.write(data)
        if request.transport is not None:
            # From here the hub writes events straight to the client.
            watcher.sink = sink(request.transport, wire if is_chunked(resp.headers) else lines)
        last_sent = time.monotonic()
        while time.monotonic() < deadline:
            # Woken by events it must write itself (the client is behind), or by the
            # hub's pulse once it is due or the client has gone: no timer of its own.
            last_sent = max(last_sent, watcher.delivered_at)
            watcher.due = min(deadline, last_sent + idle_every)
            batch = await watcher.next_batch()
            if batch.cancel_reason == watch.SHUTTING_DOWN:
                return  # ended cleanly: the client watches again elsewhere
            if batch.cancel_reason:
                await resp.write(cancel_line(batch))
                return
            if not batch.events:
                if not alive():
                    return
                last_sent = max(last_sent, watcher.delivered_at)
                if idle_line is not None and time.monotonic() - last_sent >= idle_every \
                        and not watcher.pending:
                    # Everything before the watcher's next revision has been offered to
                    # it, and (nothing pending) sent.
                    await resp.write(idle_line(watcher.next_revision - 1))
                    last_sent = time.monotonic()
                continue
            data = b"".join(lines(revision, events) for revision, events in batch.events)
            if data:
                await resp.write(data)  # one write however many revisions queued up
            last_sent = time.monotonic()
    except ConnectionResetError:
        pass  # the client went away; a cancellation propagates
    finally:
        watcher.close()
