"""What the object API promises, each through the real server: every field users write
round-trips, `rk apply` keeps what the system owns, a node's rights end where its own
objects do, field selectors, a configured ClusterIP range, and old revisions compacted
automatically (then 410 Gone for a watch or a page from before them)."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from aiohttp import test_utils
from click.testing import CliRunner, Result

from raftkube.apiserver import app as apiapp
from raftkube.cli import kubectl
from raftkube.store import replica as rep
from tests.support import contains
from tests.unit.conftest import LEADER_DEADLINE, NODE_TOKEN, TOKEN, Served
from tests.unit.test_rest import call, ok

pytestmark = pytest.mark.unit

NS = "/api/v1/namespaces/default"
APPS = "/apis/apps/v1/namespaces/default"
LEASES = "/apis/coordination.k8s.io/v1/namespaces/raftkube-system/leases"
NODE = {"Authorization": f"Bearer {NODE_TOKEN}"}
MERGE = {"Content-Type": "application/merge-patch+json"}


CONTAINER = {
    "name": "c", "image": "nginx:1.25", "command": ["sh"], "args": ["-c", "sleep 1"],
    "workingDir": "/w", "imagePullPolicy": "IfNotPresent",
    "env": [{"name": "A", "value": "1"},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k",
                                                            "optional": True}}},
            {"name": "C", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {"name": "D", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    "envFrom": [{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "s"}, "prefix": "S_"}],
    "ports": [{"name": "http", "containerPort": 80, "hostPort": 8080, "protocol": "UDP"}],
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                  "limits": {"cpu": "1.5", "memory": "1G"}},
    "volumeMounts": [{"name": "e", "mountPath": "/e", "readOnly": True}],
    "livenessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 1,
                      "periodSeconds": 2, "timeoutSeconds": 3, "failureThreshold": 4,
                      "successThreshold": 1},
    "readinessProbe": {"httpGet": {"path": "/", "port": "http", "scheme": "HTTP"},
                       "timeoutSeconds": 2},
    "startupProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 30},
}
POD_SPEC = {
    "containers": [CONTAINER],
    "volumes": [{"name": "e", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "h", "hostPath": {"path": "/tmp", "type": "Directory"}},
                {"name": "c", "configMap": {"name": "cm", "items": [{"key": "k", "path": "p"}]}},
                {"name": "s", "secret": {"secretName": "s", "optional": True}}],
    "restartPolicy": "OnFailure", "nodeSelector": {"disk": "ssd"},
    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
    "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute",
                     "tolerationSeconds": 5}],
    "terminationGracePeriodSeconds": 7,
}


def template(restart: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "d"}}, "spec": {**POD_SPEC, "restartPolicy": restart}}


@pytest.mark.parametrize(("path", "body"), [
    (APPS + "/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"app": "d"}, "annotations": {"x.io/y": "z"},
                     "finalizers": ["x.io/f"]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": template("Always"),
                 "strategy": {"type": "RollingUpdate",
                              "rollingUpdate": {"maxSurge": 2, "maxUnavailable": "10%"}},
                 "revisionHistoryLimit": 3, "minReadySeconds": 4,
                 "progressDeadlineSeconds": 50, "paused": True}}),
    (APPS + "/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "recreate"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template("Always"),
                 "strategy": {"type": "Recreate"}}}),
    ("/apis/batch/v1/namespaces/default/jobs", {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"completions": 3, "parallelism": 2, "backoffLimit": 1,
                 "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 10,
                 "template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}}),
    (NS + "/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "NodePort", "selector": {"app": "d"}, "ports": [
            {"name": "web", "port": 80, "targetPort": "http", "nodePort": 30123,
             "protocol": "TCP"},
            {"name": "b", "port": 81, "targetPort": 8081}]}}),
    (NS + "/pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "p-"},
                    "spec": POD_SPEC}),
    (APPS + "/replicasets", {
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "d"}},
                 "template": template("Always")}}),
    (APPS + "/daemonsets", {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "ds"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": template("Always")}}),
], ids=["deployment", "recreate", "job", "service", "pod", "replicaset", "daemonset"])
async def test_every_field_users_write_round_trips(
        served: Served, path: str, body: dict[str, Any]) -> None:
    status, made = await call(served, "POST", path, copy.deepcopy(body))
    assert status == 201, made
    got = await ok(served, "GET", path + "/" + made["metadata"]["name"])
    assert contains(got, body) == []
    meta = got["metadata"]
    assert meta["creationTimestamp"].endswith("Z") and meta["uid"] and meta["generation"] == 1
    if "generateName" in body["metadata"]:
        assert meta["name"].startswith("p-") and len(meta["name"]) == 7


def rk_cli(*args: str) -> Result:
    group = click.Group("rk")
    kubectl.register(group)
    return CliRunner().invoke(group, list(args))


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: auto}
spec:
  selector: {matchLabels: {app: auto}}
  template:
    metadata: {labels: {app: auto}}
    spec:
      containers: [{name: c, image: "nginx:1", env: [{name: A, value: "1"}]}]
---
apiVersion: v1
kind: Service
metadata: {name: np}
spec:
  type: NodePort
  selector: {app: auto}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


async def test_rk_apply_keeps_what_the_system_and_others_own(
        served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "servers": [str(served.client.make_url("")).rstrip("/")], "token": served.token}))
    monkeypatch.setenv("RK_CONFIG", str(config))
    f = tmp_path / "m.yaml"
    f.write_text(MANIFEST)
    first = await asyncio.to_thread(rk_cli, "apply", "-f", str(f))
    assert (first.exit_code, first.stdout) == (0, "deployment.apps/auto created\n"
                                                  "service/np created\n"), first.stderr
    deploy, svc = APPS + "/deployments/auto", NS + "/services/np"
    await ok(served, "PATCH", deploy, {"spec": {"replicas": 5}}, headers=MERGE)  # a scaler
    await ok(served, "PATCH", deploy + "/status", {"status": {"readyReplicas": 2}},
             headers=MERGE)
    node_port = (await ok(served, "GET", svc))["spec"]["ports"][0]["nodePort"]
    again = await asyncio.to_thread(rk_cli, "apply", "-f", str(f))
    assert again.stdout == "deployment.apps/auto unchanged\nservice/np unchanged\n"
    f.write_text(MANIFEST.replace('value: "1"', 'value: "2"').replace("8080", "9090"))
    changed = await asyncio.to_thread(rk_cli, "apply", "-f", str(f))
    assert changed.stdout == "deployment.apps/auto configured\nservice/np configured\n"
    d, s = await ok(served, "GET", deploy), await ok(served, "GET", svc)
    assert d["spec"]["replicas"] == 5 and d["status"]["readyReplicas"] == 2
    assert d["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "A",
                                                                      "value": "2"}]
    assert s["spec"]["ports"][0] == {"name": "http", "port": 80, "targetPort": 9090,
                                     "protocol": "TCP", "nodePort": node_port}
    # kubectl's words from the real server, and the other commands.
    missing = await asyncio.to_thread(rk_cli, "get", "pods", "nope")
    assert (missing.exit_code, missing.stderr) == (
        1, 'Error from server (NotFound): pods "nope" not found\n')
    names = await asyncio.to_thread(rk_cli, "get", "deploy,svc", "-A", "-o", "name")
    assert names.stdout == "deployment.apps/auto\nservice/np\n"
    gone = await asyncio.to_thread(rk_cli, "delete", "-f", str(f))
    assert gone.stdout == 'deployment.apps "auto" deleted\nservice "np" deleted\n'
    assert (await call(served, "GET", deploy))[0] == 404


def node_pod(name: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]}}


def lease(name: str) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name}, "spec": {"holderIdentity": name}}


async def test_a_node_writes_only_what_is_its_own(served: Served) -> None:
    await ok(served, "POST", NS + "/pods", node_pod("mine", "n1"))
    await ok(served, "POST", NS + "/pods", node_pod("theirs", "n2"))
    await ok(served, "POST", LEASES, lease("n2"))
    allowed = [
        ("POST", LEASES, lease("n1")), ("PATCH", LEASES + "/n1", {"spec": {"renewTime": "x"}}),
        ("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                   "metadata": {"name": "n1"}}),
        ("PATCH", NS + "/pods/mine/status", {"status": {"phase": "Running"}}),
        ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1", None),
        ("GET", NS + "/services", None),
        ("POST", NS + "/events", {"apiVersion": "v1", "kind": "Event", "metadata": {
            "name": "e"}, "involvedObject": {"kind": "Pod", "name": "mine"}}),
    ]
    refused = [
        ("POST", LEASES, lease("n3")), ("PATCH", LEASES + "/n2", {"spec": {"renewTime": "x"}}),
        ("PATCH", NS + "/pods/theirs/status", {"status": {"phase": "Failed"}}),
        ("PATCH", NS + "/pods/mine", {"metadata": {"labels": {"a": "b"}}}),
        ("DELETE", NS + "/pods/theirs", None),
        ("POST", NS + "/pods", node_pod("new", "n1")),
        ("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                   "metadata": {"name": "n2"}}),
    ]
    for method, path, body in allowed + refused:
        headers = {**NODE, **(MERGE if method == "PATCH" else {})}
        status, out = await call(served, method, path, body, headers=headers, auth=False)
        want = (200, 201) if (method, path, body) in allowed else (403,)
        assert status in want, (method, path, status, out)


async def test_field_selectors_on_phase_and_namespace(served: Served) -> None:
    for name, phase in (("a", "Running"), ("b", "Pending")):
        await ok(served, "POST", NS + "/pods", node_pod(name, "n1"))
        await ok(served, "PATCH", NS + f"/pods/{name}/status", {"status": {"phase": phase}},
                 headers=MERGE)
    running = await ok(served, "GET", "/api/v1/pods?fieldSelector=status.phase%3DRunning,"
                                      "metadata.namespace%3Ddefault")
    assert [p["metadata"]["name"] for p in running["items"]] == ["a"]
    elsewhere = await ok(served, "GET", "/api/v1/pods?fieldSelector=metadata.namespace%3Dx")
    assert elsewhere["items"] == []


async def test_cluster_ips_come_from_the_configured_range(replica: rep.Replica) -> None:
    app = apiapp.make_app(replica, token=TOKEN, node_tokens={}, service_cidr="172.20.0.0/29")
    client = test_utils.TestClient(test_utils.TestServer(app))
    await client.start_server()
    try:
        await asyncio.wait_for(asyncio.shield(app[apiapp.SETUP]), LEADER_DEADLINE)
        s = Served(replica=replica, client=client, token=TOKEN)
        ips = []
        for i in range(5):  # .2 to .6: the network, .1 and the broadcast are never given
            made = await ok(s, "POST", NS + "/services", {
                "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
                "spec": {"ports": [{"port": 80}]}})
            ips.append(made["spec"]["clusterIP"])
        assert sorted(ips) == [f"172.20.0.{n}" for n in range(2, 7)]
        status, out = await call(s, "POST", NS + "/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "full"},
            "spec": {"ports": [{"port": 80}]}})
        assert status == 500 and "no ClusterIP is free in 172.20.0.0/29" in out["message"]
        status, out = await call(s, "POST", NS + "/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "outside"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}})
        assert status == 422 and "not in the valid range" in out["message"]
    finally:
        await client.close()


async def test_old_revisions_are_compacted_automatically(served: Served) -> None:
    served.replica.history_revisions = 20
    first = await ok(served, "POST", NS + "/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c0"}})
    page: dict[str, Any] = {}
    for i in range(1, 40):
        await ok(served, "POST", NS + "/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}})
        if i == 6:  # a page taken early, whose next page is read after the compaction
            page = await ok(served, "GET", NS + "/configmaps?limit=5")
    # The leader compacts every 5 s. A compaction may also land while the writes above
    # still go on (they take longer than 5 s on a loaded machine): wait for one that
    # came after them, which keeps no more than the 20 revisions asked for.
    async with asyncio.timeout(30):
        while (s := served.replica.state).revision - s.compact_revision > 21 or \
                s.compact_revision <= int(first["metadata"]["resourceVersion"]):
            await asyncio.sleep(0.2)
    assert served.replica.state.revision - served.replica.state.compact_revision <= 21
    status, out = await call(served, "GET", NS + "/configmaps?watch=true&resourceVersion="
                             + first["metadata"]["resourceVersion"])
    assert status == 410 and out["reason"] == "Gone", (status, out)
    status, out = await call(served, "GET", NS + "/configmaps?limit=5&continue="
                             + page["metadata"]["continue"])
    assert status == 410 and out["reason"] == "Gone", (status, out)
