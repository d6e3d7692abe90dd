"""`rk up` / `rk down`: a whole HA cluster as background processes on 127.0.0.1.

`rk up` refuses Docker agents before starting anything when no engine answers (saying
how to get one), and tells a `progress` callback each stage it waits for (masters
running, leader elected, nodes Ready k/N). `rk down` returns only once every process
of every member's process group has exited (SIGTERM, then SIGKILL after a bound, each
reported). Without RK_CONFIG, `link_home_config` points ~/.raftkube/config.yaml at the
state dir's config.yaml, never over a file of the user's own.

The state dir holds everything: `cluster.yaml` (ports chosen on the first run and kept),
`token` and `secret`, `config.yaml` for clients, `pids/NAME.pid`, `logs/NAME.log`,
`data/NAME/` and `agents/NAME/` (an agent's pods' volumes, removed by `rk down`).
Running `rk up` again starts whichever master or agent is not running, with its data,
and never a second copy of one that is; `rk down` stops what `rk up` started. `rk up`
reports the cluster up only once every master answers and all agree on
a leader; a member that exits meanwhile (a data dir it refuses, a port in use) is
reported with its exit code and the last line of its log.

Agents (`--agents N`) are `n1` ... `nN`, each one node of that name (or, with `--count
C`, C simulated nodes `nI-1` ... `nI-C`), with pod ranges 10.244.K.0/24 numbered from 1
across all nodes. Each node has its own token: `node-tokens` holds every node's
`token,node-name` line and is every master's `--node-token-file`; `tokens/nI` holds
agent nI's lines only. Masters read that file when they start, so the set of nodes is
fixed while they run: an `rk up` that needs new nodes while a master runs is refused
(`rk down` first; data and existing tokens are kept).

The masters serve HTTPS: `pki/` holds the cluster's CA (made on the first run, kept)
and each master's serving certificate, issued again at start when the master's address
is no longer covered (`certs`). `config.yaml` carries the CA for `rk`, agents get
`--ca-file`, and `kubeconfig` is written for kubectl. `rk up --insecure-http` (recorded
in cluster.yaml) serves plain HTTP on loopback instead, for development.

Each state dir is one cluster with its own id (`cluster_id` in cluster.yaml, made on
the first run), which its agents put on their Docker containers: `rk down` removes the
containers of that id, and only those, even if the agents were killed before.

`rk up --topology netns` (root only; recorded in cluster.yaml, kept like --masters) gives
every master and agent a network namespace and an address of its own on a bridge
(`netns`, the address plan under `netns:` in cluster.yaml): masters serve on
ADDRESS:6443 and speak Raft on ADDRESS:2380, members are started as `ip netns exec NS
python -m raftkube.cli ...` (which execs: the pid files name the members themselves),
and `rk down` removes the namespaces and the bridge after the processes. Plain HTTP is
loopback-only and Docker agents stay on the loopback topology (their containers sit on
docker0 in the root namespace, out of reach of an agent's own namespace).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import yaml

from raftkube.agent import mounts, netrules, network
from raftkube.cli import kubeconfig, netns
from raftkube.client.config import Config
from raftkube.client.errors import ClientError

# `certs` (cryptography: about 8 MB mapped) is imported where certificates are made or
# read: `rk agent` and `rk master` load this module with the rest of the CLI.


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(n: int) -> list[int]:
    """`n` ports free now, below the kernel's ephemeral range and below the NodePort
    range (30000-32767): a port the kernel hands out (to any outgoing connection on this
    machine) could be taken between this choice and a master's bind, and the master
    would then not start."""
    socks: list[socket.socket] = []
    top = min(_ephemeral_low(), 30000)
    candidates = list(range(12000, top)) if top > 13000 else []
    random.shuffle(candidates)
    try:
        for port in candidates:
            if len(socks) == n:
                break
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < n:  # no room below the range: any free port
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


def load_layout(state_dir: str, masters: int, topology: str = "loopback") -> dict[str, Any]:
    """The cluster.yaml of `state_dir`, made on the first call (with `masters` masters
    on `topology`), as it is on later ones."""
    path = os.path.join(state_dir, "cluster.yaml")
    if os.path.exists(path):
        with open(path) as f:
            layout: dict[str, Any] = yaml.safe_load(f)
        if not layout.get("cluster_id"):  # a state dir from before cluster ids
            layout["cluster_id"] = new_cluster_id()
            _write(path, yaml.safe_dump(layout))
        return layout
    os.makedirs(state_dir, exist_ok=True)
    cid = new_cluster_id()
    if topology == "netns":
        names = [f"m{i + 1}" for i in range(masters)]
        plan = netns.make_plan(cid, names, netns.choose_subnet(cid, netns.routes_in_use()))
        layout = {"cluster_id": cid, "topology": "netns", "netns": plan.to_dict(),
                  "masters": [{"name": n, "api": f"{plan.members[n].address}:{netns.API_PORT}",
                               "raft": f"{plan.members[n].address}:{netns.RAFT_PORT}"}
                              for n in names]}
    else:
        ports = free_ports(2 * masters)
        layout = {"cluster_id": cid, "masters": [
            {"name": f"m{i + 1}", "api": f"127.0.0.1:{ports[2 * i]}",
             "raft": f"127.0.0.1:{ports[2 * i + 1]}"} for i in range(masters)]}
    _write(os.path.join(state_dir, "token"), secrets.token_urlsafe(24) + "\n", 0o600)
    _write(os.path.join(state_dir, "secret"), secrets.token_urlsafe(32) + "\n", 0o600)
    _write(path, yaml.safe_dump(layout))
    return layout


def topology_of(layout: dict[str, Any]) -> str:
    return str(layout.get("topology") or "loopback")


def netns_plan(state_dir: str) -> netns.Plan | None:
    """The namespaces' address plan of the cluster in `state_dir` (None: loopback)."""
    try:
        with open(os.path.join(state_dir, "cluster.yaml")) as f:
            layout = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    return netns.plan_from_layout(layout) if isinstance(layout, dict) else None


