"""A harness for one reconcile of a leader-only loop (sample-controller's `newFixture`).

`Fixture` seeds the shared informers' caches with objects, builds the controller on a
`Context` whose client only records what it is asked to write (answering as the server
would: names for generateName, uids, new resourceVersions, 404/409 on request), runs
one `reconcile(key)` and hands back the recorded actions and events for the test to
assert on. Nothing runs in the background and nothing is sent anywhere. Reads through
the API (`get`, `list_all`, which some loops make to confirm what their cache says)
answer from `client.live`, which `seed` fills too; a test changes it to make the cache
stale.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import kinds
from raftkube.client import events as ev
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError
from raftkube.controllers import base

Obj = dict[str, Any]
T0 = 1_700_000_000.0  # the fixture's clock starts here (2023-11-14T22:13:20Z)


@dataclass
class Action:
    verb: str  # create, update, update_status, patch, delete, bind
    kind: str  # the plural, e.g. "pods"
    namespace: str
    name: str
    body: Any = None

    def __repr__(self) -> str:
        return f"{self.verb} {self.kind} {self.namespace}/{self.name}"


def _status(code: int, reason: str, message: str) -> ApiError:
    return ApiError({"kind": "Status", "code": code, "reason": reason, "message": message})


@dataclass
class FakeClient:
    """Records writes; `fail[(verb, name)]` makes one answer an ApiError instead."""

    actions: list[Action] = field(default_factory=list)
    fail: dict[tuple[str, str], ApiError] = field(default_factory=dict)
    live: dict[tuple[str, str, str], Obj] = field(default_factory=dict)  # (plural, ns, name)
    reads: list[tuple[str, str, str]] = field(default_factory=list)
    term: int | None = 1
    _ids: Any = field(default_factory=lambda: itertools.count(1000))

    def _check(self, verb: str, name: str) -> None:
        error = self.fail.get((verb, name))
        if error is not None:
            raise error

    def _stamp(self, obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        meta = out.setdefault("metadata", {})
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', 'x-')}{next(self._ids):05d}"
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta["resourceVersion"] = str(next(self._ids))
        return out

    async def create(self, kind: kinds.Kind, namespace: str, obj: Obj, *,
                     dry_run: bool = False) -> Obj:
        made = self._stamp(obj)
        name = made["metadata"]["name"]
        self._check("create", name)
        self.actions.append(Action("create", kind.plural, namespace, name, made))
        return made

    async def update(self, kind: kinds.Kind, obj: Obj, *, subresource: str = "",
                     dry_run: bool = False) -> Obj:
        meta = obj["metadata"]
        verb = {"status": "update_status", "finalize": "finalize"}.get(subresource, "update")
        self._check(verb, meta["name"])
        self.actions.append(Action(verb, kind.plural, meta.get("namespace", ""),
                                   meta["name"], copy.deepcopy(obj)))
        return self._stamp(obj)

    async def update_status(self, kind: kinds.Kind, obj: Obj) -> Obj:
        return await self.update(kind, obj, subresource="status")

    async def patch(self, kind: kinds.Kind, namespace: str, name: str, patch: Any, *,
                    dry_run: bool = False, subresource: str = "",
                    content_type: str = "") -> Obj:
        verb = "patch_status" if subresource == "status" else "patch"
        self._check(verb, name)
        self.actions.append(Action(verb, kind.plural, namespace, name, copy.deepcopy(patch)))
        return self._stamp({"metadata": {"name": name, "namespace": namespace}})

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *,
                     propagation: str = "", grace: int | None = None, uid: str = "",
                     resource_version: str = "", dry_run: bool = False) -> Obj:
        self._check("delete", name)
        self.actions.append(Action("delete", kind.plural, namespace, name,
                                   {"propagation": propagation, "grace": grace, "uid": uid,
                                    "resourceVersion": resource_version}))
        return {}

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Obj:
        where = (kind.plural, namespace if kind.namespaced else "", name)
        self.reads.append(where)
        self._check("get", name)
        found = self.live.get(where)
        if found is None:
            raise not_found(name)
        return copy.deepcopy(found)

    async def list_all(self, kind: kinds.Kind, namespace: str | None = None,
                       **_selectors: Any) -> tuple[list[Obj], str]:
        self.reads.append((kind.plural, namespace or "", ""))
        return [copy.deepcopy(o) for (plural, ns, _), o in sorted(self.live.items())
                if plural == kind.plural and namespace in (None, ns)], "1"

    async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> Obj:
        self._check("bind", name)
        self.actions.append(Action("bind", "pods", namespace, name, node))
        return {"status": "Success"}


class Fixture:
    def __init__(self, *, now: float = T0, options: base.Options | None = None) -> None:
        self.now = now  # both clocks advance with it
        self.wall_jump = 0.0  # how far the wall clock was stepped (NTP) on top of `now`
        self.client = FakeClient()
        self.informers = inf.InformerFactory(self.client)  # type: ignore[arg-type]
        self.events = ev.EventRecorder(self.client, "test",  # type: ignore[arg-type]
                                       clock=lambda: self.now + self.wall_jump)
        self.ctx = base.Context(client=self.client,  # type: ignore[arg-type]
                                informers=self.informers, events=self.events,
                                clock=lambda: self.now + self.wall_jump,
                                monotonic=lambda: self.now,
                                options=options or base.Options())

    def seed(self, kind: kinds.Kind, *objs: Obj) -> None:
        """Put objects in the kind's cache as a list would, without telling handlers."""
        informer = self.informers.informer(kind)
        for obj in objs:
            informer.cache.put(copy.deepcopy(obj))
            self.client.live[self.where(kind, obj)] = copy.deepcopy(obj)
        informer.synced.set()

    @staticmethod
    def where(kind: kinds.Kind, obj: Obj) -> tuple[str, str, str]:
        meta = obj.get("metadata") or {}
        return (kind.plural, meta.get("namespace", "") if kind.namespaced else "",
                meta.get("name", ""))

    async def run(self, controller: Any, key: str) -> list[Action]:
        """One reconcile of `key`; the actions it took."""
        self.client.actions.clear()
        await controller.reconcile(key)
        return list(self.client.actions)

    def recorded_events(self) -> list[tuple[str, str, str]]:
        """(type, reason, message) of the events recorded since the last call."""
        out = []
        queue: asyncio.Queue[tuple[str, Obj]] = self.events._queue
        while not queue.empty():
            _, body = queue.get_nowait()
            out.append((body["type"], body["reason"], body["message"]))
        return out


def conflict(name: str) -> ApiError:
    return _status(409, "Conflict", f'Operation cannot be fulfilled on "{name}"')


def not_found(name: str) -> ApiError:
    return _status(404, "NotFound", f'"{name}" not found')
