"""`rk up` / `rk down` without a cluster: the Docker check before anything starts, the
link that lets `rk` find the cluster, the progress lines, and `down` waiting for every
process of a member (SIGKILL after the bound, and saying so)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raftkube.cli import liveline, local
from raftkube.cli.main import main
from raftkube.client.errors import ClientError

pytestmark = pytest.mark.unit


# ---- Docker missing or silent ---------------------------------------------------------

def test_no_socket_says_how_to_get_docker(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    problem = local.docker_problem(socket_path=str(tmp_path / "docker.sock"))
    assert problem is not None
    for words in ("--runtime docker", "apt-get install docker.io", "dockerd",
                  "--runtime simulated"):
        assert words in problem


def test_a_silent_socket_is_a_problem_too(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    path = str(tmp_path / "docker.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)  # accepts, never answers
    try:
        problem = local.docker_problem(socket_path=path, timeout=0.3)
    finally:
        srv.close()
    assert problem is not None and "does not answer" in problem
    assert "--runtime simulated" in problem


def test_an_answering_engine_is_no_problem(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    path = str(tmp_path / "docker.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def answer() -> None:
        conn, _ = srv.accept()
        conn.recv(1024)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK")
        conn.close()

    t = threading.Thread(target=answer)
    t.start()
    try:
        assert local.docker_problem(socket_path=path, timeout=2) is None
    finally:
        t.join(5)
        srv.close()


def test_up_with_docker_missing_starts_nothing(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "docker_problem", lambda: "--runtime docker: no engine; "
                        "apt-get install docker.io")
    state = tmp_path / "state"
    result = CliRunner().invoke(main, ["up", "--state-dir", str(state), "--runtime", "docker"])
    assert result.exit_code == 1
    assert "apt-get install docker.io" in result.output
    assert not state.exists()  # no layout, no pid, no process


def test_a_cluster_keeps_its_number_of_masters(tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    (state / "cluster.yaml").write_text(yaml.safe_dump(
        {"cluster_id": "rk-x", "masters": [{"name": f"m{i}"} for i in (1, 2, 3)]}))
    assert local.masters_in(str(state)) == 3
    with pytest.raises(ClientError, match="--masters 5: .* has 3 masters"):
        local.up(state_dir=str(state), masters=5, agents=0)


# ---- ~/.raftkube/config.yaml ------------------------------------------------------------

def state_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir()
    (d / "cluster.yaml").write_text("masters: []\n")
    (d / "config.yaml").write_text("servers: []\n")
    return d


def test_missing_home_config_becomes_a_link(tmp_path: Path) -> None:
    home = tmp_path / "home" / ".raftkube" / "config.yaml"
    a = state_dir(tmp_path, "a")
    said = local.link_home_config(str(a), home_config=str(home))
    assert os.readlink(home) == str(a / "config.yaml")
    assert "links to" in said
    assert "links to" in local.link_home_config(str(a), home_config=str(home))  # again


def test_a_link_to_another_cluster_is_moved_and_said(tmp_path: Path) -> None:
    home = tmp_path / "config.yaml"
    a, b = state_dir(tmp_path, "a"), state_dir(tmp_path, "b")
    local.link_home_config(str(a), home_config=str(home))
    said = local.link_home_config(str(b), home_config=str(home))
    assert os.readlink(home) == str(b / "config.yaml")
    assert f"linked to {a / 'config.yaml'} before" in said


def test_a_users_own_config_is_kept(tmp_path: Path) -> None:
    home = tmp_path / "config.yaml"
    home.write_text("servers: [https://prod:6443]\ntoken: mine\n")
    a = state_dir(tmp_path, "a")
    said = local.link_home_config(str(a), home_config=str(home))
    assert home.read_text().startswith("servers: [https://prod")
    assert not home.is_symlink()
    assert f"export RK_CONFIG={a / 'config.yaml'}" in said
    other = tmp_path / "elsewhere.yaml"
    other.write_text("x: 1\n")
    link = tmp_path / "link.yaml"
    link.symlink_to(other)
    said = local.link_home_config(str(a), home_config=str(link))
    assert os.readlink(link) == str(other) and "kept" in said


# ---- progress -----------------------------------------------------------------------------

class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_rewritten_in_place_on_a_terminal() -> None:
    out = Tty()
    lines = liveline.LiveLines(out)
    lines.show("masters", "masters running: m1, m2, m3")
    lines.show("nodes", "nodes Ready: 0/2")
    lines.show("nodes", "nodes Ready: 0/2")
    lines.show("nodes", "nodes Ready: 2/2")
    lines.close()
    assert out.getvalue() == ("masters running: m1, m2, m3\nnodes Ready: 0/2"
                              "\r\x1b[Knodes Ready: 2/2\n")


def test_progress_elsewhere_is_a_line_per_change() -> None:
    out = io.StringIO()
    lines = liveline.LiveLines(out)
    for stage, line in [("leader", "leader elected: m2 (term 3)"), ("nodes", "nodes Ready: 1/2"),
                        ("nodes", "nodes Ready: 1/2"), ("nodes", "nodes Ready: 2/2")]:
        lines.show(stage, line)
    lines.close()
    assert out.getvalue().splitlines() == ["leader elected: m2 (term 3)", "nodes Ready: 1/2",
                                           "nodes Ready: 2/2"]


# ---- down ---------------------------------------------------------------------------------

# A "member" that starts a child in its process group, and both ignore SIGTERM unless
# told to exit; the name `raftkube` is in its command line, as pid_alive requires.
MEMBER = """
import os, signal, sys, time
# raftkube
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        time.sleep(600)
else:
    # exits at SIGTERM, but its child lingers a moment (a member's helper)
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), os._exit(0)))
        time.sleep(600)
        os._exit(0)
time.sleep(600)
"""


def spawn(state: Path, name: str, how: str) -> int:
    (state / "pids").mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", MEMBER, how], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local._children.append(proc)
    (state / "pids" / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def group_alive(pgid: int) -> bool:
    """Any process of the group that is not a zombie (an orphan's zombie lingers where
    PID 1 does not reap), read from /proc here rather than through local's helper."""
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def test_down_waits_for_every_process_and_says_which_were_killed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    polite, stubborn = spawn(state, "m1", "polite"), spawn(state, "n1", "stubborn")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (
            local.pid_alive(str(state / "pids" / "m1.pid"))
            and local.pid_alive(str(state / "pids" / "n1.pid"))):
        time.sleep(0.05)
    time.sleep(0.3)  # their children forked
    heard: dict[str, str] = {}
    stopped = local.down(state_dir=str(state), timeout=1.0,
                         report=lambda name, how: heard.__setitem__(name, how))
    assert stopped == ["m1", "n1"]
    assert heard["m1"] == "exited after SIGTERM"
    assert heard["n1"].startswith("killed with SIGKILL")
    assert not group_alive(polite) and not group_alive(stubborn)  # children too
    assert os.listdir(state / "pids") == []


def test_down_cli_without_a_cluster_says_so(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["down", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0
    assert "nothing to stop" in result.output
