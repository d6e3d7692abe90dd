"""Jobs and DaemonSets on real masters and simulated nodes (`rk up --agents 3`): a Job
runs to completion (NonIndexed and Indexed) and is cleaned up after its TTL; a Job
fails past its backoff limit, after a back-off, and past its deadline; a DaemonSet
follows nodes that join, change labels and leave, and rolls out a new template."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from raftkube.api import conditions, kinds
from raftkube.api.timestamps import parse_time
from raftkube.cli import local
from raftkube.client import rest
from raftkube.client.errors import ApiError
from raftkube.controllers import daemonplan, podstate
from tests.cluster.harness import Cluster, rest_client, started, wait_for

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
NS = "default"


@pytest.fixture
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and simulated nodes n1, n2, n3."""
    yield from started(tmp_path_factory, "batch", agents=3)


@pytest.fixture
async def api(nodes: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(nodes) as client:
        yield client


@pytest.fixture(scope="module")
def job_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """As `nodes`, shared by the Job tests (last in this module, so that it is not up
    while the others run): they kill nothing and each looks only at its own Job's pods
    and Events (by owner uid), so one start-up serves the four."""
    yield from started(tmp_path_factory, "batch-jobs", agents=3)


@pytest.fixture
async def jobs_api(job_nodes: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(job_nodes) as client:
        yield client


def job(name: str, *, exit_after: float, exit_code: int = 0, **spec: Any) -> Obj:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {
                "metadata": {"annotations": {"raftkube.io/sim-exit-after": str(exit_after),
                                             "raftkube.io/sim-exit-code": str(exit_code)}},
                "spec": {"restartPolicy": "Never",
                         "containers": [{"name": "work", "image": "busybox:1.36"}]}},
                     **spec}}


async def pods_of(api: rest.RestClient, owner: Obj) -> list[Obj]:
    items, _ = await api.list_all(kinds.POD, NS)
    return [p for p in items if any(r.get("uid") == owner["metadata"]["uid"]
                                    for r in p["metadata"].get("ownerReferences") or [])]


async def events_of(api: rest.RestClient, obj: Obj) -> list[tuple[str, str]]:
    items, _ = await api.list_all(kinds.EVENT, NS)
    return [(e["reason"], e["message"]) for e in items
            if e["involvedObject"].get("uid") == obj["metadata"]["uid"]]


async def finished(api: rest.RestClient, name: str) -> Obj | None:
    current = await api.get(kinds.JOB, NS, name)
    return current if any(conditions.is_true(current, t) for t in ("Complete", "Failed")) \
        else None


async def test_a_daemonset_follows_nodes_that_join_change_and_leave(
        nodes: Cluster, api: rest.RestClient) -> None:
    # n3 is away at first: its agent stopped and its Node deleted.
    nodes.kill("n3")
    await api.delete(kinds.NODE, "", "n3")
    ds = await api.create(kinds.DAEMONSET, NS, {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "logs"},
        "spec": {"selector": {"matchLabels": {"app": "logs"}},
                 "template": {"metadata": {"labels": {"app": "logs"}}, "spec": {
                     "affinity": {"nodeAffinity": {
                         "requiredDuringSchedulingIgnoredDuringExecution": {
                             "nodeSelectorTerms": [{"matchExpressions": [
                                 {"key": "example.com/no-logs", "operator": "DoesNotExist"}]}]}}},
                     "containers": [{"name": "c", "image": "fluentd:v1"}]}}}})
    twice_on_one_node: list[str] = []

    def placement(pods: list[Obj]) -> dict[str, int]:
        """Running daemon pods per node; a node with two is remembered."""
        out: dict[str, int] = {}
        for p in pods:
            if podstate.phase(p) == "Running" and not podstate.is_deleting(p):
                node = p["spec"].get("nodeName", "")
                out[node] = out.get(node, 0) + 1
        twice_on_one_node.extend(n for n, k in out.items() if k > 1)
        return out

    async def runs_on(want: set[str], *, ready: int) -> bool:
        pods = await pods_of(api, ds)
        on = placement(pods)
        if set(on) != want or any(podstate.is_deleting(p) for p in pods):
            return False
        status = (await api.get(kinds.DAEMONSET, NS, "logs")).get("status") or {}
        return (status.get("desiredNumberScheduled"), status.get("numberReady"),
                status.get("currentNumberScheduled")) == (len(want), ready, len(want))

    await wait_for(lambda: runs_on({"n1", "n2"}, ready=2), timeout=60,
                   what="a daemon pod on n1 and n2")
    # n3 joins: its agent starts and registers the Node again.
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: local.up(state_dir=nodes.state_dir, masters=3, agents=3))
    await wait_for(lambda: runs_on({"n1", "n2", "n3"}, ready=3), timeout=60,
                   what="a daemon pod on n3 too")
    # n2 is labelled out of it.
    await api.patch(kinds.NODE, "", "n2", {"metadata": {"labels": {
        "example.com/no-logs": "true"}}})
    await wait_for(lambda: runs_on({"n1", "n3"}, ready=2), timeout=60,
                   what="n2's daemon pod to go")
    # n3 leaves for good: its agent stops and its Node is deleted.
    nodes.kill("n3")
    await api.delete(kinds.NODE, "", "n3")
    await wait_for(lambda: runs_on({"n1"}, ready=1), timeout=60,
                   what="n3's daemon pod to go with it")
    # A new template rolls out, one node at a time.
    n2 = await api.get(kinds.NODE, "", "n2")
    await api.patch(kinds.NODE, "", "n2", {"metadata": {
        "labels": {"example.com/no-logs": None},
        "resourceVersion": n2["metadata"]["resourceVersion"]}})
    await wait_for(lambda: runs_on({"n1", "n2"}, ready=2), timeout=60,
                   what="n2 to run a daemon pod again")
    current = await api.get(kinds.DAEMONSET, NS, "logs")
    current["spec"]["template"]["spec"]["containers"][0]["image"] = "fluentd:v2"
    updated = await api.update(kinds.DAEMONSET, current)
    new_hash = daemonplan.template_hash(updated)

    async def rolled_out() -> bool:
        pods = [p for p in await pods_of(api, ds) if not podstate.is_deleting(p)]
        placement(pods)
        status = (await api.get(kinds.DAEMONSET, NS, "logs")).get("status") or {}
        return len(pods) == 2 and all(
            p["metadata"]["labels"]["controller-revision-hash"] == new_hash
            and podstate.is_ready(p) for p in pods) and \
            status.get("updatedNumberScheduled") == 2 and status.get("numberAvailable") == 2 \
            and status.get("observedGeneration") == updated["metadata"]["generation"]

    await wait_for(rolled_out, timeout=60, what="the new template on both nodes", every=0.1)
    assert twice_on_one_node == []  # maxSurge 0: never two running on one node
    reasons = [r for r, _ in await events_of(api, ds)]
    assert reasons.count("SuccessfulCreate") >= 5 and "SuccessfulDelete" in reasons
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # and it stays so
        assert await runs_on({"n1", "n2"}, ready=2)
        await asyncio.sleep(0.2)


