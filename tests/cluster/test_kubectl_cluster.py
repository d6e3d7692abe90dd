"""The real kubectl, unchanged, against real masters over HTTPS with the kubeconfig `rk up`
writes (`DIR/kubeconfig`): a user's everyday commands, each checked on what kubectl
prints and on what the server then holds.

kubectl is the one on the machine: `/usr/bin/kubectl` (google-cloud-sdk's dispatcher,
which runs the kubectl.1.NN matching the server's version, as a user's would) or
Debian's `kubernetes-client`; without one the module is skipped. One cluster (3 masters,
one simulated node, so Deployments roll out) serves the whole module; every test names
its own objects. Every kubectl run is bounded (`--request-timeout`, and a subprocess
timeout), and a watch is read line by line until what it should show has come.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import Cluster, started

KUBECTL = shutil.which("kubectl")
pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")]


class Kubectl:
    """kubectl with the cluster's kubeconfig (`KUBECONFIG`) and a discovery cache of its
    own, so that nothing outside the test's directory is read or written."""

    def __init__(self, kubeconfig: str, cache: Path) -> None:
        assert KUBECTL is not None
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.env.pop("KUBECTL_APPLYSET", None)
        self.base = [KUBECTL, f"--cache-dir={cache}"]

    def run(self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, "--request-timeout=20s", *args], input=stdin,
                              capture_output=True, text=True,
                              env={**self.env, **(env or {})}, timeout=timeout)

    def __call__(self, *args: str, **kw: Any) -> str:
        """What kubectl prints, once it has succeeded."""
        done = self.run(*args, **kw)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and a simulated node (`rk up --agents 1`), for the whole module."""
    yield from started(tmp_path_factory, "kubectl", agents=1)


@pytest.fixture(scope="module")
def kubectl(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    kubeconfig = os.path.join(cluster.state_dir, "kubeconfig")
    assert os.path.exists(kubeconfig), "rk up wrote no DIR/kubeconfig"
    return Kubectl(kubeconfig, tmp_path_factory.mktemp("kube-cache"))


def manifest(tmp: Path, name: str, *docs: dict[str, Any]) -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump_all(docs))
    return str(path)


def deployment(name: str, replicas: int = 1, image: str = "web:1",
               labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def configmap(name: str, labels: dict[str, str] | None = None,
              **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels or {}}, "data": data}


def header(table: str) -> list[str]:
    """The column names of kubectl's table (its first line)."""
    return table.splitlines()[0].split()


def described(text: str) -> dict[str, str]:
    """The top-level `Field:  value` lines of `kubectl describe` (whose padding differs
    between kubectl versions)."""
    out = {}
    for line in text.splitlines():
        field, sep, value = line.partition(":")
        if sep and field and not field.startswith(" ") and field not in out:
            out[field] = value.strip()
    return out


def rows(table: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in table.splitlines()[1:] if line.strip()}


