"""Docker nodes through a leader master's SIGKILL: no node's heartbeat lapses past the
node lifecycle controller's grace, no node turns NotReady, a pod created meanwhile runs
on the engine, and the containers that ran before keep running (same ids)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from raftkube.api import conditions, kinds
from raftkube.client import informer as inf
from raftkube.client import rest
from tests.cluster.harness import Cluster, wait_for
from tests.cluster.test_agent_cluster import GRACE, _renewed_since, create_surely
from tests.docker.test_docker_pods import pod, pod_where, sh

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

Obj = dict[str, Any]


def running(p: Obj) -> bool:
    return (p.get("status") or {}).get("phase") == "Running"


async def test_a_leader_kill_lapses_no_docker_nodes_heartbeat(dcluster: Cluster,
                                                              api: rest.RestClient) -> None:
    await api.create(kinds.POD, "default", pod("before", [sh("c", "exec sleep 3600")]))
    before = await pod_where(api, "before", running, what="pod before Running")
    renewals: dict[str, list[float]] = {"n1": [], "n2": []}

    def record(lease: Obj) -> None:
        # The time this test saw it: renewTime comes from the agent's clock, the same.
        name = lease["metadata"]["name"]
        if name in renewals:
            renewals[name].append(time.time())

    leases = inf.Informer(api, kinds.LEASE, namespace="raftkube-system")
    leases.add_handler(inf.Handler(add=record, update=lambda _o, new: record(new)))
    watching = asyncio.ensure_future(leases.run())
    try:
        await leases.wait_synced(10)
        async with dcluster:
            leader = await dcluster.leader()
            killed_at = time.time()
            dcluster.kill(leader)
            await create_surely(api, pod("during", [sh("c", "exec sleep 3600")]))
            await wait_for(lambda: _renewed_since(renewals, killed_at, 3), timeout=60,
                           what="three renewals of each node's lease after the kill")
            await pod_where(api, "during", running, what="pod during Running")
            dcluster.start(leader)
        for node, times in renewals.items():
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert gaps and max(gaps) < GRACE, (node, gaps)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    nodes, _ = await api.list_all(kinds.NODE)
    assert all(conditions.is_true(n, "Ready") for n in nodes)
    after = await api.get(kinds.POD, "default", "before")
    assert after["status"]["containerStatuses"][0]["containerID"] == \
        before["status"]["containerStatuses"][0]["containerID"]
    for name in ("before", "during"):
        await api.delete(kinds.POD, "default", name, grace=0)
