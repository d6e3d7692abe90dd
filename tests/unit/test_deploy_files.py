"""The Vagrant path's files, checked without VMs: the Vagrantfile validates with Debian's
vagrant, every shell script passes shellcheck, and `deploy/provision.sh` refuses bad
input by name and writes units that bind the private address (in a temporary tree: no
systemd, no Debian packages, this venv's raftkube). tests/cluster/test_provision_netns.py
runs the same script in five network namespaces and starts the cluster from its units.
scripts/setup.sh installs vagrant and shellcheck.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "deploy" / "provision.sh"
MASTERS = "192.168.56.11,192.168.56.12,192.168.56.13"


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: run scripts/setup.sh (Debian's {name} package)"
    return found


def validate(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # A copy: vagrant writes .vagrant/ beside the Vagrantfile, and VAGRANT_HOME (boxes,
    # plugins) is the test's own.
    work = tmp_path / "project"
    if not work.exists():
        work.mkdir()
        shutil.copy(REPO / "Vagrantfile", work)
        shutil.copytree(REPO / "deploy", work / "deploy")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("RK_", "VAGRANT_"))}
    full.update(VAGRANT_HOME=str(tmp_path / "vagrant-home"), **env)
    return subprocess.run([tool("vagrant"), "validate", "--ignore-provider"], cwd=work,
                          env=full, capture_output=True, text=True, timeout=120)


def test_vagrantfile_validates(tmp_path: Path) -> None:
    done = validate(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("m1", "m2", "m3", "w1", "w2"):
        assert f"{name}: " in done.stdout
    assert "m4" not in done.stdout and "w3" not in done.stdout


def test_vagrantfile_refuses_a_bad_count_by_name(tmp_path: Path) -> None:
    done = validate(tmp_path, RK_MASTERS="0")
    assert done.returncode != 0
    assert "RK_MASTERS: expected a whole number from 1 to 9" in done.stdout + done.stderr


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = sorted(glob.glob(str(REPO / "deploy" / "*.sh")) +
                     glob.glob(str(REPO / "scripts" / "*.sh")))
    assert str(PROVISION) in scripts
    done = subprocess.run([tool("shellcheck"), *scripts], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def provision(tmp_path: Path, role: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
    full.update({
        "RK_SRC": str(REPO), "RK_SHARED": str(tmp_path / "shared"),
        "RK_ETC": str(tmp_path / "etc"), "RK_DATA": str(tmp_path / "data"),
        "RK_SYSTEMD_DIR": str(tmp_path / "systemd"), "RK_BIN_DIR": str(tmp_path / "bin"),
        "RK_USER": "root", "RK_USER_HOME": str(tmp_path / "home"), "RK_SKIP_APT": "1",
        "RK_PIP": "0", "RK_VENV": sys.prefix, "RK_SYSTEMD": "0", "RK_WAIT": "0",
        "RK_MASTERS_ADDRESSES": MASTERS})
    full.update(env)
    return subprocess.run(["bash", str(PROVISION), *([role] if role else [])], env=full,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("role", "env", "error"), [
    ("", {}, "usage: provision.sh master|agent"),
    ("worker", {}, "usage: provision.sh master|agent (got 'worker')"),
    ("master", {"RK_NAME": "m1"}, "RK_ADDRESS: this VM's private address is required"),
    ("master", {"RK_NAME": "m1", "RK_ADDRESS": "10.0.2.15"}, "RK_ADDRESS: 10.0.2.15 is"),
    ("master", {"RK_NAME": "m1", "RK_ADDRESS": "192.168.56.99"},
     "RK_ADDRESS: 192.168.56.99 is not in RK_MASTERS_ADDRESSES"),
    ("master", {"RK_NAME": "m1", "RK_ADDRESS": "192.168.56.12"},
     "RK_NAME: master 192.168.56.12 is m2, not m1"),
    ("agent", {"RK_NAME": "w1", "RK_ADDRESS": "192.168.56.21",
               "RK_AGENT_RUNTIME": "podman"}, "RK_AGENT_RUNTIME: docker or simulated"),
    ("agent", {"RK_NAME": "w1", "RK_ADDRESS": "192.168.56.21"},
     "no .../ready after 0s: provision m1 first"),
])
def test_provision_refuses_bad_input_by_name(tmp_path: Path, role: str,
                                             env: dict[str, str], error: str) -> None:
    done = provision(tmp_path, role, **env)
    assert done.returncode != 0
    if "..." in error:
        before, after = error.split("...")
        assert before in done.stderr and after in done.stderr, done.stderr
    else:
        assert error in done.stderr, done.stderr
    assert not (tmp_path / "systemd").exists()  # refused before writing anything


def unit_lines(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out.setdefault(key, []).append(value)
    return out


def test_provision_writes_units_on_the_private_address_once(tmp_path: Path) -> None:
    m1 = provision(tmp_path, "master", RK_NAME="m1", RK_ADDRESS="192.168.56.11")
    assert m1.returncode == 0, m1.stderr
    w2 = provision(tmp_path, "agent", RK_NAME="w2", RK_ADDRESS="192.168.56.22")
    assert w2.returncode == 0, w2.stderr
    master = unit_lines(tmp_path / "systemd" / "raftkube-master.service")
    agent = unit_lines(tmp_path / "systemd" / "raftkube-agent.service")
    rk = os.path.join(sys.prefix, "bin", "rk")
    (start,) = master["ExecStart"]
    assert start.startswith(f"{rk} master --name m1 --api 192.168.56.11:6443 "
                            "--raft 192.168.56.11:2380 --peer 192.168.56.12:2380 "
                            "--peer 192.168.56.13:2380 ")
    assert start.endswith(" $RK_MASTER_ARGS")
    (start,) = agent["ExecStart"]
    assert start.startswith(f"{rk} agent --name w2 --address 192.168.56.22 "
                            "--server https://192.168.56.11:6443 ")
    assert "--pod-cidr 10.244.2.0/24" in start and "--runtime ${RK_AGENT_RUNTIME}" in start
    assert "RK_AGENT_RUNTIME=docker" in (tmp_path / "etc" / "agent.env").read_text()
    for unit in (master, agent):
        assert unit["Restart"] == ["on-failure"]
        assert unit["WantedBy"] == ["multi-user.target"]
    assert master["RestartPreventExitStatus"] == ["3"]
    w2_token = (tmp_path / "etc" / "node-token").read_text()
    assert w2_token.endswith(",w2\n")
    assert w2_token in (tmp_path / "shared" / "node-tokens").read_text()
    config = (tmp_path / "home" / ".raftkube" / "config.yaml").read_text()
    assert "- https://192.168.56.13:6443" in config and "BEGIN CERTIFICATE" in config
    assert os.readlink(tmp_path / "bin" / "rk") == rk
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify",
                               str(tmp_path / "systemd" / "raftkube-master.service")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    made = {p: p.read_bytes() for p in sorted((tmp_path / "shared").rglob("*"))
            if p.is_file() and p.name != "ready"}
    again = provision(tmp_path, "master", RK_NAME="m1", RK_ADDRESS="192.168.56.11")
    assert again.returncode == 0, again.stderr
    assert {p: p.read_bytes() for p in made} == made  # secrets and certificates kept
    assert "issued" not in again.stderr and again.stderr.count("kept") == 3