def _in_namespace(state_dir: str, name: str, argv: list[str]) -> list[str]:
    """`argv` run inside member `name`'s namespace on a netns cluster, else as it is."""
    plan = netns_plan(state_dir)
    if plan is None or name not in plan.members:
        return argv
    return netns.exec_prefix(plan.members[name].namespace) + argv


def new_cluster_id() -> str:
    return "rk-" + secrets.token_hex(6)


def cluster_id(state_dir: str) -> str | None:
    """The cluster id of a state dir, None if it has none (never brought up)."""
    try:
        with open(os.path.join(state_dir, "cluster.yaml")) as f:
            layout = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    found = layout.get("cluster_id") if isinstance(layout, dict) else None
    return str(found) if found else None


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
    node_tokens = os.path.join(state_dir, NODE_TOKENS)
    if os.path.exists(node_tokens):
        argv += ["--node-token-file", node_tokens]
    if insecure(layout):
        argv += ["--insecure-http"]
    else:
        pki = pki_dir(state_dir)
        argv += ["--tls-cert-file", os.path.join(pki, f"{m['name']}.crt"),
                 "--tls-private-key-file", os.path.join(pki, f"{m['name']}.key")]
    return argv + extra


def insecure(layout: dict[str, Any]) -> bool:
    return bool(layout.get("insecure_http"))


def pki_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "pki")


def server_urls(layout: dict[str, Any]) -> list[str]:
    scheme = "http" if insecure(layout) else "https"
    return [f"{scheme}://{m['api']}" for m in layout["masters"]]


def client_config(state_dir: str, layout: dict[str, Any]) -> Config:
    """How clients reach this cluster: what config.yaml and kubeconfig hold."""
    with open(os.path.join(state_dir, "token")) as f:
        token = f.read().strip()
    if insecure(layout):
        return Config(server_urls(layout), token, ca=None)
    from raftkube.cli import certs

    return Config(server_urls(layout), token, ca=certs.ca_pem(pki_dir(state_dir)))


def write_client_configs(state_dir: str, config: Config) -> None:
    """`config.yaml` for rk and `kubeconfig` for kubectl, both readable by the owner only."""
    raw: dict[str, Any] = {"servers": config.servers, "token": config.token}
    if config.ca:
        raw["ca"] = config.ca
    _write(os.path.join(state_dir, "config.yaml"), yaml.safe_dump(raw), 0o600)
    _write(os.path.join(state_dir, "kubeconfig"), kubeconfig.render(config), 0o600)


DEFAULT_STATE_DIR = "~/.raftkube/local"  # rk up/down without --state-dir (or RK_STATE_DIR)
HOME_CONFIG = "~/.raftkube/config.yaml"  # where rk looks without RK_CONFIG


def link_home_config(state_dir: str, *, home_config: str = HOME_CONFIG) -> str:
    """Make `rk` find this cluster without RK_CONFIG: ~/.raftkube/config.yaml becomes a
    symlink to DIR/config.yaml when it is missing or is such a link already (to this
    state dir or to another `rk up` cluster's, which it then no longer names). A file
    of the user's own, or a link to anything else, is never replaced. What happened,
    as a sentence for the user."""
    target = os.path.join(os.path.abspath(state_dir), "config.yaml")
    home = os.path.expanduser(home_config)
    if os.path.islink(home):
        current = os.path.join(os.path.dirname(home), os.readlink(home))
        if os.path.abspath(current) == target:
            return f"rk uses it: {home_config} links to {target}"
        if not _is_state_config(current):
            return (f"kept {home_config} (a link to {current}, not to an rk up cluster); "
                    f"to use this cluster: export RK_CONFIG={target}")
        os.unlink(home)
        os.symlink(target, home)
        return (f"rk uses it: {home_config} now links to {target} "
                f"(it linked to {current} before)")
    if os.path.exists(home):
        return (f"kept your own {home_config}; to use this cluster: "
                f"export RK_CONFIG={target}")
    os.makedirs(os.path.dirname(home), exist_ok=True)
    os.symlink(target, home)
    return f"rk uses it: {home_config} links to {target}"


