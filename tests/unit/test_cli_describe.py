"""`rk describe`, `explain`, `api-resources`, `cluster status`, `config view` and
`completion`, as pure rendering: fixture objects (or the server's own discovery and
OpenAPI documents, built without a server) in, kubectl's lines out, at a fixed clock.
The same commands on a real cluster: tests/cluster/test_cli_describe_cluster.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from raftkube.api import kinds
from raftkube.apiserver import openapi
from raftkube.apiserver import rest as apirest
from raftkube.cli import cluster, describers, describetext, discovery, shellconfig
from raftkube.cli.main import main
from raftkube.client import config as cfg
from raftkube.client import errors

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def lines(text: str) -> list[str]:
    return text.splitlines()


def norm(text: str) -> list[str]:
    """The lines with their indentation kept and runs of spaces inside made one: the
    alignment depends on the neighbouring lines, which test_align_* checks."""
    out = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        out.append(" " * (len(line) - len(body)) + " ".join(body.split()))
    return out


# ---- the tab writer --------------------------------------------------------------------

def test_align_pads_each_column_over_its_block_as_gos_tabwriter() -> None:
    out = describetext.align(["Name:\tweb", "Namespace:\tdefault", "Containers:",
                              "  web:", "    Image:\tnginx", "    Port:\t80/TCP",
                              "a\tbb\tc", "aaa\tb\tc"])
    # A line without a tab ends a block; the second column is aligned within the first's.
    assert out == ["Name:       web", "Namespace:  default", "Containers:", "  web:",
                   "    Image:  nginx", "    Port:   80/TCP", "a           bb  c",
                   "aaa         b   c"]


def test_multiline_labels_and_none() -> None:
    w = describetext.Writer()
    describetext.multiline(w, 0, "Labels", ["a=1", "b=2"])
    describetext.multiline(w, 0, "Annotations", [])
    assert lines(w.text()) == ["Labels:       a=1", "              b=2",
                               "Annotations:  <none>"]


@pytest.mark.parametrize(("probe", "text"), [
    ({"httpGet": {"path": "/", "port": 8080}},
     "http-get http://:8080/ delay=0s timeout=1s period=10s #success=1 #failure=3"),
    ({"httpGet": {"path": "/healthz", "port": "http", "host": "10.0.0.1",
                  "scheme": "HTTPS"}, "initialDelaySeconds": 5, "periodSeconds": 3},
     "http-get https://10.0.0.1:http/healthz delay=5s timeout=1s period=3s #success=1 "
     "#failure=3"),
    ({"exec": {"command": ["cat", "/tmp/ready"]}, "failureThreshold": 1},
     "exec [cat /tmp/ready] delay=0s timeout=1s period=10s #success=1 #failure=1"),
    ({"tcpSocket": {"port": 5432}, "timeoutSeconds": 2},
     "tcp-socket :5432 delay=0s timeout=2s period=10s #success=1 #failure=3"),
    ({"grpc": {"port": 9000}}, "grpc <pod>:9000  delay=0s timeout=1s period=10s "
                               "#success=1 #failure=3"),
])
def test_probes_in_kubectls_one_line_form(probe: Obj, text: str) -> None:
    assert describetext.probe_text(probe) == text


@pytest.mark.parametrize(("toleration", "text"), [
    ({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
      "tolerationSeconds": 300}, "node.kubernetes.io/not-ready:NoExecute op=Exists for 300s"),
    ({"key": "gpu", "operator": "Equal", "value": "yes", "effect": "NoSchedule"},
     "gpu=yes:NoSchedule"),
    ({"operator": "Exists"}, "op=Exists"),
])
def test_tolerations(toleration: Obj, text: str) -> None:
    assert describetext.toleration_text(toleration) == text


# ---- pods ------------------------------------------------------------------------------

def web_pod() -> Obj:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "uid": "p1",
                     "labels": {"app": "web", "tier": "fe"},
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}",
                                     "team": "blue"},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": "web-abc",
                                          "controller": True, "uid": "rs1"}],
                     "creationTimestamp": "2026-01-01T11:00:00Z"},
        "spec": {"nodeName": "n1", "priority": 0, "nodeSelector": {"disk": "ssd"},
                 "containers": [{
                     "name": "web", "image": "nginx:1", "command": ["nginx"],
                     "ports": [{"containerPort": 8080}],
                     "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                     "livenessProbe": {"httpGet": {"path": "/", "port": 8080}},
                     "readinessProbe": {"exec": {"command": ["cat", "/tmp/x"]},
                                        "periodSeconds": 5},
                     "env": [{"name": "A", "value": "1"},
                             {"name": "PW", "valueFrom": {"secretKeyRef": {
                                 "name": "db", "key": "pw"}}}],
                     "volumeMounts": [{"name": "data", "mountPath": "/data",
                                       "readOnly": True}]}],
                 "volumes": [{"name": "data", "emptyDir": {}},
                             {"name": "conf", "configMap": {"name": "web-conf"}}],
                 "tolerations": [{"key": "node.kubernetes.io/not-ready",
                                  "operator": "Exists", "effect": "NoExecute",
                                  "tolerationSeconds": 300}]},
        "status": {
            "phase": "Running", "hostIP": "10.0.0.1", "podIP": "10.244.0.5",
            "podIPs": [{"ip": "10.244.0.5"}], "startTime": "2026-01-01T11:00:00Z",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{
                "name": "web", "ready": True, "restartCount": 2, "containerID": "sim://x",
                "imageID": "sha256:1",
                "state": {"running": {"startedAt": "2026-01-01T11:30:00Z"}},
                "lastState": {"terminated": {"reason": "Error", "exitCode": 1,
                                             "startedAt": "2026-01-01T11:00:00Z",
                                             "finishedAt": "2026-01-01T11:29:00Z"}}}]}}


EVENTS = [
    {"type": "Warning", "reason": "BackOff", "message": "Back-off restarting  ",
     "source": {"component": "kubelet", "host": "n1"}, "count": 4,
     "firstTimestamp": "2026-01-01T11:10:00Z", "lastTimestamp": "2026-01-01T11:50:00Z"},
    {"type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/web-1",
     "source": {"component": "default-scheduler"}, "count": 1,
     "firstTimestamp": "2026-01-01T11:00:00Z", "lastTimestamp": "2026-01-01T11:00:00Z"},
]


def test_pod_in_kubectls_layout() -> None:
    text = describers.describe("Pod", web_pod(), describers.Related(events=EVENTS), NOW)
    got = lines(text)
    assert got[:6] == ["Name:             web-1", "Namespace:        default",
                       "Priority:         0", "Service Account:  default",
                       "Node:             n1/10.0.0.1",
                       "Start Time:       Thu, 01 Jan 2026 11:00:00 +0000"]
    flat = norm(text)
    for line in ["Labels: app=web", "                  tier=fe", "Annotations: team: blue",
                 "Status: Running", "IP: 10.244.0.5", "  IP: 10.244.0.5",
                 "Controlled By: ReplicaSet/web-abc", "Containers:", "  web:",
                 "    Container ID: sim://x", "    Image: nginx:1", "    Image ID: sha256:1",
                 "    Port: 8080/TCP", "    Host Port: 0/TCP", "    Command:", "      nginx",
                 "    State: Running", "      Started: Thu, 01 Jan 2026 11:30:00 +0000",
                 "    Last State: Terminated", "      Reason: Error", "      Exit Code: 1",
                 "      Finished: Thu, 01 Jan 2026 11:29:00 +0000",
                 "    Ready: True", "    Restart Count: 2", "    Limits:", "      cpu: 100m",
                 "      memory: 64Mi",
                 "    Liveness: http-get http://:8080/ delay=0s timeout=1s period=10s "
                 "#success=1 #failure=3",
                 "    Readiness: exec [cat /tmp/x] delay=0s timeout=1s period=5s "
                 "#success=1 #failure=3",
                 "    Environment:", "      A: 1",
                 "      PW: <set to the key 'pw' in secret 'db'> Optional: false",
                 "    Mounts:", "      /data from data (ro)", "Conditions:", "  Type Status",
                 "  Ready True", "Volumes:", "  data:",
                 "    Type: EmptyDir (a temporary directory that shares a pod's lifetime)",
                 "    SizeLimit: <unset>", "  conf:",
                 "    Type: ConfigMap (a volume populated by a ConfigMap)",
                 "    Name: web-conf", "    Optional: false",
                 "QoS Class: Guaranteed", "Node-Selectors: disk=ssd",
                 "Tolerations: node.kubernetes.io/not-ready:NoExecute op=Exists for 300s",
                 "Events:", "  Type Reason Age From Message",
                 "  ---- ------ ---- ---- -------"]:
        assert line in flat, (line, text)
    # The tab writer's blocks: a line without a tab ends one.
    assert "Controlled By:  ReplicaSet/web-abc" in got
    assert "    Limits:" in got and "      cpu:      100m" in got
    # Oldest first; a repeated event says how often and over how long.
    assert got[-2:] == [
        "  Normal   Scheduled  60m                default-scheduler  Successfully "
        "assigned default/web-1",
        "  Warning  BackOff    10m (x4 over 50m)  kubelet            Back-off restarting"]
    assert "last-applied" not in text


def test_pod_without_status_events_or_volumes() -> None:
    p: Obj = {"metadata": {"name": "p", "namespace": "ns1", "deletionTimestamp":
                           "2026-01-01T11:59:30Z"},
              "spec": {"containers": [{"name": "c", "image": "busybox"}]},
              "status": {"phase": "Pending", "containerStatuses": [
                  {"name": "c", "state": {"waiting": {"reason": "ContainerCreating"}}}]}}
    got = lines(describers.describe("Pod", p, describers.Related(events=[]), NOW))
    flat = norm("\n".join(got))
    for line in ["Node: <none>", "Status: Terminating (lasts 30s)", "IPs: <none>",
                 "    State: Waiting", "      Reason: ContainerCreating", "    Ready: False",
                 "    Port: <none>", "Volumes: <none>", "QoS Class: BestEffort"]:
        assert line in flat, line
    assert flat[-1] == "Events: <none>"
    # Events that could not be read are left out rather than shown as none.
    assert "Events" not in describers.describe("Pod", p, describers.Related(), NOW)


# ---- workloads -------------------------------------------------------------------------

TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "web:2",
                                     "ports": [{"containerPort": 80}]}]}}


def replica_set(name: str, revision: int, replicas: int, image: str) -> Obj:
    template = {"metadata": {"labels": {"app": "web", "pod-template-hash": name[-3:]}},
                "spec": {"containers": [{"name": "web", "image": image,
                                         "ports": [{"containerPort": 80}]}]}}
    return {"metadata": {"name": name, "annotations": {
                "deployment.kubernetes.io/revision": str(revision)}},
            "spec": {"replicas": replicas, "template": template},
            "status": {"replicas": replicas}}


def test_deployment_replicas_template_and_replicasets() -> None:
    d = {"metadata": {"name": "web", "namespace": "default", "uid": "d1",
                      "creationTimestamp": "2026-01-01T10:00:00Z"},
         "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                  "strategy": {"type": "RollingUpdate",
                               "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                  "template": TEMPLATE},
         "status": {"replicas": 4, "updatedReplicas": 2, "availableReplicas": 3,
                    "unavailableReplicas": 1,
                    "conditions": [{"type": "Progressing", "status": "True",
                                    "reason": "ReplicaSetUpdated"}]}}
    rel = describers.Related(events=[], replicasets=[
        replica_set("web-old", 1, 2, "web:1"), replica_set("web-new", 2, 2, "web:2"),
        replica_set("web-gone", 0, 0, "web:0")])
    got = norm(describers.describe("Deployment", d, rel, NOW))
    for line in ["Selector: app=web",
                 "Replicas: 3 desired | 2 updated | 4 total | 3 available | 1 unavailable",
                 "StrategyType: RollingUpdate",
                 "RollingUpdateStrategy: 0 max unavailable, 1 max surge", "Pod Template:",
                 "  Labels: app=web", "  Containers:", "   web:", "    Image: web:2",
                 "    Port: 80/TCP", "  Volumes: <none>", "  Tolerations: <none>",
                 "  Type Status Reason", "  ---- ------ ------",
                 "  Progressing True ReplicaSetUpdated",
                 "OldReplicaSets: web-old (2/2 replicas created)",
                 "NewReplicaSet: web-new (2/2 replicas created)"]:
        assert line in got, line


def test_replicaset_daemonset_and_job_counts() -> None:
    pods = [{"status": {"phase": ph}} for ph in ("Running", "Running", "Pending", "Failed")]
    rs = {"metadata": {"name": "web-abc", "namespace": "default", "ownerReferences": [
              {"kind": "Deployment", "name": "web", "controller": True}]},
          "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [
              {"key": "tier", "operator": "In", "values": ["a", "b"]}]}, "template": TEMPLATE},
          "status": {"replicas": 4}}
    got = norm(describers.describe("ReplicaSet", rs, describers.Related(pods=pods), NOW))
    assert "Selector: app=web,tier in (a,b)" in got
    assert "Controlled By: Deployment/web" in got
    assert "Replicas: 4 current / 3 desired" in got
    assert "Pods Status: 2 Running / 1 Waiting / 0 Succeeded / 1 Failed" in got
    ds = {"metadata": {"name": "agent", "namespace": "kube-system"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": TEMPLATE},
          "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                     "numberAvailable": 1}}
    got = lines(describers.describe("DaemonSet", ds, describers.Related(), NOW))
    assert any(line.startswith("Desired Number of Nodes Scheduled:") and line.endswith(" 2")
               for line in got)
    assert any(line.startswith("Number of Nodes Scheduled with Available Pods:")
               and line.endswith(" 1") for line in got)
    job = {"metadata": {"name": "pi", "namespace": "default"},
           "spec": {"completions": 3, "parallelism": 2, "backoffLimit": 4,
                    "template": TEMPLATE},
           "status": {"active": 1, "ready": 1, "succeeded": 2,
                      "startTime": "2026-01-01T11:58:00Z"}}
    got = norm(describers.describe("Job", job, describers.Related(), NOW))
    assert "Completions: 3" in got and "Backoff Limit: 4" in got
    assert "Duration: 2m" in got and "Completion Mode: NonIndexed" in got
    assert "Pods Statuses: 1 Active (1 Ready) / 2 Succeeded / 0 Failed" in got


# ---- services and nodes ----------------------------------------------------------------

def test_service_ports_and_endpoints_from_slices() -> None:
    svc = {"metadata": {"name": "web", "namespace": "default"},
           "spec": {"type": "NodePort", "selector": {"app": "web"}, "clusterIP": "10.96.0.10",
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                               "nodePort": 30080},
                              {"name": "admin", "port": 9000, "targetPort": 9000}]}}
    endpoints = [{"addresses": [f"10.244.0.{i}"], "conditions": {"ready": True}}
                 for i in range(1, 6)]
    endpoints.append({"addresses": ["10.244.9.9"], "conditions": {"ready": False}})
    slices = [{"ports": [{"name": "http", "port": 8080}], "endpoints": endpoints}]
    text = describers.describe("Service", svc, describers.Related(events=[], slices=slices),
                               NOW)
    got = norm(text)
    for line in ["Selector: app=web", "Type: NodePort", "IP: 10.96.0.10", "IPs: 10.96.0.10",
                 "Port: http 80/TCP", "TargetPort: 8080/TCP", "NodePort: http 30080/TCP",
                 "Endpoints: 10.244.0.1:8080,10.244.0.2:8080,10.244.0.3:8080 + 2 more...",
                 "Port: admin 9000/TCP", "Endpoints: <none>", "Session Affinity: None",
                 "External Traffic Policy: Cluster", "Events: <none>"]:
        assert line in got, line
    # kubectl's columns: the port's name is a cell of its own.
    assert "Port:                     http  80/TCP" in lines(text)
    assert "10.244.9.9" not in "\n".join(got)


def test_node_taints_pods_and_allocated_resources() -> None:
    node = {"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"},
                                {"key": "node.kubernetes.io/unreachable",
                                 "effect": "NoExecute"}], "unschedulable": True,
                     "podCIDR": "10.244.1.0/24"},
            "status": {"capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                       "conditions": [{"type": "Ready", "status": "True",
                                       "reason": "KubeletReady", "message": "ok",
                                       "lastHeartbeatTime": "2026-01-01T11:59:00Z",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "nodeInfo": {"kernelVersion": "6.1", "architecture": "amd64"}}}
    pod = {"metadata": {"name": "web-1", "namespace": "default",
                        "creationTimestamp": "2026-01-01T11:00:00Z"},
           "spec": {"containers": [{"name": "web", "resources": {
               "requests": {"cpu": "1", "memory": "1Gi"},
               "limits": {"cpu": "2", "memory": "2Gi"}}}]},
           "status": {"phase": "Running"}}
    done = {"metadata": {"name": "old", "namespace": "default"},
            "status": {"phase": "Succeeded"}}
    text = describers.describe("Node", node, describers.Related(events=[], pods=[pod, done]),
                               NOW)
    got = norm(text)
    for line in ["Roles: worker", "Taints: gpu=yes:NoSchedule",
                 "                    node.kubernetes.io/unreachable:NoExecute",
                 "Unschedulable: true", "  InternalIP: 10.0.0.1", "  Kernel Version: 6.1",
                 "  Ready True Thu, 01 Jan 2026 11:59:00 +0000 Thu, 01 Jan 2026 00:00:00 "
                 "+0000 KubeletReady ok", "PodCIDR: 10.244.1.0/24",
                 "Non-terminated Pods: (1 in total)",
                 "  Namespace Name CPU Requests CPU Limits Memory Requests Memory Limits Age",
                 "  cpu 1 (25%) 2 (50%)", "  memory 1Gi (12%) 2Gi (25%)", "Events: <none>"]:
        assert line in got, (line, text)
    row = next(line for line in got if "web-1" in line)
    assert row.split() == ["default", "web-1", "1", "(25%)", "2", "(50%)", "1Gi", "(12%)",
                           "2Gi", "(25%)", "60m"]
    assert "old" not in text.replace("Unschedulable", "")


def test_secret_shows_sizes_only_and_configmap_its_data() -> None:
    secret = {"metadata": {"name": "db", "namespace": "default"}, "type": "Opaque",
              "data": {"password": "aHVudGVyMg=="}}
    text = describers.describe("Secret", secret, describers.Related(), NOW)
    assert "password:  7 bytes" in lines(text) and "hunter2" not in text
    assert "aHVudGVyMg" not in text
    cm = {"metadata": {"name": "conf", "namespace": "default"},
          "data": {"mode": "fast", "app.conf": "a=1\nb=2"}}
    got = lines(describers.describe("ConfigMap", cm, describers.Related(events=[]), NOW))
    i = got.index("app.conf:")
    assert got[i:i + 4] == ["app.conf:", "----", "a=1", "b=2"]
    assert "mode:" in got and "BinaryData" in got


def test_namespace_and_the_generic_fallback() -> None:
    got = lines(describers.describe("Namespace", {"metadata": {"name": "team"},
                                                  "status": {"phase": "Active"}},
                                    describers.Related(), NOW))
    assert got[:4] == ["Name:         team", "Labels:       <none>", "Annotations:  <none>",
                       "Status:       Active"]
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "n1", "namespace": "kube-node-lease", "uid": "u"},
             "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 40,
                      "renewTime": "2026-01-01T11:59:00.000000Z"}}
    got = norm(describers.describe("Lease", lease, describers.Related(events=[]), NOW))
    for line in ["Name: n1", "Namespace: kube-node-lease", "API Version: coordination.k8s.io/v1",
                 "Kind: Lease", "Metadata:", "  UID: u", "Spec:", "  Holder Identity: n1",
                 "  Lease Duration Seconds: 40", "Events: <none>"]:
        assert line in got, (line, got)


# ---- api-resources and explain, from the server's own documents -----------------------

def server_lists() -> list[Obj]:
    """What `resource_lists` reads, built by the API server's own functions."""
    out = [apirest.discovery_group("/api/v1")]
    for group in apirest.discovery_root("/apis")["groups"]:
        out.append(apirest.discovery_group(f"/apis/{group['preferredVersion']['groupVersion']}"))
    return out


