"""A master's relay of logs and exec (`apiserver/podproxy.py`) as kubectl meets it: what is
wrong with an exec request is a plain HTTP `Status` before the WebSocket upgrade (kubectl
reads it from the failed handshake, retries with SPDY, and prints the same `Status`); what
goes wrong after it arrives on the error channel; what the node cannot show of a log is a
400 naming the pod. The master runs over aiohttp's test server, with a fake store and a
real agent API over the simulated runtime."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp import test_utils as tu

from raftkube.agent import server, simulated
from raftkube.api import channels, kinds
from raftkube.apiserver import auth, podproxy
from raftkube.apiserver import status as stt
from raftkube.cli import agent as agent_cli

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
EXEC = "/api/v1/namespaces/default/pods/{}/exec"


def pod(name: str, *containers: str, node: str = "n1") -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"nodeName": node,
                     "containers": [{"name": c, "image": "i"} for c in containers]}}


class FakeObjects:
    """What PodProxy reads of the store: pods and nodes by name."""

    def __init__(self, objs: dict[tuple[str, str], Obj]) -> None:
        self.objs = objs

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Any:
        found = self.objs.get((kind.resource, name))
        if found is None:
            raise stt.not_found(kind.resource, name)
        return SimpleNamespace(obj=found)


@web.middleware
async def admin(request: web.Request,
                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    """Every request as the admin (the masters' auth is tested elsewhere)."""
    request[auth.USER] = auth.User("admin")
    return await handler(request)


@pytest.fixture
async def master() -> AsyncIterator[tu.TestClient[Any, Any]]:
    runtime = simulated.SimulatedRuntime(pod_cidr="10.244.1.0/24", host_ip="127.0.0.1",
                                         clock=lambda: 1000.0)
    one, two = pod("one", "c"), pod("two", "a", "b")
    for p in (one, two):
        await runtime.run_sandbox(p)
        for c in p["spec"]["containers"]:
            await runtime.start_container(p, c, attempt=0)
    # The agent knows pod one and two; "stale" is in the store but not (yet) on the node.
    # The agent's API over TLS, as `rk agent` serves it, pinned by its fingerprint.
    context, fingerprint = agent_cli.serving_tls("n1", "127.0.0.1")
    agent = tu.TestServer(server.AgentServer(
        [server.Served("n1", "node-secret", runtime, lambda: [one, two])]).app(),
        scheme="https")
    await agent.start_server(ssl=context)
    node = {"metadata": {"name": "n1", "annotations": {
                podproxy.AGENT_CERT_ANNOTATION: fingerprint}}, "status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}}}}
    objects = FakeObjects({("pods", "one"): one, ("pods", "two"): two,
                           ("pods", "stale"): pod("stale", "c"),
                           ("pods", "pending"): pod("pending", "c", node=""),
                           ("nodes", "n1"): node})

    app = web.Application(middlewares=[admin])
    proxy = podproxy.PodProxy(objects, auth.Tokens(admin="t", nodes={"node-secret": "n1"}))
    proxy.routes(app)  # type: ignore[arg-type]
    client = tu.TestClient(tu.TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await agent.close()


def websocket_headers(*protocols: str) -> dict[str, str]:
    """A WebSocket handshake's headers, sent as a plain request so that the answer's
    body can be read (kubectl reads it; aiohttp's ws_connect does not)."""
    return {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
            "Sec-WebSocket-Protocol": ", ".join(protocols)}


SPDY = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
        "X-Stream-Protocol-Version": "v4.channel.k8s.io"}


@pytest.mark.parametrize(("name", "query", "code", "message"), [
    ("one", [("command", "true"), ("container", "zz")], 400,
     "container zz is not valid for pod one"),
    ("two", [("command", "true")], 400,
     "a container name must be specified for pod two, choose one of: [a b]"),
    ("ghost", [("command", "true")], 404, 'pods "ghost" not found'),
    ("pending", [("command", "true")], 400, "not scheduled to a node yet"),
    ("one", [], 400, "command: Required value"),
    ("one", [("command", "true"), ("tty", "maybe")], 400, 'tty: Invalid value: "maybe"'),
])
async def test_a_bad_exec_is_a_status_before_the_upgrade(
        master: tu.TestClient[Any, Any], name: str, query: list[tuple[str, str]],
        code: int, message: str) -> None:
    # kubectl 1.30+ tries the WebSocket first, then SPDY (a POST): both get the Status.
    for method, headers in (("GET", websocket_headers(channels.V5, channels.V4)),
                            ("POST", SPDY)):
        resp = await master.request(method, EXEC.format(name), params=query,
                                    headers=headers)
        body = await resp.json()
        assert resp.status == code, body
        assert body["kind"] == "Status" and body["code"] == code
        assert message in body["message"], body


async def test_spdy_and_unknown_subprotocols_are_refused_with_a_reason(
        master: tu.TestClient[Any, Any]) -> None:
    query = [("command", "true")]
    resp = await master.post(EXEC.format("one"), params=query, headers=SPDY)
    assert resp.status == 400
    assert "SPDY is not spoken here" in (await resp.json())["message"]
    resp = await master.get(EXEC.format("one"), params=query,
                            headers=websocket_headers("channel.k8s.io"))
    assert resp.status == 400
    assert "requested protocol(s) are not supported" in (await resp.json())["message"]


async def exec_messages(master: tu.TestClient[Any, Any], name: str,
                        query: list[tuple[str, str]], stdin: bytes | None = None
                        ) -> list[tuple[int, bytes]]:
    async with master.ws_connect(EXEC.format(name) + "?" + "&".join(
            f"{k}={v}" for k, v in query), protocols=(channels.V5, channels.V4)) as ws:
        assert ws.protocol == channels.V5
        if stdin is not None:
            await ws.send_bytes(channels.frame(channels.STDIN, stdin))
            await ws.send_bytes(channels.close_frame(channels.STDIN))
        return [channels.parse(m.data) async for m in ws if m.type == WSMsgType.BINARY]


async def test_a_good_exec_is_relayed_to_the_agent(master: tu.TestClient[Any, Any]) -> None:
    got = await exec_messages(master, "two", [("command", "cat"), ("container", "b"),
                                              ("stdin", "true"), ("stdout", "true")],
                              stdin=b"through the master")
    assert got[0] == (channels.STDOUT, b"through the master")
    assert got[-1][0] == channels.ERROR and channels.exit_code(got[-1][1]) == (0, "")


async def test_after_the_upgrade_a_pod_the_agent_lacks_is_the_kubelets_error(
        master: tu.TestClient[Any, Any]) -> None:
    """The store has the pod, the agent does not run it (yet, or any more): as the
    kubelet says it, on the error channel."""
    got = await exec_messages(master, "stale", [("command", "true")])
    assert [c for c, _ in got] == [channels.ERROR]
    status = json.loads(got[0][1])
    assert status["status"] == "Failure" and status["code"] == 404
    assert status["message"] == 'container not found ("c")'


async def test_logs_through_the_master_and_what_the_node_cannot_show(
        master: tu.TestClient[Any, Any]) -> None:
    resp = await master.get("/api/v1/namespaces/default/pods/two/log",
                            params={"container": "b"})
    assert resp.status == 200
    assert await resp.text() == "simulated container b (attempt 0) started\n"
    resp = await master.get("/api/v1/namespaces/default/pods/one/log",
                            params={"previous": "true"})
    body = await resp.json()
    assert (resp.status, body["reason"]) == (400, "BadRequest"), body
    assert body["message"] == 'previous terminated container "c" of pod "one" not found'


async def test_the_agent_is_reached_over_tls_pinned_by_the_fingerprint_its_node_publishes(
        ) -> None:
    """`rk agent` serves its API over TLS with a certificate made for the run, whose
    fingerprint its Node carries: the master pins it, and refuses any other."""
    from raftkube.agent import node as agent_node

    runtime = simulated.SimulatedRuntime(pod_cidr="10.244.1.0/24", host_ip="127.0.0.1",
                                         clock=lambda: 1000.0)
    one = pod("one", "c")
    await runtime.run_sandbox(one)
    await runtime.start_container(one, one["spec"]["containers"][0], attempt=0)
    context, fingerprint = agent_cli.serving_tls("n1", "127.0.0.1")
    agent = tu.TestServer(server.AgentServer(
        [server.Served("n1", "node-secret", runtime, lambda: [one])]).app(), scheme="https")
    await agent.start_server(ssl=context)

    def node(published: str) -> Obj:
        return {"metadata": {"name": "n1", "annotations": {
                    agent_node.AGENT_CERT_ANNOTATION: published}},
                "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                           "daemonEndpoints": {"kubeletEndpoint": {"Port": agent.port}}}}

    objects = FakeObjects({("pods", "one"): one, ("nodes", "n1"): node(fingerprint)})
    app = web.Application(middlewares=[admin])
    podproxy.PodProxy(objects, auth.Tokens(admin="t", nodes={"node-secret": "n1"})).routes(
        app)  # type: ignore[arg-type]
    client = tu.TestClient(tu.TestServer(app))
    await client.start_server()
    try:
        assert podproxy.agent_endpoint(node(fingerprint)).startswith("https://")
        resp = await client.get("/api/v1/namespaces/default/pods/one/log")
        assert resp.status == 200, await resp.text()
        # Another certificate's fingerprint: the agent is not the one the Node names.
        objects.objs[("nodes", "n1")] = node("00" * 32)
        resp = await client.get("/api/v1/namespaces/default/pods/one/log")
        assert resp.status >= 500 and "fingerprint" in (await resp.text()).lower()
    finally:
        await client.close()
        await agent.close()
