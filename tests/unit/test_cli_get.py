"""`rk get`: JSONPath, custom columns, --sort-by, pod columns, the command's slips, and
`-w` resuming a broken watch.

JSONPath cases were checked against kubectl 1.32 itself (`kubectl label --local -f FILE
-o jsonpath=...` prints without a server). The command runs through CliRunner against
the fake API server of test_cli_kubectl; the watch runs against a scripted client.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from raftkube.api import kinds, printers
from raftkube.cli import get, jsonpath, outputs
from raftkube.cli.session import Session
from raftkube.client import errors, rest, transport
from tests.unit.test_cli_kubectl import (  # noqa: F401  (fixtures)
    NOW,
    Cli,
    ok,
    rk,
    rows,
    seed,
    serve,
    ts,
)

pytestmark = pytest.mark.unit

Obj = dict[str, Any]

DOC: Obj = {
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "x", "namespace": "default",
                 "annotations": {"z": "1", "b": "2", "m": "3"},
                 "labels": {"b": "2", "app.kubernetes.io/name": "web"}},
    "data": {"k": "v"},
    "conds": [{"type": "Ready", "status": "True", "n": 1.5, "i": 3, "nul": None, "t": True},
              {"type": "Init", "status": "False", "n": 2, "i": 10}]}


# ---- jsonpath -------------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "expected"), [
    ("{.conds[*].n}|{.conds[*].i}|{.conds[0].nul}|{.conds[0].t}", "1.5 2|3 10|null|true"),
    ("{.metadata.annotations}|{..type}", '{"b":"2","m":"3","z":"1"}|Ready Init'),
    ('{.conds[?(@.type=="Ready")].status}|{.conds[?(@.i>5)].type}|{.conds[?(@.nul)].type}'
     "|{.conds[-1:].type}|{.conds[0,1].type}", "True|Init|Ready|Init|Ready Init"),
    ('{range .conds[*]}{.type}={.status}{"\\n"}{end}', "Ready=True\nInit=False\n"),
    ("{.metadata['name']}", "x"),
    ("{.conds[0:1]}", '[{"i":3,"n":1.5,"nul":null,"status":"True","t":true,"type":"Ready"}]'
     .replace("[", "", 1)[:-1]),
    ('{.conds[?(@.i==3)].type}{"\\t"}x', "Ready\tx"),
    ("{range .conds[*]}{.type}", "ReadyInit"),  # a range without {end} runs to the end
    ("plain {.metadata.name} text", "plain x text"),
    ("{.conds.type}|{.metadata.name.foo}|{$.metadata.name}|{.metadata.nope.deeper}",
     "||x|"),
    ("{.metadata['name','namespace']}|{.conds[*]['type']}", "x default|Ready Init"),
    ("{.metadata..name}", "x"),
    ("{..i}", "3 10"),
    ('{"\\u00e9\\x41"}', "éA"),
    ('{.metadata.name} {"a"} {@.kind}', "x a ConfigMap"),
    ("{.conds[1:].type}{.conds[::1].i}{.conds[3:3]}", "Init3 10"),
    ("{kind}", "ConfigMap"),
    ("{.conds[?(@.status!='True')].type}", "Init"),
    ("{.conds[?(@.t==true)].type}", "Ready"),
    ("{.metadata.labels.app\\.kubernetes\\.io/name}", "web"),
    ("{.conds[?(@.type[0])].i}", ""),  # a path that does not fit an item: not kept
])
def test_jsonpath_prints_like_kubectl(template: str, expected: str) -> None:
    assert jsonpath.parse(template).render(DOC) == expected


@pytest.mark.parametrize(("template", "message"), [
    ("{.conds[}", "error parsing jsonpath {.conds[}, unterminated array"),
    ("{.metadata.name", "error parsing jsonpath {.metadata.name, unclosed action"),
    ("{.conds[x]}", 'error parsing jsonpath {.conds[x]}, invalid array index "x"'),
    ('{.a[?(@.b=~"R")]}', 'error parsing jsonpath {.a[?(@.b=~"R")]}, unrecognized '
                          "character in action: U+007E '~'"),
    ('{"\\q"}', 'error parsing jsonpath {"\\q"}, invalid escape in "\\q"'),
    ("{.conds[5].type}", 'error executing jsonpath "{.conds[5].type}": array index out of '
                         "bounds: index 5, length 2"),
    ("{.conds[::-1].i}", 'error executing jsonpath "{.conds[::-1].i}": step must be > 0'),
    ("{end}", 'error executing jsonpath "{end}": not in range, nothing to end'),
    ("{.metadata[?(@.a)]}", "is not array or slice and cannot be filtered"),
    ('{.conds[?(@.i<"a")]}', "incompatible types for comparison"),
    ("{.kind[0]}", 'error executing jsonpath "{.kind[0]}": string is not array or slice'),
    ("{.conds[-]}", 'error parsing jsonpath {.conds[-]}, invalid array index "-"'),
    ("{.conds[1:-]}", 'error parsing jsonpath {.conds[1:-]}, invalid array index "-"'),
    ("{.conds[?()]}", "error parsing jsonpath {.conds[?()]}, a filter operand is missing"),
    ("{.conds[?( )].i}", "jsonpath {.conds[?( )].i}, a filter operand is missing"),
    ("{.conds[?(@.i==)]}", "jsonpath {.conds[?(@.i==)]}, a filter operand is missing"),
])
def test_jsonpath_errors_name_the_template_and_the_problem(template: str,
                                                           message: str) -> None:
    with pytest.raises(jsonpath.JsonPathError) as caught:
        jsonpath.parse(template).render(DOC)
    assert message in str(caught.value)


def test_missing_keys_are_errors_only_when_asked() -> None:
    template = jsonpath.parse("{.metadata.nope}")
    assert template.render(DOC) == ""
    with pytest.raises(jsonpath.JsonPathError, match="nope is not found"):
        template.render(DOC, allow_missing=False)


@pytest.mark.parametrize(("given", "relaxed"), [
    (".metadata.name", "{.metadata.name}"), ("metadata.name", "{.metadata.name}"),
    ("{metadata.name}", "{.metadata.name}"), ("{.metadata.name}", "{.metadata.name}"),
    (".spec.containers[0].image", "{.spec.containers[0].image}"), ("", "")])
def test_relaxed_paths(given: str, relaxed: str) -> None:
    assert jsonpath.relaxed(given) == relaxed


def test_relaxed_refuses_nested_braces() -> None:
    with pytest.raises(jsonpath.JsonPathError, match="unexpected path string"):
        jsonpath.relaxed("{{.a}}")


# ---- -o, custom columns, sorting ---------------------------------------------------------------


def test_output_formats_and_kubectls_refusal() -> None:
    assert outputs.parse(None).format == "table"
    assert outputs.parse("wide").format == "wide"
    assert outputs.parse("jsonpath={.kind}").template is not None
    assert outputs.parse("jsonpath-as-json={.kind}").as_json
    assert outputs.parse("jsonpath-file=t", read=lambda p: "{.kind}").format == "jsonpath"
    with pytest.raises(errors.ClientError) as caught:
        outputs.parse("xml")
    assert str(caught.value) == (
        'unable to match a printer suitable for the output format "xml", allowed formats '
        "are: custom-columns,custom-columns-file,json,jsonpath,jsonpath-as-json,"
        "jsonpath-file,name,wide,yaml")
    for spec, message in [
            ("custom-columns=", "custom-columns format specified but no custom columns given"),
            ("custom-columns=A", "unexpected custom-columns spec: A, expected "
                                 "<header>:<json-path-expr>"),
            ("custom-columns=A:{{x}}", "unexpected path string"),
            ("jsonpath={.a", "error parsing jsonpath {.a, unclosed action"),
            ("jsonpath=", "template format specified but no template given")]:
        with pytest.raises(errors.ClientError, match=None) as caught:
            outputs.parse(spec)
        assert message in str(caught.value), spec


def test_a_template_file_that_is_not_text_is_a_clear_error(tmp_path: Any) -> None:
    binary = tmp_path / "t.bin"
    binary.write_bytes(b"\xff\xfe{.kind}")
    for spec in (f"jsonpath-file={binary}", f"custom-columns-file={binary}"):
        with pytest.raises(errors.ClientError) as caught:
            outputs.parse(spec)
        assert str(caught.value).startswith(f"error reading template {binary}: "), spec
    with pytest.raises(errors.ClientError, match="(?i)no such file or directory"):
        outputs.parse(f"jsonpath-file={tmp_path / 'nope'}")


def test_custom_columns_values_like_kubectl() -> None:
    out = outputs.parse("custom-columns=NAME:.metadata.name,LABELS:.metadata.labels,"
                        "TYPES:.conds[*].type,NONE:.nope,ANN:{.metadata.annotations.z}")
    assert outputs.custom_rows(out, [DOC]) == [
        ["NAME", "LABELS", "TYPES", "NONE", "ANN"],
        ["x", "map[app.kubernetes.io/name:web b:2]", "Ready,Init", "<none>", "1"]]
    assert outputs.custom_rows(out, [DOC], headers=False)[0][0] == "x"
    from_file = outputs.parse("custom-columns-file=f", read=lambda p: (
        "NAME   KIND\n.metadata.name   {.kind}\n"))
    assert outputs.custom_rows(from_file, [DOC]) == [["NAME", "KIND"], ["x", "ConfigMap"]]
    with pytest.raises(errors.ClientError, match="expected 2 columns, got 1"):
        outputs.parse("custom-columns-file=f", read=lambda p: "A B\n.a\n")


def item(name: str, **fields: Any) -> Obj:
    return {"metadata": {"name": name, **fields.pop("meta", {})}, **fields}


def names(objs: list[Obj]) -> list[str]:
    return [printers.name_of(o) for o in objs]


def test_sort_by_numbers_times_quantities_and_natural_strings() -> None:
    objs = [item("web-10", spec={"replicas": 3, "cpu": "1"},
                 meta={"creationTimestamp": "2024-05-01T10:00:00Z"}),
            item("web-2", spec={"replicas": 10, "cpu": "250m"},
                 meta={"creationTimestamp": "2024-05-01T12:00:00Z"}),
            item("web-1", spec={"replicas": 1, "cpu": "2"},
                 meta={"creationTimestamp": "2024-05-01T09:00:00+01:00"})]
    assert names(outputs.sort_objects(objs, ".metadata.name")) == ["web-1", "web-2", "web-10"]
    assert names(outputs.sort_objects(objs, "{.spec.replicas}")) == [
        "web-1", "web-10", "web-2"]
    assert names(outputs.sort_objects(objs, "spec.cpu")) == ["web-2", "web-10", "web-1"]
    assert names(outputs.sort_objects(objs, ".metadata.creationTimestamp")) == [
        "web-1", "web-10", "web-2"]
    with_missing = [*objs, item("bare")]
    assert names(outputs.sort_objects(with_missing, ".spec.replicas"))[0] == "bare"
    with pytest.raises(errors.ClientError) as caught:
        outputs.sort_objects(objs, ".spec.nope")
    assert str(caught.value) == ('couldn\'t find any field with path "{.spec.nope}" in the '
                                 "list of objects")
    assert outputs.sort_objects([], ".spec.nope") == []


# ---- pod columns ---------------------------------------------------------------------------


def pod(name: str, *, containers: int = 1, status: Obj | None = None, **meta: Any) -> Obj:
    return {"metadata": {"name": name, "creationTimestamp": ts(minutes=5), **meta},
            "spec": {"containers": [{"name": f"c{i}"} for i in range(containers)],
                     **({"initContainers": [{"name": "init"}]} if status and
                        "initContainerStatuses" in status else {})},
            "status": status or {}}


def cs(state: Obj, *, ready: bool = False, restarts: int = 0, last: Obj | None = None,
       name: str = "c0") -> Obj:
    return {"name": name, "ready": ready, "restartCount": restarts, "state": state,
            "lastState": last or {}}


POD_CASES = [
    (pod("running", status={"phase": "Running", "containerStatuses": [
        cs({"running": {}}, ready=True)]}), ["1/1", "Running", "0"]),
    (pod("creating", status={"phase": "Pending", "containerStatuses": [
        cs({"waiting": {"reason": "ContainerCreating"}})]}), ["0/1", "ContainerCreating", "0"]),
    (pod("pull", status={"phase": "Pending", "containerStatuses": [
        cs({"waiting": {"reason": "ErrImagePull"}})]}), ["0/1", "ErrImagePull", "0"]),
    (pod("crash", status={"phase": "Running", "containerStatuses": [
        cs({"waiting": {"reason": "CrashLoopBackOff"}}, restarts=5, last={"terminated": {
            "exitCode": 1, "finishedAt": ts(minutes=3)}})]}),
     ["0/1", "CrashLoopBackOff", "5 (3m ago)"]),
    (pod("done", status={"phase": "Succeeded", "containerStatuses": [
        cs({"terminated": {"reason": "Completed", "exitCode": 0}})]}),
     ["0/1", "Completed", "0"]),
    (pod("killed", status={"phase": "Failed", "containerStatuses": [
        cs({"terminated": {"exitCode": 137, "signal": 9}})]}), ["0/1", "Signal:9", "0"]),
    (pod("init", status={"phase": "Pending", "initContainerStatuses": [
        cs({"running": {}}, name="init")], "containerStatuses": [
        cs({"waiting": {"reason": "PodInitializing"}})]}), ["0/1", "Init:0/1", "0"]),
    (pod("initfail", status={"phase": "Pending", "initContainerStatuses": [
        cs({"waiting": {"reason": "CrashLoopBackOff"}}, name="init", restarts=2)]}),
     ["0/1", "Init:CrashLoopBackOff", "2"]),
    (pod("going", deletionTimestamp=ts(seconds=1), status={"phase": "Running"}),
     ["0/1", "Terminating", "0"]),
    (pod("gone-done", deletionTimestamp=ts(seconds=1), status={"phase": "Succeeded"}),
     ["0/1", "Succeeded", "0"]),
    (pod("half", containers=2, status={"phase": "Running", "conditions": [
        {"type": "Ready", "status": "False"}], "containerStatuses": [
        cs({"running": {}}, ready=True, name="c0"),
        cs({"terminated": {"reason": "Completed", "exitCode": 0}}, name="c1")]}),
     ["1/2", "NotReady", "0"]),
]


@pytest.mark.parametrize(("obj", "cells"), POD_CASES, ids=[p["metadata"]["name"]
                                                          for p, _ in POD_CASES])
def test_pod_ready_status_and_restarts_like_kubectl(obj: Obj, cells: list[str]) -> None:
    table = rows(printers.table([obj], kinds.POD, now=NOW))
    assert table[1][1:4] == cells


def test_labels_columns_and_no_headers() -> None:
    objs = [pod("a", app="x"), pod("b")]
    objs[0]["metadata"]["labels"] = {"app": "web", "app.kubernetes.io/tier": "front"}
    options = printers.Options(show_labels=True,
                               label_columns=("app", "app.kubernetes.io/tier"))
    assert rows(printers.table(objs, kinds.POD, now=NOW, options=options)) == [
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "APP", "TIER", "LABELS"],
        ["a", "0/1", "Pending", "0", "5m", "web", "front",
         "app=web,app.kubernetes.io/tier=front"],
        ["b", "0/1", "Pending", "0", "5m", "", "", "<none>"]]
    bare = printers.table(objs, kinds.POD, now=NOW, options=printers.Options(no_headers=True))
    assert bare.splitlines()[0].split()[0] == "a"


# ---- the command against the fake API -------------------------------------------------------


def test_get_outputs(rk: Cli) -> None:  # noqa: F811
    seed(rk)
    assert ok(rk("get", "cm", "-o", "jsonpath={.items[*].metadata.name}")) == "game-demo"
    assert ok(rk("get", "cm", "game-demo", "-o",
                 'jsonpath={.kind}/{.metadata.name}{"\\n"}')) == "ConfigMap/game-demo\n"
    assert json.loads(ok(rk("get", "cm", "-A", "-o",
                            "jsonpath-as-json={.items[*].metadata.name}"))) == [
        "game-demo", "other"]
    assert rows(ok(rk("get", "cm", "-A", "-o",
                      "custom-columns=NS:.metadata.namespace,NAME:.metadata.name",
                      "--sort-by", ".metadata.name"))) == [
        ["NS", "NAME"], ["default", "game-demo"], ["team-a", "other"]]
    assert ok(rk("get", "cm", "-A", "--no-headers", "--sort-by=.metadata.name", "-o",
                 "custom-columns=N:.metadata.name")).split() == ["game-demo", "other"]
    template = rk.file("t.txt", "{range .items[*]}{.metadata.name}{'\\n'}{end}")
    assert ok(rk("get", "cm", "-o", f"jsonpath-file={template}")) == "game-demo\n"
    table = rows(ok(rk("get", "deploy", "--show-labels", "-L", "app")))
    assert table[0] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "APP", "LABELS"]
    assert table[1][0] == "front"


def test_get_all_lists_the_category_with_kinds_in_names(rk: Cli) -> None:  # noqa: F811
    seed(rk)
    out = ok(rk("get", "all"))
    assert "deployment.apps/front" in out
    assert "configmap" not in out  # not in the category
    paths = [s.path for s in rk.api.seen if s.method == "GET"][-6:]
    assert paths == ["/api/v1/namespaces/default/pods", "/api/v1/namespaces/default/services",
                     "/apis/apps/v1/namespaces/default/daemonsets",
                     "/apis/apps/v1/namespaces/default/deployments",
                     "/apis/apps/v1/namespaces/default/replicasets",
                     "/apis/batch/v1/namespaces/default/jobs"]
    result = rk("get", "all", "-n", "team-a")
    assert (result.exit_code, result.stderr) == (0, "No resources found in team-a namespace.\n")


def test_get_slips_read_like_kubectl(rk: Cli) -> None:  # noqa: F811
    cases = [
        (["get"], get.NO_RESOURCE + "\n"),
        (["get", "pods/"], "error: arguments in resource/name form must have a single "
                           "resource and name\n"),
        (["get", "pod/a", "pod", "b"],
         "error: there is no need to specify a resource type as a separate argument when "
         "passing arguments in resource/name form (e.g. 'rk get resource/<resource_name>' "
         "instead of 'rk get resource resource/<resource_name>'\n"),
        (["get", "podz"], 'error: the server doesn\'t have a resource type "podz"\n'),
        (["get", "pods", "-o", "xml"],
         'error: unable to match a printer suitable for the output format "xml", allowed '
         "formats are: " + ",".join(outputs.ALLOWED) + "\n"),
        (["get", "pods", "a", "-l", "x=y"],
         "error: name cannot be provided when a selector is specified\n"),
        (["get", "pods,svc", "-w"], "error: you may only specify a single resource type\n"),
        (["get", "pods", "a", "b", "-w"],
         "error: watch is only supported on individual resources and resource collections, "
         "but 2 resources were found\n"),
        (["get", "pods", "--sort-by", "{{x}}"], "error: unexpected path string, expected a "
         "'name1.name2' or '.name1.name2' or '{name1.name2}' or '{.name1.name2}'\n"),
    ]
    for args, stderr in cases:
        result = rk(*args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", stderr), args
    assert rk.api.seen == []  # none of them asked the server anything
    seed(rk)
    result = rk("get", "cm", "--sort-by", ".spec.nope")
    assert (result.exit_code, result.stderr) == (
        1, 'error: couldn\'t find any field with path "{.spec.nope}" in the list of '
           "objects\n")
    result = rk("get", "cm", "-o", "jsonpath={.items[3]}")
    assert result.exit_code == 1
    assert result.stderr == ('error: error executing jsonpath "{.items[3]}": array index '
                             "out of bounds: index 3, length 1\n")
    result = rk("get", "cm", "nope", "--ignore-not-found")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")


# ---- -w -------------------------------------------------------------------------------------


class ScriptedClient:
    """list_all answers the current objects; each watch call plays its script of events
    and then breaks (as a dead master's stream does), the last one waits forever."""

    def __init__(self, objects: list[Obj], scripts: list[list[rest.WatchEvent]]) -> None:
        self.objects = objects
        self.scripts = scripts
        self.watches: list[str] = []

    async def list_all(self, kind: kinds.Kind, namespace: str | None = None,
                       **_: Any) -> tuple[list[Obj], str]:
        return [dict(o) for o in self.objects], "10"

    async def watch(self, kind: kinds.Kind, namespace: str | None = None, *,
                    resource_version: str = "", **_: Any) -> AsyncIterator[rest.WatchEvent]:
        self.watches.append(resource_version)
        if not self.scripts:
            await asyncio.Event().wait()
        for event in self.scripts.pop(0):
            yield event
        raise transport.StreamBroken("m1: the stream broke (killed)")


def cm(name: str, version: str, **data: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "default", "uid": f"u-{name}",
                         "resourceVersion": version, "creationTimestamp": ts(minutes=1)},
            "data": data}


