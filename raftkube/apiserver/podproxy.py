"""What only a pod's node can answer, relayed by every master: logs, exec and usage.

    GET  /api/v1/namespaces/NS/pods/NAME/log?container=&follow=&tailLines=&previous=
         &timestamps=&sinceSeconds=&limitBytes=
    GET  /api/v1/namespaces/NS/pods/NAME/exec?command=…&container=&stdin=&stdout=&stderr=&tty=
         (a WebSocket: Kubernetes' channel protocol, v5.channel.k8s.io or v4)
    GET  /apis/metrics.k8s.io/v1beta1/nodes[/NAME]
    GET  /apis/metrics.k8s.io/v1beta1/[namespaces/NS/]pods[/NAME]

A master validates the request (a bad query names its field, and nothing is asked of the
node; for exec this happens before the WebSocket upgrade, so the error is an HTTP
`Status`, as Kubernetes answers it), picks the container as kubectl expects (the only
one, the `kubectl.kubernetes.io/default-container` annotation, or a 400 listing the
choices), finds the pod's node and the agent's endpoint the Node advertises (its
InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`), and relays to the agent's
API (`agent/server.py`) with that node's token. Bytes and WebSocket messages pass through
unread, so a follow or an interactive shell costs the master a relay and no parsing.
Only the admin may do this: a node token reads no other node's pods' output (403).

The usage paths are metrics-server's API (`kubectl top` reads them): each Ready node's
summary, asked of its agent at the time of the request, in parallel, with a short
timeout; a node that does not answer is left out, as metrics-server leaves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from raftkube.api import channels, kinds
from raftkube.api.timestamps import parse_time, rfc3339
from raftkube.apiserver import auth
from raftkube.apiserver import objects as ob
from raftkube.apiserver import status as stt

log = logging.getLogger(__name__)

Obj = dict[str, Any]
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"
SUMMARY_TIMEOUT = 5.0
METRICS_GROUP = "metrics.k8s.io"
METRICS_VERSION = "v1beta1"
_BOOL = {"true": True, "1": True, "false": False, "0": False, "": False}


def _flag(q: Any, name: str) -> bool:
    value = q.get(name, "")
    if value.lower() not in _BOOL:
        raise stt.bad_request(f'{name}: Invalid value: "{value}": must be true or false')
    return _BOOL[value.lower()]


def _count(q: Any, name: str, *, minimum: int) -> int | None:
    value = q.get(name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 18 or int(value) < minimum:
        raise stt.bad_request(f'{name}: Invalid value: "{value}": must be an integer of at '
                              f"least {minimum}")
    return int(value)


def log_query(q: Any, now: float) -> dict[str, str]:
    """The agent's query for a `pods/log` request's, checked field by field."""
    out = {name: "true" for name in ("follow", "previous", "timestamps") if _flag(q, name)}
    for name, minimum in (("tailLines", 0), ("limitBytes", 1), ("sinceSeconds", 1)):
        value = _count(q, name, minimum=minimum)
        if value is not None:
            out[name] = str(value)
    if "sinceTime" in q:
        if "sinceSeconds" in out:
            raise stt.bad_request("sinceTime: Forbidden: at most one of sinceTime or "
                                  "sinceSeconds may be specified")
        at = parse_time(q["sinceTime"])
        if at is None:
            raise stt.bad_request(f'sinceTime: Invalid value: "{q["sinceTime"]}": must be '
                                  "an RFC 3339 time")
        out["sinceSeconds"] = str(max(1, int(now - at) + 1))
    return out


def pick_container(pod: Obj, asked: str) -> str:
    """The container a request means, or the 400 Kubernetes gives."""
    spec = pod.get("spec") or {}
    name = pod["metadata"].get("name", "")
    apps = [c["name"] for c in spec.get("containers") or [] if isinstance(c, dict)]
    inits = [c["name"] for c in spec.get("initContainers") or [] if isinstance(c, dict)]
    if asked:
        if asked not in apps + inits:
            raise stt.bad_request(f"container {asked} is not valid for pod {name}")
        return asked
    default = ((pod["metadata"].get("annotations") or {}).get(DEFAULT_CONTAINER) or "")
    if default in apps:
        return str(default)
    if len(apps) == 1:
        return str(apps[0])
    choices = " ".join(apps)
    extra = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
    raise stt.bad_request(f"a container name must be specified for pod {name}, choose one "
                          f"of: [{choices}]{extra}")


AGENT_CERT_ANNOTATION = "raftkube.io/agent-certificate-sha256"


def agent_tls(node: Obj) -> aiohttp.Fingerprint:
    """How a Node's agent is verified: by the SHA-256 fingerprint of its certificate,
    which the agent publishes on its Node (written with its node token). Without one
    nothing is sent: the node token would go to whoever answers, in clear."""
    name = node["metadata"].get("name", "")
    value = ((node.get("metadata") or {}).get("annotations") or {}).get(
        AGENT_CERT_ANNOTATION)
    if not value:
        raise stt.ApiError(502, "InternalError", f"node {name} publishes no certificate for "
                           f"its agent ({AGENT_CERT_ANNOTATION}); the agent writes it when "
                           "it registers and with its status")
    try:
        return aiohttp.Fingerprint(bytes.fromhex(str(value)))
    except ValueError:
        raise stt.ApiError(502, "InternalError", f"node {name}: the annotation "
                           f"{AGENT_CERT_ANNOTATION} is not a SHA-256 fingerprint") from None


def agent_endpoint(node: Obj) -> str:
    """`https://ADDRESS:PORT` of a Node's agent, from its status, or a 400 naming why."""
    status = node.get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    address = next((a.get("address") for a in status.get("addresses") or []
                    if isinstance(a, dict) and a.get("type") == "InternalIP"), None)
    name = node["metadata"].get("name", "")
    if not isinstance(port, int) or not 0 < port < 65536 or not address:
        raise stt.ApiError(400, "BadRequest", f"node {name} advertises no agent endpoint "
                                              "(status.addresses InternalIP and "
                                              "status.daemonEndpoints.kubeletEndpoint.Port)")
    host = f"[{address}]" if ":" in address else address
    return f"https://{host}:{port}"


