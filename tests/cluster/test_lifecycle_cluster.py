"""Node loss and return, and cascading deletion, on real masters and simulated nodes
(`rk up --agents 3`, with the node lifecycle flags tuned down so that a test takes
seconds): a dead node is marked Unknown, its pods leave its Services at once and are
evicted and replaced elsewhere, and its taints go when it comes back, with no other node
ever leaving Ready; a leader cut off from its majority marks and evicts nothing; the
garbage collector completes foreground, background and orphan deletions, across a
leader's SIGKILL, and the namespace controller empties a namespace whose pods run on
nodes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from raftkube.api import conditions, kinds, taints
from raftkube.cli import local
from raftkube.client import rest
from raftkube.client.errors import ApiError
from tests.cluster.harness import Cluster, rest_client, started, wait_for
from tests.cluster.replicas import active, replicaset_running

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
NS = "default"
GRACE, TOLERATION = 4, 3
FLAGS = ["--node-monitor-grace-period", str(GRACE),
         "--default-unreachable-toleration-seconds", str(TOLERATION),
         "--node-eviction-rate", "1"]
NODES = ("n1", "n2", "n3")


@pytest.fixture
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "lifecycle", agents=len(NODES), master_args=FLAGS)


@pytest.fixture
async def api(nodes: Cluster) -> AsyncIterator[rest.RestClient]:
    async with nodes, rest_client(nodes, wait=20) as client:
        yield client


async def ready_of(api: rest.RestClient) -> dict[str, Obj]:
    items, _ = await api.list_all(kinds.NODE)
    return {n["metadata"]["name"]: conditions.get(n, "Ready") or {} for n in items}


async def events(api: rest.RestClient, reason: str) -> list[Obj]:
    items, _ = await api.list_all(kinds.EVENT)
    return [e for e in items if e.get("reason") == reason]


def service() -> Obj:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"}]}}


async def endpoints(api: rest.RestClient) -> dict[str, bool]:
    slices, _ = await api.list_all(kinds.ENDPOINTSLICE, NS,
                                   label_selector="kubernetes.io/service-name=web")
    return {e["targetRef"]["name"]: e["conditions"]["ready"]
            for s in slices for e in s["endpoints"]}


async def test_a_dead_node_is_marked_its_pods_replaced_elsewhere_and_it_comes_back(
        nodes: Cluster, api: rest.RestClient) -> None:
    await api.create(kinds.SERVICE, NS, service())
    async with replicaset_running(api, "web", 6) as web:
        async def all_running() -> bool:
            return len(web.active()) == 6 and len(web.ready()) == 6

        await wait_for(all_running, timeout=30, what="6 pods Running and Ready")
        await wait_for(lambda: _all_ready_endpoints(api, 6), timeout=15,
                       what="6 ready endpoints")
        on: dict[str, list[str]] = {}
        for p in web.active():
            on.setdefault(p["spec"]["nodeName"], []).append(p["metadata"]["name"])
        victim = max(on, key=lambda n: len(on[n]))
        doomed = set(on[victim])
        before = await ready_of(api)
        nodes.kill(victim)

        async def unknown() -> bool:
            ready = (await ready_of(api))[victim]
            return ready.get("status") == "Unknown" and ready.get("reason") == "NodeStatusUnknown"

        await wait_for(unknown, timeout=GRACE + 15, what=f"{victim} Ready=Unknown")

        async def out_of_service() -> bool:  # before their eviction, out of the Service
            ready = await endpoints(api)
            return not any(ready.get(name, False) for name in doomed)

        await wait_for(out_of_service, timeout=10, what="the dead node's endpoints not ready")

        async def evicted() -> bool:
            marked = {e["involvedObject"]["name"] for e in await events(
                api, "TaintManagerEviction") if e["message"].startswith("Marking")}
            return doomed <= marked

        await wait_for(evicted, timeout=TOLERATION + 15, what="the dead node's pods evicted")
        node = await api.get(kinds.NODE, "", victim)
        assert taints.has(node, taints.UNREACHABLE, "NoExecute")
        assert taints.has(node, taints.UNREACHABLE, "NoSchedule")

        async def replaced() -> bool:  # by the ReplicaSet controller
            pods = web.active()
            return len(pods) == 6 and all(conditions.is_true(p, "Ready") and
                                          p["spec"].get("nodeName") != victim for p in pods)

        await wait_for(replaced, timeout=30, what="6 pods Ready on the other nodes")

        async def served_elsewhere() -> bool:
            ready = await endpoints(api)
            return sorted(ready.values()).count(True) == 6 and \
                not any(ready.get(name) for name in doomed)

        await wait_for(served_elsewhere, timeout=15, what="6 ready endpoints again")
        slices, _ = await api.list_all(kinds.ENDPOINTSLICE, NS)
        going = [e["conditions"] for s in slices for e in s["endpoints"]
                 if e["targetRef"]["name"] in doomed]
        assert all(c == {"ready": False, "serving": False, "terminating": True}
                   for c in going), going  # still there, terminating, as in Kubernetes
        left = [p for p in web.all() if p["metadata"]["name"] in doomed]
        assert left and all(p["metadata"].get("deletionTimestamp") for p in left), \
            "a dead node's pods stay Terminating: nobody can say they stopped"
        node_events = [e for e in await events(api, "NodeNotReady")
                       if e["involvedObject"]["kind"] == "Node"]
        assert [e["involvedObject"]["name"] for e in node_events] == [victim]

        await asyncio.get_running_loop().run_in_executor(None, lambda: local.up(
            state_dir=nodes.state_dir, masters=3, agents=len(NODES)))

        async def back() -> bool:
            node = await api.get(kinds.NODE, "", victim)
            return conditions.is_true(node, "Ready") and not any(
                t.get("key") in (taints.UNREACHABLE, taints.NOT_READY)
                for t in node["spec"].get("taints") or [])

        await wait_for(back, timeout=30, what=f"{victim} Ready and untainted")

        async def finished() -> bool:
            items, _ = await api.list_all(kinds.POD, NS)
            return not doomed & {p["metadata"]["name"] for p in items}

        await wait_for(finished, timeout=30, what="its agent to finish the evicted pods")
        after = await ready_of(api)
        for name in NODES:  # no other node ever left Ready: no flapping
            if name != victim:
                assert after[name]["lastTransitionTime"] == before[name]["lastTransitionTime"]
                assert after[name]["status"] == "True"


async def _all_ready_endpoints(api: rest.RestClient, n: int) -> bool:
    ready = await endpoints(api)
    return len(ready) == n and all(ready.values())


@pytest.fixture
def slow_elections(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """As `nodes`, with elections slow enough (3-3.5 s, so a leader cut off keeps its
    role for 14 s) that a leader outlives a loss of its majority longer than a grace
    period and a toleration."""
    yield from started(tmp_path_factory, "slow", agents=len(NODES), master_args=FLAGS + [
        "--election-timeout", "3-3.5", "--heartbeat", "0.1"])


async def test_a_leader_cut_off_from_its_majority_marks_and_evicts_nothing(
        slow_elections: Cluster) -> None:
    nodes = slow_elections
    async with nodes, rest_client(nodes, wait=30) as api, \
            replicaset_running(api, "web", 3) as web:
        await wait_for(lambda: _running(web, 3), timeout=30, what="3 pods Running")
        names = {p["metadata"]["name"] for p in web.active()}
        before = await ready_of(api)
        leader = await nodes.leader()
        followers = [m for m in nodes.names if m != leader]
        pids = [nodes.pid(m) for m in followers]
        assert all(pids)
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)  # type: ignore[arg-type]
        try:
            # Longer than a grace period and a toleration: every lease "lapses" for the
            # leader, which can neither read nor write through Raft meanwhile.
            await asyncio.sleep(GRACE + TOLERATION + 2.5)
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)  # type: ignore[arg-type]
        assert await nodes.leader(timeout=30) == leader  # it kept its role throughout
        await asyncio.sleep(GRACE + TOLERATION + 4)  # time for a wrong decision to show
        after = await ready_of(api)
        assert {n: r["lastTransitionTime"] for n, r in after.items()} == \
            {n: r["lastTransitionTime"] for n, r in before.items()}, "a node was marked"
        assert await events(api, "TaintManagerEviction") == []
        items, _ = await api.list_all(kinds.POD, NS)
        kept = {p["metadata"]["name"] for p in items if active(p)}
        assert names <= kept, "a pod was evicted"


async def _running(web: Any, n: int) -> bool:
    pods = web.active()
    return len(pods) == n and all(p["status"].get("phase") == "Running" for p in pods)


def owned_pod(name: str, owner: Obj, *, block: bool = True) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": name, "ownerReferences": [{
            "apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": block}]},
        "spec": {"terminationGracePeriodSeconds": 2,
                 "containers": [{"name": "c", "image": "busybox:1.36"}]}}


async def deletions(api: rest.RestClient, kind: kinds.Kind, since: str) -> dict[str, int]:
    """name -> the revision it was deleted at, from a watch replaying history."""
    out: dict[str, int] = {}
    async for event in api.watch(kind, NS, resource_version=since, timeout_seconds=1):
        if event.type == "DELETED":  # the history comes first, then the stream ends
            out[event.object["metadata"]["name"]] = int(event.resource_version)
    return out


async def gone(api: rest.RestClient, kind: kinds.Kind, name: str, ns: str = NS) -> bool:
    try:
        await api.get(kind, ns if kind.namespaced else "", name)
    except ApiError as e:
        if e.code == 404:
            return True
        raise
    return False


async def test_cascading_deletion_runs_through_the_garbage_collector(
        nodes: Cluster, api: rest.RestClient) -> None:
    def cm(name: str) -> Obj:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}

    owners = {n: await api.create(kinds.CONFIGMAP, NS, cm(n)) for n in ("fg", "bg", "or")}
    for n, owner in owners.items():
        for i in range(2):
            await api.create(kinds.POD, NS, owned_pod(f"{n}-{i}", owner))

    async def running() -> bool:
        items, _ = await api.list_all(kinds.POD, NS)
        return sum(p["status"].get("phase") == "Running" for p in items) == 6

    await wait_for(running, timeout=30, what="6 owned pods Running on the nodes")
    _, since = await api.list_all(kinds.CONFIGMAP, NS)
    marked = await api.delete(kinds.CONFIGMAP, NS, "fg", propagation="Foreground")
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    await api.delete(kinds.CONFIGMAP, NS, "bg", propagation="Background")
    assert await gone(api, kinds.CONFIGMAP, "bg")  # the owner goes at once
    await api.delete(kinds.CONFIGMAP, NS, "or", propagation="Orphan")
    await wait_for(lambda: gone(api, kinds.CONFIGMAP, "fg"), timeout=20,
                   what="the foreground owner to go")
    # It went after both of its pods (which their nodes stopped first), by revision.
    deleted = {**await deletions(api, kinds.POD, since), **await deletions(
        api, kinds.CONFIGMAP, since)}
    assert deleted["fg"] > max(deleted["fg-0"], deleted["fg-1"]), deleted
    assert deleted["bg"] < min(deleted.get("bg-0", 1 << 62), deleted.get("bg-1", 1 << 62))

    async def background_done() -> bool:
        return all([await gone(api, kinds.POD, f"bg-{i}") for i in range(2)])

    await wait_for(background_done, timeout=20, what="the background dependents collected")
    await wait_for(lambda: gone(api, kinds.CONFIGMAP, "or"), timeout=20,
                   what="the orphaning owner to go")
    for i in range(2):
        kept = await api.get(kinds.POD, NS, f"or-{i}")
        assert not kept["metadata"].get("ownerReferences")
        assert not kept["metadata"].get("deletionTimestamp")


async def test_a_new_leader_finishes_a_foreground_deletion_and_a_namespace(
        nodes: Cluster, api: rest.RestClient) -> None:
    await api.create(kinds.NAMESPACE, "", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": "team"}})
    owner = await api.create(kinds.CONFIGMAP, "team", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    for i in range(3):
        await api.create(kinds.POD, "team", owned_pod(f"p{i}", owner))
    svc = service()
    await api.create(kinds.SERVICE, "team", svc)

    async def running() -> bool:
        items, _ = await api.list_all(kinds.POD, "team")
        return [p["status"].get("phase") for p in items] == ["Running"] * 3

    await wait_for(running, timeout=30, what="3 pods Running in team")
    await api.delete(kinds.CONFIGMAP, "team", "owner", propagation="Foreground")
    await nodes.kill_async(await nodes.leader())
    await wait_for(lambda: gone(api, kinds.CONFIGMAP, "owner", "team"), timeout=40,
                   what="the new leader's collector to finish the foreground deletion")
    for i in range(3):
        assert await gone(api, kinds.POD, f"p{i}", "team")
    await api.delete(kinds.NAMESPACE, "", "team")
    with pytest.raises(ApiError) as refused:
        await api.create(kinds.CONFIGMAP, "team", {"apiVersion": "v1", "kind": "ConfigMap",
                                                   "metadata": {"name": "late"}})
    assert refused.value.code == 403
    await wait_for(lambda: gone(api, kinds.NAMESPACE, "team"), timeout=40,
                   what="the namespace controller to empty and finalize team")
    for kind in (kinds.SERVICE, kinds.ENDPOINTSLICE, kinds.POD, kinds.CONFIGMAP):
        items, _ = await api.list_all(kind, "team")
        assert items == [], kind
