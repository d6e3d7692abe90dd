"""The master's HTTP server: etcd's v3 JSON API, Kubernetes-style REST (rest.py),
health, readiness and metrics.

Every request but `/healthz`, `/version` and etcd's login (`etcdauth`) is authenticated
here, once, for both APIs (`auth`; `/v3` also takes etcd login tokens): the store's
API, readiness and metrics are the admin's (401 without a known token, 403 for a
node's), and REST reads the user from the request. Errors use the grpc-gateway's body
(`error`, `message`, `code`) with the HTTP status grpc-gateway maps each code to, and an
error answer never changes anything: requests are fully parsed and checked (`inputs`)
before a command is proposed. A write may carry `X-Raftkube-Term: N`, the Raft term its
author decided it in; the state machine refuses it if a newer leader has written since
(fencing).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from raftkube.apiserver import (
    auth,
    etcdauth,
    fanout,
    fencing,
    inputs,
    metrics,
    openapi,
    podproxy,
    version,
)
from raftkube.apiserver import etcdjson as ej
from raftkube.apiserver import objects as ob
from raftkube.apiserver import status as stt
from raftkube.apiserver.rest import Rest
from raftkube.store import state as st
from raftkube.store.replica import (
    MAX_REQUEST_BYTES,
    MIN_LEASE_TTL,
    MembershipError,
    Replica,
    Unavailable,
    member_id,
)
from raftkube.store.watch import Batch

# grpc code name -> (number, HTTP status), as grpc-gateway maps them.
GRPC = {
    "InvalidArgument": (3, 400),
    "NotFound": (5, 404),
    "FailedPrecondition": (9, 400),
    "OutOfRange": (11, 400),
    "Internal": (13, 500),
    "Unavailable": (14, 503),
    "Unauthenticated": (16, 401),
    "PermissionDenied": (7, 403),
    "ResourceExhausted": (8, 429),
}
BODY_LIMIT = 4 * MAX_REQUEST_BYTES  # base64 and JSON overhead; the store checks the rest
TERM_HEADER = fencing.TERM_HEADER
log = logging.getLogger(__name__)
# What anyone may read: liveness, and `/version`, which Kubernetes serves to anyone too.
UNAUTHENTICATED = frozenset({"/healthz", "/version", "/version/", "/v3/auth/authenticate"})
PROGRESS_EVERY = 5.0  # seconds of silence before a progress_notify watch gets a bookmark

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REPLICA = web.AppKey("replica", Replica)
TOKENS = web.AppKey("tokens", auth.Tokens)
METRICS = web.AppKey("metrics", metrics.Metrics)
PROGRESS = web.AppKey("progress_every", float)
OBJECTS = web.AppKey("objects", ob.Objects)
SETUP = web.AppKey("setup", asyncio.Task)
ETCD_SESSIONS = web.AppKey("etcd_sessions", etcdauth.Sessions)
PULSE = web.AppKey("pulse", asyncio.Task)
PULSE_EVERY = web.AppKey("pulse_every", float)


async def _ensure_namespaces(objects: ob.Objects) -> None:
    """`default` and `raftkube-system` exist on every cluster; every master makes sure."""
    while True:
        try:
            await objects.ensure_namespaces()
            return
        except (Unavailable, stt.ApiError, st.StoreError) as e:
            log.info("namespaces not created yet: %s", e)
            await asyncio.sleep(0.5)


async def _start_namespaces(app: web.Application) -> None:
    app[SETUP] = asyncio.get_running_loop().create_task(_ensure_namespaces(app[OBJECTS]))


async def _stop_namespaces(app: web.Application) -> None:
    app[SETUP].cancel()
    await asyncio.gather(app[SETUP], return_exceptions=True)


async def _start_pulse(app: web.Application) -> None:
    app[PULSE] = asyncio.get_running_loop().create_task(
        app[REPLICA].pulse_watchers(app[PULSE_EVERY]))


async def _end_watches(app: web.Application) -> None:
    """The server is stopping: its watch streams end now, cleanly, rather than being
    cut off when the grace for requests in progress runs out."""
    app[REPLICA].end_watches()
    await asyncio.sleep(0)  # each stream's handler returns before the grace starts


async def _stop_pulse(app: web.Application) -> None:
    app[PULSE].cancel()
    await asyncio.gather(app[PULSE], return_exceptions=True)


def grpc_error(message: str, code: str) -> web.Response:
    number, status = GRPC.get(code, GRPC["InvalidArgument"])
    return web.json_response({"error": message, "message": message, "code": number},
                             status=status)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    m = request.app[METRICS]
    started = time.perf_counter()
    route = request.match_info.route.resource
    path = route.canonical if route is not None else "unmatched"
    status = 500
    try:
        if request.path not in UNAUTHENTICATED:
            refused = authenticate(request)
            if refused is not None:
                status = refused.status
                return refused
        resp = await handler(request)
        status = resp.status
        return resp
    except (inputs.TooLarge, web.HTTPRequestEntityTooLarge):
        status = 413
        return too_large()
    except inputs.BadInput as e:
        status = e.status
        return grpc_error(e.message, "InvalidArgument")
    except RecursionError:  # a backstop: input is measured before anything walks it
        status = 400
        return grpc_error("body: nested too deeply", "InvalidArgument")
    except web.HTTPException as e:
        status = e.status
        raise
    except ej.BadRequest as e:
        status = 400
        return grpc_error(str(e), "InvalidArgument")
    except st.StoreError as e:
        resp = grpc_error(e.message, e.code)
        status = resp.status
        return resp
    except Unavailable as e:
        # etcd answers a proposal that timed out (OutcomeUnknown) with Unavailable too,
        # so /v3 clients treat a 503 to a write as an unknown outcome (client/etcd.py).
        status = 503
        return grpc_error(str(e), "Unavailable")
    finally:
        m.observe(request.method, path, status, time.perf_counter() - started)


def authenticate(request: web.Request) -> web.Response | None:
    """Store the request's user on it; or the refusal, in the shape of the API asked.
    `/v3` also takes the tokens of etcd's password login (`etcdauth`)."""
    header = request.headers.get("Authorization", "")
    user = request.app[TOKENS].user(header)
    if user is None and request.path.startswith("/v3/"):
        name = request.app[ETCD_SESSIONS].user(header)
        user = auth.User(f"etcd:{name}") if name is not None else None
    if is_rest_path(request.path):
        if user is None:
            return web.json_response(stt.unauthorized().status(), status=401)
    elif user is None:
        supplied = "Authorization" in request.headers
        return grpc_error("etcdserver: invalid auth token" if supplied
                          else "etcdserver: user name is empty (missing Authorization: "
                               "Bearer token)", "Unauthenticated")
    elif not user.admin:
        # Node agents use the Kubernetes-style API only; the store is the admin's.
        return grpc_error("etcdserver: permission denied", "PermissionDenied")
    request[auth.USER] = user
    return None


