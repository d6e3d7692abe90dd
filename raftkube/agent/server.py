"""The agent's own API, which the masters call: logs, exec, usage and metrics.

Kubernetes' API server reaches a pod's output through the kubelet of its node; so do
raftkube's masters. One server per agent process, on the node's address (`--address`,
never a NAT address: the masters dial it) and `--agent-port`, advertised in the Node's
`status.daemonEndpoints.kubeletEndpoint.Port`. The hollow nodes of one process share it,
so every path names its node:

    GET /nodes/NODE/containerLogs/NS/POD/CONTAINER?follow&tailLines&previous&timestamps
        &sinceSeconds&limitBytes                      the output, streamed as written
    GET /nodes/NODE/exec/NS/POD/CONTAINER?command=…&stdin&stdout&stderr&tty
                                                      a WebSocket, Kubernetes' channels
    GET /nodes/NODE/stats/summary                     cpu and memory per pod/container
    GET /metrics                                      Prometheus, this process's nodes
    GET /healthz                                      no token needed

Every path but /healthz needs `Authorization: Bearer TOKEN` with the token of the node
it names: the node token, which the masters know from `--node-token-file`. (Kubernetes
uses the API server's client certificate; a per-node shared secret is its counterpart
here, and it never leaves the masters and the node.) The masters validate the query and
name the container; this server only serves what it is asked, for pods bound to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from raftkube.agent import metrics
from raftkube.agent import runtime as rt
from raftkube.api import channels

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass
class Served:
    """One node this process runs, as the server needs it."""

    name: str
    token: str
    runtime: rt.ContainerRuntime
    pods: Callable[[], Iterable[Obj]]  # the pods bound to it, as its kubelet knows them

    def pod(self, namespace: str, name: str) -> Obj | None:
        return next((p for p in self.pods() if p["metadata"].get("name") == name and
                     p["metadata"].get("namespace") == namespace), None)

    def pod_by_uid(self, uid: str) -> Obj | None:
        return next((p for p in self.pods() if p["metadata"].get("uid") == uid), None)


def _bool(q: Mapping[str, str], name: str) -> bool:
    return q.get(name, "").lower() in ("1", "true")


def _int(q: Mapping[str, str], name: str) -> int | None:
    value = q.get(name)
    if value is None or value == "":
        return None
    if not value.isdigit():
        raise web.HTTPBadRequest(text=f"{name}: must be a non-negative integer\n")
    return int(value)


class AgentServer:
    def __init__(self, nodes: list[Served], *, clock: Callable[[], float] = time.time,
                 agent_metrics: metrics.AgentMetrics | None = None) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.clock = clock
        # The process's registry: the prober counts on it too.
        self.metrics = agent_metrics or metrics.AgentMetrics()
        # node -> (pod uid, container) -> the last usage read (a CPU rate needs two)
        self._samples: dict[str, dict[tuple[str, str], rt.ContainerUsage]] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.serve_metrics)
        app.router.add_get("/nodes/{node}/containerLogs/{ns}/{pod}/{container}", self.logs)
        app.router.add_route("*", "/nodes/{node}/exec/{ns}/{pod}/{container}", self.exec)
        app.router.add_get("/nodes/{node}/stats/summary", self.summary)
        return app

    # ---- who asks, about what ---------------------------------------------------------

    def _node(self, request: web.Request) -> Served:
        node = self.nodes.get(request.match_info["node"])
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if node is None or not supplied or \
                not hmac.compare_digest(supplied.encode(), node.token.encode()):
            raise web.HTTPUnauthorized(text="unauthorized\n")
        return node

    def _container(self, request: web.Request, node: Served) -> tuple[str, str]:
        """(pod uid, container name) for a pod bound here, or 404."""
        ns, name = request.match_info["ns"], request.match_info["pod"]
        container = request.match_info["container"]
        pod = node.pod(ns, name)
        if pod is None:
            raise web.HTTPNotFound(text=f'pod "{name}" in namespace "{ns}" is not on node '
                                        f'{node.name}\n')
        spec = pod.get("spec") or {}
        names = [c.get("name") for c in (spec.get("initContainers") or []) +
                 (spec.get("containers") or []) if isinstance(c, dict)]
        if container not in names:
            raise web.HTTPNotFound(text=f'container "{container}" is not in pod "{name}"\n')
        return str(pod["metadata"]["uid"]), container

    # ---- handlers ---------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def serve_metrics(self, request: web.Request) -> web.Response:
        supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not any(supplied and hmac.compare_digest(supplied.encode(), n.token.encode())
                   for n in self.nodes.values()):
            raise web.HTTPUnauthorized(text="unauthorized\n")
        states = {name: await n.runtime.pods() for name, n in self.nodes.items()}
        body, content_type = self.metrics.render(states)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def logs(self, request: web.Request) -> web.StreamResponse:
        node = self._node(request)
        uid, container = self._container(request, node)
        q = request.query
        since = _int(q, "sinceSeconds")
        options = rt.LogOptions(previous=_bool(q, "previous"), follow=_bool(q, "follow"),
                                tail=_int(q, "tailLines"), timestamps=_bool(q, "timestamps"),
                                since=None if since is None else self.clock() - since)
        limit = _int(q, "limitBytes")
        chunks = node.runtime.logs(uid, container, options)
        try:
            first = await anext(chunks, b"")
        except rt.RuntimeFailure as e:
            # The runtime knows pods by UID; whoever reads this (kubectl logs -p) knows
            # them by name, as the kubelet names them.
            named = str(e).replace(uid, f'"{request.match_info["pod"]}"')
            raise web.HTTPNotFound(text=f"{named}\n") from None
        resp = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        sent = 0
        try:
            await resp.prepare(request)
            chunk = first
            while True:
                if limit is not None and sent + len(chunk) >= limit:
                    await resp.write(chunk[:limit - sent])
                    break
                if chunk:
                    await resp.write(chunk)
                    sent += len(chunk)
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
        except (ConnectionResetError, rt.RuntimeFailure) as e:
            log.debug("logs of %s/%s ended: %s", uid, container, e)
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp

    async def exec(self, request: web.Request) -> web.StreamResponse:
        node = self._node(request)
        uid, container = self._container(request, node)
        q = request.query
        command = q.getall("command", [])
        if not command:
            raise web.HTTPBadRequest(text="command: required\n")
        ws = web.WebSocketResponse(protocols=channels.PROTOCOLS)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="exec needs a WebSocket upgrade with one of the "
                                          f"subprotocols {', '.join(channels.PROTOCOLS)}\n")
        await ws.prepare(request)
        stdin, tty = _bool(q, "stdin"), _bool(q, "tty")
        try:
            session = await node.runtime.exec(uid, container, command, stdin=stdin, tty=tty)
        except rt.RuntimeFailure as e:
            await ws.send_bytes(channels.frame(channels.ERROR,
                                               _json(channels.failure(str(e)))))
            await ws.close()
            return ws
        self.metrics.execs.labels(node=node.name).inc()
        pump = asyncio.ensure_future(_input(ws, session, ws.ws_protocol == channels.V5))
        output = asyncio.ensure_future(_output(ws, session))
        try:
            # The client leaving (its side of the socket ends) ends the session too: the
            # command's input is closed and its streams let go, so nothing is left running
            # on our side for a client that is gone.
            await asyncio.wait([pump, output], return_when=asyncio.FIRST_COMPLETED)
            if output.done():
                error = output.exception()
                status = channels.failure(str(error)) if error is not None else \
                    channels.exit_status(await session.wait())
                with contextlib.suppress(ConnectionResetError):
                    await ws.send_bytes(channels.frame(channels.ERROR, _json(status)))
            elif pump.exception() is None and not ws.closed:
                # v5: stdin ended ([255, 0]) and the socket is still open: the command
                # goes on with its output.
                await asyncio.wait([output])
                error = output.exception()
                status = channels.failure(str(error)) if error is not None else \
                    channels.exit_status(await session.wait())
                with contextlib.suppress(ConnectionResetError):
                    await ws.send_bytes(channels.frame(channels.ERROR, _json(status)))
        finally:
            for task in (pump, output):
                task.cancel()
            await asyncio.gather(pump, output, return_exceptions=True)
            await session.close()
            await ws.close()
        return ws

    async def summary(self, request: web.Request) -> web.Response:
        node = self._node(request)
        return web.json_response(await self.summary_of(node))

    async def summary_of(self, node: Served) -> Obj:
        """Kubernetes' stats summary (the parts `kubectl top` reads): CPU as a rate
        over the time since the last sample (the first call samples twice)."""
        samples = self._samples.setdefault(node.name, {})
        now = await node.runtime.usage()
        if any((u.pod_uid, u.name) not in samples for u in now):
            await asyncio.sleep(1.0)
            self._remember(samples, now)
            now = await node.runtime.usage()
        pods: dict[str, Obj] = {}
        for u in now:
            before = samples.get((u.pod_uid, u.name))
            rate = 0.0
            if before is not None and u.at > before.at:
                rate = max(0.0, (u.cpu_seconds - before.cpu_seconds) / (u.at - before.at))
            entry = pods.setdefault(u.pod_uid, {"containers": [], "cpu": 0, "memory": 0})
            entry["containers"].append({
                "name": u.name, "cpu": {"usageNanoCores": int(rate * 1e9)},
                "memory": {"workingSetBytes": u.memory_bytes}})
            entry["cpu"] += int(rate * 1e9)
            entry["memory"] += u.memory_bytes
        self._remember(samples, now)
        out = []
        for uid, entry in pods.items():
            pod = node.pod_by_uid(uid)
            if pod is None:
                continue
            meta = pod["metadata"]
            out.append({"podRef": {"name": meta.get("name"), "namespace": meta.get("namespace"),
                                   "uid": uid},
                        "cpu": {"usageNanoCores": entry["cpu"]},
                        "memory": {"workingSetBytes": entry["memory"]},
                        "containers": entry["containers"]})
        cpu = sum(p["cpu"]["usageNanoCores"] for p in out)
        memory = sum(p["memory"]["workingSetBytes"] for p in out)
        return {"node": {"nodeName": node.name, "cpu": {"usageNanoCores": cpu},
                         "memory": {"workingSetBytes": memory}},
                "pods": out}

    @staticmethod
    def _remember(samples: dict[tuple[str, str], rt.ContainerUsage],
                  usage: list[rt.ContainerUsage]) -> None:
        live = {(u.pod_uid, u.name): u for u in usage}
        samples.clear()
        samples.update(live)


def _json(obj: Obj) -> bytes:
    return json.dumps(obj).encode()


async def _output(ws: web.WebSocketResponse, session: rt.ExecSession) -> None:
    """The command's output to the client, until both its streams end."""
    while (out := await session.read()) is not None:
        await ws.send_bytes(channels.frame(*out))


async def _input(ws: web.WebSocketResponse, session: rt.ExecSession, v5: bool) -> None:
    """The client's side of the channels: stdin, its end (v5), and resizes. Returns when
    the client closes the socket (v4: that is also the end of its stdin), or, with v5,
    once stdin has ended (what follows from the client is only resizes)."""
    async for msg in ws:
        if msg.type != WSMsgType.BINARY:
            continue
        try:
            channel, data = channels.parse(msg.data)
        except ValueError:
            continue
        if channel == channels.STDIN:
            await session.write(data)
        elif channel == channels.RESIZE:
            try:
                size = json.loads(data)
                await session.resize(int(size["Width"]), int(size["Height"]))
            except (ValueError, KeyError, TypeError):
                continue
        elif v5 and channel == channels.CLOSE and data[:1] == bytes([channels.STDIN]):
            await session.close_stdin()
            return
    await session.close_stdin()  # the client is gone (v4 says "stdin ended" so too)
    raise ConnectionResetError("the client closed the exec stream")
