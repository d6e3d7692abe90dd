"""Simulated nodes on real masters: `rk up --agents N --runtime simulated`, then pods
that run, end, crash and go away; a leader's death that no node's heartbeat notices; an
agent killed and restarted that re-adopts its pods; and 50 hollow nodes in one agent."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from raftkube.agent import network
from raftkube.api import conditions, kinds
from raftkube.api.timestamps import parse_time
from raftkube.cli import local
from raftkube.client import informer as inf
from raftkube.client import rest
from raftkube.client.errors import ApiError, ClientError, UnknownOutcome
from tests.cluster.harness import Cluster, pod_where, rest_client, started, wait_for

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
GRACE = 10.0  # the node lifecycle controller's grace for a silent node
AGENT_ARGS = ["--crash-backoff-base", "1", "--node-status-update-frequency", "60"]


@pytest.fixture
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and agents n1, n2 whose crash-loop back-off starts at 1 s (and whose
    periodic Node check is too rare to pass for the reaction to a change)."""
    yield from started(tmp_path_factory, "agents", agents=2, agent_args=AGENT_ARGS)


@pytest.fixture
async def api(agents: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(agents) as client:
        yield client


def sim_pod(name: str, node: str, *, restart: str = "Always", exit_after: float | None = None,
            exit_code: int = 0, ready_delay: int | None = None) -> Obj:
    notes = {}
    if exit_after is not None:
        notes = {"raftkube.io/sim-exit-after": str(exit_after),
                 "raftkube.io/sim-exit-code": str(exit_code)}
    container: Obj = {"name": "c", "image": "busybox:1.36"}
    if ready_delay is not None:
        container["readinessProbe"] = {"exec": {"command": ["true"]},
                                       "initialDelaySeconds": ready_delay}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": notes},
            "spec": {"nodeName": node, "restartPolicy": restart, "containers": [container]}}


def container(p: Obj) -> Obj:
    statuses: list[Obj] = (p.get("status") or {}).get("containerStatuses") or [{}]
    return statuses[0]


def phase(p: Obj) -> str:
    return str((p.get("status") or {}).get("phase"))


