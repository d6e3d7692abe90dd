"""Events: what the cluster did, for `rk describe` and `rk get events` to show.

`EventRecorder.event(obj, type, reason, message)` never waits: events are written in the
background, and a full backlog drops them rather than slow the loop that records them
(Kubernetes' recorder does the same). Events expire on the server after an hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from raftkube.api import kinds
from raftkube.api.timestamps import rfc3339
from raftkube.client import rest
from raftkube.client.errors import ApiError, ClientError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
BATCH = 50  # events sent in one request at most (the server takes up to 100)


class EventRecorder:
    """Events for what users look for (`Scaled up replica set ...`), written in the
    background so that a reconcile never waits on one; a full backlog drops events
    rather than slow the loop (Kubernetes' recorder does the same)."""

    def __init__(self, client: rest.RestClient, component: str, *, host: str = "",
                 clock: Callable[[], float] = time.time, backlog: int = 1000) -> None:
        self.client = client
        self.component = component
        self.host = host  # the node, for a kubelet's events (`source.host`)
        self.clock = clock
        self._queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue(backlog)
        self.sent = 0
        self.dropped = 0
        self._last = 0
        self._batches = True  # False once a master refused an EventList

    def _stamp(self) -> int:
        """The clock in nanoseconds, made unique: two events are never named alike."""
        self._last = max(int(self.clock() * 1e9), self._last + 1)
        return self._last

    def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = rfc3339(self.clock())
        body = {
            "apiVersion": "v1", "kind": "Event",
            # Named as Kubernetes names events, `{object}.{time in ns, hex}` (a
            # generateName ending in "." is not a valid name prefix).
            "metadata": {"name": f"{meta.get('name', 'x')}.{self._stamp():x}",
                         "namespace": namespace},
            "involvedObject": {"apiVersion": obj.get("apiVersion", ""),
                               "kind": obj.get("kind", ""), "name": meta.get("name", ""),
                               "namespace": meta.get("namespace", ""),
                               "uid": meta.get("uid", "")},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now,
            "source": {"component": self.component},
            "reportingComponent": self.component,
        }
        if self.host:
            body["source"] = {"component": self.component, "host": self.host}
            body["reportingInstance"] = self.host
        try:
            self._queue.put_nowait((namespace, body))
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        """Write what is queued: one event alone, or everything queued meanwhile (up to
        `BATCH` per namespace) as one request, one store transaction and one Raft entry,
        as a journal's group commit does. A busy cluster thus gets fewer, larger writes
        of events instead of one each, and an idle one sees no delay."""
        while True:
            first = await self._queue.get()
            by_namespace: dict[str, list[Obj]] = {first[0]: [first[1]]}
            while not self._queue.empty() and len(by_namespace) < 8:
                namespace, body = self._queue.get_nowait()
                group = by_namespace.setdefault(namespace, [])
                group.append(body)
                if len(group) >= BATCH:
                    break
            for namespace, bodies in by_namespace.items():
                await self._send(namespace, bodies)

    async def _send(self, namespace: str, bodies: list[Obj]) -> None:
        """Write `bodies` as one EventList, or one by one: after a master refused a list
        as such (a 400 that names no item: an older version, which takes no EventList)
        always, and for this list alone when it refused one of its events (413, 422, or
        a 400 naming `items[i]`), so that the others are still written. One event that
        cannot be written is logged and does not stop the rest."""
        if len(bodies) > 1 and self._batches:
            try:
                created = await self.client.create_batch(kinds.EVENT, namespace, bodies)
            except ApiError as e:
                if e.code in (413, 422) or (e.code == 400 and "items[" in e.message):
                    log.debug("an event of a list refused, sending them one by one: %s", e)
                elif e.code == 400:
                    self._batches = False
                else:
                    log.debug("events not recorded: %s", e)
                    return
            except ClientError as e:
                log.debug("events not recorded: %s", e)
                return
            else:
                self.sent += len(created)
                return
        for body in bodies:
            try:
                await self.client.create(kinds.EVENT, namespace, body)
            except ClientError as e:
                log.debug("event not recorded: %s", e)
            else:
                self.sent += 1
