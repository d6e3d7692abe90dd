"""Deployments and ReplicaSets on real masters and simulated nodes (`rk up --agents 2`):
scaling, a rolling update checked at every revision, a leader SIGKILLed mid-rollout,
rollback, pause and resume, a missed progress deadline. A pod is ready its readiness
probe's initialDelaySeconds after it starts (the simulated runtime's every probe passes),
which is how a test makes a rollout slow, or stuck."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from raftkube.api import kinds, rollout
from raftkube.client import informer as inf
from raftkube.client import rest
from tests.cluster.harness import Cluster, rest_client, started, wait_for
from tests.cluster.podwatch import Pods, call

pytestmark = pytest.mark.cluster

NS = "default"
Obj = dict[str, Any]


def container(image: str) -> Obj:
    """`web:stuck` is never ready (its probe waits an hour); `web:slow` takes 1 s."""
    delay = {"web:stuck": 3600, "web:slow": 1}.get(image.split("-")[0], 0)
    out: Obj = {"name": "web", "image": image}
    if delay:
        out["readinessProbe"] = {"exec": {"command": ["true"]},
                                 "initialDelaySeconds": delay}
    return out


def web(replicas: int, image: str, *, surge: Any = 1, unavailable: Any = 0,
        deadline: int = 600) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "progressDeadlineSeconds": deadline,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {
                         "maxSurge": surge, "maxUnavailable": unavailable}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [container(image)]}}}}


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and 2 simulated nodes (`rk up --agents 2`); all stopped afterwards."""
    yield from started(tmp_path_factory, "cluster", agents=2)


@contextlib.asynccontextmanager
async def nodes(c: Cluster) -> AsyncIterator[tuple[rest.RestClient, inf.Informer]]:
    """A client of every master and an informer of the pods."""
    async with rest_client(c, wait=30.0, timeout=10.0) as client:
        pods = inf.Informer(client, kinds.POD)
        watching = asyncio.ensure_future(pods.run())
        try:
            await pods.wait_synced(30)
            yield client, pods
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)


async def rolled_out(client: rest.RestClient, image: str, replicas: int) -> Obj | None:
    """The Deployment once every pod is of `image`, ready, and nothing else is left."""
    d = await call(lambda: client.get(kinds.DEPLOYMENT, NS, "web"))
    status = d.get("status") or {}
    if not (status.get("observedGeneration", 0) >= d["metadata"]["generation"]
            and status.get("updatedReplicas") == replicas == status.get("replicas")
            and status.get("availableReplicas") == replicas):
        return None
    pods, _ = await call(lambda: client.list_all(kinds.POD, NS, label_selector="app=web"))
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    images = {p["spec"]["containers"][0]["image"] for p in live}
    return d if len(live) == replicas and images == {image} else None


async def patch_deployment(client: rest.RestClient, patch: Obj) -> None:
    await call(lambda: client.patch(kinds.DEPLOYMENT, NS, "web", patch))


def image(name: str) -> Obj:
    return {"spec": {"template": {"spec": {"containers": [container(name)]}}}}


async def progressing(client: rest.RestClient, reason: str) -> Obj | None:
    """The Deployment once it has seen its newest spec and Progressing says `reason`."""
    d = await call(lambda: client.get(kinds.DEPLOYMENT, NS, "web"))
    status = d.get("status") or {}
    conds = {c["type"]: c for c in status.get("conditions") or []}
    if status.get("observedGeneration", 0) < d["metadata"]["generation"]:
        return None
    return d if conds.get("Progressing", {}).get("reason") == reason else None


async def replicasets(client: rest.RestClient) -> dict[int, Obj]:
    items, _ = await call(lambda: client.list_all(kinds.REPLICASET, NS))
    return {rollout.revision_of(rs): rs for rs in items}


async def messages(client: rest.RestClient) -> list[str]:
    items, _ = await call(lambda: client.list_all(kinds.EVENT, NS))
    return [e.get("message", "") for e in items]


