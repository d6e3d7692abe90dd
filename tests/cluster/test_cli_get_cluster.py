"""`rk get` on a real cluster (3 masters, 2 simulated nodes): every -o format, `get all`,
--sort-by, kubectl's slips and exit codes, tables that match kubectl's own (when kubectl
is installed), and `-w` seeing an add, a change and a delete while the master it watches
through is SIGKILLed.

The installed `rk` runs as a user runs it. A watch is read line by line, with a deadline,
until what it should show has come; it is ended with SIGINT (kubectl exits 1 then)."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from raftkube.api import kinds
from tests.cluster.harness import RK, Cluster, rest_client, rk, started, wait_for

pytestmark = pytest.mark.cluster

KUBECTL = shutil.which("kubectl")
Obj = dict[str, Any]

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: "busybox:1"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    metadata: {annotations: {raftkube.io/sim-exit-after: "0"}}
    spec: {restartPolicy: Never, containers: [{name: c, image: "busybox:1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: broken, annotations: {raftkube.io/sim-exit-after: "0",
                                      raftkube.io/sim-exit-code: "3"}}
spec: {restartPolicy: Never, containers: [{name: c, image: "busybox:1"}]}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "get", agents=2)


def out(c: Cluster, *args: str, stdin: str | None = None) -> str:
    done = rk(c, *args, stdin=stdin)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def settled(c: Cluster) -> None:
    """Until the Deployment's two pods are ready, the Job has completed and the broken
    pod has failed (read through the API: quicker than polling with `rk`)."""
    def phase(pods: list[Obj], prefix: str) -> set[str]:
        return {str((p.get("status") or {}).get("phase")) for p in pods
                if p["metadata"]["name"].startswith(prefix)}

    async def check() -> bool:
        deployment = await api.get(kinds.DEPLOYMENT, "default", "web")
        job = await api.get(kinds.JOB, "default", "once")
        pods, _ = await api.list_all(kinds.POD, "default")
        complete = any(c.get("type") == "Complete" and c.get("status") == "True"
                       for c in (job.get("status") or {}).get("conditions") or [])
        return ((deployment.get("status") or {}).get("readyReplicas") == 2 and complete
                and phase(pods, "once-") == {"Succeeded"} and phase(pods, "broken") == {
                    "Failed"})

    async def main() -> None:
        nonlocal api
        async with rest_client(c, wait=30.0, timeout=10.0) as api:
            await wait_for(check, timeout=60, what="the app settled", every=0.2)

    api: Any = None
    asyncio.run(main())


def cells(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_formats_sorting_all_and_slips(cluster: Cluster) -> None:
    out(cluster, "apply", "-f", "-", stdin=APP)
    settled(cluster)
    wide = cells(out(cluster, "get", "pods", "-l", "app=web", "-o", "wide"))
    assert wide[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
                       "NOMINATED", "NODE", "READINESS", "GATES"]
    assert all(r[1:4] == ["1/1", "Running", "0"] and r[6] in ("n1", "n2") for r in wide[1:])
    assert len(wide) == 3
    names = out(cluster, "get", "pods", "-l", "app=web", "--sort-by=.metadata.name", "-o",
                "jsonpath={.items[*].metadata.name}").split()
    assert names == sorted(names) and len(names) == 2
    assert yaml.safe_load(out(cluster, "get", "deploy", "web", "-o", "yaml"))["kind"] == \
        "Deployment"
    listed = json.loads(out(cluster, "get", "deploy,svc", "-o", "json"))
    assert [i["kind"] for i in listed["items"]] == ["Deployment", "Service"]
    assert out(cluster, "get", "deploy/web", "svc/web", "-o", "name") == (
        "deployment.apps/web\nservice/web\n")
    custom = cells(out(cluster, "get", "pods", "-l", "app=web", "-o",
                       "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,"
                       "APP:.metadata.labels.app", "--sort-by", "{.spec.nodeName}"))
    assert custom[0] == ["NAME", "NODE", "APP"]
    assert [r[2] for r in custom[1:]] == ["web", "web"]
    assert [r[1] for r in custom[1:]] == sorted(r[1] for r in custom[1:])
    labels = cells(out(cluster, "get", "deploy", "--show-labels", "-L", "app", "--no-headers"))
    assert labels == [[*labels[0][:5], "web", "app=web"]]

    every = out(cluster, "get", "all")
    for ref in ("pod/broken", "service/web", "deployment.apps/web", "replicaset.apps/web-",
                "job.batch/once"):
        assert ref in every, (ref, every)
    assert "configmap" not in every
    job = next(line.split() for line in every.splitlines() if "job.batch/once" in line)
    assert job[:3] == ["job.batch/once", "Complete", "1/1"]  # STATUS, COMPLETIONS
    assert next(line.split() for line in every.splitlines() if "pod/broken" in line)[
        1:3] == ["0/1", "Error"]

    slips = [
        (["get"], 'You must specify the type of resource to get. Use "rk api-resources"'),
        (["get", "podz"], 'error: the server doesn\'t have a resource type "podz"\n'),
        (["get", "pods/"], "error: arguments in resource/name form must have a single "
                           "resource and name\n"),
        (["get", "pod/a", "pod", "b"], "error: there is no need to specify a resource type"),
        (["get", "pods", "-o", "xml"], 'error: unable to match a printer suitable for the '
                                       'output format "xml", allowed formats are: '),
        (["get", "pods", "nope"], 'Error from server (NotFound): pods "nope" not found\n'),
        (["get", "pods", "--sort-by=.spec.nope"],
         'error: couldn\'t find any field with path "{.spec.nope}" in the list of objects\n'),
        (["get", "pods", "-o", "jsonpath={.items[99]}"],
         'error: error executing jsonpath "{.items[99]}": array index out of bounds: '
         "index 99, length "),
        (["get", "pods", "-o", "jsonpath={.items[}"],
         "error: error parsing jsonpath {.items[}, unterminated array\n"),
    ]
    env = {**os.environ, "RK_CONFIG": os.path.join(cluster.state_dir, "config.yaml")}
    running = [subprocess.Popen([RK, *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for args, _ in slips]
    for proc, (args, stderr) in zip(running, slips, strict=True):
        stdout, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and err.startswith(stderr), (args, err)
        assert stdout == "", args
    if KUBECTL is not None:
        same_tables_as_kubectl(cluster)


KINDS = "pods,deployments,replicasets,services,jobs,daemonsets,configmaps,secrets," \
        "namespaces,nodes,endpointslices,leases,events"


TICKING = ("AGE", "DURATION", "RESTARTS", "LAST SEEN", "FIRST SEEN")


def tables(text: str) -> list[list[list[str]]]:
    """Several kinds' tables (separated by a blank line), cut where the header's columns
    start (cells may be empty), without the columns whose times tick."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        starts = [m.start() for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
        bounds = list(zip(starts, [*starts[1:], None], strict=True))
        rows = [[line[a:b].strip() for a, b in bounds] for line in lines]
        keep = [i for i, h in enumerate(rows[0]) if h not in TICKING]
        out.append([[r[i] for i in keep] for r in rows])
    return out


