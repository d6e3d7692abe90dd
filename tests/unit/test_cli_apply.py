"""`rk apply` and `rk delete` in full: URLs, -R, --prune, dry runs, -o, --wait's progress,
delete's partial failures and grace rules, and the unreachable cluster's message.

Pure parts (prune's choice, durations, the progress board) are tested from tables; the
commands run through CliRunner against test_cli_kubectl's fake REST server (its fixtures
are imported, not copied), and URLs against a local http.server.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from raftkube.api import kinds
from raftkube.cli import apply, delete, durations, manifests, progress, prune
from raftkube.client import errors, rest, transport
from tests.unit.test_cli_kubectl import (
    CONFIGMAP_YAML,
    DEPLOY_YAML,
    TOKEN,
    Cli,
    FakeApi,
    closed_port_url,
    configure,
    ok,
    rk,  # noqa: F401 (a fixture)
    serve,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
LAST = apply.LAST_APPLIED
CM = kinds.CONFIGMAP


def cm_yaml(name: str, **labels: str) -> str:
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
    if labels:
        text += "  labels:\n" + "".join(f"    {k}: {v}\n" for k, v in labels.items())
    return text + "data:\n  k: v\n"


# ---- durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("0", 0.0), ("30s", 30.0), ("5m", 300.0), ("1m30s", 90.0), ("1.5h", 5400.0),
    ("500ms", 0.5), ("2h0m1s", 7201.0),
])
def test_durations_read_like_go(text: str, seconds: float) -> None:
    assert durations.parse(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "m", "5x", "1m 2s", "abc"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.parse(text)


# ---- prune's choice ------------------------------------------------------------------------


def test_the_default_allowlist_is_kubectls_restricted_to_served_kinds() -> None:
    names = [k.kind for k in prune.allowlist([])]
    assert names == ["ConfigMap", "Namespace", "Pod", "Secret", "Service", "Job",
                     "DaemonSet", "Deployment", "ReplicaSet"]
    assert prune.allowlist(["core/v1/ConfigMap", "apps/v1/Deployment",
                            "core/v1/ConfigMap"]) == [CM, kinds.DEPLOYMENT]


@pytest.mark.parametrize(("entry", "words"), [
    ("ConfigMap", "invalid GroupVersionKind format: ConfigMap, please follow"),
    ("core/v1/", "invalid GroupVersionKind format"),
    ("apps/v1/StatefulSet", 'no matches for kind "StatefulSet" in version "apps/v1"'),
    ("v1/ConfigMap/x", 'no matches for kind "x"'),
])
def test_a_bad_allowlist_entry_is_named(entry: str, words: str) -> None:
    with pytest.raises(errors.ClientError, match=words):
        prune.allowlist([entry])


def live(name: str, *, applied: bool = True, deleting: bool = False,
         namespace: str = "default") -> Obj:
    meta: Obj = {"name": name, "namespace": namespace}
    if applied:
        meta["annotations"] = {LAST: "{}"}
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T12:00:00Z"
    return {"metadata": meta}


def test_prune_chooses_applied_objects_not_in_this_apply() -> None:
    listed = [live("kept"), live("old"), live("by-hand", applied=False),
              live("going", deleting=True), live("kept", namespace="other")]
    applied = {("configmaps", "default", "kept")}
    assert [(o["metadata"]["namespace"], o["metadata"]["name"])
            for o in prune.chosen(listed, CM, applied)] == [("default", "old"),
                                                             ("other", "kept")]


def test_prune_flag_combinations_are_kubectls() -> None:
    def refused(**kw: Any) -> str:
        args = {"prune_": True, "all_": False, "selector": "", "allowlist": (),
                "dry_run": "none", "wait": False, **kw}
        with pytest.raises(errors.ClientError) as e:
            apply.validate(**args)
        return str(e.value)

    assert refused().startswith("all resources selected for prune without explicitly "
                                "passing --all.")
    assert refused(all_=True, selector="a=b") == \
        "cannot set --all and --selector at the same time"
    assert refused(prune_=False, all_=False, allowlist=("core/v1/ConfigMap",)) == \
        "--prune-allowlist must be used with --prune"
    assert "--wait cannot be used with --dry-run" in refused(selector="a", dry_run="client",
                                                            wait=True)
    apply.validate(prune_=True, all_=False, selector="app=a", allowlist=(),
                   dry_run="server", wait=False)


# ---- reading: -R and URLs ------------------------------------------------------------------


def test_directories_are_read_recursively_only_with_r(tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.yaml").write_text(cm_yaml("a"))
    (tmp_path / "sub" / "b.yml").write_text(cm_yaml("b"))
    (tmp_path / "sub" / "deeper" / "c.json").write_text(json.dumps(yaml.safe_load(
        cm_yaml("c"))))
    (tmp_path / "sub" / "notes.txt").write_text("not a manifest")

    def names(recursive: bool) -> list[str]:
        return [m.name for m in manifests.load_manifests(
            [str(tmp_path)], read_stdin=lambda: "", namespace="default",
            explicit_namespace=False, recursive=recursive)]

    assert names(False) == ["a"]
    assert names(True) == ["a", "b", "c"]


def test_r_does_not_follow_a_symlinked_directory_round_a_loop(tmp_path: Path) -> None:
    """As kubectl's -R (Go's filepath.Walk): a link to a directory is not descended into,
    so a link back up reads each manifest once, not once per path round the loop."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(cm_yaml("a"))
    (tmp_path / "sub" / "up").symlink_to("..")
    (tmp_path / "sub" / "b.yaml").symlink_to("../a.yaml")  # a linked file is read
    assert manifests.expand_paths([str(tmp_path)], recursive=True) == [
        str(tmp_path / "a.yaml"), str(tmp_path / "sub" / "b.yaml")]


