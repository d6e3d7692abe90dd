"""Kubernetes-style REST on every master: paths, verbs, auth, watch.

One dispatcher parses `/api/v1/...` and `/apis/{group}/{version}/...` into (kind,
namespace, name, subresource) and calls `Objects`. Everything a client can see as an
error is a Kubernetes `Status`; a request is fully checked before anything is written.

Authentication: the admin bearer token, or a node token (`--node-token-file`, lines of
`token,node-name`) for an agent, who acts as `system:node:NAME` and may read what an
agent needs (ConfigMaps and Secrets only by name, and only those its pods refer to),
write its own Node and its Lease in `raftkube-system`, create Events, and write the
status of (and delete) the pods bound to it. Anything else is 403.

Watch: `?watch=true&resourceVersion=N` streams `{"type","object"}` lines from revision
N+1, with BOOKMARKs when `allowWatchBookmarks=true`; without N it first sends the current
objects as ADDED. A selector-filtered watch sends DELETED when an object stops matching
and ADDED when it starts, so a cache built from list+watch stays exact.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from raftkube.api import kinds, schema, selectors, yamltext
from raftkube.apiserver import fencing
from raftkube.apiserver import objects as ob
from raftkube.apiserver import status as stt
from raftkube.store import state as st
from raftkube.store.replica import Replica, Unavailable

POD_KIND = ob.known_kind("v1", "Pod")
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
MAX_BODY = 3 * 1024 * 1024  # Kubernetes' request limit; objects are capped lower, by the store
NODE_READABLE = {"pods", "services", "endpoints", "endpointslices", "nodes", "namespaces",
                 "leases", "events"}
# A node reads these one by one, and only those that a pod bound to it refers to (as
# Kubernetes' node authorizer allows): a node never sees the cluster's other secrets.
NODE_REFERENCED = {"configmaps", "secrets"}


@dataclass(frozen=True)
class User:
    name: str
    node: str = ""  # set for node agents

    @property
    def admin(self) -> bool:
        return not self.node


@dataclass
class Target:
    kind: kinds.Kind
    namespace: str  # "" for cluster-scoped kinds and for lists across namespaces
    name: str
    subresource: str


class Rest:
    def __init__(self, replica: Replica, objects: ob.Objects, *, admin_token: str,
                 node_tokens: dict[str, str], bookmark_every: float = 10.0) -> None:
        self.replica = replica
        self.objects = objects
        self.admin_token = admin_token
        self.node_tokens = node_tokens
        self.bookmark_every = bookmark_every

    # ---- entry point ------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            user = self.authenticate(request)
            if request.path in ("/api", "/apis", "/api/", "/apis/"):
                return web.json_response(discovery_root(request.path.rstrip("/")))
            target, is_discovery = parse_path(request.path)
            if is_discovery:
                return web.json_response(discovery_group(request.path))
            assert target is not None
            return await self.dispatch(request, user, target)
        except stt.ApiError as e:
            return web.json_response(e.status(), status=e.code)
        except Unavailable as e:
            err = stt.unavailable(f"the store could not commit in time: {e}")
            return web.json_response(err.status(), status=503)
        except st.StoreError as e:
            err = stt.ApiError(500, "InternalError", f"store: {e.message}")
            return web.json_response(err.status(), status=500)

    def authenticate(self, request: web.Request) -> User:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise stt.unauthorized()
        token = header[len("Bearer "):].strip()
        if hmac.compare_digest(token.encode(), self.admin_token.encode()):
            return User("admin")
        for known, node in self.node_tokens.items():
            if hmac.compare_digest(token.encode(), known.encode()):
                return User(f"system:node:{node}", node=node)
        raise stt.unauthorized()

    # ---- dispatch ---------------------------------------------------------------------

    async def dispatch(self, request: web.Request, user: User, t: Target) -> web.StreamResponse:
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

    async def _dispatch(self, request: web.Request, user: User, t: Target
                        ) -> web.StreamResponse:
        if t.subresource == "binding" and request.method != "POST":
            raise stt.ApiError(405, "MethodNotAllowed", "the server does not allow this "
                               "method on the requested resource (post pods/binding only)")
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
            if t.name:
                if not user.admin and t.kind.plural in NODE_REFERENCED:
                    await self.authorize_referenced(user, t)
                else:
                    self.authorize(user, "get", t, None)
                stored = await self.objects.get(t.kind, t.namespace, t.name)
                return web.json_response(stored.obj)
            verb = "watch" if q.get("watch") in ("true", "1") else "list"
            self.authorize(user, verb, t, None)
            label, fields = parse_selectors(q)
            if verb == "watch":
                return await self.watch(request, t, label, fields)
            limit = query_int(q, "limit", minimum=0)
            result = await self.objects.list_objects(t.kind, t.namespace or None, label=label,
                                             fields=fields, limit=limit,
                                             continue_token=q.get("continue", ""))
            meta: dict[str, Any] = {"resourceVersion": str(result.revision)}
            if result.continue_token:
                meta["continue"] = result.continue_token
            return web.json_response({"kind": f"{t.kind.kind}List",
                                      "apiVersion": t.kind.api_version,
                                      "metadata": meta, "items": result.items})
        if method == "POST" and t.subresource == "binding":
            binding = await read_object(request)
            self.authorize(user, "create", t, binding)
            bound = await self.objects.bind(t.namespace, t.name, binding, dry_run=dry_run)
            return web.json_response(bound, status=201)
        if method == "POST":
            if t.name:
                raise stt.ApiError(405, "MethodNotAllowed",
                                   "the server does not allow this method on the requested "
                                   "resource")
            body = await read_object(request)
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
            ctype = request.content_type
            if ctype not in ("application/merge-patch+json",
                             "application/strategic-merge-patch+json", "application/json"):
                raise stt.ApiError(415, "UnsupportedMediaType",
                                   f"the body of the request was in an unknown format - "
                                   f"accepted media types include: "
                                   f"application/merge-patch+json (got {ctype})")
            patch = await read_json(request)
            await self.authorize_existing(user, "patch", t)
            patch, warnings = check_fields(patch, t, strictness)
            patched = await self.objects.patch(t.kind, t.namespace, t.name, patch,
                                               subresource=t.subresource, dry_run=dry_run)
            return warn(web.json_response(patched), warnings)
        if method == "DELETE":
            options = await read_json(request) if request.can_read_body else {}
            options = {} if options is None else options  # an empty body, as kubectl sends
            if not isinstance(options, dict):
                raise stt.bad_request("DeleteOptions must be an object")
            propagation = q.get("propagationPolicy") or options.get("propagationPolicy") \
                or "Background"
            if propagation not in ("Background", "Foreground", "Orphan"):
                raise stt.bad_request(f'propagationPolicy: Unsupported value: "{propagation}"'
                                      ': supported values: "Background", "Foreground", '
                                      '"Orphan"')
            grace = query_int(q, "gracePeriodSeconds", minimum=0, default=None)
            if grace is None and options.get("gracePeriodSeconds") is not None:
                grace = options["gracePeriodSeconds"]
                if not isinstance(grace, int) or isinstance(grace, bool) or grace < 0:
                    raise stt.bad_request("gracePeriodSeconds: must be a non-negative integer")
            dry_run = dry_run or options.get("dryRun") == ["All"]
            preconditions = options.get("preconditions") or {}
            if not isinstance(preconditions, dict) or not all(
                    isinstance(preconditions.get(k, ""), str) for k in ("uid",
                                                                         "resourceVersion")):
                raise stt.bad_request("preconditions: must be an object of uid and "
                                      "resourceVersion strings")
            await self.authorize_existing(user, "delete", t)
            deleted = await self.objects.delete(t.kind, t.namespace, t.name,
                                                propagation=propagation, grace=grace,
                                                dry_run=dry_run,
                                                preconditions=preconditions)
            return web.json_response(deleted)
        raise stt.ApiError(405, "MethodNotAllowed", f"method {method} is not allowed")

    # ---- authorization ------------------------------------------------------------------

    def authorize(self, user: User, verb: str, t: Target, obj: dict[str, Any] | None) -> None:
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

    async def authorize_referenced(self, user: User, t: Target) -> None:
        pods = await self.objects.list_objects(POD_KIND, t.namespace)
        for pod in pods.items:
            spec = pod.get("spec") or {}
            if spec.get("nodeName") == user.node and \
                    (t.kind.plural, t.name) in pod_references(spec):
                return
        raise stt.forbidden(user.name, "get", t.kind.resource, t.name, t.namespace)

    async def authorize_existing(self, user: User, verb: str, t: Target) -> None:
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
            raise stt.forbidden(user.name, verb, what, t.name, t.namespace)

    # ---- watch --------------------------------------------------------------------------

    async def watch(self, request: web.Request, t: Target,
                    label: selectors.LabelSelector | None,
                    fields: selectors.FieldSelector | None) -> web.StreamResponse:
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
            history, watcher = self.replica.open_watch(prefix, st.prefix_end(prefix), start)
        except st.Compacted as e:
            raise stt.gone(f"too old resource version: {start - 1} ({e.compact_revision})"
                           ) from None
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        deadline = time.monotonic() + timeout if timeout else None
        last_revision = start - 1

        async def send(kind: str, obj: dict[str, Any]) -> None:
            await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        try:
            for obj in initial:
                await send("ADDED", obj)
            for revision, events in history:
                for kind, obj in to_watch_events(events, t, label, fields):
                    await send(kind, obj)
                last_revision = revision
            last_sent = time.monotonic()
            while deadline is None or time.monotonic() < deadline:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
                batch = await watcher.next_batch(timeout=min(wait, self.bookmark_every))
                if batch is None:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if bookmarks and time.monotonic() - last_sent >= self.bookmark_every \
                            and watcher.queue.empty():
                        # What this watcher has been offered, all of it sent: never the
                        # store's revision, which runs ahead of events still on their way.
                        last_revision = max(last_revision, watcher.next_revision - 1)
                        await send("BOOKMARK", {
                            "kind": t.kind.kind, "apiVersion": t.kind.api_version,
                            "metadata": {"resourceVersion": str(last_revision)}})
                        last_sent = time.monotonic()
                    continue
                if batch.cancel_reason:
                    err = stt.gone(f"too old resource version: {batch.cancel_reason}")
                    await send("ERROR", err.status())
                    break
                for revision, events in batch.events:
                    for kind, obj in to_watch_events(events, t, label, fields):
                        await send(kind, obj)
                    last_revision = revision
                last_sent = time.monotonic()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            watcher.close()
        return resp


def to_watch_events(events: list[st.Event], t: Target, label: selectors.LabelSelector | None,
                    fields: selectors.FieldSelector | None
                    ) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for ev in events:  # the watch is opened on the kind's prefix: every event is ours
        new = _obj(ev.kv) if ev.type == st.PUT else None
        old = _obj(ev.prev_kv) if ev.prev_kv is not None else None
        was = old is not None and ob.matches(old, label, fields)
        now = new is not None and ob.matches(new, label, fields)
        if new is not None and now:
            out.append(("MODIFIED" if was else "ADDED", new))
        elif was and old is not None:
            gone = new if new is not None else old
            gone["metadata"]["resourceVersion"] = str(ev.kv.mod_revision)
            out.append(("DELETED", gone))
    return out


def _obj(kv: st.KeyValue) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return obj


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
    return sub == "binding" and kind.kind == "Pod"


def parse_selectors(q: Any) -> tuple[selectors.LabelSelector | None,
                                      selectors.FieldSelector | None]:
    label = fields = None
    try:
        if q.get("labelSelector"):
            label = selectors.parse_label_selector(q["labelSelector"])
        if q.get("fieldSelector"):
            fields = selectors.parse_field_selector(q["fieldSelector"])
    except selectors.SelectorError as e:
        raise stt.bad_request(f"unable to parse requirement: {e}") from None
    return label, fields


def query_int(q: Any, name: str, *, minimum: int, default: int | None = 0) -> Any:
    raw = q.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise stt.bad_request(f'{name}: Invalid value: "{raw}": must be an integer') from None
    if value < minimum:
        raise stt.bad_request(f"{name}: Invalid value: {value}: must be greater than or "
                              f"equal to {minimum}")
    return value


async def read_json(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise stt.too_large(MAX_BODY)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise stt.too_large(MAX_BODY) from None
    if len(raw) > MAX_BODY:
        raise stt.too_large(MAX_BODY)
    if not raw.strip():
        return None
    if request.content_type in YAML_TYPES:
        # As the apiserver does, a manifest may be sent as it is written: one YAML document.
        try:
            docs = list(yamltext.load_all(raw.decode()))
        except UnicodeDecodeError as e:
            raise stt.bad_request(f"the body of the request is not valid UTF-8: {e}") from None
        except yamltext.YAMLError as e:
            raise stt.bad_request("the body of the request is not valid YAML: "
                                  + yamltext.problem(e)) from None
        if len(docs) != 1:
            raise stt.bad_request(f"the body must be one YAML document, got {len(docs)}")
        return docs[0]
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise stt.bad_request(f"the body of the request is not valid JSON: {e}") from None


async def read_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if body is None:
        raise stt.bad_request("the request has no body: it must be a JSON object")
    if not isinstance(body, dict):
        raise stt.bad_request(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def check_fields(body: Any, t: Target, strictness: str) -> tuple[Any, list[str]]:
    """Kubernetes' field validation: fields its API does not have are refused (Strict), or
    dropped and reported in Warning headers (Warn, the default), or dropped (Ignore),
    before anything is written. The body to go on with, and the warnings."""
    if not isinstance(body, dict):
        return body, []
    object_schema = schema.object_schema(t.kind.kind)
    unknown = schema.unknown_fields(body, object_schema)
    if not unknown:
        return body, []
    words = [f'unknown field "{field}"' for field in unknown]
    if strictness == "Strict":
        raise stt.bad_request(f'{t.kind.kind} in version "{t.kind.version}" cannot be handled '
                              f"as a {t.kind.kind}: strict decoding error: " + ", ".join(words))
    return schema.drop_unknown(body, object_schema), words if strictness == "Warn" else []


def warn(resp: web.Response, warnings: list[str]) -> web.Response:
    for text in warnings:
        resp.headers.add("Warning", f"299 - {json.dumps(text)}")
    return resp


def pod_references(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """The (plural, name) of every ConfigMap and Secret a pod spec refers to."""
    refs: set[tuple[str, str]] = set()

    def add(plural: str, ref: Any, key: str = "name") -> None:
        if isinstance(ref, dict) and isinstance(ref.get(key), str):
            refs.add((plural, ref[key]))

    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict):
            add("configmaps", volume.get("configMap"))
            add("secrets", volume.get("secret"), "secretName")
    for secret in spec.get("imagePullSecrets") or []:
        add("secrets", secret)
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if not isinstance(c, dict):
            continue
        for var in c.get("env") or []:
            source = var.get("valueFrom") if isinstance(var, dict) else None
            if isinstance(source, dict):
                add("configmaps", source.get("configMapKeyRef"))
                add("secrets", source.get("secretKeyRef"))
        for source in c.get("envFrom") or []:
            if isinstance(source, dict):
                add("configmaps", source.get("configMapRef"))
                add("secrets", source.get("secretRef"))
    return refs


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
    groups: dict[str, list[str]] = {}
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
            resources.append({"name": k.plural, "namespaced": k.namespaced, "kind": k.kind,
                              "shortNames": list(k.short_names),
                              "verbs": ["create", "delete", "get", "list", "patch", "update",
                                        "watch"]})
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}
