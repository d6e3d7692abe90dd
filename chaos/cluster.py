"""One local cluster for a chaos run: real `rk master` and `rk agent` processes, killed
and paused with real signals.

Processes are started through `rk up`'s own code (`raftkube.cli.local`, which runs
`sys.executable -m raftkube.cli ...`), so the runner needs no `rk` on PATH and no test
suite. The masters are reached over the etcd JSON API with one aiohttp session; object
scenarios get a `RestClient` over every master.
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import threading
import time
from typing import Any

import aiohttp
import yaml

from raftkube.cli import local
from raftkube.client import rest, transport

STATUS = "/v3/maintenance/status"


class Cluster:
    """`masters` masters and `agents` agents (n1..) in `state_dir`. `master_args` are extra
    `rk master` flags for every start; `agent_args` the same for agents."""

    STOP_SECONDS = 10.0  # for a signalled process to exit (then SIGKILL, once)

    def __init__(self, state_dir: str, *, masters: int = 3, agents: int = 0,
                 runtime: str = "simulated", topology: str = "loopback",
                 master_args: list[str] | None = None,
                 agent_args: list[str] | None = None) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.masters = masters
        self.agents = agents
        self.runtime = runtime
        self.topology = topology
        self.master_args = list(master_args or [])
        self.agent_args = list(agent_args or [])
        self.names: list[str] = [f"m{i}" for i in range(1, masters + 1)]
        self.agent_names: list[str] = [f"n{i}" for i in range(1, agents + 1)]
        self.urls: dict[str, str] = {}
        self.by_id: dict[str, str] = {}  # Raft member id (as status reports it) -> name
        self.token = ""
        self.ca: str | None = None
        self.ssl: ssl.SSLContext | None = None
        self._session: aiohttp.ClientSession | None = None
        self._transport: transport.Transport | None = None
        # Held by every blocking step on processes (up, kill, start, down), each run in a
        # thread: a cancelled await does not stop its thread, so without it `down` (run
        # on cancellation, SIGTERM, a scenario's error) could stop the masters while an
        # interrupted `up` was still starting more, which then outlived the run.
        self._processes = threading.Lock()

    # ---- processes ----------------------------------------------------------------------

    def _up(self) -> None:
        with self._processes:
            self._up_locked()

    def _up_locked(self) -> None:
        options: dict[str, Any] = {}
        if self.topology != "loopback":
            options["topology"] = self.topology
        local.up(state_dir=self.state_dir, masters=self.masters, agents=self.agents,
                 runtime=self.runtime, master_args=self.master_args,
                 agent_args=self.agent_args, timeout=90.0, **options)
        with open(os.path.join(self.state_dir, "config.yaml")) as f:
            config = yaml.safe_load(f)
        self.token = config["token"]
        self.ca = config.get("ca")
        self.ssl = transport.tls_context(self.ca) if self.ca else None
        layout = local.load_layout(self.state_dir, self.masters)
        names = [m["name"] for m in layout["masters"]]
        self.urls = dict(zip(names, local.server_urls(layout), strict=True))

    async def up(self) -> None:
        """Start whatever is not running; wait for a leader and every agent's Nodes."""
        await asyncio.get_running_loop().run_in_executor(None, self._up)
        if len(self.by_id) < len(self.names):
            await self._learn_ids()

    async def _learn_ids(self) -> None:
        """Each master's Raft member id, from its own status (`leader` names an id)."""
        opened = self._session is None
        if opened:
            await self.__aenter__()
        try:
            deadline = time.monotonic() + 30
            while len(self.by_id) < len(self.names) and time.monotonic() < deadline:
                for name in self.names:
                    st = await self.status(name)
                    if st is not None:
                        self.by_id[str(st["header"]["member_id"])] = name
                await asyncio.sleep(0.05)
        finally:
            if opened:
                await self.__aexit__()
                self._session = None
        if len(self.by_id) < len(self.names):
            raise TimeoutError("not every master answered its status within 30s")

    def _down(self) -> None:
        with self._processes:  # after whatever an interrupted step is still doing
            self._down_locked()

    def _down_locked(self) -> None:
        local.down(state_dir=self.state_dir)
        # What `rk down` also does: the containers, networks and volumes of its agents.
        if local.used_docker(self.state_dir) and local.docker_problem() is None:
            local.remove_containers(state_dir=self.state_dir)
            local.remove_networks_volumes(state_dir=self.state_dir)

    async def down(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._down)

    def pid(self, name: str) -> int | None:
        return local.pid_alive(os.path.join(self.state_dir, "pids", f"{name}.pid"))

    def _kill(self, names: tuple[str, ...], sig: int) -> None:
        with self._processes:
            self._kill_locked(names, sig)

    def _kill_locked(self, names: tuple[str, ...], sig: int) -> None:
        pids = []
        for name in names:
            pid = self.pid(name)
            if pid is None:
                raise RuntimeError(f"{name} is not running")
            os.kill(pid, sig)
            pids.append(pid)
        if not self._exited(pids) and sig != signal.SIGKILL:
            # A member that does not stop when asked must not run on beside the copy
            # started next on its data dir: that one's pid file would hide it from
            # `down`, and it outlived the run.
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self._exited(pids)
        local.reap()
        alive = [p for p in pids if local._running(p)]
        if alive:
            raise RuntimeError(f"{', '.join(names)}: pids {alive} still running "
                               f"{2 * self.STOP_SECONDS:g}s after signal {sig} and SIGKILL")

    def _exited(self, pids: list[int]) -> bool:
        deadline = time.monotonic() + self.STOP_SECONDS
        while any(local._running(p) for p in pids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    async def kill(self, *names: str, sig: int = signal.SIGKILL) -> None:
        """Signal the members (or agents) at once; return when every one has exited."""
        await asyncio.get_running_loop().run_in_executor(None, self._kill, names, sig)

    async def start(self, name: str, extra: list[str] | None = None) -> None:
        """Start one master with `extra` flags (once), or whatever else is not running."""
        if extra and name in self.names:
            await asyncio.get_running_loop().run_in_executor(
                None, self._start_member, name, self.master_args + extra)
            return
        await self.up()

    def _start_member(self, name: str, args: list[str]) -> None:
        with self._processes:
            local.start_member(self.state_dir, name, args)

    def pause(self, name: str) -> None:
        pid = self.pid(name)
        if pid is None:
            raise RuntimeError(f"{name} is not running")
        os.kill(pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    def data_dir(self, name: str) -> str:
        return os.path.join(self.state_dir, "data", name)

    # ---- API ----------------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            connector=aiohttp.TCPConnector(limit=200, ssl=self.ssl or True,
                                           enable_cleanup_closed=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            await self._transport.close()
        if self._session is not None:
            if self._session.connector is not None:
                await self._session.connector.close(abort_ssl=True)
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use the cluster as `async with cluster:` first")
        return self._session

    def rest(self) -> rest.RestClient:
        """The object API over every master, failing over as `rk` does."""
        if self._transport is None:
            self._transport = transport.Transport(
                [self.urls[n] for n in self.names], self.token, ca=self.ca)
        return rest.RestClient(self._transport)

    async def status(self, name: str, timeout: float = 1.0) -> dict[str, Any] | None:
        try:
            async with self.session.post(self.urls[name] + STATUS, json={},
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                if resp.status != 200:
                    return None
                answer: dict[str, Any] = await resp.json(content_type=None)
                return answer
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def leader(self, timeout: float = 30.0, among: list[str] | None = None) -> str:
        """The master that a majority of `among` (default: all) agree leads, once they do."""
        among = among or self.names
        deadline = time.monotonic() + timeout
        while True:
            statuses = await asyncio.gather(*(self.status(n) for n in among))
            leaders = [s["leader"] for s in statuses if s and s.get("leader") not in (None, "0")]
            need = min(len(among), len(self.names) // 2 + 1)
            if leaders and len(set(leaders)) == 1 and len(leaders) >= need \
                    and self.by_id.get(leaders[0]) in among:
                return self.by_id[leaders[0]]
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leader agreed among {among} within {timeout:g}s")
            await asyncio.sleep(0.05)

    async def caught_up(self, timeout: float = 30.0) -> None:
        """Wait until every master has applied what the leader had applied when this
        was called (under load their revisions are never equal at one instant)."""
        leader = await self.leader(timeout=timeout)
        st = await self.status(leader)
        target = int(st["header"]["revision"]) if st else 0
        deadline = time.monotonic() + timeout
        while True:
            statuses = await asyncio.gather(*(self.status(n) for n in self.names))
            if all(s and int(s["header"]["revision"]) >= target for s in statuses):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"members did not reach revision {target} in {timeout:g}s")
            await asyncio.sleep(0.05)

    async def term(self, name: str) -> int | None:
        st = await self.status(name)
        return int(st["header"]["raft_term"]) if st else None
