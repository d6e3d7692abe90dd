"""The Vagrant path without VMs: `deploy/provision.sh` in five stand-in machines.

VMs cannot boot on this machine, so each VM of the Vagrantfile (m1..m3, w1, w2) is a
network namespace with its address on one bridge (10.213.N.0/24 standing in for
192.168.56.0/24), and everything it runs runs in its own mount namespace in which
/etc/systemd/system, /etc/raftkube, /var/lib/raftkube and /vagrant are its own (bind
mounts of per-VM directories; /vagrant is one copy of the repository that every "VM"
shares, as the synced folder is). The scripts run with their default paths; only what
would touch this machine's own files is redirected (RK_BIN_DIR, RK_USER_HOME), no
Debian packages are installed (RK_SKIP_APT=1), and raftkube is this test's venv
(RK_VENV, RK_PIP=0: no network).

systemd is absent: every daemon is started from the exact `ExecStart=` line of the unit
that provision.sh wrote, its variables expanded from the unit's EnvironmentFile as
systemd would. The agents run `--runtime simulated` (RK_AGENT_RUNTIME=simulated, which
provision.sh writes into agent.env; the unit's default is docker): Docker's engine and
its bridge live in this machine's own network namespace, not in a stand-in VM's.

The bridge lives in a namespace of its own ("the switch"), so this machine's firewall
(Docker's FORWARD policy is DROP for bridged packets) never sees the VMs' traffic; this
process reaches the masters through one more veth into that switch.

Then: a leader, both workers Ready through `rk get nodes` as the vagrant user's config
makes it, the leader killed, and the cluster still answering (reads and a write) through
the survivors; provisioning again changes no secret; the killed master started again
catches up (`vagrant halt -f`, `vagrant up`); and a master whose "disk" is wiped is
removed, added, provisioned again with RK_JOIN=1 and catches up (`vagrant destroy -f`).
Every process, namespace, link and mount point made here is removed, pass or fail (the
mounts live only in the namespaces of processes that are killed).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from raftkube.store.replica import member_id

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(360)]

REPO = Path(__file__).resolve().parents[2]
# Inside a VM's mount namespace: VM path -> its directory under the VM's root.
BINDS = {"/etc/systemd/system": "systemd", "/etc/raftkube": "etc",
         "/var/lib/raftkube": "data"}
API_PORT = 6443


def sh(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr.strip()}"


@dataclass
class Vm:
    name: str
    role: str  # master or agent
    address: str
    netns: str
    root: Path  # systemd/, etc/, data/, bin/, home/
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def wrap(self, shared: Path, argv: list[str]) -> list[str]:
        """`argv` in this VM: its network namespace, and a mount namespace of its own."""
        binds = [(str(self.root / sub), vm_path) for vm_path, sub in BINDS.items()]
        binds.append((str(shared), "/vagrant"))
        script = " && ".join(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}"
                             for src, dst in binds) + ' && exec "$@"'
        return ["ip", "netns", "exec", self.netns, "unshare", "--mount",
                "--propagation", "private", "sh", "-c", script, "sh", *argv]

    def user_env(self) -> dict[str, str]:
        """The environment of the vagrant user's shell: its home, `rk` on PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
        env["HOME"] = str(self.root / "home")
        env["PATH"] = f"{self.root / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin"
        return env


@dataclass
class Lab:
    subnet: str  # "10.213.N"
    shared: Path
    vms: dict[str, Vm]


