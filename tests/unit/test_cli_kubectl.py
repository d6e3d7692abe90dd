"""`rk apply/get/delete`: printers, manifest loading, and the commands end to end.

Printers and manifest loading are pure and tested from tables with a fixed clock. The
commands run through click's CliRunner against a FAKE REST server (http.server on
127.0.0.1 in a thread, an in-memory dict behind the Kubernetes paths), which records
every request, so that a test can say "the second apply sent no write". The fake is
only as real as these tests need; the real API server is tested in test_rest.py.
"""

from __future__ import annotations

import asyncio
import copy
import http.server
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from raftkube.api import kinds, merge, printers
from raftkube.cli import apply, kubectl, manifests
from raftkube.client import config as cl
from raftkube.client import errors, rest, transport
from tests import hostile

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
TOKEN = "k" * 24
LAST = apply.LAST_APPLIED


def ts(**ago: float) -> str:
    return (NOW - timedelta(**ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def kind_of(api_version: str, kind: str) -> kinds.Kind:
    found = kinds.by_kind(api_version, kind)
    assert found is not None, f"{api_version} {kind} is not in raftkube.api.kinds"
    return found


DEPLOYMENT = kind_of("apps/v1", "Deployment")
POD = kind_of("v1", "Pod")


def rows(text: str) -> list[list[str]]:
    """A table's cells, cut where the header's columns start (cells may be empty)."""
    lines = text.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    bounds = list(zip(starts, [*starts[1:], None], strict=True))
    return [[line[a:b].strip() for a, b in bounds] for line in lines]


# ---- printers -----------------------------------------------------------------------------


@pytest.mark.parametrize(("delta", "expected"), [
    (timedelta(seconds=-5), "<invalid>"),
    (timedelta(seconds=-0.5), "0s"),
    (timedelta(seconds=0), "0s"),
    (timedelta(seconds=5), "5s"),
    (timedelta(seconds=119), "119s"),
    (timedelta(minutes=3), "3m"),
    (timedelta(minutes=2, seconds=30), "2m30s"),
    (timedelta(minutes=45), "45m"),
    (timedelta(hours=2), "120m"),  # kubectl counts minutes up to three hours
    (timedelta(hours=3), "3h"),
    (timedelta(hours=3, minutes=5), "3h5m"),
    (timedelta(hours=20), "20h"),
    (timedelta(days=4), "4d"),
    (timedelta(days=4, hours=6), "4d6h"),
    (timedelta(days=100), "100d"),
    (timedelta(days=800), "2y70d"),
    (timedelta(days=365 * 9), "9y"),
])
def test_human_duration_reads_like_kubectl(delta: timedelta, expected: str) -> None:
    assert printers.human_duration(delta) == expected


def test_age_comes_from_creation_timestamp_and_the_injected_clock() -> None:
    assert printers.age({"metadata": {"creationTimestamp": ts(minutes=3)}}, NOW) == "3m"
    assert printers.age({"metadata": {"creationTimestamp": "2024-05-01T11:59:55.250Z"}},
                        NOW) == "4s"
    assert printers.age({"metadata": {}}, NOW) == "<unknown>"
    assert printers.age({"metadata": {"creationTimestamp": "yesterday"}}, NOW) == "<unknown>"


def test_table_layout_is_kubectls_tabwriter() -> None:
    dep = {"metadata": {"name": "front", "creationTimestamp": ts(minutes=5)},
           "spec": {"replicas": 3},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    assert printers.table([dep], DEPLOYMENT, now=NOW) == (
        "NAME    READY   UP-TO-DATE   AVAILABLE   AGE\n"
        "front   2/3     3            2           5m\n")


def meta(name: str, **extra: Any) -> Obj:
    return {"name": name, "namespace": "default", "creationTimestamp": ts(minutes=5), **extra}


PRINTER_CASES: list[tuple[str, str, list[Obj], list[list[str]]]] = [
    ("v1", "Pod", [
        {"metadata": meta("web-1"),
         "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
         "status": {"phase": "Running", "containerStatuses": [
             {"name": "a", "ready": True, "restartCount": 1, "state": {"running": {}}},
             {"name": "b", "ready": False, "restartCount": 2, "state": {"running": {}}}]}},
        {"metadata": meta("web-2"), "spec": {"containers": [{"name": "a"}]}},
        {"metadata": meta("web-3"), "spec": {"containers": [{"name": "a"}]},
         "status": {"phase": "Running", "containerStatuses": [
             {"name": "a", "ready": False, "restartCount": 7,
              "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}},
        {"metadata": meta("web-4", deletionTimestamp=ts(seconds=1)),
         "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running"}},
    ], [["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        ["web-1", "1/2", "Running", "3", "5m"],
        ["web-2", "0/1", "Pending", "0", "5m"],
        ["web-3", "0/1", "CrashLoopBackOff", "7", "5m"],
        ["web-4", "0/1", "Terminating", "0", "5m"]]),
    ("apps/v1", "Deployment", [
        {"metadata": meta("front"), "spec": {"replicas": 3},
         "status": {"readyReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3}},
        {"metadata": meta("fresh"), "spec": {}},
    ], [["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ["front", "3/3", "3", "3", "5m"],
        ["fresh", "0/1", "0", "0", "5m"]]),
    ("apps/v1", "ReplicaSet", [
        {"metadata": meta("front-abc"), "spec": {"replicas": 3},
         "status": {"replicas": 3, "readyReplicas": 1}},
    ], [["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ["front-abc", "3", "3", "1", "5m"]]),
    ("apps/v1", "DaemonSet", [
        {"metadata": meta("agentd"),
         "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3,
                    "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}},
    ], [["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR",
         "AGE"],
        ["agentd", "3", "3", "2", "3", "2", "<none>", "5m"]]),
    ("batch/v1", "Job", [
        {"metadata": meta("running"), "spec": {"completions": 3},
         "status": {"succeeded": 2, "startTime": ts(minutes=4)}},
        {"metadata": meta("done"), "spec": {"completions": 1},
         "status": {"succeeded": 1, "startTime": ts(hours=2),
                    "completionTime": ts(hours=2, seconds=-45),
                    "conditions": [{"type": "Complete", "status": "True"}]}},
        {"metadata": meta("new"), "spec": {"parallelism": 2}},
        {"metadata": meta("gave-up"), "spec": {"completions": 1},
         "status": {"failed": 1, "startTime": ts(minutes=3),
                    "conditions": [{"type": "Complete", "status": "False"},
                                   {"type": "Failed", "status": "True"}]}},
        {"metadata": {**meta("going"), "deletionTimestamp": ts(seconds=5)},
         "spec": {"completions": 1}},
        {"metadata": meta("held"), "spec": {"completions": 1, "suspend": True},
         "status": {"conditions": [{"type": "Suspended", "status": "True"}]}},
    ], [["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],  # kubectl 1.28's STATUS
        ["running", "Running", "2/3", "4m", "5m"],
        ["done", "Complete", "1/1", "45s", "5m"],
        ["new", "Running", "0/1 of 2", "", "5m"],
        ["gave-up", "Failed", "0/1", "3m", "5m"],
        ["going", "Terminating", "0/1", "", "5m"],
        ["held", "Suspended", "0/1", "", "5m"]]),
    ("v1", "Service", [
        {"metadata": meta("web"),
         "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10",
                  "ports": [{"port": 80, "protocol": "TCP"}]}},
        {"metadata": meta("np"),
         "spec": {"type": "NodePort", "clusterIP": "10.96.0.11",
                  "ports": [{"port": 80, "nodePort": 30080},
                            {"port": 53, "nodePort": 30053, "protocol": "UDP"}]}},
        {"metadata": meta("lb"),
         "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.12", "ports": [{"port": 443}]}},
        {"metadata": meta("lb2"),
         "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.13", "ports": [{"port": 443}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}},
    ], [["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"],
        ["web", "ClusterIP", "10.96.0.10", "<none>", "80/TCP", "5m"],
        ["np", "NodePort", "10.96.0.11", "<none>", "80:30080/TCP,53:30053/UDP", "5m"],
        ["lb", "LoadBalancer", "10.96.0.12", "<pending>", "443/TCP", "5m"],
        ["lb2", "LoadBalancer", "10.96.0.13", "192.0.2.7", "443/TCP", "5m"]]),
    ("v1", "ConfigMap", [
        {"metadata": meta("game-demo"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}},
        {"metadata": meta("empty")},
    ], [["NAME", "DATA", "AGE"], ["game-demo", "3", "5m"], ["empty", "0", "5m"]]),
    ("v1", "Secret", [
        {"metadata": meta("creds"), "type": "Opaque", "data": {"password": "cHc="}},
        {"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"a": "", "b": ""}},
    ], [["NAME", "TYPE", "DATA", "AGE"],
        ["creds", "Opaque", "1", "5m"], ["tls", "kubernetes.io/tls", "2", "5m"]]),
    ("v1", "Namespace", [
        {"metadata": {"name": "team-a", "creationTimestamp": ts(days=4)}},
        {"metadata": {"name": "old", "creationTimestamp": ts(hours=5)},
         "status": {"phase": "Terminating"}},
    ], [["NAME", "STATUS", "AGE"], ["team-a", "Active", "4d"], ["old", "Terminating", "5h"]]),
    ("v1", "Node", [
        {"metadata": {"name": "n1", "creationTimestamp": ts(days=4),
                      "labels": {"node-role.kubernetes.io/worker": ""}},
         "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "nodeInfo": {"kubeletVersion": "raftkube-0.1.0"}}},
        {"metadata": {"name": "n2", "creationTimestamp": ts(days=4)},
         "spec": {"unschedulable": True},
         "status": {"conditions": [{"type": "Ready", "status": "False"}],
                    "nodeInfo": {"kubeletVersion": "raftkube-0.1.0"}}},
    ], [["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        ["n1", "Ready", "worker", "4d", "raftkube-0.1.0"],
        ["n2", "NotReady,SchedulingDisabled", "<none>", "4d", "raftkube-0.1.0"]]),
    ("v1", "Event", [
        {"metadata": meta("web-1.17abc"), "type": "Warning", "reason": "BackOff",
         "involvedObject": {"kind": "Pod", "name": "web-1"}, "lastTimestamp": ts(seconds=30),
         "message": "Back-off restarting failed container"},
        {"metadata": {"name": "e2", "creationTimestamp": ts(minutes=3)}, "type": "Normal",
         "reason": "Scheduled", "involvedObject": {"kind": "Pod", "name": "web-2"},
         "message": "Successfully assigned default/web-2 to n1"},
    ], [["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        ["30s", "Warning", "BackOff", "pod/web-1", "Back-off restarting failed container"],
        ["3m", "Normal", "Scheduled", "pod/web-2", "Successfully assigned default/web-2 to n1"]]),
]


@pytest.mark.parametrize(("api_version", "kind", "objs", "expected"), PRINTER_CASES,
                         ids=[c[1] for c in PRINTER_CASES])
def test_table_columns_per_kind(api_version: str, kind: str, objs: list[Obj],
                                expected: list[list[str]]) -> None:
    assert rows(printers.table(objs, kind_of(api_version, kind), now=NOW)) == expected


def test_other_kinds_show_name_and_age() -> None:
    widget = kinds.Kind("example.com", "v1", "Widget", "widgets", True, ())
    objs = [{"metadata": meta("w")}]
    assert rows(printers.table(objs, widget, now=NOW)) == [["NAME", "AGE"], ["w", "5m"]]


def test_all_namespaces_adds_a_namespace_column_to_namespaced_kinds_only() -> None:
    cm = kind_of("v1", "ConfigMap")
    objs = [{"metadata": {**meta("a"), "namespace": "team-a"}, "data": {}}]
    options = printers.Options(all_namespaces=True)
    assert rows(printers.table(objs, cm, now=NOW, options=options)) == [
        ["NAMESPACE", "NAME", "DATA", "AGE"], ["team-a", "a", "0", "5m"]]
    ns = [{"metadata": {"name": "team-a", "creationTimestamp": ts(minutes=5)}}]
    assert rows(printers.table(ns, kind_of("v1", "Namespace"), now=NOW, options=options)) == [
        ["NAME", "STATUS", "AGE"], ["team-a", "Active", "5m"]]


def test_wide_adds_columns_after_age() -> None:
    pod = {"metadata": meta("web-1"), "spec": {"containers": [{"name": "a"}],
                                               "nodeName": "n1"},
           "status": {"phase": "Running", "podIP": "10.244.1.5"}}
    options = printers.Options(output="wide")
    assert rows(printers.table([pod], POD, now=NOW, options=options)) == [
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "NOMINATED NODE",
         "READINESS GATES"],
        ["web-1", "0/1", "Running", "0", "5m", "10.244.1.5", "n1", "<none>", "<none>"]]


def test_yaml_json_and_name_outputs() -> None:
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "front"},
           "spec": {"replicas": 1}}
    bare = {"metadata": {"name": "back"}, "spec": {"replicas": 2}}
    one = printers.render([(DEPLOYMENT, [dep])], now=NOW,
                          options=printers.Options(output="yaml"), single=True)
    assert one.startswith("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: front\n")
    assert yaml.safe_load(one) == dep
    quoted = printers.to_yaml({"metadata": {"resourceVersion": "6", "name": "it's"}})
    assert quoted == 'metadata:\n  name: it\'s\n  resourceVersion: "6"\n'
    many = printers.render([(DEPLOYMENT, [dep, bare])], now=NOW,
                           options=printers.Options(output="yaml"))
    assert yaml.safe_load(many) == {
        "apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""},
        "items": [dep, {"apiVersion": "apps/v1", "kind": "Deployment", **bare}]}
    as_json = printers.render([(DEPLOYMENT, [dep])], now=NOW,
                              options=printers.Options(output="json"))
    assert json.loads(as_json)["kind"] == "List"
    assert '\n    "apiVersion": "v1",' in as_json  # kubectl indents JSON by four spaces
    svc = kind_of("v1", "Service")
    names = printers.render([(DEPLOYMENT, [dep, bare]), (svc, [{"metadata": {"name": "web"}}])],
                           now=NOW, options=printers.Options(output="name"))
    assert names == "deployment.apps/front\ndeployment.apps/back\nservice/web\n"


def test_several_kinds_print_one_table_each_with_kind_in_the_name() -> None:
    svc = kind_of("v1", "Service")
    text = printers.render(
        [(DEPLOYMENT, [{"metadata": meta("front"), "spec": {"replicas": 1}}]),
         (svc, [{"metadata": meta("web"), "spec": {"clusterIP": "10.96.0.1"}}])],
        now=NOW, options=printers.Options(with_kind=True))
    first, second = text.split("\n\n")
    assert rows(first)[1][0] == "deployment.apps/front"
    assert rows(second)[1][0] == "service/web"


def test_qualified_words() -> None:
    assert printers.qualified(DEPLOYMENT) == "deployment.apps"
    assert printers.qualified(kind_of("v1", "ConfigMap")) == "configmap"
    assert printers.qualified(kind_of("batch/v1", "Job")) == "job.batch"


# ---- manifests ------------------------------------------------------------------------------

DEPLOY_YAML = """\
# the front end
apiVersion: apps/v1
kind: Deployment
metadata:
  name: front   # trailing comment
spec:
  replicas: 2
  selector: {matchLabels: {app: front}}
  template:
    metadata: {labels: {app: front}}
    spec:
      containers: [{name: web, image: "busybox:1"}]
"""
CONFIGMAP_YAML = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: game-demo
data:
  lives: "3"
  mode: easy
"""
NAMESPACE_YAML = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n"


def load(paths: list[str], *, stdin: str = "", namespace: str = "default",
         explicit: bool = False) -> list[manifests.Manifest]:
    return manifests.load_manifests(paths, read_stdin=lambda: stdin, namespace=namespace,
                                  explicit_namespace=explicit)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_multi_document_yaml_with_comments_and_empty_documents(tmp_path: Path) -> None:
    f = write(tmp_path / "app.yaml",
              f"---\n{DEPLOY_YAML}---\n# only a comment\n---\n{CONFIGMAP_YAML}---\n")
    ms = load([f])
    assert [(m.ref, m.document, m.namespace) for m in ms] == [
        ("deployment.apps/front", 1, "default"), ("configmap/game-demo", 3, "default")]
    assert ms[0].obj["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "busybox:1"}]
    assert ms[0].obj["metadata"] == {"name": "front", "namespace": "default"}


def test_json_flow_yaml_and_concatenated_json(tmp_path: Path) -> None:
    flow = write(tmp_path / "flow.yaml",
                 "# JSON-ish, with a comment and unquoted keys\n"
                 "{apiVersion: v1, kind: ConfigMap, metadata: {name: a}, data: {k: v},}\n")
    stream = write(tmp_path / "two.json",
                   json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                               "metadata": {"name": "b", "namespace": "team-a"}}, indent=2)
                   + "\n" + json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                        "metadata": {"name": "team-a"}}))
    ms = load([flow, stream])
    assert [(m.ref, m.namespace, m.source) for m in ms] == [
        ("configmap/a", "default", flow), ("configmap/b", "team-a", stream),
        ("namespace/team-a", "", stream)]
    assert ms[0].obj["data"] == {"k": "v"}
    assert "namespace" not in ms[2].obj["metadata"]


def test_timestamps_stay_strings(tmp_path: Path) -> None:
    f = write(tmp_path / "cm.yaml",
              CONFIGMAP_YAML + "  since: 2024-05-01\n  at: 2024-05-01T10:00:00Z\n")
    data = load([f])[0].obj["data"]
    assert (data["since"], data["at"]) == ("2024-05-01", "2024-05-01T10:00:00Z")


def test_a_list_is_unpacked_and_items_are_checked(tmp_path: Path) -> None:
    good = write(tmp_path / "list.yaml", yaml.safe_dump({
        "apiVersion": "v1", "kind": "List",
        "items": [yaml.safe_load(CONFIGMAP_YAML), yaml.safe_load(NAMESPACE_YAML)]}))
    assert [m.ref for m in load([good])] == ["configmap/game-demo", "namespace/team-a"]
    assert [m.item for m in load([good])] == [1, 2]
    bad = write(tmp_path / "bad-list.yaml", yaml.safe_dump({
        "apiVersion": "v1", "kind": "List",
        "items": [yaml.safe_load(CONFIGMAP_YAML), {"apiVersion": "v1", "kind": "ConfigMap"}]}))
    with pytest.raises(manifests.ManifestError) as e:
        load([bad])
    assert e.value.problems == [
        f'error validating "{bad}" (document 1, item 2): error validating data: '
        "[metadata.name not set]"]


def test_a_directory_applies_its_manifest_files_sorted(tmp_path: Path) -> None:
    d = tmp_path / "manifests"
    d.mkdir()
    write(d / "20-app.yml", DEPLOY_YAML)
    write(d / "10-ns.yaml", NAMESPACE_YAML)
    write(d / "30-cm.json", json.dumps(yaml.safe_load(CONFIGMAP_YAML)))
    write(d / "README.md", "not a manifest")
    (d / "nested.yaml").mkdir()
    ms = load([str(d)])
    assert [(m.ref, Path(m.source).name) for m in ms] == [
        ("namespace/team-a", "10-ns.yaml"), ("deployment.apps/front", "20-app.yml"),
        ("configmap/game-demo", "30-cm.json")]


def test_stdin_and_namespaces(tmp_path: Path) -> None:
    ms = load(["-"], stdin=CONFIGMAP_YAML, namespace="team-b")
    assert (ms[0].source, ms[0].namespace) == ("STDIN", "team-b")
    text = CONFIGMAP_YAML.replace("name: game-demo", "name: game-demo\n  namespace: team-a")
    assert load(["-"], stdin=text, namespace="team-b")[0].namespace == "team-a"
    with pytest.raises(manifests.ManifestError, match='namespace from the provided object '
                                                    '"team-a" does not match'):
        load(["-"], stdin=text, namespace="team-b", explicit=True)


def test_namespaces_are_applied_first(tmp_path: Path) -> None:
    f = write(tmp_path / "app.yaml", f"{DEPLOY_YAML}---\n{NAMESPACE_YAML}---\n{CONFIGMAP_YAML}")
    assert [m.ref for m in manifests.apply_order(load([f]))] == [
        "namespace/team-a", "deployment.apps/front", "configmap/game-demo"]


@pytest.mark.parametrize(("text", "problem"), [
    (f"{CONFIGMAP_YAML}---\nkind: ConfigMap\nmetadata:\n  name: x\n  bad: [unclosed\n",
     r'error parsing "{f}" \(document 2\): yaml: line \d+, column \d+: '),
    (f"{CONFIGMAP_YAML}---\napiVersion: v1\nkind: ConfigMap\n metadata: x\n",
     r'error parsing "{f}" \(document 2\): yaml: line 11, column 10: mapping values are not '
     r"allowed here"),
    (f"{CONFIGMAP_YAML}---\n- just\n- a list\n",
     r'error validating "{f}" \(document 2\): expected an object with apiVersion, kind and '
     r"metadata, got array"),
    ("metadata:\n  name: x\n",
     r'error validating "{f}" \(document 1\): error validating data: '
     r"\[apiVersion not set, kind not set\]"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
     r"\[metadata.name not set\]"),
    ("apiVersion: v1\nkind: ConfigMap\n",
     r"\[metadata.name not set\]"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n",
     r'error parsing "{f}" \(document 1\): yaml: line 5, column 3: mapping key "name" '
     r"already defined at line 4"),
    ("apiVersion: v1\nkind: 5\nmetadata: {name: 123}\n",
     r"\[kind must be a string, got integer, metadata.name must be a string, got integer\]"),
    ("apiVersion: v9\nkind: Gadget\nmetadata: {name: g}\n",
     r'resource mapping not found for name: "g" namespace: "" from "{f}" \(document 1\): '
     r'no matches for kind "Gadget" in version "v9"'),
    # Hostile manifests: refused while parsing, with the file, document, line and column.
    (f"{CONFIGMAP_YAML}---\n" + hostile.alias_bomb(10, 20, head=CONFIGMAP_YAML).decode(),
     r'error parsing "{f}" \(document 2\): yaml: line 24, column 7: the document stands for '
     r"more than 67108864 bytes of JSON once its aliases are expanded"),
    (hostile.merge_bomb(9, 9, head=CONFIGMAP_YAML).decode(),
     r"yaml: line \d+, column \d+: the document stands for more than 67108864 bytes"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: &m {name: a, x: *m}\n",
     r'error parsing "{f}" \(document 1\): yaml: line 3, column 11: an alias refers to a '
     r"node that contains it"),
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nx: " + "[" * 100_000 + "]" * 100_000,
     r'error parsing "{f}" \(document 1\): yaml: line 4, column 104: the document nests '
     r"deeper than 100 levels"),
    ('{"kind": "ConfigMap"}\n{"x": ' + "[" * 100_000 + "]" * 100_000 + "}",
     r'error parsing "{f}" \(document 2\): the document nests deeper than 100 levels'),
    ('{"kind": "ConfigMap", "x": ' + "[" * 100 + "]" * 100 + "}",
     r'error parsing "{f}" \(document 1\): the document nests deeper than 100 levels'),
    ("apiVersion: v1\nkind: Secret\nmetadata: {name: a}\ndata: {k: !!binary aGk=}\n",
     r"yaml: line 4, column 11: the tag tag:yaml.org,2002:binary has no JSON value"),
])
def test_bad_manifests_name_the_file_the_document_and_the_problem(
        tmp_path: Path, text: str, problem: str) -> None:
    f = write(tmp_path / "app.yaml", text)
    with pytest.raises(manifests.ManifestError) as e:
        load([f])
    assert len(e.value.problems) == 1
    assert re.search(problem.replace("{f}", re.escape(f)), e.value.problems[0]), \
        e.value.problems[0]


def test_missing_path_and_empty_input(tmp_path: Path) -> None:
    with pytest.raises(manifests.ManifestError, match='the path "nope.yaml" does not exist'):
        load(["nope.yaml"])
    with pytest.raises(manifests.ManifestError, match="no objects passed to apply"):
        load([write(tmp_path / "empty.yaml", "# nothing\n---\n")])


# ---- the apply patch ---------------------------------------------------------------------


def test_apply_patch_is_empty_when_live_already_matches() -> None:
    manifest = yaml.safe_load(CONFIGMAP_YAML)
    live = apply.with_last_applied(manifest)
    live["metadata"].update(uid="u1", resourceVersion="7", creationTimestamp=ts(minutes=1))
    live["metadata"]["labels"] = {"added-by": "someone-else"}
    assert apply.apply_patch(manifest=manifest, live=live) == {}


def test_a_secret_written_with_string_data_is_unchanged_once_folded() -> None:
    manifest = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                "stringData": {"user": "admin", "password": "hunter2"}}
    live = apply.with_last_applied(manifest)
    del live["stringData"]  # the server keeps it as base64 data
    live["data"] = {"user": "YWRtaW4=", "password": "aHVudGVyMg==", "other": "eA=="}
    assert apply.apply_patch(manifest=manifest, live=live) == {}
    changed = copy.deepcopy(manifest)
    changed["stringData"]["password"] = "correct horse"
    patch = apply.apply_patch(manifest=changed, live=live)
    assert patch["stringData"] == {"password": "correct horse"}
    assert "data" not in patch


def test_apply_patch_keeps_annotations_it_does_not_own() -> None:
    manifest = yaml.safe_load(CONFIGMAP_YAML)
    manifest["metadata"]["annotations"] = {"owner": "me"}
    live = apply.with_last_applied(manifest)
    live["metadata"]["annotations"]["other"] = "x"  # written by someone else
    changed = copy.deepcopy(manifest)
    changed["data"]["lives"] = "9"
    result = merge.merge_patch(live, apply.apply_patch(manifest=changed, live=live))
    assert {k: v for k, v in result["metadata"]["annotations"].items() if k != LAST} == {
        "owner": "me", "other": "x"}
    # The manifest drops its annotations: its own go, the others' stay.
    del changed["metadata"]["annotations"]
    result = merge.merge_patch(live, apply.apply_patch(manifest=changed, live=live))
    assert set(result["metadata"]["annotations"]) == {"other", LAST}
    # An object made without apply keeps what others annotated.
    made = copy.deepcopy(manifest)
    made["metadata"]["annotations"] = {"tool": "helm"}
    result = merge.merge_patch(made, apply.apply_patch(manifest=changed, live=made))
    assert result["metadata"]["annotations"]["tool"] == "helm"


def test_apply_patch_removes_dropped_fields_and_records_the_new_manifest() -> None:
    old = yaml.safe_load(CONFIGMAP_YAML)
    new = copy.deepcopy(old)
    del new["data"]["mode"]
    new["data"]["lives"] = "5"
    patch = apply.apply_patch(manifest=new, live=apply.with_last_applied(old))
    assert patch["data"] == {"lives": "5", "mode": None}
    assert json.loads(patch["metadata"]["annotations"][LAST]) == new


def test_apply_patch_without_a_recorded_manifest_removes_nothing() -> None:
    manifest = yaml.safe_load(CONFIGMAP_YAML)
    live = copy.deepcopy(manifest)
    live["data"]["extra"] = "kept"
    patch = apply.apply_patch(manifest=manifest, live=live)
    assert set(patch) == {"metadata"}
    assert json.loads(patch["metadata"]["annotations"][LAST]) == manifest


# ---- a fake REST server ------------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


def status(code: int, reason: str, message: str, **details: Any) -> Obj:
    out: Obj = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}
    if details:
        out["details"] = details
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, for the fake only."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


@dataclass
class FakeApi:
    """Kubernetes paths over a dict; `inject` forces an answer to (method, path)."""

    token: str = TOKEN
    objects: dict[tuple[str, str, str], Obj] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    inject: dict[tuple[str, str], tuple[int, Obj]] = field(default_factory=dict)
    always: tuple[int, Obj] | None = None
    revision: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def writes(self) -> list[Seen]:
        """What was asked to change something: dry runs do not count."""
        return [s for s in self.seen if s.method != "GET" and s.query.get("dryRun") != "All"]

    def put(self, kind: kinds.Kind, obj: Obj) -> None:
        meta = obj["metadata"]
        self.revision += 1
        meta["resourceVersion"] = str(self.revision)
        ns = meta.get("namespace", "") if kind.namespaced else ""
        self.objects[(kind.resource, ns, meta["name"])] = obj

    def handle(self, method: str, raw_path: str, headers: Any, body: bytes) -> tuple[int, Any]:
        url = urllib.parse.urlsplit(raw_path)
        query = dict(urllib.parse.parse_qsl(url.query))
        parsed = json.loads(body) if body else None
        with self.lock:
            self.seen.append(Seen(method, url.path, query, headers.get("Content-Type", ""),
                                  parsed))
            if self.always is not None:
                return self.always
            if headers.get("Authorization") != f"Bearer {self.token}":
                return 401, status(401, "Unauthorized", "Unauthorized")
            if (method, url.path) in self.inject:
                return self.inject[(method, url.path)]
            return self.route(method, url.path, query, parsed)

    def route(self, method: str, path: str, query: dict[str, str],
              body: Any) -> tuple[int, Any]:
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        if parts[0] == "api":
            group, version, rest_ = "", parts[1], parts[2:]
        else:
            group, version, rest_ = parts[1], parts[2], parts[3:]
        ns = ""
        if rest_[0] == "namespaces" and len(rest_) >= 3:
            ns, rest_ = rest_[1], rest_[2:]
        kind = kinds.by_plural(group, version, rest_[0])
        if kind is None:
            return 404, status(404, "NotFound", "the server could not find the requested "
                                                "resource")
        name = rest_[1] if len(rest_) > 1 else ""
        if ns == "locked":
            what = f'{kind.resource} "{name}"' if name else kind.resource
            return 403, status(403, "Forbidden", f'{what} is forbidden: User "dev" cannot '
                                                 f'{method.lower()} resource "{kind.plural}" '
                                                 f'in the namespace "locked"')
        key = (kind.resource, ns, name)
        missing = status(404, "NotFound", f'{kind.resource} "{name}" not found',
                         name=name, kind=kind.plural)
        if method == "GET" and not name:
            items = sorted((o for (r, n, _), o in self.objects.items()
                            if r == kind.resource and (not ns or n == ns)
                            and self.selected(o, query.get("labelSelector", ""))),
                           key=lambda o: (o["metadata"].get("namespace", ""),
                                          o["metadata"]["name"]))
            start = int(query.get("continue") or 0)
            limit = int(query.get("limit") or 0) or len(items)
            page = items[start:start + limit]
            meta: Obj = {"resourceVersion": str(self.revision)}
            if start + limit < len(items):
                meta["continue"] = str(start + limit)
            return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                         "metadata": meta, "items": copy.deepcopy(page)}
        if method == "GET":
            return (200, copy.deepcopy(self.objects[key])) if key in self.objects \
                else (404, missing)
        if method == "POST":
            name = body["metadata"]["name"]
            key = (kind.resource, ns, name)
            if key in self.objects:
                return 409, status(409, "AlreadyExists",
                                   f'{kind.resource} "{name}" already exists')
            if kind.namespaced and ("v1/namespaces", "", ns) not in self.objects \
                    and ns not in self.namespaces():
                return 404, status(404, "NotFound", f'namespaces "{ns}" not found')
            invalid = self.invalid(kind, body)
            if invalid:
                return 422, invalid
            obj = copy.deepcopy(body)
            obj["metadata"].update(uid=f"uid-{name}", creationTimestamp=ts(minutes=5))
            if kind.namespaced:
                obj["metadata"]["namespace"] = ns
            if query.get("dryRun") == "All":
                return 201, obj
            self.put(kind, obj)
            return 201, copy.deepcopy(obj)
        if key not in self.objects:
            return 404, missing
        if method == "PATCH":
            if "merge-patch" not in (self.seen[-1].content_type or ""):
                return 415, status(415, "UnsupportedMediaType", "not a merge patch")
            obj = merge_patch(self.objects[key], body)
            invalid = self.invalid(kind, obj)
            if invalid:
                return 422, invalid
            if query.get("dryRun") == "All":
                return 200, obj
            self.put(kind, obj)
            return 200, copy.deepcopy(obj)
        if method == "DELETE":
            return 200, self.objects.pop(key)
        return 405, status(405, "MethodNotAllowed", "not here")

    def namespaces(self) -> set[str]:
        return {n for (r, _, n) in self.objects if r == "namespaces"}

    @staticmethod
    def selected(obj: Obj, selector: str) -> bool:
        labels = obj["metadata"].get("labels") or {}
        pairs = [p.split("=", 1) for p in selector.split(",") if p]
        return all(labels.get(k) == v for k, v in pairs)

    @staticmethod
    def invalid(kind: kinds.Kind, obj: Obj) -> Obj | None:
        replicas = (obj.get("spec") or {}).get("replicas", 0)
        if kind.kind == "Deployment" and replicas < 0:
            name = obj["metadata"]["name"]
            return status(422, "Invalid",
                          f'Deployment.apps "{name}" is invalid: spec.replicas: Invalid '
                          f"value: {replicas}: must be greater than or equal to 0",
                          name=name, group="apps", kind="Deployment",
                          causes=[{"reason": "FieldValueInvalid", "field": "spec.replicas",
                                   "message": f"Invalid value: {replicas}: must be greater "
                                              "than or equal to 0"}])
        return None


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        code, body = self.server.api.handle(self.command, self.path, self.headers,
                                            self.rfile.read(length))
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    api: FakeApi


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start fake servers on demand; each is stopped and closed after the test."""
    started: list[tuple[Server, threading.Thread]] = []

    def start(api: FakeApi) -> str:
        server = Server(("127.0.0.1", 0), Handler)
        server.api = api
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        started.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@dataclass
class Cli:
    api: FakeApi
    dir: Path

    def __call__(self, *args: str, input: str | None = None) -> Result:
        # As `rk`'s own group, with a short wait for servers that never answer.
        group = click.Group("rk", params=[click.Option(["--request-timeout"], type=float,
                                                       default=1.0)])
        kubectl.register(group, clock=lambda: NOW)
        return CliRunner().invoke(group, list(args), input=input)

    def file(self, name: str, text: str) -> str:
        return write(self.dir / name, text)


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: list[str], *,
              token: str = TOKEN, namespace: str | None = None) -> None:
    config: Obj = {"servers": servers, "token": token}
    if namespace:
        config["namespace"] = namespace
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("RK_CONFIG", str(path))


@pytest.fixture
def rk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> Cli:
    api = FakeApi()
    namespace = kind_of("v1", "Namespace")
    for ns in ("default", "team-a"):
        api.put(namespace, {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": ns, "creationTimestamp": ts(days=4)}})
    configure(tmp_path, monkeypatch, [serve(api)])
    return Cli(api, tmp_path)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.stderr, result.exception)
    return result.stdout


# ---- apply ---------------------------------------------------------------------------------


def test_apply_creates_then_leaves_unchanged_without_writing(rk: Cli) -> None:
    f = rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")
    assert ok(rk("apply", "-f", f)) == (
        "deployment.apps/front created\nconfigmap/game-demo created\n")
    posts = [s for s in rk.api.writes() if s.method == "POST"]
    assert [s.path for s in posts] == ["/apis/apps/v1/namespaces/default/deployments",
                                       "/api/v1/namespaces/default/configmaps"]
    live = rk.api.objects[("configmaps", "default", "game-demo")]
    recorded = live["metadata"]["annotations"][LAST]
    manifest = yaml.safe_load(CONFIGMAP_YAML)
    manifest["metadata"]["namespace"] = "default"
    assert recorded == json.dumps(manifest, separators=(",", ":"), sort_keys=True)

    before = len(rk.api.writes())
    assert ok(rk("apply", "-f", f)) == (
        "deployment.apps/front unchanged\nconfigmap/game-demo unchanged\n")
    assert len(rk.api.writes()) == before


def test_apply_configures_with_a_merge_patch_that_removes_dropped_fields(rk: Cli) -> None:
    f = rk.file("cm.yaml", CONFIGMAP_YAML)
    ok(rk("apply", "-f", f))
    # Someone else labels the object; apply must leave that alone.
    rk.api.objects[("configmaps", "default", "game-demo")]["metadata"]["labels"] = {"x": "y"}
    rk.file("cm.yaml", CONFIGMAP_YAML.replace('  lives: "3"\n', '  lives: "5"\n')
            .replace("  mode: easy\n", ""))
    assert ok(rk("apply", "-f", f)) == "configmap/game-demo configured\n"
    patch = rk.api.writes()[-1]
    assert (patch.method, patch.path) == ("PATCH",
                                          "/api/v1/namespaces/default/configmaps/game-demo")
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["data"] == {"lives": "5", "mode": None}
    live = rk.api.objects[("configmaps", "default", "game-demo")]
    assert live["data"] == {"lives": "5"}
    assert live["metadata"]["labels"] == {"x": "y"}
    assert json.loads(live["metadata"]["annotations"][LAST])["data"] == {"lives": "5"}
    assert ok(rk("apply", "-f", f)) == "configmap/game-demo unchanged\n"


def test_apply_creates_namespaces_first_and_honours_n(rk: Cli) -> None:
    f = rk.file("app.yaml", f"{CONFIGMAP_YAML}---\n"
                + NAMESPACE_YAML.replace("team-a", "team-b"))
    assert ok(rk("apply", "-f", f, "-n", "team-b")) == (
        "namespace/team-b created\nconfigmap/game-demo created\n")
    assert ("configmaps", "team-b", "game-demo") in rk.api.objects


def test_apply_reads_stdin_and_a_directory(rk: Cli) -> None:
    assert ok(rk("apply", "-f", "-", input=CONFIGMAP_YAML)) == "configmap/game-demo created\n"
    d = rk.dir / "m"
    d.mkdir()
    write(d / "b.yaml", DEPLOY_YAML)
    write(d / "a.json", json.dumps(yaml.safe_load(CONFIGMAP_YAML)))
    assert ok(rk("apply", "-f", str(d))) == (
        "configmap/game-demo unchanged\ndeployment.apps/front created\n")


def test_config_namespace_is_the_default(rk: Cli, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    configure(tmp_path, monkeypatch, config["servers"], namespace="team-a")
    ok(rk("apply", "-f", "-", input=CONFIGMAP_YAML))
    assert ("configmaps", "team-a", "game-demo") in rk.api.objects


def test_a_bad_document_applies_nothing(rk: Cli) -> None:
    f = rk.file("app.yaml", f"{CONFIGMAP_YAML}---\napiVersion: v1\nkind: ConfigMap\n"
                            " metadata: x\n")
    result = rk("apply", "-f", rk.file("ok.yaml", DEPLOY_YAML), "-f", f)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f'error: error parsing "{f}" (document 2): yaml: line 11, '
                                  "column 10: mapping values are not allowed here\n")
    assert rk.api.seen == []


def test_a_refusal_by_the_server_anywhere_applies_nothing(rk: Cli) -> None:
    bad = DEPLOY_YAML.replace("replicas: 2", "replicas: -1")
    f = rk.file("app.yaml", f"{CONFIGMAP_YAML}---\n{bad}")
    result = rk("apply", "-f", f)
    assert result.exit_code == 1
    # kubectl's words for Invalid: from the Status's details, without the file's name.
    assert result.stderr == (
        'The Deployment "front" is invalid: spec.replicas: Invalid value: -1: must be '
        "greater than or equal to 0\n")
    assert result.stdout == ""  # the good ConfigMap before it was not applied either
    assert rk.api.writes() == []
    assert [s.query for s in rk.api.seen if s.method == "POST"] == [
        {"fieldValidation": "Strict", "dryRun": "All"}] * 2


def test_apply_error_wording_for_conflict_and_forbidden(rk: Cli) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    rk.api.inject[("POST", path)] = (409, status(409, "AlreadyExists",
                                                 'configmaps "game-demo" already exists'))
    f = rk.file("cm.yaml", CONFIGMAP_YAML)
    result = rk("apply", "-f", f)
    assert (result.exit_code, result.stderr) == (1, (
        f'Error from server (AlreadyExists): error when creating "{f}": '
        'configmaps "game-demo" already exists\n'))
    result = rk("apply", "-f", f, "-n", "locked")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error from server (Forbidden): error when retrieving current configuration of "
        f'configmap/game-demo from "{f}": configmaps "game-demo" is forbidden: User "dev" '
        'cannot get resource "configmaps" in the namespace "locked"\n')


ANCHORED_YAML = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: front
  labels: &labels {app: front}
spec:
  replicas: 2
  selector: {matchLabels: *labels}
  template:
    metadata: {labels: *labels}
    spec:
      containers:
      - &web {name: web, image: "busybox:1", env: [{name: MODE, value: prod}]}
      - {<<: *web, name: sidecar}
"""


def test_apply_takes_anchors_and_merge_keys(rk: Cli) -> None:
    f = rk.file("app.yaml", ANCHORED_YAML)
    assert ok(rk("apply", "-f", f)) == "deployment.apps/front created\n"
    live = rk.api.objects[("deployments.apps", "default", "front")]
    assert live["spec"]["selector"] == {"matchLabels": {"app": "front"}}
    assert live["spec"]["template"]["metadata"]["labels"] == {"app": "front"}
    assert live["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "busybox:1", "env": [{"name": "MODE", "value": "prod"}]},
        {"name": "sidecar", "image": "busybox:1", "env": [{"name": "MODE", "value": "prod"}]}]
    assert ok(rk("apply", "-f", f)) == "deployment.apps/front unchanged\n"


def test_apply_refuses_an_alias_bomb_fast_and_sends_nothing(rk: Cli) -> None:
    f = rk.file("bomb.yaml", hostile.alias_bomb(10, 20, head=CONFIGMAP_YAML).decode())
    started = time.process_time()  # CPU: a loaded machine stretches wall time
    result = rk("apply", "-f", f)
    took = time.process_time() - started
    assert result.exit_code == 1
    assert result.stderr == (
        f'error: error parsing "{f}" (document 1): yaml: line 16, column 7: the document '
        "stands for more than 67108864 bytes of JSON once its aliases are expanded\n")
    assert took < 2.0, f"rk apply took {took:.2f}s of CPU to refuse a bomb"
    assert rk.api.seen == []


# ---- get ---------------------------------------------------------------------------------


def seed(rk: Cli) -> None:
    ok(rk("apply", "-f", rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")))
    ok(rk("apply", "-f", "-", "-n", "team-a",
          input=CONFIGMAP_YAML.replace("game-demo", "other")))


def test_get_tables(rk: Cli) -> None:
    seed(rk)
    assert ok(rk("get", "deployments")) == (
        "NAME    READY   UP-TO-DATE   AVAILABLE   AGE\n"
        "front   0/2     0            0           5m\n")
    assert rows(ok(rk("get", "cm", "-A"))) == [
        ["NAMESPACE", "NAME", "DATA", "AGE"], ["default", "game-demo", "2", "5m"],
        ["team-a", "other", "2", "5m"]]
    assert rk.api.seen[-1].path == "/api/v1/configmaps"
    assert rows(ok(rk("get", "configmap", "other", "-n", "team-a"))) == [
        ["NAME", "DATA", "AGE"], ["other", "2", "5m"]]
    assert rows(ok(rk("get", "ns"))) == [
        ["NAME", "STATUS", "AGE"], ["default", "Active", "4d"], ["team-a", "Active", "4d"]]
    both = ok(rk("get", "deploy,cm"))
    assert "deployment.apps/front" in both and "configmap/game-demo" in both


def test_get_with_selectors_and_pages(rk: Cli) -> None:
    seed(rk)
    for i in range(5):
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": f"page-{i}", "labels": {"batch": "x"}}}
        ok(rk("apply", "-f", "-", input=json.dumps(cm)))
    rk.api.seen.clear()
    out = ok(rk("get", "configmaps", "-l", "batch=x", "--field-selector",
                "metadata.namespace=default", "-o", "name"))
    assert out == "".join(f"configmap/page-{i}\n" for i in range(5))
    assert rk.api.seen[0].query == {"labelSelector": "batch=x", "limit": "500",
                                    "fieldSelector": "metadata.namespace=default"}
    config = cl.load_config()

    async def list_in_pages() -> list[Obj]:
        async with transport.Transport(config.servers, config.token) as tp:
            items, _ = await rest.RestClient(tp).list_all(
                kind_of("v1", "ConfigMap"), "default", label_selector="batch=x", chunk=2)
            return items

    got = asyncio.run(list_in_pages())
    assert [printers.name_of(o) for o in got] == [f"page-{i}" for i in range(5)]
    assert [s.query.get("continue") for s in rk.api.seen[-3:]] == [None, "2", "4"]


def test_get_yaml_json_and_name(rk: Cli) -> None:
    seed(rk)
    one = yaml.safe_load(ok(rk("get", "deployment", "front", "-o", "yaml")))
    assert one == rk.api.objects[("deployments.apps", "default", "front")]
    listed = json.loads(ok(rk("get", "deploy", "-o", "json")))
    assert (listed["kind"], listed["apiVersion"]) == ("List", "v1")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["front"]
    assert ok(rk("get", "deployments.apps/front", "cm/game-demo", "-o", "name")) == (
        "deployment.apps/front\nconfigmap/game-demo\n")
    empty = yaml.safe_load(ok(rk("get", "pods", "-o", "yaml")))
    assert empty == {"apiVersion": "v1", "kind": "List", "items": [],
                     "metadata": {"resourceVersion": ""}}


def test_get_empty_lists_say_so_on_stderr(rk: Cli) -> None:
    result = rk("get", "pods")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "", "No resources found in default namespace.\n")
    result = rk("get", "pods", "-A")
    assert (result.exit_code, result.stderr) == (0, "No resources found\n")
    result = rk("get", "nodes")
    assert (result.exit_code, result.stderr) == (0, "No resources found\n")


def test_get_errors(rk: Cli) -> None:
    result = rk("get", "foo")
    assert (result.exit_code, result.stderr) == (
        1, 'error: the server doesn\'t have a resource type "foo"\n')
    result = rk("get", "pods", "nope")
    assert (result.exit_code, result.stdout, result.stderr) == (
        1, "", 'Error from server (NotFound): pods "nope" not found\n')
    result = rk("get", "pods", "-n", "locked")
    assert (result.exit_code, result.stderr) == (
        1, 'Error from server (Forbidden): pods is forbidden: User "dev" cannot get resource '
           '"pods" in the namespace "locked"\n')
    seed(rk)
    result = rk("get", "deploy", "front", "nope")
    assert result.exit_code == 1
    assert rows(result.stdout)[1][0] == "front"
    assert result.stderr == 'Error from server (NotFound): deployments.apps "nope" not found\n'


# ---- delete ------------------------------------------------------------------------------


def test_delete_by_name_with_cascade(rk: Cli) -> None:
    seed(rk)
    assert ok(rk("delete", "deployment", "front")) == 'deployment.apps "front" deleted\n'
    last = rk.api.writes()[-1]
    assert (last.method, last.path, last.query) == (
        "DELETE", "/apis/apps/v1/namespaces/default/deployments/front",
        {"propagationPolicy": "Background"})
    assert ok(rk("delete", "cm/other", "-n", "team-a", "--cascade=orphan")) == (
        'configmap "other" deleted\n')
    assert rk.api.writes()[-1].query == {"propagationPolicy": "Orphan"}
    result = rk("delete", "deploy", "front")
    assert (result.exit_code, result.stderr) == (
        1, 'Error from server (NotFound): deployments.apps "front" not found\n')
    assert rk("delete", "deploy", "front", "--ignore-not-found").exit_code == 0


def test_delete_from_a_file_and_by_selector(rk: Cli) -> None:
    seed(rk)
    f = rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")
    assert ok(rk("delete", "-f", f, "--cascade", "foreground")) == (
        'deployment.apps "front" deleted\nconfigmap "game-demo" deleted\n')
    assert {s.query["propagationPolicy"] for s in rk.api.writes()[-2:]} == {"Foreground"}
    result = rk("delete", "-f", f)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f'Error from server (NotFound): error when deleting "{f}": deployments.apps "front" '
        "not found",
        f'Error from server (NotFound): error when deleting "{f}": configmaps "game-demo" '
        "not found"]
    assert ok(rk("delete", "configmaps", "--all", "-n", "team-a")) == (
        'configmap "other" deleted\n')
    result = rk("delete", "configmaps")
    assert (result.exit_code, result.stderr) == (
        1, "error: resource(s) were provided, but no name was specified\n")


# ---- servers and auth -----------------------------------------------------------------------


def test_servers_are_tried_in_turn_past_dead_and_unavailable_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> None:
    busy = FakeApi(always=(503, status(503, "ServiceUnavailable", "no quorum")))
    good = FakeApi()
    good.put(kind_of("v1", "Namespace"), {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": "default"}})
    configure(tmp_path, monkeypatch, [closed_port_url(), serve(busy), serve(good)])
    cli = Cli(good, tmp_path)
    assert ok(cli("apply", "-f", "-", input=CONFIGMAP_YAML)) == "configmap/game-demo created\n"
    assert len(busy.seen) == 1  # then the answering server is tried first
    ok(cli("get", "cm"))
    assert len(busy.seen) == 2


def test_a_final_answer_is_not_retried_elsewhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> None:
    first, second = FakeApi(), FakeApi()
    configure(tmp_path, monkeypatch, [serve(first), serve(second)])
    result = Cli(first, tmp_path)("get", "pods", "nope")
    assert result.exit_code == 1
    assert (len(first.seen), len(second.seen)) == (1, 0)


def test_an_answer_that_is_not_a_status_moves_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> None:
    foreign = FakeApi(always=(404, {"detail": "Not Found"}))  # some other web server
    good = FakeApi()
    configure(tmp_path, monkeypatch, [serve(foreign), serve(good)])
    assert Cli(good, tmp_path)("get", "cm").exit_code == 0
    assert len(foreign.seen) == 1


def test_a_write_that_timed_out_is_not_sent_again_elsewhere(serve: Any) -> None:
    good = FakeApi()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # connections are queued, never answered
        stuck = f"http://127.0.0.1:{hung.getsockname()[1]}"
        good_url = serve(good)

        async def write_then_read() -> None:
            async with transport.Transport([stuck, good_url], TOKEN, timeout=0.3) as tp:
                client = rest.RestClient(tp)
                cm = kind_of("v1", "ConfigMap")
                with pytest.raises(errors.ClientError,
                                   match="may or may not have been applied"):
                    await client.create(cm, "default", yaml.safe_load(CONFIGMAP_YAML))
                assert good.writes() == []
                tp.servers = [stuck, good_url]
                assert (await client.list(cm, "default"))["items"] == []  # a read moves on

        asyncio.run(write_then_read())


def test_a_write_answered_504_is_reported_as_unknown_and_not_sent_elsewhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> None:
    late, other = FakeApi(), FakeApi()
    cm = kind_of("v1", "ConfigMap")
    for api in (late, other):
        api.put(cm, yaml.safe_load(CONFIGMAP_YAML) | {"metadata": {
            "name": "game-demo", "namespace": "default"}})
    late.inject[("DELETE", "/api/v1/namespaces/default/configmaps/game-demo")] = (
        504, status(504, "Timeout", "Timeout: the store did not confirm the write in time; "
                                    "it may or may not have been applied"))
    configure(tmp_path, monkeypatch, [serve(late), serve(other)])
    result = Cli(late, tmp_path)("delete", "cm", "game-demo")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the outcome is unknown: "), result.stderr
    assert "may or may not have been applied" in result.stderr
    assert other.writes() == []


def test_no_server_answered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(tmp_path, monkeypatch, [closed_port_url(), closed_port_url()])
    result = Cli(FakeApi(), tmp_path)("get", "pods")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no server answered GET /api/v1/namespaces/default/"
                                    "pods: http://127.0.0.1:")


def test_a_wrong_token_reads_like_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          serve: Any) -> None:
    configure(tmp_path, monkeypatch, [serve(FakeApi())], token="wrong-token")
    result = Cli(FakeApi(), tmp_path)("apply", "-f", "-", input=CONFIGMAP_YAML)
    assert (result.exit_code, result.stderr) == (
        1, "error: You must be logged in to the server (Unauthorized)\n")
    for args in (("get", "cm", "a", "b"), ("get", "pods"), ("delete", "cm", "a", "b")):
        result = Cli(FakeApi(), tmp_path)(*args)
        assert (result.exit_code, result.stderr) == (
            1, "error: You must be logged in to the server (Unauthorized)\n"), args


def test_rest_error_carries_the_status() -> None:
    e = errors.ApiError(status(404, "NotFound", 'pods "nope" not found', name="nope",
                              kind="pods"))
    assert (e.code, e.reason, e.message, e.details["name"]) == (
        404, "NotFound", 'pods "nope" not found', "nope")
    assert str(e) == 'Error from server (NotFound): pods "nope" not found'
    assert rest.path_of(DEPLOYMENT, "default", "front") == \
        "/apis/apps/v1/namespaces/default/deployments/front"
    assert rest.path_of(DEPLOYMENT, None) == "/apis/apps/v1/deployments"
    assert rest.path_of(kind_of("v1", "Node"), "ignored", "n1") == "/api/v1/nodes/n1"
    assert rest.path_of(POD, "a b", "x/y") == "/api/v1/namespaces/a%20b/pods/x%2Fy"


def test_register_adds_the_commands() -> None:
    group = click.Group("rk")
    kubectl.register(group)
    assert {"apply", "get", "delete"} <= set(group.commands)


def test_the_config_is_rk_config_else_the_home_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> None:
    good = FakeApi()
    monkeypatch.delenv("RK_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    result = Cli(good, tmp_path)("get", "cm")
    assert result.exit_code == 1
    assert f"cannot read config {tmp_path}/.raftkube/config.yaml" in result.stderr
    (tmp_path / ".raftkube").mkdir()
    (tmp_path / ".raftkube" / "config.yaml").write_text(
        yaml.safe_dump({"servers": [serve(good)], "token": TOKEN}))
    assert Cli(good, tmp_path)("get", "cm").exit_code == 0
    for bad, words in (({"servers": [], "token": TOKEN}, "servers must be a non-empty list"),
                       ({"servers": ["http://x"]}, "token must be a non-empty string"),
                       (["a"], "expected a mapping")):
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad))
        monkeypatch.setenv("RK_CONFIG", str(path))
        result = Cli(good, tmp_path)("get", "cm")
        assert result.exit_code == 1 and words in result.stderr, result.stderr