async def test_a_deployment_scales_up_and_down(cluster: Cluster) -> None:
    async with cluster as c, nodes(c) as (client, _):
        await c.leader()
        await call(lambda: client.create(kinds.DEPLOYMENT, NS, web(2, "web:1")))
        await wait_for(lambda: rolled_out(client, "web:1", 2), timeout=60, what="2 pods")
        for replicas in (5, 1):
            await patch_deployment(client, {"spec": {"replicas": replicas}})
            await wait_for(lambda n=replicas: rolled_out(client, "web:1", n), timeout=60,
                           what=f"{replicas} pods")
        (rs,) = (await replicasets(client)).values()
        name = rs["metadata"]["name"]
        assert name.startswith("web-") and rs["spec"]["replicas"] == 1
        assert rs["status"]["readyReplicas"] == 1
        said = await wait_for(lambda: _said(client, [
            f"Scaled up replica set {name} to 2 from 0",
            f"Scaled up replica set {name} to 5 from 2",
            f"Scaled down replica set {name} to 1 from 5"]), timeout=10, what="events")
        assert any(m.startswith(f"Created pod: {name}-") for m in said)
        assert sum(m.startswith(f"Deleted pod: {name}-") for m in said) == 4


async def _said(client: rest.RestClient, wanted: list[str]) -> list[str] | None:
    said = await messages(client)
    return said if all(w in said for w in wanted) else None


async def test_a_rolling_update_stays_within_surge_and_unavailability(
        cluster: Cluster) -> None:
    async with cluster as c, nodes(c) as (client, informer):
        await c.leader()
        pods = Pods(app="web", most=8, least=5)  # 6 replicas, maxSurge 2, maxUnavailable 1
        pods.attach(informer)
        await call(lambda: client.create(kinds.DEPLOYMENT, NS,
                                         web(6, "web:slow-1", surge=2, unavailable=1)))
        await wait_for(lambda: rolled_out(client, "web:slow-1", 6), timeout=60, what="v1")
        pods.armed = True
        await patch_deployment(client, image("web:slow-2"))
        d = await wait_for(lambda: rolled_out(client, "web:slow-2", 6), timeout=90, what="v2")
        assert pods.broken == []
        assert pods.peak > 6, "the rollout never surged: the bound was not exercised"
        assert pods.low is not None and pods.low < 6, "never below 6 ready: nothing checked"
        assert d["metadata"]["annotations"][rollout.REVISION] == "2"
        history = await replicasets(client)
        assert (history[1]["spec"]["replicas"], history[2]["spec"]["replicas"]) == (0, 6)
        conds = {x["type"]: x for x in d["status"]["conditions"]}
        assert (conds["Progressing"]["reason"], conds["Available"]["status"]) == \
            ("NewReplicaSetAvailable", "True")


async def test_a_rollout_survives_a_leader_sigkill(cluster: Cluster) -> None:
    async with cluster as c, nodes(c) as (client, informer):
        await c.leader()
        pods = Pods(app="web", most=7, least=6)  # 6 replicas, maxSurge 1, maxUnavailable 0
        pods.attach(informer)
        await call(lambda: client.create(kinds.DEPLOYMENT, NS, web(6, "web:slow-1")))
        await wait_for(lambda: rolled_out(client, "web:slow-1", 6), timeout=60, what="v1")
        pods.armed = True
        await patch_deployment(client, image("web:slow-2"))

        async def midway() -> Obj | None:
            d = await call(lambda: client.get(kinds.DEPLOYMENT, NS, "web"))
            updated = (d.get("status") or {}).get("updatedReplicas", 0)
            return d if 1 <= updated < 5 else None

        await wait_for(midway, timeout=60, what="a rollout under way")
        leader = await c.leader()
        c.kill(leader)
        # Pods take 1 s to be ready and the rollout had two or more to go: the dead
        # leader cannot have finished it.
        assert await rolled_out(client, "web:slow-2", 6) is None
        successor = await c.leader(among=[n for n in c.names if n != leader], timeout=30)
        await wait_for(lambda: rolled_out(client, "web:slow-2", 6), timeout=120,
                       what="the new leader to finish the rollout")
        assert "leader loops at work" in c.log(successor)
        assert pods.broken == []
        history = await replicasets(client)
        assert sorted(history) == [1, 2]
        assert (history[1]["spec"]["replicas"], history[2]["spec"]["replicas"]) == (0, 6)


