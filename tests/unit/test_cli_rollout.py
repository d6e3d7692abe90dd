"""The pure parts of `rk rollout`, `rk wait` and `rk drain`: the history table, a
revision's template, what `--for` means, durations, which pods a drain moves; and bad
input, which must be refused before anything is sent (the config names a closed port,
so a request would fail differently)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from raftkube.api import kinds
from raftkube.cli import durations, kubectl, nodes, rollout, wait
from raftkube.client import errors, rest, transport

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


# ---- rollout history ----------------------------------------------------------------------


def rs(revision: int, cause: str | None = None) -> Obj:
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if cause:
        annotations["kubernetes.io/change-cause"] = cause
    return {"metadata": {"name": f"front-{revision}", "annotations": annotations}}


def test_history_table_is_kubectls() -> None:
    got = rollout.history_table(kinds.DEPLOYMENT, "front",
                                [(1, rs(1)), (2, rs(2, "image to 2"))])
    assert got == ("deployment.apps/front \n"
                   "REVISION  CHANGE-CAUSE\n"
                   "1         <none>\n"
                   "2         image to 2\n\n")
    wide = rollout.history_table(kinds.DEPLOYMENT, "front", [(1234567890, rs(1234567890))])
    assert wide.splitlines()[1:] == ["REVISION    CHANGE-CAUSE", "1234567890  <none>", ""]
    assert rollout.history_table(kinds.DEPLOYMENT, "x", []).splitlines()[1] == \
        "REVISION  CHANGE-CAUSE"


def test_a_revisions_template_as_kubectl_describes_it() -> None:
    template = {
        "metadata": {"labels": {"app": "front", "pod-template-hash": "abc"},
                     "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T12:00:00Z"}},
        "spec": {"containers": [{
            "name": "web", "image": "web:2", "ports": [{"containerPort": 80}],
            "env": [{"name": "MODE", "value": "fast"}],
            "readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": 1},
            "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}]}],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "nodeSelector": {"disk": "ssd"}}}
    assert rollout.describe_template(template) == "\n".join([
        "Pod Template:",
        "  Labels:\tapp=front",
        "\tpod-template-hash=abc",
        "  Annotations:\tkubectl.kubernetes.io/restartedAt: 2024-05-01T12:00:00Z",
        "  Containers:",
        "   web:",
        "    Image:\tweb:2",
        "    Port:\t80/TCP",
        "    Host Port:\t0/TCP",
        "    Readiness:\texec [true] delay=1s timeout=1s period=10s #success=1 #failure=3",
        "    Environment:",
        "      MODE:\tfast",
        "    Mounts:",
        "      /data from data (ro)",
        "  Volumes:",
        "   data:",
        "    Type:\tEmptyDir",
        "  Node-Selectors:\tdisk=ssd",
        "  Tolerations:\t<none>",
    ]) + "\n"
    bare = rollout.describe_template({"spec": {"containers": [{"name": "a", "image": "b"}]}})
    assert "  Labels:\t<none>" in bare and "    Port:\t<none>" in bare
    assert "Annotations" not in bare and "  Volumes:\t<none>" in bare


# ---- wait ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("0", 0), ("0s", 0), ("1m30s", 90), ("1.5h", 5400), ("250ms", 0.25),
    ("-1s", -1),
])
def test_durations(text: str, seconds: float) -> None:
    assert durations.argument("--timeout", text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "x", "s", "1x", "1m 2s", "m1", "45"])
def test_bad_durations_name_the_flag(text: str) -> None:
    with pytest.raises(errors.ClientError, match=f'invalid argument "{text}" for "--timeout"'):
        durations.argument("--timeout", text)


@pytest.mark.parametrize(("text", "wanted"), [
    ("delete", wait.Wanted("delete")),
    ("create", wait.Wanted("create")),
    ("condition=Ready", wait.Wanted("condition", "Ready", "true")),
    ("condition=Ready=false", wait.Wanted("condition", "Ready", "false")),
    ("jsonpath={.status.phase}=Running", wait.Wanted("jsonpath", ".status.phase", "Running")),
    ("jsonpath=.status.phase=Running", wait.Wanted("jsonpath", ".status.phase", "Running")),
    ("jsonpath={.status.podIP}", wait.Wanted("jsonpath", ".status.podIP", None)),
])
def test_for(text: str, wanted: wait.Wanted) -> None:
    assert wait.parse_for(text) == wanted


@pytest.mark.parametrize("text", ["foo", "condition", "condition=", "condition=Ready=",
                                  "jsonpath=", "jsonpath={.a", "jsonpath={.a}x",
                                  "jsonpath={.a[}=1"])
def test_bad_for(text: str) -> None:
    with pytest.raises(errors.ClientError, match="unrecognized condition|--for"):
        wait.parse_for(text)


POD = {"metadata": {"name": "web-1", "labels": {"app": "web"}},
       "status": {"phase": "Running", "ready": True,
                  "conditions": [{"type": "Ready", "status": "True"},
                                 {"type": "PodScheduled", "status": "True"}],
                  "containerStatuses": [{"restartCount": 0}]}}


@pytest.mark.parametrize(("text", "obj", "met"), [
    ("delete", None, True),
    ("delete", POD, False),
    ("condition=Ready", POD, True),
    ("condition=ready", POD, True),  # kubectl compares condition names without case
    ("condition=Ready=false", POD, False),
    ("condition=Ready=False", {"status": {"conditions": [{"type": "Ready",
                                                           "status": "False"}]}}, True),
    ("condition=Initialized", POD, False),
    ("condition=Ready", None, False),
    ("create", None, False),
    ("create", POD, True),
    # a condition of an older generation does not count yet
    ("condition=Ready", {"metadata": {"generation": 3}, "status": {"conditions": [
        {"type": "Ready", "status": "True", "observedGeneration": 2}]}}, False),
    ("condition=Ready", {"metadata": {"generation": 3}, "status": {"conditions": [
        {"type": "Ready", "status": "True", "observedGeneration": 3}]}}, True),
    ("jsonpath={.status.phase}=Running", POD, True),
    ("jsonpath={.status.phase}=Pending", POD, False),
    ("jsonpath={.status.ready}=true", POD, True),
    ("jsonpath={.status.conditions[1].type}=PodScheduled", POD, True),
    ("jsonpath={.status.containerStatuses[0].restartCount}=0", POD, True),
    ("jsonpath={.metadata.labels['app']}=web", POD, True),
    ("jsonpath={.status.conditions[7].type}=x", POD, False),
    ("jsonpath={.status}=x", POD, False),  # a map is not a value
    ("jsonpath={.status.phase}", POD, True),
    ("jsonpath={.status.podIP}", POD, False),
])
def test_met(text: str, obj: Obj | None, met: bool) -> None:
    assert wait.met(wait.parse_for(text), obj) is met


# ---- drain ---------------------------------------------------------------------------------


def pod(name: str, *, owner: str | None = "ReplicaSet", phase: str = "Running",
        empty_dir: bool = False, mirror: bool = False) -> Obj:
    meta: Obj = {"name": name, "namespace": "default"}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if mirror:
        meta["annotations"] = {nodes.MIRROR: "x"}
    spec: Obj = {"volumes": [{"name": "v", "emptyDir": {}}] if empty_dir else []}
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


PODS = [pod("web-1"), pod("ds-1", owner="DaemonSet"), pod("solo", owner=None),
        pod("cache", empty_dir=True), pod("static", owner=None, mirror=True),
        pod("done", owner=None, phase="Succeeded")]


def names(pods: list[Obj]) -> list[str]:
    return [p["metadata"]["name"] for p in pods]


def test_drain_refuses_what_kubectl_refuses() -> None:
    got = nodes.plan(PODS, ignore_daemonsets=False, delete_emptydir_data=False, force=False)
    assert got.errors == [
        "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): default/ds-1",
        "cannot delete Pods that declare no controller (use --force to override): "
        "default/solo",
        "cannot delete Pods with local storage (use --delete-emptydir-data to override): "
        "default/cache"]
    assert names(got.evict) == ["web-1", "done"]


def test_drain_with_every_flag_moves_all_but_daemonset_and_mirror_pods() -> None:
    got = nodes.plan(PODS, ignore_daemonsets=True, delete_emptydir_data=True, force=True)
    assert got.errors == []
    assert names(got.evict) == ["web-1", "solo", "cache", "done"]
    assert got.warnings == ["ignoring DaemonSet-managed Pods: default/ds-1",
                            "deleting Pods that declare no controller: default/solo",
                            "deleting Pods with local storage: default/cache"]


def test_an_unmanaged_pod_with_local_storage_needs_both_flags() -> None:
    both = [pod("p", owner=None, empty_dir=True)]
    got = nodes.plan(both, ignore_daemonsets=False, delete_emptydir_data=False, force=True)
    assert got.evict == [] and len(got.errors) == 1 and "local storage" in got.errors[0]


def test_drain_failure_is_kubectls_report() -> None:
    assert nodes.drain_failure("n1", ["a: default/x"]) == (
        'error: unable to drain node "n1" due to error:a: default/x, continuing command...\n'
        "There are pending nodes to be drained:\n n1\na: default/x")
    assert "due to error:[a, b], continuing" in nodes.drain_failure("n1", ["a", "b"])


# ---- bad input: refused, nothing sent ----------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"servers": [f"http://127.0.0.1:{port}"],
                                      "token": "t" * 24}))
    monkeypatch.setenv("RK_CONFIG", str(config))

    def run(*args: str) -> Result:
        group = click.Group("rk", params=[click.Option(["--request-timeout"], type=float,
                                                       default=0.5)])
        kubectl.register(group, clock=lambda: datetime(2024, 5, 1, tzinfo=UTC))
        return CliRunner().invoke(group, list(args))

    return run


@pytest.mark.parametrize(("args", "message"), [
    (["rollout", "status"], "error: required resource not specified"),
    (["rollout", "status", "pod/x"], "error: no status viewer has been implemented for Pod"),
    (["rollout", "status", "deploy/a", "deploy/b"], "only supported on individual"),
    (["rollout", "status", "deploy/a", "--timeout", "soon"],
     'error: invalid argument "soon" for "--timeout" flag'),
    (["rollout", "status", "ds/a", "--revision", "2"],
     "--revision is only supported for deployments"),
    (["rollout", "status", "deploy/a", "--revision", "-1"], "--revision: must be"),
    (["rollout", "status", "nosuchkind/a"],
     'the server doesn\'t have a resource type "nosuchkind"'),
    (["rollout", "undo"], "You must provide one or more resources"),
    (["rollout", "undo", "deploy/a", "--to-revision", "-2"], "--to-revision: must be"),
    (["rollout", "history", "deploy/a", "--revision", "-2"], "--revision: must be"),
    (["rollout", "pause", "deployment"], "no name was specified"),
    (["wait", "pod/a"], "Missing option '--for'"),
    (["wait", "--for=ready", "pod/a"], 'error: unrecognized condition: "ready"'),
    (["wait", "--for=delete"], "You must provide one or more resources"),
    (["wait", "--for=delete", "pod/a", "--timeout", "1y"],
     'invalid argument "1y" for "--timeout" flag'),
    (["drain", "n1", "--timeout", "x"], 'invalid argument "x" for "--timeout" flag'),
    (["drain"], "Missing argument 'NODE'"),
    (["cordon"], "Missing argument 'NODES...'"),
    # kubectl's words for a slip in KIND/NAME, as `rk get` says them
    (["rollout", "status", "deploy/"],
     "error: arguments in resource/name form must have a single resource and name"),
    (["wait", "--for=delete", "pod/a/b"],
     "error: arguments in resource/name form must have a single resource and name"),
    (["delete", "pods/"],
     "error: arguments in resource/name form must have a single resource and name"),
    (["delete", "/a"],
     "error: arguments in resource/name form must have a single resource and name"),
])
def test_bad_input_is_refused_before_any_request(cli: Any, args: list[str],
                                                  message: str) -> None:
    result = cli(*args)
    assert result.exit_code != 0
    assert message in result.output
    assert "127.0.0.1" not in result.output  # no request was tried


def test_the_commands_are_registered() -> None:
    group = click.Group("rk")
    kubectl.register(group)
    assert {"rollout", "wait", "cordon", "uncordon", "drain"} <= set(group.commands)
    assert isinstance(group.commands["rollout"], click.Group)
    assert set(group.commands["rollout"].commands) == {"status", "history", "undo",
                                                       "restart", "pause", "resume"}
    assert rollout.RESTARTED_AT == "kubectl.kubernetes.io/restartedAt"


# ---- drain's requests, on a fake client ---------------------------------------------------


class FakeClient:
    """Just enough of RestClient for `_drain`: a node, its pods, evictions refused by a
    disruption budget `busy` times, and a record of every write."""

    def __init__(self, pods: list[Obj], *, busy: int = 0) -> None:
        self.node: Obj = {"metadata": {"name": "n1", "resourceVersion": "7"}, "spec": {}}
        self.pods = {p["metadata"]["name"]: p for p in pods}
        self.busy = busy
        self.writes: list[tuple[str, ...] | tuple[Any, ...]] = []

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Obj:
        assert kind == kinds.NODE
        return self.node

    async def patch(self, kind: kinds.Kind, namespace: str, name: str, patch: Obj) -> Obj:
        self.writes.append(("patch", kind.plural, name, patch))
        return self.node

    async def list_all(self, kind: kinds.Kind, namespace: str | None, *,
                       label_selector: str = "", field_selector: str = "") -> Any:
        wanted = field_selector.removeprefix("metadata.name=")
        if field_selector.startswith("spec.nodeName="):
            return list(self.pods.values()), "9"
        return [p for n, p in self.pods.items() if n == wanted], "9"

    async def request(self, method: str, path: str, *, body: Any = None) -> Obj:
        if self.busy:
            self.busy -= 1
            raise errors.ApiError({"code": 429, "reason": "TooManyRequests",
                                   "message": "Cannot evict pod as it would violate the "
                                              "pod's disruption budget."})
        self.writes.append((method, path, body))
        self.pods.pop(body["metadata"]["name"], None)
        return {"kind": "Status", "status": "Success"}

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *,
                     grace: int | None = None, uid: str = "") -> Obj:
        self.writes.append(("DELETE", name, grace, uid))
        self.pods.pop(name, None)
        return {}


def drain(client: FakeClient, **flags: Any) -> bool:
    from raftkube.cli.session import Session
    options = {"ignore_daemonsets": True, "delete_emptydir_data": False, "force": False,
               "grace": -1, "disable_eviction": False, **flags}
    return asyncio.run(nodes._drain(Session(client, "default"),  # type: ignore[arg-type]
                                    "n1", **options))


def test_drain_cordons_evicts_retries_a_budget_and_waits(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(nodes, "EVICT_RETRY", 0.0)
    client = FakeClient([pod("web-1"), pod("ds-1", owner="DaemonSet")], busy=2)
    assert drain(client, grace=5)
    out, err = capsys.readouterr()
    assert out == ("node/n1 cordoned\nevicting pod default/web-1\npod/web-1 evicted\n"
                   "node/n1 drained\n")
    assert err.splitlines() == [
        "Warning: ignoring DaemonSet-managed Pods: default/ds-1",
        *['error when evicting pods/"web-1" -n "default" (will retry after 0s): Cannot '
          "evict pod as it would violate the pod's disruption budget."] * 2]
    assert client.writes == [
        ("patch", "nodes", "n1", {"metadata": {"resourceVersion": "7"},
                                  "spec": {"unschedulable": True}}),
        ("POST", "/api/v1/namespaces/default/pods/web-1/eviction",
         {"apiVersion": "policy/v1", "kind": "Eviction",
          "metadata": {"name": "web-1", "namespace": "default"},
          "deleteOptions": {"gracePeriodSeconds": 5}})]


def test_drain_without_eviction_deletes(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient([pod("web-1")])
    client.node["spec"]["unschedulable"] = True
    assert drain(client, disable_eviction=True)
    assert capsys.readouterr().out == ("node/n1 already cordoned\npod/web-1 deleted\n"
                                       "node/n1 drained\n")
    assert client.writes == [("DELETE", "web-1", None, "")]


def test_a_refused_drain_evicts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    client = FakeClient([pod("web-1"), pod("solo", owner=None)])
    assert not drain(client)
    assert [w[0] for w in client.writes] == ["patch"]  # cordoned, as kubectl does
    assert "cannot delete Pods that declare no controller" in capsys.readouterr().err


def test_wait_reads_kubectls_jsonpath() -> None:
    """Filters and indexes as `-o jsonpath` reads them (one parser, cli/jsonpath.py)."""
    pod = {"status": {"phase": "Running", "conditions": [
        {"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "False"}]}}
    ready = wait.parse_for('jsonpath={.status.conditions[?(@.type=="Ready")].status}=False')
    assert wait.met(ready, pod)
    pod["status"]["conditions"][1]["status"] = "True"
    assert not wait.met(ready, pod)
    assert wait.met(wait.parse_for("jsonpath={.status.conditions[1].status}=True"), pod)
    assert not wait.met(wait.parse_for("jsonpath={.status.conditions[5].status}"), pod)


class BrokenOnce:
    """A client whose first watch breaks (a master killed mid-stream), as the transport
    reports it; the next watch, resumed from the version seen, brings the change."""

    def __init__(self) -> None:
        self.watched: list[str] = []

    async def list_all(self, kind: kinds.Kind, namespace: str | None, *,
                       label_selector: str = "", field_selector: str = "") -> Any:
        return [{"metadata": {"name": "web", "resourceVersion": "5"}, "ready": False}], "5"

    async def watch(self, kind: kinds.Kind, namespace: str | None, *,
                    resource_version: str = "", label_selector: str = "",
                    field_selector: str = "") -> Any:
        self.watched.append(resource_version)
        if len(self.watched) == 1:
            raise transport.StreamBroken("http://m1: the stream broke (Connection lost)")
        yield rest.WatchEvent("MODIFIED", {"metadata": {"name": "web",
                                                        "resourceVersion": "6"},
                                           "ready": True})


def test_a_broken_watch_is_resumed_not_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wait, "RESUME_PAUSE", 0.0)
    client = BrokenOnce()
    found = asyncio.run(asyncio.wait_for(wait.until(
        client, kinds.DEPLOYMENT, "default", "web",  # type: ignore[arg-type]
        lambda o: bool(o and o["ready"])), 5))
    assert found is not None and found["ready"]
    assert client.watched == ["5", "5"]


class BusyObject:
    """One object that a controller keeps writing: the first `busy` writes that carry a
    resourceVersion meet a newer one (409 Conflict), as while a rollout updates status."""

    def __init__(self, obj: Obj, *, busy: int) -> None:
        self.obj, self.busy = obj, busy
        self.patches: list[Obj] = []

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Obj:
        return self.obj

    async def patch(self, kind: kinds.Kind, namespace: str, name: str, patch: Obj) -> Obj:
        self.patches.append(patch)
        if self.busy:
            self.busy -= 1
            version = int(self.obj["metadata"]["resourceVersion"]) + 1
            self.obj["metadata"]["resourceVersion"] = str(version)
            raise errors.ApiError({"code": 409, "reason": "Conflict", "message":
                                   "Operation cannot be fulfilled: the object has been "
                                   "modified; please apply your changes to the latest "
                                   "version and try again"})
        return self.obj


def test_cordon_reads_again_when_the_node_changed_meanwhile(
        capsys: pytest.CaptureFixture[str]) -> None:
    client = BusyObject({"metadata": {"name": "n1", "resourceVersion": "7"}, "spec": {}},
                        busy=1)
    asyncio.run(nodes._cordon(client, "n1", True))  # type: ignore[arg-type]
    assert capsys.readouterr().out == "node/n1 cordoned\n"
    assert [p["metadata"]["resourceVersion"] for p in client.patches] == ["7", "8"]


def test_pause_reads_again_when_the_deployment_changed_meanwhile(
        capsys: pytest.CaptureFixture[str]) -> None:
    from raftkube.cli.session import Session
    client = BusyObject({"metadata": {"name": "front", "resourceVersion": "7"},
                         "spec": {}}, busy=2)
    asyncio.run(rollout._pause(Session(client, "default"),  # type: ignore[arg-type]
                               kinds.DEPLOYMENT, "front", paused=True))
    assert capsys.readouterr().out == "deployment.apps/front paused\n"
    assert [p["metadata"]["resourceVersion"] for p in client.patches] == ["7", "8", "9"]
    client = BusyObject({"metadata": {"name": "front", "resourceVersion": "7"},
                         "spec": {}}, busy=99)  # a write that never lands is reported
    with pytest.raises(errors.ClientError, match=r"\(Conflict\)"):
        asyncio.run(rollout._pause(Session(client, "default"),  # type: ignore[arg-type]
                                   kinds.DEPLOYMENT, "front", paused=True))


class GoneMeanwhile(FakeClient):
    """Pods that went away between the drain's listing and its delete: one deleted
    (404), one replaced by a new pod of its name (the uid precondition fails, 409)."""

    async def delete(self, kind: kinds.Kind, namespace: str, name: str, *,
                     grace: int | None = None, uid: str = "") -> Obj:
        self.writes.append(("DELETE", name, grace, uid))
        if name == "web-1":
            self.pods.pop(name, None)
            raise errors.ApiError({"code": 404, "reason": "NotFound",
                                   "message": f'pods "{name}" not found'})
        self.pods[name] = pod(name) | {"metadata": {"name": name, "namespace": "default",
                                                    "uid": "new"}}
        raise errors.ApiError({"code": 409, "reason": "Conflict", "message":
                               f'Operation cannot be fulfilled on pods "{name}": '
                               "Precondition failed: UID in precondition: uid-web-2, UID "
                               "in object meta: new"})


def test_drain_without_eviction_goes_past_pods_gone_meanwhile(
        capsys: pytest.CaptureFixture[str]) -> None:
    web2 = pod("web-2")
    web2["metadata"]["uid"] = "uid-web-2"
    client = GoneMeanwhile([pod("web-1"), web2])
    assert drain(client, disable_eviction=True)
    assert capsys.readouterr().out.splitlines()[1:] == [
        "pod/web-1 deleted", "pod/web-2 deleted", "node/n1 drained"]
