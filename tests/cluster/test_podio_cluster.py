"""Logs, exec and usage through any master, relayed to the pod's agent: `rk logs`,
`rk exec` (Kubernetes' WebSocket channels) and `rk top`, on real masters with simulated
agents (the Docker tier shows them on real containers). Bad requests name their field
and reach no agent; node tokens are refused."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from raftkube.api import channels, kinds
from raftkube.cli import local
from raftkube.client import rest, transport
from raftkube.client.errors import ApiError
from tests.cluster.harness import Cluster, rest_client, rk, started, wait_for

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "podio", agents=1, runtime="simulated")


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(cluster) as client:
        yield client


async def running(api: rest.RestClient, name: str, containers: list[str]) -> Obj:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": "n1", "containers": [
               {"name": c, "image": "busybox:1.36"} for c in containers]}}
    await api.create(kinds.POD, "default", pod)

    async def up() -> Obj | None:
        p = await api.get(kinds.POD, "default", name)
        return p if (p.get("status") or {}).get("phase") == "Running" else None

    found: Obj = await wait_for(up, timeout=30, what=f"pod {name} Running")
    return found


async def test_logs_exec_and_top_through_every_master(cluster: Cluster,
                                                       api: rest.RestClient) -> None:
    await running(api, "one", ["c"])
    out = rk(cluster, "logs", "one")
    assert out.returncode == 0, out.stderr
    assert "simulated container c (attempt 0) started" in out.stdout
    stamped = rk(cluster, "logs", "pod/one", "--timestamps", "--tail", "1")
    assert stamped.returncode == 0, stamped.stderr
    assert stamped.stdout.count("\n") == 1 and stamped.stdout[:4].isdigit()

    echo = rk(cluster, "exec", "one", "--", "echo", "hello", "there")
    assert (echo.returncode, echo.stdout) == (0, "hello there\n"), echo.stderr
    assert rk(cluster, "exec", "one", "--", "sh", "-c", "exit 3").returncode == 3
    cat = rk(cluster, "exec", "-i", "one", "--", "cat", stdin="piped in\n")
    assert (cat.returncode, cat.stdout) == (0, "piped in\n"), cat.stderr

    # Each master relays, not only the one a client happens to reach first.
    for url in cluster.url.values():
        async with transport.Transport([url], cluster.token, ca=cluster.ca) as tp:
            chunks = [c async for c in rest.RestClient(tp).logs("default", "one")]
            assert b"started" in b"".join(chunks)

    top = rk(cluster, "top", "pods")
    assert top.returncode == 0, top.stderr
    assert top.stdout.splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert any(line.split()[:1] == ["one"] and line.split()[2] == "4Mi"
               for line in top.stdout.splitlines()[1:]), top.stdout
    nodes = rk(cluster, "top", "nodes")
    assert nodes.returncode == 0 and "n1" in nodes.stdout, nodes.stderr


async def test_a_workload_stands_for_one_of_its_pods(cluster: Cluster,
                                                     api: rest.RestClient) -> None:
    """`rk logs deploy/NAME` and `rk exec svc/NAME`, as kubectl: one of the pods, named."""
    labels = {"app": "relayed"}
    await api.create(kinds.known("apps/v1", "Deployment"), "default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "relayed"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "c", "image": "busybox:1.36"}]}}}})
    await api.create(kinds.known("v1", "Service"), "default", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "relayed"},
        "spec": {"selector": labels, "ports": [{"port": 80}]}})

    async def both_running() -> bool:
        pods, _ = await api.list_all(kinds.POD, "default", label_selector="app=relayed")
        return len(pods) == 2 and all((p.get("status") or {}).get("phase") == "Running"
                                      for p in pods)

    await wait_for(both_running, timeout=30, what="the Deployment's pods Running")
    out = rk(cluster, "logs", "deploy/relayed")
    assert out.returncode == 0, out.stderr
    assert "simulated container c (attempt 0) started" in out.stdout
    assert "Found 2 pods, using pod/relayed-" in out.stderr
    echo = rk(cluster, "exec", "svc/relayed", "--", "echo", "hi")
    assert (echo.returncode, echo.stdout) == (0, "hi\n"), echo.stderr
    gone = rk(cluster, "logs", "deploy/nothing")
    assert gone.returncode == 1
    assert gone.stderr.startswith('Error from server (NotFound): deployments.apps "nothing"'), \
        gone.stderr


async def test_the_v4_protocol_and_the_exit_status(cluster: Cluster,
                                                   api: rest.RestClient) -> None:
    """kubectl older than 1.30 speaks v4 only: the same channels, no close message."""
    await running(api, "four", ["c"])
    url = next(iter(cluster.url.values()))
    async with cluster.http() as http:
        async with http.ws_connect(
                f"{url}/api/v1/namespaces/default/pods/four/exec",
                params=[("command", "false"), ("stdout", "true")],
                protocols=(channels.V4,)) as ws:
            assert ws.protocol == channels.V4
            msgs = [m.data async for m in ws if m.type == aiohttp.WSMsgType.BINARY]
    errors = [channels.parse(m)[1] for m in msgs if m[0] == channels.ERROR]
    assert len(errors) == 1 and channels.exit_code(errors[0])[0] == 1


async def test_bad_requests_name_the_field_and_node_tokens_are_refused(
        cluster: Cluster, api: rest.RestClient) -> None:
    await running(api, "two", ["a", "b"])
    with pytest.raises(ApiError) as e:
        [c async for c in api.logs("default", "two")]
    assert e.value.code == 400 and "choose one of: [a b]" in str(e.value)
    for params, field in (({"tailLines": "-1"}, "tailLines"), ({"limitBytes": "0"},
                          "limitBytes"), ({"follow": "maybe"}, "follow"),
                          ({"sinceTime": "yesterday"}, "sinceTime")):
        answer = await api.transport.request(
            "GET", "/api/v1/namespaces/default/pods/two/log",
            query={"container": "a", **params}, ours=rest.is_status)
        assert answer.status == 400 and field in answer.json()["message"], answer.json()
    bad = rk(cluster, "logs", "two", "-c", "nope")
    assert bad.returncode == 1 and "container nope is not valid for pod two" in bad.stderr
    missing = rk(cluster, "logs", "ghost")
    assert missing.returncode == 1 and 'pods "ghost" not found' in missing.stderr
    unbound = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere"},
               "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}],
                        "nodeSelector": {"no": "such-node"}}}
    await api.create(kinds.POD, "default", unbound)
    pending = rk(cluster, "logs", "nowhere")
    assert pending.returncode == 1 and "waiting to start" in pending.stderr

    node_token = local.read_node_tokens(cluster.state_dir)["n1"]
    async with transport.Transport(list(cluster.url.values()), node_token, ca=cluster.ca) as tp:
        as_node = rest.RestClient(tp)
        with pytest.raises(ApiError) as e:
            [c async for c in as_node.logs("default", "two", container="a")]
        assert e.value.code == 403
