"""The Kubernetes-style REST API as typed calls: paths, verbs, watches, fencing.

`RestClient` owns paths and verbs and turns error answers into `ApiError` (a Kubernetes
`Status`); `transport` decides which master answers. Leader-only loops make their client
with `term=T`, the Raft term they were elected in: every write then carries
`X-Raftkube-Term: T`, and the store refuses it once a leader of a newer term has written,
so a deposed leader's late writes change nothing.
"""

from __future__ import annotations

import builtins
import json
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from raftkube.api import channels, kinds
from raftkube.client import transport as tp
from raftkube.client.errors import ApiError, ClientError

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
WATCH_READ_TIMEOUT = 30.0  # the server sends a bookmark at least every 10 s


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: Obj

    @property
    def resource_version(self) -> str:
        return str((self.object.get("metadata") or {}).get("resourceVersion") or "")


def path_of(kind: kinds.Kind, namespace: str | None = None, name: str | None = None,
            subresource: str = "") -> str:
    """The REST path of a kind's collection or object; no namespace lists across all."""
    path = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if kind.namespaced and namespace:
        path += "/namespaces/" + _quote(namespace)
    path += "/" + kind.plural
    if name:
        path += "/" + _quote(name)
        if subresource:
            path += "/" + subresource
    return path


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def is_status(answer: tp.Answer) -> bool:
    """Whether an error answer is a Kubernetes `Status`, as every API server sends; any
    other answer came from something else on that address."""
    try:
        body = json.loads(answer.body)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("kind") == "Status"


def _status_of(answer: tp.Answer) -> ApiError:
    try:
        body = json.loads(answer.body)
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("kind") != "Status":
        body = {"code": answer.status, "reason": "",
                "message": f"HTTP {answer.status} from {answer.server}"}
    body.setdefault("code", answer.status)
    return ApiError(body)


