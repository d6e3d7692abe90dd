"""Kubernetes' sidecars on the real engine: an init container with `restartPolicy:
Always` starts first and keeps running beside the app, which reaches it on localhost;
the init container after it starts once it runs; the pod ends when its app ends, and
its sidecar is stopped then. A sidecar's startup probe holds the app until it passes;
a deleted pod's sidecars outlive its app's SIGTERM handling and stop last, in reverse
order."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from raftkube.agent import dockerspec as ds
from raftkube.api import conditions, kinds
from raftkube.api.timestamps import parse_time
from raftkube.cli import local
from raftkube.client import rest
from tests.cluster.harness import Cluster
from tests.docker.test_docker_pods import gone, pod, pod_where, sh, status_of

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


async def test_a_sidecar_serves_the_app_on_localhost_and_the_job_pod_still_ends(
        dcluster: Cluster, api: rest.RestClient) -> None:
    sidecar = {**sh("web", "mkdir -p /tmp/www && echo from-sidecar > /tmp/www/index.html "
                           "&& exec httpd -f -p 8080 -h /tmp/www"),
               "restartPolicy": "Always"}
    after = sh("after", "timeout 5 wget -qO- http://localhost:8080/ | grep -q from-sidecar")
    app = sh("app", "for i in 1 2 3 4 5; do timeout 5 wget -qO- http://localhost:8080/ "
                    "&& exit 0; sleep 1; done; exit 1")
    spec = pod("sided", [app], restartPolicy="Never", initContainers=[sidecar, after],
               terminationGracePeriodSeconds=2)
    await api.create(kinds.POD, "default", spec)
    done = await pod_where(api, "sided", lambda p: (p.get("status") or {}).get("phase")
                           in ("Succeeded", "Failed"), what="pod sided ended", timeout=120)
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    inits = {s["name"]: s for s in status["initContainerStatuses"]}
    assert inits["after"]["state"]["terminated"]["exitCode"] == 0
    # The app ended: its sidecar was stopped with it (KEP-753), nothing of it runs on.
    assert "terminated" in inits["web"]["state"], inits["web"]
    app_status = status["containerStatuses"][0]
    assert app_status["state"]["terminated"]["exitCode"] == 0
    await api.delete(kinds.POD, "default", "sided", grace=0)


async def test_a_sidecar_outlives_the_app_while_it_handles_sigterm(
        dcluster: Cluster, api: rest.RestClient, tmp_path: Path) -> None:
    """Deletion, KEP-753's order: the app gets SIGTERM first and takes its time (2 s in
    its trap) while the sidecars run on, and one of them sees the app's SIGTERM in the
    shared log; the sidecars get SIGTERM once the app has exited, the last declared
    first. The log is a hostPath directory, so it outlives the pod."""
    shared = tmp_path / "shared"
    shared.mkdir()
    log = "/shared/log"
    forever = "while :; do sleep 1 & wait $!; done"
    recorder = {**sh("recorder",
                     f"trap 'echo recorder-term >> {log}; exit 0' TERM; "
                     f"while :; do if grep -q app-term {log} 2>/dev/null && "
                     f"! grep -q recorder-saw {log}; then echo recorder-saw-app-term >> {log}; "
                     f"fi; sleep 0.2 & wait $!; done"),
                "restartPolicy": "Always",
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
    second = {**sh("second", f"trap 'echo second-term >> {log}; exit 0' TERM; {forever}"),
              "restartPolicy": "Always",
              "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
    app = sh("app", f"trap 'echo app-term >> {log}; sleep 2; echo app-done >> {log}; "
                    f"exit 0' TERM; echo app-up >> {log}; {forever}",
             volumeMounts=[{"name": "shared", "mountPath": "/shared"}])
    spec = pod("ordered", [app], initContainers=[recorder, second],
               terminationGracePeriodSeconds=30,
               volumes=[{"name": "shared", "hostPath": {"path": str(shared),
                                                         "type": "Directory"}}])
    await api.create(kinds.POD, "default", spec)
    await pod_where(api, "ordered", lambda p: conditions.is_true(p, "Ready"),
                    what="pod ordered ready", timeout=120)
    await api.delete(kinds.POD, "default", "ordered")
    await gone(api, "ordered")
    lines = (shared / "log").read_text().split()
    assert lines == ["app-up", "app-term", "recorder-saw-app-term", "app-done",
                     "second-term", "recorder-term"], lines


async def test_the_app_starts_once_the_sidecars_startup_probe_passes(
        dcluster: Cluster, api: rest.RestClient) -> None:
    """The sidecar is ready to serve only after 3 s (it writes /shared/up then); its
    startup probe holds the app until then. The app fails for good (policy Never) if it
    starts before the sidecar is up, so a Running pod with an app that never restarted
    shows the order."""
    mount = [{"name": "shared", "mountPath": "/shared"}]
    sidecar = {**sh("slow", "sleep 3; touch /shared/up; "
                            "while :; do sleep 1 & wait $!; done"),
               "restartPolicy": "Always", "volumeMounts": mount,
               "startupProbe": {"exec": {"command": ["test", "-f", "/shared/up"]},
                                "periodSeconds": 1, "timeoutSeconds": 10,
                                "failureThreshold": 60}}
    app = sh("app", "test -f /shared/up || exit 1; while :; do sleep 1 & wait $!; done",
             volumeMounts=mount)
    spec = pod("gated", [app], restartPolicy="Never", initContainers=[sidecar],
               terminationGracePeriodSeconds=2, volumes=[{"name": "shared", "emptyDir": {}}])
    await api.create(kinds.POD, "default", spec)
    ready = await pod_where(api, "gated", lambda p: conditions.is_true(p, "Ready") or
                            (p.get("status") or {}).get("phase") == "Failed",
                            what="pod gated ready or failed", timeout=120)
    assert ready["status"]["phase"] == "Running", ready["status"]
    side = status_of(ready, "slow", init=True)
    assert side["started"] is True and side["restartCount"] == 0
    started = parse_time(side["state"]["running"]["startedAt"])
    app_started = parse_time(status_of(ready, "app")["state"]["running"]["startedAt"])
    assert app_started - started >= 2.5  # after the sidecar's 3 s (whole seconds)
    await api.delete(kinds.POD, "default", "gated", grace=0)


def exec_in(dockerc: docker.DockerClient, c: Cluster, pod_name: str, container: str,
            command: list[str]) -> None:
    """Run `command` in a running container of the pod through the engine, as a user
    would with `docker exec`."""
    found = dockerc.containers.list(filters={"label": [
        f"{ds.CLUSTER}={local.cluster_id(c.state_dir)}", f"{ds.POD_NAME}={pod_name}",
        f"{ds.CONTAINER_NAME}={container}", f"{ds.KIND}={ds.CONTAINER}"]})
    assert len(found) == 1, f"running containers {container} of pod {pod_name}: {found}"
    code, output = found[0].exec_run(command)
    assert code == 0, output


async def test_a_sidecars_readiness_and_liveness_probes_run(
        dcluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    """The sidecar's readiness holds the pod's Ready condition (the app has none); its
    failed liveness probe restarts it, told as Killing, and the app runs on."""
    sidecar = {**sh("probed", "touch /tmp/healthy; while :; do sleep 1 & wait $!; done"),
               "restartPolicy": "Always",
               # Generous timeouts: an exec that times out on a loaded machine fails
               # the probe, and a liveness kill then would start a sidecar afresh.
               "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]},
                                  "periodSeconds": 1, "timeoutSeconds": 10},
               "livenessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]},
                                 "periodSeconds": 1, "timeoutSeconds": 10,
                                 "failureThreshold": 2}}
    app = sh("app", "while :; do sleep 1 & wait $!; done")
    spec = pod("probed", [app], initContainers=[sidecar], terminationGracePeriodSeconds=2)
    await api.create(kinds.POD, "default", spec)
    unready = await pod_where(api, "probed", lambda p: "running" in status_of(
        p, "app").get("state", {}), what="pod probed's app running", timeout=120)
    ready = next(c for c in unready["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready.get("message")) == (
        "False", "containers with unready status: [probed]"), ready
    exec_in(dockerc, dcluster, "probed", "probed", ["touch", "/tmp/ready"])
    await pod_where(api, "probed", lambda p: conditions.is_true(p, "Ready"),
                    what="pod probed ready", timeout=60)

    exec_in(dockerc, dcluster, "probed", "probed", ["rm", "/tmp/healthy"])
    after = await pod_where(api, "probed", lambda p: status_of(
        p, "probed", init=True).get("restartCount", 0) >= 1 and "running" in status_of(
        p, "probed", init=True).get("state", {}), what="the sidecar restarted", timeout=60)
    assert status_of(after, "app")["restartCount"] == 0
    listed = await api.list(kinds.EVENT, "default")
    told = [(e.get("reason"), e.get("message")) for e in listed["items"]
            if (e.get("involvedObject") or {}).get("name") == "probed"]
    assert ("Killing", "Container probed failed liveness probe, will be restarted") in told
    await api.delete(kinds.POD, "default", "probed", grace=0)
