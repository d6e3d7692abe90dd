"""`make demo` end to end, as a newcomer runs it: `bash scripts/demo.sh` on the local
Docker engine, in a state dir of the test's own. It must exit 0 having shown what the
README promises (replies from several pods, a new leader after the old one was killed
with the app answering throughout, a rolling update and its undo), and leave nothing
behind: no process of its cluster, and no container, network or volume labelled with
its cluster id (the demo ends with `rk down`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from raftkube.agent import dockerspec as ds

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]


def docker_lines(*args: str) -> list[str]:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60,
                         check=True)
    return out.stdout.split()


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(f"{entry}: {cmdline.decode(errors='replace')[:200]}")
    return found


def run_demo(env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """The demo in a session of its own: at the deadline the whole of it is killed."""
    proc = subprocess.Popen(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the demo took over {timeout:g}s:\n{out[-3000:]}\n{err[-2000:]}")
    return proc.returncode, out, err


def test_demo_runs_end_to_end_and_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    env = {**os.environ, "STATE": str(state), "HOME": str(tmp_path)}
    env.pop("KEEP", None)
    env.pop("RK_CONFIG", None)
    try:
        check_demo(state, *run_demo(env, 240))
    finally:  # whatever happened: the cluster goes (a no-op after the demo's own rk down)
        if (state / "cluster.yaml").exists():
            subprocess.run([sys.executable, "-m", "raftkube.cli", "down", "--state-dir",
                            str(state)], capture_output=True, timeout=120)


def check_demo(state: Path, code: int, out: str, err: str) -> None:
    cid = yaml.safe_load((state / "cluster.yaml").read_text())["cluster_id"] \
        if (state / "cluster.yaml").exists() else None
    assert code == 0, f"demo failed:\n{out[-4000:]}\n{err[-3000:]}"

    # What it showed.
    assert "cluster is up" in out and "nodes Ready: 2/2" in out
    pods = re.search(r"replies from (\d+) different pods", out)
    assert pods and int(pods.group(1)) >= 2, out
    killed = re.search(r"SIGKILL the leader, (m\d)", out)
    new = re.search(r"new leader: (m\d) \(term (\d+)\)", out)
    assert killed and new and new.group(1) != killed.group(1), out
    polled = re.search(r"(\d+) answered, (\d+) failed", out)
    assert polled and int(polled.group(1)) > 0 and polled.group(2) == "0", out
    assert out.count('deployment "hello-web" successfully rolled out') >= 2, out
    assert "rolled back" in out
    assert "runs image busybox:latest" in out and out.rstrip().endswith(
        "demo: all shown steps passed"), out
    assert out.index("runs image busybox:latest") < out.index("runs image busybox:1.36",
                                                              out.index("rolled back"))

    # And nothing left of it.
    assert cid, "the demo left no cluster.yaml to read its cluster id from"
    assert processes_mentioning(str(state)) == []
    label = f"label={ds.CLUSTER}={cid}"
    assert docker_lines("ps", "-aq", "--filter", label) == []
    assert docker_lines("network", "ls", "-q", "--filter", label) == []
    assert docker_lines("volume", "ls", "-q", "--filter", label) == []
    assert not (state / "pids").exists() or os.listdir(state / "pids") == []


POD = """apiVersion: v1
kind: Pod
metadata: {name: sleeper}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - {name: c, image: "busybox:1.36", command: [sleep, "3600"]}
"""


def rk(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftkube.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_up_again_restarts_and_down_leaves_nothing(tmp_path: Path) -> None:
    """`rk up` with its defaults but the state dir (2 Docker agents), found by `rk`
    through the ~/.raftkube/config.yaml link; a killed master restarted by `rk up`
    with its data; `rk down` waits for every process and removes every container."""
    state = tmp_path / "s"
    env = {**os.environ, "HOME": str(tmp_path)}
    env.pop("RK_CONFIG", None)
    try:
        up = rk("up", "--state-dir", str(state), env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert re.search(r"leader elected: m\d \(term \d+\)", up.stdout), up.stdout
        assert "nodes Ready: 2/2" in up.stdout
        assert f"links to {state}/config.yaml" in up.stdout
        assert os.readlink(tmp_path / ".raftkube" / "config.yaml") == f"{state}/config.yaml"
        (tmp_path / "pod.yaml").write_text(POD)
        applied = rk("apply", "-f", str(tmp_path / "pod.yaml"), env=env)
        assert applied.returncode == 0, applied.stderr
        cid = yaml.safe_load((state / "cluster.yaml").read_text())["cluster_id"]
        label = f"label={ds.CLUSTER}={cid}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(docker_lines("ps", "-q", "--filter",
                                                               label)) < 2:
            time.sleep(0.5)
        assert len(docker_lines("ps", "-q", "--filter", label)) >= 2  # sandbox + c

        m1 = int((state / "pids" / "m1.pid").read_text())
        os.kill(m1, signal.SIGKILL)
        again = rk("up", "--state-dir", str(state), env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "(started m1)" in again.stdout
        got = rk("get", "pod", "sleeper", "-o", "name", env=env)
        assert got.returncode == 0 and got.stdout.strip() == "pod/sleeper", got

        down = rk("down", "--state-dir", str(state), env=env)
        assert down.returncode == 0, down.stdout + down.stderr
        stopped = re.findall(r"^stopped (\S+): (exited after SIGTERM|killed with SIGKILL)",
                             down.stdout, re.M)
        assert sorted(name for name, _ in stopped) == ["m1", "m2", "m3", "n1", "n2"], down
        assert processes_mentioning(str(state)) == []
        assert docker_lines("ps", "-aq", "--filter", label) == []
        assert docker_lines("network", "ls", "-q", "--filter", label) == []
        assert docker_lines("volume", "ls", "-q", "--filter", label) == []
    finally:
        if (state / "cluster.yaml").exists():
            rk("down", "--state-dir", str(state), env=env)