async def test_nodes_register_and_pods_run_end_restart_and_go(
        agents: Cluster, api: rest.RestClient) -> None:
    nodes, _ = await api.list_all(kinds.NODE)
    assert sorted(n["metadata"]["name"] for n in nodes) == ["n1", "n2"]
    for n in nodes:
        assert conditions.is_true(n, "Ready")
        assert n["metadata"]["labels"]["kubernetes.io/hostname"] == n["metadata"]["name"]
        assert n["status"]["allocatable"] == {"cpu": "4", "memory": "8Gi", "pods": "110"}
    async def holders() -> list[str] | None:  # each agent's Lease, soon after it registers
        leases, _ = await api.list_all(kinds.LEASE, "raftkube-system")
        found = sorted(x["spec"]["holderIdentity"] for x in leases)
        return found if found == ["n1", "n2"] else None

    await wait_for(holders, timeout=10, what="both nodes' leases")
    # What a node lifecycle controller does to a silent node: the node puts it right.
    n1 = await api.get(kinds.NODE, "", "n1")
    conditions.put(n1["status"], {"type": "Ready", "status": "Unknown",
                                  "reason": "NodeStatusUnknown",
                                  "message": "Kubelet stopped posting node status."},
                   time.time())
    await api.update_status(kinds.NODE, n1)

    async def ready_again() -> bool:
        return conditions.is_true(await api.get(kinds.NODE, "", "n1"), "Ready")

    await wait_for(ready_again, timeout=15, what="n1 Ready again")

    # Seen through a watch, so that a state that lasts a moment is not missed.
    seen: list[Obj] = []
    pods = inf.Informer(api, kinds.POD, namespace="default")
    pods.add_handler(inf.Handler(add=seen.append, update=lambda _o, new: seen.append(new)))
    watching = asyncio.ensure_future(pods.run())
    try:
        await pods.wait_synced(10)
        for p in (sim_pod("web", "n1", ready_delay=1),
                  sim_pod("ok", "n2", restart="Never", exit_after=0.5),
                  sim_pod("bad", "n1", restart="Never", exit_after=0.5, exit_code=3),
                  sim_pod("crash", "n2", exit_after=0.3, exit_code=1)):
            await api.create(kinds.POD, "default", p)

        web = await pod_where(api, "web", lambda p: conditions.is_true(p, "Ready"))
        status = web["status"]
        assert phase(web) == "Running"
        assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network("10.244.1.0/24")
        # rk up gives each agent its own address (raftkube/agent/network.py)
        assert status["hostIP"] == network.local_node_address(agents.state_dir, 1) and \
            status["podIPs"] == [
            {"ip": status["podIP"]}]
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "PodScheduled": "True", "Initialized": "True", "ContainersReady": "True",
            "Ready": "True"}
        assert container(web)["ready"] and "running" in container(web)["state"]
        # Ready no sooner than its probe's initial delay after the container started.
        started = parse_time(container(web)["state"]["running"]["startedAt"])
        ready_at = parse_time(conditions.get(web, "Ready")["lastTransitionTime"])  # type: ignore[index]
        assert started is not None and ready_at is not None and ready_at >= started + 1
        assert any(phase(p) == "Running" and not conditions.is_true(p, "Ready")
                   for p in seen if p["metadata"]["name"] == "web")

        big = sim_pod("big", "n2")  # bound by hand, past the scheduler: n2 refuses it
        big["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "5"}}
        await api.create(kinds.POD, "default", big)
        big = await pod_where(api, "big", lambda p: phase(p) == "Failed")
        assert big["status"]["reason"] == "OutOfcpu"

        for name, want, code in (("ok", "Succeeded", 0), ("bad", "Failed", 3)):
            p = await pod_where(api, name, lambda p, w=want: phase(p) == w)
            assert container(p)["state"]["terminated"]["exitCode"] == code
            assert container(p)["restartCount"] == 0

        crash = await pod_where(api, "crash", lambda p: container(p).get("restartCount", 0)
                                >= 3, timeout=30)
        history = [container(p) for p in seen if p["metadata"]["name"] == "crash"]
        waits = [s for s in history if (s.get("state") or {}).get("waiting", {}).get(
            "reason") == "CrashLoopBackOff"]
        assert waits, "no CrashLoopBackOff between the restarts"
        assert waits[0]["lastState"]["terminated"]["exitCode"] == 1
        assert phase(crash) == "Running"
        # Every restart got a new container id; the counts only grow.
        counts = [s["restartCount"] for s in history if "restartCount" in s]
        assert counts == sorted(counts)

        began = time.monotonic()
        await api.delete(kinds.POD, "default", "web")  # its 30 s grace: its node ends it
        await wait_for(lambda: _gone(api, "web"), timeout=10, what="web deleted")
        assert time.monotonic() - began < 10
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)


async def _gone(api: rest.RestClient, name: str) -> bool:
    try:
        await api.get(kinds.POD, "default", name)
    except ApiError as e:
        return e.code == 404
    return False


async def test_a_master_kill_lapses_no_lease_and_loses_no_pod(agents: Cluster,
                                                   api: rest.RestClient) -> None:
    renewals: dict[str, list[float]] = {"n1": [], "n2": []}

    def record(lease: Obj) -> None:
        t = lease["spec"]["renewTime"]
        whole = parse_time(t)
        assert whole is not None
        renewals[lease["metadata"]["name"]].append(whole + float("0." + t[20:26]))

    leases = inf.Informer(api, kinds.LEASE, namespace="raftkube-system")
    leases.add_handler(inf.Handler(add=record, update=lambda _o, new: record(new)))
    watching = asyncio.ensure_future(leases.run())
    try:
        await leases.wait_synced(10)
        await asyncio.sleep(3)
        async with agents:
            leader = await agents.leader()
            # The leader, then (if that was another) m1, the master the agents were
            # given first and so talk to: each time they must move on to another.
            for victim in dict.fromkeys([leader, "m1"]):
                await agents.leader()  # all three agree again: the last victim is back
                killed_at = time.time()
                agents.kill(victim)
                # The pod watch resumes on another master and misses nothing.
                await create_surely(api, sim_pod(f"during-{victim}", "n1"))
                await wait_for(lambda t=killed_at: _renewed_since(renewals, t, 3),
                               timeout=20, what=f"three renewals after {victim}'s kill")
                await pod_where(api, f"during-{victim}", lambda p: phase(p) == "Running")
                agents.start(victim)
        for node, times in renewals.items():
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert gaps and max(gaps) < GRACE, (node, gaps)
            print(f"{node}: longest gap between renewals {max(gaps):.2f}s")
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    nodes, _ = await api.list_all(kinds.NODE)
    assert all(conditions.is_true(n, "Ready") for n in nodes)