def _is_state_config(path: str) -> bool:
    """Whether `path` is (or was: its directory may be gone) an `rk up` state dir's
    config.yaml: named so, beside a cluster.yaml, or in a directory no longer there."""
    d = os.path.dirname(os.path.abspath(path))
    return os.path.basename(path) == "config.yaml" and (
        os.path.exists(os.path.join(d, "cluster.yaml")) or not os.path.exists(d))


def tls_context(ca: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cadata=ca) if ca else None


NODE_TOKENS = "node-tokens"
FIRST_POD_RANGE = "10.244.0.0/24"  # node K (from 1) gets the K-th /24 after this one
AGENTS_DIR = "agents"  # agents/NAME: each agent's --root-dir (its pods' volumes)
CA_CERT = "ca.crt"  # certs.CA_CERT, named here without loading cryptography
AGENT_CERT_SUFFIX = "-agent"  # pki/NAME-agent.crt and .key: agent NAME's serving pair


def agent_nodes(name: str, count: int) -> list[str]:
    return [name] if count == 1 else [f"{name}-{i}" for i in range(1, count + 1)]


def read_node_tokens(state_dir: str) -> dict[str, str]:
    """node name -> token, from the state dir's node-tokens file."""
    out: dict[str, str] = {}
    try:
        with open(os.path.join(state_dir, NODE_TOKENS)) as f:
            for line in f.read().splitlines():
                token, sep, node = line.strip().partition(",")
                if sep:
                    out[node] = token
    except FileNotFoundError:
        pass
    return out


def ensure_node_tokens(state_dir: str, nodes: list[str], *, masters_running: bool) -> None:
    """A token for each of `nodes` in node-tokens, made once and kept."""
    tokens = read_node_tokens(state_dir)
    missing = [n for n in nodes if n not in tokens]
    if not missing:
        return
    if masters_running:
        raise ClientError(
            f"nodes {', '.join(missing[:5])} need tokens, and the masters read node tokens "
            "only when they start: run `rk down`, then `rk up` with these flags again "
            "(the data and the existing tokens are kept)")
    for n in missing:
        tokens[n] = secrets.token_urlsafe(24)
    _write(os.path.join(state_dir, NODE_TOKENS),
           "".join(f"{t},{n}\n" for n, t in tokens.items()), 0o600)


def agent_argv(state_dir: str, name: str, index: int, spec: dict[str, Any],
               servers: list[str]) -> list[str]:
    """`rk agent` for agent `name`, the `index`-th (from 1)."""
    count = int(spec.get("count", 1))
    first = ipaddress.ip_network(FIRST_POD_RANGE)
    start = first.network_address + ((index - 1) * count + 1) * first.num_addresses
    argv = [sys.executable, "-m", "raftkube.cli", "agent", "--name", name,
            "--token-file", os.path.join(state_dir, "tokens", name),
            "--runtime", spec.get("runtime", "simulated"),
            "--pod-cidr", f"{start}/{first.prefixlen}",
            "--root-dir", os.path.join(state_dir, AGENTS_DIR, name),
            "--address", _agent_address(state_dir, name, index),
            "--agent-port", "0"]  # any free port: the Node tells the masters which
    cid = cluster_id(state_dir)
    if cid:
        argv += ["--cluster-id", cid]
    ca_file = ca_cert_file(state_dir)
    if any(s.startswith("https://") for s in servers) and os.path.exists(ca_file):
        argv += ["--ca-file", ca_file]
    cert, key = agent_cert_files(state_dir, name)
    if os.path.exists(cert) and os.path.exists(key):
        argv += ["--tls-cert-file", cert, "--tls-private-key-file", key]
    for server in servers:
        argv += ["--server", server]
    if count > 1:
        argv += ["--count", str(count)]
    return argv + list(spec.get("args", []))


def ca_cert_file(state_dir: str) -> str:
    return os.path.join(pki_dir(state_dir), CA_CERT)


def agent_cert_files(state_dir: str, name: str) -> tuple[str, str]:
    """Where the serving certificate and key of agent `name`'s API are (issued by the
    cluster's CA at start; the masters pin them by the fingerprint the Node publishes)."""
    stem = os.path.join(pki_dir(state_dir), f"{name}{AGENT_CERT_SUFFIX}")
    return f"{stem}.crt", f"{stem}.key"


def _agent_address(state_dir: str, name: str, index: int) -> str:
    plan = netns_plan(state_dir)
    if plan is not None and name in plan.members:
        return plan.members[name].address
    return network.local_node_address(state_dir, index)


