"""`rk apply` and `rk delete` in full on a real cluster (3 masters, 2 simulated nodes),
driven through the installed `rk` as a user runs it: URL and stdin input, --prune, dry
runs, -o, --wait on a Deployment becoming Ready (with the leader SIGKILLed during the
wait), delete's --wait, --cascade, --force and partial failures, an unreachable cluster,
and a master SIGKILLed between commands."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.harness import RK, Cluster, rk, started

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "applydel", agents=2)


def cm(name: str, **labels: str) -> str:
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"
    if labels:
        text += "  labels:\n" + "".join(f"    {k}: {v}\n" for k, v in labels.items())
    return text + "data:\n  k: v\n"


def deployment(name: str, *, replicas: int = 2, delay: int = 0) -> str:
    """Pods of the simulated runtime are ready `delay` seconds after they start."""
    probe = (f"        readinessProbe:\n          exec: {{command: [\"true\"]}}\n"
             f"          initialDelaySeconds: {delay}\n") if delay else ""
    return (f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n"
            f"  labels: {{app: {name}}}\nspec:\n  replicas: {replicas}\n"
            f"  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n"
            f"    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n"
            f"      - name: web\n        image: web:1\n{probe}")


def ok(c: Cluster, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
    got = rk(c, *args, stdin=stdin, timeout=timeout)
    assert got.returncode == 0, (args, got.stdout, got.stderr)
    return got.stdout


def not_found(c: Cluster, *args: str) -> str:
    got = rk(c, "get", *args)
    assert got.returncode == 1, (args, got.stdout)
    return got.stderr


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local web server of manifests: its base URL and its pages."""
    pages: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", pages
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_input_prune_dry_runs_and_output(cluster: Cluster,
                                         site: tuple[str, dict[str, bytes]]) -> None:
    c = cluster
    base, pages = site
    pages["/shop.yaml"] = "---\n".join(cm(n, app="shop") for n in ("a", "b", "c")).encode()
    assert ok(c, "apply", "-f", f"{base}/shop.yaml") == (
        "configmap/a created\nconfigmap/b created\nconfigmap/c created\n")
    missing = rk(c, "apply", "-f", f"{base}/nope.yaml")
    assert (missing.returncode, missing.stderr) == (
        1, f'error: unable to read URL "{base}/nope.yaml", server reported 404 Not Found, '
           "status code=404\n")
    one = json.loads(ok(c, "apply", "-f", "-", "-o", "json", stdin=cm("blog", app="blog")))
    assert (one["kind"], one["metadata"]["name"]) == ("ConfigMap", "blog")

    # Dry runs change nothing, and say so.
    assert ok(c, "apply", "-f", "-", "--dry-run=client", stdin=cm("ghost")) == (
        "configmap/ghost created (dry run)\n")
    assert ok(c, "apply", "-f", "-", "--dry-run=server", stdin=cm("ghost")) == (
        "configmap/ghost created (server dry run)\n")
    assert not_found(c, "cm", "ghost") == (
        'Error from server (NotFound): configmaps "ghost" not found\n')

    # -o: names, or the objects as the server stored them.
    assert ok(c, "apply", "-f", f"{base}/shop.yaml", "-o", "name") == (
        "configmap/a\nconfigmap/b\nconfigmap/c\n")
    listed = yaml.safe_load(ok(c, "apply", "-f", f"{base}/shop.yaml", "-o", "yaml"))
    assert listed["kind"] == "List" and all(i["metadata"].get("uid") for i in listed["items"])

    # --prune: b and c left the manifest; blog has another label.
    pages["/shop.yaml"] = cm("a", app="shop").encode()
    assert ok(c, "apply", "-f", f"{base}/shop.yaml", "--prune", "-l", "app=shop",
              "--dry-run=server") == ("configmap/a unchanged (server dry run)\n"
                                      "configmap/b pruned (server dry run)\n"
                                      "configmap/c pruned (server dry run)\n")
    assert ok(c, "apply", "-f", f"{base}/shop.yaml", "--prune", "-l", "app=shop") == (
        "configmap/a unchanged\nconfigmap/b pruned\nconfigmap/c pruned\n")
    names = set(ok(c, "get", "cm", "-o", "name").split())
    assert {"configmap/a", "configmap/blog"} <= names
    assert names.isdisjoint({"configmap/b", "configmap/c"})