class Files(http.server.BaseHTTPRequestHandler):
    """Serves `pages` by path; anything else is a 404."""

    pages: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.pages.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local web server of manifests: its base URL and the pages it serves."""
    pages: dict[str, bytes] = {}
    handler = type("Handler", (Files,), {"pages": pages})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_url_is_fetched_and_its_failures_name_it(
        files: tuple[str, dict[str, bytes]]) -> None:
    base, pages = files
    pages["/app.yaml"] = f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}".encode()
    loaded = manifests.load_manifests([f"{base}/app.yaml"], read_stdin=lambda: "",
                                      namespace="default", explicit_namespace=False)
    assert [(m.ref, m.source) for m in loaded] == [
        ("deployment.apps/front", f"{base}/app.yaml"),
        ("configmap/game-demo", f"{base}/app.yaml")]

    with pytest.raises(manifests.ManifestError) as e:
        manifests.fetch_url(f"{base}/nope.yaml")
    assert e.value.problems == [f'unable to read URL "{base}/nope.yaml", server reported '
                                "404 Not Found, status code=404"]
    refused = closed_port_url() + "/x.yaml"
    with pytest.raises(manifests.ManifestError, match=f'unable to read URL "{refused}": '
                                                      "Connection refused"):
        manifests.fetch_url(refused)
    pages["/big.yaml"] = b"#" * 2048
    with pytest.raises(manifests.ManifestError, match="larger than 1024 bytes"):
        manifests.fetch_url(f"{base}/big.yaml", max_bytes=1024)


class Drip(http.server.BaseHTTPRequestHandler):
    """A server that answers at once, then sends its body one byte every 0.1 s."""

    def do_GET(self) -> None:
        body = CONFIGMAP_YAML.encode()[:40]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(len(body)):
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass  # the client gave up

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_slow_url_is_given_up_after_the_time_limit_for_the_whole_fetch() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/slow.yaml"
    try:
        # each byte comes well within the limit; the whole body (4 s) does not
        with pytest.raises(manifests.ManifestError, match=f'unable to read URL "{url}": '
                                                          "no answer within 1s"):
            manifests.fetch_url(url, timeout=1.0)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_apply_reads_a_url(rk: Cli, files: tuple[str, dict[str, bytes]]) -> None:  # noqa: F811
    base, pages = files
    pages["/cm.yaml"] = CONFIGMAP_YAML.encode()
    assert ok(rk("apply", "-f", f"{base}/cm.yaml")) == "configmap/game-demo created\n"
    result = rk("apply", "-f", f"{base}/missing.yaml")
    assert (result.exit_code, result.stderr) == (
        1, f'error: unable to read URL "{base}/missing.yaml", server reported 404 Not Found, '
           "status code=404\n")


# ---- apply: dry runs, -o, -l, --prune --------------------------------------------------------


def test_client_dry_run_sends_nothing_that_writes(rk: Cli) -> None:  # noqa: F811
    f = rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")
    assert ok(rk("apply", "-f", f, "--dry-run=client")) == (
        "deployment.apps/front created (dry run)\nconfigmap/game-demo created (dry run)\n")
    assert [s.method for s in rk.api.seen] == ["GET", "GET"]
    ok(rk("apply", "-f", f))
    changed = rk.file("cm.yaml", CONFIGMAP_YAML.replace("easy", "hard"))
    before = len(rk.api.seen)
    assert ok(rk("apply", "-f", changed, "--dry-run=client", "-o", "yaml")).startswith(
        "apiVersion: v1\ndata:\n  lives: \"3\"\n  mode: hard\nkind: ConfigMap\n")
    assert {s.method for s in rk.api.seen[before:]} == {"GET"}
    assert rk.api.objects[("configmaps", "default", "game-demo")]["data"]["mode"] == "easy"


def test_server_dry_run_sends_dry_run_all_only(rk: Cli) -> None:  # noqa: F811
    f = rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")
    assert ok(rk("apply", "-f", f, "--dry-run=server")) == (
        "deployment.apps/front created (server dry run)\n"
        "configmap/game-demo created (server dry run)\n")
    assert rk.api.writes() == []
    assert {s.query.get("dryRun") for s in rk.api.seen if s.method != "GET"} == {"All"}


def test_output_name_yaml_and_json(rk: Cli) -> None:  # noqa: F811
    f = rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")
    assert ok(rk("apply", "-f", f, "-o", "name")) == (
        "deployment.apps/front\nconfigmap/game-demo\n")
    both = yaml.safe_load(ok(rk("apply", "-f", f, "-o", "yaml")))
    assert (both["kind"], [i["kind"] for i in both["items"]]) == (
        "List", ["Deployment", "ConfigMap"])
    one = json.loads(ok(rk("apply", "-f", rk.file("cm.yaml", CONFIGMAP_YAML), "-o", "json")))
    assert (one["kind"], one["metadata"]["name"], one["metadata"]["resourceVersion"]) == (
        "ConfigMap", "game-demo", rk.api.objects[("configmaps", "default", "game-demo")][
            "metadata"]["resourceVersion"])
    result = rk("apply", "-f", f, "-o", "wide")
    assert result.exit_code == 2 and "'-o' / '--output'" in result.stderr


def test_selector_applies_only_the_matching_manifests(rk: Cli) -> None:  # noqa: F811
    f = rk.file("two.yaml", f"{cm_yaml('a', app='x')}---\n{cm_yaml('b', app='y')}")
    assert ok(rk("apply", "-f", f, "-l", "app=x")) == "configmap/a created\n"
    result = rk("apply", "-f", f, "-l", "app=z")
    assert (result.exit_code, result.stderr) == (1, "error: no objects passed to apply\n")
    result = rk("apply", "-f", f, "-l", "app in (")
    assert result.exit_code == 1 and 'invalid label selector "app in ("' in result.stderr


def test_prune_deletes_what_the_last_apply_had_and_this_one_has_not(rkd: Cli) -> None:
    rk = rkd  # noqa: F811 (the fake that honours a dry-run DELETE)
    first = rk.file("v1.yaml", "---\n".join(
        cm_yaml(n, app="shop") for n in ("a", "b", "c")))
    ok(rk("apply", "-f", first))
    ok(rk("apply", "-f", "-", input=cm_yaml("other", app="blog")))  # another selector
    ok(rk("apply", "-f", "-", "-n", "team-a", input=cm_yaml("d", app="shop")))
    rk.api.put(CM, {"apiVersion": "v1", "kind": "ConfigMap",  # made by hand: no annotation
                    "metadata": {"name": "manual", "namespace": "default",
                                 "labels": {"app": "shop"}}})
    second = rk.file("v2.yaml", cm_yaml("a", app="shop"))
    result = rk("apply", "-f", second, "--prune")
    assert result.exit_code == 1 and "all resources selected for prune" in result.stderr
    assert ok(rk("apply", "-f", second, "--prune", "-l", "app=shop",
                 "--dry-run=client")) == (
        "configmap/a unchanged (dry run)\nconfigmap/b pruned (dry run)\n"
        "configmap/c pruned (dry run)\n")
    assert ok(rk("apply", "-f", second, "--prune", "-l", "app=shop",
                 "--dry-run=server")) == (
        "configmap/a unchanged (server dry run)\nconfigmap/b pruned (server dry run)\n"
        "configmap/c pruned (server dry run)\n")
    assert ok(rk("apply", "-f", second, "--prune", "-l", "app=shop",
                 "--prune-allowlist", "apps/v1/Deployment")) == "configmap/a unchanged\n"
    assert ok(rk("apply", "-f", second, "--prune", "-l", "app=shop")) == (
        "configmap/a unchanged\nconfigmap/b pruned\nconfigmap/c pruned\n")
    left = {(ns, n) for (r, ns, n) in rk.api.objects if r == "configmaps"}
    assert left == {("default", "a"), ("default", "other"), ("default", "manual"),
                    ("team-a", "d")}  # team-a was not applied to: not pruned
    deletes = [s for s in rk.api.seen if s.method == "DELETE"]
    assert all(s.query.get("propagationPolicy") == "Background" for s in deletes)


# ---- --wait's progress -----------------------------------------------------------------------


def test_the_board_redraws_in_place_on_a_tty() -> None:
    board = progress.Board(tty=True)
    board.add("deployment.apps/front")
    board.add("service/front")
    first = board.draw()
    assert first == ("\r\x1b[2K… deployment.apps/front: waiting\n"
                     "\r\x1b[2K… service/front: waiting\n")
    assert board.update("service/front", message="exists", done=True)
    assert not board.update("service/front", message="exists", done=True)
    assert board.draw() == ("\x1b[2A\r\x1b[2K… deployment.apps/front: waiting\n"
                            "\r\x1b[2K✓ service/front: exists\n")


def test_the_board_prints_plain_lines_of_changes_elsewhere() -> None:
    board = progress.Board(tty=False)
    board.add("deployment.apps/front")
    board.add("service/front")
    assert board.draw() == "deployment.apps/front: waiting\nservice/front: waiting\n"
    board.update("service/front", message="exists", done=True)
    assert board.draw(["service/front"]) == "service/front: exists\n"
    assert "\x1b" not in board.draw()


class Replies:
    """A client whose `get` answers from a script: one object per read, per name."""

    def __init__(self, script: dict[str, list[Obj | None]]) -> None:
        self.script = script

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Obj:
        answers = self.script[name]
        obj = answers.pop(0) if len(answers) > 1 else answers[0]
        if obj is None:
            raise errors.ApiError({"code": 404, "reason": "NotFound",
                                   "message": f'{kind.resource} "{name}" not found'})
        return obj


def ready_when(obj: Obj) -> tuple[bool, str]:
    ready = obj.get("ready", 0)
    return ready >= 2, f"{ready} of 2 ready"


def run_wait(script: dict[str, list[Obj | None]], *, timeout: float, tty: bool = False
             ) -> tuple[list[progress.Line], str, list[float]]:
    now = [0.0]
    slept: list[float] = []
    out: list[str] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    targets = [progress.Target(kinds.DEPLOYMENT, "default", n, f"deployment.apps/{n}")
               for n in script]
    client: Any = Replies(script)
    left = asyncio.run(progress.wait_ready(
        client, targets, timeout=timeout, check=lambda _k, o: ready_when(o),
        write=out.append, tty=tty, clock=lambda: now[0], sleep=sleep))
    return left, "".join(out), slept


def test_wait_reads_until_ready_printing_each_change_once() -> None:
    left, out, slept = run_wait({"front": [None, {"ready": 0}, {"ready": 0}, {"ready": 1},
                                           {"ready": 2}]}, timeout=60)
    assert left == []
    assert out.splitlines() == ["deployment.apps/front: not found (yet)",
                                "deployment.apps/front: 0 of 2 ready",
                                "deployment.apps/front: 1 of 2 ready",
                                "deployment.apps/front: 2 of 2 ready"]
    assert slept == [progress.POLL] * 4  # never faster than POLL


def test_wait_stops_at_the_timeout_naming_what_is_not_ready() -> None:
    left, out, slept = run_wait({"front": [{"ready": 2}], "back": [{"ready": 1}]},
                                timeout=1.2)
    assert [(line.ref, line.message) for line in left] == [
        ("deployment.apps/back", "1 of 2 ready")]
    assert sum(slept) == pytest.approx(1.2)
    left, out, _ = run_wait({"front": [{"ready": 1}, {"ready": 2}]}, timeout=5, tty=True)
    assert out.count("\x1b[1A") == 1 and "✓ deployment.apps/front: 2 of 2 ready" in out


# ---- delete --------------------------------------------------------------------------------


class DryRunApi(FakeApi):
    """The fake, with DELETE's dryRun honoured (the fake deletes whatever it is sent)."""

    def route(self, method: str, path: str, query: dict[str, str],
              body: Any) -> tuple[int, Any]:
        if method == "DELETE" and query.get("dryRun") == "All":
            code, obj = super().route("GET", path, query, body)
            return code, obj
        return super().route(method, path, query, body)