def test_api_resources_rows_and_filters() -> None:
    rows = discovery.resource_rows(server_lists(), output=None, namespaced=None,
                                   api_group=None)
    assert rows[0] == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    assert ["pods", "po", "v1", "true", "Pod"] in rows
    assert ["deployments", "deploy", "apps/v1", "true", "Deployment"] in rows
    assert not any("/" in r[0] for r in rows)  # no subresources
    names = discovery.resource_rows(server_lists(), output="name", namespaced=False,
                                    api_group=None)
    assert ["nodes"] in names and ["namespaces"] in names and ["pods"] not in names
    apps = discovery.resource_rows(server_lists(), output="wide", namespaced=None,
                                   api_group="apps", headers=False)
    assert {r[0] for r in apps} == {"deployments", "replicasets", "daemonsets"}
    assert apps[0][5].startswith("[create delete") and "all" in {r[6] for r in apps}
    core = discovery.resource_rows(server_lists(), output="name", namespaced=None,
                                   api_group="")
    assert ["pods"] in core and ["deployments.apps"] not in core


def v3(gv: str) -> Obj:
    doc: Obj = json.loads(openapi.v3_documents()[gv][0])
    return doc


def test_explain_a_kind_and_a_field_path() -> None:
    text = discovery.explain_text(v3("api/v1"), kinds.POD, [])
    got = lines(text)
    assert got[:4] == ["KIND:       Pod", "VERSION:    v1", "", "DESCRIPTION:"]
    assert "FIELDS:" in got and "  spec\t<PodSpec>" in got and "  metadata\t<ObjectMeta>" in got
    assert all(len(line) <= discovery.WIDTH for line in got)
    text = discovery.explain_text(v3("apis/apps/v1"), kinds.DEPLOYMENT,
                                  ["spec", "template", "spec", "containers"])
    got = lines(text)
    assert got[:5] == ["KIND:       Deployment", "VERSION:    apps/v1", "",
                       "FIELD: containers <[]Container>", ""]
    assert "  image\t<string>" in got and "  livenessProbe\t<Probe>" in got
    text = discovery.explain_text(v3("api/v1"), kinds.POD,
                                  ["spec", "containers", "image"])
    assert "FIELD: image <string>" in text and "FIELDS:" not in text