class RestClient:
    """`token`, when given, is this client's own bearer token on a shared transport
    (each hollow node of an agent speaks as itself); else the transport's is used."""

    def __init__(self, transport: tp.Transport, *, term: int | None = None,
                 field_validation: str = "Strict", timeout: float | None = None,
                 token: str | None = None) -> None:
        self.transport = transport
        self.term = term
        self.field_validation = field_validation  # what create, update and patch ask for
        self.timeout = timeout
        self.token = token
        self.warnings: list[str] = []  # from the answers' Warning headers, oldest first

    def with_term(self, term: int) -> RestClient:
        """The same client for a leader-only loop elected in `term`."""
        return RestClient(self.transport, term=term, field_validation=self.field_validation,
                          timeout=self.timeout, token=self.token)

    def _auth(self, headers: dict[str, str]) -> dict[str, str]:
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def request(self, method: str, path: str, *, body: Any = None,
                      query: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        """One request; its JSON answer, or ApiError for a Status answer."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if self.term is not None and method not in tp.IDEMPOTENT:
            headers[tp.TERM_HEADER] = str(self.term)
        answer = await self.transport.request(method, path, query=query, body=data,
                                              headers=self._auth(headers),
                                              timeout=self.timeout,
                                              ours=is_status)
        self.warnings += answer.warnings
        if answer.status >= 400:
            raise _status_of(answer)
        return answer.json()

    # ---- verbs ------------------------------------------------------------------------

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Obj:
        obj: Obj = await self.request("GET", path_of(kind, namespace, name))
        return obj

    async def list(self, kind: kinds.Kind, namespace: str | None = None, *,
                   label_selector: str = "", field_selector: str = "", limit: int = 0,
                   continue_token: str = "") -> Obj:
        """One page of a list (a `{Kind}List`); namespace None lists across namespaces."""
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if limit:
            query["limit"] = str(limit)
        if continue_token:
            query["continue"] = continue_token
        answer: Obj = await self.request("GET", path_of(kind, namespace), query=query)
        return answer

    async def list_all(self, kind: kinds.Kind, namespace: str | None = None, *,
                       label_selector: str = "", field_selector: str = "",
                       chunk: int = 500) -> tuple[builtins.list[Obj], str]:
        """Every item of a list, fetched in pages of `chunk` (kubectl's --chunk-size),
        and the resourceVersion the list was read at."""
        items: builtins.list[Obj] = []
        token = ""
        while True:
            page = await self.list(kind, namespace, label_selector=label_selector,
                                   field_selector=field_selector, limit=chunk,
                                   continue_token=token)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return items, str(meta.get("resourceVersion") or "")

    def _write_query(self, dry_run: bool) -> dict[str, str]:
        query = {"fieldValidation": self.field_validation}
        if dry_run:
            query["dryRun"] = "All"
        return query

    async def create(self, kind: kinds.Kind, namespace: str, obj: Obj, *,
                     dry_run: bool = False) -> Obj:
        created: Obj = await self.request("POST", path_of(kind, namespace), body=obj,
                                          query=self._write_query(dry_run))
        return created

    async def create_batch(self, kind: kinds.Kind, namespace: str,
                           objs: Sequence[Obj]) -> builtins.list[Obj]:
        """Create several objects of one kind in one namespace with one request and one
        store transaction: a POST of a `{Kind}List`, which raftkube's API server takes
        for Events (a recorder's backlog). Answered: the objects created."""
        body = {"apiVersion": kind.api_version, "kind": f"{kind.kind}List",
                     "items": builtins.list(objs)}
        answer: Obj = await self.request("POST", path_of(kind, namespace), body=body)
        return list(answer.get("items") or [])

    async def update(self, kind: kinds.Kind, obj: Obj, *, subresource: str = "",
                     dry_run: bool = False) -> Obj:
        """PUT `obj` (its `metadata.resourceVersion` is a precondition: Conflict if the
        object changed since it was read); `subresource="status"` writes only status."""
        meta = obj.get("metadata") or {}
        path = path_of(kind, meta.get("namespace") or "", meta.get("name") or "", subresource)
        updated: Obj = await self.request("PUT", path, body=obj,
                                          query=self._write_query(dry_run))
        return updated

    async def update_status(self, kind: kinds.Kind, obj: Obj) -> Obj:
        return await self.update(kind, obj, subresource="status")

    async def patch(self, kind: kinds.Kind, namespace: str, name: str, patch: Any, *,
                    dry_run: bool = False, subresource: str = "",
                    content_type: str = MERGE_PATCH) -> Obj:
        """A JSON merge patch (RFC 7386) by default: null deletes, objects merge, lists
        replace. A `metadata.resourceVersion` in it is a precondition."""
        patched: Obj = await self.request(
            "PATCH", path_of(kind, namespace, name, subresource), body=patch,
            content_type=content_type, query=self._write_query(dry_run))
        return patched

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *,
                     propagation: str = "", grace: int | None = None,
                     uid: str = "", resource_version: str = "",
                     dry_run: bool = False) -> Obj:
        """Delete, with kubectl's options; `uid`/`resource_version` are preconditions."""
        query: dict[str, str] = {}
        if propagation:
            query["propagationPolicy"] = propagation
        if grace is not None:
            query["gracePeriodSeconds"] = str(grace)
        if dry_run:
            query["dryRun"] = "All"
        body = None
        preconditions = {k: v for k, v in (("uid", uid), ("resourceVersion",
                                                         resource_version)) if v}
        if preconditions:
            body = {"kind": "DeleteOptions", "apiVersion": "v1",
                    "preconditions": preconditions}
        answer: Obj = await self.request("DELETE", path_of(kind, namespace, name),
                                         query=query or None, body=body)
        return answer

    async def bind(self, namespace: str, name: str, node: str, *, uid: str = "") -> Obj:
        """Assign a pod to a node through its `binding` subresource, as a scheduler does:
        refused (409) if the pod is bound already, or is not the pod `uid` names."""
        binding: Obj = {"apiVersion": "v1", "kind": "Binding",
                        "metadata": {"name": name, "namespace": namespace},
                        "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        if uid:
            binding["metadata"]["uid"] = uid
        answer: Obj = await self.request(
            "POST", path_of(kinds.POD, namespace, name, "binding"), body=binding)
        return answer

    async def bind_batch(self, namespace: str,
                         bindings: Sequence[tuple[str, str, str]]) -> builtins.list[Obj]:
        """Bind several pods of one namespace with one request, each `(pod, node, uid)`:
        a POST of a `BindingList` on the namespace's pods, which raftkube's API server
        writes in one store transaction where it can. Answered: one Status per binding,
        in order, what its own `binding` POST would have answered (`code` 201, or the
        error). The request as a whole raises as any request does."""
        items = []
        for pod, node, uid in bindings:
            meta: Obj = {"name": pod, "namespace": namespace}
            if uid:
                meta["uid"] = uid
            items.append({"apiVersion": "v1", "kind": "Binding", "metadata": meta,
                          "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
        answer: Obj = await self.request(
            "POST", path_of(kinds.POD, namespace),
            body={"apiVersion": "v1", "kind": "BindingList", "items": items})
        return builtins.list(answer.get("items") or [])

    # ---- what only a pod's node knows -----------------------------------------------

    async def logs(self, namespace: str, name: str, *, container: str = "",
                   follow: bool = False, tail: int | None = None, previous: bool = False,
                   timestamps: bool = False, since_seconds: int | None = None,
                   limit_bytes: int | None = None) -> AsyncIterator[bytes]:
        """A container's output, in chunks as they come (`pods/log`)."""
        query = {k: "true" for k, on in (("follow", follow), ("previous", previous),
                                         ("timestamps", timestamps)) if on}
        for key, value in (("container", container or None), ("tailLines", tail),
                           ("sinceSeconds", since_seconds), ("limitBytes", limit_bytes)):
            if value is not None:
                query[key] = str(value)
        try:
            async with self.transport.stream(
                    "GET", path_of(kinds.POD, namespace, name, "log"), query=query,
                    read_timeout=None if follow else 60.0,
                    headers=self._auth({}) or None, ours=is_status) as stream:
                async for chunk in stream.chunks():
                    yield chunk
        except tp.ErrorAnswer as e:
            raise _status_of(e.answer) from None

    @asynccontextmanager
    async def exec(self, namespace: str, name: str, command: Sequence[str], *,
                   container: str = "", stdin: bool = False, tty: bool = False
                   ) -> AsyncIterator[tp.WebSocket]:
        """A command in a pod's container, its streams over Kubernetes' WebSocket
        channels (`api/channels.py`); the caller reads and writes the messages."""
        query = [("command", c) for c in command] + [
            ("stdin", str(stdin).lower()), ("stdout", "true"),
            ("stderr", str(not tty).lower()), ("tty", str(tty).lower())]
        if container:
            query.append(("container", container))
        try:
            async with self.transport.websocket(
                    path_of(kinds.POD, namespace, name, "exec"), query=query,
                    protocols=channels.PROTOCOLS, headers=self._auth({}) or None) as ws:
                yield ws
        except tp.ErrorAnswer as e:
            raise _status_of(e.answer) from None

    # ---- watch ------------------------------------------------------------------------

    async def watch(self, kind: kinds.Kind, namespace: str | None = None, *,
                    resource_version: str = "", label_selector: str = "",
                    field_selector: str = "", timeout_seconds: int = 0,
                    read_timeout: float = WATCH_READ_TIMEOUT) -> AsyncIterator[WatchEvent]:
        """Events after `resource_version`, with bookmarks, until the stream ends.

        An `ERROR` event or an error answer raises `ApiError` (410 `Gone` when the version
        is older than the server's history: relist). A broken stream raises aiohttp's or
        asyncio's error; the caller resumes from the last version it saw.
        """
        query = {"watch": "true", "allowWatchBookmarks": "true"}
        if resource_version:
            query["resourceVersion"] = resource_version
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if timeout_seconds:
            query["timeoutSeconds"] = str(timeout_seconds)
        try:
            async with self.transport.stream("GET", path_of(kind, namespace), query=query,
                                             read_timeout=read_timeout,
                                             headers=self._auth({}) or None,
                                             ours=is_status) as stream:
                async for line in stream.lines():
                    try:
                        event = json.loads(line)
                        kind_of_event, obj = event["type"], event["object"]
                    except (ValueError, KeyError, TypeError):
                        raise ClientError(f"{stream.server} sent a watch line that is not "
                                          "an event") from None
                    if kind_of_event == "ERROR":
                        raise ApiError(obj if isinstance(obj, dict) else {})
                    yield WatchEvent(kind_of_event, obj)
        except tp.ErrorAnswer as e:
            raise _status_of(e.answer) from None