async def test_a_job_finishes_exactly_once_across_a_leader_kill(
        nodes: Cluster, api: rest.RestClient) -> None:
    """The new leader's loops start from a fresh list: no pod of the Job is made twice,
    none is lost, and the counts come out exact."""
    made = await api.create(kinds.JOB, NS, job("steady", exit_after=1.5, completions=6,
                                                parallelism=3))

    async def some_running() -> bool:
        return any(podstate.phase(p) == "Running" for p in await pods_of(api, made))

    await wait_for(some_running, timeout=30, what="the first pods to run")
    async with nodes:
        leader = await nodes.leader()
        await nodes.kill_async(leader)
        result = await wait_for(lambda: finished(api, "steady"), timeout=90,
                                what="the Job to finish under the new leader", every=0.2)
        assert await nodes.leader(among=[n for n in nodes.names if n != leader]) != leader
    assert conditions.is_true(result, "Complete"), result["status"]
    assert (result["status"]["succeeded"], result["status"]["failed"]) == (6, 0)
    pods = await pods_of(api, made)
    assert len(pods) == 6 and all(podstate.phase(p) == "Succeeded" for p in pods)


async def test_a_rollout_goes_on_past_a_dark_node_and_pods_are_told_why_it_is_refused(
        nodes: Cluster, api: rest.RestClient) -> None:
    ds = await api.create(kinds.DAEMONSET, NS, {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
                 "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                     "containers": [{"name": "c", "image": "agent:v1"}]}}}})

    async def ready_everywhere() -> bool:
        pods = await pods_of(api, ds)
        return sorted(p["spec"].get("nodeName", "") for p in pods
                      if podstate.is_ready(p)) == ["n1", "n2", "n3"]

    await wait_for(ready_everywhere, timeout=60, what="a ready daemon pod on every node")
    # n3 goes dark: its agent dies, and after the grace period its Node is Unknown.
    nodes.kill("n3")

    async def n3_unknown() -> bool:
        n3 = await api.get(kinds.NODE, "", "n3")
        return (conditions.get(n3, "Ready") or {}).get("status") == "Unknown"

    await wait_for(n3_unknown, timeout=60, what="n3 to be Ready=Unknown")
    # A pod that can only go to n3 is told why not, in Kubernetes' words.
    await api.create(kinds.POD, NS, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "only-n3"},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "n3"},
                 "containers": [{"name": "c", "image": "busybox:1.36"}]}})

    async def refused() -> str:
        pod = await api.get(kinds.POD, NS, "only-n3")
        return str((conditions.get(pod, "PodScheduled") or {}).get("message") or "")

    message = await wait_for(refused, timeout=30, what="only-n3 to be refused")
    assert message == ("0/3 nodes are available: 2 node(s) didn't match Pod's node "
                       "affinity/selector, 1 node(s) had untolerated taint "
                       "{node.kubernetes.io/unreachable: }."), message
    # A new template rolls out on n1 and n2 although n3 (maxUnavailable 1) never can.
    current = await api.get(kinds.DAEMONSET, NS, "agent")
    current["spec"]["template"]["spec"]["containers"][0]["image"] = "agent:v2"
    updated = await api.update(kinds.DAEMONSET, current)
    new_hash = daemonplan.template_hash(updated)

    async def rolled_out_where_it_can() -> bool:
        pods = [p for p in await pods_of(api, ds) if p["spec"].get("nodeName") in ("n1", "n2")
                and not podstate.is_deleting(p)]
        return len(pods) == 2 and all(
            p["metadata"]["labels"]["controller-revision-hash"] == new_hash
            and podstate.is_ready(p) for p in pods)

    await wait_for(rolled_out_where_it_can, timeout=90, what="the new template on n1 and n2")