@pytest.fixture
def rkd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> Cli:  # noqa: F811
    api = DryRunApi()
    for ns in ("default", "team-a"):
        api.put(kinds.NAMESPACE, {"apiVersion": "v1", "kind": "Namespace",
                                  "metadata": {"name": ns}})
    configure(tmp_path, monkeypatch, [serve(api)])
    return Cli(api, tmp_path)


def test_delete_deletes_what_it_can_and_reports_each_failure(rkd: Cli) -> None:
    ok(rkd("apply", "-f", "-", input=f"{cm_yaml('a')}---\n{cm_yaml('b')}"))
    good = rkd.file("good.yaml", cm_yaml("a"))
    mixed = rkd.file("mixed.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n"
                                   f"  name: w\n---\n{cm_yaml('b')}---\n{cm_yaml('gone')}")
    result = rkd("delete", "-f", good, "-f", mixed)
    assert result.exit_code == 1
    assert result.stdout == 'configmap "a" deleted\nconfigmap "b" deleted\n'
    assert result.stderr.splitlines() == [
        f'error: resource mapping not found for name: "w" namespace: "" from "{mixed}" '
        '(document 1): no matches for kind "Widget" in version "example.com/v1"',
        f'Error from server (NotFound): error when deleting "{mixed}": configmaps "gone" '
        "not found"]
    assert not [k for k in rkd.api.objects if k[0] == "configmaps"]
    result = rkd("delete", "-f", rkd.file("bad.yaml", "kind: [\n"), "-f", good)
    assert result.exit_code == 1 and result.stderr.startswith("error: error parsing")
    assert "NotFound" in result.stderr  # the good file was still tried