def is_rest_path(path: str) -> bool:
    return path in ("/api", "/apis") or path.startswith(("/api/", "/apis/"))


def too_large() -> web.Response:
    message = "etcdserver: request is too large"
    return web.json_response({"error": message, "message": message, "code": 3}, status=413)


# A login is a name and a password: a few KiB at most, read before anyone is known.
LOGIN_BODY_LIMIT = 4096


async def read_json(request: web.Request) -> Any:
    """A /v3 body: JSON, and an empty body is an empty message, as in etcd's gateway."""
    return await inputs.read_json(request, limit=BODY_LIMIT, empty={})


def fence_term(request: web.Request, replica: Replica) -> int | None:
    try:
        return fencing.requested_term(request.headers.get(TERM_HEADER), replica.view.term)
    except ValueError as e:
        raise ej.BadRequest(TERM_HEADER, str(e)) from None


def request_size(req: dict[str, Any]) -> int:
    size = 0
    for v in req.values():
        if isinstance(v, bytes):
            size += len(v)
        elif isinstance(v, dict):
            size += request_size(v)
        elif isinstance(v, list):
            size += sum(request_size(x) if isinstance(x, dict) else 0 for x in v)
    return size


def check_size(req: dict[str, Any]) -> None:
    if request_size(req) > MAX_REQUEST_BYTES:
        raise st.StoreError("etcdserver: request is too large")