def test_explain_recursive_and_unknown_fields() -> None:
    got = lines(discovery.explain_text(v3("api/v1"), kinds.SERVICE, ["spec"], recursive=True))
    assert "  ports\t<[]Object>" in got or any(line.startswith("  ports\t<[]") for line in got)
    assert any(line.startswith("    port\t<") for line in got)
    with pytest.raises(errors.ClientError, match='field "nope" does not exist in pod.spec'):
        discovery.explain_text(v3("api/v1"), kinds.POD, ["spec", "nope"])


# ---- cluster status --------------------------------------------------------------------

def member(name: str, ident: str) -> Obj:
    return {"ID": ident, "name": name, "peerURLs": [f"http://127.0.0.1:70{ident}"],
            "clientURLs": [f"https://127.0.0.1:60{ident}"]}


def status(term: int, leader: str, commit: int = 20) -> Obj:
    return {"header": {"raft_term": str(term), "revision": "9"}, "leader": leader,
            "raftTerm": str(term), "raftIndex": str(commit), "raftAppliedIndex": str(commit)}


def test_cluster_status_all_answer() -> None:
    masters = [cluster.from_answers(member("m1", "1"), status(3, "2"), "ok"),
               cluster.from_answers(member("m2", "2"), status(3, "2"), "ok"),
               cluster.from_answers(member("m3", "3"), status(3, "2", 19), "ok")]
    summary = cluster.summarize(masters)
    assert summary == cluster.Summary(masters=3, answering=3, quorum=2, margin=1, leader="m2")
    assert summary.code == cluster.EXIT_OK and not cluster.warnings(summary)
    got = lines(cluster.render(masters, summary))
    assert got[0].split() == ["NAME", "API", "RAFT", "ROLE", "TERM", "REVISION", "COMMIT",
                              "APPLIED", "HEALTH"]
    assert got[2].split() == ["m2", "https://127.0.0.1:602", "127.0.0.1:702", "leader", "3",
                              "9", "20", "20", "ok"]
    assert got[3].split()[3:7] == ["follower", "3", "9", "19"]
    assert got[-1] == "3 of 3 masters answer; a quorum is 2: 1 more master may fail."