def test_delete_grace_force_and_now_follow_kubectl(rkd: Cli) -> None:
    def pod(name: str) -> None:
        rkd.api.put(kinds.POD, {"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": name, "namespace": "default"}})

    for name in ("p1", "p2", "p3", "p4"):
        pod(name)
    result = rkd("delete", "pod", "p1", "--force", "--grace-period=0")
    assert result.stdout == 'pod "p1" force deleted\n'
    assert result.stderr.startswith("Warning: Immediate deletion does not wait for "
                                    "confirmation that the running resource has been "
                                    "terminated.")
    assert rkd.api.seen[-2].query["gracePeriodSeconds"] == "0"
    ok(rkd("delete", "pod", "p2", "--now"))
    assert rkd.api.seen[-2].query["gracePeriodSeconds"] == "1"
    ok(rkd("delete", "pod", "p3", "--grace-period=0"))  # unforced 0 becomes 1
    assert rkd.api.seen[-2].query["gracePeriodSeconds"] == "1"
    result = rkd("delete", "pod", "p4", "--force", "--grace-period=5")
    assert "--force is ignored because --grace-period is not 0" in result.stderr
    result = rkd("delete", "pod", "x", "--now", "--grace-period=3")
    assert (result.exit_code, result.stderr) == (
        1, "error: --now and --grace-period cannot be specified together\n")
    result = rkd("delete", "pod", "x", "--wait=maybe")
    assert result.exit_code == 2 and "'--wait'" in result.stderr