class EtcdApi:
    def __init__(self, replica: Replica) -> None:
        self.r = replica
        self.encodings = fanout.SharedEncodings()

    def header(self, revision: int | None = None) -> dict[str, str]:
        r = self.r
        if revision is None:
            revision = r.revision
        return ej.header(cluster_id=r.cluster_id, member_id=r.member_id, revision=revision,
                         raft_term=r.view.term)

    def answer(self, result: st.Result, body: dict[str, Any]) -> web.Response:
        if "error" in result:
            return grpc_error(result["error"], result.get("code", "InvalidArgument"))
        return web.json_response({"header": self.header(result.get("revision")), **body})

    async def range(self, request: web.Request) -> web.Response:
        req = ej.range_request(await read_json(request))
        if not req["key"]:
            raise ej.BadRequest("key", "must not be empty")
        result = await self.r.range(req, serializable=req["serializable"])
        return self.answer(result, ej.range_json(result))

    async def put(self, request: web.Request) -> web.Response:
        req = ej.put_request(await read_json(request))
        if not req["key"]:
            raise ej.BadRequest("key", "must not be empty")
        check_size(req)
        result = await self.r.propose("put", req, term=fence_term(request, self.r))
        return self.answer(result, ej.put_json(result) if "error" not in result else {})

    async def deleterange(self, request: web.Request) -> web.Response:
        req = ej.delete_request(await read_json(request))
        if not req["key"]:
            raise ej.BadRequest("key", "must not be empty")
        result = await self.r.propose("delete_range", req, term=fence_term(request, self.r))
        return self.answer(result, ej.delete_json(result) if "error" not in result else {})

    async def txn(self, request: web.Request) -> web.Response:
        req = ej.txn_request(await read_json(request))
        st.check_txn(req)
        check_size(req)
        result = await self.r.propose("txn", req, term=fence_term(request, self.r))
        if "error" in result:
            return self.answer(result, {})
        return self.answer(result, ej.txn_json(result, self.header(result["revision"])))

    async def compaction(self, request: web.Request) -> web.Response:
        body = ej.obj(await read_json(request))
        revision = ej.int64(body, "revision", "", minimum=1, required=True)
        result = await self.r.propose("compact", {"revision": revision},
                                      term=fence_term(request, self.r))
        return self.answer(result, {})

    async def authenticate(self, request: web.Request) -> web.Response:
        """etcd's Authenticate: a name and password for a token (`etcdauth`)."""
        if not request.app[ETCD_SESSIONS].enabled:  # before reading anything sent
            return grpc_error("etcdserver: authentication is not enabled",
                              "FailedPrecondition")
        body = ej.obj(await inputs.read_json(request, limit=LOGIN_BODY_LIMIT, empty={}))
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise ej.BadRequest("name", "name and password must be strings")
        try:
            token = request.app[ETCD_SESSIONS].login(name, password)
        except etcdauth.NotEnabled:
            return grpc_error("etcdserver: authentication is not enabled",
                              "FailedPrecondition")
        except etcdauth.Failed:
            return grpc_error("etcdserver: authentication failed, invalid user ID or "
                              "password", "InvalidArgument")
        return web.json_response({"header": self.header(), "token": token})

    async def lease_grant(self, request: web.Request) -> web.Response:
        body = ej.obj(await read_json(request))
        ttl = ej.int64(body, "TTL", "", minimum=1, required=True)
        lease_id = ej.int64(body, "ID", "", minimum=0)
        lease_id = lease_id or secrets.randbits(62) + 1
        granted = max(ttl, MIN_LEASE_TTL)
        result = await self.r.propose("lease_grant", {"ID": lease_id, "TTL": granted})
        if "error" in result:
            return self.answer(result, {})
        return self.answer(result, {"ID": str(lease_id), "TTL": str(granted)})

    async def lease_revoke(self, request: web.Request) -> web.Response:
        body = ej.obj(await read_json(request))
        lease_id = ej.int64(body, "ID", "", minimum=1, required=True)
        result = await self.r.propose("lease_revoke", {"ID": lease_id})
        return self.answer(result, {})

    async def lease_keepalive(self, request: web.Request) -> web.Response:
        body = ej.obj(await read_json(request))
        lease_id = ej.int64(body, "ID", "", minimum=1, required=True)
        result = await self.r.propose("lease_keepalive", {"ID": lease_id})
        if "error" in result:
            return self.answer(result, {})
        # etcd's gateway answers keepalive as a one-message stream under "result".
        out = {"header": self.header(result["revision"]), "ID": str(lease_id),
               "TTL": str(result["TTL"])}
        return web.json_response({"result": out})

    async def lease_timetolive(self, request: web.Request) -> web.Response:
        body = ej.obj(await read_json(request))
        lease_id = ej.int64(body, "ID", "", minimum=1, required=True)
        want_keys = ej.boolean(body, "keys", "")
        await self.r.barrier()
        info = self.r.lease_ttl(lease_id)
        if info is None:
            return web.json_response({"header": self.header(), "ID": str(lease_id), "TTL": "-1"})
        remaining, granted, keys = info
        out: dict[str, Any] = {"header": self.header(), "ID": str(lease_id),
                               "TTL": str(remaining), "grantedTTL": str(granted)}
        if want_keys and keys:
            out["keys"] = [ej.enc(k) for k in keys]
        return web.json_response(out)

    async def lease_leases(self, request: web.Request) -> web.Response:
        await read_json(request)
        await self.r.barrier()
        return web.json_response({"header": self.header(),
                                  "leases": [{"ID": str(i)} for i in self.r.lease_ids()]})

    async def status(self, request: web.Request) -> web.Response:
        await read_json(request)
        r = self.r
        return web.json_response({
            "header": self.header(),
            "version": "3.4.0-raftkube",
            "dbSize": str(r.key_count()),
            "leader": str(r.leader_id),
            "raftIndex": str(r.view.commit_index),
            "raftTerm": str(r.view.term),
            "raftAppliedIndex": str(r.view.last_applied),
        })

    async def member_list(self, request: web.Request) -> web.Response:
        await read_json(request)
        return web.json_response({"header": self.header(), "members": self.member_json()})

    async def member_add(self, request: web.Request) -> web.Response:
        """etcd's MemberAdd: `{"peerURLs": ["http://HOST:PORT"]}`, the new member's Raft
        address. Add a member before starting it with `--initial-cluster-state existing`."""
        body = ej.obj(await read_json(request))
        urls = body.get("peerURLs")
        if not isinstance(urls, list) or len(urls) != 1 or not isinstance(urls[0], str):
            raise ej.BadRequest("peerURLs", "expected one URL, http://HOST:PORT")
        addr = peer_address(urls[0])
        if addr in {m["peerURLs"][0].removeprefix("http://") for m in self.r.members()}:
            return grpc_error("etcdserver: Peer URLs already exists", "FailedPrecondition")
        await self.membership(add=True, raft_addr=addr)
        added = {"ID": str(member_id(addr)), "peerURLs": [f"http://{addr}"]}
        return web.json_response({"header": self.header(), "member": added,
                                  "members": self.member_json()})

    async def member_remove(self, request: web.Request) -> web.Response:
        """etcd's MemberRemove: `{"ID": "..."}`. Remove a member that is stopped (or
        about to be), from another member; the leader cannot remove itself."""
        body = ej.obj(await read_json(request))
        wanted = ej.int64(body, "ID", "", minimum=1, required=True)
        found = [m for m in self.r.members() if m["ID"] == wanted]
        if not found:
            return grpc_error("etcdserver: member not found", "NotFound")
        addr = found[0]["peerURLs"][0].removeprefix("http://")
        if addr == self.r.raft_addr:
            return grpc_error("etcdserver: a member cannot remove itself here; ask another "
                              "member", "FailedPrecondition")
        if wanted == self.r.leader_id:
            return grpc_error("etcdserver: cannot remove the leader; stop it and remove it "
                              "once another member leads", "FailedPrecondition")
        await self.membership(add=False, raft_addr=addr)
        return web.json_response({"header": self.header(), "members": self.member_json()})

    async def membership(self, *, add: bool, raft_addr: str) -> None:
        try:
            await self.r.change_member(add=add, raft_addr=raft_addr)
        except MembershipError as e:
            raise st.StoreError(str(e), code="FailedPrecondition") from None

    def member_json(self) -> list[dict[str, Any]]:
        return [{**m, "ID": str(m["ID"])} for m in self.r.members()]

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        """The whole state at a linearizable point, as msgpack bytes plus a SHA-256."""
        await read_json(request)
        await self.r.barrier()
        blob = await self.r.snapshot()  # encoded by a child process: the tick never waits
        digest = await asyncio.get_running_loop().run_in_executor(
            None, lambda: hashlib.sha256(blob).digest())
        return web.Response(body=blob + digest, content_type="application/octet-stream")

    async def watch(self, request: web.Request) -> web.StreamResponse:
        body = ej.obj(await read_json(request))
        create = ej.obj(body.get("create_request"), "create_request")
        path = "create_request."
        key = ej.b64(create, "key", path)
        if not key:
            raise ej.BadRequest(path + "key", "must not be empty")
        end = ej.b64(create, "range_end", path)
        start = ej.int64(create, "start_revision", path, minimum=0)
        prev_kv = ej.boolean(create, "prev_kv", path)
        progress = ej.boolean(create, "progress_notify", path)
        filters = create.get("filters") or []
        if not isinstance(filters, list):
            raise ej.BadRequest(path + "filters", "expected a list")
        dropped = {ej.enum({f"filters[{i}]": f}, f"filters[{i}]", path, ej.WATCH_FILTERS)
                   for i, f in enumerate(filters)}
        drop_types = {"NOPUT": st.PUT, "NODELETE": st.DELETE}
        skip = {drop_types[f] for f in dropped}

        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)

        try:
            history, watcher = self.r.open_watch(key, end, start)
        except st.Compacted as e:
            await resp.write(result_line({
                "header": self.header(), "created": True, "canceled": True,
                "compact_revision": str(e.compact_revision),
                "cancel_reason": st.ERR_COMPACTED}))
            return resp
        # Every watch of the same range and options sends the same bytes for a revision.
        stream = ("v3", key, end, prev_kv, tuple(sorted(skip)))

        def message(revision: int, events: list[st.Event]) -> bytes:
            def make() -> bytes:
                out = [ej.event_json(ev, prev_kv=prev_kv) for ev in events
                       if ev.type not in skip]
                if not out:
                    return b""
                return result_line({"header": self.header(revision), "events": out})

            return self.encodings.get(revision, stream, make)

        def wire(revision: int, events: list[st.Event]) -> bytes:
            return self.encodings.get(revision, ("chunked", *stream),
                                      lambda: fanout.chunk(message(revision, events)))

        def progress_notice(revision: int) -> bytes:
            return result_line({"header": self.header()})  # etcd's: the store's revision

        def cancelled(batch: Batch) -> bytes:
            out: dict[str, Any] = {"header": self.header(), "canceled": True,
                                   "cancel_reason": batch.cancel_reason}
            if batch.compact_revision:
                out["compact_revision"] = str(batch.compact_revision)
            return result_line(out)

        await fanout.pump(
            request, resp, watcher,
            preface=[result_line({"header": self.header(), "created": True})],
            history=history, lines=message, wire=wire,
            idle_every=request.app[PROGRESS] if progress else math.inf,
            idle_line=progress_notice, cancel_line=cancelled)
        return resp


