"""Pods on the real Docker engine through a real cluster: `rk up --runtime docker`.

A pod's containers share its sandbox's IP and localhost; init containers run first;
a crashing container backs off; deletion is graceful (SIGTERM, then SIGKILL after the
grace period); a Job completes; an agent killed with SIGKILL and restarted adopts its
containers (same ids) and removes those of pods deleted meanwhile; a missing image
shows ErrImagePull then ImagePullBackOff, or ErrImageNeverPull; `rk down` removes its
cluster's containers and no other's.
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import time
from typing import Any

import docker
import pytest

from raftkube.agent import dockerspec as ds
from raftkube.api import conditions, kinds
from raftkube.api.timestamps import parse_time
from raftkube.cli import local
from raftkube.client import informer as inf
from raftkube.client import rest
from tests.cluster.harness import Cluster, gone, pod_where, rest_client, status_of, wait_for
from tests.docker import conftest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

Obj = dict[str, Any]
IMAGE = "busybox:1.36"


def pod(name: str, containers: list[Obj], *, node: str = "n1", **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": containers, **spec}}


def sh(name: str, script: str, **more: Any) -> Obj:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", script], **more}


def containers_of(client: docker.DockerClient, c: Cluster, pod_name: str) -> list[Any]:
    cid = local.cluster_id(c.state_dir)
    return client.containers.list(all=True, ignore_removed=True, filters={"label": [
        f"{ds.CLUSTER}={cid}", f"{ds.POD_NAME}={pod_name}"]})


async def test_a_pod_runs_on_its_sandbox_ip_and_its_containers_share_localhost(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", pod("web", [
        {"name": "httpd", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h", "/etc"],
         "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}},
        sh("client", "until timeout 5 wget -qO- localhost:8080/hostname; do sleep 0.5; done;"
                     " exec sleep 3600")],
        initContainers=[sh("init", "echo first")], terminationGracePeriodSeconds=1))
    p = await pod_where(api, "web", lambda p: conditions.is_true(p, "Ready"))
    assert p["status"]["phase"] == "Running"
    init = status_of(p, "init", init=True)
    assert init["state"]["terminated"]["reason"] == "Completed"
    # The init container ended before the app containers started.
    for name in ("httpd", "client"):
        started = parse_time(status_of(p, name)["state"]["running"]["startedAt"])
        assert started is not None
        assert started >= (parse_time(init["state"]["terminated"]["finishedAt"]) or 0)
    found = {c.labels[ds.CONTAINER_NAME]: c for c in containers_of(dockerc, dcluster, "web")}
    assert set(found) == {"POD", "init", "httpd", "client"}
    sandbox = found["POD"]
    assert p["status"]["podIP"] == sandbox.attrs["NetworkSettings"]["IPAddress"] != ""
    for name in ("httpd", "client"):
        c = found[name]
        assert status_of(p, name)["containerID"] == f"docker://{c.id}"
        assert c.attrs["HostConfig"]["NetworkMode"] == f"container:{sandbox.id}"
        assert c.labels[ds.NODE] == "n1"
        assert c.labels[ds.POD_UID] == p["metadata"]["uid"]
    limits = found["httpd"].attrs["HostConfig"]
    assert (limits["NanoCpus"], limits["Memory"]) == (250_000_000, 32 * 2**20)

    async def answered() -> bool:
        logs = await asyncio.to_thread(found["client"].logs)
        return b"web" in logs  # the httpd of the same pod, on localhost

    await wait_for(answered, timeout=30, what="the client's answer from localhost", every=0.5)
    await api.delete(kinds.POD, "default", "web")
    await gone(api, "web")
    await wait_for(lambda: asyncio.to_thread(
        lambda: not containers_of(dockerc, dcluster, "web")), timeout=30,
        what="the pod's containers removed")


async def test_a_crashing_container_backs_off_and_counts_restarts(
        dcluster: Cluster, api: rest.RestClient) -> None:
    await api.create(kinds.POD, "default", pod("crash", [sh("c", "echo bye; exit 3")],
                                               node="n2", terminationGracePeriodSeconds=0))
    seen: set[str] = set()

    def looping(p: Obj) -> bool:
        s = status_of(p, "c")
        waiting = (s.get("state") or {}).get("waiting") or {}
        seen.add(str(waiting.get("reason")))
        return int(s.get("restartCount") or 0) >= 2 and "CrashLoopBackOff" in seen

    p = await pod_where(api, "crash", looping, timeout=90)
    last = status_of(p, "c")["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    assert p["status"]["phase"] == "Running"  # restartPolicy Always: it will run again
    await api.delete(kinds.POD, "default", "crash")
    await gone(api, "crash")


async def test_deletion_is_sigterm_then_sigkill_after_the_grace_period(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    grace = 4
    await api.create(kinds.POD, "default", pod("grace", [
        sh("polite", "trap 'echo TERM; exit 0' TERM; while :; do sleep 0.2; done"),
        # A PID 1 without a handler for SIGTERM never sees it: killed at the end.
        {"name": "stubborn", "image": IMAGE, "command": ["sleep", "3600"]}],
        terminationGracePeriodSeconds=grace))
    await pod_where(api, "grace", lambda p: conditions.is_true(p, "Ready"))
    deleted = time.time()
    await api.delete(kinds.POD, "default", "grace")
    await gone(api, "grace")
    # The engine's `die` events tell each exit: its code and when (an exited container
    # is removed at once after the last one stops, too soon to be polled).
    cid = local.cluster_id(dcluster.state_dir)
    events = await asyncio.to_thread(lambda: list(dockerc.events(
        since=int(deleted) - 1, until=int(time.time()) + 1, decode=True,
        filters={"event": "die", "label": [f"{ds.CLUSTER}={cid}",
                                           f"{ds.POD_NAME}=grace"]})))
    exits = {e["Actor"]["Attributes"][ds.CONTAINER_NAME]: (
        int(e["Actor"]["Attributes"]["exitCode"]), e["timeNano"] / 1e9 - deleted)
        for e in events}
    assert exits["polite"][0] == 0  # it trapped SIGTERM and ended by itself
    assert exits["polite"][1] < grace
    assert exits["stubborn"][0] == 137  # SIGKILL
    assert exits["stubborn"][1] >= grace - 0.5


async def test_a_job_runs_to_completion(dcluster: Cluster, api: rest.RestClient) -> None:
    await api.create(kinds.JOB, "default", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"completions": 2, "parallelism": 2, "backoffLimit": 2, "template": {
            "spec": {"restartPolicy": "Never",
                     "containers": [sh("work", "echo working; sleep 1; echo done")]}}}})

    async def complete() -> Obj | None:
        job = await api.get(kinds.JOB, "default", "once")
        return job if (job.get("status") or {}).get("succeeded") == 2 else None

    job = await wait_for(complete, timeout=120, what="the job's 2 completions", every=0.5)
    assert conditions.is_true(job, "Complete")
    pods, _ = await api.list_all(kinds.POD, "default", label_selector="job-name=once")
    assert len(pods) == 2
    for p in pods:
        assert p["status"]["phase"] == "Succeeded"
        assert status_of(p, "work")["state"]["terminated"]["reason"] == "Completed"
    await api.delete(kinds.JOB, "default", "once", propagation="Background")


async def test_a_killed_agent_adopts_its_containers_and_removes_deleted_pods(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", pod("keep", [sh("c", "exec sleep 3600")],
                                               terminationGracePeriodSeconds=0))
    await api.create(kinds.POD, "default", pod("drop", [sh("c", "exec sleep 3600")],
                                               terminationGracePeriodSeconds=0))
    before = await pod_where(api, "keep", lambda p: conditions.is_true(p, "Ready"))
    await pod_where(api, "drop", lambda p: conditions.is_true(p, "Ready"))
    started_at = {c.id: c.attrs["State"]["StartedAt"]
                  for c in containers_of(dockerc, dcluster, "keep")}
    dcluster.kill("n1")
    await api.delete(kinds.POD, "default", "drop")  # no agent to finish it meanwhile
    await asyncio.sleep(2)
    assert containers_of(dockerc, dcluster, "drop")  # still there: nobody removed them
    started = await asyncio.to_thread(dcluster.up, agents=2, runtime="docker",
                                      agent_args=conftest.AGENT_ARGS)
    assert started == ["n1"]
    await gone(api, "drop")
    await wait_for(lambda: asyncio.to_thread(
        lambda: not containers_of(dockerc, dcluster, "drop")), timeout=30,
        what="the deleted pod's containers removed")
    after = await api.get(kinds.POD, "default", "keep")
    assert status_of(after, "c")["containerID"] == status_of(before, "c")["containerID"]
    assert status_of(after, "c")["restartCount"] == 0
    assert after["status"]["podIP"] == before["status"]["podIP"]
    now = {c.id: c.attrs["State"]["StartedAt"] for c in containers_of(dockerc, dcluster, "keep")}
    assert now == started_at  # the same containers, never restarted
    await api.delete(kinds.POD, "default", "keep")
    await gone(api, "keep")


async def test_a_missing_image_is_errimagepull_then_imagepullbackoff(
        dcluster: Cluster, api: rest.RestClient) -> None:
    reasons: list[str] = []  # `container:reason:message`, each change as it was written

    def record(p: Obj) -> None:
        for name in ("always", "never"):
            waiting = (status_of(p, name).get("state") or {}).get("waiting") or {}
            entry = f"{name}:{waiting.get('reason')}:{waiting.get('message', '')}"
            mine = [r for r in reasons if r.startswith(name + ":")]
            if waiting.get("reason") and (not mine or mine[-1] != entry):
                reasons.append(entry)

    informer = inf.Informer(api, kinds.POD, namespace="default",
                            field_selector="metadata.name=pull")
    informer.add_handler(inf.Handler(add=record, update=lambda _o, p: record(p)))
    watching = asyncio.ensure_future(informer.run())
    try:
        await informer.wait_synced()
        await api.create(kinds.POD, "default", pod("pull", [
            {"name": "always", "image": "raftkube-no-such-image:1",
             "imagePullPolicy": "Always"},
            {"name": "never", "image": "raftkube-no-such-image:2",
             "imagePullPolicy": "Never"},
            sh("fine", "exec sleep 3600")], terminationGracePeriodSeconds=0))

        async def both() -> bool:
            return any(r.startswith("always:ImagePullBackOff") for r in reasons) and \
                any(r.startswith("never:ErrImageNeverPull") for r in reasons)

        await wait_for(both, timeout=60, what="the pull failures reported", every=0.2)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    always = [r for r in reasons if r.startswith("always:")]
    first = always[0].split(":", 2)
    assert first[1] == "ErrImagePull", always
    assert 'Failed to pull image "raftkube-no-such-image:1"' in first[2]
    assert any(r == 'always:ImagePullBackOff:Back-off pulling image '
               '"raftkube-no-such-image:1"' for r in always[1:]), always
    never = next(r for r in reasons if r.startswith("never:"))
    assert 'is not present with pull policy of Never' in never
    p = await api.get(kinds.POD, "default", "pull")
    assert p["status"]["phase"] == "Pending"
    assert status_of(p, "fine")["state"].get("running")  # the others run meanwhile
    events, _ = await api.list_all(kinds.EVENT, "default")
    assert any(e["involvedObject"]["name"] == "pull" and e["reason"] == "Failed" and
               "raftkube-no-such-image:1" in e["message"] for e in events)
    await api.delete(kinds.POD, "default", "pull")
    await gone(api, "pull")


async def test_rk_down_removes_its_cluster_containers_and_no_other(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    await api.create(kinds.POD, "default", pod("other", [sh("c", "exec sleep 3600")],
                                               terminationGracePeriodSeconds=0))
    await pod_where(api, "other", lambda p: conditions.is_true(p, "Ready"))
    second = Cluster(str(tmp_path_factory.mktemp("down")))
    try:
        await asyncio.to_thread(conftest.start, second, 1)
        async with rest_client(second) as api2:
            await api2.create(kinds.POD, "default", pod("mine", [sh("c", "exec sleep 3600")]))
            await pod_where(api2, "mine", lambda p: conditions.is_true(p, "Ready"))
        assert containers_of(dockerc, second, "mine")
        second.kill("n1")  # rk down must not need the agent
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "raftkube.cli", "down", "--state-dir",
                             second.state_dir], capture_output=True, text=True, timeout=120,
            env={**os.environ})
        assert out.returncode == 0, out.stderr
        assert "removed 2 container(s)" in out.stdout, out.stdout
        cid = local.cluster_id(second.state_dir)
        left = dockerc.containers.list(all=True, filters={"label": f"{ds.CLUSTER}={cid}"})
        assert left == []
    finally:
        conftest.stop(second)
    # The first cluster's pod runs on, untouched.
    assert any(c.status == "running" for c in containers_of(dockerc, dcluster, "other"))
    p = await api.get(kinds.POD, "default", "other")
    assert conditions.is_true(p, "Ready")
    await api.delete(kinds.POD, "default", "other")


async def test_the_spec_reaches_the_engine_user_workdir_env_oom_and_hooks(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", pod("spec", [
        sh("who", 'echo "$(id -u):$(id -g) $(pwd) $GREETING"; touch /x 2>/dev/null ||'
                  ' echo read-only; exec sleep 3600',
           workingDir="/tmp", env=[{"name": "GREETING", "value": "hello"}],
           securityContext={"runAsUser": 1000, "runAsGroup": 2000,
                            "readOnlyRootFilesystem": True}),
        sh("hooked", "exec sleep 3600", lifecycle={
            "postStart": {"exec": {"command": ["sh", "-c", "echo started > /tmp/hook"]}}}),
        sh("greedy", 'x=$(head -c 40000000 /dev/zero | tr "\\0" a); echo ${#x}',
           resources={"limits": {"memory": "8Mi"}})],
        node="n2", restartPolicy="Never", terminationGracePeriodSeconds=0))

    def settled(p: Obj) -> bool:
        greedy = status_of(p, "greedy").get("state") or {}
        return "terminated" in greedy and all(
            "running" in (status_of(p, n).get("state") or {}) for n in ("who", "hooked"))

    p = await pod_where(api, "spec", settled, timeout=90)
    greedy = status_of(p, "greedy")["state"]["terminated"]
    assert (greedy["reason"], greedy["exitCode"]) == ("OOMKilled", 137)
    found = {c.labels[ds.CONTAINER_NAME]: c for c in containers_of(dockerc, dcluster, "spec")}

    async def said() -> bool:
        return b"1000:2000 /tmp hello\nread-only" in await asyncio.to_thread(
            found["who"].logs)

    await wait_for(said, timeout=30, what="the container's own account", every=0.5)
    code, out = await asyncio.to_thread(found["hooked"].exec_run, ["cat", "/tmp/hook"])
    assert (code, out) == (0, b"started\n")  # the postStart hook ran in it
    await api.delete(kinds.POD, "default", "spec")
    await gone(api, "spec")


async def test_a_failing_post_start_hook_kills_the_container_and_it_restarts(
        dcluster: Cluster, api: rest.RestClient) -> None:
    await api.create(kinds.POD, "default", pod("hookfail", [
        sh("c", "exec sleep 3600", lifecycle={"postStart": {"exec": {"command": ["false"]}}})],
        node="n2", terminationGracePeriodSeconds=0))
    p = await pod_where(api, "hookfail", lambda p: int(
        status_of(p, "c").get("restartCount") or 0) >= 1, timeout=90)
    assert status_of(p, "c")["lastState"]["terminated"]["exitCode"] == 137
    events, _ = await api.list_all(kinds.EVENT, "default")
    assert any(e["involvedObject"]["name"] == "hookfail" and
               "FailedPostStartHook" in e["message"] for e in events)
    await api.delete(kinds.POD, "default", "hookfail")
    await gone(api, "hookfail")


async def test_a_host_network_pod_has_the_node_address(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", pod("hostnet", [sh("c", "exec sleep 3600")],
                                               hostNetwork=True,
                                               terminationGracePeriodSeconds=0))
    p = await pod_where(api, "hostnet", lambda p: conditions.is_true(p, "Ready"))
    assert p["status"]["podIP"] == p["status"]["hostIP"]
    (sandbox,) = [c for c in containers_of(dockerc, dcluster, "hostnet")
                  if c.labels[ds.KIND] == ds.SANDBOX]
    assert sandbox.attrs["HostConfig"]["NetworkMode"] == "host"
    await api.delete(kinds.POD, "default", "hostnet")
    await gone(api, "hostnet")


async def test_a_dead_sandbox_is_started_again_and_its_containers_restart(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.POD, "default", pod("phoenix", [
        {"name": "httpd", "image": IMAGE, "command": ["httpd", "-f", "-p", "8080", "-h",
                                                      "/etc"]}],
        node="n2", terminationGracePeriodSeconds=0))
    await pod_where(api, "phoenix", lambda p: conditions.is_true(p, "Ready"))
    (sandbox,) = [c for c in containers_of(dockerc, dcluster, "phoenix")
                  if c.labels[ds.KIND] == ds.SANDBOX]
    await asyncio.to_thread(sandbox.kill)  # its network namespace is gone with it
    p = await pod_where(api, "phoenix", lambda p: conditions.is_true(p, "Ready") and int(
        status_of(p, "httpd").get("restartCount") or 0) >= 1, timeout=90)
    sandbox.reload()
    assert sandbox.status == "running"  # the same sandbox, started again
    ip = sandbox.attrs["NetworkSettings"]["IPAddress"]
    assert p["status"]["podIP"] == ip != ""
    code, out = await asyncio.to_thread(
        sandbox.exec_run, ["timeout", "5", "wget", "-qO-", "localhost:8080/hostname"])
    assert (code, out) == (0, b"phoenix\n")  # the new httpd is in the new namespace
    await api.delete(kinds.POD, "default", "phoenix")
    await gone(api, "phoenix")


async def test_an_ended_pod_stops_its_sandbox_and_keeps_its_container_for_logs(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    """Succeeded with restartPolicy Never: its pause container is stopped (the bridge IP
    goes back), not taken for a dead sandbox and started again; its exited container
    stays for `rk logs` until the pod is deleted, and then goes."""
    await api.create(kinds.POD, "default", pod("ended", [sh("c", "echo all done")],
                                               restartPolicy="Never"))
    await pod_where(api, "ended", lambda p: p["status"].get("phase") == "Succeeded")

    def sandbox_stopped() -> bool:
        found = {c.labels[ds.CONTAINER_NAME]: c
                 for c in containers_of(dockerc, dcluster, "ended")}
        return set(found) == {"POD", "c"} and found["POD"].status == "exited"

    await wait_for(lambda: asyncio.to_thread(sandbox_stopped), timeout=60,
                   what="the ended pod's sandbox stopped", every=0.5)
    await asyncio.sleep(5)  # a few relists: it stays stopped, its container kept
    found = {c.labels[ds.CONTAINER_NAME]: c for c in containers_of(dockerc, dcluster, "ended")}
    assert (found["POD"].status, found["c"].status) == ("exited", "exited")
    assert found["POD"].attrs["State"]["StartedAt"] < found["POD"].attrs["State"]["FinishedAt"]
    out = b"".join([chunk async for chunk in api.logs("default", "ended")])
    assert out == b"all done\n"
    p = await api.get(kinds.POD, "default", "ended")
    assert p["status"]["phase"] == "Succeeded"
    assert status_of(p, "c")["state"]["terminated"]["exitCode"] == 0
    await api.delete(kinds.POD, "default", "ended")
    await gone(api, "ended")
    await wait_for(lambda: asyncio.to_thread(
        lambda: not containers_of(dockerc, dcluster, "ended")), timeout=30,
        what="the pod's containers removed")


async def test_a_deleted_pods_anonymous_volumes_go_with_it(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    """An image that declares VOLUME gives each container an anonymous volume; removing
    the pod's containers removes it too (it could never be used again)."""
    tag = f"raftkube-test/volume:{os.getpid()}"
    await asyncio.to_thread(dockerc.images.build, fileobj=io.BytesIO(
        f"FROM {IMAGE}\nVOLUME /data\n".encode()), tag=tag, rm=True)
    try:
        await api.create(kinds.POD, "default", pod("vol", [
            {"name": "c", "image": tag, "imagePullPolicy": "Never",
             "command": ["sleep", "3600"]}], terminationGracePeriodSeconds=0))
        await pod_where(api, "vol", lambda p: conditions.is_true(p, "Ready"))
        (c,) = [x for x in containers_of(dockerc, dcluster, "vol")
                if x.labels[ds.KIND] == ds.CONTAINER]
        (volume,) = [m["Name"] for m in c.attrs["Mounts"] if m["Type"] == "volume"]
        await api.delete(kinds.POD, "default", "vol")
        await gone(api, "vol")

        def volume_gone() -> bool:
            try:
                dockerc.volumes.get(volume)
            except docker.errors.NotFound:
                return True
            return False

        await wait_for(lambda: asyncio.to_thread(volume_gone), timeout=30,
                       what=f"the anonymous volume {volume[:12]} removed", every=0.5)
    finally:
        await asyncio.to_thread(dockerc.images.remove, tag, force=True)
