"""Kubernetes-style REST on every master: paths, verbs, auth, watch.

One dispatcher parses `/api/v1/...` and `/apis/{group}/{version}/...` into (kind,
namespace, name, subresource) and calls `Objects`. Everything a client can see as an
error is a Kubernetes `Status`; a request is fully checked before anything is written.

Users: the app's middleware has authenticated the request (`auth`): the admin, or a
node's agent, `system:node:NAME`, who may read what an agent needs (ConfigMaps and
Secrets only by name in their namespace, and only those its pods refer to), write its
own Node and its Lease in `raftkube-system`, create Events, and write the status of (and
delete) the pods bound to it. Anything else is 403, decided before the object asked for
is looked up (a node never learns whether it exists).

Bodies and integer parameters are read by `inputs`, whose refusals become Status 400
or 413 here.

A store that cannot serve the request (no leader, not ready, stopping) is a 503
ServiceUnavailable: nothing was done, and a client may ask another master. A write
that was proposed and whose result did not come is a 504 Timeout, as in Kubernetes: it
may still be applied, and must not be sent again blindly (`objects`).

A GET, list or watch whose Accept header asks for a meta.k8s.io Table (kubectl's `get`)
gets one, with Kubernetes' columns for the kind (`tables`, `api.printers`).

Served but not stored: v1 Endpoints, read-only and made from the EndpointSlices on each
read (`endpoints`); `pods/NAME/eviction`, a pod's delete as `kubectl drain` asks for it
(`eviction`); self reviews, `kubectl auth whoami` and `can-i` (`reviews`), decided by the
rules below.

Watch: `?watch=true&resourceVersion=N` streams `{"type","object"}` lines from revision
N+1, with BOOKMARKs when `allowWatchBookmarks=true`; without N it first sends the current
objects as ADDED. A selector-filtered watch sends DELETED when an object stops matching
and ADDED when it starts, so a cache built from list+watch stays exact.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from raftkube.api import kinds, references, schema, selectors
from raftkube.apiserver import (
    auth,
    deletion,
    endpoints,
    eviction,
    fanout,
    fencing,
    inputs,
    patches,
    podproxy,
    protobuf,
    reviews,
    scale,
    tables,
)
from raftkube.apiserver import objects as ob
from raftkube.apiserver import status as stt
from raftkube.store import state as st
from raftkube.store.replica import Replica, Unavailable
from raftkube.store.watch import Batch

POD_KIND = ob.known_kind("v1", "Pod")
MAX_BODY = 3 * 1024 * 1024  # Kubernetes' request limit; objects are capped lower, by the store
NODE_READABLE = {"pods", "services", "endpoints", "endpointslices", "nodes", "namespaces",
                 "leases", "events"}
# A node reads these one by one, and only those that a pod bound to it refers to (as
# Kubernetes' node authorizer allows): a node never sees the cluster's other secrets.
NODE_REFERENCED = {"configmaps", "secrets"}


# The verbs of each subresource, as Kubernetes serves them: status is read and written
# (get, update, patch), a binding or an eviction created, a namespace's finalize updated.
SUBRESOURCE_METHODS = {"status": ("GET", "PUT", "PATCH"), "binding": ("POST",),
                       "finalize": ("PUT",), "scale": ("GET", "PUT", "PATCH"),
                       "eviction": ("POST",)}


@dataclass
class Target:
    kind: kinds.Kind
    namespace: str  # "" for cluster-scoped kinds and for lists across namespaces
    name: str
    subresource: str


class Rest:
    def __init__(self, replica: Replica, objects: ob.Objects, *,
                 bookmark_every: float = 10.0) -> None:
        self.replica = replica
        self.objects = objects
        self.bookmark_every = bookmark_every
        self.encodings = fanout.SharedEncodings()
        self.decoded = fanout.Decoded()
        self.routes = fanout.Routes(self.decoded)

    # ---- entry point ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = request[auth.USER]
            if request.path in ("/api", "/apis", "/api/", "/apis/"):
                return web.json_response(discovery_root(request.path.rstrip("/")))
            found = endpoints.match(request.path)
            if found is not None:
                return await self.endpoints(request, user, *found)
            review = reviews.route(request.path)
            if review is not None:
                return await self.review(request, user, *review)
            target, is_discovery = parse_path(request.path)
            if is_discovery:
                return web.json_response(discovery_group(request.path))
            assert target is not None
            return await self.dispatch(request, user, target)
        except stt.ApiError as e:
            return web.json_response(e.status(), status=e.code)
        except inputs.BadInput as e:
            return web.json_response(bad_input(e).status(), status=e.status)
        except RecursionError:  # a backstop: input is measured before anything walks it
            err = stt.bad_request("the request nests too deeply")
            return web.json_response(err.status(), status=400)
        except Unavailable as e:
            # Nothing was written (a write whose outcome is unknown is a Timeout, raised
            # where it was proposed): another master may serve it.
            err = stt.unavailable(f"this master cannot serve the request now: {e}")
            return web.json_response(err.status(), status=503)
        except st.StoreError as e:
            err = stt.ApiError(500, "InternalError", f"store: {e.message}")
            return web.json_response(err.status(), status=500)

    # ---- dispatch ---------------------------------------------------------------------

    async def dispatch(self, request: web.Request, user: auth.User,
                       t: Target) -> web.StreamResponse:
        if request.method == "GET":
            return await self._dispatch(request, user, t)
        try:
            term = fencing.requested_term(request.headers.get(fencing.TERM_HEADER),
                                          self.replica.view.term)
        except ValueError as e:
            raise stt.bad_request(f"{fencing.TERM_HEADER}: {e}") from None
        fence = ob.FENCE.set(term)  # every write of this request carries the term
        try:
            return await self._dispatch(request, user, t)
        finally:
            ob.FENCE.reset(fence)

    async def _dispatch(self, request: web.Request, user: auth.User, t: Target
                        ) -> web.StreamResponse:
        allowed = SUBRESOURCE_METHODS.get(t.subresource)
        if allowed is not None and request.method not in allowed:
            # Before anything else: a DELETE of pods/NAME/status must never reach the
            # object's own DELETE below.
            raise stt.ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the "
                f"requested resource ({request.method} {t.kind.plural}/{t.subresource}: "
                f"{', '.join(allowed)} only)")
        q = request.query
        dry_run = q.get("dryRun") == "All"
        if "dryRun" in q and q.get("dryRun") != "All":
            raise stt.bad_request(f'dryRun: Unsupported value: "{q.get("dryRun")}": '
                                  'supported values: "All"')
        method = request.method
        strictness = q.get("fieldValidation", "Warn")
        if strictness not in ("Strict", "Warn", "Ignore"):
            raise stt.bad_request(f'fieldValidation: Unsupported value: "{strictness}": '
                                  'supported values: "Ignore", "Strict", "Warn"')
        if method == "GET":
            table = tables.wanted(request.headers.get("Accept", ""), q)
            if t.name:
                if not user.admin and t.kind.plural in NODE_REFERENCED:
                    await self.authorize_referenced(user, t)
                else:
                    self.authorize(user, "get", t, None)
                if t.subresource == "scale":
                    return web.json_response(await self.objects.get_scale(
                        t.kind, t.namespace, t.name))
                stored = await self.objects.get(t.kind, t.namespace, t.name)
                if table is not None:
                    return web.json_response(tables.of_object(t.kind, stored.obj, table))
                return web.json_response(stored.obj)
            verb = "watch" if q.get("watch") in ("true", "1") else "list"
            self.authorize(user, verb, t, None)
            label, fields = parse_selectors(q, t.kind)
            query_int(q, "resourceVersion", minimum=0)  # refused here, by name, if bad
            if verb == "watch":
                return await self.watch(request, t, label, fields, table)
            limit = query_int(q, "limit", minimum=0)
            result = await self.objects.list_objects(t.kind, t.namespace or None, label=label,
                                             fields=fields, limit=limit,
                                             continue_token=q.get("continue", ""))
            meta: dict[str, Any] = {"resourceVersion": str(result.revision)}
            if result.continue_token:
                meta["continue"] = result.continue_token
            if table is not None:
                return web.json_response(tables.of_list(t.kind, result.items, meta, table))
            return web.json_response({"kind": f"{t.kind.kind}List",
                                      "apiVersion": t.kind.api_version,
                                      "metadata": meta, "items": result.items})
        if method == "POST" and t.subresource == "binding":
            binding = await read_object(request)
            self.authorize(user, "create", t, binding)
            bound = await self.objects.bind(t.namespace, t.name, binding, dry_run=dry_run)
            return web.json_response(bound, status=201)
        if method == "POST" and t.subresource != "eviction":
            if t.name:
                raise stt.ApiError(405, "MethodNotAllowed",
                                   "the server does not allow this method on the requested "
                                   "resource")
            body = await read_object(request)
            if body.get("kind") == f"{t.kind.kind}List" and t.kind.kind in ob.BATCH_KINDS:
                return await self._create_batch(user, t, body, strictness, dry_run)
            if body.get("kind") == "BindingList" and t.kind.kind == "Pod":
                return await self._bind_batch(user, t, body, dry_run)
            check_body(body, t)
            if t.kind.namespaced and not t.namespace:
                raise stt.bad_request("a namespaced object is created under "
                                      "/namespaces/{namespace}/")
            self.authorize(user, "create", t, body)
            body, warnings = check_fields(body, t, strictness)
            created = await self.objects.create(t.kind, t.namespace, body, dry_run=dry_run)
            return warn(web.json_response(created, status=201), warnings)
        if not t.name:
            raise stt.ApiError(405, "MethodNotAllowed",
                               "the server does not allow this method on the requested "
                               "resource")
        if method == "PUT" and t.subresource == "scale":
            body = await read_object(request)
            await self.authorize_existing(user, "update", t)
            return web.json_response(await self.objects.update_scale(
                t.kind, t.namespace, t.name, body, dry_run=dry_run))
        if method == "PUT":
            body = await read_object(request)
            check_body(body, t)
            name = (body.get("metadata") or {}).get("name")
            if name != t.name:
                raise stt.bad_request(f"the name of the object ({name}) does not match the "
                                      f"name on the URL ({t.name})")
            await self.authorize_existing(user, "update", t)
            body, warnings = check_fields(body, t, strictness)
            updated = await self.objects.update(t.kind, t.namespace, t.name, body,
                                                subresource=t.subresource, dry_run=dry_run)
            return warn(web.json_response(updated), warnings)
        if method == "PATCH":
            patch_type = patches.type_of(request.content_type)
            patch = await read_body(request)
            await self.authorize_existing(user, "patch", t)
            if t.subresource == "scale":
                return web.json_response(await self.objects.patch_scale(
                    t.kind, t.namespace, t.name, patch, patch_type=patch_type,
                    dry_run=dry_run))
            warnings = []

            def check_result(patched: dict[str, Any]) -> dict[str, Any]:
                # A JSON patch's fields are known once it has applied: checked then.
                nonlocal warnings
                checked, warnings = check_fields(patched, t, strictness)
                result: dict[str, Any] = checked
                return result

            if patch_type != "json":
                patch, warnings = check_fields(patch, t, strictness,
                                               directives=patch_type == "strategic")
            patched = await self.objects.patch(
                t.kind, t.namespace, t.name, patch, patch_type=patch_type,
                subresource=t.subresource, dry_run=dry_run,
                check=check_result if patch_type == "json" else None)
            return warn(web.json_response(patched), warnings)
        if method == "DELETE" or t.subresource == "eviction":
            if t.subresource == "eviction":  # a delete that a disruption budget could refuse
                options = eviction.delete_options(t.name, t.namespace,
                                                  await read_object(request))
            else:
                options = await read_body(request) if request.can_read_body else {}
                options = {} if options is None else options  # an empty body, as kubectl
                if not isinstance(options, dict):
                    raise stt.bad_request("DeleteOptions must be an object")
            propagation, grace, dry_run, preconditions = delete_options(q, options, dry_run)
            await self.authorize_existing(user, "delete", t)
            outcome = await self.objects.delete(t.kind, t.namespace, t.name,
                                                propagation=propagation, grace=grace,
                                                dry_run=dry_run,
                                                preconditions=preconditions)
            if t.subresource == "eviction":
                return web.json_response(eviction.ACCEPTED, status=201)
            return web.json_response(deletion.answer(t.kind, outcome))
        raise stt.ApiError(405, "MethodNotAllowed", f"method {method} is not allowed")

    async def endpoints(self, request: web.Request, user: auth.User, namespace: str,
                        name: str) -> web.Response:
        """Endpoints: read-only, made from the EndpointSlices on each read (`endpoints`)."""
        q = request.query
        if request.method != "GET" or q.get("watch") in ("true", "1"):
            raise endpoints.refuse_method("WATCH" if request.method == "GET"
                                          else request.method)
        t = Target(endpoints.KIND, namespace, name, "")
        self.authorize(user, "get" if name else "list", t, None)
        table = tables.wanted(request.headers.get("Accept", ""), q)
        if name:
            obj = await endpoints.get(self.objects, namespace, name)
            return web.json_response(obj if table is None
                                     else tables.of_object(endpoints.KIND, obj, table))
        label, fields = parse_selectors(q, endpoints.KIND)
        items, revision = await endpoints.list_all(self.objects, namespace or None, label,
                                                   fields)
        meta = {"resourceVersion": str(revision)}
        if table is not None:
            return web.json_response(tables.of_list(endpoints.KIND, items, meta, table))
        return web.json_response({"kind": "EndpointsList", "apiVersion": "v1",
                                  "metadata": meta, "items": items})

    async def review(self, request: web.Request, user: auth.User, group: str,
                     resource: str) -> web.Response:
        """`kubectl auth whoami` and `kubectl auth can-i` (`reviews`)."""
        if resource == "?":
            raise stt.ApiError(404, "NotFound", "the server could not find the requested "
                                                "resource")
        if not resource:
            return web.json_response(reviews.discovery(group))
        if request.method != "POST":
            raise stt.ApiError(405, "MethodNotAllowed", f"the server does not allow this "
                               f"method on the requested resource ({request.method} "
                               f"{resource}: POST only)")
        body = await read_object(request)
        if resource == reviews.WHO:
            reviews.check_who(body)
            return web.json_response(reviews.who(user), status=201)
        if resource == reviews.RULES:
            return web.json_response(reviews.rules(user, body), status=201)
        allowed, reason = await self.allowed(user, reviews.access(body))
        return web.json_response(reviews.answer(body, allowed, reason), status=201)

    async def allowed(self, user: auth.User, wanted: reviews.Access | None
                      ) -> tuple[bool, str]:
        """Whether `user` may do `wanted` (None: a non-resource URL), decided by the rules
        that admit or refuse the request itself; and why."""
        if user.admin:
            return True, "the cluster admin (system:masters) may do anything"
        if wanted is None:
            return False, "a node uses the API's resources only"
        kind = next((k for k in (*kinds.KINDS, endpoints.KIND)
                     if k.group == wanted.group and k.plural == wanted.resource), None)
        if kind is None or wanted.verb not in reviews.VERBS or (
                wanted.subresource and not has_subresource(kind, wanted.subresource)):
            return False, "no such resource or verb here"
        if kind is endpoints.KIND and wanted.verb not in ("get", "list"):
            return False, "Endpoints are read-only here (get, list)"
        t = Target(kind, wanted.namespace, wanted.name, wanted.subresource)
        verb = wanted.verb
        if wanted.subresource == "eviction" and verb == "create":
            verb = "delete"  # an eviction is decided as the pod's delete is
        try:
            if verb in ("update", "patch", "delete") or (
                    wanted.verb == "get" and kind.plural in NODE_REFERENCED):
                if not wanted.name:
                    return False, "a node's right to this is decided object by object"
                if verb == "get":
                    await self.authorize_referenced(user, t)
                else:
                    await self.authorize_existing(user, verb, t)
            else:
                named = {"metadata": {"name": wanted.name}} if wanted.verb == "create" \
                    else None
                self.authorize(user, wanted.verb, t, named)
        except stt.ApiError as e:
            if e.code != 403:
                raise
            return False, e.message
        return True, ""

    async def _create_batch(self, user: auth.User, t: Target, body: dict[str, Any],
                            strictness: str, dry_run: bool) -> web.Response:
        """POST of a `{Kind}List` on a collection of `BATCH_KINDS` (raftkube's, not
        Kubernetes'): every item created in one store transaction. Event recorders send
        what they have queued this way, so a burst of events costs one request and one
        Raft entry, not one each; each item is checked as its own POST would be."""
        items = body.get("items")
        if body.get("apiVersion") != t.kind.api_version or not isinstance(items, list) \
                or not items or not all(isinstance(i, dict) for i in items):
            raise stt.bad_request(f"a {t.kind.kind}List has apiVersion "
                                  f"{t.kind.api_version} and items: a non-empty list of "
                                  f"{t.kind.kind} objects")
        if dry_run:
            raise stt.bad_request(f"dryRun: not supported for a {t.kind.kind}List")
        if len(items) > ob.BATCH_MAX:
            raise stt.bad_request(f"items: at most {ob.BATCH_MAX} in one request, "
                                  f"got {len(items)}")
        if t.kind.namespaced and not t.namespace:
            raise stt.bad_request("a namespaced object is created under "
                                  "/namespaces/{namespace}/")
        warnings: list[str] = []
        checked = []
        for i, item in enumerate(items):
            try:
                check_body(item, t)
                self.authorize(user, "create", t, item)
                item, warned = check_fields(item, t, strictness)
            except stt.ApiError as e:
                raise stt.of_item(i, e) from None
            checked.append(item)
            warnings += warned
        created = await self.objects.create_batch(t.kind, t.namespace, checked)
        return warn(web.json_response({"apiVersion": t.kind.api_version,
                                       "kind": f"{t.kind.kind}List", "metadata": {},
                                       "items": created}, status=201), warnings)

    async def _bind_batch(self, user: auth.User, t: Target, body: dict[str, Any],
                          dry_run: bool) -> web.Response:
        """POST of a `BindingList` on a namespace's pods (raftkube's, not Kubernetes'):
        each item is a Binding whose `metadata.name` names the pod, as on the `bindings`
        collection. The bindings go in one store transaction where they can (see
        `Objects.bind_batch`); the answer holds one Status per item, in order, each what
        the item's own `pods/NAME/binding` POST would have answered."""
        items = body.get("items")
        if body.get("apiVersion") != "v1" or not isinstance(items, list) or not items \
                or not all(isinstance(i, dict) for i in items):
            raise stt.bad_request("a BindingList has apiVersion v1 and items: a non-empty "
                                  "list of Binding objects")
        if len(items) > ob.BATCH_MAX:
            raise stt.bad_request(f"items: at most {ob.BATCH_MAX} in one request, "
                                  f"got {len(items)}")
        if dry_run:
            raise stt.bad_request("dryRun: not supported for a BindingList")
        if not t.namespace:
            raise stt.bad_request("pods are bound under /namespaces/{namespace}/")
        for item in items:
            self.authorize(user, "create", t, item)
        answers = await self.objects.bind_batch(t.namespace, items)
        return web.json_response({
            "apiVersion": "v1", "kind": "BindingList", "metadata": {},
            "items": [a.status() if isinstance(a, stt.ApiError) else a for a in answers]},
            status=201)

    # ---- authorization ------------------------------------------------------------------

    def authorize(self, user: auth.User, verb: str, t: Target, obj: dict[str, Any] | None) -> None:
        if user.admin:
            return
        plural = t.kind.plural
        if verb in ("get", "list", "watch"):
            if plural in NODE_READABLE:
                return
        elif plural == "nodes" and verb == "create" and obj is not None:
            if (obj.get("metadata") or {}).get("name") == user.node:
                return
        elif plural == "leases" and verb == "create" and obj is not None:
            if t.namespace == "raftkube-system" and \
                    (obj.get("metadata") or {}).get("name") == user.node:
                return
        elif plural == "events" and verb == "create":
            return
        raise stt.forbidden(user.name, verb, t.kind.resource, t.name, t.namespace)

    async def authorize_referenced(self, user: auth.User, t: Target) -> None:
        if t.kind.namespaced and not t.namespace:
            # No namespace, no pod of this node can refer to it: refused before lookup.
            raise stt.forbidden(user.name, "get", t.kind.resource, t.name, t.namespace)
        pods = await self.objects.list_objects(POD_KIND, t.namespace)
        for pod in pods.items:
            spec = pod.get("spec") or {}
            if spec.get("nodeName") == user.node and \
                    (t.kind.plural, t.name) in references.pod_references(spec):
                return
        raise stt.forbidden(user.name, "get", t.kind.resource, t.name, t.namespace)

    async def authorize_existing(self, user: auth.User, verb: str, t: Target) -> None:
        """Writes to an existing object: a node only touches what is its own."""
        if user.admin:
            return
        plural = t.kind.plural
        own = False
        if plural == "nodes":
            own = t.name == user.node
        elif plural == "leases":
            own = t.namespace == "raftkube-system" and t.name == user.node
        elif plural == "pods" and (t.subresource == "status" or verb == "delete"):
            stored = await self.objects.read(ob.key_of(t.kind, t.namespace, t.name))
            own = stored is not None and \
                (stored.obj.get("spec") or {}).get("nodeName") == user.node
        if not own:
            what = f"{t.kind.resource}/{t.subresource}" if t.subresource else t.kind.resource
            shown = "create" if t.subresource == "eviction" else verb  # Kubernetes' verb
            raise stt.forbidden(user.name, shown, what, t.name, t.namespace)

    # ---- watch --------------------------------------------------------------------------

    async def watch(self, request: web.Request, t: Target,
                    label: selectors.LabelSelector | None,
                    fields: selectors.FieldSelector | None,
                    table: tables.Wanted | None = None) -> web.StreamResponse:
        q = request.query
        rv_text = q.get("resourceVersion", "")
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        timeout = query_int(q, "timeoutSeconds", minimum=0, default=0)
        initial: list[dict[str, Any]] = []
        if rv_text in ("", "0"):
            listed = await self.objects.list_objects(t.kind, t.namespace or None, label=label,
                                             fields=fields)
            initial, start = listed.items, listed.revision + 1
        else:
            try:
                start = int(rv_text) + 1
            except ValueError:
                raise stt.bad_request(f'resourceVersion: Invalid value: "{rv_text}"') from None
        prefix = ob.prefix_of(t.kind, t.namespace or None)
        try:
            history, watcher = self.replica.open_watch(prefix, st.prefix_end(prefix), start,
                                                       route=self.routes.route(fields))
        except st.Compacted as e:
            raise stt.gone(f"too old resource version: {start - 1} ({e.compact_revision})"
                           ) from None
        # Every watcher of the same path and selectors sends the same bytes for a revision.
        stream = ("rest", prefix, q.get("labelSelector", ""), q.get("fieldSelector", ""))

        def plain(revision: int, events: list[st.Event]) -> bytes:
            return self.encodings.get(revision, stream, lambda: watch_lines(
                events, label, fields, self.decoded))

        def lines(revision: int, events: list[st.Event]) -> bytes:
            if table is None:
                return plain(revision, events)
            # Tables of the same events are shared too, per kind of Table asked for.
            return self.encodings.get(revision, ("table", table, *stream), lambda: tables.
                                      watch_lines(t.kind, plain(revision, events), table))

        framed: tuple[Any, ...] = ("rest-chunked", *stream[1:], table)


        def wire(revision: int, events: list[st.Event]) -> bytes:
            return self.encodings.get(revision, framed,
                                      lambda: fanout.chunk(lines(revision, events)))

        def bookmark(revision: int) -> bytes:
            return watch_line("BOOKMARK", {
                "kind": t.kind.kind, "apiVersion": t.kind.api_version,
                "metadata": {"resourceVersion": str(revision)}})

        def gone(batch: Batch) -> bytes:
            err = stt.gone(f"too old resource version: {batch.cancel_reason}")
            return watch_line("ERROR", err.status())

        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await fanout.pump(
            request, resp, watcher, preface=(
                watch_line("ADDED", obj if table is None else tables.of_object(t.kind, obj, table))
                for obj in initial),
            history=history, lines=lines, wire=wire,
            idle_every=self.bookmark_every if bookmarks else math.inf,
            idle_line=bookmark, cancel_line=gone,
            deadline=time.monotonic() + timeout if timeout else math.inf)
        return resp


def watch_line(kind: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": kind, "object": obj}).encode() + b"\n"


def _deleted_line(last: dict[str, Any], revision: int) -> bytes:
    """A deleted object's last self, at the revision of its deletion (a copy: `last` is
    shared)."""
    meta = {**last["metadata"], "resourceVersion": str(revision)}
    return watch_line("DELETED", {**last, "metadata": meta})


def watch_lines(events: list[st.Event], label: selectors.LabelSelector | None,
                fields: selectors.FieldSelector | None, decoded: fanout.Decoded) -> bytes:
    """The watch lines a stream with these selectors sends for one revision's events: an
    object that starts matching is ADDED, one that stops is DELETED, so that a cache
    built from list + watch stays exact."""
    out = []
    for ev in events:  # the watch is opened on the kind's prefix: every event is ours
        new = decoded.obj(ev.kv) if ev.type == st.PUT else None
        old = decoded.obj(ev.prev_kv) if ev.prev_kv is not None else None
        was = old is not None and ob.matches(old, label, fields)
        now = new is not None and ob.matches(new, label, fields)
        if new is not None and now:
            kind = "MODIFIED" if was else "ADDED"
            out.append(decoded.line(kind, ev, of_prev=False,
                                    make=functools.partial(watch_line, kind, new)))
        elif was and old is not None:
            if new is not None:  # it stopped matching: its new self, deleted from view
                out.append(decoded.line("DELETED", ev, of_prev=False,
                                        make=functools.partial(watch_line, "DELETED", new)))
            else:  # deleted: its last self, at the revision of the deletion
                out.append(decoded.line("DELETED", ev, of_prev=True, make=functools.partial(
                    _deleted_line, old, ev.kv.mod_revision)))
    return b"".join(out)


# ---- parsing ----------------------------------------------------------------------------


def parse_path(path: str) -> tuple[Target | None, bool]:
    """(target, is_discovery) for a REST path; ApiError 404 for anything unknown."""
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        if len(parts) < 2 or parts[1] != "v1":
            raise stt.ApiError(404, "NotFound", "the server could not find the requested "
                                                "resource")
        group, version, rest = "", "v1", parts[2:]
    else:
        if len(parts) < 3:
            return None, True
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return None, True
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural, name, sub = rest[0], "", ""
    if len(rest) >= 2:
        name = rest[1]
    if len(rest) >= 3:
        sub = rest[2]
    kind = kinds.by_plural(group, version, plural)
    if kind is None or len(rest) > 3 or (sub and not has_subresource(kind, sub)):
        gv = f"{group}/{version}" if group else version
        raise stt.ApiError(404, "NotFound",
                           f'the server could not find the requested resource ({plural} in {gv})'
                           if kind is None else
                           "the server could not find the requested resource")
    if kind.namespaced is False and namespace:
        raise stt.ApiError(404, "NotFound", f"{kind.resource} is not namespaced")
    return Target(kind, namespace, name, sub), False


def has_subresource(kind: kinds.Kind, sub: str) -> bool:
    if sub == "status":
        return kind.kind in ob.STATUS_SUBRESOURCE
    if sub == "finalize":
        return kind.kind == "Namespace"
    if sub == "scale":
        return kind.kind in scale.SCALABLE
    return sub in ("binding", "eviction") and kind.kind == "Pod"


def parse_selectors(q: Any, kind: kinds.Kind) -> tuple[selectors.LabelSelector | None,
                                                       selectors.FieldSelector | None]:
    label = fields = None
    try:
        if q.get("labelSelector"):
            label = selectors.parse_label_selector(q["labelSelector"])
        if q.get("fieldSelector"):
            fields = selectors.parse_field_selector(
                q["fieldSelector"], allowed=selectors.selectable_fields(kind.kind))
    except selectors.SelectorError as e:
        raise stt.bad_request(f"unable to parse requirement: {e}") from None
    return label, fields


def delete_options(q: Any, options: dict[str, Any], dry_run: bool
                   ) -> tuple[str, int | None, bool, dict[str, str]]:
    """A delete's propagation policy, grace period, dry run and preconditions, from the
    query and the DeleteOptions body (the query's win)."""
    propagation = q.get("propagationPolicy") or options.get("propagationPolicy") \
        or "Background"
    if propagation not in ("Background", "Foreground", "Orphan"):
        raise stt.bad_request(f'propagationPolicy: Unsupported value: "{propagation}"'
                              ': supported values: "Background", "Foreground", "Orphan"')
    grace = query_int(q, "gracePeriodSeconds", minimum=0, default=None)
    if grace is None and options.get("gracePeriodSeconds") is not None:
        grace = options["gracePeriodSeconds"]
        if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0 \
                or grace > inputs.INT64_MAX:
            raise stt.bad_request("gracePeriodSeconds: must be a non-negative int64")
    dry_run = dry_run or options.get("dryRun") == ["All"]
    preconditions = options.get("preconditions") or {}
    if not isinstance(preconditions, dict) or not all(
            isinstance(preconditions.get(k, ""), str) for k in ("uid", "resourceVersion")):
        raise stt.bad_request("preconditions: must be an object of uid and resourceVersion "
                              "strings")
    return propagation, grace, dry_run, preconditions


def query_int(q: Any, name: str, *, minimum: int, default: int | None = 0) -> Any:
    """An integer query parameter, strictly an int64 (`inputs.int64`), blamed by name."""
    raw = q.get(name)
    if raw in (None, ""):
        return default
    try:
        value = inputs.int64(raw)
    except ValueError as e:
        raise stt.bad_request(f"{name}: Invalid value: {e}") from None
    if value < minimum:
        raise stt.bad_request(f"{name}: Invalid value: {value}: must be greater than or "
                              f"equal to {minimum}")
    return value


async def read_body(request: web.Request) -> Any:
    """The body as JSON, or as one YAML document (`application/yaml`, as the apiserver
    takes a manifest as it is written); None when there is none."""
    return await inputs.read_document(request, limit=MAX_BODY)


def bad_input(e: inputs.BadInput) -> stt.ApiError:
    if isinstance(e, inputs.TooLarge):
        return stt.too_large(e.limit)
    if isinstance(e, inputs.TooSlow):
        return stt.ApiError(408, "RequestTimeout", e.message)
    return stt.bad_request(e.message)


# What a POST or PUT body may be in; a request without a Content-Type is read as JSON.
BODY_TYPES = ("application/json", *inputs.YAML_TYPES, protobuf.MEDIA_TYPE)
# Protobuf bodies are decoded in Python on the event loop: bounded below the JSON limit
# (a ConfigMap's 1 MiB of data and its envelope fit).
MAX_PROTOBUF_BODY = 1536 * 1024


def check_content_type(request: web.Request) -> None:
    """415, naming the types we read, for a body in any other, as Kubernetes answers."""
    if "Content-Type" in request.headers and request.content_type not in BODY_TYPES:
        raise stt.ApiError(415, "UnsupportedMediaType",
                           f'the body of the request was in an unknown format '
                           f'("{request.content_type}") - accepted media types include: '
                           + ", ".join(BODY_TYPES))


async def read_protobuf(request: web.Request) -> dict[str, Any]:
    """kubectl's typed `create` (1.32 and later) sends protobuf: read for the kinds it
    sends (`protobuf`), a 415 saying so for any other, a 400 for a body that is not a
    well-formed message."""
    raw = await inputs.read_body(request, limit=MAX_PROTOBUF_BODY)
    try:
        return protobuf.decode(raw)
    except protobuf.Malformed as e:
        raise stt.bad_request(str(e)) from None
    except protobuf.Unsupported as e:
        raise stt.ApiError(415, "UnsupportedMediaType", str(e)) from None


async def read_object(request: web.Request) -> dict[str, Any]:
    check_content_type(request)
    if request.content_type == protobuf.MEDIA_TYPE:
        return await read_protobuf(request)
    body = await read_body(request)
    if body is None:
        raise stt.bad_request("the request has no body: it must be a JSON object")
    if not isinstance(body, dict):
        raise stt.bad_request(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def check_fields(body: Any, t: Target, strictness: str, *,
                 directives: bool = False) -> tuple[Any, list[str]]:
    """Kubernetes' field validation: fields its API does not have are refused (Strict), or
    dropped and reported in Warning headers (Warn, the default), or dropped (Ignore),
    before anything is written. The body to go on with, and the warnings."""
    if not isinstance(body, dict):
        return body, []
    object_schema = schema.object_schema(t.kind.kind)
    unknown = schema.unknown_fields(body, object_schema, directives=directives)
    if not unknown:
        return body, []
    words = [f'unknown field "{field}"' for field in unknown]
    if strictness == "Strict":
        raise stt.bad_request(f'{t.kind.kind} in version "{t.kind.version}" cannot be handled '
                              f"as a {t.kind.kind}: strict decoding error: " + ", ".join(words))
    return (schema.drop_unknown(body, object_schema, directives=directives),
            words if strictness == "Warn" else [])


def warn(resp: web.Response, warnings: list[str]) -> web.Response:
    for text in warnings:
        resp.headers.add("Warning", f"299 - {json.dumps(text)}")
    return resp


def check_body(body: dict[str, Any], t: Target) -> None:
    api_version, kind = body.get("apiVersion"), body.get("kind")
    if api_version is None and kind is None:
        body["apiVersion"], body["kind"] = t.kind.api_version, t.kind.kind
    elif api_version != t.kind.api_version or kind != t.kind.kind:
        raise stt.bad_request(
            f"the API version in the data ({api_version}) and kind ({kind}) do not match "
            f"the expected {t.kind.api_version} {t.kind.kind}")
    meta = body.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise stt.ApiError(422, "Invalid", f"{t.kind.kind} is invalid: metadata: Invalid "
                                           f"value: must be an object")
    ns = (meta or {}).get("namespace")
    if t.kind.namespaced and ns not in (None, "", t.namespace):
        raise stt.bad_request("the namespace of the provided object does not match the "
                              "namespace sent on the request")


def discovery_root(path: str) -> dict[str, Any]:
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"]}
    groups: dict[str, list[str]] = {podproxy.METRICS_GROUP: [podproxy.METRICS_VERSION],
                                    reviews.AUTHORIZATION: ["v1"],
                                    reviews.AUTHENTICATION: ["v1"]}
    for k in kinds.KINDS:
        if k.group:
            groups.setdefault(k.group, []).append(k.version)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}
                                 for v in sorted(set(vs))],
         "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
        for g, vs in sorted(groups.items())]}