def same_tables_as_kubectl(cluster: Cluster) -> None:
    """Every served kind's table, wide, across namespaces: kubectl's (from the server's
    Table) and ours agree cell for cell, ticking times aside."""
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}
    args = ["get", KINDS, "-A", "-o", "wide"]
    theirs = subprocess.run([str(KUBECTL), "--request-timeout=20s", *args], env=env,
                            capture_output=True, text=True, timeout=60)
    assert theirs.returncode == 0, theirs.stderr
    ours = out(cluster, *args)
    assert tables(ours) == tables(theirs.stdout)


class Watch:
    """`rk get ... -w` in the background, its lines read as they come."""

    def __init__(self, config: str, *args: str) -> None:
        self.proc = subprocess.Popen([RK, "get", *args], env={**os.environ,
                                                               "RK_CONFIG": config},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def until(self, test: Callable[[list[str]], bool], what: str, timeout: float = 30
              ) -> None:
        deadline = time.monotonic() + timeout
        while not test(self.seen):
            try:
                self.seen.append(self.lines.get(timeout=max(0.01,
                                                            deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"rk get -w: no {what} in {self.seen}") from None

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=10)
            raise
        assert err == "", err
        self.reader.join(timeout=10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.proc.returncode


def row(*cells_: str) -> Callable[[list[str]], bool]:
    return lambda seen: any(line.split()[:len(cells_)] == list(cells_) for line in seen)


def configmap(name: str, **data: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": name, "labels": {"watched": "yes"}},
                       "data": data})


def test_watch_sees_add_change_delete_through_a_killed_master(cluster: Cluster,
                                                             tmp_path: Any) -> None:
    # Servers in a known order: the watch opens on the first, m1, which is then killed.
    with open(os.path.join(cluster.state_dir, "config.yaml")) as f:
        base = yaml.safe_load(f)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**base, "servers": [cluster.url[n]
                                                          for n in cluster.names]}))
    out(cluster, "apply", "-f", "-", stdin=configmap("w1", a="b"))
    table = Watch(str(config), "configmaps", "-w", "-l", "watched=yes")
    as_json = Watch(str(config), "cm", "--watch-only", "-o", "json", "-l", "watched=yes")
    try:
        table.until(row("NAME", "DATA", "AGE"), "header")
        table.until(row("w1", "1"), "listed row")
        assert cluster.names[0] == "m1"
        cluster.kill("m1")
        out(cluster, "apply", "-f", "-", stdin=configmap("w2", a="b", c="d"))
        table.until(row("w2", "2"), "row of an object added after the kill")
        out(cluster, "apply", "-f", "-", stdin=configmap("w1", a="b", c="d", e="f"))
        table.until(row("w1", "3"), "row of a changed object")
        out(cluster, "delete", "cm", "w2")
        table.until(lambda seen: sum(line.split()[:1] == ["w2"] for line in seen) >= 2,
                    "row of the deleted object")
        as_json.until(lambda seen: '"w1"' in "".join(seen) and '"w2"' in "".join(seen),
                      "objects as JSON")
    finally:
        codes = (table.stop(), as_json.stop())
        cluster.up()  # m1 back for whatever runs next
    assert codes == (1, 1)  # interrupted, as kubectl exits
    assert table.seen[0].split() == ["NAME", "DATA", "AGE"]
    assert not any(line.startswith("NAME") for line in table.seen[1:])
    decoder, text, objs = json.JSONDecoder(), "".join(as_json.seen), []
    while text.strip():
        obj, end = decoder.raw_decode(text.strip())
        objs.append(obj)
        text = text.strip()[end:]
    assert all(o["kind"] == "ConfigMap" for o in objs)
    assert [o["metadata"]["name"] for o in objs][:1] == ["w2"]  # watch-only: no list first