def test_watch_prints_the_table_then_a_row_per_change_across_a_broken_stream(
        capsys: pytest.CaptureFixture[str]) -> None:
    client = ScriptedClient([cm("a", "5")], [
        [rest.WatchEvent("ADDED", cm("b", "11")), rest.WatchEvent("MODIFIED", cm("a", "12",
                                                                                  k="v"))],
        [rest.WatchEvent("DELETED", cm("b", "13"))]])
    shower = get.Shower(outputs.parse(None), printers.Options(), lambda: NOW)
    watcher = get.Watcher(Session(client, "default"), kinds.CONFIGMAP, "",  # type: ignore[arg-type]
                          shower, namespace="default", label_selector="",
                          field_selector="", only=False)

    async def main() -> None:
        task = asyncio.create_task(watcher.run())
        for _ in range(400):
            await asyncio.sleep(0.02)
            if len(client.watches) >= 3:
                break
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert client.watches == ["10", "12", "13"]  # resumed where it was, twice
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines == [["NAME", "DATA", "AGE"], ["a", "0", "60s"],  # the list, aligned
                     ["b", "0", "60s"], ["a", "1", "60s"], ["b", "0", "60s"]]


class ChangingClient(ScriptedClient):
    """The first list (the command's own) sees `first`; every later one (the informer's)
    sees `then`: what changed between the two lists."""

    def __init__(self, first: list[Obj], then: list[Obj]) -> None:
        super().__init__(first, [])
        self.then = then

    async def list_all(self, kind: kinds.Kind, namespace: str | None = None,
                       **_: Any) -> tuple[list[Obj], str]:
        listed = await super().list_all(kind, namespace)
        self.objects = self.then
        return listed


