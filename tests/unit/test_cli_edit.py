"""`rk create/replace/edit`, `rk patch/label/annotate/scale/set image` and `rk diff`.

The pure parts (generators, the edit buffer, label changes, image patches, the diff's
cleaning and masking) are tested from tables. The commands run through click's
CliRunner against test_cli_kubectl's fake REST server, extended here with what these
commands need of a server: PUT, strategic and JSON patches, resourceVersion
preconditions on writes, and the `scale` subresource. `rk edit` runs a real editor
process: a small Python script named by $EDITOR, which records every buffer it was given.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from raftkube.api import jsonpatch, kinds, merge, strategic
from raftkube.cli import diff, edit, generators, labels, patch, writes
from raftkube.client import errors
from tests.unit.test_cli_kubectl import (  # noqa: F401  (serve is a fixture)
    CONFIGMAP_YAML,
    DEPLOY_YAML,
    LAST,
    Cli,
    FakeApi,
    configure,
    ok,
    serve,
    status,
    ts,
)

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"


# ---- a fake server that also takes PUT, every patch type and the scale subresource ------


def conflict(kind: kinds.Kind, name: str) -> tuple[int, Obj]:
    return 409, status(409, "Conflict", f'Operation cannot be fulfilled on {kind.resource} '
                                        f'"{name}": the object has been modified; please '
                                        f"apply your changes to the latest version and try "
                                        f"again")


class EditApi(FakeApi):
    def route(self, method: str, path: str, query: dict[str, str],
              body: Any) -> tuple[int, Any]:
        parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
        group, version, rest_ = (("", parts[1], parts[2:]) if parts[0] == "api"
                                 else (parts[1], parts[2], parts[3:]))
        ns = ""
        if rest_[0] == "namespaces" and len(rest_) >= 3:
            ns, rest_ = rest_[1], rest_[2:]
        kind = kinds.by_plural(group, version, rest_[0])
        sub = rest_[2] if len(rest_) > 2 else ""
        if kind is None or len(rest_) < 2 or (method not in ("PUT", "PATCH") and not sub):
            return super().route(method, path, query, body)
        name = rest_[1]
        key = (kind.resource, ns, name)
        if key not in self.objects:
            return 404, status(404, "NotFound", f'{kind.resource} "{name}" not found')
        live = self.objects[key]
        if sub == "scale":
            scale = {"kind": "Scale", "apiVersion": "autoscaling/v1",
                     "metadata": {"name": name, "namespace": ns,
                                  "resourceVersion": live["metadata"]["resourceVersion"]},
                     "spec": {"replicas": live["spec"].get("replicas", 1)}}
            if method == "GET":
                return 200, scale
            wanted = merge.merge_patch(scale, body)
            if wanted["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"]:
                return conflict(kind, name)
            obj = copy.deepcopy(live)
            obj["spec"]["replicas"] = wanted["spec"]["replicas"]
        elif method == "PUT":
            if body["metadata"].get("resourceVersion") != live["metadata"]["resourceVersion"]:
                return conflict(kind, name)
            obj = copy.deepcopy(body)
        else:
            content_type = self.seen[-1].content_type
            try:
                if content_type == STRATEGIC:
                    obj = strategic.apply(live, body, kind.kind)
                elif content_type == "application/json-patch+json":
                    obj = jsonpatch.apply(live, body)
                else:
                    obj = merge.merge_patch(live, body)
            except jsonpatch.PatchError as e:
                return 422, status(422, "Invalid", e.message)
            if obj["metadata"]["resourceVersion"] != live["metadata"]["resourceVersion"]:
                return conflict(kind, name)
        invalid = self.invalid(kind, obj)
        if invalid:
            return 422, invalid
        if query.get("dryRun") != "All":
            self.put(kind, obj)
        return 200, copy.deepcopy(obj if sub != "scale" else {**obj, "kind": "Scale"})


@pytest.fixture
def rk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> Cli:  # noqa: F811
    api = EditApi()
    for ns in ("default", "team-a"):
        api.put(kinds.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": ns, "creationTimestamp": ts(days=4)}})
    configure(tmp_path, monkeypatch, [serve(api)])
    for name in edit.EDITORS + diff.EXTERNAL:
        monkeypatch.delenv(name, raising=False)
    return Cli(api, tmp_path)


def seed_front(rk: Cli, *, replicas: int = 2, labels: dict[str, str] | None = None) -> Obj:
    obj = yaml.safe_load(DEPLOY_YAML)
    obj["metadata"].update(namespace="default", labels=labels or {"app": "front"},
                           uid="uid-front", creationTimestamp=ts(minutes=5))
    obj["spec"]["replicas"] = replicas
    rk.api.put(kinds.DEPLOYMENT, obj)
    return obj


def live(rk: Cli, name: str = "front", kind: kinds.Kind = kinds.DEPLOYMENT) -> Obj:
    return rk.api.objects[(kind.resource, "default", name)]


def fails(result: Any, code: int = 1) -> str:
    assert result.exit_code == code, (result.output, result.exception)
    return str(result.stderr)


# ---- generators ---------------------------------------------------------------------------


def test_generated_deployment_is_kubectls() -> None:
    d = generators.deployment("front", images=["nginx:1.25", "reg.io/a/side@sha256:ab"],
                              replicas=3, port=80)
    assert d["metadata"] == {"name": "front", "labels": {"app": "front"}}
    assert d["spec"]["selector"] == {"matchLabels": {"app": "front"}}
    assert d["spec"]["template"]["metadata"]["labels"] == {"app": "front"}
    assert d["spec"]["template"]["spec"]["containers"] == [
        {"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80}]},
        {"name": "side", "image": "reg.io/a/side@sha256:ab"}]


@pytest.mark.parametrize(("make", "words"), [
    (lambda: generators.deployment("front", images=[]), 'required flag(s) "image" not set'),
    (lambda: generators.deployment("Front", images=["x"]), 'invalid deployment name "Front"'),
    (lambda: generators.deployment("f", images=["x"], replicas=-1), "--replicas"),
    (lambda: generators.namespace("a.b"), 'invalid namespace name "a.b"'),
    (lambda: generators.configmap("c", literals=["a"]),
     "invalid literal source a, expected key=value"),
    (lambda: generators.configmap("c", literals=["a=1", "a=2"]),
     'cannot add key "a", another key by that name already exists in Data for ConfigMap "c"'),
    (lambda: generators.configmap("c", literals=["a b=1"]),
     '"a b" is not a valid key name for a ConfigMap'),
    (lambda: generators.secret("s", files=["/nonexistent/file"]),
     "error reading /nonexistent/file: no such file or directory"),
    (lambda: generators.configmap("c", files=["=x"]), "key names or file paths cannot be empty"),
])
def test_generator_errors_are_kubectls(make: Any, words: str) -> None:
    with pytest.raises(generators.GeneratorError) as e:
        make()
    assert words in str(e.value)


def test_configmap_and_secret_from_literals_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "one.txt").write_text("1\n")
    (tmp_path / "d" / "bin").write_bytes(b"\xff\x00")
    (tmp_path / "x.conf").write_text("x=1\n")
    cm = generators.configmap("c", literals=["b=2=two", "a="],
                              files=[str(tmp_path / "d"), f"conf={tmp_path}/x.conf"])
    assert cm["data"] == {"a": "", "b": "2=two", "conf": "x=1\n", "one.txt": "1\n"}
    assert list(cm["data"]) == sorted(cm["data"])
    assert cm["binaryData"] == {"bin": "/wA="}
    s = generators.secret("s", literals=["p=q"], files=[str(tmp_path / "x.conf")],
                          secret_type="kubernetes.io/basic-auth")
    assert s["data"] == {"p": "cQ==", "x.conf": "eD0xCg=="}
    assert s["type"] == "kubernetes.io/basic-auth"
    with pytest.raises(generators.GeneratorError, match="cannot give a key name for a dir"):
        generators.configmap("c", files=[f"k={tmp_path}/d"])


# ---- the edit buffer ----------------------------------------------------------------------


def test_edit_buffer_header_errors_and_comment_stripping() -> None:
    text = edit.buffer("a: 1\n", ['deployments.apps "f" was not valid:', "* spec: bad"])
    assert text.startswith("# Please edit the object below. Lines beginning with a '#' "
                           "will be ignored,\n")
    assert "# deployments.apps \"f\" was not valid:\n# * spec: bad\n#\na: 1\n" in text
    assert edit.strip_comments(text) == "a: 1\n"
    assert edit.buffer("a: 1\n", []) == edit.HEADER + "a: 1\n"


def test_parse_edited_and_reasons() -> None:
    assert edit.parse_edited("a: 1\n") == {"a": 1}
    with pytest.raises(edit.EditError, match="The edited file had a syntax error: yaml: line"):
        edit.parse_edited("a: [1\n")
    with pytest.raises(edit.EditError, match="exactly one object"):
        edit.parse_edited("a: 1\n---\nb: 2\n")
    invalid = errors.ApiError(status(422, "Invalid", "x", causes=[
        {"field": "spec.replicas", "message": "Invalid value: -1: must be greater than or "
                                              "equal to 0"}]))
    assert edit.reasons(kinds.DEPLOYMENT, "front", invalid) == [
        'deployments.apps "front" was not valid:',
        "* spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    forbidden = errors.ApiError(status(403, "Forbidden", "no"))
    assert edit.reasons(kinds.DEPLOYMENT, "front", forbidden) == [
        "Error from server (Forbidden): no"]


def test_editor_is_rk_editor_then_kube_editor_then_editor_then_vi() -> None:
    assert edit.editor_command({}) == ["vi"]
    assert edit.editor_command({"EDITOR": "nano -w"}) == ["nano", "-w"]
    assert edit.editor_command({"EDITOR": "nano", "KUBE_EDITOR": "code --wait"}) == [
        "code", "--wait"]
    assert edit.editor_command({"KUBE_EDITOR": "a", "RK_EDITOR": "b"}) == ["b"]


# ---- pure parts of patch, label, set image -----------------------------------------------


def test_label_changes_are_parsed_and_checked() -> None:
    assert writes.split_changes(("deploy", "front", "a=1", "b-")) == (
        ("deploy", "front"), ["a=1", "b-"])
    assert labels.parse_map_changes(["a=1", "example.com/b=", "c-"], what="label") == (
        {"a": "1", "example.com/b": ""}, ["c"])
    for changes, words in ((["a=-x"], 'invalid label value: "a=-x"'),
                           (["a b=1"], "invalid label spec: a b=1"),
                           (["a=1", "a-"], "can not both modify and remove a label"),
                           ([], "at least one label update is required")):
        with pytest.raises(errors.ClientError, match=words):
            labels.parse_map_changes(changes, what="label")
    # any text is an annotation value
    assert labels.parse_map_changes(["note=a b -c"], what="annotation") == (
        {"note": "a b -c"}, [])


def test_overwrite_problems_read_like_kubectl() -> None:
    assert labels.overwrite_problems({"app": "web"}, {"app": "web"}, what="label") is None
    assert labels.overwrite_problems({"app": "web"}, {"app": "db"}, what="label") == (
        "error: 'app' already has a value (web), and --overwrite is false")
    assert labels.overwrite_problems({"a": "1"}, {"a": "2"}, what="annotation") == (
        "error: --overwrite is false but found the following declared annotation(s): "
        "'a' already has a value (1)")


def test_image_patch_names_containers_and_is_none_when_already_set() -> None:
    d = yaml.safe_load(DEPLOY_YAML)
    d["spec"]["template"]["spec"]["initContainers"] = [{"name": "init", "image": "i:1"}]
    assert patch.image_patch(kinds.DEPLOYMENT, d, {"web": "busybox:2"}) == {
        "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "busybox:2"}]}}}}
    assert patch.image_patch(kinds.DEPLOYMENT, d, {"web": "busybox:1"}) is None
    assert patch.image_patch(kinds.DEPLOYMENT, d, {"*": "x"}) == {"spec": {"template": {
        "spec": {"initContainers": [{"name": "init", "image": "x"}],
                 "containers": [{"name": "web", "image": "x"}]}}}}
    pod = {"spec": {"containers": [{"name": "a", "image": "1"}]}}
    assert patch.image_patch(kinds.POD, pod, {"a": "2"}) == {
        "spec": {"containers": [{"name": "a", "image": "2"}]}}
    with pytest.raises(errors.ClientError, match='unable to find container named "nope"'):
        patch.image_patch(kinds.DEPLOYMENT, d, {"nope": "x"})


def test_patch_text_is_json_or_yaml() -> None:
    assert patch.parse_patch('{"spec":{"replicas":3}}') == {"spec": {"replicas": 3}}
    assert patch.parse_patch("spec:\n  replicas: 3\n") == {"spec": {"replicas": 3}}
    with pytest.raises(errors.ClientError, match='unable to parse "{bad": yaml: line 1'):
        patch.parse_patch("{bad")


# ---- pure parts of diff -------------------------------------------------------------------


def test_diff_names_cleans_and_masks() -> None:
    d = {"metadata": {"name": "front", "namespace": "default", "resourceVersion": "7",
                      "generation": 2, "managedFields": [], "uid": "u"}}
    assert diff.file_name(kinds.DEPLOYMENT, d) == "apps.v1.Deployment.default.front"
    assert diff.file_name(kinds.NAMESPACE, {"metadata": {"name": "a"}}) == "v1.Namespace.a"
    assert diff.clean(d) == {"metadata": {"name": "front", "namespace": "default",
                                          "uid": "u"}}
    before = {"kind": "Secret", "data": {"same": "YQ==", "changed": "YQ==", "gone": "Yg=="}}
    after = {"kind": "Secret", "data": {"same": "YQ==", "changed": "Yw==", "new": "Yw=="}}
    a, b = diff.mask_secrets(before, after)
    assert a is not None and b is not None
    assert a["data"] == {"same": "***", "changed": "*** (before)", "gone": "*** (before)"}
    assert b["data"] == {"same": "***", "changed": "*** (after)", "new": "*** (after)"}
    assert diff.unified("x", "a: 1\n", "a: 1\n") == ""
    assert diff.unified("x", "a: 1\n", "a: 2\n") == (
        "diff -u -N LIVE/x MERGED/x\n--- LIVE/x\n+++ MERGED/x\n@@ -1 +1 @@\n-a: 1\n+a: 2\n")
    assert diff.without_record({"metadata": {"annotations": {LAST: "{}"}},
                                "spec": {"a": 1}}) == {"spec": {"a": 1}}
    assert diff.without_record({"metadata": {"annotations": {LAST: "{}", "b": "c"}}}) == {
        "metadata": {"annotations": {"b": "c"}}}
    assert diff.external_command({}) is None
    assert diff.external_command({"KUBECTL_EXTERNAL_DIFF": "meld"}) == ["meld"]
    assert diff.external_command({"RK_EXTERNAL_DIFF": "diff -u --x=$(rm) -N",
                                  "KUBECTL_EXTERNAL_DIFF": "meld"}) == ["diff", "-u", "-N"]


# ---- create -------------------------------------------------------------------------------


def test_create_from_files_goes_on_past_one_that_exists(rk: Cli) -> None:
    f = rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")
    seed_front(rk)
    result = rk("create", "-f", f)
    assert fails(result) == (
        f'Error from server (AlreadyExists): error when creating "{f}": deployments.apps '
        '"front" already exists\n')
    assert result.stdout == "configmap/game-demo created\n"
    assert ("configmaps", "default", "game-demo") in rk.api.objects
    assert LAST not in (live(rk, "game-demo", kinds.CONFIGMAP)["metadata"].get(
        "annotations") or {})

    del rk.api.objects[("configmaps", "default", "game-demo")]
    before = len(rk.api.writes())
    assert ok(rk("create", "-f", rk.file("cm.yaml", CONFIGMAP_YAML), "--dry-run=server",
                 "-o", "name")) == "configmap/game-demo\n"
    assert ok(rk("create", "-f", rk.file("cm.yaml", CONFIGMAP_YAML),
                 "--dry-run=server")) == "configmap/game-demo created (server dry run)\n"
    assert ok(rk("create", "-f", rk.file("cm.yaml", CONFIGMAP_YAML),
                 "--dry-run=client")) == "configmap/game-demo created (dry run)\n"
    assert len(rk.api.writes()) == before
    out = ok(rk("create", "-f", "-", "-o", "yaml", input=CONFIGMAP_YAML))
    assert yaml.safe_load(out)["metadata"]["uid"] == "uid-game-demo"
    two = CONFIGMAP_YAML.replace("game-demo", "a") + "---\n" + \
        CONFIGMAP_YAML.replace("game-demo", "b")
    out = ok(rk("create", "-f", "-", "-o", "yaml", "--dry-run=client", input=two))
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(out)] == ["a", "b"]


def test_create_needs_files_and_names_bad_ones(rk: Cli) -> None:
    assert "must specify one of -f and -k" in fails(rk("create"))
    assert fails(rk("create", "pods", "x")) == (
        "error: Unexpected args: [pods x]\nSee 'rk create -h' for help and examples\n")
    assert 'the path "nope.yaml" does not exist' in fails(rk("create", "-f", "nope.yaml"))
    assert rk.api.writes() == []


def test_create_generators_send_the_object(rk: Cli) -> None:
    assert ok(rk("create", "deployment", "web", "--image=busybox:1", "--replicas", "2")) == (
        "deployment.apps/web created\n")
    sent = rk.api.writes()[-1]
    assert sent.path == "/apis/apps/v1/namespaces/default/deployments"
    assert sent.body["spec"]["replicas"] == 2
    assert ok(rk("create", "namespace", "team-b")) == "namespace/team-b created\n"
    assert ok(rk("create", "configmap", "settings", "-n", "team-a",
                 "--from-literal=mode=easy")) == "configmap/settings created\n"
    assert rk.api.objects[("configmaps", "team-a", "settings")]["data"] == {"mode": "easy"}
    assert ok(rk("create", "secret", "generic", "creds", "--from-literal=pw=x",
                 "-o", "json")).startswith("{")
    assert rk.api.objects[("secrets", "default", "creds")]["data"] == {"pw": "eA=="}
    before = len(rk.api.writes())
    assert "invalid literal source pw, expected key=value" in fails(
        rk("create", "secret", "generic", "s2", "--from-literal=pw"))
    assert 'required flag(s) "image" not set' in fails(rk("create", "deployment", "x"))
    assert fails(rk("create", "namespace", "team-b")) == (
        'Error from server (AlreadyExists): namespaces "team-b" already exists\n')
    assert fails(rk("create", "configmap", "settings", "-n", "team-a")) == (
        'error: failed to create configmap: configmaps "settings" already exists\n')
    assert len(rk.api.writes()) == before + 2  # only the refused POSTs


def test_create_flags_before_the_generator_are_honoured(rk: Cli) -> None:
    # `kubectl create --dry-run=client deployment web ...` is a dry run: the flags may
    # come before the generator's name, and must not be dropped there.
    assert ok(rk("create", "--dry-run=client", "deployment", "web", "--image=x")) == (
        "deployment.apps/web created (dry run)\n")
    assert ok(rk("create", "--dry-run=server", "secret", "generic", "s",
                 "--from-literal=a=b")) == "secret/s created (server dry run)\n"
    assert rk.api.writes() == []
    assert ok(rk("create", "-n", "team-a", "configmap", "c1", "--from-literal=a=b"))
    assert ("configmaps", "team-a", "c1") in rk.api.objects
    assert ok(rk("create", "-o", "name", "namespace", "n2")) == "namespace/n2\n"
    # The generator's own flag, given after its name, wins (the later one, as in kubectl).
    assert ok(rk("create", "-n", "team-a", "configmap", "c2", "-n", "default",
                 "--from-literal=a=b"))
    assert ("configmaps", "default", "c2") in rk.api.objects


def test_create_client_dry_run_needs_no_cluster(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RK_CONFIG", str(tmp_path / "none.yaml"))
    out = ok(Cli(FakeApi(), tmp_path)("create", "deployment", "web", "--image=nginx",
                                      "--dry-run=client", "-o", "yaml"))
    obj = yaml.safe_load(out)
    assert obj["kind"] == "Deployment" and "namespace" not in obj["metadata"]
    result = Cli(FakeApi(), tmp_path)("create", "deployment", "web", "--image=nginx")
    assert result.exit_code == 1 and "cannot read config" in result.stderr


# ---- replace ------------------------------------------------------------------------------


def test_replace_puts_with_the_live_version_or_the_manifests(rk: Cli) -> None:
    seed_front(rk)
    version = live(rk)["metadata"]["resourceVersion"]
    f = rk.file("d.yaml", DEPLOY_YAML.replace("replicas: 2", "replicas: 4"))
    assert ok(rk("replace", "-f", f)) == "deployment.apps/front replaced\n"
    put = rk.api.writes()[-1]
    assert put.method == "PUT" and put.body["metadata"]["resourceVersion"] == version
    assert live(rk)["spec"]["replicas"] == 4
    assert "labels" not in live(rk)["metadata"]  # replaced whole

    stale = rk.file("stale.yaml", DEPLOY_YAML.replace(
        "name: front", f'name: front\n  resourceVersion: "{version}"'))
    assert "Error from server (Conflict): error when replacing" in fails(
        rk("replace", "-f", stale))
    missing = rk.file("m.yaml", DEPLOY_YAML.replace("front", "gone"))
    assert fails(rk("replace", "-f", missing)) == (
        f'Error from server (NotFound): error when replacing "{missing}": deployments.apps '
        '"gone" not found\n')
    assert live(rk)["spec"]["replicas"] == 4


def test_replace_force_deletes_and_creates(rk: Cli) -> None:
    seed_front(rk)
    f = rk.file("d.yaml", DEPLOY_YAML.replace("replicas: 2", "replicas: 1"))
    assert ok(rk("replace", "--force", "-f", f)) == (
        'deployment.apps "front" deleted\ndeployment.apps/front replaced\n')
    assert [s.method for s in rk.api.writes()] == ["DELETE", "POST"]
    assert live(rk)["spec"]["replicas"] == 1


def test_replace_force_waits_for_the_deleted_object_only(rk: Cli) -> None:
    # replace --force waits as delete --wait does (one wait_gone): a new object under the
    # name is not the one deleted, so the create goes ahead (and is refused) at once
    # rather than waiting out --timeout.
    seed_front(rk)
    path = "/apis/apps/v1/namespaces/default/deployments/front"
    rk.api.inject[("DELETE", path)] = (200, copy.deepcopy(live(rk)))
    live(rk)["metadata"]["uid"] = "uid-someone-elses"
    f = rk.file("d.yaml", DEPLOY_YAML)
    stderr = fails(rk("replace", "--force", "--timeout", "30", "-f", f))
    assert "Error from server (AlreadyExists)" in stderr, stderr
    live(rk)["metadata"]["uid"] = "uid-front"  # the deleted one, never going
    stderr = fails(rk("replace", "--force", "--timeout", "0.3", "-f", f))
    assert stderr == 'timed out waiting for deployment.apps "front" to be deleted\n'


# ---- edit ---------------------------------------------------------------------------------


EDITOR = """\
import os, re, sys
path = sys.argv[1]
text = open(path).read()
log = os.environ["EDIT_LOG"]
n = len(os.listdir(log))
open(os.path.join(log, f"{n:02}.yaml"), "w").write(text)
steps = os.environ["EDIT_STEPS"].split(";")
old, _, new = steps[min(n, len(steps) - 1)].partition(">")
if old == "EMPTY":
    text = ""
