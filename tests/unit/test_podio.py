"""Logs, exec and usage: the channel protocol, the masters' checks (pure), and the
agent's API over a simulated runtime (aiohttp's test server)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import WSMsgType, test_utils

from raftkube.agent import runtime as rt
from raftkube.agent import server, simulated
from raftkube.api import channels
from raftkube.apiserver import podproxy
from raftkube.apiserver import status as stt

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def test_channel_frames_and_exit_statuses() -> None:
    assert channels.parse(channels.frame(channels.STDOUT, b"hi")) == (1, b"hi")
    assert channels.close_frame(channels.STDIN) == b"\xff\x00"
    with pytest.raises(ValueError):
        channels.parse(b"")
    assert channels.pick(["v4.channel.k8s.io", "v5.channel.k8s.io"]) == channels.V5
    assert channels.pick(["channel.k8s.io"]) is None
    for code in (0, 1, 137):
        data = json.dumps(channels.exit_status(code)).encode()
        assert channels.exit_code(data) == (code, "" if code == 0 else
                                            f"command terminated with non-zero exit code: "
                                            f"{code}")
    assert channels.exit_code(json.dumps(channels.failure("no such pod")).encode()) == \
        (126, "no such pod")
    assert channels.exit_code(b"not json")[0] == 126


def pod(*names: str, inits: tuple[str, ...] = (), default: str = "") -> Obj:
    meta: Obj = {"name": "p", "namespace": "default", "uid": "u1"}
    if default:
        meta["annotations"] = {podproxy.DEFAULT_CONTAINER: default}
    return {"metadata": meta, "spec": {
        "nodeName": "n1", "containers": [{"name": n, "image": "i"} for n in names],
        "initContainers": [{"name": n, "image": "i"} for n in inits]}}


def test_the_container_a_request_means() -> None:
    assert podproxy.pick_container(pod("a"), "") == "a"
    assert podproxy.pick_container(pod("a", "b", default="b"), "") == "b"
    assert podproxy.pick_container(pod("a", inits=("i",)), "i") == "i"
    with pytest.raises(stt.ApiError, match=r"choose one of: \[a b\] or one of the init "
                                           r"containers: \[i\]"):
        podproxy.pick_container(pod("a", "b", inits=("i",)), "")
    with pytest.raises(stt.ApiError, match="container z is not valid for pod p"):
        podproxy.pick_container(pod("a"), "z")


@pytest.mark.parametrize(("query", "field"), [
    ({"tailLines": "-1"}, "tailLines"), ({"tailLines": "1e3"}, "tailLines"),
    ({"tailLines": "９"}, "tailLines"), ({"limitBytes": "0"}, "limitBytes"),
    ({"sinceSeconds": "0"}, "sinceSeconds"), ({"follow": "yes"}, "follow"),
    ({"previous": "2"}, "previous"), ({"sinceTime": "nope"}, "sinceTime"),
    ({"sinceTime": "2026-01-01T00:00:00Z", "sinceSeconds": "5"}, "sinceTime"),
])
def test_a_bad_log_query_names_its_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(stt.ApiError) as e:
        podproxy.log_query(query, 1_800_000_000.0)
    assert e.value.code == 400 and e.value.message.startswith(field + ":")


def test_a_good_log_query_is_passed_on() -> None:
    assert podproxy.log_query({"follow": "true", "tailLines": "10", "previous": "false"},
                              0.0) == {"follow": "true", "tailLines": "10"}
    assert podproxy.log_query({"sinceTime": "1970-01-01T00:01:40Z"}, 160.0) == \
        {"sinceSeconds": "61"}


def test_the_agent_endpoint_a_node_advertises() -> None:
    node = {"metadata": {"name": "n1"}, "status": {
        "addresses": [{"type": "Hostname", "address": "n1"},
                      {"type": "InternalIP", "address": "10.0.0.7"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}
    assert podproxy.agent_endpoint(node) == "https://10.0.0.7:10250"
    # Without the fingerprint of its agent's certificate, nothing is sent to it.
    with pytest.raises(stt.ApiError, match="publishes no certificate for its agent"):
        podproxy.agent_tls(node)
    node["metadata"]["annotations"] = {podproxy.AGENT_CERT_ANNOTATION: "zz"}
    with pytest.raises(stt.ApiError, match="is not a SHA-256 fingerprint") as bad:
        podproxy.agent_tls(node)
    assert bad.value.code == 502  # the node's fault, not the caller's
    node["status"]["daemonEndpoints"] = {}
    with pytest.raises(stt.ApiError, match="advertises no agent endpoint"):
        podproxy.agent_endpoint(node)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def agent() -> AsyncIterator[tuple[test_utils.TestClient[Any, Any],
                                         simulated.SimulatedRuntime, Clock]]:
    clock = Clock()
    runtime = simulated.SimulatedRuntime(pod_cidr="10.244.1.0/24", host_ip="10.0.0.7",
                                         clock=clock)
    p = pod("c")
    await runtime.run_sandbox(p)
    await runtime.start_container(p, p["spec"]["containers"][0], attempt=0)
    srv = server.AgentServer([server.Served("n1", "secret", runtime, lambda: [p])],
                             clock=clock)
    client = test_utils.TestClient(test_utils.TestServer(srv.app()))
    await client.start_server()
    try:
        yield client, runtime, clock
    finally:
        await client.close()


AUTH = {"Authorization": "Bearer secret"}


async def test_the_agent_wants_the_node_token(agent: Any) -> None:
    client, _, _ = agent
    assert (await client.get("/healthz")).status == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = await client.get("/nodes/n1/containerLogs/default/p/c", headers=headers)
        assert resp.status == 401
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/nodes/n2/stats/summary", headers=AUTH)).status == 401


async def test_the_agent_serves_logs_exec_usage_and_metrics(agent: Any) -> None:
    client, runtime, clock = agent
    resp = await client.get("/nodes/n1/containerLogs/default/p/c", headers=AUTH)
    assert resp.status == 200
    assert await resp.text() == "simulated container c (attempt 0) started\n"
    resp = await client.get("/nodes/n1/containerLogs/default/p/c?limitBytes=9", headers=AUTH)
    assert await resp.text() == "simulated"
    resp = await client.get("/nodes/n1/containerLogs/default/p/c?previous=true", headers=AUTH)
    assert resp.status == 404
    assert await resp.text() == 'previous terminated container "c" of pod "p" not found\n'
    assert (await client.get("/nodes/n1/containerLogs/default/p/zz",
                             headers=AUTH)).status == 404

    async with client.ws_connect("/nodes/n1/exec/default/p/c?command=cat&stdin=true",
                                 headers=AUTH, protocols=(channels.V5,)) as ws:
        await ws.send_bytes(channels.frame(channels.STDIN, b"abc"))
        await ws.send_bytes(channels.close_frame(channels.STDIN))
        got = [channels.parse(m.data) async for m in ws if m.type == WSMsgType.BINARY]
    assert got[0] == (channels.STDOUT, b"abc")
    assert got[-1][0] == channels.ERROR and channels.exit_code(got[-1][1]) == (0, "")

    clock.now += 10
    resp = await client.get("/nodes/n1/stats/summary", headers=AUTH)
    summary = await resp.json()
    assert summary["node"]["nodeName"] == "n1"
    (only,) = summary["pods"]
    assert only["podRef"] == {"name": "p", "namespace": "default", "uid": "u1"}
    assert only["memory"]["workingSetBytes"] == 4 * 1024 * 1024

    text = await (await client.get("/metrics", headers=AUTH)).text()
    assert 'raftkube_agent_pods{node="n1"} 1.0' in text
    assert 'raftkube_agent_execs_total{node="n1"} 1.0' in text
    assert 'raftkube_agent_containers{node="n1",state="running"} 1.0' in text
    del runtime


async def test_simulated_logs_follow_until_the_container_exits() -> None:
    clock = Clock()
    runtime = simulated.SimulatedRuntime(pod_cidr="10.244.1.0/24", host_ip="10.0.0.7",
                                         clock=clock)
    p = pod("c")
    await runtime.run_sandbox(p)
    await runtime.start_container(p, p["spec"]["containers"][0], attempt=0)
    chunks = runtime.logs("u1", "c", rt.LogOptions(follow=True))
    assert (await anext(chunks)).endswith(b"started\n")
    await runtime.stop_container("u1", "c", grace=0)
    assert (await anext(chunks)) == b"simulated container c exited with code 0\n"
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)


async def test_a_client_that_leaves_ends_its_exec_session(agent: Any) -> None:
    """No close message, just a closed socket (a Ctrl-C, a master's relay cancelled):
    the command's input is closed and its session let go."""
    client, runtime, _ = agent
    sessions: list[simulated.SimulatedExec] = []
    real = runtime.exec

    async def recording(*args: Any, **kwargs: Any) -> rt.ExecSession:
        session = await real(*args, **kwargs)
        assert isinstance(session, simulated.SimulatedExec)
        sessions.append(session)
        return session

    runtime.exec = recording
    ws = await client.ws_connect("/nodes/n1/exec/default/p/c?command=cat&stdin=true",
                                 headers=AUTH, protocols=(channels.V5,))
    await ws.send_bytes(channels.frame(channels.STDIN, b"abc"))
    msg = await ws.receive()
    assert channels.parse(msg.data) == (channels.STDOUT, b"abc")
    await ws.close()
    for _ in range(100):
        if sessions and sessions[0]._ended.is_set():
            break
        await asyncio.sleep(0.02)
    assert sessions and sessions[0]._ended.is_set()
