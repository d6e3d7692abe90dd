"""`rk rollout`, `rk wait`, `rk cordon/uncordon/drain` as a user runs them, on real masters
and two simulated nodes: what they print, on which stream, their exit codes, and what
the cluster holds afterwards.

One cluster serves the module. A pod is ready its readiness probe's initialDelaySeconds
after it starts (the simulated runtime's every probe passes): `web:slow-*` takes 1 s,
`web:stuck` an hour, which is how a rollout is made to take time, or never finish.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import yaml

from raftkube.api import kinds
from raftkube.client import rest
from tests.cluster.harness import RK, Cluster, rest_client, rk, started, wait_for

pytestmark = pytest.mark.cluster

NS = "default"
Obj = dict[str, Any]
WAITING = 'Waiting for deployment "front" rollout to finish: '


def container(image: str) -> Obj:
    delay = 3600 if image.startswith("web:stuck") else 1
    return {"name": "web", "image": image,
            "readinessProbe": {"exec": {"command": ["true"]}, "initialDelaySeconds": delay}}


def deployment(name: str, image: str, *, replicas: int = 2, deadline: int = 600) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "progressDeadlineSeconds": deadline,
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container(image)]}}}}


DAEMONSET = {"apiVersion": "apps/v1", "kind": "DaemonSet",
             "metadata": {"name": "agentd", "namespace": NS},
             "spec": {"selector": {"matchLabels": {"app": "agentd"}},
                      "template": {"metadata": {"labels": {"app": "agentd"}},
                                   "spec": {"containers": [{"name": "a",
                                                            "image": "agentd:1"}]}}}}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "rollout", agents=2)


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(cluster) as client:
        yield client


def ok(c: Cluster, *args: str, stdin: str | None = None) -> str:
    done = rk(c, *args, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def refused(c: Cluster, *args: str) -> str:
    """stderr of an rk run that must fail with exit code 1 and print nothing on stdout
    but what it did before failing."""
    done = rk(c, *args)
    assert done.returncode == 1, (args, done.stdout, done.stderr)
    return done.stderr


Case = tuple[tuple[str, ...], int, str | None, str | None]


def expect(c: Cluster, *cases: Case) -> None:
    """Run the cases' rk commands side by side (they are independent; rk's start-up is
    most of their time); each must exit with its code and print exactly its stdout and
    stderr (None: not checked)."""
    env = {**os.environ, "RK_CONFIG": os.path.join(c.state_dir, "config.yaml")}
    running = [subprocess.Popen([RK, *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for args, *_ in cases]
    for (args, code, out, err), process in zip(cases, running, strict=True):
        got_out, got_err = process.communicate(timeout=90)
        got = (process.returncode, got_out if out is not None else None,
               got_err if err is not None else None)
        assert got == (code, out, err), args


def apply(c: Cluster, *objs: Obj) -> None:
    ok(c, "apply", "-f", "-", stdin=yaml.safe_dump_all(objs))


async def pods(api: rest.RestClient, app: str) -> list[Obj]:
    """The live pods of `app` (read directly: only rk's own commands are under test)."""
    items, _ = await api.list_all(kinds.POD, NS, label_selector=f"app={app}")
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


async def test_rollout_status_history_undo_restart_pause(cluster: Cluster,
                                                         api: rest.RestClient) -> None:
    c = cluster
    apply(c, deployment("front", "web:slow-1"), DAEMONSET)

    lines = ok(c, "rollout", "status", "deployment/front", "--timeout", "60s").splitlines()
    assert lines[-1] == 'deployment "front" successfully rolled out'
    assert all(line.startswith(WAITING) or "spec update to be observed" in line
               for line in lines[:-1]), lines
    expect(c, (("rollout", "status", "deploy", "front", "--watch=false"), 0,
               'deployment "front" successfully rolled out\n', ""),
           (("rollout", "status", "deploy/nosuch"), 1, "",
            'Error from server (NotFound): deployments.apps "nosuch" not found\n'))
    assert ok(c, "rollout", "status", "ds/agentd", "--timeout", "60s").splitlines()[-1] == \
        'daemon set "agentd" successfully rolled out'

    # a new image through a patch (with a change-cause), then the history
    await api.patch(kinds.DEPLOYMENT, NS, "front", {
        "metadata": {"annotations": {"kubernetes.io/change-cause": "image to 2"}},
        "spec": {"template": {"spec": {"containers": [container("web:slow-2")]}}}})
    ok(c, "rollout", "status", "deployment/front", "--timeout", "60s")
    expect(c, (("rollout", "history", "deployment/front"), 0,
               "deployment.apps/front \nREVISION  CHANGE-CAUSE\n1         <none>\n"
               "2         image to 2\n\n", ""),
           (("rollout", "history", "deploy/front", "--revision", "9"), 1, "",
            "error: unable to find the specified revision\n"),
           (("rollout", "undo", "deploy/front", "--to-revision", "9"), 1, "",
            "error: unable to find specified revision 9 in history\n"))
    one = ok(c, "rollout", "history", "deployment/front", "--revision", "1")
    assert one.startswith("deployment.apps/front with revision #1\nPod Template:\n")
    assert "    Image:\tweb:slow-1\n" in one and "\tpod-template-hash=" in one

    # undo: back to revision 1's template, which becomes revision 3
    assert ok(c, "rollout", "undo", "deployment/front") == "deployment.apps/front rolled back\n"
    ok(c, "rollout", "status", "deployment/front", "--timeout", "60s")
    d = await api.get(kinds.DEPLOYMENT, NS, "front")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "web:slow-1"
    images = {p["spec"]["containers"][0]["image"] for p in await pods(api, "front")}
    assert images == {"web:slow-1"}
    expect(c, (("rollout", "history", "deploy/front"), 0,
               "deployment.apps/front \nREVISION  CHANGE-CAUSE\n2         image to 2\n"
               "3         <none>\n\n", ""),
           (("rollout", "status", "deploy/front", "--revision", "2"), 1, "",
            "error: desired revision (2) is different from the running revision (3)\n"))

    # pause and resume, with kubectl's errors when already so
    assert ok(c, "rollout", "pause", "deployment/front") == "deployment.apps/front paused\n"
    assert (await api.get(kinds.DEPLOYMENT, NS, "front"))["spec"]["paused"] is True
    expect(c, (("rollout", "pause", "deployment/front"), 1, "",
               'error: deployments.apps "front" is already paused\n'),
           (("rollout", "restart", "deployment/front"), 1, "",
            'error: deployments.apps "front" can\'t restart paused deployment (run rollout '
            "resume first)\n"),
           (("rollout", "undo", "deployment/front"), 1, "",
            "error: you cannot rollback a paused deployment; resume it first with "
            "'rk rollout resume deployment/front' and try again\n"),
           (("rollout", "pause", "ds/agentd"), 1, "",
            'error: daemonsets.apps "agentd" pausing is not supported\n'))
    assert ok(c, "rollout", "resume", "deployment/front") == "deployment.apps/front resumed\n"
    assert refused(c, "rollout", "resume", "deployment/front") == \
        'error: deployments.apps "front" is not paused\n'

    # restart: a new template annotation, so a rollout of new pods
    before = {p["metadata"]["name"] for p in (await pods(api, "front"))}
    assert ok(c, "rollout", "restart", "deployment/front", "ds/agentd") == \
        "deployment.apps/front restarted\ndaemonset.apps/agentd restarted\n"
    d = await api.get(kinds.DEPLOYMENT, NS, "front")
    annotations = d["spec"]["template"]["metadata"]["annotations"]
    assert "kubectl.kubernetes.io/restartedAt" in annotations
    ok(c, "rollout", "status", "deployment/front", "--timeout", "60s")
    ok(c, "rollout", "status", "daemonset/agentd", "--timeout", "60s")
    assert not before & {p["metadata"]["name"] for p in (await pods(api, "front"))}

    # never ready: a timeout; past its progress deadline: kubectl's error
    apply(c, deployment("stuck", "web:stuck", replicas=1),
          deployment("late", "web:stuck", replicas=1, deadline=1))
    expect(c, (("rollout", "status", "deploy/stuck", "--timeout", "1s"), 1, None,
               "error: timed out waiting for the condition\n"),
           (("rollout", "status", "deploy/late", "--timeout", "60s"), 1, None,
            'error: deployment "late" exceeded its progress deadline\n'))
    ok(c, "delete", "deployment", "stuck", "late")
    expect(c, *((("wait", "--for=delete", "pod", "-l", f"app={app}", "--timeout", "60s"),
                 0, None, "") for app in ("stuck", "late")))


async def test_wait(cluster: Cluster, api: rest.RestClient) -> None:
    c = cluster
    apply(c, deployment("front", "web:slow-1"))
    ok(c, "rollout", "status", "deployment/front", "--timeout", "60s")
    names = sorted(p["metadata"]["name"] for p in (await pods(api, "front")))
    out = ok(c, "wait", "--for=condition=Ready", "pod", "-l", "app=front", "--timeout", "30s")
    assert sorted(out.splitlines()) == [f"pod/{n} condition met" for n in names]
    first = names[0]
    expect(c, (("wait", "--for=jsonpath={.status.phase}=Running", f"pod/{first}"), 0,
               f"pod/{first} condition met\n", ""),
           (("wait", "--for=condition=Available", "deploy/front"), 0,
            "deployment.apps/front condition met\n", ""),
           (("wait", "--for=condition=Ready=false", f"pod/{first}", "--timeout", "1s"), 1, "",
            f"error: timed out waiting for the condition on pods/{first}\n"),
           (("wait", "--for=condition=Ready=false", "pod", "-l", "app=front", "--timeout",
             "0"), 1, "", "".join(f"condition not met for pods/{n}\n" for n in names)),
           (("wait", "--for=condition=Ready", "pod/nosuch"), 1, "",
            'Error from server (NotFound): pods "nosuch" not found\n'),
           (("wait", "--for=condition=Ready", "pod", "-l", "app=nosuch"), 1, "",
            "error: no matching resources found\n"),
           (("wait", "--for=delete", "pod/nosuch"), 0, "", ""))

    # a pod deleted while rk waits for it: a finalizer holds it until rk is watching
    hold = "raftkube.test/hold"
    apply(c, {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "solo", "namespace": NS, "finalizers": [hold]},
              "spec": {"containers": [{"name": "a", "image": "x:1"}]}})
    await api.delete(kinds.POD, NS, "solo")
    assert refused(c, "wait", "--for=delete", "pod/solo", "--timeout", "1s") == \
        "error: timed out waiting for the condition on pods/solo\n"
    before = await watchers(c)
    env = {**os.environ, "RK_CONFIG": os.path.join(c.state_dir, "config.yaml")}
    with subprocess.Popen([RK, "wait", "--for=delete", "pod/solo", "--timeout", "60s"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as waiting:
        await wait_for(lambda: _more(c, before), timeout=30, what="rk wait's watch")
        await api.patch(kinds.POD, NS, "solo", {"metadata": {"finalizers": None}})
        out, err = waiting.communicate(timeout=60)
    assert (waiting.returncode, out, err) == (0, "pod/solo deleted\n", "")


async def watchers(c: Cluster) -> int:
    """Open watches on all masters (raftkube_store_watchers)."""
    total = 0
    async with c.http() as session:
        for url in c.url.values():
            async with session.get(f"{url}/metrics") as answer:
                for line in (await answer.text()).splitlines():
                    if line.startswith("raftkube_store_watchers "):
                        total += int(float(line.split()[1]))
    return total


async def _more(c: Cluster, before: int) -> bool:
    return await watchers(c) > before


async def test_cordon_drain_uncordon(cluster: Cluster, api: rest.RestClient) -> None:
    c = cluster
    apply(c, deployment("front", "web:slow-1", replicas=3), DAEMONSET,
          {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pinned", "namespace": NS},
           "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "x:1"}]}})
    ok(c, "rollout", "status", "deployment/front", "--timeout", "60s")
    ok(c, "rollout", "status", "daemonset/agentd", "--timeout", "60s")
    on_n1 = sorted(p["metadata"]["name"] for p in (await pods(api, "front"))
                   if p["spec"].get("nodeName") == "n1")
    ds_pods = {p["spec"]["nodeName"]: p["metadata"]["name"] for p in (await pods(api, "agentd"))}
    assert set(ds_pods) == {"n1", "n2"}

    assert ok(c, "cordon", "n1") == "node/n1 cordoned\n"
    assert ok(c, "cordon", "n1") == "node/n1 already cordoned\n"
    assert (await api.get(kinds.NODE, "", "n1"))["spec"]["unschedulable"] is True

    # refused: a DaemonSet's pod and a pod no controller owns; nothing is evicted
    done = rk(c, "drain", "n1", "--timeout", "60s")
    assert done.returncode == 1 and done.stdout == "node/n1 already cordoned\n"
    assert done.stderr.startswith('error: unable to drain node "n1" due to error:[')
    assert ("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
            f"default/{ds_pods['n1']}") in done.stderr
    assert ("cannot delete Pods that declare no controller (use --force to override): "
            "default/pinned") in done.stderr
    assert "There are pending nodes to be drained:\n n1\n" in done.stderr
    assert (await api.get(kinds.POD, NS, "pinned"))["metadata"]["name"] == "pinned"

    out = ok(c, "drain", "n1", "--ignore-daemonsets", "--force", "--timeout", "60s")
    lines = out.splitlines()
    assert lines[0] == "node/n1 already cordoned" and lines[-1] == "node/n1 drained"
    moved = sorted([*on_n1, "pinned"])
    assert sorted(line for line in lines if line.startswith("evicting")) == \
        [f"evicting pod default/{n}" for n in moved]
    assert sorted(line for line in lines if line.endswith(" evicted")) == \
        [f"pod/{n} evicted" for n in moved]
    # the Deployment's pods are all on n2 now, the DaemonSet's stay where they were
    ok(c, "rollout", "status", "deployment/front", "--timeout", "60s")
    assert {p["spec"].get("nodeName") for p in (await pods(api, "front"))} == {"n2"}
    assert {p["spec"]["nodeName"]: p["metadata"]["name"] for p in (await pods(api, "agentd"))} == \
        ds_pods
    assert refused(c, "get", "pod", "pinned").startswith("Error from server (NotFound)")

    assert ok(c, "uncordon", "n1") == "node/n1 uncordoned\n"
    assert ok(c, "uncordon", "n1") == "node/n1 already uncordoned\n"
    assert not (await api.get(kinds.NODE, "", "n1"))["spec"].get("unschedulable")
    assert refused(c, "cordon", "nosuch") == \
        'Error from server (NotFound): nodes "nosuch" not found\n'


async def test_rollout_status_follows_on_when_its_master_is_killed(
        cluster: Cluster, api: rest.RestClient) -> None:
    """The master serving the watch dies mid-rollout: status resumes the watch on another
    master and still sees the rollout finish (a broken stream is not the command's end)."""
    c = cluster
    apply(c, deployment("watched", "web:stuck-1", replicas=1))
    with open(os.path.join(c.state_dir, "config.yaml")) as f:
        first = yaml.safe_load(f)["servers"][0]
    serving = next(name for name, url in c.url.items() if url == first)
    proc = subprocess.Popen([RK, "rollout", "status", "deployment/watched", "--timeout",
                             "90s"], env={**os.environ, "RK_CONFIG": os.path.join(
                                 c.state_dir, "config.yaml")},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # watching now, on the first server
        assert line.startswith("Waiting for deployment"), line
        await c.kill_async(serving)
        await api.patch(kinds.DEPLOYMENT, NS, "watched", {"spec": {"template": {"spec": {
            "containers": [container("web:slow-1")]}}}})
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        await c.up_async()
    assert (proc.returncode, err) == (0, ""), (out, err)
    assert out.splitlines()[-1] == 'deployment "watched" successfully rolled out'