async def test_a_rollback_returns_to_the_old_template_under_a_new_revision(
        cluster: Cluster) -> None:
    async with cluster as c, nodes(c) as (client, _):
        await c.leader()
        await call(lambda: client.create(kinds.DEPLOYMENT, NS, web(3, "web:1")))
        await wait_for(lambda: rolled_out(client, "web:1", 3), timeout=60, what="v1")
        first = (await replicasets(client))[1]
        await patch_deployment(client, image("web:2"))
        await wait_for(lambda: rolled_out(client, "web:2", 3), timeout=60, what="v2")

        d = await call(lambda: client.get(kinds.DEPLOYMENT, NS, "web"))
        undo = rollout.undo(d, list((await replicasets(client)).values()))
        assert (undo.revision, undo.message) == (1, "rolled back")
        assert undo.patch is not None
        await client.patch(kinds.DEPLOYMENT, NS, "web", undo.patch)
        d = await wait_for(lambda: rolled_out(client, "web:1", 3), timeout=60,
                           what="back to v1")
        assert d["metadata"]["annotations"][rollout.REVISION] == "3"
        history = await replicasets(client)
        assert sorted(history) == [2, 3]
        revived = history[3]
        assert revived["metadata"]["name"] == first["metadata"]["name"]  # the same one
        assert revived["metadata"]["annotations"][rollout.REVISION_HISTORY] == "1"
        assert (revived["spec"]["replicas"], history[2]["spec"]["replicas"]) == (3, 0)
        again = rollout.undo(d, list(history.values()), to_revision=3)
        assert again.patch is None


async def test_pause_resume_and_a_rollout_that_misses_its_deadline(cluster: Cluster) -> None:
    async with cluster as c, nodes(c) as (client, informer):
        await c.leader()
        pods = Pods(app="web", most=4, least=3)
        pods.attach(informer)
        await call(lambda: client.create(kinds.DEPLOYMENT, NS, web(3, "web:1", deadline=3)))
        await wait_for(lambda: rolled_out(client, "web:1", 3), timeout=60, what="v1")
        pods.armed = True
        # Paused, a new template rolls nothing out; a resize still happens.
        await patch_deployment(client, {"spec": {"paused": True}})
        await patch_deployment(client, image("web:2"))
        await patch_deployment(client, {"spec": {"replicas": 4}})
        await wait_for(lambda: progressing(client, "DeploymentPaused"), timeout=30,
                       what="Progressing to say it is paused")
        await wait_for(lambda: _available(client, 4), timeout=30, what="a resize")
        assert await _sizes(client, {1: 4})  # still the one ReplicaSet: no rollout
        pods.most, pods.least = 5, 4
        await patch_deployment(client, {"spec": {"paused": False}})
        await wait_for(lambda: rolled_out(client, "web:2", 4), timeout=60, what="v2")
        # Pods that never become ready: no progress, and after 3 s Progressing=False.
        await patch_deployment(client, image("web:stuck"))
        d = await wait_for(lambda: progressing(client, "ProgressDeadlineExceeded"),
                           timeout=30, what="the deadline to pass")
        cond = next(x for x in d["status"]["conditions"] if x["type"] == "Progressing")
        assert cond["status"] == "False"
        assert cond["message"].endswith("has timed out progressing.")
        assert d["status"]["availableReplicas"] == 4  # maxUnavailable 0: nothing lost
        undo = rollout.undo(d, list((await replicasets(client)).values()))
        assert undo.patch is not None and undo.revision == 2
        await client.patch(kinds.DEPLOYMENT, NS, "web", undo.patch)
        await wait_for(lambda: rolled_out(client, "web:2", 4), timeout=60, what="v2 again")
        assert pods.broken == []


async def _available(client: rest.RestClient, count: int) -> bool:
    d = await call(lambda: client.get(kinds.DEPLOYMENT, NS, "web"))
    status = d.get("status") or {}
    return status.get("observedGeneration", 0) >= d["metadata"]["generation"] and \
        status.get("replicas") == count == status.get("availableReplicas")


async def _sizes(client: rest.RestClient, wanted: dict[int, int]) -> bool:
    history = await replicasets(client)
    return {v: rs["spec"]["replicas"] for v, rs in history.items()} == wanted