def test_cluster_status_with_one_down_and_with_no_quorum() -> None:
    masters = [cluster.from_answers(member("m1", "1"), status(4, "1"), "ok"),
               cluster.from_answers(member("m2", "2"), None, None),
               cluster.from_answers(member("m3", "3"), status(4, "1"), "ok")]
    summary = cluster.summarize(masters)
    assert (summary.margin, summary.leader, summary.code) == (0, "m1", cluster.EXIT_OK)
    got = lines(cluster.render(masters, summary))
    assert got[2].split()[3:] == ["unreachable", "-", "-", "-", "-", "unreachable"]
    assert got[-1] == "2 of 3 masters answer; a quorum is 2: 0 more masters may fail."
    alone = [cluster.from_answers(member("m1", "1"), status(4, "0"),
                                  "not ready: no leader known"),
             cluster.from_answers(member("m2", "2"), None, None),
             cluster.from_answers(member("m3", "3"), None, None)]
    summary = cluster.summarize(alone)
    assert summary.code == cluster.EXIT_NO_QUORUM and alone[0].role == "no leader"
    assert lines(cluster.render(alone, summary))[-1] == (
        "1 of 3 masters answer; a quorum is 2: no writes until 1 more master answers.")


def test_a_dead_leader_that_the_others_still_name_is_no_leader() -> None:
    # Within an election timeout of the leader's death, the survivors still name it.
    masters = [cluster.from_answers(member("m1", "1"), status(4, "2"), "ok"),
               cluster.from_answers(member("m2", "2"), None, None),
               cluster.from_answers(member("m3", "3"), status(4, "2"), "ok")]
    summary = cluster.summarize(masters)
    assert (summary.margin, summary.leader, summary.code) == (0, "", cluster.EXIT_NO_QUORUM)
    assert "No master knows a leader" in cluster.render(masters, summary)


