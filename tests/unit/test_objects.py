"""Tests of `raftkube.api`: kinds, defaults, validation, selectors, quantities, merge patches.

Everything under test is pure, so the tests are tables and properties. The anchor is the
Kubernetes documentation's own example manifests: each must pass validation after
defaulting with no cause at all, and defaulting must only add to what the user wrote.
Then a table of bad objects, each a small change to one of those manifests, names the
exact (field, reason) pairs it must produce, and no others; messages are pinned where
users read them. Hypothesis then checks the promises that tables cannot: validation never
raises on any JSON, defaulting is idempotent, and the merge patches round-trip.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from raftkube.api import defaults, kinds, merge, names, quantity, schema, selectors, validation

pytestmark = pytest.mark.unit

Obj = dict[str, Any]

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_FOUND = "FieldValueNotFound"
REASONS = {REQUIRED, INVALID, NOT_SUPPORTED, DUPLICATE, FORBIDDEN, TYPE_INVALID, NOT_FOUND,
           "FieldValueTooLong"}

# ---- the Kubernetes documentation's examples ---------------------------------------------

DOCS = {
    "Deployment": """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
""",
    "Service": """
apiVersion: v1
kind: Service
metadata:
  name: my-service
spec:
  selector:
    app.kubernetes.io/name: MyApp
  ports:
    - protocol: TCP
      port: 80
      targetPort: 9376
""",
    "ConfigMap": """
apiVersion: v1
kind: ConfigMap
metadata:
  name: game-demo
data:
  # property-like keys; each key maps to a simple value
  player_initial_lives: "3"
  ui_properties_file_name: "user-interface.properties"

  # file-like keys
  game.properties: |
    enemy.types=aliens,monsters
    player.maximum-lives=5
  user-interface.properties: |
    color.good=purple
    color.bad=yellow
    allow.textmode=true
""",
    "Secret": """
apiVersion: v1
kind: Secret
metadata:
  name: mysecret
type: Opaque
stringData:
  config.yaml: |
    apiUrl: "https://my.api.com/api/v1"
    username: <user>
    password: <password>
""",
    "Job": """
apiVersion: batch/v1
kind: Job
metadata:
  name: pi
spec:
  template:
    spec:
      containers:
      - name: pi
        image: perl:5.34.0
        command: ["perl",  "-Mbignum=bpi", "-wle", "print bpi(2000)"]
      restartPolicy: Never
  backoffLimit: 4
""",
    "Pod": """
apiVersion: v1
kind: Pod
metadata:
  name: nginx
spec:
  containers:
  - name: nginx
    image: nginx:1.14.2
    ports:
    - containerPort: 80
""",
    "DaemonSet": """
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: fluentd-elasticsearch
  namespace: kube-system
  labels:
    k8s-app: fluentd-logging
spec:
  selector:
    matchLabels:
      name: fluentd-elasticsearch
  template:
    metadata:
      labels:
        name: fluentd-elasticsearch
    spec:
      tolerations:
      # these tolerations are to have the daemonset runnable on control plane nodes
      # remove them if your control plane nodes should not run pods
      - key: node-role.kubernetes.io/control-plane
        operator: Exists
        effect: NoSchedule
      - key: node-role.kubernetes.io/master
        operator: Exists
        effect: NoSchedule
      containers:
      - name: fluentd-elasticsearch
        image: quay.io/fluentd_elasticsearch/fluentd:v2.5.2
        resources:
          limits:
            memory: 200Mi
          requests:
            cpu: 100m
            memory: 200Mi
        volumeMounts:
        - name: varlog
          mountPath: /var/log
      terminationGracePeriodSeconds: 30
      volumes:
      - name: varlog
        hostPath:
          path: /var/log
""",
    "Namespace": """
apiVersion: v1
kind: Namespace
metadata:
  name: development
  labels:
    name: development
""",
    # Not from the documentation, but the kinds raftkube itself writes.
    "Node": """
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {kubernetes.io/hostname: n1}
spec:
  taints: [{key: node.kubernetes.io/unreachable, effect: NoExecute}]
status:
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  allocatable: {cpu: 3900m, memory: 7.5Gi, pods: "110"}
  addresses: [{type: InternalIP, address: 127.0.0.1}]
""",
    "Lease": """
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: n1, namespace: kube-node-lease}
spec: {holderIdentity: n1, leaseDurationSeconds: 40, renewTime: "2024-05-01T12:00:00.000000Z"}
""",
    "Event": """
