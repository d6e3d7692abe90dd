"""Informers: a local, indexed copy of one kind of object, kept current by list + watch.

An informer lists the objects, then watches from the list's resourceVersion; when the
stream breaks it resumes from the last version it saw (on any master: the transport
picks one), and when that version has left the server's history (410 Gone) it lists
again and tells its handlers what changed meanwhile. Handlers hear add, update and
delete, and a periodic resync repeats an update for every object, so a reconciler that
missed something catches up: they should only enqueue keys (level-triggered).

An object is its uid, not its name: one deleted and made again under the same name
between two things the informer saw (a relist, or a watch event whose delete it did not
see) is told as a delete of the old and an add of the new, never as an update, so that
a handler keeping state per object (a countdown, an owner's pods) drops the old one's.
A relist tells a delete for every cached object the list no longer has.

The cache holds the objects as they came from the server. They are shared: never mutate
one, copy it first (`copy.deepcopy`). Indexes answer "pods on node n1", "pods in
namespace ns", "objects owned by uid u" without a scan.

`InformerFactory` shares one informer per kind among every loop of a process, as
client-go's shared informers do: one watch and one cache, many handlers.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raftkube.api import kinds
from raftkube.client import rest
from raftkube.client.errors import ApiError, ClientError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
IndexFunc = Callable[[Obj], Iterable[str]]

NAMESPACE = "namespace"
NODE = "node"
OWNER = "owner"


def key_of(obj: Obj) -> str:
    """`namespace/name`, or `name` for cluster-scoped objects: a work-queue key."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name', '')}" if namespace else str(meta.get("name", ""))


def split_key(key: str) -> tuple[str, str]:
    namespace, _, name = key.rpartition("/")
    return namespace, name


def _namespace(obj: Obj) -> Iterable[str]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    return [namespace] if namespace else []


def _node(obj: Obj) -> Iterable[str]:
    spec = obj.get("spec")
    node = spec.get("nodeName") if isinstance(spec, dict) else None
    return [node] if isinstance(node, str) and node else []


def _owners(obj: Obj) -> Iterable[str]:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [r["uid"] for r in refs if isinstance(r, dict) and isinstance(r.get("uid"), str)]


DEFAULT_INDEXES: Mapping[str, IndexFunc] = {NAMESPACE: _namespace, NODE: _node,
                                            OWNER: _owners}


