"""A controller for real `rk master` processes on loopback, for cluster tests and chaos.

It starts members through `rk up`'s own code (so the tests exercise what users run),
kills them with real signals, and talks to them over the etcd JSON API with aiohttp.
Waiting is always on a predicate with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import yaml

from raftkube.api import kinds
from raftkube.cli import local
from raftkube.client import rest, transport
from raftkube.client.errors import ApiError
from raftkube.store.replica import member_id

Obj = dict[str, Any]
RK = os.path.join(os.path.dirname(sys.executable), "rk")  # the venv's console script


def b64(b: bytes | str) -> str:
    return base64.b64encode(b.encode() if isinstance(b, str) else b).decode()


def unb64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


class RequestFailed(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


class Cluster:
    def __init__(self, state_dir: str) -> None:
        self.state_dir = str(state_dir)
        self.session: aiohttp.ClientSession | None = None

    # ---- processes ----------------------------------------------------------------------

    def up(self, *, master_args: list[str] | None = None, **agents: Any) -> list[str]:
        """Start every member that is not running. `master_args` (kept for later starts,
        `[]` clears them) are extra `rk master` flags such as `--unsafe-no-fsync`;
        `agents` are `rk up`'s agent flags (`agents=2, agent_args=[...]`). What started."""
        started = local.up(state_dir=self.state_dir, masters=3, master_args=master_args,
                           **{"agents": 0, **agents})
        with open(os.path.join(self.state_dir, "config.yaml")) as f:
            cfg = yaml.safe_load(f)
        self.token = cfg["token"]
        self.ca: str | None = cfg.get("ca")  # the cluster CA's PEM (HTTPS, the default)
        layout = local.load_layout(self.state_dir, 3)
        self.members = {m["name"]: m for m in layout["masters"]}
        self.url = dict(zip([m["name"] for m in layout["masters"]],
                            local.server_urls(layout), strict=True))
        self.by_id = {str(member_id(m["raft"])): name for name, m in self.members.items()}
        return started

    def down(self) -> None:
        local.down(state_dir=self.state_dir)

    @property
    def names(self) -> list[str]:
        return sorted(self.members)

    def pid(self, name: str) -> int | None:
        return local.pid_alive(os.path.join(self.state_dir, "pids", f"{name}.pid"))

    def kill(self, *names: str, sig: int = signal.SIGKILL) -> None:
        """Signal the members at once, then wait until every one of them is gone."""
        pids = []
        for name in names:
            pid = self.pid(name)
            assert pid is not None, f"{name} is not running"
            os.kill(pid, sig)
            pids.append(pid)
        deadline = time.monotonic() + 10
        while any(local._running(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.01)

    async def kill_async(self, *names: str, sig: int = signal.SIGKILL) -> None:
        """`kill` off the event loop: writers and watches keep running meanwhile."""
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.kill(*names, sig=sig))

    async def up_async(self, *, master_args: list[str] | None = None) -> None:
        """`up` (which waits for a leader) off the event loop."""
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: self.up(master_args=master_args))

    def start(self, name: str, extra: list[str] | None = None, *,
              preexec: Callable[[], None] | None = None) -> None:
        local.start_member(self.state_dir, name, extra, preexec=preexec)

    def tls(self) -> ssl.SSLContext | bool:
        """What aiohttp verifies the masters with: the cluster CA (True: plain HTTP)."""
        return transport.tls_context(self.ca) if self.ca else True

    @contextlib.asynccontextmanager
    async def http(self, *, token: bool = True, **connector: Any
                   ) -> AsyncIterator[aiohttp.ClientSession]:
        """A session of its own to the masters (the admin token unless `token=False`),
        verifying them with the CA; its TLS connections are aborted at the end (Python
        3.11 can leave a socket of a TLS shutdown behind, which pytest reports)."""
        session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"} if token else None,
            connector=aiohttp.TCPConnector(ssl=self.tls(), enable_cleanup_closed=True,
                                           **connector))
        try:
            yield session
        finally:
            await close_session(session)

    @property
    def kubeconfig(self) -> str:
        return os.path.join(self.state_dir, "kubeconfig")

    def data_dir(self, name: str) -> str:
        return os.path.join(self.state_dir, "data", name)

    def term_and_vote_on_disk(self, name: str) -> tuple[int, str | None]:
        """The Raft term and vote a member keeps in its data dir, as it reads them at start
        (`journal.read_meta`); a missing or damaged meta reads as term 0 and no vote, so
        that a check of what survived fails on it."""
        from raftkube.store import journal

        try:
            term, voted, _commit = journal.read_meta(self.data_dir(name))
        except (journal.DataDirError, OSError):
            return 0, None
        return term, voted

    def log(self, name: str) -> str:
        with open(os.path.join(self.state_dir, "logs", f"{name}.log")) as f:
            return f.read()

    # ---- API ----------------------------------------------------------------------------

    async def __aenter__(self) -> Cluster:
        self.session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}"},
            connector=aiohttp.TCPConnector(limit=200, ssl=self.tls(),
                                           enable_cleanup_closed=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await close_session(self.session)

    async def call(self, name: str, path: str, body: dict[str, Any] | None = None, *,
                   timeout: float = 5.0, headers: dict[str, str] | None = None) -> Any:
        assert self.session is not None
        # A BytesIO body: aiohttp warns about sending large bytes in one piece.
        data = io.BytesIO(json.dumps(body or {}).encode())
        async with self.session.post(
                self.url[name] + path, data=data,
                headers={"Content-Type": "application/json", **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise RequestFailed(resp.status, data)
            return data

    async def put(self, name: str, key: str, value: str, **kw: Any) -> int:
        resp = await self.call(name, "/v3/kv/put", {"key": b64(key), "value": b64(value)}, **kw)
        return int(resp["header"]["revision"])

    async def get_prefix(self, name: str, prefix: str, *,
                         serializable: bool = False) -> dict[str, tuple[str, int]]:
        from raftkube.store.state import prefix_end

        resp = await self.call(name, "/v3/kv/range", {
            "key": b64(prefix), "range_end": b64(prefix_end(prefix.encode())),
            "serializable": serializable})
        return {unb64(kv["key"]).decode(): (unb64(kv.get("value")).decode(),
                                            int(kv["mod_revision"]))
                for kv in resp.get("kvs", [])}

    async def status(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = await self.call(name, "/v3/maintenance/status",
                                                     timeout=1.0)
            return result
        except (aiohttp.ClientError, TimeoutError, RequestFailed):
            return None

    async def leader(self, *, among: list[str] | None = None, timeout: float = 15.0) -> str:
        """The member a majority of `among` agree leads, once they do."""
        among = among or self.names

        async def agreed() -> str | None:
            statuses = await asyncio.gather(*(self.status(n) for n in among))
            leaders = [s["leader"] for s in statuses if s and s.get("leader") not in (None, "0")]
            if len(leaders) >= 2 and len(set(leaders)) == 1 and leaders[0] in self.by_id:
                name = self.by_id[leaders[0]]
                return name if name in among else None
            return None

        return await wait_for(agreed, timeout=timeout, what="a leader")

    async def put_anywhere(self, key: str, value: str, *, among: list[str],
                           deadline: float) -> int:
        """Put through whichever member answers, retrying until `deadline` (monotonic)."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            for name in among:
                try:
                    return await self.put(name, key, value, timeout=2.0)
                except (aiohttp.ClientError, TimeoutError, RequestFailed) as e:
                    last = e
            await asyncio.sleep(0.02)
        raise TimeoutError(f"put {key} not acknowledged: {last}")


async def wait_for(pred: Callable[[], Awaitable[Any]], *, timeout: float, what: str,
                   every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await pred()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(every)


class Writer:
    """Writes `prefix/N` keys in a loop through the given members; records what was acked."""

    def __init__(self, cluster: Cluster, prefix: str, among: list[str]) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.among = list(among)
        self.acked: dict[str, int] = {}
        self.ack_times: list[float] = []
        self._stop = asyncio.Event()
        self._n = 0

    async def run(self) -> None:
        while not self._stop.is_set():
            key = f"{self.prefix}/{self._n:06d}"
            self._n += 1
            try:
                rev = await self.cluster.put_anywhere(
                    key, f"v{self._n}", among=self.among, deadline=time.monotonic() + 20)
            except TimeoutError:
                continue
            self.acked[key] = rev
            self.ack_times.append(time.monotonic())

    def stop(self) -> None:
        self._stop.set()


# ---- what the tiers' tests share ------------------------------------------------------


async def close_session(session: aiohttp.ClientSession) -> None:
    """Close a session, aborting its TLS connections rather than shutting them down."""
    if session.connector is not None:
        await session.connector.close(abort_ssl=True)
    await session.close()


def started(factory: pytest.TempPathFactory, label: str, **up: Any) -> Iterator[Cluster]:
    """The body of a cluster fixture (`yield from started(...)`): a cluster in a fresh
    directory named after `label`, brought up with `Cluster.up(**up)`; every process it
    started is stopped, pass or fail."""
    c = Cluster(str(factory.mktemp(label)))
    try:
        c.up(**up)
        yield c
    finally:
        c.down()


@contextlib.asynccontextmanager
async def rest_client(c: Cluster, **options: Any) -> AsyncIterator[rest.RestClient]:
    """A REST client that knows every master of `c` (`options` go to the Transport)."""
    async with transport.Transport(list(c.url.values()), c.token, ca=c.ca, **options) as tp:
        yield rest.RestClient(tp)


async def pod_where(api: rest.RestClient, name: str, test: Callable[[Obj], Any], *,
                    timeout: float = 90, what: str = "", every: float = 0.1,
                    namespace: str = "default") -> Obj:
    """The pod `name` once `test` holds of it (a pod not there yet does not count)."""
    async def check() -> Obj | None:
        try:
            p = await api.get(kinds.POD, namespace, name)
        except ApiError:
            return None
        return p if test(p) else None

    found: Obj = await wait_for(check, timeout=timeout, what=what or f"pod {name}",
                                every=every)
    return found


async def gone(api: rest.RestClient, name: str, *, timeout: float = 90,
               namespace: str = "default") -> None:
    """Until the pod `name` is gone from the API (404)."""
    async def check() -> bool:
        try:
            await api.get(kinds.POD, namespace, name)
        except ApiError as e:
            return e.code == 404
        return False

    await wait_for(check, timeout=timeout, what=f"pod {name} gone", every=0.2)


def status_of(p: Obj, name: str, *, init: bool = False) -> Obj:
    """The status of container `name` (an init container's with `init`), or {}."""
    key = "initContainerStatuses" if init else "containerStatuses"
    for s in (p.get("status") or {}).get(key) or []:
        if s["name"] == name:
            return dict(s)
    return {}


def rk(config: Cluster | str | os.PathLike[str] | None, *args: str, stdin: str | None = None,
       timeout: float = 60, check: bool = False) -> subprocess.CompletedProcess[str]:
    """The installed `rk` command as a user runs it, with RK_CONFIG naming `config`: a
    cluster's own config.yaml, a config file, or (None) whatever the environment says."""
    env = dict(os.environ)
    if isinstance(config, Cluster):
        env["RK_CONFIG"] = os.path.join(config.state_dir, "config.yaml")
    elif config is not None:
        env["RK_CONFIG"] = os.fspath(config)
    return subprocess.run([RK, *args], env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=check)