def test_cluster_status_warns_on_an_even_count() -> None:
    masters = [cluster.from_answers(member(f"m{i}", str(i)), status(1, "1"), "ok")
               for i in range(1, 5)]
    summary = cluster.summarize(masters)
    assert (summary.quorum, summary.margin) == (3, 1)
    assert "4 masters tolerate no more failures than 3" in cluster.warnings(summary)[0]


# ---- commands that need no server ------------------------------------------------------

def test_config_view_redacts_unless_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"servers": ["http://127.0.0.1:1"], "token": "s3cret",
                                    "namespace": "team"}))
    monkeypatch.setenv("RK_CONFIG", str(path))
    runner = CliRunner()
    shown = runner.invoke(main, ["config", "view"])
    assert shown.exit_code == 0, shown.output
    assert yaml.safe_load(shown.output) == {"servers": ["http://127.0.0.1:1"],
                                            "token": "REDACTED", "namespace": "team"}
    raw = runner.invoke(main, ["config", "view", "--raw", "-o", "json"])
    assert json.loads(raw.output)["token"] == "s3cret"
    assert shellconfig.view(cfg.Config(["https://a"], "t", ca="PEM"), raw=False)["ca"] == \
        "DATA+OMITTED"
    monkeypatch.setenv("RK_CONFIG", str(tmp_path / "missing.yaml"))
    missing = runner.invoke(main, ["config", "view"])
    assert missing.exit_code == 1 and "cannot read config" in missing.output