def test_watch_reports_what_changed_between_its_list_and_the_informers(
        capsys: pytest.CaptureFixture[str]) -> None:
    # b deleted and a changed in the moment between `rk get -w`'s own list and the
    # informer's: b is shown DELETED (it would otherwise stay on screen as if there), a as
    # MODIFIED (not ADDED again).
    client = ChangingClient([cm("a", "5"), cm("b", "6")], [cm("a", "7", k="v")])
    shower = get.Shower(outputs.parse(None), printers.Options(), lambda: NOW)
    shower.events = True
    watcher = get.Watcher(Session(client, "default"), kinds.CONFIGMAP, "",  # type: ignore[arg-type]
                          shower, namespace="default", label_selector="",
                          field_selector="", only=False)

    async def main() -> None:
        task = asyncio.create_task(watcher.run())
        for _ in range(200):
            await asyncio.sleep(0.02)
            if client.watches:  # the informer listed and watches
                break
        await asyncio.sleep(0.1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[:3] == [["EVENT", "NAME", "DATA", "AGE"], ["ADDED", "a", "0", "60s"],
                         ["ADDED", "b", "0", "60s"]]
    assert sorted(lines[3:]) == [["DELETED", "b", "0", "60s"], ["MODIFIED", "a", "1", "60s"]]


def test_watch_output_one_object_at_a_time() -> None:
    shower = get.Shower(outputs.parse("yaml"), printers.Options(), lambda: NOW)
    first = shower.one(kinds.CONFIGMAP, cm("a", "1"))
    second = shower.one(kinds.CONFIGMAP, cm("b", "2"))
    assert not first.startswith("---") and second.startswith("---\n")
    assert yaml.safe_load(second[4:])["kind"] == "ConfigMap"
    table = get.Shower(outputs.parse(None), printers.Options(), lambda: NOW)
    assert table.one(kinds.CONFIGMAP, cm("a", "1")).splitlines()[0].split() == [
        "NAME", "DATA", "AGE"]
    assert table.one(kinds.CONFIGMAP, cm("b", "2")).split() == ["b", "0", "60s"]
    name = get.Shower(outputs.parse("name"), printers.Options(), lambda: NOW)
    assert name.one(kinds.CONFIGMAP, cm("a", "1")) == "configmap/a\n"


def test_watch_events_column_and_wrapper() -> None:
    table = get.Shower(outputs.parse(None), printers.Options(), lambda: NOW)
    table.events = True
    assert [r.split() for r in table.listed(kinds.CONFIGMAP, [cm("a", "1")]).splitlines()] \
        == [["EVENT", "NAME", "DATA", "AGE"], ["ADDED", "a", "0", "60s"]]
    assert table.one(kinds.CONFIGMAP, cm("a", "2"), "DELETED").split() == [
        "DELETED", "a", "0", "60s"]
    as_json = get.Shower(outputs.parse("json"), printers.Options(), lambda: NOW)
    as_json.events = True
    event = json.loads(as_json.one(kinds.CONFIGMAP, cm("a", "2"), "MODIFIED"))
    assert (event["type"], event["object"]["kind"]) == ("MODIFIED", "ConfigMap")


def test_category_all_is_in_kubectls_order() -> None:
    assert [k.plural for k in get.category("all")] == [
        "pods", "services", "daemonsets", "deployments", "replicasets", "jobs"]
    assert get.parse_targets(["po,deploy"])[1] is True
    assert get.parse_targets(["deploy/front"]) == ([(kinds.DEPLOYMENT, ["front"])], False)


def test_a_namespace_column_once_shown_stays_for_cluster_scoped_kinds(
        rk: Cli) -> None:  # noqa: F811
    # kubectl 1.32: `get pods,namespaces -A` gives namespaces an empty NAMESPACE column
    # (pods came first, even with no pods); `get namespaces,pods -A` does not.
    seed(rk)
    after = rows(ok(rk("get", "cm,ns", "-A")).split("\n\n")[1])
    assert after[0] == ["NAMESPACE", "NAME", "STATUS", "AGE"]
    assert after[1] == ["", "namespace/default", "Active", "4d"]
    before = rows(ok(rk("get", "ns,cm", "-A")).split("\n\n")[0])
    assert before[0] == ["NAME", "STATUS", "AGE"]
