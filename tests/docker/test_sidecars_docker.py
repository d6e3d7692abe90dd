"""Kubernetes' sidecars on the real engine: an init container with `restartPolicy:
Always` starts first and keeps running beside the app, which reaches it on localhost;
the init container after it starts once it runs; the pod ends when its app ends, and
its sidecar is stopped then."""

from __future__ import annotations

import pytest

from raftkube.api import kinds
from raftkube.client import rest
from tests.cluster.harness import Cluster
from tests.docker.test_docker_pods import pod, pod_where, sh

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