def test_delete_dry_runs_and_all_namespaces(rkd: Cli) -> None:
    ok(rkd("apply", "-f", "-", input=cm_yaml("a", app="x")))
    ok(rkd("apply", "-f", "-", "-n", "team-a", input=cm_yaml("b", app="x")))
    writes = len(rkd.api.writes())
    assert ok(rkd("delete", "cm", "a", "--dry-run=client")) == (
        'configmap "a" deleted (dry run)\n')
    assert ok(rkd("delete", "cm", "a", "--dry-run=server")) == (
        'configmap "a" deleted (server dry run)\n')
    assert len(rkd.api.writes()) == writes and ("configmaps", "default", "a") in \
        rkd.api.objects
    assert ok(rkd("delete", "cm", "-l", "app=x", "-A", "--wait=false")) == (
        'configmap "a" deleted\nconfigmap "b" deleted\n')
    result = rkd("delete", "cm", "a", "-A")
    assert (result.exit_code, result.stderr) == (
        1, "error: a resource cannot be retrieved by name across all namespaces\n")
    result = rkd("delete", "cm", "--all", "-l", "a=b")
    assert (result.exit_code, result.stderr) == (
        1, "error: cannot set --all and --selector at the same time\n")


def test_delete_waits_until_the_objects_are_gone() -> None:
    front = {"metadata": {"name": "front", "uid": "u1", "deletionTimestamp": "t"}}
    client: Any = Replies({"front": [front, front, None]})
    target = delete.Target(kinds.DEPLOYMENT, "default", "front", "")
    assert asyncio.run(delete.wait_gone(client, [delete.Deleted(target, "u1")],
                                        timeout=10)) == []
    # A new object under the same name is not the one deleted.
    client = Replies({"front": [{"metadata": {"name": "front", "uid": "u2"}}]})
    assert asyncio.run(delete.wait_gone(client, [delete.Deleted(target, "u1")],
                                        timeout=10)) == []
    client = Replies({"front": [front]})
    assert asyncio.run(delete.wait_gone(client, [delete.Deleted(target, "u1")],
                                        timeout=0.6)) == [target]