async def test_a_job_runs_to_completion_within_its_parallelism_then_expires(
        jobs_api: rest.RestClient) -> None:
    made = await jobs_api.create(kinds.JOB, NS, job("pi", exit_after=0.5, completions=4,
                                                parallelism=2, ttlSecondsAfterFinished=2))
    most_active = 0

    async def done() -> Obj | None:
        nonlocal most_active
        running = [p for p in await pods_of(jobs_api, made) if podstate.is_active(p)]
        most_active = max(most_active, len(running))
        return await finished(jobs_api, "pi")

    result = await wait_for(done, timeout=60, what="the Job to finish", every=0.1)
    status = result["status"]
    assert conditions.is_true(result, "Complete"), status
    assert (status["succeeded"], status["failed"], status["active"]) == (4, 0, 0)
    assert status["completionTime"] >= status["startTime"]
    assert 1 <= most_active <= 2  # never more than parallelism at once
    pods = await pods_of(jobs_api, made)
    assert len(pods) == 4 and all(podstate.phase(p) == "Succeeded" for p in pods)
    seen = await events_of(jobs_api, made)
    assert ("Completed", "Job completed") in seen
    assert sorted(m for r, m in seen if r == "SuccessfulCreate") == sorted(
        f"Created pod: {p['metadata']['name']}" for p in pods)

    async def gone() -> bool:
        try:
            await jobs_api.get(kinds.JOB, NS, "pi")
        except ApiError as e:
            return e.code == 404
        return False

    await wait_for(gone, timeout=30, what="the Job to go after its TTL")
    assert await pods_of(jobs_api, made) == []  # its pods went first (Foreground)


async def test_an_indexed_job_runs_each_index_once(jobs_api: rest.RestClient) -> None:
    made = await jobs_api.create(kinds.JOB, NS, job("idx", exit_after=0.3, completions=3,
                                                parallelism=3, completionMode="Indexed"))
    result = await wait_for(lambda: finished(jobs_api, "idx"), timeout=60, what="the Job to finish")
    assert conditions.is_true(result, "Complete")
    assert (result["status"]["completedIndexes"], result["status"]["succeeded"]) == ("0-2", 3)
    pods = await pods_of(jobs_api, made)
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                     for p in pods)
    assert indexes == ["0", "1", "2"]
    assert sorted(p["spec"]["hostname"] for p in pods) == ["idx-0", "idx-1", "idx-2"]


async def test_a_failing_job_backs_off_then_fails_past_its_limit(
        jobs_api: rest.RestClient) -> None:
    made = await jobs_api.create(kinds.JOB, NS, job("bad", exit_after=0.2, exit_code=3,
                                                backoffLimit=1))
    result = await wait_for(lambda: finished(jobs_api, "bad"), timeout=60,
                            what="the Job to fail", every=0.2)
    failed = conditions.get(result, "Failed")
    assert failed is not None and failed["status"] == "True", result["status"]
    assert (failed["reason"], failed["message"]) == \
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert (result["status"]["failed"], result["status"]["active"]) == (2, 0)
    first, second = sorted(await pods_of(jobs_api, made), key=podstate.created)
    # The second pod waited out the back-off (10 s) after the first one failed.
    assert podstate.created(second) - podstate.finished_at(first) >= 9
    assert ("BackoffLimitExceeded", "Job has reached the specified backoff limit") in \
        await events_of(jobs_api, made)


async def test_a_job_past_its_deadline_fails_and_stops_its_pods(jobs_api: rest.RestClient) -> None:
    made = await jobs_api.create(kinds.JOB, NS, job("slow", exit_after=3600, parallelism=2,
                                                completions=2, activeDeadlineSeconds=3))
    result = await wait_for(lambda: finished(jobs_api, "slow"), timeout=60,
                            what="the Job to fail")
    assert conditions.get(result, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
    started = parse_time(result["status"]["startTime"])
    failed_at = parse_time(conditions.get(result, "Failed")["lastTransitionTime"])  # type: ignore[index]
    assert started is not None and failed_at is not None and failed_at - started >= 3

    async def stopped() -> bool:
        return all(podstate.is_terminal(p) for p in await pods_of(jobs_api, made))

    await wait_for(stopped, timeout=30, what="its pods to stop")
    assert ("DeadlineExceeded", "Job was active longer than specified deadline") in \
        await events_of(jobs_api, made)