def start_agent(state_dir: str, name: str, index: int, spec: dict[str, Any],
                servers: list[str]) -> int:
    tokens = read_node_tokens(state_dir)
    os.makedirs(os.path.join(state_dir, "tokens"), exist_ok=True)
    _write(os.path.join(state_dir, "tokens", name),
           "".join(f"{tokens[n]},{n}\n" for n in agent_nodes(name, int(spec.get("count", 1)))),
           0o600)
    if os.path.exists(ca_cert_file(state_dir)):
        from raftkube.cli import certs

        try:  # issued again when the agent's address changed since (or the CA did)
            certs.ensure_serving(pki_dir(state_dir), f"{name}{AGENT_CERT_SUFFIX}",
                                 [_agent_address(state_dir, name, index)])
        except certs.CertError as e:
            raise ClientError(f"agent {name}: {e}") from None
    return _spawn(state_dir, name, _in_namespace(
        state_dir, name, agent_argv(state_dir, name, index, spec, servers)))


# Members started by this process. `rk up` exits right after starting them, but a
# long-lived caller (a test harness) keeps them here so that they are reaped when they die;
# the exit codes of reaped ones are kept by pid.
_children: list[subprocess.Popen[bytes]] = []
_exit_codes: dict[int, int] = {}


def reap() -> None:
    for proc in list(_children):
        code = proc.poll()
        if code is not None:
            _children.remove(proc)
            _exit_codes[proc.pid] = code


def exit_code(pid: int) -> int | None:
    """The exit code of a member this process started and that has exited, else None
    (a negative code is the signal that killed it, as subprocess reports)."""
    reap()
    return _exit_codes.get(pid)