def _quantity_cpu(nanocores: int) -> str:
    return f"{nanocores}n"


def _quantity_memory(size: int) -> str:
    return f"{size // 1024}Ki"


class PodProxy:
    def __init__(self, objects: ob.Objects, tokens: auth.Tokens) -> None:
        self.objects = objects
        self.node_tokens = {node: token for token, node in tokens.nodes.items()}
        self._session: aiohttp.ClientSession | None = None

    def routes(self, app: web.Application) -> None:
        """Registered before the REST catch-all, so that these paths come here."""
        pods = "/api/v1/namespaces/{namespace}/pods/{name}"
        app.router.add_get(pods + "/log", self._guard(self.logs))
        app.router.add_route("*", pods + "/exec", self._guard(self.exec))
        base = f"/apis/{METRICS_GROUP}/{METRICS_VERSION}"
        app.router.add_get(base, self._guard(self.metrics_discovery))
        app.router.add_get(base + "/nodes", self._guard(self.node_metrics))
        app.router.add_get(base + "/nodes/{node}", self._guard(self.node_metrics))
        app.router.add_get(base + "/pods", self._guard(self.pod_metrics))
        app.router.add_get(base + "/namespaces/{namespace}/pods", self._guard(self.pod_metrics))
        app.router.add_get(base + "/namespaces/{namespace}/pods/{name}",
                           self._guard(self.pod_metrics))
        app.on_cleanup.append(self._close)

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No cap on connections: each follow or exec holds one for as long as it lasts.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def _guard(self, handler: Any) -> Any:
        async def guarded(request: web.Request) -> web.StreamResponse:
            try:
                if not request[auth.USER].admin:
                    raise stt.ApiError(403, "Forbidden", f'User "{request[auth.USER].name}" '
                                       "cannot reach pods' logs, exec or usage")
                response: web.StreamResponse = await handler(request)
                return response
            except stt.ApiError as e:
                return web.json_response(e.status(), status=e.code)
        return guarded

    async def _placed(self, request: web.Request) -> tuple[Obj, Obj, str]:
        """(pod, node, container) of a request about one pod's container."""
        ns, name = request.match_info["namespace"], request.match_info["name"]
        pod = (await self.objects.get(kinds.POD, ns, name)).obj
        container = pick_container(pod, request.query.get("container", ""))
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            raise stt.bad_request(f'container "{container}" in pod "{name}" is waiting to '
                                  "start: the pod is not scheduled to a node yet")
        node = (await self.objects.get(kinds.NODE, "", node_name)).obj
        return pod, node, container

    def _agent(self, node: Obj, path: str
               ) -> tuple[str, dict[str, str], aiohttp.Fingerprint]:
        name = node["metadata"]["name"]
        token = self.node_tokens.get(name)
        if token is None:
            raise stt.ApiError(500, "InternalError", f"node {name} has no token on this "
                                                     "master (--node-token-file)")
        return agent_endpoint(node) + f"/nodes/{name}" + path, {
            "Authorization": f"Bearer {token}"}, agent_tls(node)

    # ---- logs -------------------------------------------------------------------------

    async def logs(self, request: web.Request) -> web.StreamResponse:
        query = log_query(request.query, time.time())
        pod, node, container = await self._placed(request)
        meta = pod["metadata"]
        url, headers, tls = self._agent(node, f"/containerLogs/{meta['namespace']}/"
                                              f"{meta['name']}/{container}")
        timeout = aiohttp.ClientTimeout(total=None, connect=5.0,
                                        sock_read=None if "follow" in query else 30.0)
        try:
            upstream = await self._http().get(url, params=query, headers=headers,
                                              timeout=timeout, ssl=tls)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise _unreachable(node, e) from None
        try:
            if upstream.status != 200:
                # What the node cannot show (no such instance, no previous one) is a
                # 400, as Kubernetes passes on the kubelet's answer: kubectl prints
                # `Error from server (BadRequest): previous terminated container …`.
                text = (await upstream.text()).strip()
                code = 400 if upstream.status in (400, 404) else 500
                raise stt.ApiError(code, "BadRequest" if code == 400 else "InternalError",
                                   text or f"the node's agent answered {upstream.status}")
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await resp.prepare(request)
            with contextlib.suppress(ConnectionResetError, aiohttp.ClientError):
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            return resp
        finally:
            upstream.release()

    # ---- exec -------------------------------------------------------------------------

    async def exec(self, request: web.Request) -> web.StreamResponse:
        """Checked before the upgrade, as Kubernetes' API server checks: a missing pod, a
        bad container or command, a pod on no node, and a subprotocol we do not speak are
        a plain HTTP `Status`. kubectl 1.30+ reads that from the failed WebSocket
        handshake, retries once with SPDY (a POST), gets the same `Status`, and prints
        `Error from server (BadRequest): …` as it does against Kubernetes. From the
        upgrade on, an error is the error channel's Status (as the kubelet reports a
        failed exec), which kubectl and `rk exec` print."""
        url, headers, params, tls = await self._exec_target(request)
        ws = web.WebSocketResponse(protocols=channels.PROTOCOLS)
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "")
                   .split(",") if p.strip()]
        if not ws.can_prepare(request).ok:
            raise stt.bad_request("exec is a WebSocket upgrade with the subprotocol "
                                  f"{channels.V5} or {channels.V4} (SPDY is not spoken "
                                  "here: use kubectl 1.30 or later)")
        if offered and channels.pick(offered) is None:
            raise stt.bad_request(f"requested protocol(s) are not supported: {offered}; "
                                  f"supports {list(channels.PROTOCOLS)}")
        await ws.prepare(request)
        try:
            upstream = await self._http().ws_connect(
                url, params=params, headers=headers, ssl=tls,
                protocols=(ws.ws_protocol or channels.V4,),
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0), heartbeat=None)
        except (aiohttp.ClientError, TimeoutError) as e:
            if isinstance(e, aiohttp.WSServerHandshakeError) and e.status == 404:
                # The agent has not seen the pod (or the container) yet, or no longer.
                error = stt.ApiError(404, "NotFound", "container not found "
                                     f'("{url.rsplit("/", 1)[-1]}")')
            else:
                error = _unreachable_url(url, e)
            await ws.send_bytes(channels.frame(channels.ERROR, _json(error.status())))
            await ws.close()
            return ws
        try:
            await _relay(ws, upstream)
        finally:
            await upstream.close()
            await ws.close()
        return ws

    async def _exec_target(self, request: web.Request) -> tuple[
            str, dict[str, str], list[tuple[str, str]], aiohttp.Fingerprint]:
        q = request.query
        stdin, tty = _flag(q, "stdin"), _flag(q, "tty")
        for name in ("stdout", "stderr"):
            _flag(q, name)
        # The pod and the container before the command: a client that asks again without
        # the query, to read why its handshake failed, still learns of a missing pod.
        pod, node, container = await self._placed(request)
        command = q.getall("command", [])
        if not command:
            raise stt.bad_request("command: Required value: you must specify at least one "
                                  "command for the container")
        meta = pod["metadata"]
        url, headers, tls = self._agent(node, f"/exec/{meta['namespace']}/"
                                              f"{meta['name']}/{container}")
        params = [("command", c) for c in command] + [
            ("stdin", str(stdin).lower()), ("stdout", "true"),
            ("stderr", str(not tty).lower()), ("tty", str(tty).lower())]
        return url, headers, params, tls

    # ---- usage (metrics.k8s.io) -------------------------------------------------------

    async def metrics_discovery(self, request: web.Request) -> web.Response:
        return web.json_response({
            "kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{METRICS_GROUP}/{METRICS_VERSION}",
            "resources": [
                {"name": "nodes", "singularName": "", "namespaced": False,
                 "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": True,
                 "kind": "PodMetrics", "verbs": ["get", "list"]}]})

    async def _summaries(self, only: str = "") -> list[tuple[Obj, Obj]]:
        nodes = (await self.objects.list_objects(kinds.NODE, None)).items
        nodes = [n for n in nodes if (not only or n["metadata"].get("name") == only)
                 and _ready(n)]

        async def one(node: Obj) -> tuple[Obj, Obj] | None:
            try:
                url, headers, tls = self._agent(node, "/stats/summary")
                async with self._http().get(
                        url, headers=headers, ssl=tls,
                        timeout=aiohttp.ClientTimeout(total=SUMMARY_TIMEOUT)) as resp:
                    if resp.status != 200:
                        return None
                    summary = await resp.json()
            except (stt.ApiError, aiohttp.ClientError, TimeoutError, ValueError) as e:
                log.debug("no summary from node %s: %s", node["metadata"].get("name"), e)
                return None
            return (node, summary) if isinstance(summary, dict) else None

        found = await asyncio.gather(*(one(n) for n in nodes))
        return [f for f in found if f is not None]

    async def node_metrics(self, request: web.Request) -> web.Response:
        only = request.match_info.get("node", "")
        now = rfc3339(time.time())
        items = []
        for node, summary in await self._summaries(only):
            usage = summary.get("node") or {}
            items.append({
                "metadata": {"name": node["metadata"]["name"],
                             "labels": node["metadata"].get("labels") or {}},
                "timestamp": now, "window": "1s",
                "usage": {"cpu": _quantity_cpu(int((usage.get("cpu") or {}).get(
                              "usageNanoCores") or 0)),
                          "memory": _quantity_memory(int((usage.get("memory") or {}).get(
                              "workingSetBytes") or 0))}})
        kind = f"{METRICS_GROUP}/{METRICS_VERSION}"
        if only:
            if not items:
                raise stt.not_found(f"nodes.{METRICS_GROUP}", only)
            return web.json_response({"kind": "NodeMetrics", "apiVersion": kind, **items[0]})
        return web.json_response({"kind": "NodeMetricsList", "apiVersion": kind,
                                  "metadata": {}, "items": items})

    async def pod_metrics(self, request: web.Request) -> web.Response:
        ns = request.match_info.get("namespace", "")
        only = request.match_info.get("name", "")
        now = rfc3339(time.time())
        items = []
        for _node, summary in await self._summaries():
            for pod in summary.get("pods") or []:
                ref = pod.get("podRef") or {}
                if (ns and ref.get("namespace") != ns) or (only and ref.get("name") != only):
                    continue
                items.append({
                    "metadata": {"name": ref.get("name"), "namespace": ref.get("namespace")},
                    "timestamp": now, "window": "1s",
                    "containers": [{"name": c.get("name"), "usage": {
                        "cpu": _quantity_cpu(int((c.get("cpu") or {}).get("usageNanoCores")
                                                 or 0)),
                        "memory": _quantity_memory(int((c.get("memory") or {}).get(
                            "workingSetBytes") or 0))}}
                        for c in pod.get("containers") or []]})
        kind = f"{METRICS_GROUP}/{METRICS_VERSION}"
        if only:
            if not items:
                raise stt.not_found(f"pods.{METRICS_GROUP}", only)
            return web.json_response({"kind": "PodMetrics", "apiVersion": kind, **items[0]})
        return web.json_response({"kind": "PodMetricsList", "apiVersion": kind,
                                  "metadata": {}, "items": items})


def _ready(node: Obj) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or []
               if isinstance(c, dict))


def _unreachable(node: Obj, e: BaseException) -> stt.ApiError:
    try:
        where = agent_endpoint(node)
    except stt.ApiError:
        where = "?"
    return stt.ApiError(500, "InternalError", f"cannot reach the agent of node "
                        f"{node['metadata'].get('name')} at {where}: "
                        f"{type(e).__name__}: {e}")


def _unreachable_url(url: str, e: BaseException) -> stt.ApiError:
    return stt.ApiError(500, "InternalError", f"cannot reach the node's agent at "
                        f"{url.split('/nodes/')[0]}: {type(e).__name__}: {e}")


def _json(obj: Obj) -> bytes:
    return json.dumps(obj).encode()


async def _relay(client: web.WebSocketResponse,
                 upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Messages both ways, unread, until either side closes."""

    async def down() -> None:
        async for msg in upstream:
            if msg.type == WSMsgType.BINARY:
                await client.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await client.send_str(msg.data)

    async def up() -> None:
        async for msg in client:
            if msg.type == WSMsgType.BINARY:
                await upstream.send_bytes(msg.data)
            elif msg.type == WSMsgType.TEXT:
                await upstream.send_str(msg.data)

    tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