def test_wait_for_a_deployment_while_the_leader_dies(cluster: Cluster) -> None:
    c = cluster
    proc = subprocess.Popen([RK, "apply", "-f", "-", "--wait", "--timeout", "90s"],
                            env={**os.environ,
                                 "RK_CONFIG": f"{c.state_dir}/config.yaml"},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(deployment("front", replicas=2, delay=2) + "---\n"
                     + "apiVersion: v1\nkind: Service\nmetadata:\n  name: front\nspec:\n"
                       "  selector: {app: front}\n  ports: [{port: 80}]\n")
    proc.stdin.close()
    proc.stdin = None  # written and closed: communicate() leaves it alone
    first = proc.stdout.readline() + proc.stdout.readline()
    # Both written, so the kill lands in the wait: a write cut off by it would have an
    # unknown outcome, which rk reports and never resends.
    assert first == "deployment.apps/front created\nservice/front created\n"
    leader = asyncio.run(leader_of(c))
    try:
        c.kill(leader)  # during the wait: its reads go to the other masters
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        c.up()  # the killed master back, for the tests after this one
    assert proc.returncode == 0, (out, err)
    lines = (first + out).splitlines()
    assert lines[:2] == ["deployment.apps/front created", "service/front created"]
    assert lines[-1] == 'deployment.apps/front: deployment "front" successfully rolled out'
    assert 'service/front: service "front" exists' in lines
    assert any("Waiting for deployment" in line or "Waiting for deployment spec" in line
               for line in lines), lines

    # A Deployment that never becomes ready: the timeout names it, exit 1.
    stuck = rk(c, "apply", "-f", "-", "--wait", "--timeout", "3s",
               stdin=deployment("stuck", replicas=1, delay=3600))
    assert stuck.returncode == 1
    assert stuck.stderr.startswith("error: timed out waiting for the condition on "
                                   'deployment.apps/stuck: Waiting for deployment "stuck" '
                                   "rollout to finish"), stuck.stderr


async def leader_of(c: Cluster) -> str:
    async with c:
        return await c.leader()


def test_delete_waits_cascades_and_goes_on_past_failures(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    c = cluster
    pod = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {}\nspec:\n"
           "  containers: [{{name: c, image: web:1}}]\n")
    ok(c, "apply", "-f", "-", "--wait", "--timeout=60s", stdin="---\n".join([
        deployment("keep", replicas=1), deployment("gone", replicas=1), pod.format("p1"),
        pod.format("p2"), cm("x"), cm("y")]))  # waited: the ReplicaSets and pods exist
    assert ok(c, "delete", "deployment", "keep", "--cascade=orphan") == (
        'deployment.apps "keep" deleted\n')
    assert ok(c, "get", "rs", "-l", "app=keep", "-o", "name").startswith(
        "replicaset.apps/keep-")  # orphaned, still there
    assert ok(c, "delete", "deployment", "gone", "--cascade=foreground",
              "--timeout=60s") == 'deployment.apps "gone" deleted\n'
    assert not_found(c, "deployment", "gone") == (
        'Error from server (NotFound): deployments.apps "gone" not found\n')

    assert ok(c, "delete", "pod", "p1", "--timeout=60s") == 'pod "p1" deleted\n'
    assert not_found(c, "pod", "p1").startswith("Error from server (NotFound)")
    forced = rk(c, "delete", "pod", "p2", "--force", "--grace-period=0")
    assert (forced.returncode, forced.stdout) == (0, 'pod "p2" force deleted\n')
    assert forced.stderr.startswith("Warning: Immediate deletion does not wait for "
                                    "confirmation that the running resource has been "
                                    "terminated.")

    good = tmp_path / "good.yaml"
    good.write_text(cm("x"))
    mixed = tmp_path / "mixed.yaml"
    mixed.write_text("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n"
                     f"---\n{cm('y')}---\n{cm('never')}")
    got = rk(c, "delete", "-f", str(good), "-f", str(mixed))
    assert got.returncode == 1
    assert got.stdout == 'configmap "x" deleted\nconfigmap "y" deleted\n'
    assert got.stderr.splitlines() == [
        f'error: resource mapping not found for name: "w" namespace: "" from "{mixed}" '
        '(document 1): no matches for kind "Widget" in version "example.com/v1"',
        f'Error from server (NotFound): error when deleting "{mixed}": configmaps "never" '
        "not found"]
    assert ok(c, "delete", "cm", "a", "--dry-run=server") == (
        'configmap "a" deleted (server dry run)\n')
    assert ok(c, "get", "cm", "a", "-o", "name") == "configmap/a\n"


def test_unreachable_cluster_and_a_master_killed_between_commands(
        cluster: Cluster, tmp_path: Path) -> None:
    c = cluster
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    config = yaml.safe_load(Path(c.state_dir, "config.yaml").read_text())
    config["servers"] = [f"https://127.0.0.1:{p}" for p in ports]
    dead = tmp_path / "dead.yaml"
    dead.write_text(yaml.safe_dump(config))
    started_at = time.monotonic()
    got = rk(dead, "--request-timeout", "1s", "get", "pods")
    assert got.returncode == 1
    assert got.stderr == (
        "error: no server answered GET /api/v1/namespaces/default/pods: "
        f"https://127.0.0.1:{ports[0]} (connection refused), "
        f"https://127.0.0.1:{ports[1]} (connection refused)\n")
    assert time.monotonic() - started_at < 15

    leader = asyncio.run(leader_of(c))
    c.kill(leader)
    try:
        assert ok(c, "apply", "-f", "-", stdin=cm("after-kill")) == (
            "configmap/after-kill created\n")
        assert ok(c, "get", "cm", "after-kill", "-o", "name") == "configmap/after-kill\n"
        assert ok(c, "delete", "cm", "after-kill") == 'configmap "after-kill" deleted\n'
    finally:
        c.up()
