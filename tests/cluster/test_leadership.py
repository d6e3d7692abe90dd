"""The leader's loops (scheduler and controllers) move with Raft leadership, and a
deposed leader's loops change nothing: real masters, simulated nodes, real signals.

- Killed, the leader's loops are taken up by the new leader's, which go to work at once
  (the time from the election seen in a survivor's status to "leader loops at work" in
  the new leader's log is printed; bench/scheduler.py measures the control plane).
- Paused (SIGSTOP) past an election and resumed, the old leader's loops stop, and no
  write stamped with the old term is applied anywhere after it resumes: every member
  counts the stamped writes it applied per term (`raftkube_store_stamped_writes`), and
  the survivors' count for the old term does not move. A write stamped with the old term
  sent through the old leader itself is refused (409, StaleTerm). Meanwhile the
  Deployment the new leader scaled keeps exactly its replicas and no pod changes node.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from raftkube.api import kinds
from raftkube.client import rest, transport
from raftkube.client.errors import ApiError
from tests.cluster.harness import Cluster, rest_client, started, wait_for

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
AT_WORK = re.compile(r"^(\S+ \S+) WARNING raftkube\.controllers\.manager: leader loops at "
                     r"work for term (\d+)", re.M)


@pytest.fixture
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "leadership", agents=2)


@pytest.fixture
async def api(nodes: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(nodes) as client:
        yield client


def deployment(name: str, replicas: int) -> Obj:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}


async def running(api: rest.RestClient, app: str) -> list[Obj]:
    pods, _ = await api.list_all(kinds.POD, "default", label_selector=f"app={app}")
    return [p for p in pods if (p.get("status") or {}).get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


async def status(c: Cluster, name: str) -> dict[str, Any] | None:
    return await c.status(name)


async def stamped(c: Cluster, name: str, term: int) -> float:
    """How many writes stamped with `term` member `name` has applied."""
    assert c.session is not None
    async with c.session.get(c.url[name] + "/metrics",
                             timeout=aiohttp.ClientTimeout(total=5)) as resp:
        text = await resp.text()
    found = re.search(rf'^raftkube_store_stamped_writes_total{{term="{term}"}} (\S+)$', text,
                      re.M)
    return float(found.group(1)) if found else 0.0


def at_work(c: Cluster, name: str) -> dict[int, float]:
    """term -> when (wall clock) the member's log says its loops went to work."""
    out = {}
    for stamp, term in AT_WORK.findall(c.log(name)):
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.setdefault(int(term), when)
    return out


async def test_the_leaders_loops_move_to_the_new_leader_and_go_to_work(
        nodes: Cluster, api: rest.RestClient) -> None:
    async with nodes as c:
        leader = await c.leader()
        term = int((await status(c, leader) or {})["header"]["raft_term"])
        await wait_for(lambda: asyncio.sleep(0, term in at_work(c, leader)), timeout=20,
                       what="the leader's loops at work")
        assert not any(at_work(c, n) for n in c.names if n != leader), \
            "a follower ran the leader's loops"
        c.kill(leader)
        survivors = [n for n in c.names if n != leader]
        new = await c.leader(among=survivors, timeout=20)
        elected = time.time()
        new_term = int((await status(c, new) or {})["header"]["raft_term"])
        await wait_for(lambda: asyncio.sleep(0, new_term in at_work(c, new)), timeout=20,
                       what="the new leader's loops at work")
        print(f"\nelection seen -> loops at work: {at_work(c, new)[new_term] - elected:.2f} s")
        # At work: a new pod is scheduled by the new leader and runs.
        await api.create(kinds.POD, "default", {"metadata": {"name": "after"}, "spec": {
            "containers": [{"name": "c", "image": "busybox:1.36"}]}})

        async def runs() -> bool:
            p = await api.get(kinds.POD, "default", "after")
            return (p.get("status") or {}).get("phase") == "Running"

        await wait_for(runs, timeout=30, what="the pod to be scheduled and run")