apiVersion: v1
kind: Event
metadata: {name: nginx.17b2a0c1, namespace: default}
involvedObject: {kind: Pod, name: nginx, namespace: default, apiVersion: v1}
reason: Scheduled
message: Successfully assigned default/nginx to n1
type: Normal
count: 1
source: {component: default-scheduler}
""",
}


def doc(kind: str) -> Obj:
    loaded: Obj = yaml.safe_load(DOCS[kind])
    return loaded


def defaulted(kind: str) -> Obj:
    return defaults.apply_defaults(doc(kind))


def pairs(causes: list[validation.Cause]) -> set[tuple[str, str]]:
    return {(c.field, c.reason) for c in causes}


def shown(causes: list[validation.Cause]) -> str:
    return "\n".join(str(c) for c in causes) or "(no causes)"


def assert_only_adds(original: Any, result: Any, path: str = "") -> None:
    """Every value the user wrote is still there, unchanged."""
    if isinstance(original, dict):
        assert isinstance(result, dict), path
        for k, v in original.items():
            assert k in result, f"{path}.{k} was removed"
            assert_only_adds(v, result[k], f"{path}.{k}")
    elif isinstance(original, list):
        assert isinstance(result, list) and len(result) == len(original), path
        for i, (a, b) in enumerate(zip(original, result, strict=True)):
            assert_only_adds(a, b, f"{path}[{i}]")
    else:
        assert merge.same(original, result), f"{path}: {original!r} became {result!r}"


@pytest.mark.parametrize("kind", sorted(DOCS))
def test_documentation_examples_validate_after_defaulting_and_keep_what_the_user_wrote(
        kind: str) -> None:
    original = doc(kind)
    before = copy.deepcopy(original)
    result = defaults.apply_defaults(original)
    assert original == before, "apply_defaults changed its input"
    assert validation.validate(result) == [], shown(validation.validate(result))
    if kind == "Secret":
        # The one change Kubernetes makes to what the user wrote: stringData becomes data.
        plain = original.pop("stringData")
        assert "stringData" not in result
        assert {k: base64.b64decode(v).decode() for k, v in result["data"].items()} == plain
    assert_only_adds(original, result)
    assert defaults.apply_defaults(result) == result


def test_defaults_of_the_nginx_deployment_are_kubernetes_own() -> None:
    d = defaulted("Deployment")
    assert d["spec"]["strategy"] == {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
    assert d["spec"]["revisionHistoryLimit"] == 10
    assert d["spec"]["progressDeadlineSeconds"] == 600
    pod = d["spec"]["template"]["spec"]
    assert {k: pod[k] for k in ("restartPolicy", "dnsPolicy", "terminationGracePeriodSeconds",
                                "schedulerName", "securityContext")} == {
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
        "terminationGracePeriodSeconds": 30, "schedulerName": "default-scheduler",
        "securityContext": {}}
    assert pod["containers"][0] == {
        "name": "nginx", "image": "nginx:1.14.2", "imagePullPolicy": "IfNotPresent",
        "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {},
        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}
    # Identity is the server's business.
    assert set(d["metadata"]) == {"name", "labels"}


def test_defaults_per_kind() -> None:
    job = defaulted("Job")["spec"]
    assert (job["completions"], job["parallelism"], job["backoffLimit"], job["completionMode"],
            job["suspend"]) == (1, 1, 4, "NonIndexed", False)
    assert "selector" not in job and job["template"]["spec"]["restartPolicy"] == "Never"
    ds = defaulted("DaemonSet")["spec"]
    assert ds["updateStrategy"] == {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["revisionHistoryLimit"] == 10
    assert ds["template"]["spec"]["volumes"][0]["hostPath"] == {"path": "/var/log", "type": ""}
    svc = defaulted("Service")["spec"]
    assert (svc["type"], svc["sessionAffinity"], svc["internalTrafficPolicy"]) == (
        "ClusterIP", "None", "Cluster")
    assert svc["ports"] == [{"protocol": "TCP", "port": 80, "targetPort": 9376}]
    assert defaulted("Secret")["type"] == "Opaque"
    assert defaulted("Namespace")["spec"] == {"finalizers": ["kubernetes"]}
    assert "namespace" not in defaulted("Pod")["metadata"]


@pytest.mark.parametrize(("image", "policy"), [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.14.2", "IfNotPresent"),
    ("localhost:5000/nginx", "Always"), ("localhost:5000/nginx:1.2", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"), ("raftkube/busybox:latest", "Always"),
])
def test_image_pull_policy_follows_the_tag(image: str, policy: str) -> None:
    pod = doc("Pod")
    pod["spec"]["containers"][0]["image"] = image
    assert defaults.apply_defaults(pod)["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_defaults_inside_containers_volumes_and_services() -> None:
    pod = doc("Pod")
    pod["spec"]["containers"][0].update(
        imagePullPolicy="Never",
        livenessProbe={"httpGet": {"port": 80}, "initialDelaySeconds": 5},
        env=[{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}])
    pod["spec"]["volumes"] = [{"name": "a"}, {"name": "b", "configMap": {"name": "cm"}},
                              {"name": "c", "secret": {"secretName": "s", "defaultMode": 256}}]
    out = defaults.apply_defaults(pod)["spec"]
    c = out["containers"][0]
    assert c["imagePullPolicy"] == "Never"
    assert c["livenessProbe"] == {"httpGet": {"port": 80, "scheme": "HTTP"},
                                  "initialDelaySeconds": 5, "timeoutSeconds": 1,
                                  "periodSeconds": 10, "successThreshold": 1,
                                  "failureThreshold": 3}
    assert c["env"][0]["valueFrom"]["fieldRef"] == {"fieldPath": "spec.nodeName",
                                                    "apiVersion": "v1"}
    assert out["volumes"] == [{"name": "a", "emptyDir": {}},
                              {"name": "b", "configMap": {"name": "cm", "defaultMode": 420}},
                              {"name": "c", "secret": {"secretName": "s", "defaultMode": 256}}]
    svc = doc("Service")
    svc["spec"].update(type="NodePort", ports=[{"port": 80}, {"port": 81, "targetPort": "web"}])
    out = defaults.apply_defaults(svc)["spec"]
    assert out["externalTrafficPolicy"] == "Cluster"
    assert [p["targetPort"] for p in out["ports"]] == [80, "web"]


def test_defaults_of_jobs_and_strategies_follow_kubernetes_rules() -> None:
    job = doc("Job")
    job["spec"]["parallelism"] = 5  # a work queue: completions stays unset
    assert "completions" not in defaults.apply_defaults(job)["spec"]
    job = doc("Job")
    job["spec"]["completions"] = 5
    assert defaults.apply_defaults(job)["spec"]["parallelism"] == 1
    job = doc("Job")
    del job["spec"]["template"]["spec"]["restartPolicy"]
    assert "restartPolicy" not in defaults.apply_defaults(job)["spec"]["template"]["spec"]
    deploy = doc("Deployment")
    deploy["spec"]["strategy"] = {"type": "Recreate"}
    assert defaults.apply_defaults(deploy)["spec"]["strategy"] == {"type": "Recreate"}
    deploy["spec"]["strategy"] = {"rollingUpdate": {"maxSurge": 1}}
    assert defaults.apply_defaults(deploy)["spec"]["strategy"] == {
        "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}


def test_secret_string_data_wins_over_data_and_input_is_untouched() -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"user": base64.b64encode(b"old").decode(), "keep": "a2VlcA=="},
              "stringData": {"user": "new", "pass": "p@ss wörd"}}
    before = copy.deepcopy(secret)
    out = defaults.apply_defaults(secret)
    assert secret == before
    assert {k: base64.b64decode(v).decode() for k, v in out["data"].items()} == {
        "user": "new", "pass": "p@ss wörd", "keep": "keep"}
    assert "stringData" not in out and out["type"] == "Opaque"


# ---- bad objects -------------------------------------------------------------------------

DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def changed(kind: str, changes: dict[str, Any]) -> Obj:
    """A documentation example with `changes` ({"a.b[0].c": value}) made; DELETE removes."""
    obj = doc(kind)
    for path, value in changes.items():
        steps: list[str | int] = [int(i) if i else k for k, i in _STEP.findall(path)]
        node: Any = obj
        for step in steps[:-1]:
            if isinstance(step, str) and step not in node:
                node[step] = {}
            node = node[step]
        last = steps[-1]
        if value is DELETE:
            del node[last]
        elif isinstance(last, int) and last == len(node):
            node.append(copy.deepcopy(value))
        else:
            node[last] = copy.deepcopy(value)
    return obj


D, T = "spec.template.spec", "spec.template.spec.containers[0]"
C = "spec.containers[0]"
BAD: list[tuple[str, str, dict[str, Any], set[tuple[str, str]]]] = [
    # metadata
    ("name not a subdomain", "Pod", {"metadata.name": "Foo_Bar"}, {("metadata.name", INVALID)}),
    ("name missing", "ConfigMap", {"metadata.name": DELETE}, {("metadata.name", REQUIRED)}),
    ("name too long", "ConfigMap", {"metadata.name": "a" * 254}, {("metadata.name", INVALID)}),
    ("namespace name with a dot", "Namespace", {"metadata.name": "a.b"},
     {("metadata.name", INVALID)}),
    ("namespace name of 64", "Namespace", {"metadata.name": "a" * 64},
     {("metadata.name", INVALID)}),
    ("service name starts with a digit", "Service", {"metadata.name": "1svc"},
     {("metadata.name", INVALID)}),
    ("bad generateName", "ConfigMap", {"metadata.name": DELETE, "metadata.generateName": "Cfg-"},
     {("metadata.generateName", INVALID)}),
    ("namespace not a label", "Pod", {"metadata.namespace": "Team_A"},
     {("metadata.namespace", INVALID)}),
    ("namespace on a cluster kind", "Node", {"metadata.namespace": "default"},
     {("metadata.namespace", FORBIDDEN)}),
    ("label key with a space", "Pod", {"metadata.labels": {"bad key": "x"}},
     {("metadata.labels", INVALID)}),
    ("label key with an empty prefix", "Pod", {"metadata.labels": {"/app": "x"}},
     {("metadata.labels", INVALID)}),
    ("label value too long", "Pod", {"metadata.labels": {"app": "x" * 64}},
     {("metadata.labels", INVALID)}),
    ("label value not a string", "Pod", {"metadata.labels": {"replicas": 3}},
     {("metadata.labels[replicas]", TYPE_INVALID)}),
    ("labels a list", "Pod", {"metadata.labels": ["app"]}, {("metadata.labels", TYPE_INVALID)}),
    ("annotation key", "Pod", {"metadata.annotations": {"a/b/c": "x"}},
     {("metadata.annotations", INVALID)}),
    ("owner without uid or kind", "Pod",
     {"metadata.ownerReferences": [{"apiVersion": "apps/v1", "name": "rs"}]},
     {("metadata.ownerReferences[0].uid", INVALID), ("metadata.ownerReferences[0].kind", INVALID)}),
    ("two controllers", "Pod", {"metadata.ownerReferences": [
        {"apiVersion": "v1", "kind": "A", "name": n, "uid": n, "controller": True}
        for n in ("a", "b")]}, {("metadata.ownerReferences", INVALID)}),
    ("no apiVersion nor kind", "Pod", {"apiVersion": DELETE, "kind": DELETE},
     {("apiVersion", REQUIRED), ("kind", REQUIRED)}),
    ("unknown kind", "ConfigMap", {"kind": "ConfigMapp"}, {("kind", INVALID)}),
    # pod spec
    ("no containers", "Pod", {"spec.containers": []}, {("spec.containers", REQUIRED)}),
    ("containers a map", "Pod", {"spec.containers": {"name": "x"}},
     {("spec.containers", TYPE_INVALID)}),
    ("spec a list", "Pod", {"spec": []}, {("spec", TYPE_INVALID)}),
    ("image missing", "Pod", {f"{C}.image": DELETE}, {(f"{C}.image", REQUIRED)}),
    ("image with a space", "Pod", {f"{C}.image": "nginx "}, {(f"{C}.image", INVALID)}),
    ("container name missing", "Pod", {f"{C}.name": DELETE}, {(f"{C}.name", REQUIRED)}),
    ("container name not a label", "Pod", {f"{C}.name": "Web_1"}, {(f"{C}.name", INVALID)}),
    ("duplicate container names", "Pod",
     {"spec.containers[1]": {"name": "nginx", "image": "busybox"}},
     {("spec.containers[1].name", DUPLICATE)}),
    ("init container named like a container", "Pod",
     {"spec.initContainers": [{"name": "nginx", "image": "busybox"}]},
     {("spec.containers[0].name", DUPLICATE)}),
    ("pull policy", "Pod", {f"{C}.imagePullPolicy": "Sometimes"},
     {(f"{C}.imagePullPolicy", NOT_SUPPORTED)}),
    ("restart policy", "Pod", {"spec.restartPolicy": "Sometimes"},
     {("spec.restartPolicy", NOT_SUPPORTED)}),
    ("dns policy", "Pod", {"spec.dnsPolicy": "Google"}, {("spec.dnsPolicy", NOT_SUPPORTED)}),
    ("negative grace period", "Pod", {"spec.terminationGracePeriodSeconds": -1},
     {("spec.terminationGracePeriodSeconds", INVALID)}),
    ("zero active deadline", "Pod", {"spec.activeDeadlineSeconds": 0},
     {("spec.activeDeadlineSeconds", INVALID)}),
    ("container port zero", "Pod", {f"{C}.ports[0].containerPort": 0},
     {(f"{C}.ports[0].containerPort", REQUIRED)}),
    ("container port too big", "Pod", {f"{C}.ports[0].containerPort": 70000},
     {(f"{C}.ports[0].containerPort", INVALID)}),
    ("container port a string", "Pod", {f"{C}.ports[0].containerPort": "80"},
     {(f"{C}.ports[0].containerPort", TYPE_INVALID)}),
    ("host port too big", "Pod", {f"{C}.ports[0].hostPort": 65536},
     {(f"{C}.ports[0].hostPort", INVALID)}),
    ("port protocol", "Pod", {f"{C}.ports[0].protocol": "HTTP"},
     {(f"{C}.ports[0].protocol", NOT_SUPPORTED)}),
    ("duplicate port names", "Pod", {f"{C}.ports": [{"name": "web", "containerPort": 80},
                                                   {"name": "web", "containerPort": 81}]},
     {(f"{C}.ports[1].name", DUPLICATE)}),
    ("bad quantity", "Pod", {f"{C}.resources": {"limits": {"memory": "12XB"}}},
     {(f"{C}.resources.limits[memory]", INVALID)}),
    ("negative quantity", "Pod", {f"{C}.resources": {"requests": {"cpu": "-1"}}},
     {(f"{C}.resources.requests[cpu]", INVALID)}),
    ("quantity a list", "Pod", {f"{C}.resources": {"requests": {"cpu": [1]}}},
     {(f"{C}.resources.requests[cpu]", TYPE_INVALID)}),
    ("request above limit", "Pod",
     {f"{C}.resources": {"requests": {"cpu": "2", "memory": "64Mi"},
                         "limits": {"cpu": "1500m", "memory": "1Gi"}}},
     {(f"{C}.resources.requests[cpu]", INVALID)}),
    ("unknown resource", "Pod", {f"{C}.resources": {"limits": {"gpu": "1"}}},
     {(f"{C}.resources.limits[gpu]", INVALID)}),
    ("env without name", "Pod", {f"{C}.env": [{"value": "x"}]}, {(f"{C}.env[0].name", REQUIRED)}),
    ("env name with =", "Pod", {f"{C}.env": [{"name": "A=B"}]}, {(f"{C}.env[0].name", INVALID)}),
    ("env from two sources", "Pod", {f"{C}.env": [{"name": "A", "valueFrom": {
        "configMapKeyRef": {"name": "c", "key": "k"}, "secretKeyRef": {"name": "s", "key": "k"}}}]},
     {(f"{C}.env[0].valueFrom", INVALID)}),
    ("env from nothing", "Pod", {f"{C}.env": [{"name": "A", "valueFrom": {}}]},
     {(f"{C}.env[0].valueFrom", INVALID)}),
    ("env key ref without key", "Pod",
     {f"{C}.env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s"}}}]},
     {(f"{C}.env[0].valueFrom.secretKeyRef.key", REQUIRED)}),
    ("env field path", "Pod",
     {f"{C}.env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
     {(f"{C}.env[0].valueFrom.fieldRef.fieldPath", NOT_SUPPORTED)}),
    ("probe without handler", "Pod", {f"{C}.livenessProbe": {"periodSeconds": 5}},
     {(f"{C}.livenessProbe", REQUIRED)}),
    ("probe with two handlers", "Pod", {f"{C}.readinessProbe": {
        "httpGet": {"port": 80}, "tcpSocket": {"port": 80}}},
     {(f"{C}.readinessProbe.tcpSocket", FORBIDDEN)}),
    ("probe timings", "Pod", {f"{C}.livenessProbe": {
        "exec": {"command": ["true"]}, "periodSeconds": -1, "initialDelaySeconds": -5}},
     {(f"{C}.livenessProbe.periodSeconds", INVALID),
      (f"{C}.livenessProbe.initialDelaySeconds", INVALID)}),
    ("liveness success threshold", "Pod", {f"{C}.livenessProbe": {
        "tcpSocket": {"port": "web"}, "successThreshold": 2}},
     {(f"{C}.livenessProbe.successThreshold", INVALID)}),
    ("probe port name", "Pod", {f"{C}.readinessProbe": {"httpGet": {"port": "Web_Port"}}},
     {(f"{C}.readinessProbe.httpGet.port", INVALID)}),
    ("duplicate volumes", "Pod", {"spec.volumes": [{"name": "v", "emptyDir": {}},
                                                   {"name": "v", "emptyDir": {}}]},
     {("spec.volumes[1].name", DUPLICATE)}),
    ("volume with two sources", "Pod", {"spec.volumes": [
        {"name": "v", "emptyDir": {}, "hostPath": {"path": "/tmp"}}]},
     {("spec.volumes[0].hostPath", FORBIDDEN)}),
    ("host path without path", "Pod", {"spec.volumes": [{"name": "v", "hostPath": {}}]},
     {("spec.volumes[0].hostPath.path", REQUIRED)}),
    ("config map volume without name", "Pod", {"spec.volumes": [{"name": "v", "configMap": {}}]},
     {("spec.volumes[0].configMap.name", REQUIRED)}),
    ("secret volume mode", "Pod", {"spec.volumes": [
        {"name": "v", "secret": {"secretName": "s", "defaultMode": 1000}}]},
     {("spec.volumes[0].secret.defaultMode", INVALID)}),
    ("mount of a missing volume", "Pod",
     {f"{C}.volumeMounts": [{"name": "data", "mountPath": "/data"}]},
     {(f"{C}.volumeMounts[0].name", NOT_FOUND)}),
    ("mount without path", "Pod", {"spec.volumes": [{"name": "v", "emptyDir": {}}],
                                   f"{C}.volumeMounts": [{"name": "v"}]},
     {(f"{C}.volumeMounts[0].mountPath", REQUIRED)}),
    ("toleration operator", "Pod", {"spec.tolerations": [{"key": "k", "operator": "Maybe"}]},
     {("spec.tolerations[0].operator", NOT_SUPPORTED)}),
    ("toleration Exists with a value", "Pod",
     {"spec.tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
     {("spec.tolerations[0].operator", INVALID)}),
    ("toleration without key must be Exists", "Pod", {"spec.tolerations": [{"value": "v"}]},
     {("spec.tolerations[0].operator", INVALID)}),
    ("toleration effect", "Pod", {"spec.tolerations": [
        {"key": "k", "operator": "Exists", "effect": "NoRun"}]},
     {("spec.tolerations[0].effect", NOT_SUPPORTED)}),
    ("no node selector terms", "Pod", {"spec.affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}},
     {("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
       ".nodeSelectorTerms", REQUIRED)}),
    ("node selector In without values", "Pod", {"spec.affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In"}]}]}}}},
     {("spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
       ".nodeSelectorTerms[0].matchExpressions[0].values", REQUIRED)}),
    ("node selector label", "Pod", {"spec.nodeSelector": {"disk": "s s d"}},
     {("spec.nodeSelector", INVALID)}),
    # workloads
    ("template restart policy", "Deployment", {f"{D}.restartPolicy": "Never"},
     {(f"{D}.restartPolicy", NOT_SUPPORTED)}),
    ("daemonset restart policy", "DaemonSet", {f"{D}.restartPolicy": "OnFailure"},
     {(f"{D}.restartPolicy", NOT_SUPPORTED)}),
    ("template image missing", "Deployment", {f"{T}.image": ""}, {(f"{T}.image", REQUIRED)}),
    ("selector missing", "Deployment", {"spec.selector": DELETE}, {("spec.selector", REQUIRED)}),
    ("selector empty", "Deployment", {"spec.selector": {}}, {("spec.selector", INVALID)}),
    ("selector does not match", "Deployment", {"spec.selector.matchLabels": {"app": "web"}},
     {("spec.template.metadata.labels", INVALID)}),
    ("template without labels", "Deployment",
     {"kind": "ReplicaSet", "spec.template.metadata": DELETE},
     {("spec.template.metadata.labels", INVALID)}),
    ("selector expression operator", "Deployment", {"spec.selector.matchExpressions": [
        {"key": "tier", "operator": "Maybe"}]},
     {("spec.selector.matchExpressions[0].operator", NOT_SUPPORTED)}),
    ("selector In without values", "DaemonSet", {"spec.selector.matchExpressions": [
        {"key": "tier", "operator": "In"}]},
     {("spec.selector.matchExpressions[0].values", REQUIRED)}),
    ("selector Exists with values", "Deployment", {"spec.selector.matchExpressions": [
        {"key": "app", "operator": "Exists", "values": ["x"]}]},
     {("spec.selector.matchExpressions[0].values", FORBIDDEN)}),
    ("negative replicas", "Deployment", {"spec.replicas": -1}, {("spec.replicas", INVALID)}),
    ("replicas as text", "Deployment", {"spec.replicas": "three"},
     {("spec.replicas", TYPE_INVALID)}),
    ("replicas as bool", "Deployment", {"spec.replicas": True}, {("spec.replicas", TYPE_INVALID)}),
    ("replicas as float", "Deployment", {"spec.replicas": 1.5}, {("spec.replicas", TYPE_INVALID)}),
    ("strategy type", "Deployment", {"spec.strategy": {"type": "BlueGreen"}},
     {("spec.strategy.type", NOT_SUPPORTED)}),
    ("both zero", "Deployment", {"spec.strategy": {"rollingUpdate": {
        "maxSurge": 0, "maxUnavailable": "0%"}}},
     {("spec.strategy.rollingUpdate.maxUnavailable", INVALID)}),
    ("bad percent", "Deployment", {"spec.strategy": {"rollingUpdate": {"maxSurge": "half"}}},
     {("spec.strategy.rollingUpdate.maxSurge", INVALID)}),
    ("unavailable above 100%", "Deployment",
     {"spec.strategy": {"rollingUpdate": {"maxUnavailable": "150%"}}},
     {("spec.strategy.rollingUpdate.maxUnavailable", INVALID)}),
    ("negative surge", "Deployment", {"spec.strategy": {"rollingUpdate": {"maxSurge": -1}}},
     {("spec.strategy.rollingUpdate.maxSurge", INVALID)}),
    ("surge a bool", "Deployment", {"spec.strategy": {"rollingUpdate": {"maxSurge": True}}},
     {("spec.strategy.rollingUpdate.maxSurge", TYPE_INVALID)}),
    ("Recreate with rollingUpdate", "Deployment", {"spec.strategy": {
        "type": "Recreate", "rollingUpdate": {"maxSurge": 1}}},
     {("spec.strategy.rollingUpdate", FORBIDDEN)}),
    ("deadline not above minReady", "Deployment",
     {"spec.minReadySeconds": 600, "spec.progressDeadlineSeconds": 600},
     {("spec.progressDeadlineSeconds", INVALID)}),
    ("negative history", "Deployment", {"spec.revisionHistoryLimit": -1},
     {("spec.revisionHistoryLimit", INVALID)}),
    ("daemonset strategy", "DaemonSet", {"spec.updateStrategy": {"type": "Recreate"}},
     {("spec.updateStrategy.type", NOT_SUPPORTED)}),
    ("daemonset both zero", "DaemonSet",
     {"spec.updateStrategy": {"rollingUpdate": {"maxUnavailable": 0}}},
     {("spec.updateStrategy.rollingUpdate.maxUnavailable", INVALID)}),
    ("template missing", "Deployment", {"kind": "ReplicaSet", "spec.template": DELETE},
     {("spec.template", REQUIRED)}),
    ("job restart Always", "Job", {f"{D}.restartPolicy": "Always"},
     {(f"{D}.restartPolicy", NOT_SUPPORTED)}),
    ("job restart missing", "Job", {f"{D}.restartPolicy": DELETE},
     {(f"{D}.restartPolicy", REQUIRED)}),
    ("job counts", "Job", {"spec.backoffLimit": -1, "spec.completions": -1,
                           "spec.parallelism": -2, "spec.ttlSecondsAfterFinished": -1,
                           "spec.activeDeadlineSeconds": 0},
     {("spec.backoffLimit", INVALID), ("spec.completions", INVALID),
      ("spec.parallelism", INVALID), ("spec.ttlSecondsAfterFinished", INVALID),
      ("spec.activeDeadlineSeconds", INVALID)}),
    ("job completion mode", "Job", {"spec.completionMode": "Sometimes"},
     {("spec.completionMode", NOT_SUPPORTED)}),
    ("job selector mismatch", "Job", {"spec.selector": {"matchLabels": {"job": "x"}}},
     {("spec.template.metadata.labels", INVALID)}),
    ("job manual selector missing", "Job", {"spec.manualSelector": True},
     {("spec.selector", REQUIRED)}),
    # services
    ("service type", "Service", {"spec.type": "ExternalName"}, {("spec.type", NOT_SUPPORTED)}),
    ("service without ports", "Service", {"spec.ports": []}, {("spec.ports", REQUIRED)}),
    ("unnamed ports", "Service", {"spec.ports": [{"port": 80}, {"port": 443}]},
     {("spec.ports[0].name", REQUIRED), ("spec.ports[1].name", REQUIRED)}),
    ("duplicate port names in a service", "Service", {"spec.ports": [
        {"name": "web", "port": 80}, {"name": "web", "port": 443}]},
     {("spec.ports[1].name", DUPLICATE)}),
    ("duplicate port and protocol", "Service", {"spec.ports": [
        {"name": "a", "port": 80}, {"name": "b", "port": 80}]}, {("spec.ports[1]", DUPLICATE)}),
    ("service port zero", "Service", {"spec.ports[0].port": 0}, {("spec.ports[0].port", REQUIRED)}),
    ("service port too big", "Service", {"spec.ports[0].port": 65536},
     {("spec.ports[0].port", INVALID)}),
    ("target port too big", "Service", {"spec.ports[0].targetPort": 65536},
     {("spec.ports[0].targetPort", INVALID)}),
    ("target port name without a letter", "Service", {"spec.ports[0].targetPort": "8080"},
     {("spec.ports[0].targetPort", INVALID)}),
    ("target port name too long", "Service", {"spec.ports[0].targetPort": "a-very-long-port-name"},
     {("spec.ports[0].targetPort", INVALID)}),
    ("node port on ClusterIP", "Service", {"spec.ports[0].nodePort": 30080},
     {("spec.ports[0].nodePort", FORBIDDEN)}),
    ("node port out of range", "Service", {"spec.type": "NodePort", "spec.ports[0].nodePort": 80},
     {("spec.ports[0].nodePort", INVALID)}),
    ("service protocol", "Service", {"spec.ports[0].protocol": "ICMP"},
     {("spec.ports[0].protocol", NOT_SUPPORTED)}),
    ("cluster IP", "Service", {"spec.clusterIP": "10.0.0.300"}, {("spec.clusterIP", INVALID)}),
    ("headless NodePort", "Service", {"spec.type": "NodePort", "spec.clusterIP": "None"},
     {("spec.clusterIP", INVALID)}),
    ("session affinity", "Service", {"spec.sessionAffinity": "Sticky"},
     {("spec.sessionAffinity", NOT_SUPPORTED)}),
    ("service selector", "Service", {"spec.selector": {"app": "my app"}},
     {("spec.selector", INVALID)}),
    # config and secrets
    ("config key with a slash", "ConfigMap", {"data.bad/key": "x"}, {("data[bad/key]", INVALID)}),
    ("config key ..", "ConfigMap", {"data": {"..": "x"}}, {("data[..]", INVALID)}),
    ("config value not a string", "ConfigMap", {"data.lives": 3},
     {("data[lives]", TYPE_INVALID)}),
    ("config data a list", "ConfigMap", {"data": ["a"]}, {("data", TYPE_INVALID)}),
    ("key in data and binaryData", "ConfigMap", {"binaryData": {"player_initial_lives": "Mw=="}},
     {("binaryData[player_initial_lives]", INVALID)}),
    ("secret not base64", "Secret", {"data": {"password": "not base64!"}},
     {("data[password]", INVALID)}),
    ("secret bad padding", "Secret", {"data": {"password": "YWJ"}}, {("data[password]", INVALID)}),
    ("secret key", "Secret", {"stringData": {"a b": "x"}}, {("data[a b]", INVALID)}),
    ("tls secret without keys", "Secret", {"type": "kubernetes.io/tls"},
     {("data[tls.crt]", REQUIRED), ("data[tls.key]", REQUIRED)}),
    ("string data not a string", "Secret", {"stringData": {"n": 1}},
     {("stringData[n]", TYPE_INVALID)}),
    # the rest
    ("lease duration", "Lease", {"spec.leaseDurationSeconds": 0},
     {("spec.leaseDurationSeconds", INVALID)}),
    ("lease holder a number", "Lease", {"spec.holderIdentity": 5},
     {("spec.holderIdentity", TYPE_INVALID)}),
    ("lease transitions", "Lease", {"spec.leaseTransitions": -1},
     {("spec.leaseTransitions", INVALID)}),
    ("taint effect", "Node", {"spec.taints[0].effect": "NoRun"},
     {("spec.taints[0].effect", NOT_SUPPORTED)}),
    ("taint without key", "Node", {"spec.taints[0].key": ""}, {("spec.taints[0].key", REQUIRED)}),
    ("node capacity", "Node", {"status.capacity.cpu": "four"},
     {("status.capacity[cpu]", INVALID)}),
    ("event type", "Event", {"type": "Fatal"}, {("type", NOT_SUPPORTED)}),
    ("event namespace", "Event", {"involvedObject.namespace": "other"},
     {("involvedObject.namespace", INVALID)}),
    ("namespace finalizer", "Namespace", {"spec.finalizers": ["a/b/c"]},
     {("spec.finalizers[0]", INVALID)}),
]
@pytest.mark.parametrize(("kind", "changes", "expected"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_objects_give_exactly_the_expected_causes(
        kind: str, changes: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    causes = validation.validate(defaults.apply_defaults(changed(kind, changes)))
    assert pairs(causes) == expected, shown(causes)
    for c in causes:
        assert c.reason in REASONS and str(c) == f"{c.field}: {c.message}"


def test_enough_bad_objects() -> None:
    assert len(BAD) >= 40


def test_every_problem_is_reported_at_once() -> None:
    bad = changed("Deployment", {
        "metadata.name": "Bad_Name", "metadata.labels": {"bad key": "x"}, "spec.replicas": -1,
        f"{T}.name": "Bad_Name", f"{T}.image": DELETE, f"{T}.ports[0].containerPort": 0,
        f"{D}.restartPolicy": "Never", "spec.strategy": {"type": "Nope"},
        "spec.revisionHistoryLimit": "ten", "spec.selector.matchLabels": {"app": "other"}})
    assert pairs(validation.validate(defaults.apply_defaults(bad))) == {
        ("metadata.name", INVALID), ("metadata.labels", INVALID), ("spec.replicas", INVALID),
        (f"{T}.name", INVALID), (f"{T}.image", REQUIRED), (f"{T}.ports[0].containerPort", REQUIRED),
        (f"{D}.restartPolicy", NOT_SUPPORTED), ("spec.strategy.type", NOT_SUPPORTED),
        ("spec.revisionHistoryLimit", TYPE_INVALID), ("spec.template.metadata.labels", INVALID)}


@pytest.mark.parametrize(("kind", "changes", "message"), [
    ("Pod", {"metadata.name": "Foo_Bar"},
     'metadata.name: Invalid value: "Foo_Bar": a lowercase RFC 1123 subdomain must consist of '
     "lower case alphanumeric characters, '-' or '.', and must start and end with an "
     "alphanumeric character (e.g. 'example.com', regex used for validation is "
     r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ("Namespace", {"metadata.name": "Dev"},
     'metadata.name: Invalid value: "Dev": a lowercase RFC 1123 label must consist of lower '
     "case alphanumeric characters or '-', and must start and end with an alphanumeric "
     "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
     "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ("ConfigMap", {"metadata.name": DELETE},
     "metadata.name: Required value: name or generateName is required"),
    ("Deployment", {"spec.replicas": -1},
     "spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
    ("Deployment", {"spec.replicas": "three"},
     'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: '
     '"string"'),
    ("Pod", {"spec.restartPolicy": "Sometimes"},
     'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "Never", '
     '"OnFailure"'),
    ("Job", {f"{D}.restartPolicy": DELETE},
     f'{D}.restartPolicy: Required value: valid values: "OnFailure", "Never"'),
    ("Service", {"spec.ports": [{"name": "web", "port": 80}, {"name": "web", "port": 81}]},
     'spec.ports[1].name: Duplicate value: "web"'),
    ("Pod", {f"{C}.resources": {"limits": {"memory": "12XB"}}},
     f'{C}.resources.limits[memory]: Invalid value: "12XB": quantities must match the regular '
     "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
    ("Pod", {f"{C}.resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}}},
     f'{C}.resources.requests[cpu]: Invalid value: "2": must be less than or equal to cpu limit '
     "of 500m"),
    ("Deployment", {"spec.selector.matchLabels": {"app": "x"}},
     'spec.template.metadata.labels: Invalid value: map[string]string{"app":"nginx"}: '
     "`selector` does not match template `labels`"),
    ("ConfigMap", {"data": {"a b": "x"}},
     "data[a b]: Invalid value: \"a b\": a valid config key must consist of alphanumeric "
     "characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used "
     "for validation is '[-._a-zA-Z0-9]+')"),
    ("Secret", {"data": {"pw": "c2VjcmV0!"}},
     'data[pw]: Invalid value: "<secret contents redacted>": illegal base64 data at input '
     "byte 8"),
    ("Service", {"spec.type": "NodePort", "spec.ports[0].nodePort": 80},
     "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The "
     "range of valid ports is 30000-32767"),
    ("Pod", {f"{C}.volumeMounts": [{"name": "data", "mountPath": "/d"}]},
     f'{C}.volumeMounts[0].name: Not found: "data"'),
    ("Lease", {"spec.leaseDurationSeconds": -3},
     "spec.leaseDurationSeconds: Invalid value: -3: must be greater than 0"),
])
def test_messages_read_like_kubernetes(kind: str, changes: dict[str, Any], message: str) -> None:
    causes = validation.validate(defaults.apply_defaults(changed(kind, changes)))
    assert message in [str(c) for c in causes], shown(causes)


def test_generate_name_stands_in_for_a_name() -> None:
    cm = changed("ConfigMap", {"metadata.name": DELETE, "metadata.generateName": "game-"})
    assert validation.validate(defaults.apply_defaults(cm)) == []


@pytest.mark.parametrize("garbage", [
    None, [], "x", 3, {}, {"kind": 5}, {"apiVersion": [], "kind": {}, "metadata": []},
    {"apiVersion": "v1", "kind": "Pod", "metadata": None, "spec": None},
    {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [
        None, 5, "x", [], {"name": None, "image": None, "ports": [None, {"containerPort": None}],
                           "env": [None, {"valueFrom": None}], "resources": None}]}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
     "spec": {"selector": [], "template": {"metadata": [], "spec": "x"}, "strategy": []}},
])
def test_garbage_gives_causes_not_exceptions(garbage: Any) -> None:
    causes = validation.validate(garbage)
    assert causes and all(c.reason in REASONS for c in causes)
    assert validation.validate(garbage, old=garbage) is not None
    defaults.apply_defaults(garbage)


# ---- updates -------------------------------------------------------------------------------


def stored(kind: str) -> Obj:
    obj = defaulted(kind)
    obj["metadata"].update(namespace="default", uid="u-1",
                           creationTimestamp="2024-05-01T12:00:00Z")
    return obj


def edit(obj: Obj, changes: dict[str, Any]) -> Obj:
    out = copy.deepcopy(obj)
    for path, value in changes.items():
        steps: list[str | int] = [int(i) if i else k for k, i in _STEP.findall(path)]
        node: Any = out
        for step in steps[:-1]:
            node = node[step]
        if value is DELETE:
            del node[steps[-1]]
        else:
            node[steps[-1]] = value
    return out


SERVICE_NP = {"spec.type": "NodePort", "spec.clusterIP": "10.96.0.10", "spec.ports": [
    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080},
    {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP", "nodePort": 30443}]}
UPDATES: list[tuple[str, str, dict[str, Any], dict[str, Any], set[tuple[str, str]]]] = [
    ("labels may change", "Deployment", {}, {"metadata.labels": {"app": "nginx", "x": "y"}},
     set()),
    ("replicas and image may change", "Deployment", {},
     {"spec.replicas": 5, f"{T}.image": "nginx:1.25"}, set()),
    ("name", "ConfigMap", {}, {"metadata.name": "other"}, {("metadata.name", INVALID)}),
    ("namespace", "ConfigMap", {}, {"metadata.namespace": "other"},
     {("metadata.namespace", INVALID)}),
    ("uid", "ConfigMap", {}, {"metadata.uid": "u-2"}, {("metadata.uid", INVALID)}),
    ("creation time", "ConfigMap", {}, {"metadata.creationTimestamp": DELETE},
     {("metadata.creationTimestamp", INVALID)}),
    ("deployment selector", "Deployment", {}, {
        "spec.selector.matchLabels": {"app": "nginx", "x": "y"},
        "spec.template.metadata.labels": {"app": "nginx", "x": "y"}},
     {("spec.selector", INVALID)}),
    ("daemonset selector", "DaemonSet", {}, {"spec.selector.matchExpressions": [
        {"key": "name", "operator": "Exists"}]}, {("spec.selector", INVALID)}),
    ("job template", "Job", {}, {f"{T}.image": "perl:5.36"}, {("spec.template", INVALID)}),
    ("job parallelism may change", "Job", {}, {"spec.parallelism": 3}, set()),
    ("cluster IP", "Service", SERVICE_NP, {"spec.clusterIP": "10.96.0.11"},
     {("spec.clusterIP", INVALID)}),
    ("node port by name", "Service", SERVICE_NP, {"spec.ports[0].nodePort": 30081},
     {("spec.ports[0].nodePort", INVALID)}),
    ("node ports follow their names when reordered", "Service", SERVICE_NP,
     {"spec.ports": [SERVICE_NP["spec.ports"][1], SERVICE_NP["spec.ports"][0]]}, set()),
    ("node port left out is kept by the server", "Service", SERVICE_NP,
     {"spec.ports[1].nodePort": DELETE}, set()),
    ("pod image may change", "Pod", {}, {f"{C}.image": "nginx:1.25"}, set()),
    ("pod may be bound once", "Pod", {}, {"spec.nodeName": "n1"}, set()),
    ("pod may not move", "Pod", {"spec.nodeName": "n1"}, {"spec.nodeName": "n2"},
     {("spec", FORBIDDEN)}),
    ("pod ports", "Pod", {}, {f"{C}.ports[0].containerPort": 8080}, {("spec", FORBIDDEN)}),
    ("pod tolerations may be added", "Pod", {}, {"spec.tolerations": [
        {"key": "k", "operator": "Exists"}]}, set()),
    ("pod tolerations may not be removed", "Pod",
     {"spec.tolerations": [{"key": "k", "operator": "Exists"}]}, {"spec.tolerations": []},
     {("spec", FORBIDDEN)}),
    ("pod deadline may be lowered", "Pod", {"spec.activeDeadlineSeconds": 60},
     {"spec.activeDeadlineSeconds": 30}, set()),
    ("pod deadline may not be raised", "Pod", {"spec.activeDeadlineSeconds": 60},
     {"spec.activeDeadlineSeconds": 90}, {("spec", FORBIDDEN)}),
    ("immutable config map", "ConfigMap", {"immutable": True},
     {"data.player_initial_lives": "5"}, {("data", FORBIDDEN)}),
    ("immutable flag stays", "ConfigMap", {"immutable": True}, {"immutable": False},
     {("immutable", FORBIDDEN)}),
    ("secret type", "Secret", {}, {"type": "kubernetes.io/basic-auth"}, {("type", INVALID)}),
    ("kind", "ConfigMap", {}, {"kind": "Secret", "data": DELETE}, {("kind", INVALID)}),
]


@pytest.mark.parametrize(("kind", "before", "changes", "expected"), [u[1:] for u in UPDATES],
                         ids=[u[0] for u in UPDATES])
def test_updates(kind: str, before: dict[str, Any], changes: dict[str, Any],
                 expected: set[tuple[str, str]]) -> None:
    old = edit(stored(kind), before)
    new = defaults.apply_defaults(edit(old, changes))
    causes = validation.validate(new, old=old)
    assert pairs(causes) == expected, shown(causes)


def test_immutable_message() -> None:
    old = stored("ConfigMap")
    causes = validation.validate(edit(old, {"metadata.name": "x"}), old=old)
    assert [str(c) for c in causes] == ['metadata.name: Invalid value: "x": field is immutable']


# ---- kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "resource"), [
    ("deployment", "deployments.apps"), ("deployments", "deployments.apps"),
    ("deploy", "deployments.apps"), ("deployment.apps", "deployments.apps"),
    ("deployments.apps", "deployments.apps"), ("Deployment", "deployments.apps"),
    ("deployments.v1.apps", "deployments.apps"), ("DEPLOY", "deployments.apps"),
    ("po", "pods"), ("pod", "pods"), ("Pods", "pods"), ("svc", "services"),
    ("cm", "configmaps"), ("ns", "namespaces"), ("no", "nodes"), ("ev", "events"),
    ("rs", "replicasets.apps"), ("ds", "daemonsets.apps"), ("job", "jobs.batch"),
    ("jobs.batch", "jobs.batch"), ("secret", "secrets"), ("lease", "leases.coordination.k8s.io"),
    ("leases.coordination.k8s.io", "leases.coordination.k8s.io"),
    ("endpointslices", "endpointslices.discovery.k8s.io"),
    ("endpointslice.discovery.k8s.io", "endpointslices.discovery.k8s.io"),
])
def test_resolve(word: str, resource: str) -> None:
    found = kinds.resolve(word)
    assert found is not None and found.resource == resource


@pytest.mark.parametrize("word", ["", "widget", "deployment.batch", "pods.apps", "po.v1"])
def test_resolve_unknown(word: str) -> None:
    assert kinds.resolve(word) is None


def test_kind_table() -> None:
    assert [k.kind for k in kinds.KINDS] == [
        "Namespace", "Pod", "Service", "ConfigMap", "Secret", "Node", "Event", "Deployment",
        "ReplicaSet", "DaemonSet", "Job", "Lease", "EndpointSlice"]
    for k in kinds.KINDS:
        assert kinds.by_kind(k.api_version, k.kind) is k
        assert kinds.by_plural(k.group, k.version, k.plural) is k
        assert kinds.resolve(k.kind) is kinds.resolve(k.resource) is k
    deploy = kinds.by_kind("apps/v1", "Deployment")
    assert deploy is not None and (deploy.api_version, deploy.namespaced) == ("apps/v1", True)
    assert kinds.by_kind("v1", "Deployment") is None
    assert kinds.by_plural("", "v1", "deployments") is None
    cluster = {k.kind for k in kinds.KINDS if not k.namespaced}
    assert cluster == {"Namespace", "Node"}
    lease = kinds.by_kind("coordination.k8s.io/v1", "Lease")
    assert lease is not None and lease.api_version == "coordination.k8s.io/v1"


# ---- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("check", "value", "ok"), [
    (names.dns1123_subdomain_errors, "example.com", True),
    (names.dns1123_subdomain_errors, "a" * 253, True),
    (names.dns1123_subdomain_errors, "a" * 254, False),
    (names.dns1123_subdomain_errors, "Example.com", False),
    (names.dns1123_subdomain_errors, "web\n", False),
    (names.dns1123_label_errors, "my-name", True),
    (names.dns1123_label_errors, "123-abc", True),
    (names.dns1123_label_errors, "a.b", False),
    (names.dns1123_label_errors, "-a", False),
    (names.dns1123_label_errors, "a" * 64, False),
    (names.label_key_errors, "app", True),
    (names.label_key_errors, "app.kubernetes.io/name", True),
    (names.label_key_errors, "Node-Role.Kubernetes.IO/x", False),
    (names.label_key_errors, "a/b/c", False),
    (names.label_key_errors, "x" * 64, False),
    (names.label_key_errors, "", False),
    (names.label_value_errors, "", True),
    (names.label_value_errors, "MyValue_1.2-3", True),
    (names.label_value_errors, "-x", False),
    (names.label_value_errors, "v" * 64, False),
    (names.port_name_errors, "http", True),
    (names.port_name_errors, "http-alt", True),
    (names.port_name_errors, "8080", False),
    (names.port_name_errors, "a--b", False),
    (names.port_name_errors, "abcdefghijklmnop", False),
    (names.config_key_errors, "game.properties", True),
    (names.config_key_errors, "..x", False),
])
def test_names(check: Callable[[str], list[str]], value: str, ok: bool) -> None:
    assert (check(value) == []) is ok, check(value)


def test_qualified_name_messages() -> None:
    assert names.label_key_errors("/x") == ["prefix part must be non-empty"]
    assert names.label_key_errors("x" * 64) == ["name part must be no more than 63 characters"]


# ---- quantities ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Fraction(1, 10)), ("1.5", Fraction(3, 2)), ("128Mi", 128 * 2**20),
    ("1G", 10**9), ("2e3", 2000), ("1E", 10**18), ("1Ei", 2**60), ("-1.5k", -1500),
    ("+3", 3), (".5", Fraction(1, 2)), ("5.", 5), ("1e-3", Fraction(1, 1000)),
    ("250n", Fraction(250, 10**9)), ("4u", Fraction(4, 10**6)), ("7Ki", 7168),
    (2, 2), (0.1, Fraction(1, 10)), ("0", 0),
])
def test_parse_quantity(text: str | int | float, value: Fraction | int) -> None:
    assert quantity.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["12XB", "", ".", "1kk", "Mi", "1 Mi", "1.5.3", "1e", "0x10",
                                  "1e1000", "1\n", True, float("nan")])
def test_bad_quantities(text: Any) -> None:
    with pytest.raises(quantity.QuantityError):
        quantity.parse_quantity(text)


@pytest.mark.parametrize(("value", "binary", "text"), [
    (Fraction(1, 10), False, "100m"), (Fraction(3, 2), False, "1500m"), (2000, False, "2k"),
    (128 * 2**20, True, "128Mi"), (10**9, True, "1G"), (0, False, "0"), (-5, False, "-5"),
    (Fraction(1, 3 * 10**9), False, "1n"),
])
def test_format_quantity(value: Fraction | int, binary: bool, text: str) -> None:
    assert quantity.format_quantity(value, binary=binary) == text


# ---- selectors -----------------------------------------------------------------------------

LABELS = {"app": "web", "tier": "front", "env": "prod"}


@pytest.mark.parametrize(("text", "canonical", "matches"), [
    ("app=web,tier!=db", "app=web,tier!=db", True),
    ("env in (prod, staging)", "env in (prod,staging)", True),
    ("env in (staging,prod)", "env in (prod,staging)", True),
    ("!canary", "!canary", True),
    ("release notin (a,b)", "release notin (a,b)", True),
    ("app", "app", True),
    ("app==web", "app=web", True),
    ("  app = web  ,  tier  ", "app=web,tier", True),
    ("tier=front,app=web", "app=web,tier=front", True),
    ("", "", True),
    ("app=db", "app=db", False),
    ("!app", "!app", False),
    ("env notin (prod)", "env notin (prod)", False),
    ("missing", "missing", False),
    ("missing!=x", "missing!=x", True),
    ("app=", "app=", False),
    ("example.com/role in (a)", "example.com/role in (a)", False),
])
def test_label_selector_parse_canonical_and_match(text: str, canonical: str,
                                                  matches: bool) -> None:
    sel = selectors.parse_label_selector(text)
    assert str(sel) == canonical
    assert sel.matches(LABELS) is matches
    assert selectors.parse_label_selector(str(sel)) == sel
    assert sel.empty is (text == "")


@pytest.mark.parametrize("text", [
    "app=web,", ",app", "!", "app in", "app in (", "app in ()", "app in (a b)", "app web",
    "app!web", "Bad Key=x", "app=bad value!", "app=" + "x" * 64, "(a)", "a=b)", "!a=b",
    "a/b/c=d", "app in (a,b", "app notin x",
])
def test_label_selector_errors(text: str) -> None:
    with pytest.raises(selectors.SelectorError):
        selectors.parse_label_selector(text)


def test_label_selector_matches_none_labels() -> None:
    assert selectors.parse_label_selector("").matches(None)
    assert selectors.parse_label_selector("!a").matches(None)
    assert not selectors.parse_label_selector("a").matches(None)


def test_selector_from_object() -> None:
    sel = selectors.selector_from_object({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]},
                             {"key": "canary", "operator": "DoesNotExist"},
                             {"key": "env", "operator": "Exists"},
                             {"key": "zone", "operator": "NotIn", "values": ["a"]}]})
    assert str(sel) == "app=web,!canary,env,tier in (back,front),zone notin (a)"
    assert sel.matches(LABELS)
    assert not sel.matches({**LABELS, "canary": "1"})
    assert selectors.selector_from_object(None).empty
    assert selectors.selector_from_object({}).empty
    assert sel.requirements[0] == selectors.Requirement("app", "=", ("web",))


@pytest.mark.parametrize("bad", [
    [], {"matchLabels": []}, {"matchLabels": {"app": 1}}, {"matchExpressions": {}},
    {"matchExpressions": [{"key": "a", "operator": "Near"}]},
    {"matchExpressions": [{"key": "a", "operator": "In"}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
    {"matchExpressions": [{"key": "a b", "operator": "Exists"}]}, {"matchLabels": {"a": "b c"}},
])
def test_selector_from_object_errors(bad: Any) -> None:
    with pytest.raises(selectors.SelectorError):
        selectors.selector_from_object(bad)


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"},
           "status": {"phase": "Running"}}
    sel = selectors.parse_field_selector("spec.nodeName=n1,status.phase!=Pending")
    assert sel.requirements == (("spec.nodeName", "=", "n1"), ("status.phase", "!=", "Pending"))
    assert sel.matches(pod)
    assert selectors.parse_field_selector("metadata.name==p").matches(pod)
    assert not selectors.parse_field_selector("status.phase!=Running").matches(pod)
    assert selectors.parse_field_selector("spec.nodeName=").matches({"spec": {}})
    assert selectors.parse_field_selector("spec.nodeName!=").matches(pod)
    assert selectors.parse_field_selector("").matches({})
    custom = selectors.parse_field_selector("spec.x=1", allowed={"spec.x"})
    assert custom.matches({"spec": {"x": 1}})
    with pytest.raises(selectors.SelectorError, match="field label not supported: spec.foo"):
        selectors.parse_field_selector("spec.foo=bar")
    for bad in ("spec.nodeName", "a,,b", "spec.nodeName=n1,"):
        with pytest.raises(selectors.SelectorError):
            selectors.parse_field_selector(bad)


# ---- merge patches -------------------------------------------------------------------------

# RFC 7386, Appendix A.
RFC_7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC_7386)
def test_merge_patch_rfc_7386(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy((target, patch))
    assert merge.merge_patch(target, patch) == result
    assert (target, patch) == before


def test_merge_patch_result_shares_nothing_with_its_inputs() -> None:
    target, patch = {"a": {"b": [1]}, "k": {"x": 1}}, {"c": {"d": [2]}}
    out = merge.merge_patch(target, patch)
    out["a"]["b"].append(9)
    out["c"]["d"].append(9)
    assert target == {"a": {"b": [1]}, "k": {"x": 1}} and patch == {"c": {"d": [2]}}


@pytest.mark.parametrize(("original", "modified", "patch"), [
    ({"a": 1}, {"a": 1}, {}),
    ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
    ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, {"a": {"c": 3}}),
    ({"a": [1, 2]}, {"a": [1]}, {"a": [1]}),
    ({"a": 1}, {"a": True}, {"a": True}),
    ({"a": 1}, {"a": 1.0}, {"a": 1.0}),
    ({"a": "x"}, {"a": {"b": 1}}, {"a": {"b": 1}}),
    (None, {"a": 1}, {"a": 1}),
])
def test_create_merge_patch(original: Any, modified: Obj, patch: Obj) -> None:
    assert merge.create_merge_patch(original, modified) == patch


def test_create_merge_patch_needs_an_object() -> None:
    with pytest.raises(TypeError):
        merge.create_merge_patch({}, [1])


def live_of(manifest: Obj) -> Obj:
    """What the server stores for `manifest`: defaults, identity, status."""
    live = defaults.apply_defaults(manifest)
    live["metadata"].update(uid="u1", resourceVersion="7", namespace="default")
    live["status"] = {"replicas": 3}
    return live


def test_three_way_patch_is_empty_when_live_reflects_the_manifest() -> None:
    manifest = doc("Deployment")
    assert merge.three_way_patch(last_applied=manifest, new=manifest,
                                 live=live_of(manifest)) == {}
    # Lists whose elements the server defaulted (containers, ports) count as unchanged.
    assert merge.three_way_patch(last_applied=None, new=manifest, live=live_of(manifest)) == {}


def test_three_way_patch_sets_changes_and_removes_what_the_manifest_dropped() -> None:
    last = doc("Deployment")
    last["metadata"]["annotations"] = {"team": "a", "keep": "b"}
    live = live_of(last)
    live["metadata"]["labels"]["added-by-someone"] = "x"
    new = copy.deepcopy(last)
    new["spec"]["replicas"] = 5
    del new["metadata"]["annotations"]["team"]
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.25"
    patch = merge.three_way_patch(last_applied=last, new=new, live=live)
    assert patch["spec"]["replicas"] == 5
    assert patch["metadata"] == {"annotations": {"team": None}}
    containers = patch["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == ["nginx:1.25"]
    assert containers[0]["terminationMessagePath"] == "/dev/termination-log"  # defaults kept
    result = merge.merge_patch(live, patch)
    assert result["status"] == {"replicas": 3} and result["metadata"]["uid"] == "u1"
    assert result["metadata"]["labels"]["added-by-someone"] == "x"
    assert "team" not in result["metadata"]["annotations"]


def test_keyed_lists_merge_by_key_as_kubectls_strategic_merge_does() -> None:
    last = doc("Deployment")
    container = last["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    live = live_of(last)
    # Someone else (`kubectl set env`) adds a variable; the same manifest again keeps it.
    live["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "INJECTED", "value": "x"})
    assert merge.three_way_patch(last_applied=last, new=last, live=live) == {}
    # Dropping B from the manifest removes B only; changing A changes A; INJECTED stays.
    new = copy.deepcopy(last)
    new["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "A", "value": "9"}]
    result = merge.merge_patch(live, merge.three_way_patch(last_applied=last, new=new,
                                                           live=live))
    env = result["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "A", "value": "9"}, {"name": "INJECTED", "value": "x"}]
    # A second container is added after the first, which keeps its server defaults.
    new["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "b:1"})
    result = merge.merge_patch(live, merge.three_way_patch(last_applied=last, new=new,
                                                           live=live))
    names = [c["name"] for c in result["spec"]["template"]["spec"]["containers"]]
    assert names == ["nginx", "side"]
    assert result["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"]


def test_lists_without_a_usable_key_are_replaced_whole() -> None:
    last = {"spec": {"ports": [{"port": 80}, {"port": 80}]}}  # duplicate keys
    new = {"spec": {"ports": [{"port": 81}]}}
    patch = merge.three_way_patch(last_applied=last, new=new, live=last)
    assert patch == {"spec": {"ports": [{"port": 81}]}}


@pytest.mark.parametrize(("last", "new", "live", "patch"), [
    ({}, {"a": 1}, {"a": 1, "b": 2}, {}),
    ({"b": 2}, {"a": 1}, {"a": 1, "b": 2}, {"b": None}),
    ({"b": 2}, {"a": 1}, {"a": 1}, {}),  # already gone
    ({}, {"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}, {}),
    ({"a": {"y": 2}}, {"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}, {"a": {"y": None}}),
    ({}, {"a": [1, 2]}, {"a": [1]}, {"a": [1, 2]}),
    ({}, {"a": [{"n": 1}]}, {"a": [{"n": 1, "d": 0}]}, {}),
    ({"a": [{"n": 1, "e": 1}]}, {"a": [{"n": 1}]}, {"a": [{"n": 1, "e": 1}]}, {"a": [{"n": 1}]}),
    ({}, {"a": 1}, {"a": True}, {"a": 1}),
    ({}, {"a": None}, {"a": 1}, {"a": None}),
    ({}, {"a": {"b": 1}}, {"a": "x"}, {"a": {"b": 1}}),
])
def test_three_way_patch_table(last: Obj, new: Obj, live: Obj, patch: Obj) -> None:
    assert merge.three_way_patch(last_applied=last, new=new, live=live) == patch


# ---- properties ----------------------------------------------------------------------------

WORDS = ["", "a", "web", "nginx", "Always", "Never", "TCP", "100m", "25%", "None", "In",
         "Exists", "RollingUpdate", "NodePort", "app", "v1", "apps/v1", "Pod", "-1", "0"]
SCALARS = (hs.none() | hs.booleans() | hs.integers(-(2**40), 2**40)
           | hs.floats(allow_nan=False, allow_infinity=False) | hs.text(max_size=12)
           | hs.sampled_from(WORDS))
JSON = hs.recursive(SCALARS, lambda children: hs.lists(children, max_size=4)
                    | hs.dictionaries(hs.text(max_size=6) | hs.sampled_from(WORDS), children,
                                      max_size=4),
                    max_leaves=12)
JSON_NO_NULL = hs.recursive(
    SCALARS.filter(lambda v: v is not None),
    lambda children: hs.lists(children, max_size=4)
    | hs.dictionaries(hs.text(max_size=6), children, max_size=4), max_leaves=12)
JSON_OBJECT = hs.dictionaries(hs.text(max_size=6) | hs.sampled_from(WORDS), JSON, max_size=5)
PROPS = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])


def _field_names(node: Any) -> set[str]:
    if isinstance(node, schema.Obj):
        return set(node.fields).union(*(_field_names(v) for v in node.fields.values()))
    if isinstance(node, schema.Arr):
        return _field_names(node.items)
    if isinstance(node, schema.MapOf):
        return _field_names(node.values)
    return set()


FIELD_NAMES = sorted(set().union(*(_field_names(s) for s in schema.SPECS.values()))
                     | _field_names(schema.METADATA) | {"kind", "apiVersion"})
MANIFESTS = [defaulted(k) for k in sorted(DOCS)]


def _dict_nodes(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        found.append(node)
        for v in node.values():
            found.extend(_dict_nodes(v))
    elif isinstance(node, list):
        for v in node:
            found.extend(_dict_nodes(v))
    return found


@PROPS
@given(obj=JSON)
def test_validate_never_raises_on_any_json(obj: Any) -> None:
    for c in validation.validate(obj):
        assert c.reason in REASONS
    validation.validate(obj, old=obj)


@PROPS
@given(data=hs.data())
def test_validate_never_raises_on_manifests_with_random_values_in_known_fields(
        data: hs.DataObject) -> None:
    """Random JSON where Kubernetes' fields are, which reaches every validator."""
    original = data.draw(hs.sampled_from(MANIFESTS))
    obj = copy.deepcopy(original)
    for _ in range(data.draw(hs.integers(1, 4))):
        node = data.draw(hs.sampled_from(_dict_nodes(obj)))
        key = data.draw(hs.sampled_from(FIELD_NAMES + sorted(node)))
        node[key] = data.draw(JSON)
    for c in validation.validate(obj) + validation.validate(obj, old=original):
        assert c.reason in REASONS and isinstance(c.field, str) and isinstance(c.message, str)
    once = defaults.apply_defaults(obj)
    assert defaults.apply_defaults(once) == once
    validation.validate(once, old=obj)


