"""`rk up` / `rk down`: a whole HA cluster as background processes on 127.0.0.1.

The state dir holds everything: `cluster.yaml` (ports chosen on the first run and kept),
`token` and `secret`, `config.yaml` for clients, `pids/NAME.pid`, `logs/NAME.log` and
`data/NAME/`. Running `rk up` again starts whichever member is not running, with its
data; `rk down` stops what `rk up` started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml

from raftkube.cli.client import ClientError


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write(path: str, text: str, mode: int = 0o644) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def load_layout(state_dir: str, masters: int) -> dict[str, Any]:
    path = os.path.join(state_dir, "cluster.yaml")
    if os.path.exists(path):
        with open(path) as f:
            layout: dict[str, Any] = yaml.safe_load(f)
        return layout
    os.makedirs(state_dir, exist_ok=True)
    ports = free_ports(2 * masters)
    layout = {"masters": [
        {"name": f"m{i + 1}", "api": f"127.0.0.1:{ports[2 * i]}",
         "raft": f"127.0.0.1:{ports[2 * i + 1]}"} for i in range(masters)]}
    _write(os.path.join(state_dir, "token"), secrets.token_urlsafe(24) + "\n", 0o600)
    _write(os.path.join(state_dir, "secret"), secrets.token_urlsafe(32) + "\n", 0o600)
    _write(path, yaml.safe_dump(layout))
    return layout


def pid_alive(pid_file: str) -> int | None:
    try:
        with open(pid_file) as f:
            pid = int(f.read().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A zombie or a recycled pid that is not ours does not count.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            if b"raftkube" not in f.read():
                return None
    except OSError:
        return None
    return pid if _running(pid) else None


def master_argv(m: dict[str, Any], layout: dict[str, Any], state_dir: str,
                extra: list[str]) -> list[str]:
    extra = list(layout.get("master_args", [])) + extra
    argv = [sys.executable, "-m", "raftkube.cli", "master", "--name", m["name"],
            "--api", m["api"], "--raft", m["raft"],
            "--data-dir", os.path.join(state_dir, "data", m["name"]),
            "--token-file", os.path.join(state_dir, "token"),
            "--secret-file", os.path.join(state_dir, "secret")]
    for other in layout["masters"]:
        if other["name"] != m["name"]:
            argv += ["--peer", other["raft"]]
    return argv + extra


# Members started by this process. `rk up` exits right after starting them, but a
# long-lived caller (a test harness) keeps them here so that they are reaped when they die.
_children: list[subprocess.Popen[bytes]] = []


def reap() -> None:
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)


def start_member(state_dir: str, name: str, extra: list[str] | None = None, *,
                 preexec: Callable[[], None] | None = None) -> int:
    """Start one member in the background; `preexec` runs in the child before it execs
    (tests use it to start a member under lower resource limits)."""
    layout = load_layout(state_dir, 3)
    m = next(x for x in layout["masters"] if x["name"] == name)
    for d in ("pids", "logs", "data"):
        os.makedirs(os.path.join(state_dir, d), exist_ok=True)
    log = open(os.path.join(state_dir, "logs", f"{name}.log"), "ab")
    proc = subprocess.Popen(
        master_argv(m, layout, state_dir, extra or []), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=preexec)
    log.close()
    _children.append(proc)
    _write(os.path.join(state_dir, "pids", f"{name}.pid"), f"{proc.pid}\n")
    return proc.pid


def up(*, state_dir: str, masters: int, agents: int, timeout: float = 60.0,
       master_args: list[str] | None = None) -> list[str]:
    if masters not in (1, 3, 5):
        raise ClientError("--masters: must be 1, 3 or 5")
    if agents:
        raise ClientError("--agents: node agents are not implemented yet; use --agents 0")
    state_dir = os.path.abspath(state_dir)
    layout = load_layout(state_dir, masters)
    if master_args is not None:
        layout["master_args"] = master_args
        _write(os.path.join(state_dir, "cluster.yaml"), yaml.safe_dump(layout))
    started = []
    for m in layout["masters"]:
        if pid_alive(os.path.join(state_dir, "pids", f"{m['name']}.pid")) is None:
            start_member(state_dir, m["name"])
            started.append(m["name"])
    with open(os.path.join(state_dir, "token")) as f:
        token = f.read().strip()
    servers = [f"http://{m['api']}" for m in layout["masters"]]
    _write(os.path.join(state_dir, "config.yaml"),
           yaml.safe_dump({"servers": servers, "token": token}), 0o600)
    wait_for_leader(servers, token, timeout=timeout)
    return started


def status_of(server: str, token: str) -> dict[str, Any] | None:
    req = urllib.request.Request(server + "/v3/maintenance/status", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=1) as resp:
            result: dict[str, Any] = json.loads(resp.read())
            return result
    except (urllib.error.URLError, OSError, ValueError):
        return None


def wait_for_leader(servers: list[str], token: str, *, timeout: float) -> str:
    """Wait until every member answers and all agree on one leader; return its ID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = [s.get("leader") for s in (status_of(u, token) for u in servers) if s]
        agreed = [x for x in leaders if x and x != "0"]
        if len(agreed) == len(servers) and len(set(agreed)) == 1:
            return str(agreed[0])
        time.sleep(0.1)
    raise ClientError(f"the members did not all answer with one leader within {timeout:.0f}s;"
                      " see the logs/ directory")


def down(*, state_dir: str, timeout: float = 10.0) -> list[str]:
    pids_dir = os.path.join(os.path.abspath(state_dir), "pids")
    if not os.path.isdir(pids_dir):
        return []
    stopped = []
    procs: dict[str, int] = {}
    for name in sorted(os.listdir(pids_dir)):
        if not name.endswith(".pid"):
            continue
        pid = pid_alive(os.path.join(pids_dir, name))
        if pid is not None:
            os.killpg(pid, signal.SIGTERM)
            procs[name[:-4]] = pid
    deadline = time.monotonic() + timeout
    for name, pid in procs.items():
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.05)
        if _running(pid):
            os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    for name in os.listdir(pids_dir):
        os.unlink(os.path.join(pids_dir, name))
    return stopped


def _running(pid: int) -> bool:
    reap()
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
