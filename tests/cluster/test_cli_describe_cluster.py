"""`rk describe`, `api-resources`, `explain`, `version` and `cluster status` on a real
cluster (3 masters, 2 simulated nodes), run as a user runs them. The rendering itself is
tested from fixtures in tests/unit/test_cli_describe.py; here the objects, their Events,
the discovery and OpenAPI documents and the masters' answers are the server's own.
`cluster status` goes last: it SIGKILLs the leader."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster.harness import Cluster, rk, started

pytestmark = pytest.mark.cluster

WEB = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: web:1
        ports: [{containerPort: 8080}]
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 200m}}
        livenessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 5}
        env: [{name: MODE, value: prod}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Event
metadata: {name: n1.rebooted, namespace: default}
involvedObject: {kind: Node, name: n1, uid: n1}
reason: Rebooted
message: Node n1 has been rebooted
type: Warning
source: {component: kubelet, host: n1}
count: 1
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "describe", agents=2)


def flat(text: str) -> list[str]:
    """Lines with their indentation, and runs of spaces inside made one."""
    out = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        out.append(" " * (len(line) - len(body)) + " ".join(body.split()))
    return out


def until(c: Cluster, args: list[str], test: Any, *, timeout: float = 30
          ) -> subprocess.CompletedProcess[str]:
    """`rk ARGS` again until `test(result)` holds (a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        result = rk(c, *args)
        if test(result):
            return result
        assert time.monotonic() < deadline, (args, result.returncode, result.stdout,
                                             result.stderr)
        time.sleep(0.3)


def test_describe_objects_with_their_events(cluster: Cluster) -> None:
    rk(cluster, "apply", "-f", "-", stdin=WEB, check=True)
    deploy = until(cluster, ["describe", "deploy", "web"],
                   lambda r: "2 desired | 2 updated | 2 total | 2 available" in
                   " ".join(r.stdout.split()) and "ScalingReplicaSet" in r.stdout)
    lines = flat(deploy.stdout)
    assert lines[:2] == ["Name: web", "Namespace: default"]
    for line in ["Selector: app=web", "StrategyType: RollingUpdate",
                 "RollingUpdateStrategy: 25% max unavailable, 25% max surge",
                 "Pod Template:", "  Containers:", "   web:", "    Image: web:1",
                 "    Liveness: http-get http://:8080/healthz delay=0s timeout=1s period=5s "
                 "#success=1 #failure=3", "OldReplicaSets: <none>",
                 "  Type Reason Age From Message"]:
        assert line in lines, (line, deploy.stdout)
    assert any(x.startswith("NewReplicaSet: web-") and x.endswith("(2/2 replicas created)")
               for x in lines)
    assert any(x.startswith("  Available True") for x in lines)

    # Every pod of the selector, each with its own Events.
    pods = until(cluster, ["describe", "pods", "-l", "app=web"],
                 lambda r: r.stdout.count("Started container web") == 2)
    assert pods.stdout.count("\nName: ") + pods.stdout.startswith("Name:") == 2
    lines = flat(pods.stdout)
    for line in ["Status: Running", "    State: Running", "    Ready: True",
                 "    Restart Count: 0", "    Requests:", "      cpu: 100m",
                 "      MODE: prod", "QoS Class: Burstable", "  Ready True"]:
        assert line in lines, (line, pods.stdout)
    assert any(x.startswith("Controlled By: ReplicaSet/web-") for x in lines)
    assert any(x.startswith("Node: n") and "/" in x for x in lines)
    assert any(x.split()[:2] == ["Normal", "Scheduled"] for x in lines)
    # A name prefix stands for every pod it begins, as in kubectl.
    prefixed = rk(cluster, "describe", "pod", "web-")
    assert prefixed.returncode == 0 and prefixed.stdout.count("Controlled By:") == 2

    svc = until(cluster, ["describe", "svc/web"],
                lambda r: r.stdout.count(":8080") == 2)
    lines = flat(svc.stdout)
    for line in ["Type: ClusterIP", "Port: http 80/TCP", "TargetPort: 8080/TCP",
                 "Session Affinity: None", "Events: <none>"]:
        assert line in lines, (line, svc.stdout)
    endpoints = next(x for x in lines if x.startswith("Endpoints: "))
    assert sorted(e.split(":")[1] for e in endpoints.split()[1].split(",")) == ["8080"] * 2

    node = rk(cluster, "describe", "node", "n1")
    assert node.returncode == 0, node.stderr
    lines = flat(node.stdout)
    for line in ["Name: n1", "Unschedulable: false", "Taints: <none>", "Capacity:",
                 "System Info:", "Allocated resources:",
                 "  Warning Rebooted", "Non-terminated Pods: "]:
        assert any(x.startswith(line) for x in lines), (line, node.stdout)
    assert any(x.startswith("  Ready True") for x in lines)
    assert any("Node n1 has been rebooted" in x for x in lines)

    missing = rk(cluster, "describe", "pod", "nosuch")
    assert missing.returncode == 1
    assert 'Error from server (NotFound): pods "nosuch" not found' in missing.stderr
    bad = rk(cluster, "describe", "widgets", "x")
    assert bad.returncode == 1
    assert 'error: the server doesn\'t have a resource type "widgets"' in bad.stderr


def test_api_resources_explain_and_version(cluster: Cluster) -> None:
    table = rk(cluster, "api-resources", check=True).stdout.splitlines()
    assert table[0].split() == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert ["deployments", "deploy", "apps/v1", "true", "Deployment"] in \
        [row.split() for row in table]
    names = rk(cluster, "api-resources", "-o", "name", "--namespaced=false",
               check=True).stdout.split()
    assert "nodes" in names and "namespaces" in names and "pods" not in names
    wrong = rk(cluster, "api-resources", "--namespaced=maybe")
    assert wrong.returncode == 2 and "--namespaced" in wrong.stderr

    explained = rk(cluster, "explain", "deploy.spec.template.spec.containers", check=True)
    lines = explained.stdout.splitlines()
    assert lines[:4] == ["KIND:       Deployment", "VERSION:    apps/v1", "",
                         "FIELD: containers <[]Container>"]
    assert "  image\t<string>" in lines
    recursive = rk(cluster, "explain", "pods", "--recursive", check=True).stdout
    assert "  spec\t<PodSpec>" in recursive and "    containers\t<[]Container>" in recursive
    nope = rk(cluster, "explain", "pods.spec.nope")
    assert nope.returncode == 1
    assert 'error: field "nope" does not exist in pod.spec' in nope.stderr

    version = rk(cluster, "version", check=True).stdout.splitlines()
    assert version == ["Client Version: v1.30.0-raftkube", "Server Version: v1.30.0-raftkube"]
    doc = json.loads(rk(cluster, "version", "-o", "json", check=True).stdout)
    assert doc["serverVersion"]["major"] == "1" and doc["clientVersion"]["minor"] == "30"


def test_cluster_status_all_three_then_the_leader_killed(cluster: Cluster) -> None:
    healthy = until(cluster, ["cluster", "status"],
                    lambda r: r.returncode == 0 and r.stdout.count(" ok\n") == 3)
    rows = [line.split() for line in healthy.stdout.splitlines()[1:4]]
    assert [r[0] for r in rows] == ["m1", "m2", "m3"]
    assert sorted(r[3] for r in rows) == ["follower", "follower", "leader"]
    assert len({r[4] for r in rows}) == 1  # one term
    assert healthy.stdout.splitlines()[-1] == \
        "3 of 3 masters answer; a quorum is 2: 1 more master may fail."
    leader = next(r[0] for r in rows if r[3] == "leader")
    old_term = int(rows[0][4])
    alias = rk(cluster, "members")
    assert alias.returncode == 0 and alias.stdout.splitlines()[0] == \
        healthy.stdout.splitlines()[0]

    cluster.kill(leader)
    # Both survivors ready: the one that voted has heard the new leader's first append
    # (for a heartbeat after the election it says "no leader", and the status is 0).
    after = until(cluster, ["cluster", "status"],
                  lambda r: r.returncode == 0 and r.stdout.count(" ok\n") == 2)
    rows = {line.split()[0]: line.split() for line in after.stdout.splitlines()[1:4]}
    assert rows[leader][3:] == ["unreachable", "-", "-", "-", "-", "unreachable"]
    alive = [r for name, r in rows.items() if name != leader]
    assert sorted(r[3] for r in alive) == ["follower", "leader"]
    assert all(int(r[4]) > old_term for r in alive)
    assert after.stdout.splitlines()[-1] == \
        "2 of 3 masters answer; a quorum is 2: 0 more masters may fail."
    as_json = json.loads(rk(cluster, "cluster", "status", "-o", "json", check=True).stdout)
    assert as_json["summary"]["margin"] == 0 and as_json["summary"]["code"] == 0
