"""Local 3-member clusters for bench/store.py: real etcd, and raftkube via its `rk` CLI.

Both backends expose the same small interface (:class:`ClusterBackend`) so the workload in
``bench/store.py`` does not care which one it talks to:

* ``start()`` / ``stop()`` bring the whole cluster up and down (``stop`` is idempotent and
  safe to call after a partial start);
* ``urls`` are the three client URLs, ``headers`` the HTTP headers every request needs
  (raftkube: ``Authorization: Bearer <token>``; etcd: none);
* ``kill(name)`` SIGKILLs one member's process, ``restart(name)`` brings it back with its
  data intact; members are identified by the ``name`` that ``/v3/cluster/member/list``
  reports, so the workload can map the leader's ``member_id`` to a process.

Every process started here lives in its own process group and is remembered in a module-level
registry that an ``atexit`` hook SIGKILLs, so nothing outlives the benchmark even when it dies
on an exception. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCALHOST = "127.0.0.1"
MEMBER_NAMES = ("m1", "m2", "m3")


class BackendUnavailable(RuntimeError):
    """The backend cannot run on this machine (binary or package missing)."""


# --------------------------------------------------------------------------- process registry

# Process groups we created (etcd members: we are their parent, they lead their own group)
_LIVE_PGIDS: set[int] = set()
# Single pids started on our behalf by `rk up` (not our children, maybe not group leaders)
_RK_PIDS: set[int] = set()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _forget(pid: int) -> None:
    _LIVE_PGIDS.discard(pid)
    _RK_PIDS.discard(pid)


def _kill_all_registered() -> None:
    for pgid in sorted(_LIVE_PGIDS):
        _kill_group(pgid)
    _LIVE_PGIDS.clear()
    for pid in sorted(_RK_PIDS):
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    _RK_PIDS.clear()


atexit.register(_kill_all_registered)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # state is the first field after the parenthesised command name
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def free_ports(count: int) -> list[int]:
    """Ask the kernel for ``count`` distinct free TCP ports on 127.0.0.1."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((LOCALHOST, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- interface


class ClusterBackend(abc.ABC):
    """A 3-member cluster speaking etcd's v3 JSON gateway on 127.0.0.1."""

    label: str = "?"

    @classmethod
    @abc.abstractmethod
    def unavailable_reason(cls) -> str | None:
        """None if the backend can run here, else a human-readable reason."""

    @property
    @abc.abstractmethod
    def urls(self) -> list[str]:
        """Client URLs of the three members (``http://127.0.0.1:PORT``)."""

    @property
    @abc.abstractmethod
    def headers(self) -> dict[str, str]:
        """Headers to send with every request."""

    @abc.abstractmethod
    def start(self) -> None:
        """Create and start the cluster (returns once processes are launched)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop every process and remove temporary state; idempotent."""

    @abc.abstractmethod
    def pid_of(self, name: str) -> int | None:
        """Pid of member ``name`` if it is running."""

    @abc.abstractmethod
    def restart(self, name: str) -> None:
        """Start member ``name`` again on its existing data."""

    @abc.abstractmethod
    def version(self) -> str:
        """Version string for the report."""

    @abc.abstractmethod
    def describe_failure(self) -> str:
        """Log tails to show when something went wrong."""

    def kill(self, name: str) -> int:
        """SIGKILL member ``name``; returns the pid. Never blocks (safe inside the event loop)."""
        pid = self.pid_of(name)
        if pid is None:
            raise RuntimeError(f"{self.label}: member {name} has no running process")
        os.kill(pid, signal.SIGKILL)
        return pid

    def __enter__(self) -> ClusterBackend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- etcd


@dataclass
class _EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://{LOCALHOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{LOCALHOST}:{self.peer_port}"


