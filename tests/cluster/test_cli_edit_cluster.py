"""`rk create/replace/edit`, `rk patch/label/annotate/scale/set image` and `rk diff` as a
user runs them (the installed `rk`, one process per command) against real masters and
simulated nodes: what each prints, its errors on stderr in kubectl's words, its exit
code, what the cluster then holds, and that a refused command changed nothing.

One cluster serves the module; each test names its own objects. Commands that do not
depend on each other run side by side (each `rk` process costs about a second)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.client import errors, rest
from tests.cluster.harness import Cluster, rest_client, rk, started

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]
NS = "default"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and 2 simulated nodes, for the whole module."""
    yield from started(tmp_path_factory, "edit", agents=2)


def deployment(name: str, *, replicas: int = 1, image: str = "busybox:1") -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "web", "image": image}]}}}})


def configmap(name: str, **data: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": data})


async def run(c: Cluster, *args: str, env: dict[str, str] | None = None,
              ) -> subprocess.CompletedProcess[str]:
    """`rk ARGS` in a thread, so that independent commands overlap."""
    if env is None:
        return await asyncio.to_thread(rk, c, *args)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # rk() passes os.environ on; no other test thread runs now
    try:
        return await asyncio.to_thread(rk, c, *args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.args, done.stdout, done.stderr)
    return done.stdout


def failed(done: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert done.returncode == code, (done.args, done.stdout, done.stderr)
    return done.stderr


async def get(api: rest.RestClient, kind: kinds.Kind, name: str) -> Obj:
    return await api.get(kind, NS if kind.namespaced else "", name)


async def missing(api: rest.RestClient, kind: kinds.Kind, name: str) -> bool:
    try:
        await get(api, kind, name)
    except errors.ApiError as e:
        return e.code == 404
    return False


EDITOR = """\
import sys
path = sys.argv[1]
text = open(path).read()
if "was not valid" in text:
    text = text.replace("replicas: -1", "replicas: 3")
elif "replicas: 2" in text:
    text = text.replace("replicas: 2", "replicas: -1")
open(path, "w").write(text)
"""


async def test_create_replace_and_edit(cluster: Cluster, tmp_path: Path) -> None:
    async with cluster as c, rest_client(c) as api:
        await c.leader()
        both = tmp_path / "both.json"
        both.write_text(deployment("front") + "\n" + configmap("cfg", a="1"))
        out = ok(await run(c, "create", "-f", str(both)))
        assert out == "deployment.apps/front created\nconfigmap/cfg created\n"
        ok_web, again, dry, bad_gen = await asyncio.gather(
            run(c, "create", "deployment", "web", "--image=busybox:1", "-o", "name"),
            run(c, "create", "-f", str(both)),
            run(c, "create", "configmap", "dry", "--from-literal=a=1", "--dry-run=server"),
            run(c, "create", "configmap", "bad", "--from-literal=a"))
        assert ok(ok_web) == "deployment.apps/web\n"
        assert failed(again).splitlines() == [
            f'Error from server (AlreadyExists): error when creating "{both}": '
            'deployments.apps "front" already exists',
            f'Error from server (AlreadyExists): error when creating "{both}": '
            'configmaps "cfg" already exists']
        assert ok(dry) == "configmap/dry created (server dry run)\n"
        assert failed(bad_gen) == "error: invalid literal source a, expected key=value\n"
        assert await missing(api, kinds.CONFIGMAP, "dry")
        assert await missing(api, kinds.CONFIGMAP, "bad")
        assert (await get(api, kinds.DEPLOYMENT, "web"))["spec"]["template"]["spec"][
            "containers"][0]["image"] == "busybox:1"

        # replace: a PUT of the whole object with the live version; a missing one is
        # kubectl's NotFound, with the file.
        two = tmp_path / "two.json"
        two.write_text(deployment("front", replicas=2))
        gone = tmp_path / "gone.json"
        gone.write_text(deployment("gone"))
        replaced, not_there = await asyncio.gather(run(c, "replace", "-f", str(two)),
                                                   run(c, "replace", "-f", str(gone)))
        assert ok(replaced) == "deployment.apps/front replaced\n"
        assert failed(not_there) == (
            f'Error from server (NotFound): error when replacing "{gone}": '
            'deployments.apps "gone" not found\n')
        front = await get(api, kinds.DEPLOYMENT, "front")
        assert front["spec"]["replicas"] == 2
        web = await get(api, kinds.DEPLOYMENT, "web")
        forced = tmp_path / "web.json"
        forced.write_text(deployment("web", replicas=2))
        assert ok(await run(c, "replace", "--force", "-f", str(forced))) == (
            'deployment.apps "web" deleted\ndeployment.apps/web replaced\n')
        new_web = await get(api, kinds.DEPLOYMENT, "web")
        assert new_web["metadata"]["uid"] != web["metadata"]["uid"]
        assert new_web["spec"]["replicas"] == 2

        # edit: a refusal re-opens the file with the server's reasons; fixed, it is sent.
        script = tmp_path / "editor.py"
        script.write_text(EDITOR)
        done = await run(c, "edit", "deploy/front",
                         env={"EDITOR": f"{sys.executable} {script}", "RK_EDITOR": "",
                              "KUBE_EDITOR": ""})
        assert ok(done) == "deployment.apps/front edited\n"
        assert done.stderr == 'error: deployments.apps "front" is invalid\n'
        assert (await get(api, kinds.DEPLOYMENT, "front"))["spec"]["replicas"] == 3
        done = await run(c, "edit", "deploy/front", env={"EDITOR": "true", "RK_EDITOR": "",
                                                         "KUBE_EDITOR": ""})
        assert (done.returncode, done.stderr) == (0, "Edit cancelled, no changes made.\n")


async def test_patch_label_annotate_scale_and_set_image(cluster: Cluster,
                                                        tmp_path: Path) -> None:
    async with cluster as c, rest_client(c) as api:
        await c.leader()
        f = tmp_path / "d.json"
        f.write_text(deployment("pat", replicas=1))
        ok(await run(c, "apply", "-f", str(f)))
        before = await get(api, kinds.DEPLOYMENT, "pat")

        patched, nope, invalid, labeled = await asyncio.gather(
            run(c, "patch", "deploy", "pat", "-p", '{"metadata":{"labels":{"tier":"web"}}}'),
            run(c, "patch", "deploy/nope", "-p", "{}"),
            run(c, "patch", "deploy/pat", "-p", '{"spec":{"replicas":-1}}'),
            run(c, "annotate", "deploy/pat", "owner=team a"))
        assert ok(patched) == "deployment.apps/pat patched\n"
        assert failed(nope) == 'Error from server (NotFound): deployments.apps "nope" not found\n'
        assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in \
            failed(invalid)
        assert ok(labeled) == "deployment.apps/pat annotated\n"
        same, clash, reannotate = await asyncio.gather(  # none of them changes anything
            run(c, "patch", "deploy/pat", "--type=merge", "-p",
                "metadata: {labels: {tier: web}}"),
            run(c, "label", "deploy/pat", "tier=db"),
            run(c, "annotate", "deploy/pat", "owner=other"))
        assert ok(same) == "deployment.apps/pat patched (no change)\n"
        assert failed(clash) == ("error: 'tier' already has a value (web), and --overwrite "
                                 "is false\n")
        relabel = await run(c, "label", "deploy", "pat", "tier=db", "extra=1", "--overwrite")
        assert ok(relabel) == "deployment.apps/pat labeled\n"
        assert failed(reannotate) == (
            "error: --overwrite is false but found the following declared annotation(s): "
            "'owner' already has a value (team a)\n")
        pat = await get(api, kinds.DEPLOYMENT, "pat")
        assert pat["metadata"]["labels"] == {"tier": "db", "extra": "1"}
        assert pat["metadata"]["annotations"]["owner"] == "team a"
        assert pat["spec"]["replicas"] == before["spec"]["replicas"] == 1

        scaled, wrong_current, image, no_container = await asyncio.gather(
            run(c, "scale", "deploy/pat", "--replicas", "2"),
            run(c, "scale", "deploy/pat", "--replicas", "4", "--current-replicas", "7"),
            run(c, "set", "image", "deployment/pat", "web=busybox:2"),
            run(c, "set", "image", "deployment/pat", "sidecar=busybox:2"))
        assert ok(scaled) == "deployment.apps/pat scaled\n"
        assert failed(wrong_current).startswith("error: Expected replicas to be 7, was ")
        assert ok(image) == "deployment.apps/pat image updated\n"
        assert failed(no_container) == 'error: unable to find container named "sidecar"\n'
        pat = await get(api, kinds.DEPLOYMENT, "pat")
        assert pat["spec"]["replicas"] == 2
        assert pat["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:2"
        unlabeled, bad_scale = await asyncio.gather(
            run(c, "label", "deploy/pat", "extra-"),
            run(c, "scale", "deploy/pat", "--replicas", "-3"))
        assert ok(unlabeled) == "deployment.apps/pat unlabeled\n"
        assert "The --replicas=COUNT flag is required" in failed(bad_scale)
        assert (await get(api, kinds.DEPLOYMENT, "pat"))["spec"]["replicas"] == 2


async def test_diff_shows_what_apply_would_change(cluster: Cluster, tmp_path: Path) -> None:
    async with cluster as c, rest_client(c) as api:
        await c.leader()
        f = tmp_path / "d.json"
        f.write_text(deployment("dif", replicas=1))
        new = await run(c, "diff", "-f", str(f))
        assert new.returncode == 1, new.stderr
        assert new.stdout.startswith("diff -u -N LIVE/apps.v1.Deployment.default.dif "
                                     "MERGED/apps.v1.Deployment.default.dif\n")
        assert "+  replicas: 1\n" in new.stdout
        assert await missing(api, kinds.DEPLOYMENT, "dif")  # a server dry run
        ok(await run(c, "apply", "-f", str(f)))
        changed = tmp_path / "changed.json"
        changed.write_text(deployment("dif", replicas=3))
        bad = tmp_path / "bad.json"
        bad.write_text(deployment("dif", replicas=-2))
        same, differs, refused, no_file = await asyncio.gather(
            run(c, "diff", "-f", str(f)), run(c, "diff", "-f", str(changed)),
            run(c, "diff", "-f", str(bad)), run(c, "diff", "-f", str(tmp_path / "no.json")))
        assert (same.returncode, same.stdout, same.stderr) == (0, "", "")
        assert differs.returncode == 1, differs.stderr
        assert "-  replicas: 1\n+  replicas: 3\n" in differs.stdout
        assert "resourceVersion" not in differs.stdout
        assert "spec.replicas" in failed(refused, 2)
        assert "does not exist" in failed(no_file, 2)
        assert (await get(api, kinds.DEPLOYMENT, "dif"))["spec"]["replicas"] == 1