elif old:
    text = text.replace(old, new)
open(path, "w").write(text)
"""


def editor(rk: Cli, monkeypatch: pytest.MonkeyPatch, *steps: str) -> Path:
    """$EDITOR: a script that makes step N's `old>new` replacement on its Nth run (the last
    step again after that), keeping each buffer it was given in the returned directory."""
    script = rk.dir / "editor.py"
    script.write_text(EDITOR)
    log = rk.dir / f"log-{len(list(rk.dir.glob('log-*')))}"
    log.mkdir()
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    monkeypatch.setenv("EDIT_LOG", str(log))
    monkeypatch.setenv("EDIT_STEPS", ";".join(steps))
    return log


def opened(log: Path) -> list[str]:
    return [p.read_text() for p in sorted(log.iterdir())]


def test_edit_sends_the_change_as_a_patch_with_the_version_read(
        rk: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_front(rk)
    version = live(rk)["metadata"]["resourceVersion"]
    log = editor(rk, monkeypatch, "replicas: 2>replicas: 5")
    assert ok(rk("edit", "deploy/front")) == "deployment.apps/front edited\n"
    (first,) = opened(log)
    assert first.startswith(edit.HEADER) and "  replicas: 2\n" in first
    sent = rk.api.writes()[-1]
    assert sent.method == "PATCH" and sent.body == {
        "spec": {"replicas": 5}, "metadata": {"resourceVersion": version}}
    assert live(rk)["spec"]["replicas"] == 5


def test_edit_in_json(rk: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_front(rk)
    log = editor(rk, monkeypatch, '"replicas": 2>"replicas": 4')
    assert ok(rk("edit", "deploy/front", "-o", "json")) == "deployment.apps/front edited\n"
    assert json.loads(edit.strip_comments(opened(log)[0]))["kind"] == "Deployment"
    assert live(rk)["spec"]["replicas"] == 4


def test_edit_unchanged_or_emptied_is_cancelled(rk: Cli,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    seed_front(rk)
    editor(rk, monkeypatch, "")
    result = rk("edit", "deployment", "front")
    assert result.exit_code == 0 and result.stderr == "Edit cancelled, no changes made.\n"
    editor(rk, monkeypatch, "EMPTY")
    result = rk("edit", "deployment", "front")
    assert result.exit_code == 0 and result.stderr == "Edit cancelled, saved file was empty.\n"
    assert rk.api.writes() == []
    assert "deployments.apps \"nope\" not found" in fails(rk("edit", "deploy/nope"))


def test_a_refused_edit_reopens_with_the_reasons_and_can_be_fixed(
        rk: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_front(rk)
    log = editor(rk, monkeypatch, "replicas: 2>replicas: -1", "replicas: -1>replicas: 3")
    result = rk("edit", "deploy/front")
    assert result.exit_code == 0, result.output
    assert result.stderr == 'error: deployments.apps "front" is invalid\n'
    assert result.stdout == "deployment.apps/front edited\n"
    first, second = opened(log)
    assert second.startswith(edit.HEADER + '# deployments.apps "front" was not valid:\n'
                             "# * spec.replicas: Invalid value: -1: must be greater than or "
                             "equal to 0\n#\n")
    assert "replicas: -1" in edit.strip_comments(second)
    assert live(rk)["spec"]["replicas"] == 3


def test_a_refused_edit_saved_again_unchanged_gives_up_and_keeps_a_copy(
        rk: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_front(rk)
    editor(rk, monkeypatch, "replicas: 2>replicas: -1", "")
    stderr = fails(rk("edit", "deploy/front"))
    assert stderr.endswith("error: Edit cancelled, no valid changes were saved.\n")
    copy_path = stderr.split('A copy of your changes has been stored to "')[1].split('"')[0]
    assert "replicas: -1" in Path(copy_path).read_text()
    os.remove(copy_path)
    assert live(rk)["spec"]["replicas"] == 2


def test_bad_yaml_reopens_and_a_changed_name_is_refused(
        rk: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_front(rk)
    log = editor(rk, monkeypatch, "replicas: 2>replicas: [2", "replicas: [2>replicas: 6")
    assert ok(rk("edit", "deploy/front")) == "deployment.apps/front edited\n"
    assert "# The edited file had a syntax error: yaml: line" in opened(log)[1]
    assert live(rk)["spec"]["replicas"] == 6
    editor(rk, monkeypatch, "name: front>name: back")
    stderr = fails(rk("edit", "deploy/front"))
    assert "error: At least one of apiVersion, kind and name was changed" in stderr
    os.remove(stderr.split('stored to "')[1].split('"')[0])
    assert ("deployments.apps", "default", "back") not in rk.api.objects


def test_an_edit_saved_in_another_encoding_keeps_a_copy_and_says_why(
        rk: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_front(rk)
    script = rk.dir / "latin1.py"
    script.write_text("import sys\n"
                      "text = open(sys.argv[1], encoding='utf-8').read()\n"
                      "text = text.replace('replicas: 2', 'replicas: 3  # caf\\u00e9')\n"
                      "open(sys.argv[1], 'wb').write(text.encode('latin-1'))\n")
    monkeypatch.setenv("EDITOR", f"{sys.executable} {script}")
    stderr = fails(rk("edit", "deploy/front"))
    assert "error: the edited file is not UTF-8 text" in stderr
    copy_path = stderr.split('A copy of your changes has been stored to "')[1].split('"')[0]
    assert b"caf\xe9" in Path(copy_path).read_bytes()
    os.remove(copy_path)
    assert rk.api.writes() == [] and live(rk)["spec"]["replicas"] == 2


# ---- patch --------------------------------------------------------------------------------


def test_patch_types_and_no_change(rk: Cli) -> None:
    seed_front(rk)
    assert ok(rk("patch", "deploy", "front", "-p", '{"spec":{"replicas":3}}')) == (
        "deployment.apps/front patched\n")
    assert rk.api.writes()[-1].content_type == STRATEGIC
    assert ok(rk("patch", "deploy/front", "-p", "spec: {replicas: 3}")) == (
        "deployment.apps/front patched (no change)\n")
    assert ok(rk("patch", "deploy/front", "--type", "merge", "-p",
                 '{"metadata":{"labels":{"tier":"web"}}}')) == "deployment.apps/front patched\n"
    assert rk.api.writes()[-1].content_type == "application/merge-patch+json"
    f = rk.file("p.json", '[{"op": "replace", "path": "/spec/replicas", "value": 1}]')
    assert ok(rk("patch", "deploy/front", "--type=json", "--patch-file", f, "-o", "json"))
    assert live(rk)["spec"]["replicas"] == 1
    before = len(rk.api.writes())
    assert ok(rk("patch", "deploy/front", "-p", '{"spec":{"replicas":7}}',
                 "--dry-run=client")) == "deployment.apps/front patched (dry run)\n"
    assert ok(rk("patch", "deploy/front", "-p", '{"spec":{"replicas":7}}',
                 "--dry-run=server")) == "deployment.apps/front patched (server dry run)\n"
    assert len(rk.api.writes()) == before and live(rk)["spec"]["replicas"] == 1


def test_patch_errors(rk: Cli) -> None:
    seed_front(rk)
    assert "must specify --patch or --patch-file" in fails(rk("patch", "deploy/front"))
    assert 'unable to parse "{x": yaml' in fails(rk("patch", "deploy/front", "-p", "{x"))
    assert fails(rk("patch", "deploy/nope", "-p", "{}")) == (
        'Error from server (NotFound): deployments.apps "nope" not found\n')
    assert "spec.replicas: Invalid value: -1" in fails(
        rk("patch", "deploy/front", "-p", '{"spec":{"replicas":-1}}'))
    assert 'the server doesn\'t have a resource type "nope"' in fails(
        rk("patch", "nope/x", "-p", "{}"))
    assert rk.api.writes()[-1].body == {"spec": {"replicas": -1}}  # refused, nothing stored
    assert live(rk)["spec"]["replicas"] == 2


def test_patch_and_set_image_say_an_outcome_is_unknown_and_stop_there(rk: Cli) -> None:
    # As label, scale and replace do (session.each): a write that may have been applied
    # says so, and the command stops; a refused token is the command's failure, once.
    seed_front(rk)
    other = yaml.safe_load(DEPLOY_YAML)
    other["metadata"].update(name="back", namespace="default")
    rk.api.put(kinds.DEPLOYMENT, other)
    path = "/apis/apps/v1/namespaces/default/deployments/front"
    rk.api.inject[("PATCH", path)] = (504, status(504, "Timeout", "may still be applied"))
    for args in (("patch", "deploy/front", "deploy/back", "-p", '{"spec":{"replicas":3}}'),
                 ("set", "image", "deploy/front", "deploy/back", "web=busybox:3")):
        result = rk(*args)
        assert fails(result).startswith("error: the outcome is unknown: "), args
        assert result.stdout == ""
    assert [s.path for s in rk.api.writes()] == [path, path]  # back was left alone
    rk.api.inject.clear()
    rk.api.token = "another"
    for args in (("patch", "deploy/front", "deploy/back", "-p", '{"spec":{"replicas":3}}'),
                 ("set", "image", "deploy/front", "deploy/back", "web=busybox:3")):
        assert fails(rk(*args)) == "error: You must be logged in to the server " \
                                   "(Unauthorized)\n"


@pytest.mark.parametrize("args", [("describe", "deploy/"), ("delete", "deploy/"),
                                  ("label", "deploy/", "a=b"), ("edit", "deploy/front/x"),
                                  ("describe", "deploy/front/x"), ("delete", "/front"),
                                  ("patch", "deploy/front/x", "-p", "{}")])
def test_a_slip_in_the_resource_name_form_gets_kubectls_words(rk: Cli, args: Any) -> None:
    # As `rk get` says it: not the advice about a separate resource type, nor a NotFound
    # for a name with a slash (no name has one).
    seed_front(rk)
    assert fails(rk(*args)) == ("error: arguments in resource/name form must have a single "
                                "resource and name\n")
    assert rk.api.writes() == []


# ---- label and annotate -------------------------------------------------------------------


def test_label_sets_refuses_overwrite_and_removes(rk: Cli) -> None:
    seed_front(rk)
    assert ok(rk("label", "deploy", "front", "tier=web")) == "deployment.apps/front labeled\n"
    assert live(rk)["metadata"]["labels"] == {"app": "front", "tier": "web"}
    assert fails(rk("label", "deploy/front", "app=web")) == (
        "error: 'app' already has a value (front), and --overwrite is false\n")
    assert ok(rk("label", "deploy/front", "app=front")) == (
        "deployment.apps/front not labeled\n")
    assert ok(rk("label", "deploy/front", "app=web", "--overwrite")) == (
        "deployment.apps/front labeled\n")
    result = rk("label", "deploy/front", "tier-", "nope-")
    assert result.exit_code == 0 and result.stdout == "deployment.apps/front unlabeled\n"
    assert result.stderr == 'label "nope" not found.\n'
    assert live(rk)["metadata"]["labels"] == {"app": "web"}
    sent = rk.api.writes()[-1]
    assert sent.body["metadata"]["labels"] == {"tier": None}
    assert sent.body["metadata"]["resourceVersion"]
    before = len(rk.api.writes())
    assert 'invalid label value: "a=-b"' in fails(rk("label", "deploy/front", "a=-b"))
    assert "at least one label update is required" in fails(rk("label", "deploy/front"))
    assert len(rk.api.writes()) == before


def test_label_by_selector_and_annotate(rk: Cli) -> None:
    seed_front(rk)
    other = yaml.safe_load(DEPLOY_YAML)
    other["metadata"].update(name="back", namespace="default", labels={"app": "back"})
    rk.api.put(kinds.DEPLOYMENT, other)
    assert ok(rk("label", "deploy", "-l", "app=back", "tier=db")) == (
        "deployment.apps/back labeled\n")
    assert ok(rk("label", "deploy", "--all", "team=a", "--dry-run=server")) == (
        "deployment.apps/back labeled (server dry run)\n"
        "deployment.apps/front labeled (server dry run)\n")
    assert "team" not in live(rk)["metadata"]["labels"]
    assert fails(rk("label", "deploy", "-l", "app=none", "a=b")) == (
        "error: no objects passed to label\n")
    assert ok(rk("annotate", "deploy/front", "note=hello world")) == (
        "deployment.apps/front annotated\n")
    assert fails(rk("annotate", "deploy/front", "note=other")) == (
        "error: --overwrite is false but found the following declared annotation(s): "
        "'note' already has a value (hello world)\n")
    assert ok(rk("annotate", "deploy/front", "note=other", "--overwrite"))
    assert live(rk)["metadata"]["annotations"] == {"note": "other"}
    assert ok(rk("annotate", "deploy/front", "note-"))
    assert live(rk)["metadata"].get("annotations") in (None, {})


# ---- scale and set image ------------------------------------------------------------------


def test_scale_writes_the_scale_subresource(rk: Cli) -> None:
    seed_front(rk)
    assert ok(rk("scale", "deploy/front", "--replicas", "4")) == (
        "deployment.apps/front scaled\n")
    sent = rk.api.writes()[-1]
    assert sent.method == "PATCH" and sent.path.endswith("/deployments/front/scale")
    assert live(rk)["spec"]["replicas"] == 4
    assert fails(rk("scale", "deploy/front", "--replicas", "1", "--current-replicas",
                    "3")) == "error: Expected replicas to be 3, was 4\n"
    assert ok(rk("scale", "deploy/front", "--replicas", "1", "--current-replicas", "4"))
    assert live(rk)["spec"]["replicas"] == 1
    before = len(rk.api.writes())
    assert "The --replicas=COUNT flag is required" in fails(rk("scale", "deploy/front"))
    assert "must be greater than or equal to 0" in fails(
        rk("scale", "deploy/front", "--replicas", "-1"))
    assert "cannot scale configmaps" in fails(rk("scale", "cm/x", "--replicas", "1"))
    assert fails(rk("scale", "deploy/nope", "--replicas", "1")) == (
        'Error from server (NotFound): deployments.apps "nope" not found\n')
    assert len(rk.api.writes()) == before + 1  # only the refused one
    assert live(rk)["spec"]["replicas"] == 1


def test_set_image(rk: Cli) -> None:
    seed_front(rk)
    assert ok(rk("set", "image", "deployment/front", "web=busybox:2")) == (
        "deployment.apps/front image updated\n")
    sent = rk.api.writes()[-1]
    assert sent.content_type == STRATEGIC and sent.body == {"spec": {"template": {"spec": {
        "containers": [{"name": "web", "image": "busybox:2"}]}}}}
    assert live(rk)["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:2"
    before = len(rk.api.writes())
    assert ok(rk("set", "image", "deployment/front", "web=busybox:2")) == ""
    assert fails(rk("set", "image", "deployment/front", "nope=x")) == (
        'error: unable to find container named "nope"\n')
    assert "at least one image update is required" in fails(
        rk("set", "image", "deployment/front"))
    assert len(rk.api.writes()) == before


# ---- diff ---------------------------------------------------------------------------------


def test_diff_exit_codes_and_output(rk: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    f = rk.file("d.yaml", DEPLOY_YAML)
    result = rk("diff", "-f", f)
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["diff -u -N LIVE/apps.v1.Deployment.default.front "
                         "MERGED/apps.v1.Deployment.default.front",
                         "--- LIVE/apps.v1.Deployment.default.front",
                         "+++ MERGED/apps.v1.Deployment.default.front"]
    assert "+  replicas: 2" in lines
    assert not any(LAST in line for line in lines)  # diff leaves the record as it is
    assert all(s.query.get("dryRun") == "All" for s in rk.api.seen if s.method != "GET")

    assert ok(rk("apply", "-f", f)) == "deployment.apps/front created\n"
    result = rk("diff", "-f", f)
    assert (result.exit_code, result.stdout) == (0, "")
    changed = rk.file("d2.yaml", DEPLOY_YAML.replace("replicas: 2", "replicas: 3"))
    result = rk("diff", "-f", changed)
    assert result.exit_code == 1
    assert "-  replicas: 2\n+  replicas: 3\n" in result.stdout
    assert not [line for line in result.stdout.splitlines()
                if LAST in line and line[0] in "+-"]
    assert "resourceVersion" not in result.stdout and "generation" not in result.stdout
    assert live(rk)["spec"]["replicas"] == 2

    script = rk.dir / "ext.sh"
    script.write_text('#!/bin/sh\necho "ext $1 $2"; ls "$2"; exit 1\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("KUBECTL_EXTERNAL_DIFF", str(script))
    result = rk("diff", "-f", changed)
    assert result.exit_code == 1
    assert result.stdout.startswith("ext ") and "apps.v1.Deployment.default.front" in \
        result.stdout


def test_diff_errors_exit_above_one(rk: Cli) -> None:
    assert fails(rk("diff", "-f", "nope.yaml"), 2) == 'error: the path "nope.yaml" does not ' \
                                                       'exist\n'
    bad = rk.file("bad.yaml", DEPLOY_YAML.replace("replicas: 2", "replicas: -2"))
    stderr = fails(rk("diff", "-f", bad), 2)
    assert 'The Deployment "front" is invalid: spec.replicas' in stderr
    assert rk.api.writes() == []


def test_secret_values_are_masked_in_diff(rk: Cli) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
              "data": {"pw": "YQ=="}}
    f = rk.file("s.yaml", json.dumps(secret))
    ok(rk("apply", "-f", f))
    secret["data"]["pw"] = "Yg=="
    result = rk("diff", "-f", rk.file("s2.yaml", json.dumps(secret)))
    assert result.exit_code == 1
    assert "-  pw: '*** (before)'\n+  pw: '*** (after)'" in result.stdout.replace('"', "'")