class EtcdCluster(ClusterBackend):
    """Three real etcd processes in a temporary directory, default raft timings.

    etcd ships with heartbeat 100 ms and election timeout 1000 ms; we pass neither flag so
    the figures are etcd's out-of-the-box behaviour. A killed member is restarted with the
    same flags and ``--initial-cluster-state existing``; since its data dir already holds a
    WAL, etcd ignores the bootstrap flags and simply rejoins.
    """

    label = "etcd"

    def __init__(self, binary: str | None = None) -> None:
        found = binary or shutil.which("etcd")
        if found is None:
            raise BackendUnavailable(self.unavailable_reason() or "etcd not found")
        self.binary: str = found
        self._tmp: Path | None = None
        self._members: dict[str, _EtcdMember] = {}
        self._token = f"bench-{os.getpid()}-{int(time.time())}"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if shutil.which("etcd") is None:
            return (
                "etcd binary not found on PATH (Debian: `apt-get install etcd-server`); "
                "skipping the etcd backend"
            )
        return None

    @property
    def urls(self) -> list[str]:
        return [m.client_url for m in self._members.values()]

    @property
    def headers(self) -> dict[str, str]:
        return {}

    def version(self) -> str:
        try:
            out = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "etcd (version unknown)"
        first = out.splitlines()[0] if out else "etcd (version unknown)"
        return first.replace("etcd Version:", "etcd").strip()

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self._members.values())

    def _args(self, m: _EtcdMember, state: str) -> list[str]:
        return [
            self.binary,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url,
            "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url,
            "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-state", state,
            "--initial-cluster-token", self._token,
        ]  # fmt: skip

    def _spawn(self, m: _EtcdMember, state: str) -> None:
        log = m.log_path.open("ab")
        try:
            m.proc = subprocess.Popen(
                self._args(m, state),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        _LIVE_PGIDS.add(m.proc.pid)

    def start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="rk-bench-etcd-"))
        ports = free_ports(2 * len(MEMBER_NAMES))
        for i, name in enumerate(MEMBER_NAMES):
            self._members[name] = _EtcdMember(
                name=name,
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                data_dir=self._tmp / f"{name}.etcd",
                log_path=self._tmp / f"{name}.log",
            )
        for m in self._members.values():
            self._spawn(m, "new")

    def _reap(self, m: _EtcdMember, timeout: float = 5.0) -> None:
        if m.proc is None:
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            m.proc.wait(timeout=timeout)
        if m.proc.poll() is not None:
            _forget(m.proc.pid)

    def stop(self) -> None:
        for m in self._members.values():
            if m.proc is not None:
                _kill_group(m.proc.pid)
                self._reap(m)
                m.proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self._members.clear()

    def pid_of(self, name: str) -> int | None:
        m = self._members.get(name)
        if m is None or m.proc is None or m.proc.poll() is not None:
            return None
        return m.proc.pid

    def restart(self, name: str) -> None:
        m = self._members[name]
        if self.pid_of(name) is not None:
            return
        if m.proc is not None:
            self._reap(m, timeout=5.0)  # the killed process: collect the zombie
            _forget(m.proc.pid)
        self._spawn(m, "existing")

    def describe_failure(self) -> str:
        parts = []
        for m in self._members.values():
            parts.append(f"--- {m.name} ({m.log_path}) ---\n{tail(m.log_path)}")
        return "\n".join(parts)


# --------------------------------------------------------------------------- raftkube


def _parse_rk_config(text: str) -> dict[str, Any]:
    """Read ``servers`` and ``token`` from rk's config.yaml (PyYAML if present)."""
    try:
        import yaml
    except ImportError:  # tiny fallback: `key: value` and `- item` lists only
        out: dict[str, Any] = {}
        current: str | None = None
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip():
                continue
            stripped = line.strip()
            if stripped.startswith("- ") and current is not None:
                out.setdefault(current, []).append(stripped[2:].strip().strip("'\""))
                continue
            if ":" in line and not line.startswith((" ", "\t")):
                key, _, value = line.partition(":")
                value = value.strip()
                current = key.strip()
                if value.startswith("[") and value.endswith("]"):
                    out[current] = [v.strip().strip("'\"") for v in value[1:-1].split(",") if v]
                elif value:
                    out[current] = value.strip("'\"")
        return out
    loaded = yaml.safe_load(text)
    if not isinstance(loaded, dict):
        raise RuntimeError("rk config.yaml is not a mapping")
    return loaded


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:  # noqa: BLE001 - a missing or broken package just means "no"
        return False