@PROPS
@given(obj=JSON_OBJECT, kind=hs.sampled_from(sorted(DOCS) + ["Widget"]))
def test_apply_defaults_is_idempotent_and_leaves_its_input_alone(obj: Obj, kind: str) -> None:
    obj = {**obj, "kind": kind}
    before = copy.deepcopy(obj)
    once = defaults.apply_defaults(obj)
    assert obj == before
    assert defaults.apply_defaults(once) == once


@PROPS
@given(original=JSON_OBJECT, modified=hs.dictionaries(hs.text(max_size=6), JSON_NO_NULL,
                                                      max_size=5))
def test_merge_patch_of_created_patch_round_trips(original: Obj, modified: Obj) -> None:
    patch = merge.create_merge_patch(original, modified)
    assert merge.same(merge.merge_patch(original, patch), modified)
    assert (patch == {}) is merge.same(original, modified)


@PROPS
@given(base=JSON_OBJECT, new=JSON_OBJECT, last=JSON_OBJECT)
def test_three_way_patch_is_empty_once_live_reflects_new(base: Obj, new: Obj, last: Obj) -> None:
    live = merge.merge_patch(base, new)
    assert merge.three_way_patch(last_applied=new, new=new, live=live) == {}
    # And applying any three-way patch leaves nothing more to do.
    applied = merge.merge_patch(base, merge.three_way_patch(last_applied=last, new=new,
                                                            live=base))
    assert merge.three_way_patch(last_applied=new, new=new, live=applied) == {}