def discovery_group(path: str) -> dict[str, Any]:
    parts = [p for p in path.split("/") if p]
    group = parts[1] if parts[0] == "apis" and len(parts) > 1 else ""
    version = parts[2] if parts[0] == "apis" and len(parts) > 2 else "v1"
    resources = []
    for k in kinds.KINDS:
        if k.group == group and k.version == version:
            resource = {"name": k.plural, "singularName": k.kind.lower(),
                        "namespaced": k.namespaced, "kind": k.kind,
                        "shortNames": list(k.short_names),
                        "verbs": ["create", "delete", "get", "list", "patch", "update",
                                  "watch"]}
            if k.categories:
                resource["categories"] = list(k.categories)
            resources.append(resource)
            # Subresources, as Kubernetes lists them: client-go's scale client finds the
            # Scale's group and version of `deployments/scale` here.
            if k.kind in ob.STATUS_SUBRESOURCE:
                resources.append({"name": f"{k.plural}/status", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get", "patch", "update"]})
            if k.kind == "Pod":
                resources.append(dict(eviction.DISCOVERY))
            if k.kind in scale.SCALABLE:
                resources.append({"name": f"{k.plural}/scale", "namespaced": k.namespaced,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale",
                                  "verbs": ["get", "patch", "update"]})
    if not group and version == "v1":
        resources.append(dict(endpoints.DISCOVERY))
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}