def last_log_line(state_dir: str, name: str) -> str:
    try:
        with open(os.path.join(state_dir, "logs", f"{name}.log"), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def start_member(state_dir: str, name: str, extra: list[str] | None = None, *,
                 preexec: Callable[[], None] | None = None) -> int:
    """Start one member in the background; `preexec` runs in the child before it execs
    (tests use it to start a member under lower resource limits)."""
    layout = load_layout(state_dir, 3)
    m = next(x for x in layout["masters"] if x["name"] == name)
    if not insecure(layout):
        from raftkube.cli import certs

        # Issued again when the master's address changed since (or the CA did).
        host = m["api"].rpartition(":")[0]
        try:
            certs.ensure_serving(pki_dir(state_dir), name, [host])
        except certs.CertError as e:
            raise ClientError(f"master {name}: {e}") from None
    return _spawn(state_dir, name, _in_namespace(
        state_dir, name, master_argv(m, layout, state_dir, extra or [])), preexec=preexec)


SCHEME = "{name}.scheme"  # in pids/: how a running member serves or reaches the API


def check_schemes(state_dir: str, names: list[str], wanted: str) -> None:
    """Refuse to go on while a running member serves (or, an agent, reaches) the API
    in the other scheme: started before TLS existed (no record: plain HTTP), or before
    `--insecure-http` was switched. Its clients would be told the wrong URLs."""
    pids = os.path.join(state_dir, "pids")
    other = []
    for name in names:
        if pid_alive(os.path.join(pids, f"{name}.pid")) is None:
            continue
        try:
            with open(os.path.join(pids, SCHEME.format(name=name))) as f:
                scheme = f.read().strip()
        except OSError:
            scheme = "http"
        if scheme != wanted:
            other.append(name)
    if other:
        how = {"http": "plain HTTP", "https": "HTTPS"}
        raise ClientError(
            f"{', '.join(other)} run with {how['https' if wanted == 'http' else 'http']}, "
            f"and this rk up asks for {how[wanted]}: `rk down --state-dir {state_dir}` "
            "first (data, tokens and certificates are kept)")


def _running_agents(state_dir: str) -> list[str]:
    pids = os.path.join(state_dir, "pids")
    try:
        files = os.listdir(pids)
    except OSError:
        return []
    return sorted(f[:-4] for f in files if f.endswith(".pid") and f.startswith("n"))


def _spawn(state_dir: str, name: str, argv: list[str], *,
           preexec: Callable[[], None] | None = None) -> int:
    for d in ("pids", "logs", "data"):
        os.makedirs(os.path.join(state_dir, d), exist_ok=True)
    log = open(os.path.join(state_dir, "logs", f"{name}.log"), "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=preexec)
    log.close()
    _children.append(proc)
    _write(os.path.join(state_dir, "pids", f"{name}.pid"), f"{proc.pid}\n")
    tls = "--tls-cert-file" in argv or any(a.startswith("https://") for a in argv)
    _write(os.path.join(state_dir, "pids", SCHEME.format(name=name)),
           "https\n" if tls else "http\n")
    return proc.pid


Progress = Callable[[str, str], None]
"""`progress(stage, line)`: what `rk up` is waiting for; a line with the stage of the
line before it replaces that line (on a terminal it is rewritten in place)."""


def up(*, state_dir: str, masters: int, agents: int, timeout: float | None = None,
       master_args: list[str] | None = None, runtime: str = "simulated", count: int = 1,
       agent_args: list[str] | None = None, insecure_http: bool | None = None,
       topology: str | None = None, progress: Progress | None = None) -> list[str]:
    """Start whichever of the masters and of agents n1..n`agents` is not running; wait
    for a leader, and for every agent's nodes to be Ready: within `timeout` seconds, by
    default a minute and a tenth of a second per node (1,000 hollow nodes register a
    few at a time, as kubelets come up, and take longer than a minute on a busy
    machine). Docker agents are refused, before anything starts, when no engine
    answers. `progress` hears each stage (masters running, leader, nodes Ready).
    `topology` (None: the cluster's own, loopback for a new one) is checked here."""
    if masters not in (1, 3, 5):
        raise ClientError("--masters: must be 1, 3 or 5")
    if agents < 0 or count < 1:
        raise ClientError("--agents must be 0 or more and --count 1 or more")
    state_dir = os.path.abspath(state_dir)
    topology = check_topology(state_dir, topology, runtime=runtime, agents=agents,
                              insecure_http=insecure_http)
    if runtime == "docker" and agents > 0:
        problem = docker_problem()
        if problem is not None:
            raise ClientError(problem)
    say = progress or (lambda _stage, _line: None)
    existing = masters_in(state_dir)
    if existing is not None and existing != masters:
        raise ClientError(
            f"--masters {masters}: the cluster in {state_dir} has {existing} masters, "
            f"and keeps them (`rk up --masters {existing}`, or `rk down` and a new "
            "--state-dir for another size)")
    layout = load_layout(state_dir, masters, topology)
    changed = False
    plan = netns.plan_from_layout(layout)
    if plan is not None:
        plan = netns.grow(plan, [f"n{i}" for i in range(1, agents + 1)])
        if plan.to_dict() != layout["netns"]:
            layout["netns"] = plan.to_dict()
            changed = True
    if master_args is not None:
        layout["master_args"] = master_args
        changed = True
    if runtime == "docker" and agents > 0 and not layout.get("docker"):
        layout["docker"] = True  # `rk down` then insists on removing its containers
        changed = True
    if insecure_http is not None and insecure_http != insecure(layout):
        layout["insecure_http"] = insecure_http
        changed = True
    check_schemes(state_dir, [m["name"] for m in layout["masters"]] + list(
        _running_agents(state_dir)), "http" if insecure(layout) else "https")
    if changed:
        _write(os.path.join(state_dir, "cluster.yaml"), yaml.safe_dump(layout))
    if plan is not None:
        try:
            netns.create(plan)
        except netns.NetnsError as e:
            raise ClientError(str(e)) from None
    if not insecure(layout):
        from raftkube.cli import certs

        try:
            certs.ensure_ca(pki_dir(state_dir))
        except certs.CertError as e:
            raise ClientError(str(e)) from None
    spec = {"runtime": runtime, "count": count, "args": list(agent_args or [])}
    names = [f"n{i}" for i in range(1, agents + 1)]
    pids = os.path.join(state_dir, "pids")
    masters_running = any(pid_alive(os.path.join(pids, f"{m['name']}.pid")) is not None
                          for m in layout["masters"])
    nodes = [n for name in names for n in agent_nodes(name, count)]
    if timeout is None:
        timeout = 60.0 + 0.1 * len(nodes)
    ensure_node_tokens(state_dir, nodes, masters_running=masters_running)
    started = []
    for m in layout["masters"]:
        if pid_alive(os.path.join(pids, f"{m['name']}.pid")) is None:
            start_member(state_dir, m["name"])
            started.append(m["name"])
    names_m = [m["name"] for m in layout["masters"]]
    kept = [n for n in names_m if n not in started]
    say("masters", f"masters running: {', '.join(names_m)}"
        + (f" (started {', '.join(started)})" if started and kept else ""))
    config = client_config(state_dir, layout)
    write_client_configs(state_dir, config)
    servers, token = config.servers, config.token
    deadline = time.monotonic() + timeout
    leader = wait_for_leader(servers, token, timeout=timeout, ca=config.ca,
                             check_members=lambda: dead_members(state_dir, names_m))
    name, term = leader_of(layout, servers, token, leader, ca=config.ca)
    say("leader", f"leader elected: {name} (term {term})")
    for index, name in enumerate(names, 1):
        if pid_alive(os.path.join(pids, f"{name}.pid")) is None:
            start_agent(state_dir, name, index, spec, servers)
            started.append(name)
    if nodes:
        wait_for_nodes(servers, token, nodes, timeout=max(1.0, deadline - time.monotonic()),
                       ca=config.ca, check_agents=lambda: dead_members(state_dir, names),
                       progress=lambda ready: say(
                           "nodes", f"nodes Ready: {ready}/{len(nodes)}"))
    return started


def check_topology(state_dir: str, wanted: str | None, *, runtime: str, agents: int,
                   insecure_http: bool | None) -> str:
    """The topology this `rk up` runs the cluster on: `wanted`, which must be the one
    the cluster was made with, else that one (loopback for a new cluster); a netns
    cluster needs root, TLS and simulated agents, at most netns.MAX_AGENTS of them."""
    if wanted is not None and wanted not in netns.TOPOLOGIES:
        raise ClientError(f"--topology: {wanted!r} is not one of "
                          f"{', '.join(netns.TOPOLOGIES)}")
    try:
        with open(os.path.join(state_dir, "cluster.yaml")) as f:
            layout = yaml.safe_load(f) or {}
    except FileNotFoundError:
        layout = None
    except (OSError, yaml.YAMLError) as e:
        raise ClientError(f"{state_dir}/cluster.yaml: {e}") from None
    existing = topology_of(layout) if isinstance(layout, dict) else None
    if wanted is not None and existing is not None and wanted != existing:
        raise ClientError(
            f"--topology {wanted}: the cluster in {state_dir} was made with --topology "
            f"{existing} and keeps it (`rk down` and a new --state-dir for another)")
    topology = wanted or existing or "loopback"
    if topology == "netns":
        if insecure_http or (isinstance(layout, dict) and insecure(layout)
                             and insecure_http is None):
            raise ClientError("--insecure-http: plain HTTP is for loopback addresses only, "
                              "and --topology netns serves on the namespaces' addresses: "
                              "leave it out (HTTPS) or use --topology loopback")
        if runtime == "docker" and agents > 0:
            raise ClientError(
                "--runtime docker: not with --topology netns (Docker's containers sit on "
                "docker0 in the root namespace, where an agent in a namespace of its own "
                "cannot reach or proxy them): use --runtime simulated, or --topology "
                "loopback for Docker agents")
        if agents > netns.MAX_AGENTS:
            raise ClientError(
                f"--agents {agents}: a netns cluster has at most {netns.MAX_AGENTS} agents "
                f"(n1..n{netns.MAX_AGENTS}, one address each in the cluster's /24; "
                "--count gives an agent more nodes)")
        try:
            netns.require_root()
        except netns.NetnsError as e:
            raise ClientError(str(e)) from None
    return topology


def masters_in(state_dir: str) -> int | None:
    """How many masters the cluster in `state_dir` has; None before its first `rk up`."""
    try:
        with open(os.path.join(state_dir, "cluster.yaml")) as f:
            layout = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return None
    found = layout.get("masters") if isinstance(layout, dict) else None
    return len(found) if isinstance(found, list) and found else None


def leader_of(layout: dict[str, Any], servers: list[str], token: str, leader: str, *,
              ca: str | None = None) -> tuple[str, str]:
    """(name, term) of the master whose member ID is `leader`, from each master's own
    status (its header names it); the ID itself and "?" when that master is silent now."""
    for m, server in zip(layout["masters"], servers, strict=True):
        found = status_of(server, token, ca)
        header = (found or {}).get("header") or {}
        if str(header.get("member_id")) == leader:
            return str(m["name"]), str(header.get("raft_term", "?"))
    return leader, "?"


DOCKER_HELP = ("install it (Debian: `apt-get install docker.io`), start it (`dockerd &`, "
               "or `bash scripts/docker-setup.sh` in raftkube's checkout, which also makes "
               "the local images), or run without Docker: `rk up --runtime simulated`")


def docker_problem(*, socket_path: str = "/var/run/docker.sock",
                   timeout: float = 3.0) -> str | None:
    """Why Docker agents cannot run here (no engine installed, its socket missing or
    silent), with how to fix it; None when the engine answers a ping. DOCKER_HOST, if
    set, is the agents' business: only the local socket is checked."""
    if os.environ.get("DOCKER_HOST"):
        return None
    if not os.path.exists(socket_path):
        installed = shutil.which("dockerd") is not None
        what = ("the Docker engine is installed but not running (no " + socket_path + ")"
                if installed else "the Docker engine is not installed")
        return f"--runtime docker: {what}; {DOCKER_HELP}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(socket_path)
        s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        answer = s.recv(64)
    except OSError as e:
        return (f"--runtime docker: the Docker engine at {socket_path} does not answer "
                f"({e.strerror or e}); {DOCKER_HELP}")
    finally:
        s.close()
    if not answer.startswith(b"HTTP/1.") or b" 200 " not in answer.split(b"\r\n")[0] + b" ":
        return (f"--runtime docker: the Docker engine at {socket_path} answered "
                f"{answer[:40]!r}; {DOCKER_HELP}")
    return None


def ready_nodes(server: str, token: str, *, timeout: float = 2.0,
                ca: str | None = None) -> set[str] | None:
    found = _ask(server, "GET", "/api/v1/nodes", token, timeout=timeout, ca=ca)
    if found is None:
        return None
    items = found.get("items") or []
    return {n["metadata"]["name"] for n in items
            if any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (n.get("status") or {}).get("conditions") or [])}


def wait_for_nodes(servers: list[str], token: str, nodes: list[str], *,
                   timeout: float, ca: str | None = None,
                   check_agents: Callable[[], str | None] | None = None,
                   progress: Callable[[int], None] | None = None) -> None:
    """Wait until every one of `nodes` is registered and Ready; `check_agents` says
    what is wrong when an agent has died, and waiting then stops; `progress` hears
    how many are Ready whenever that changes."""
    deadline = time.monotonic() + timeout
    missing = set(nodes)
    told = -1
    while time.monotonic() < deadline:
        problem = check_agents() if check_agents is not None else None
        if problem is not None:
            raise ClientError(f"an agent did not start: {problem}")
        asked = time.monotonic()
        for server in servers:
            # Listing 1,000 Nodes (2 MB of JSON) from a master busy with their agents
            # takes seconds: a short timeout would never see one of them Ready.
            left = deadline - time.monotonic()
            ready = ready_nodes(server, token, timeout=max(2.0, min(15.0, left)), ca=ca)
            if ready is not None:
                missing = set(nodes) - ready
                break
        if progress is not None and len(nodes) - len(missing) != told:
            told = len(nodes) - len(missing)
            progress(told)
        if not missing:
            return
        # That list is work for a master: ask again after a pause that grows with what
        # it cost, so that the waiting takes a small share of the masters' time.
        time.sleep(max(0.2, min(2.0, 3 * (time.monotonic() - asked))))
    raise ClientError(f"nodes {', '.join(sorted(missing)[:5])} were not Ready within "
                      f"{timeout:.0f}s; see the logs/ directory")


def dead_members(state_dir: str, names: list[str]) -> str | None:
    """None while every member runs; else each dead member's exit and last log line."""
    if not _dead(state_dir, names):
        return None
    time.sleep(0.5)  # members refused at start usually go together: report them all
    lines = []
    for name in _dead(state_dir, names):
        pid = _pid_in_file(os.path.join(state_dir, "pids", f"{name}.pid"))
        code = exit_code(pid) if pid else None
        how = f"exited with code {code}" if code is not None else "is not running"
        lines.append(f"{name} {how}; its log ends: {last_log_line(state_dir, name)}")
    return "; ".join(lines)


def _dead(state_dir: str, names: list[str]) -> list[str]:
    reap()
    ours = {p.pid for p in _children}
    dead = []
    for name in names:
        pid_file = os.path.join(state_dir, "pids", f"{name}.pid")
        pid = _pid_in_file(pid_file)
        if pid in ours:
            continue  # a child of ours that has not exited (it may not have exec'd yet)
        if pid is None or pid in _exit_codes or pid_alive(pid_file) is None:
            dead.append(name)
    return dead


def _pid_in_file(pid_file: str) -> int | None:
    try:
        with open(pid_file) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def status_of(server: str, token: str, ca: str | None = None) -> dict[str, Any] | None:
    return _ask(server, "POST", "/v3/maintenance/status", token, timeout=1.0, ca=ca,
                body=b"{}")


def _ask(server: str, method: str, path: str, token: str, *, timeout: float,
         ca: str | None, body: bytes | None = None) -> dict[str, Any] | None:
    """One request to one master while `rk up` waits for it; None unless a 200 with a
    JSON object came back. The connection is closed whatever happens: urllib leaves the
    socket open when a TLS handshake fails (a master still starting)."""
    parts = urllib.parse.urlsplit(server)
    host, port = parts.hostname or "", parts.port
    conn: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context(ca))
        if parts.scheme == "https" else http.client.HTTPConnection(host, port,
                                                                   timeout=timeout))
    try:
        conn.request(method, path, body=body,
                     headers={"Authorization": f"Bearer {token}",
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        found = json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return found if isinstance(found, dict) else None


def wait_for_leader(servers: list[str], token: str, *, timeout: float, ca: str | None = None,
                    check_members: Callable[[], str | None] | None = None) -> str:
    """Wait until every member answers and all agree on one leader; return its ID.
    `check_members` says what is wrong when a member has died; waiting then stops."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        problem = check_members() if check_members is not None else None
        if problem is not None:
            raise ClientError(f"the cluster is not up: {problem}")
        leaders = [s.get("leader") for s in (status_of(u, token, ca) for u in servers) if s]
        agreed = [x for x in leaders if x and x != "0"]
        if len(agreed) == len(servers) and len(set(agreed)) == 1:
            return str(agreed[0])
        time.sleep(0.1)
    raise ClientError(f"the members did not all answer with one leader within {timeout:.0f}s;"
                      " see the logs/ directory")


KILL_WAIT = 10.0  # seconds a member may take to vanish after SIGKILL (a D-state write)


def down(*, state_dir: str, timeout: float = 10.0,
         report: Callable[[str, str], None] | None = None) -> list[str]:
    """Stop every member `rk up` started (those in pids/) and return their names, only
    once every process of theirs has exited: SIGTERM to each member's process group,
    then SIGKILL to a group that still has a process after `timeout` seconds.
    `report(name, how)` hears how each one ended. A process that outlives even
    SIGKILL by KILL_WAIT seconds is reported as such (its pid file is kept)."""
    pids_dir = os.path.join(os.path.abspath(state_dir), "pids")
    if not os.path.isdir(pids_dir):
        remove_namespaces(os.path.abspath(state_dir))
        return []
    stopped = []
    procs: dict[str, int] = {}
    for name in sorted(os.listdir(pids_dir)):
        if not name.endswith(".pid"):
            continue
        pid = pid_alive(os.path.join(pids_dir, name))
        if pid is not None:
            _signal_group(pid, signal.SIGTERM)
            procs[name[:-4]] = pid
    deadline = time.monotonic() + timeout
    survivors = []
    for name, pid in procs.items():
        while time.monotonic() < deadline and _group_running(pid):
            time.sleep(0.05)
        how = "exited after SIGTERM"
        if _group_running(pid):
            _signal_group(pid, signal.SIGKILL)
            how = f"killed with SIGKILL (still running {timeout:g}s after SIGTERM)"
            killed = time.monotonic() + KILL_WAIT
            while _group_running(pid) and time.monotonic() < killed:  # until it has exited
                time.sleep(0.02)
            if _group_running(pid):
                how = f"still running {KILL_WAIT:g}s after SIGKILL (pid {pid})"
                survivors.append(name)
        if report is not None:
            report(name, how)
        stopped.append(name)
    members = []
    for name in os.listdir(pids_dir):
        member = name.removesuffix(".pid").removesuffix(".scheme")
        if member in survivors:
            continue
        members.append(name.removesuffix(".pid"))
        os.unlink(os.path.join(pids_dir, name))
    if survivors:
        raise ClientError(f"{', '.join(survivors)} did not exit even after SIGKILL; their "
                          f"pid files are kept in {pids_dir}")
    # The agents' pod directories (volumes, ConfigMap and Secret files), now that nothing
    # runs that uses them: their tmpfs emptyDirs unmounted first (an agent killed before
    # it removed them leaves them mounted), or removing would only empty them.
    agents = os.path.join(os.path.abspath(state_dir), AGENTS_DIR)
    left = mounts.unmount_under(agents)
    if left:
        print(f"warning: still mounted, kept: {', '.join(left)}", file=sys.stderr)
    else:
        shutil.rmtree(agents, ignore_errors=True)
    remove_agent_rules(os.path.abspath(state_dir), members)  # the dead ones' too
    remove_namespaces(os.path.abspath(state_dir))
    return stopped


def remove_namespaces(state_dir: str) -> list[str]:
    """The namespaces, veths and bridge of a netns cluster (after its processes, or
    their leftovers after a crash); nothing for a loopback cluster."""
    plan = netns_plan(state_dir)
    if plan is None:
        return []
    try:
        return netns.remove(plan.cluster_id, plan)
    except netns.NetnsError as e:
        raise ClientError(f"the processes are stopped, but {e}") from None


def remove_agent_rules(state_dir: str, names: list[str]) -> None:
    """The packet rules of agents `names` (nI), should one have died without removing
    them (a SIGKILL); an agent stopped by SIGTERM has removed its own already."""
    if shutil.which("iptables") is None or os.geteuid() != 0:
        return
    for name in names:
        index = name[1:]
        if name.startswith("n") and index.isdigit() and 1 <= int(index) <= 254:
            try:
                netrules.remove(name, network.local_node_address(state_dir, int(index)))
            except netrules.RulesError as e:
                print(f"warning: agent {name}'s packet rules: {e}", file=sys.stderr)


def remove_containers(*, state_dir: str) -> tuple[int, list[str]]:
    """Remove the cluster's containers from the local Docker engine (whichever agent
    made them, running or not) and its pods' volume directories: (containers, dirs).
    Nothing if the cluster has no id or no engine answers."""
    cid = cluster_id(os.path.abspath(state_dir))
    if cid is None:
        return 0, []
    from raftkube.agent import docker  # the docker SDK only when it is needed

    return docker.remove_cluster(cid)


def used_docker(state_dir: str) -> bool:
    """Whether the cluster in `state_dir` ever ran Docker agents (recorded by `rk up`)."""
    try:
        with open(os.path.join(state_dir, "cluster.yaml")) as f:
            layout = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(layout, dict) and bool(layout.get("docker"))


def remove_networks_volumes(*, state_dir: str) -> tuple[int, int]:
    """The cluster's Docker networks and volumes, after its containers: (removed each)."""
    cid = cluster_id(os.path.abspath(state_dir))
    if cid is None:
        return 0, 0
    from raftkube.agent import docker

    return docker.remove_cluster_networks_volumes(cid)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_running(pgid: int) -> bool:
    """Whether any process of process group `pgid` (a member and whatever it started:
    each member leads a session of its own) is still running; zombies do not count."""
    reap()
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


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