def resource_version(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _uid(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


class Cache:
    """Objects by key, with indexes. Read from the event loop only."""

    def __init__(self, indexers: Mapping[str, IndexFunc] = DEFAULT_INDEXES) -> None:
        self._objects: dict[str, Obj] = {}
        self._indexers = dict(indexers)
        self._indexes: dict[str, dict[str, set[str]]] = {name: {} for name in indexers}

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, key: str) -> Obj | None:
        return self._objects.get(key)

    def list(self) -> list[Obj]:
        return list(self._objects.values())

    def keys(self) -> builtins.list[str]:
        return list(self._objects)

    def by_index(self, index: str, value: str) -> builtins.list[Obj]:
        keys = self._indexes[index].get(value, ())
        return [self._objects[k] for k in sorted(keys)]

    def put(self, obj: Obj) -> Obj | None:
        """Store `obj`; the object it replaced, if any."""
        key = key_of(obj)
        old = self._objects.get(key)
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = obj
        for name, func in self._indexers.items():
            for value in func(obj):
                self._indexes[name].setdefault(value, set()).add(key)
        return old

    def remove(self, key: str) -> Obj | None:
        old = self._objects.pop(key, None)
        if old is not None:
            self._unindex(key, old)
        return old

    def _unindex(self, key: str, obj: Obj) -> None:
        for name, func in self._indexers.items():
            index = self._indexes[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]


@dataclass
class Handler:
    """What one consumer wants to hear; each callback is optional."""

    add: Callable[[Obj], None] | None = None
    update: Callable[[Obj, Obj], None] | None = None
    delete: Callable[[Obj], None] | None = None


class Informer:
    def __init__(self, client: rest.RestClient, kind: kinds.Kind, *,
                 namespace: str | None = None, label_selector: str = "",
                 field_selector: str = "",
                 indexers: Mapping[str, IndexFunc] = DEFAULT_INDEXES,
                 resync: float = 0.0, rng: random.Random | None = None) -> None:
        self.client = client
        self.kind = kind
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.resync = resync
        self.cache = Cache(indexers)
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.lists = 0  # how many times it listed (the first time, and after each 410)
        self._handlers: list[Handler] = []
        self._rng = rng or random.Random()

    def add_handler(self, handler: Handler) -> None:
        """Hear about every object from now on (those already cached as adds)."""
        self._handlers.append(handler)
        if handler.add is not None:
            for obj in self.cache.list():
                self._call(handler.add, obj)

    async def wait_synced(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self.synced.wait()

    async def run(self) -> None:
        """List and watch until cancelled."""
        resync = asyncio.ensure_future(self._resync_forever()) if self.resync else None
        try:
            await self._list_and_watch()
        finally:
            if resync is not None:
                resync.cancel()
                await asyncio.gather(resync, return_exceptions=True)

    async def _list_and_watch(self) -> None:
        must_list = True
        pause = 0.1
        while True:
            try:
                if must_list:
                    await self._relist()
                    must_list = False
                async for event in self.client.watch(
                        self.kind, self.namespace, resource_version=self.resource_version,
                        label_selector=self.label_selector,
                        field_selector=self.field_selector):
                    self._on_event(event)
                    pause = 0.1
                # The server ended the stream (its timeout): watch again from where we are.
            except ApiError as e:
                if e.code == 410:
                    log.info("%s informer: version %s is too old; listing again",
                             self.kind.plural, self.resource_version)
                    must_list = True
                    continue
                log.warning("%s informer: %s", self.kind.plural, e)
            except ClientError as e:
                log.info("%s informer: %s; resuming from %s", self.kind.plural, e,
                         self.resource_version or "a new list")
            await asyncio.sleep(pause * (0.5 + self._rng.random()))
            pause = min(pause * 2, 2.0)

    async def _relist(self) -> None:
        items, version = await self.client.list_all(
            self.kind, self.namespace, label_selector=self.label_selector,
            field_selector=self.field_selector)
        self.lists += 1
        seen = set()
        for obj in items:
            key = key_of(obj)
            seen.add(key)
            old = self.cache.put(obj)
            if old is None or resource_version(old) != resource_version(obj):
                self._stored(old, obj)
        for key in set(self.cache.keys()) - seen:
            gone = self.cache.remove(key)
            if gone is not None:
                self._notify("delete", gone)
        self.resource_version = version
        self.synced.set()

    def _on_event(self, event: rest.WatchEvent) -> None:
        obj = event.object
        version = event.resource_version
        if event.type in ("ADDED", "MODIFIED"):
            self._stored(self.cache.put(obj), obj)
        elif event.type == "DELETED":
            gone = self.cache.remove(key_of(obj))
            if gone is not None:
                self._notify("delete", obj)
        if version:
            self.resource_version = version

    def _stored(self, old: Obj | None, new: Obj) -> None:
        """Tell what storing `new` over `old` (None: nothing there) was."""
        if old is None:
            self._notify("add", new)
        elif _uid(old) != _uid(new):
            self._notify("delete", old)
            self._notify("add", new)
        else:
            self._notify("update", old, new)

    def _notify(self, what: str, *objs: Obj) -> None:
        for handler in self._handlers:
            callback: Any = getattr(handler, what)
            if callback is not None:
                self._call(callback, *objs)

    def _call(self, callback: Callable[..., None], *objs: Obj) -> None:
        try:
            callback(*objs)
        except Exception:  # a handler's bug must not stop the informer
            log.exception("%s informer: a handler failed", self.kind.plural)

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(self.resync)
            if self.synced.is_set():
                for obj in self.cache.list():
                    self._notify("update", obj, obj)


class InformerFactory:
    """One informer per kind (all namespaces, no selector), shared by every loop."""

    def __init__(self, client: rest.RestClient, *, resync: float = 0.0) -> None:
        self.client = client
        self.resync = resync
        self._informers: dict[kinds.Kind, Informer] = {}

    def informer(self, kind: kinds.Kind) -> Informer:
        if kind not in self._informers:
            self._informers[kind] = Informer(self.client, kind, resync=self.resync)
        return self._informers[kind]

    def informers(self) -> list[Informer]:
        return list(self._informers.values())

    async def run(self) -> None:
        """Run every informer asked for so far, until cancelled."""
        async with asyncio.TaskGroup() as group:
            for informer in self._informers.values():
                group.create_task(informer.run())

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.gather(*(i.wait_synced(timeout) for i in self._informers.values()))