def until(check: Any, *, what: str, timeout: float = 30) -> Any:
    """What `check` returns once it is truthy; an AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


# ---- discovery ------------------------------------------------------------------------


def test_version_from_every_context(kubectl: Kubectl) -> None:
    for context in ("raftkube", "raftkube-m1", "raftkube-m2", "raftkube-m3"):
        out = json.loads(kubectl("version", "-o", "json", "--context", context))
        assert out["serverVersion"]["gitVersion"] == "v1.30.0-raftkube", context
        assert out["serverVersion"]["major"] == "1"


def test_api_resources_and_explain(kubectl: Kubectl) -> None:
    # NAME [SHORTNAMES] APIVERSION NAMESPACED KIND, by the kind's name and API version.
    listed = {(r[-1], r[-3]): r for r in (line.split() for line in kubectl(
        "api-resources", "--no-headers").splitlines())}
    assert listed["Deployment", "apps/v1"] == ["deployments", "deploy", "apps/v1", "true",
                                               "Deployment"]
    assert listed["Node", "v1"] == ["nodes", "no", "v1", "false", "Node"]
    assert {("Pod", "v1"), ("Service", "v1"), ("ConfigMap", "v1"), ("Secret", "v1"),
            ("Job", "batch/v1"), ("DaemonSet", "apps/v1"), ("ReplicaSet", "apps/v1"),
            ("Namespace", "v1"), ("Event", "v1")} <= set(listed)
    out = kubectl("explain", "deployment.spec.replicas")
    assert "FIELD: replicas <integer>" in out and "The number of pods wanted" in out
    out = kubectl("explain", "pods")
    assert "A Pod is one or more containers" in out
    assert "metadata\t<ObjectMeta>" in out and "spec\t<PodSpec>" in out
    out = kubectl("explain", "pods.spec.containers")
    assert "FIELD: containers <[]Container>" in out
    assert "readinessProbe\t<Probe>" in out and "image\t<string>" in out
    assert "FIELD: targetPort <IntOrString>" in kubectl("explain", "svc.spec.ports.targetPort")


def test_auth_whoami_and_can_i(kubectl: Kubectl) -> None:
    who = kubectl("auth", "whoami")
    assert "admin" in who and "system:masters" in who
    assert kubectl("auth", "can-i", "create", "deployments").strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "nodes/n1").strip() == "yes"
    assert "*.*" in kubectl("auth", "can-i", "--list")


# ---- apply, with validation -------------------------------------------------------------


def test_apply_creates_configures_leaves_unchanged_and_prunes(
        kubectl: Kubectl, tmp_path: Path) -> None:
    labels = {"set": "apply-test"}
    app = deployment("ap-web", labels=labels)
    first = manifest(tmp_path, "1.yaml", app, configmap("ap-a", labels, a="1"),
                     configmap("ap-b", labels, b="1"))
    out = kubectl("apply", "-f", first)
    assert out.split("\n")[:3] == ["deployment.apps/ap-web created", "configmap/ap-a created",
                                  "configmap/ap-b created"]
    assert "unchanged" in kubectl("apply", "-f", first).split("\n")[0]
    second = manifest(tmp_path, "2.yaml", app, configmap("ap-a", labels, a="2"))
    # Pruning: the ConfigMap left out of the manifest goes. kubectl's default list of
    # kinds to prune includes kinds raftkube does not serve (Endpoints, StatefulSet...),
    # so the kinds are named.
    out = kubectl("apply", "-f", second, "--prune", "-l", "set=apply-test",
                  "--prune-allowlist=core/v1/ConfigMap", "--prune-allowlist=apps/v1/Deployment")
    assert out.split("\n")[:3] == ["deployment.apps/ap-web unchanged",
                                  "configmap/ap-a configured", "configmap/ap-b pruned"]
    assert kubectl.json("get", "cm", "ap-a")["data"] == {"a": "2"}
    assert kubectl.run("get", "cm", "ap-b").returncode == 1


def test_a_bad_manifest_is_refused_naming_the_field(kubectl: Kubectl, tmp_path: Path) -> None:
    wrong_type = deployment("bad-type")
    wrong_type["spec"]["replicas"] = "three"
    unknown = deployment("bad-field")
    unknown["spec"]["template"]["spec"]["containers"][0]["imag"] = "x"
    bad_name = configmap("Bad_Name")
    for doc, field in ((wrong_type, "spec.replicas"),
                       (unknown, "spec.template.spec.containers[0].imag"),
                       (bad_name, "metadata.name")):
        done = kubectl.run("apply", "-f", manifest(tmp_path, "bad.yaml", doc))
        assert done.returncode != 0, doc
        assert field in done.stderr, (field, done.stderr)
        name = doc["metadata"]["name"]
        assert kubectl.run("get", doc["kind"].lower(), name).returncode == 1  # not written


# ---- get, in every output format -----------------------------------------------------------


@pytest.fixture(scope="module")
def web(kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Deployment of two pods, rolled out (the simulated node runs them)."""
    tmp = tmp_path_factory.mktemp("web")
    kubectl("apply", "-f", manifest(tmp, "web.yaml", deployment("web", 2)))
    kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    return "web"