async def create_surely(api: rest.RestClient, pod: Obj) -> None:
    """Create, again if the answer was lost with a killed master (AlreadyExists: done)."""
    while True:
        try:
            await api.create(kinds.POD, "default", pod)
            return
        except UnknownOutcome:
            continue
        except ApiError as e:
            if e.reason == "AlreadyExists":
                return
            raise


async def _renewed_since(renewals: dict[str, list[float]], t: float, n: int) -> bool:
    return all(len([x for x in times if x > t]) >= n for times in renewals.values())


async def test_a_killed_agent_restarts_and_readopts_its_pods(
        agents: Cluster, api: rest.RestClient) -> None:
    await api.create(kinds.POD, "default", sim_pod("keep", "n1"))
    await api.create(kinds.POD, "default", sim_pod("later", "n1", restart="Never",
                                                   exit_after=4))
    before = await pod_where(api, "keep", lambda p: conditions.is_true(p, "Ready"))
    await pod_where(api, "later", lambda p: phase(p) == "Running")
    pids = {n: agents.pid(n) for n in ("m1", "m2", "m3", "n2")}
    agents.kill("n1")
    assert agents.pid("n1") is None
    await asyncio.sleep(1)
    started = await asyncio.to_thread(agents.up, agents=2, agent_args=AGENT_ARGS)
    assert started == ["n1"]  # and no second copy of anything that was running
    assert {n: agents.pid(n) for n in pids} == pids
    # The later pod's container exited while no agent watched it: reported on time.
    later = await pod_where(api, "later", lambda p: phase(p) == "Succeeded", timeout=15)
    assert container(later)["state"]["terminated"]["exitCode"] == 0
    after = await api.get(kinds.POD, "default", "keep")
    assert container(after) == container(before)  # same container, not restarted
    assert after["status"]["podIP"] == before["status"]["podIP"]
    await api.create(kinds.POD, "default", sim_pod("new", "n1"))
    new = await pod_where(api, "new", lambda p: phase(p) == "Running")
    # Not the running pod's address (the ended pod's was freed with its sandbox).
    assert new["status"]["podIP"] != before["status"]["podIP"]
    with open(os.path.join(agents.state_dir, "logs", "n1.log")) as f:
        log = f.read()
    assert log.count("registered") == 1  # the second run adopted its Node


async def test_one_agent_hosts_fifty_ready_nodes(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    c = Cluster(str(tmp_path_factory.mktemp("hollow")))
    try:
        began = time.monotonic()
        begun = await asyncio.to_thread(c.up, agents=1, count=50)  # waits for Ready
        took = time.monotonic() - began
        assert begun[-1] == "n1"
        async with rest_client(c) as api:
            nodes, _ = await api.list_all(kinds.NODE)
            names = {n["metadata"]["name"] for n in nodes if conditions.is_true(n, "Ready")}
            assert names == {f"n1-{i}" for i in range(1, 51)}
            cidrs = {n["spec"]["podCIDR"] for n in nodes}
            assert len(cidrs) == 50

            async def leases() -> bool:
                found, _ = await api.list_all(kinds.LEASE, "raftkube-system")
                return len(found) == 50

            await wait_for(leases, timeout=20, what="50 leases")
        print(f"50 hollow nodes Ready {took:.1f}s after rk up began")
        pids = [c.pid(name) for name in ("m1", "m2", "m3", "n1")]
        assert all(pids)
        c.down()  # returns once every process has exited
        assert not [p for p in pids if p is not None and local._running(p)]
    finally:
        c.down()


def test_rk_up_says_why_an_agent_did_not_start(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    c = Cluster(str(tmp_path_factory.mktemp("bad")))
    try:
        with pytest.raises(ClientError, match=r"n1 exited with code 1.*--cpu"):
            c.up(agents=1, agent_args=["--cpu=lots"])
    finally:
        c.down()
