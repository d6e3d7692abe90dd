"""The real kubectl, unchanged, reading and entering pods that run on Docker: `kubectl logs`
(a container, `--tail`, `-f` while the container writes and until it ends, `--previous`
after a restart) and `kubectl exec` (output, exit codes, stdin, `-c`, a TTY, `kubectl cp`),
through the masters' relay to the agent, over HTTPS with the kubeconfig `rk up` writes.

kubectl 1.30 and later speak exec over WebSocket (`v5.channel.k8s.io`), and fall back to
SPDY only when the WebSocket handshake fails. `/usr/bin/kubectl` on these machines is
google-cloud-sdk's dispatcher, which runs the kubectl.1.NN of the server's version (1.30
for `v1.30.0-raftkube`); kubectl 1.32 is run directly too. kubectl before 1.30 speaks
SPDY only, which raftkube does not: it gets a `Status` that says so.

One cluster (3 masters, one Docker agent with a crash back-off from 1 s) and one set of
pods serve the module. Every kubectl run is bounded (`--request-timeout` and a
subprocess timeout); a follow is read line by line until what it should show has come.
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

from tests.cluster.harness import Cluster
from tests.docker import conftest

DISPATCHER = shutil.which("kubectl")
SDK = "/usr/lib/google-cloud-sdk/bin"
KUBECTLS = [k for k in (DISPATCHER, f"{SDK}/kubectl.1.32") if k and os.access(k, os.X_OK)]
SPDY_ONLY = f"{SDK}/kubectl.1.29"
IMAGE = "busybox:1.36"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(240),
              pytest.mark.skipif(not KUBECTLS, reason="kubectl is not installed")]

Obj = dict[str, Any]

TALK = ('echo "to stderr" >&2; sleep 1; '
        'for i in 0 1 2; do echo "line $i"; done; exec sleep 3600')
TICK = 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.3; done'
CRASH = 'echo "run at $(date +%s%N)"; sleep 1; exit 1'
SHORT = 'echo first; sleep 3; echo last'


class Kubectl:
    """One kubectl binary with the cluster's kubeconfig and a discovery cache of its
    own, so that nothing outside the test's directory is read or written."""

    def __init__(self, binary: str, kubeconfig: str, cache: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}
        self.base = [binary, f"--cache-dir={cache}", "--request-timeout=20s"]

    def run(self, *args: str, stdin: str | bytes | None = None, timeout: float = 30,
            text: bool = True) -> subprocess.CompletedProcess[Any]:
        return subprocess.run([*self.base, *args], input=stdin, capture_output=True,
                              text=text, env=self.env, timeout=timeout)

    def __call__(self, *args: str, **kw: Any) -> str:
        done = self.run(*args, **kw)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        out: str = done.stdout
        return out

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*self.base, *args], env=self.env, **kw)


def sh(name: str, script: str) -> Obj:
    return {"name": name, "image": IMAGE, "command": ["sh", "-c", script]}


def pod(name: str, *containers: Obj, restart: str = "Always") -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": restart, "containers": list(containers)}}


@pytest.fixture(scope="module")
def kcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and one Docker agent (n1); its processes and containers go at the end."""
    conftest.engine().close()
    c = Cluster(str(tmp_path_factory.mktemp("kubectl-docker")))
    try:
        conftest.start(c, 1)
        yield c
    finally:
        conftest.stop(c)


@pytest.fixture(scope="module")
def kubectls(kcluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> list[Kubectl]:
    kubeconfig = os.path.join(kcluster.state_dir, "kubeconfig")
    assert os.path.exists(kubeconfig), "rk up wrote no DIR/kubeconfig"
    return [Kubectl(k, kubeconfig, tmp_path_factory.mktemp("kube-cache")) for k in KUBECTLS]


@pytest.fixture(scope="module")
def pods(kubectls: list[Kubectl]) -> Kubectl:
    """The module's pods, created with kubectl and waited for; the first kubectl."""
    kubectl = kubectls[0]
    docs = [pod("talk", sh("c", TALK), sh("d", "echo from d; exec sleep 3600"),
                sh("t", TICK)),
            pod("crash", sh("crash", CRASH))]
    kubectl("apply", "--validate=false", "-f", "-",
            stdin=yaml.safe_dump_all(docs))
    wait_for_pods(kubectl, lambda items: all(
        _running(items.get(name)) for name in ("talk", "crash")))
    return kubectl