def _free_subnet() -> str:
    used = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True).stdout
    for n in random.sample(range(1, 250), 249):
        if f"10.213.{n}." not in used:
            return f"10.213.{n}"
    raise RuntimeError("no free 10.213.N.0/24")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:5]
    subnet = _free_subnet()
    switch, host_if = f"rkvg{tag}-sw", f"rkvg{tag}h"
    shared = tmp_path / "vagrant"
    shutil.copytree(REPO, shared, ignore=shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", ".mypy_cache", ".ruff_cache",
        ".pytest_cache", ".hypothesis", ".state", "build", ".raftkube-cluster"))
    specs = [(f"m{i}", "master", f"{subnet}.{10 + i}") for i in (1, 2, 3)] + \
        [(f"w{i}", "agent", f"{subnet}.{20 + i}") for i in (1, 2)]
    vms = {name: Vm(name, role, addr, f"rkvg{tag}-{name}", tmp_path / "vm" / name)
           for name, role, addr in specs}
    made_dirs: list[str] = []
    namespaces: list[str] = []
    try:
        for vm_path in [*BINDS, "/vagrant"]:
            if not os.path.isdir(vm_path):  # a mount point; removed again below
                os.makedirs(vm_path)
                made_dirs.append(vm_path)
        sh("ip", "netns", "add", switch)
        namespaces.append(switch)
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", "up0")
        sh("ip", "link", "set", "up0", "netns", switch)
        sh("ip", "-n", switch, "link", "set", "up0", "master", "br0", "up")
        sh("ip", "addr", "add", f"{subnet}.1/24", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        for i, vm in enumerate(vms.values()):
            for sub in (*BINDS.values(), "bin", "home"):
                (vm.root / sub).mkdir(parents=True)
            sh("ip", "netns", "add", vm.netns)
            namespaces.append(vm.netns)
            sh("ip", "-n", switch, "link", "add", f"port{i}", "type", "veth",
               "peer", "name", "eth1", "netns", vm.netns)
            sh("ip", "-n", switch, "link", "set", f"port{i}", "master", "br0", "up")
            sh("ip", "-n", vm.netns, "addr", "add", f"{vm.address}/24", "dev", "eth1")
            sh("ip", "-n", vm.netns, "link", "set", "eth1", "up")
            sh("ip", "-n", vm.netns, "link", "set", "lo", "up")
        yield Lab(subnet, shared, vms)
    finally:
        for vm in vms.values():
            for proc in vm.procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for ns in namespaces:  # anything else still running in a namespace
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        subprocess.run(["ip", "link", "delete", host_if], capture_output=True)
        for ns in reversed(namespaces):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        for d in reversed(made_dirs):
            try:
                os.rmdir(d)
            except OSError:
                pass


def provision_env(lab: Lab, vm: Vm) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RK_")}
    masters = ",".join(v.address for v in lab.vms.values() if v.role == "master")
    env.update({
        "RK_NAME": vm.name, "RK_ADDRESS": vm.address, "RK_MASTERS_ADDRESSES": masters,
        "RK_WORKERS": "w1,w2", "RK_SKIP_APT": "1", "RK_PIP": "0", "RK_VENV": sys.prefix,
        "RK_SYSTEMD": "0", "RK_USER": "root", "RK_USER_HOME": str(vm.root / "home"),
        "RK_BIN_DIR": str(vm.root / "bin"), "RK_AGENT_RUNTIME": "simulated",
        "RK_WAIT": "120"})
    return env


def provision_all(lab: Lab, vms: list[Vm] | None = None, **extra: str) -> None:
    """Every VM at once, as vagrant-libvirt provisions them: the others wait for m1."""
    running = {}
    for vm in vms or list(lab.vms.values()):
        argv = vm.wrap(lab.shared, ["bash", "/vagrant/deploy/provision.sh", vm.role])
        running[vm.name] = subprocess.Popen(argv, env=provision_env(lab, vm) | extra,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for name, proc in running.items():
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == 0, f"provision {name}:\n{out.decode()}"


def unit(vm: Vm) -> dict[str, list[str]]:
    """The unit provision.sh wrote: key -> values."""
    path = vm.root / "systemd" / f"raftkube-{vm.role}.service"
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            out.setdefault(key, []).append(value)
    return out


def exec_start(vm: Vm) -> list[str]:
    """The unit's ExecStart as systemd runs it: `${X}` one word, `$X` split on spaces,
    both from the EnvironmentFile (a VM path under /etc/raftkube)."""
    u = unit(vm)
    env: dict[str, str] = {}
    for env_file in u.get("EnvironmentFile", []):
        vm_path = env_file.lstrip("-")
        assert vm_path.startswith("/etc/raftkube/"), vm_path
        text = (vm.root / "etc" / vm_path.removeprefix("/etc/raftkube/")).read_text()
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and not line.startswith("#"):
                env[key.strip()] = value.strip()
    (line,) = u["ExecStart"]
    argv: list[str] = []
    for word in shlex.split(line):
        if m := re.fullmatch(r"\$\{(\w+)\}", word):
            argv.append(env.get(m[1], ""))
        elif m := re.fullmatch(r"\$(\w+)", word):
            argv += env.get(m[1], "").split()
        else:
            assert "$" not in word, word
            argv.append(word)
    return argv


def start(lab: Lab, vm: Vm) -> subprocess.Popen[bytes]:
    log = open(vm.root / f"{vm.role}.log", "ab")  # noqa: SIM115 (the child keeps it)
    proc = subprocess.Popen(vm.wrap(lab.shared, exec_start(vm)), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    vm.procs.append(proc)
    return proc


def rk(vm: Vm, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`rk ARGS` on `vm` as `vagrant ssh VM -c 'rk ARGS'` runs it."""
    return subprocess.run(["ip", "netns", "exec", vm.netns, "rk", *args],
                          env=vm.user_env(), capture_output=True, text=True,
                          timeout=timeout)


def status(lab: Lab, vm: Vm) -> dict[str, Any] | None:
    """The master's /v3/maintenance/status, asked from this machine over the switch."""
    pki = lab.shared / ".raftkube-cluster"
    ctx = ssl.create_default_context(cafile=str(pki / "pki" / "ca.crt"))
    token = (pki / "token").read_text().strip()
    req = urllib.request.Request(
        f"https://{vm.address}:{API_PORT}/v3/maintenance/status", data=b"{}",
        headers={"Authorization": f"Bearer {token}"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
            answer: dict[str, Any] = json.load(resp)
            return answer
    except (OSError, ValueError):
        return None


def caught_up(lab: Lab, vm: Vm, leader_vm: Vm, timeout: float = 60) -> None:
    """`vm` has applied at least what the leader had applied when this was called."""
    st = status(lab, leader_vm)
    assert st is not None
    target = int(st["header"]["revision"])
    deadline = time.monotonic() + timeout
    while True:
        mine = status(lab, vm)
        if mine and int(mine["header"]["revision"]) >= target:
            return
        assert time.monotonic() < deadline, f"{vm.name} did not reach revision {target}"
        time.sleep(0.2)


def leader(lab: Lab, among: list[Vm], timeout: float = 60) -> Vm:
    """The master that every one of `among` names leader, once they agree."""
    by_id = {str(member_id(f"{v.address}:2380")): v for v in lab.vms.values()}
    deadline = time.monotonic() + timeout
    while True:
        seen = set()
        for vm in among:
            st = status(lab, vm)
            seen.add(str(st.get("leader")) if st else "?")
        if len(seen) == 1 and (found := by_id.get(seen.pop())) in among:
            assert found is not None
            return found
        assert time.monotonic() < deadline, f"no leader agreed among {[v.name for v in among]}"
        time.sleep(0.2)


def wait_ready(vm: Vm, nodes: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while True:
        done = rk(vm, "get", "nodes")
        ready = {line.split()[0] for line in done.stdout.splitlines()[1:]
                 if len(line.split()) > 1 and line.split()[1] == "Ready"}
        if done.returncode == 0 and nodes <= ready:
            return done.stdout
        assert time.monotonic() < deadline, \
            f"nodes {sorted(nodes - ready)} not Ready on {vm.name}: {done.stdout}{done.stderr}"
        time.sleep(0.5)


def test_provisioned_vms_form_an_ha_cluster(lab: Lab) -> None:
    provision_all(lab)
    masters = [vm for vm in lab.vms.values() if vm.role == "master"]
    for vm in lab.vms.values():
        u = unit(vm)
        assert u["Restart"] == ["on-failure"] and u["WantedBy"] == ["multi-user.target"]
        argv = exec_start(vm)
        assert argv[0] == os.path.join(sys.prefix, "bin", "rk")
        assert "10.0.2.15" not in " ".join(argv)
        if vm.role == "master":
            assert argv[argv.index("--api") + 1] == f"{vm.address}:{API_PORT}"
            assert argv[argv.index("--raft") + 1] == f"{vm.address}:2380"
        else:
            assert argv[argv.index("--address") + 1] == vm.address
            assert argv[argv.index("--runtime") + 1] == "simulated"  # from agent.env
            assert f"https://{masters[0].address}:{API_PORT}" in argv
    # Every master's certificate names its private address (rk certs --san).
    from raftkube.cli import certs
    for vm in masters:
        assert vm.address in certs.names(str(vm.root / "etc" / "tls.crt"))

    for vm in lab.vms.values():
        start(lab, vm)
    first = leader(lab, masters)
    wait_ready(lab.vms["m1"], {"w1", "w2"})
    wide = rk(lab.vms["m1"], "get", "nodes", "-o", "wide").stdout
    assert lab.vms["w1"].address in wide and lab.vms["w2"].address in wide, wide

    # Kill the leader as `vagrant halt -f` would: the others elect one and answer.
    os.killpg(first.procs[-1].pid, signal.SIGKILL)
    first.procs[-1].wait()
    survivors = [vm for vm in masters if vm is not first]
    assert leader(lab, survivors) in survivors
    for vm in survivors:
        wait_ready(vm, {"w1", "w2"}, timeout=60)
    made = rk(survivors[0], "create", "namespace", "after-failover")
    assert made.returncode == 0, made.stderr
    got = rk(survivors[1], "get", "namespace", "after-failover")
    assert got.returncode == 0 and "after-failover" in got.stdout, got.stderr

    # Provisioning again changes nothing that was made once (the secrets, the certs).
    before = {p.name: p.read_bytes() for p in (lab.shared / ".raftkube-cluster").iterdir()
              if p.is_file() and p.name != "ready"}
    provision_all(lab)
    after = {p.name: p.read_bytes() for p in (lab.shared / ".raftkube-cluster").iterdir()
             if p.is_file() and p.name != "ready"}
    assert before == after

    # `vagrant halt -f` then `vagrant up`: the unit starts it again with its data.
    start(lab, first)
    now = leader(lab, masters)
    caught_up(lab, first, now)

    # `vagrant destroy -f` then `RK_JOIN=1 vagrant up`: a new, empty VM joins after
    # `rk member remove` and `rk member add` (README.md, "Vagrant").
    gone = next(vm for vm in masters if vm is not now)
    helper = next(vm for vm in masters if vm not in (now, gone))
    os.killpg(gone.procs[-1].pid, signal.SIGKILL)
    gone.procs[-1].wait()
    for sub in (*BINDS.values(), "bin", "home"):  # its disk
        shutil.rmtree(gone.root / sub)
        (gone.root / sub).mkdir()
    removed = rk(helper, "member", "remove", gone.name)
    assert removed.returncode == 0, removed.stderr
    added = rk(helper, "member", "add", "--raft", f"{gone.address}:2380")
    assert added.returncode == 0, added.stderr
    provision_all(lab, [gone], RK_JOIN="1")
    assert "--initial-cluster-state existing" in " ".join(exec_start(gone))
    start(lab, gone)
    caught_up(lab, gone, leader(lab, masters))
    got = rk(gone, "get", "namespace", "after-failover")
    assert got.returncode == 0 and "after-failover" in got.stdout, got.stderr