# ---- an unreachable cluster ------------------------------------------------------------------


def test_an_unreachable_cluster_names_every_server_tried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = closed_port_url(), closed_port_url()
    configure(tmp_path, monkeypatch, [first, second])
    result = Cli(FakeApi(), tmp_path)("apply", "-f", "-", input=CONFIGMAP_YAML)
    assert result.exit_code == 1
    assert result.stderr == (
        "error: no server answered GET /api/v1/namespaces/default/configmaps/game-demo: "
        f"{first} (connection refused), {second} (connection refused)\n")


def test_https_to_a_plain_http_port_says_tls_not_a_system_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Any) -> None:  # noqa: F811
    plain = serve(FakeApi()).replace("http://", "https://")  # a scheme slip in the config
    configure(tmp_path, monkeypatch, [plain])
    result = Cli(FakeApi(), tmp_path)("get", "cm")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: no server answered GET /api/v1/namespaces/default/configmaps: {plain} "
        "(TLS: "), result.stderr
    assert "operation not permitted" not in result.stderr


def test_the_client_goes_past_a_dead_master_within_the_request_timeout(
        serve: Any) -> None:  # noqa: F811
    good = FakeApi()

    async def read() -> None:
        async with transport.Transport([closed_port_url(), serve(good)], TOKEN,
                                       wait=0.5) as tp:
            assert (await rest.RestClient(tp).list(CM, "default"))["items"] == []

    asyncio.run(read())