def result_line(result: dict[str, Any]) -> bytes:
    """One message of a /v3 watch stream, as etcd's gateway frames it."""
    return json.dumps({"result": result}).encode() + b"\n"


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


@functools.cache
def _version() -> dict[str, Any]:
    """Read once per process: the checkout the server runs from does not change."""
    return version.info(*version.source_commit(Path(__file__).resolve().parent))


async def version_handler(request: web.Request) -> web.Response:
    return web.json_response(_version())


def _document(request: web.Request, body: bytes, etag: str) -> web.Response:
    """An OpenAPI document with its ETag; 304 when the client has it already."""
    headers = {"ETag": f'"{etag}"', "Cache-Control": "no-cache, private",
               "Vary": "Accept"}
    if request.headers.get("If-None-Match", "").strip('"') == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def _accepts_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return not accept or any(t.split(";")[0].strip() in ("application/json", "*/*",
                                                          "application/*")
                             for t in accept.split(","))


async def openapi_v2(request: web.Request) -> web.Response:
    if not _accepts_json(request):  # v2 in protobuf: client-go asks again for JSON
        return web.json_response(stt.ApiError(
            406, "NotAcceptable", "only application/json is served here").status(),
            status=406)
    return _document(request, *openapi.v2_document())


async def openapi_v3_index(request: web.Request) -> web.Response:
    return _document(request, *openapi.v3_index())