def test_completion_scripts_and_a_bad_shell() -> None:
    runner = CliRunner()
    for shell, mark in (("bash", "complete -o nosort -F _rk_completion rk"),
                        ("zsh", "#compdef rk"), ("fish", "complete --no-files --command rk")):
        out = runner.invoke(main, ["completion", shell])
        assert out.exit_code == 0 and mark in out.output, (shell, out.output)
    bad = runner.invoke(main, ["completion", "tcsh"])
    assert bad.exit_code == 2 and "'tcsh' is not one of" in bad.output


def test_describe_without_a_kind_and_version_of_the_client_alone() -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["describe"])
    assert out.exit_code == 1
    assert "You must specify the type of resource to describe" in out.output
    out = runner.invoke(main, ["describe", "nosuchkind", "x"])
    assert out.exit_code == 1
    assert 'the server doesn\'t have a resource type "nosuchkind"' in out.output
    out = runner.invoke(main, ["version", "--client"])
    assert out.exit_code == 0 and out.output.startswith("Client Version: v1.30.0-raftkube")
    out = runner.invoke(main, ["version", "--client", "-o", "json"])
    assert json.loads(out.output)["clientVersion"]["major"] == "1"
    out = runner.invoke(main, ["explain", "nosuchkind"])
    assert out.exit_code == 1 and "nosuchkind" in out.output