def test_apply_wait_reports_progress_then_done_or_the_timeout(rk: Cli) -> None:  # noqa: F811
    f = rk.file("app.yaml", f"{DEPLOY_YAML}---\n{CONFIGMAP_YAML}")
    result = rk("apply", "-f", f, "--wait", "--timeout", "1s")
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "deployment.apps/front created", "configmap/game-demo created",
        'deployment.apps/front: Waiting for deployment "front" rollout to finish: 0 out of '
        "2 new replicas have been updated...",
        'configmap/game-demo: configmap "game-demo" exists']
    assert result.stderr == (
        "error: timed out waiting for the condition on deployment.apps/front: Waiting for "
        'deployment "front" rollout to finish: 0 out of 2 new replicas have been '
        "updated...\n")
    live = rk.api.objects[("deployments.apps", "default", "front")]
    live["status"] = {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}
    assert ok(rk("apply", "-f", f, "--wait")).splitlines()[-2:] == [
        'deployment.apps/front: deployment "front" successfully rolled out',
        'configmap/game-demo: configmap "game-demo" exists']
    live["status"]["conditions"] = [{"type": "Progressing", "status": "False",
                                     "reason": "ProgressDeadlineExceeded"}]
    live["status"]["updatedReplicas"] = 1
    result = rk("apply", "-f", f, "--wait")
    assert (result.exit_code, result.stderr) == (
        1, 'error: deployment "front" exceeded its progress deadline\n')
    result = rk("apply", "-f", f, "--wait", "--timeout", "soon")
    assert result.exit_code == 2 and "'--timeout'" in result.stderr


def test_apply_wait_follows_objects_of_one_name_in_two_namespaces(rk: Cli) -> None:  # noqa: F811
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n" for ns in "ab"]
    docs += [cm_yaml("same").replace("  name: same\n", f"  name: same\n  namespace: {ns}\n")
             for ns in "ab"]
    f = rk.file("two.yaml", "---\n".join(docs))
    result = rk("apply", "-f", f, "--wait", "--timeout", "2s")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines()[-2:] == [
        'configmap/same (namespace a): configmap "same" exists',
        'configmap/same (namespace b): configmap "same" exists']


def test_delete_finding_nothing_says_so_on_stdout_as_kubectl(rkd: Cli) -> None:
    # kubectl's delete prints "No resources found" to its output stream (get, to stderr)
    for args in (("cm", "-l", "app=none"), ("cm", "--all", "-n", "team-a")):
        result = rkd("delete", *args)
        assert (result.exit_code, result.stdout, result.stderr) == (
            0, "No resources found\n", ""), args


def test_apply_wait_with_o_keeps_stdout_to_the_objects(rk: Cli) -> None:  # noqa: F811
    # `rk apply -o json --wait | jq` must get JSON only: the progress goes to stderr
    result = rk("apply", "-f", "-", "-o", "json", "--wait", input=CONFIGMAP_YAML)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metadata"]["name"] == "game-demo"
    assert result.stderr == 'configmap/game-demo: configmap "game-demo" exists\n'
    result = rk("apply", "-f", "-", "-o", "name", "--wait", input=CONFIGMAP_YAML)
    assert (result.stdout, result.stderr) == (
        "configmap/game-demo\n", 'configmap/game-demo: configmap "game-demo" exists\n')