def rk_command() -> list[str] | None:
    """How to invoke the raftkube CLI.

    ``python -m raftkube.cli`` when the repo's package has a ``__main__``; else the console
    script's target (``raftkube.cli.main:main`` per pyproject.toml) through ``python -c``;
    else ``rk`` on PATH; else None.
    """
    root = str(REPO_ROOT)
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        if _has_module("raftkube.cli.__main__"):
            return [sys.executable, "-m", "raftkube.cli"]
        if _has_module("raftkube.cli.main"):
            shim = "import sys; from raftkube.cli.main import main; sys.exit(main())"
            return [sys.executable, "-c", shim]
    finally:
        if added:
            sys.path.remove(root)
    rk = shutil.which("rk")
    return [rk] if rk is not None else None


class RaftkubeCluster(ClusterBackend):
    """A raftkube control plane started with ``rk up --masters 3 --agents 0``.

    Contract relied on (see the brief in bench/store.py's docstring):
    ``rk up --masters 3 --agents 0 --state-dir DIR`` writes ``DIR/config.yaml`` (``servers``:
    client URLs, ``token``: bearer token), ``DIR/pids/NAME.pid`` and ``DIR/logs/NAME.log`` for
    members m1..m3; running it again restarts any member that is not running;
    ``rk down --state-dir DIR`` stops everything. ``--master-arg=ARG`` (repeatable) passes ARG
    to every ``rk master`` and is remembered in ``DIR/cluster.yaml``; subclasses set
    :attr:`MASTER_ARGS` to use it, and every ``rk up`` passes them again and checks that each
    running member's command line carries them.
    """

    label = "raftkube"
    MASTER_ARGS: tuple[str, ...] = ()  # extra arguments for every `rk master`
    UP_TIMEOUT_S = 120.0
    DOWN_TIMEOUT_S = 60.0

    def __init__(self) -> None:
        cmd = rk_command()
        if cmd is None:
            raise BackendUnavailable(self.unavailable_reason() or "rk not found")
        self._cmd: list[str] = cmd
        self._dir: Path | None = None
        self._urls: list[str] = []
        self._token = ""
        self._pids: set[int] = set()

    @classmethod
    def unavailable_reason(cls) -> str | None:
        if rk_command() is None:
            return (
                f"raftkube CLI unavailable: neither raftkube.cli.__main__ nor raftkube.cli.main "
                f"is importable from {REPO_ROOT}, and no `rk` on PATH; "
                "skipping the raftkube backend"
            )
        return None

    @property
    def urls(self) -> list[str]:
        return list(self._urls)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    @property
    def state_dir(self) -> Path:
        if self._dir is None:
            raise RuntimeError("raftkube cluster not started")
        return self._dir

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        return env

    def _rk(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        argv = [*self._cmd, *args]
        try:
            res = subprocess.run(
                argv,
                cwd=REPO_ROOT,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except FileNotFoundError as e:
            raise BackendUnavailable(f"cannot run {argv[0]}: {e}") from e
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"`{' '.join(argv)}` did not finish within {timeout:.0f}s") from e
        if res.returncode != 0:
            raise RuntimeError(
                f"`{' '.join(argv)}` exited {res.returncode}:\n"
                f"{res.stdout[-2000:]}{res.stderr[-2000:]}"
            )
        return res

    def _up(self) -> None:
        self._rk(
            # Plain HTTP, as the etcd cluster beside it is measured.
            "up", "--masters", "3", "--agents", "0", "--insecure-http",
            "--state-dir", str(self.state_dir),
            *(f"--master-arg={a}" for a in self.MASTER_ARGS),
            timeout=self.UP_TIMEOUT_S,
        )  # fmt: skip
        self._register_pids()
        self._check_master_args()

    def _check_master_args(self) -> None:
        """Fail unless every running member was started with :attr:`MASTER_ARGS`.

        A variant whose flag silently did not reach the masters would be measured as the
        normal configuration, so its figures would be meaningless.
        """
        if not self.MASTER_ARGS:
            return
        for name in MEMBER_NAMES:
            pid = self.pid_of(name)
            if pid is None:
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue  # no procfs: nothing to check against
            missing = [a for a in self.MASTER_ARGS if a not in argv.split("\0")]
            if missing:
                raise RuntimeError(
                    f"{self.label}: member {name} (pid {pid}) runs without {missing}; "
                    f"argv: {argv.replace(chr(0), ' ').strip()}"
                )

    def _register_pids(self) -> None:
        # rk's members are not our children; remember their pids so atexit can SIGKILL them
        # even if `rk down` never runs. They may not lead their own process group, so kill
        # the pid itself (a "group" of one) unless it does.
        for name in MEMBER_NAMES:
            pid = self.pid_of(name)
            if pid is not None:
                try:
                    pgid = os.getpgid(pid)
                except ProcessLookupError:
                    continue
                (_LIVE_PGIDS if pgid == pid else _RK_PIDS).add(pid)
                self._pids.add(pid)

    def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="rk-bench-raftkube-"))
        self._up()
        cfg_path = self.state_dir / "config.yaml"
        try:
            cfg = _parse_rk_config(cfg_path.read_text())
        except OSError as e:
            raise RuntimeError(f"rk up did not write {cfg_path}: {e}") from e
        servers = cfg.get("servers")
        if not isinstance(servers, list) or len(servers) != 3:
            raise RuntimeError(f"{cfg_path}: expected 3 `servers`, got {servers!r}")
        self._urls = [str(s).rstrip("/") for s in servers]
        for u in self._urls:
            host = u.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]")
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise RuntimeError(f"refusing to benchmark non-loopback server {u}")
        self._token = str(cfg.get("token") or "")

    def stop(self) -> None:
        if self._dir is None:
            return
        try:
            self._rk("down", "--state-dir", str(self._dir), timeout=self.DOWN_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - fall back to killing pids ourselves
            print(f"[raftkube] rk down failed ({e}); killing member pids", file=sys.stderr)
        for name in MEMBER_NAMES:
            pid = self.pid_of(name)
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for pid in self._pids:
            _forget(pid)
        self._pids.clear()
        shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def pid_of(self, name: str) -> int | None:
        if self._dir is None:
            return None
        try:
            pid = int((self._dir / "pids" / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def kill(self, name: str) -> int:
        pid = super().kill(name)
        _forget(pid)
        self._pids.discard(pid)
        return pid

    def restart(self, name: str) -> None:
        self._up()
        if self.pid_of(name) is None:
            raise RuntimeError(f"rk up did not restart member {name}")

    def version(self) -> str:
        try:
            res = self._rk("--version", timeout=20)
        except Exception:  # noqa: BLE001 - optional information only
            return "raftkube (version unknown)"
        out = (res.stdout or res.stderr).strip()
        return out.splitlines()[0] if out else "raftkube (version unknown)"

    def describe_failure(self) -> str:
        if self._dir is None:
            return "(raftkube state dir already removed)"
        return "\n".join(
            f"--- {n} ---\n{tail(self._dir / 'logs' / f'{n}.log')}" for n in MEMBER_NAMES
        )


class RaftkubeNoFsyncCluster(RaftkubeCluster):
    """raftkube with ``rk master --unsafe-no-fsync``: the journal is never fdatasync'd.

    Not a configuration anyone should run: it acknowledges writes that a power loss could
    erase. It exists so bench/store.py can measure what the group commit (fdatasync of the
    journal before a write is acknowledged) costs, by comparison with :class:`RaftkubeCluster`.
    """

    label = "raftkube-nofsync"
    MASTER_ARGS = ("--unsafe-no-fsync",)


BACKENDS: dict[str, type[ClusterBackend]] = {
    "raftkube": RaftkubeCluster,
    "raftkube-nofsync": RaftkubeNoFsyncCluster,
    "etcd": EtcdCluster,
}