async def openapi_v3(request: web.Request) -> web.Response:
    found = openapi.v3_documents().get(request.match_info["gv"])
    if found is None:
        return web.json_response(stt.ApiError(404, "NotFound", "no OpenAPI document for "
                                              f"{request.match_info['gv']}").status(),
                                 status=404)
    return _document(request, *found)


async def readyz(request: web.Request) -> web.Response:
    reason = request.app[REPLICA].not_ready_reason()
    if reason is None:
        return web.Response(text="ok\n")
    return web.Response(status=503, text=f"not ready: {reason}\n")


def peer_address(url: str) -> str:
    """`http://HOST:PORT` (etcd's peer URL) as the Raft address `HOST:PORT`."""
    addr = url.removeprefix("http://")
    host, sep, port = addr.rpartition(":")
    if (addr == url or not sep or not host or "/" in addr or not port.isdigit()
            or not 0 < int(port) < 65536):
        raise ej.BadRequest("peerURLs", f"expected http://HOST:PORT, got {url!r}")
    return addr


async def metrics_handler(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render(request.app[REPLICA])
    resp = web.Response(body=body)
    resp.content_type = content_type.split(";")[0]
    return resp


def make_app(replica: Replica, *, token: str, node_tokens: dict[str, str] | None = None,
             etcd_users: dict[str, str] | None = None,
             progress_every: float = PROGRESS_EVERY, bookmark_every: float = 10.0,
             service_cidr: str = "10.96.0.0/16", event_ttl: int = 3600) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=BODY_LIMIT)
    app[REPLICA] = replica
    app[PROGRESS] = progress_every
    objects = ob.Objects(replica, service_cidr=service_cidr, event_ttl=event_ttl)
    app[OBJECTS] = objects
    rest = Rest(replica, objects, bookmark_every=bookmark_every)
    tokens = auth.Tokens(admin=token, nodes=node_tokens or {})
    podproxy.PodProxy(objects, tokens).routes(app)  # before REST's catch-all
    for path in ("/api", "/api/{tail:.*}", "/apis", "/apis/{tail:.*}"):
        app.router.add_route("*", path, rest.handle)
    app.on_startup.append(_start_namespaces)
    app.on_cleanup.append(_stop_namespaces)
    app[TOKENS] = tokens
    app[ETCD_SESSIONS] = etcdauth.Sessions(etcd_users or {})
    _version()  # git's answer read now, not while the first /version request waits
    # The one timer of every watch stream: bookmarks, progress notices and deadlines are
    # late by at most this much.
    app[PULSE_EVERY] = min(1.0, progress_every / 3, bookmark_every / 3)
    app.on_startup.append(_start_pulse)
    app.on_shutdown.append(_end_watches)
    app.on_cleanup.append(_stop_pulse)
    app[METRICS] = metrics.Metrics()
    api = EtcdApi(replica)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/version", version_handler)
    app.router.add_get("/version/", version_handler)  # what the Python client asks for
    app.router.add_get("/openapi/v2", openapi_v2)
    app.router.add_get("/openapi/v3", openapi_v3_index)
    app.router.add_get("/openapi/v3/{gv:.+}", openapi_v3)
    app.router.add_get("/metrics", metrics_handler)
    for path, handler in [
        ("/v3/auth/authenticate", api.authenticate),
        ("/v3/kv/range", api.range),
        ("/v3/kv/put", api.put),
        ("/v3/kv/deleterange", api.deleterange),
        ("/v3/kv/txn", api.txn),
        ("/v3/kv/compaction", api.compaction),
        ("/v3/watch", api.watch),
        ("/v3/lease/grant", api.lease_grant),
        ("/v3/lease/revoke", api.lease_revoke),
        ("/v3/kv/lease/revoke", api.lease_revoke),
        ("/v3/lease/keepalive", api.lease_keepalive),
        ("/v3/lease/timetolive", api.lease_timetolive),
        ("/v3/kv/lease/timetolive", api.lease_timetolive),
        ("/v3/lease/leases", api.lease_leases),
        ("/v3/kv/lease/leases", api.lease_leases),
        ("/v3/maintenance/status", api.status),
        ("/v3/maintenance/snapshot", api.snapshot),
        ("/v3/cluster/member/list", api.member_list),
        ("/v3/cluster/member/add", api.member_add),
        ("/v3/cluster/member/remove", api.member_remove),
    ]:
        app.router.add_post(path, handler)
    return app