def _running(p: Obj | None) -> bool:
    statuses = ((p or {}).get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def _restarted(p: Obj | None) -> bool:
    return any(s.get("restartCount", 0) >= 1
               for s in ((p or {}).get("status") or {}).get("containerStatuses") or [])


def wait_for_pods(kubectl: Kubectl, test: Any, *, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        items = {p["metadata"]["name"]: p
                 for p in json.loads(kubectl("get", "pods", "-o", "json"))["items"]}
        if test(items):
            return
        assert time.monotonic() < deadline, json.dumps(
            {n: p.get("status") for n, p in items.items()}, indent=1)
        time.sleep(0.3)


def wait_for_output(kubectl: Kubectl, *args: str, want: str, timeout: float = 30) -> str:
    """`kubectl ARGS` once its output holds `want` (a container writes when it will)."""
    deadline = time.monotonic() + timeout
    while True:
        done = kubectl.run(*args)
        if done.returncode == 0 and want in done.stdout:
            out: str = done.stdout
            return out
        assert time.monotonic() < deadline, (args, done.stdout, done.stderr)
        time.sleep(0.3)


def read_lines(proc: subprocess.Popen[bytes], until: Any, timeout: float) -> list[str]:
    """Lines of a running kubectl's output until `until(lines)` holds, or the deadline."""
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode(errors="replace").rstrip("\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not until(seen):
        left = deadline - time.monotonic()
        assert left > 0, seen
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
    return seen


# ---- logs ---------------------------------------------------------------------------


def test_kubectl_logs_of_a_container_with_tail(kubectls: list[Kubectl],
                                                pods: Kubectl) -> None:
    for kubectl in kubectls:
        # The engine keeps stderr and stdout apart: only the pause orders them here.
        out = wait_for_output(kubectl, "logs", "talk", want="line 2")
        assert out.splitlines() == ["to stderr", "line 0", "line 1", "line 2"]
        defaulted = kubectl.run("logs", "talk")
        assert 'Defaulted container "c" out of: c, d, t' in defaulted.stderr
        assert kubectl("logs", "talk", "-c", "d") == "from d\n"
        assert kubectl("logs", "talk", "-c", "c", "--tail", "2") == "line 1\nline 2\n"
        assert kubectl("logs", "pod/talk", "-c", "d", "--prefix") == "[pod/talk/d] from d\n"
        stamped = kubectl("logs", "talk", "-c", "d", "--timestamps")
        assert stamped.endswith(" from d\n") and stamped[:4].isdigit(), stamped


def test_kubectl_logs_follow_sees_new_lines_and_ends_with_the_container(
        kubectls: list[Kubectl], pods: Kubectl) -> None:
    for kubectl in kubectls:
        # A container that goes on writing: follow until new lines came, then stop.
        with kubectl.popen("logs", "-f", "talk", "-c", "t", "--tail", "1",
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
            try:
                seen = read_lines(proc, lambda lines: len(lines) >= 3, timeout=20)
            finally:
                proc.kill()
        numbers = [int(line.split()[1]) for line in seen]
        assert len(seen) == 3 and numbers == sorted(numbers), seen
    # A container that ends: the follow ends with it, and kubectl succeeds.
    pods("apply", "--validate=false", "-f", "-",
         stdin=yaml.safe_dump(pod("short", sh("short", SHORT), restart="Never")))
    wait_for_pods(pods, lambda items: _running(items.get("short")))
    done = pods.run("logs", "-f", "short", timeout=60)
    assert (done.returncode, done.stdout) == (0, "first\nlast\n"), done.stderr


# ---- exec ---------------------------------------------------------------------------


def test_kubectl_exec_output_exit_codes_stdin_and_containers(
        kubectls: list[Kubectl], pods: Kubectl) -> None:
    for kubectl in kubectls:
        assert kubectl("exec", "talk", "-c", "c", "--", "sh", "-c", "echo hi") == "hi\n"
        both = kubectl.run("exec", "talk", "-c", "d", "--", "sh", "-c",
                           "echo out; echo err >&2; exit 3")
        assert (both.returncode, both.stdout) == (3, "out\n"), both.stderr
        assert "err\n" in both.stderr
        assert "command terminated with exit code 3" in both.stderr
        upper = kubectl.run("exec", "-i", "talk", "-c", "c", "--", "tr", "a-z", "A-Z",
                            stdin="piped through\nand on\n")
        assert (upper.returncode, upper.stdout) == (0, "PIPED THROUGH\nAND ON\n"), upper
        # Without -c: the first container, as kubectl says.
        host = kubectl.run("exec", "talk", "--", "hostname")
        assert (host.returncode, host.stdout) == (0, "talk\n"), host.stderr
        assert 'Defaulted container "c" out of: c, d, t' in host.stderr
        # Each container is its own: d's files are not c's.
        kubectl("exec", "talk", "-c", "d", "--", "sh", "-c", "echo mine > /tmp/whose")
        assert kubectl("exec", "talk", "-c", "d", "--", "cat", "/tmp/whose") == "mine\n"
        assert kubectl.run("exec", "talk", "-c", "c", "--", "cat",
                           "/tmp/whose").returncode == 1
    # Every master relays: kubeconfig has a context per master.
    for master in ("m1", "m2", "m3"):
        assert pods("--context", f"raftkube-{master}", "exec", "talk", "-c", "c", "--",
                    "echo", master) == f"{master}\n"
        assert pods("--context", f"raftkube-{master}", "logs", "talk", "-c", "d") == \
            "from d\n"


def test_kubectl_exec_binary_stdin_cp_and_a_tty(
        kubectls: list[Kubectl], pods: Kubectl, tmp_path: Path) -> None:
    blob = os.urandom(300_000)
    for kubectl in kubectls:
        echoed = kubectl.run("exec", "-i", "talk", "-c", "c", "--", "cat", stdin=blob,
                             text=False)
        assert echoed.returncode == 0 and echoed.stdout == blob, echoed.stderr[-500:]

        # kubectl cp is tar over exec, both ways.
        (tmp_path / "up.bin").write_bytes(blob)
        kubectl("cp", str(tmp_path / "up.bin"), "talk:/tmp/up.bin", "-c", "c")
        kubectl("cp", "talk:/tmp/up.bin", str(tmp_path / "down.bin"), "-c", "c")
        assert (tmp_path / "down.bin").read_bytes() == blob

        # -it: kubectl needs a terminal on its stdin; a pseudo-terminal is one.
        primary, secondary = os.openpty()
        try:
            os.write(primary, b"echo $((6*7)) answered\nexit 5\n")
            proc = kubectl.popen("exec", "-it", "talk", "-c", "c", "--", "sh",
                                 stdin=secondary, stdout=secondary, stderr=secondary)
            code = proc.wait(timeout=30)
            os.close(secondary)
            secondary = -1
            out = b""
            while True:
                try:
                    chunk = os.read(primary, 65536)
                except OSError:  # EIO: every writer of the terminal is gone
                    break
                if not chunk:
                    break
                out += chunk
        finally:
            if secondary >= 0:
                os.close(secondary)
            os.close(primary)
        assert code == 5, out
        assert b"42 answered" in out and b"command terminated with exit code 5" in out, out


def test_kubectl_errors_name_the_pod_or_the_container(
        kubectls: list[Kubectl], pods: Kubectl) -> None:
    for kubectl in kubectls:
        missing = kubectl.run("exec", "ghost", "--", "true")
        assert missing.returncode == 1
        assert 'Error from server (NotFound): pods "ghost" not found' in missing.stderr
        # Refused before the upgrade, as Kubernetes' API server refuses it; kubectl
        # retries with SPDY, gets the same Status and prints it.
        bad = kubectl.run("exec", "talk", "-c", "zz", "--", "true")
        assert bad.returncode == 1
        assert "Error from server (BadRequest): container zz is not valid for pod " \
               "talk" in bad.stderr, bad.stderr
        # As with Kubernetes on Docker: the engine's message (on stdout, where the
        # engine writes it) and a shell's "cannot execute" code.
        nothing = kubectl.run("exec", "talk", "-c", "c", "--", "/no/such/binary")
        assert nothing.returncode == 126, nothing
        assert "no such file or directory" in nothing.stdout + nothing.stderr
        assert "command terminated with exit code 126" in nothing.stderr

        gone = kubectl.run("logs", "ghost")
        assert gone.returncode == 1 and 'pods "ghost" not found' in gone.stderr
        wrong = kubectl.run("logs", "talk", "-c", "zz")
        assert wrong.returncode == 1
        assert "container zz is not valid for pod talk" in wrong.stderr
        first = kubectl.run("logs", "talk", "-c", "d", "--previous")
        assert first.returncode == 1
        assert 'Error from server (BadRequest): previous terminated container "d" in pod ' \
               '"talk" not found' in first.stderr, first.stderr


def test_kubectl_logs_previous_after_a_restart(kubectls: list[Kubectl],
                                               pods: Kubectl) -> None:
    """Last in the module, so that the other tests pass the time of the back-off."""
    wait_for_pods(pods, lambda items: _restarted(items.get("crash")))
    for kubectl in kubectls:
        previous = kubectl("logs", "crash", "--previous")
        current = kubectl("logs", "crash")
        assert previous.startswith("run at ") and previous != current, (previous, current)


@pytest.mark.skipif(not os.access(SPDY_ONLY, os.X_OK), reason="no kubectl 1.29 here")
def test_kubectl_before_1_30_is_told_that_spdy_is_not_spoken(
        pods: Kubectl, tmp_path: Path) -> None:
    old = Kubectl(SPDY_ONLY, pods.env["KUBECONFIG"], tmp_path)
    done = old.run("exec", "talk", "-c", "c", "--", "true")
    assert done.returncode == 1
    assert "SPDY is not spoken here: use kubectl 1.30 or later" in done.stderr, done.stderr