def test_get_prints_kubernetes_columns(kubectl: Kubectl, web: str) -> None:
    pods = kubectl("get", "pods", "-l", f"app={web}")
    assert header(pods) == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert len(rows(pods)) == 2
    assert all(r[1:4] == ["1/1", "Running", "0"] for r in rows(pods).values())
    wide = kubectl("get", "pods", "-l", f"app={web}", "-o", "wide")
    assert header(wide)[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    assert all(r[6] == "n1" for r in rows(wide).values())
    deploy = kubectl("get", "deployment", web)
    assert header(deploy) == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert rows(deploy)[web][1:4] == ["2/2", "2", "2"]
    wide = kubectl("get", "deployment", web, "-o", "wide")
    assert header(wide)[5:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert rows(wide)[web][5:] == ["web", "web:1", f"app={web}"]
    nodes = kubectl("get", "nodes")
    assert header(nodes) == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert rows(nodes)["n1"][1] == "Ready"
    everything = kubectl("get", "all")
    assert "deployment.apps/web" in everything and "replicaset.apps/web-" in everything
    assert "pod/web-" in everything


def test_get_in_every_output_format(kubectl: Kubectl, web: str) -> None:
    as_yaml = yaml.safe_load(kubectl("get", "deployment", web, "-o", "yaml"))
    assert as_yaml["kind"] == "Deployment" and as_yaml["spec"]["replicas"] == 2
    as_json = kubectl.json("get", "pods", "-l", f"app={web}")
    assert as_json["kind"] == "List" and len(as_json["items"]) == 2
    names = kubectl("get", "pods", "-l", f"app={web}", "-o", "name").split()
    assert sorted(names) == sorted(f"pod/{p['metadata']['name']}" for p in as_json["items"])
    phases = kubectl("get", "pods", "-l", f"app={web}", "-o",
                     "jsonpath={.items[*].status.phase}")
    assert phases.split() == ["Running", "Running"]
    columns = kubectl("get", "deployment", web, "-o",
                      "custom-columns=NAME:.metadata.name,WANT:.spec.replicas,"
                      "IMAGE:.spec.template.spec.containers[0].image")
    assert columns.splitlines() == ["NAME   WANT   IMAGE", "web    2      web:1"]


def test_get_watch_prints_table_rows_as_objects_change(kubectl: Kubectl) -> None:
    labels = {"watched": "yes"}
    kubectl("apply", "-f", "-", stdin=json.dumps(configmap("watched-1", labels, a="b")))
    proc = subprocess.Popen([*kubectl.base, "--request-timeout=30s", "get", "configmaps",
                             "-w", "-l", "watched=yes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=kubectl.env)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seen: list[str] = []

    def until(test: Any, what: str) -> None:
        deadline = time.monotonic() + 20
        while not any(test(line) for line in seen):
            try:
                seen.append(lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"kubectl get -w: no {what} in {seen}") from None

    try:
        until(lambda line: line.split()[:2] == ["NAME", "DATA"], "header")
        until(lambda line: line.split()[:2] == ["watched-1", "1"], "listed row")
        kubectl("apply", "-f", "-", stdin=json.dumps(configmap("watched-2", labels, a="b",
                                                                  c="d")))
        until(lambda line: line.split()[:2] == ["watched-2", "2"], "row of a new object")
    finally:
        proc.kill()
        proc.communicate(timeout=10)
        reader.join(timeout=10)


# ---- reading and changing objects ------------------------------------------------------------


def test_describe_shows_the_object_and_its_events(kubectl: Kubectl, web: str) -> None:
    out = kubectl("describe", "deployment", web)
    fields = described(out)
    assert fields["Name"] == web
    assert fields["Replicas"].startswith("2 desired | 2 updated | 2 total | 2 available")
    # Events are found by a field selector on what they are about.
    events = out.split("Events:")[1]
    assert "ScalingReplicaSet" in events and "Scaled up replica set web-" in events
    pod = kubectl("get", "pods", "-l", f"app={web}", "-o", "name").split()[0]
    out = kubectl("describe", pod)
    fields = described(out)
    assert fields["Status"] == "Running" and fields["Node"].startswith("n1/")
    assert "Scheduled" in out.split("Events:")[1]
    assert kubectl("expose", "deployment", web, "--port=80").strip() == f"service/{web} exposed"
    out = kubectl("describe", "service", web)
    ip = kubectl("get", "service", web, "-o", "jsonpath={.spec.clusterIP}")
    fields = described(out)
    assert fields["IP Family Policy"] == "SingleStack" and fields["IP Families"] == "IPv4"
    assert fields["IPs"] == ip
    # Its endpoints (kubectl before 1.33 reads v1 Endpoints, made from the slices).
    pod_ips = kubectl("get", "pods", "-l", f"app={web}", "-o",
                      "jsonpath={.items[*].status.podIP}").split()
    wanted = sorted(f"{a}:80" for a in pod_ips)

    def listed() -> list[str] | None:
        line = described(kubectl("describe", "service", web)).get("Endpoints", "<none>")
        found = sorted(line.split(",")) if line != "<none>" else []
        return found if found == wanted else None

    assert until(listed, what="the service's endpoints in kubectl describe") == wanted
    eps = kubectl("get", "endpoints", web)
    assert header(eps) == ["NAME", "ENDPOINTS", "AGE"]
    assert sorted(rows(eps)[web][1].split(",")) == wanted


def test_diff_shows_what_apply_would_change(kubectl: Kubectl, tmp_path: Path) -> None:
    path = manifest(tmp_path, "d.yaml", deployment("diffed", 1))
    kubectl("apply", "-f", path)
    same = kubectl.run("diff", "-f", path)
    assert same.returncode == 0 and same.stdout == "", same
    changed = kubectl.run("diff", "-f", manifest(tmp_path, "d.yaml", deployment("diffed", 3)))
    assert changed.returncode == 1, changed.stderr
    minus = [line for line in changed.stdout.splitlines() if line.startswith("- ")]
    plus = [line for line in changed.stdout.splitlines() if line.startswith("+ ")]
    assert [line.split(":")[0] for line in minus] == ["-  generation", "-  replicas"]
    assert "+  replicas: 3" in plus
    assert kubectl.json("get", "deployment", "diffed")["spec"]["replicas"] == 1


def test_edit_with_an_editor_script(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("create", "configmap", "edited", "--from-literal=color=blue")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nsed -i 's/color: blue/color: green/' \"$1\"\n")
    editor.chmod(0o755)
    out = kubectl("edit", "configmap", "edited", env={"EDITOR": str(editor)})
    assert out.strip() == "configmap/edited edited"
    assert kubectl.json("get", "configmap", "edited")["data"] == {"color": "green"}


def test_patch_of_every_type(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", manifest(tmp_path, "p.yaml", deployment("patched", 1)))
    assert kubectl("patch", "deployment", "patched", "--type=merge", "-p",
                   '{"metadata":{"labels":{"m":"1"}}}').strip() == \
        "deployment.apps/patched patched"
    kubectl("patch", "deployment", "patched", "--type=json", "-p",
            '[{"op":"add","path":"/metadata/labels/j","value":"2"},'
            '{"op":"test","path":"/spec/replicas","value":1}]')
    # Strategic (kubectl's default): containers merge by name, so the image changes and
    # the container keeps its other fields; a sidecar is added beside it.
    kubectl("patch", "deployment", "patched", "-p", json.dumps({"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "web:2"},
                       {"name": "side", "image": "side:1"}]}}}}))
    got = kubectl.json("get", "deployment", "patched")
    assert got["metadata"]["labels"] == {"m": "1", "j": "2"}
    containers = got["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("web", "web:2"),
                                                             ("side", "side:1")]
    assert containers[0]["imagePullPolicy"] == "IfNotPresent"
    failed = kubectl.run("patch", "deployment", "patched", "--type=json", "-p",
                         '[{"op":"test","path":"/spec/replicas","value":5}]')
    assert failed.returncode != 0 and "test" in failed.stderr.lower()


def test_scale_and_rollout_status(kubectl: Kubectl, tmp_path: Path) -> None:
    kubectl("apply", "-f", manifest(tmp_path, "s.yaml", deployment("scaled", 1)))
    assert kubectl("scale", "deployment", "scaled", "--replicas=3").strip() == \
        "deployment.apps/scaled scaled"
    out = kubectl("rollout", "status", "deployment/scaled", "--timeout=60s", timeout=90)
    assert 'deployment "scaled" successfully rolled out' in out
    assert kubectl.json("get", "deployment", "scaled")["status"]["readyReplicas"] == 3
    kubectl("set", "image", "deployment/scaled", "web=web:2")
    out = kubectl("rollout", "status", "deployment/scaled", "--timeout=60s", timeout=90)
    assert 'deployment "scaled" successfully rolled out' in out
    images = kubectl("get", "pods", "-l", "app=scaled", "-o",
                     "jsonpath={.items[*].spec.containers[0].image}").split()
    assert images == ["web:2"] * 3


def test_label_and_annotate(kubectl: Kubectl) -> None:
    kubectl("create", "configmap", "tagged", "--from-literal=a=b")
    assert kubectl("label", "configmap", "tagged", "tier=db").strip() == \
        "configmap/tagged labeled"
    refused = kubectl.run("label", "configmap", "tagged", "tier=web")
    assert refused.returncode != 0 and "--overwrite" in refused.stderr
    kubectl("label", "configmap", "tagged", "tier=web", "--overwrite")
    assert kubectl("annotate", "configmap", "tagged", "owner=me").strip() == \
        "configmap/tagged annotated"
    meta = kubectl.json("get", "configmap", "tagged")["metadata"]
    assert meta["labels"] == {"tier": "web"} and meta["annotations"]["owner"] == "me"
    assert kubectl("get", "configmaps", "-l", "tier=web", "-o", "name") == \
        "configmap/tagged\n"
    kubectl("label", "configmap", "tagged", "tier-")
    assert kubectl("get", "configmaps", "-l", "tier", "-o", "name") == ""


def test_create_configmap_secret_deployment_service_job(kubectl: Kubectl) -> None:
    assert kubectl("create", "configmap", "made", "--from-literal=a=1",
                   "--from-literal=b=2").strip() == "configmap/made created"
    assert kubectl.json("get", "configmap", "made")["data"] == {"a": "1", "b": "2"}
    assert kubectl("create", "secret", "generic", "made", "--from-literal=password=s3cr3t"
                   ).strip() == "secret/made created"
    secret = kubectl("get", "secret", "made")
    assert header(secret) == ["NAME", "TYPE", "DATA", "AGE"]
    assert rows(secret)["made"][1:3] == ["Opaque", "1"]
    assert kubectl("get", "secret", "made", "-o", "jsonpath={.data.password}") == "czNjcjN0"
    assert kubectl("create", "deployment", "made", "--image=web:1", "--replicas=2"
                   ).strip() == "deployment.apps/made created"
    out = kubectl("rollout", "status", "deployment/made", "--timeout=60s", timeout=90)
    assert 'deployment "made" successfully rolled out' in out
    assert kubectl("create", "service", "nodeport", "made", "--tcp=80:http"
                   ).strip() == "service/made created"
    ports = kubectl.json("get", "service", "made")["spec"]["ports"]
    assert ports[0]["targetPort"] == "http" and 30000 <= ports[0]["nodePort"] <= 32767
    assert kubectl("create", "job", "made", "--image=job:1").strip() == "job.batch/made created"
    assert kubectl.json("get", "job", "made")["spec"]["template"]["spec"][
        "restartPolicy"] == "Never"
    exists = kubectl.run("create", "configmap", "made", "--from-literal=a=1")
    assert exists.returncode != 0 and 'configmaps "made" already exists' in exists.stderr
    replaced = kubectl("replace", "-f", "-", stdin=json.dumps(configmap("made", a="3")))
    assert replaced.strip() == "configmap/made replaced"
    assert kubectl.json("get", "configmap", "made")["data"] == {"a": "3"}


def test_delete(kubectl: Kubectl, tmp_path: Path) -> None:
    path = manifest(tmp_path, "del.yaml", configmap("gone-a"), configmap("gone-b"))
    kubectl("apply", "-f", path)
    assert kubectl("delete", "configmap", "gone-a").strip() == 'configmap "gone-a" deleted'
    assert kubectl("delete", "-f", path, "--ignore-not-found").strip() == \
        'configmap "gone-b" deleted'
    missing = kubectl.run("delete", "configmap", "gone-a")
    assert missing.returncode != 0 and "NotFound" in missing.stderr
    kubectl("create", "deployment", "doomed", "--image=web:1")
    out = kubectl("delete", "deployment", "doomed", "--wait", "--timeout=60s", timeout=90)
    assert out.strip() == 'deployment.apps "doomed" deleted'
    assert kubectl.run("get", "deployment", "doomed").returncode == 1


def test_drain_evicts_and_uncordon_lets_pods_back(kubectl: Kubectl, tmp_path: Path) -> None:
    """Last: the module's one node is cordoned meanwhile. Only this test's pods move."""
    kubectl("apply", "-f", manifest(tmp_path, "dr.yaml", deployment("drained", 2)))
    kubectl("rollout", "status", "deployment/drained", "--timeout=60s", timeout=90)
    before = set(kubectl("get", "pods", "-l", "app=drained", "-o", "name").split())
    try:
        out = kubectl("drain", "n1", "--pod-selector=app=drained", "--ignore-daemonsets",
                      "--timeout=60s", timeout=90)
        # Through the eviction subresource (kubectl deletes pods itself without one).
        assert sorted(line for line in out.splitlines() if line.endswith(" evicted")) == \
            sorted(f"{name} evicted" for name in before)
        assert out.splitlines()[-1] == "node/n1 drained"
        assert kubectl.json("get", "node", "n1")["spec"]["unschedulable"] is True
    finally:
        kubectl("uncordon", "n1")
    kubectl("rollout", "status", "deployment/drained", "--timeout=60s", timeout=90)
    after = set(kubectl("get", "pods", "-l", "app=drained", "-o", "name").split())
    assert len(after) == 2 and not after & before