async def test_a_paused_leader_changes_nothing_once_it_resumes(
        nodes: Cluster, api: rest.RestClient) -> None:
    async with nodes as c:
        await c.leader()
        await api.create(kinds.DEPLOYMENT, "default", deployment("web", 3))
        await wait_for(lambda: _count(api, "web", 3), timeout=60, what="3 web pods running")
        old = await c.leader()
        old_term = int((await status(c, old) or {})["header"]["raft_term"])
        pid = c.pid(old)
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        resumed = False
        survivors_tp: transport.Transport | None = None
        try:
            survivors = [n for n in c.names if n != old]
            new = await c.leader(among=survivors, timeout=30)
            assert new != old
            # Asked of the survivors only: the paused master accepts connections and
            # never answers, so a write sent there would have an unknown outcome.
            survivors_tp = transport.Transport([c.url[n] for n in survivors], c.token, ca=c.ca)
            api = rest.RestClient(survivors_tp)
            # The new leader's loops do the work while the old one sleeps.
            await api.patch(kinds.DEPLOYMENT, "default", "web", {"spec": {"replicas": 5}})
            await wait_for(lambda: _count(api, "web", 5), timeout=60,
                           what="5 web pods running under the new leader")
            placed = {p["metadata"]["name"]: p["spec"]["nodeName"]
                      for p in await running(api, "web")}
            before = {n: await stamped(c, n, old_term) for n in survivors}
            os.kill(pid, signal.SIGCONT)
            resumed = True
            await wait_for(lambda: asyncio.sleep(
                0, f"leader loops stopped (term {old_term})" in c.log(old)), timeout=30,
                what="the old leader's loops to stop")
            # Its own API refuses a write stamped with its old term.
            async with transport.Transport([c.url[old]], c.token, ca=c.ca, wait=10) as tp:
                stale = rest.RestClient(tp, term=old_term)
                with pytest.raises(ApiError) as refused:
                    await stale.create(kinds.CONFIGMAP, "default",
                                       {"metadata": {"name": "from-the-past"}})
            assert refused.value.code == 409
            assert "StaleTerm" in str(refused.value.details)
            await asyncio.sleep(3)  # long enough for late loops to try anything
            after = {n: await stamped(c, n, old_term) for n in survivors}
            assert after == before, f"writes of term {old_term} applied after it resumed"
            now = {p["metadata"]["name"]: p["spec"]["nodeName"]
                   for p in await running(api, "web")}
            assert now == placed, "pods moved or changed after the old leader resumed"
        finally:
            if not resumed:
                os.kill(pid, signal.SIGCONT)
            if survivors_tp is not None:
                await survivors_tp.close()


async def _count(api: rest.RestClient, app: str, n: int) -> bool:
    return len(await running(api, app)) == n


def test_masters_stopped_as_the_leaders_loops_start_exit_at_once(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGTERM to every master just as the leader's loops go to work: each exits within
    a few seconds. A loop's timed wait (3.11's asyncio.wait_for) once swallowed the
    cancel there, and the leader then hung until `rk down` killed it 10 s later."""
    from raftkube.cli import local

    for _ in range(4):
        c = Cluster(str(tmp_path_factory.mktemp("stopping")))
        try:
            c.up()
            deadline = time.monotonic() + 20
            while not any(AT_WORK.search(c.log(n)) for n in c.names):
                assert time.monotonic() < deadline, "the leader's loops never went to work"
                time.sleep(0.01)
            pids = {n: c.pid(n) for n in c.names}
            for pid in pids.values():
                assert pid is not None
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while any(local._running(p) for p in pids.values() if p is not None) and \
                    time.monotonic() < deadline:
                time.sleep(0.05)
            stuck = [n for n, p in pids.items() if p is not None and local._running(p)]
            assert not stuck, f"{stuck} still running 5 s after SIGTERM: " + "".join(
                c.log(n)[-1500:] for n in stuck)
        finally:
            c.down()
