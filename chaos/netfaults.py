"""Network faults between the members of a netns cluster (`rk up --topology netns`):
isolation, partitions, a lossy link and a slow link, all made inside the members' own
network namespaces and all undone by `heal`. Pure mechanism: which fault when is the
chaos runner's business.

Every rule lives in one chain per namespace and table, RK-FAULTS, hooked first into
INPUT/OUTPUT (filter: drops) and PREROUTING/OUTPUT (nat: the slow link's redirects).
Rules name the *peers'* addresses only (the other members of the layout), so the root
namespace (the bridge's gateway, where the chaos client runs) always reaches every
member, and sees an isolated leader refuse writes rather than time out. `heal` unhooks,
flushes and deletes the chains and stops the proxies: nothing of this module is left,
and it is idempotent (a new NetFaults over the same layout heals what a crashed one
left).

- `isolate(name, from_)`: DROP to and from those members' addresses (default: every
  other member) in `name`'s namespace.
- `partition(groups)`: every member isolated from the members of the other groups.
- `flaky(name, p)`: iptables' `statistic` match drops each packet between `name` and
  its peers with probability p.
- `slow(name, delay)`: this kernel has no `tc netem`, so a userspace proxy delays the
  link. In `name`'s namespace, nat REDIRECT sends its TCP connections to peers (OUTPUT)
  and its peers' connections to it (PREROUTING) to a proxy listening in that namespace;
  the proxy finds the real destination with SO_ORIGINAL_DST, connects there (its own
  socket carries a mark the redirect skips) and forwards every chunk, in both
  directions, `delay` seconds after it arrived. Redirects apply to new connections, so
  the member's established connections to its peers are killed (`ss -K`) and reconnect
  through the proxy. The proxies run on one asyncio loop in a daemon thread; their
  sockets are made inside the namespace by a short-lived thread that `setns`es into it.

Bounds: probability in (0, 1], delay in (0, MAX_DELAY], at most MAX_CONNECTIONS proxied
connections per member, every subprocess with a timeout.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

CHAIN = "RK-FAULTS"
HOOKS = {"filter": ("INPUT", "OUTPUT"), "nat": ("PREROUTING", "OUTPUT")}
MARK = 0x524B  # "RK": the proxy's own upstream connections, never redirected
MAX_DELAY = 5.0
MAX_CONNECTIONS = 64
SO_ORIGINAL_DST = 80
CLONE_NEWNET = 0x40000000
CHUNK = 65536
QUEUED_CHUNKS = 256  # per direction: a bound on what a slow link holds in memory

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class NetFaultError(Exception):
    """A fault could not be made or undone (the message says which and why), or its
    arguments are wrong (the message names the argument)."""


@dataclass(frozen=True)
class Member:
    namespace: str
    address: str


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=20)


class NetFaults:
    """Faults over `members`: name -> Member(namespace, address), or -> (namespace,
    address). Use `from_state_dir` for a cluster made by `rk up --topology netns`."""

    def __init__(self, members: Mapping[str, Member | tuple[str, str]], *,
                 run: Runner = _run) -> None:
        self.members = {n: m if isinstance(m, Member) else Member(*m)
                        for n, m in members.items()}
        if not self.members:
            raise NetFaultError("members: the layout names no member")
        self._run = run
        self._proxies: dict[str, _Proxy] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def from_state_dir(cls, state_dir: str, *, run: Runner = _run) -> NetFaults:
        from raftkube.cli import local  # the layout as `rk up` stored it

        plan = local.netns_plan(os.path.abspath(state_dir))
        if plan is None:
            raise NetFaultError(f"{state_dir}: not a netns cluster (`rk up --topology netns`)")
        return cls({n: Member(m.namespace, m.address) for n, m in plan.members.items()},
                   run=run)

    # ---- faults -------------------------------------------------------------------------

    def isolate(self, name: str, from_: Iterable[str] | None = None) -> None:
        """Drop everything between `name` and `from_` (default: every other member)."""
        others = self._others(name, from_, "from_")
        self._append(name, "filter", [r for o in others for r in (
            ["-s", self.members[o].address, "-j", "DROP"],
            ["-d", self.members[o].address, "-j", "DROP"])])

    def partition(self, groups: Sequence[Sequence[str]]) -> None:
        """Cut every link between members of different `groups` (disjoint, 2 or more)."""
        check_groups(groups, self.members)
        for i, group in enumerate(groups):
            outside = [m for j, g in enumerate(groups) if j != i for m in g]
            for name in group:
                self.isolate(name, outside)

    def flaky(self, name: str, probability: float) -> None:
        """Drop each packet between `name` and its peers with `probability`."""
        if not isinstance(probability, int | float) or not 0 < probability <= 1:
            raise NetFaultError(f"probability: {probability!r} is not in (0, 1]")
        stat = ["-m", "statistic", "--mode", "random", "--probability", f"{probability:.4f}"]
        self._append(name, "filter", [r for o in self._others(name, None, "name") for r in (
            ["-s", self.members[o].address, *stat, "-j", "DROP"],
            ["-d", self.members[o].address, *stat, "-j", "DROP"])])

    def slow(self, name: str, delay_seconds: float) -> None:
        """Delay every chunk of `name`'s TCP traffic with its peers by `delay_seconds`,
        each way, through a proxy in its namespace (see the module's docstring)."""
        if not isinstance(delay_seconds, int | float) or not 0 < delay_seconds <= MAX_DELAY:
            raise NetFaultError(f"delay_seconds: {delay_seconds!r} is not in "
                                f"(0, {MAX_DELAY:g}]")
        peers = self._others(name, None, "name")
        if name in self._proxies:
            self._proxies[name].delay = float(delay_seconds)
            return
        proxy = self._call(_Proxy.start(self.members[name].namespace, float(delay_seconds)))
        self._proxies[name] = proxy
        rules = []
        for o in peers:
            addr = self.members[o].address
            rules.append(["-p", "tcp", "-d", addr, "-m", "mark", "!", "--mark", hex(MARK),
                          "-j", "REDIRECT", "--to-ports", str(proxy.port)])
            rules.append(["-p", "tcp", "-s", addr, "-j", "REDIRECT", "--to-ports",
                          str(proxy.port)])
        self._append(name, "nat", rules)
        for o in peers:  # established connections do not pass nat again: reconnect them
            self._ns(name, "ss", "-K", "dst", self.members[o].address, check=False)

    def heal(self, name: str | None = None) -> None:
        """Undo every fault of `name` (default: of every member): chains unhooked,
        flushed and deleted, proxies stopped. Idempotent."""
        names = [self._check(name, "name")] if name is not None else list(self.members)
        for n in names:
            proxy = self._proxies.pop(n, None)
            if proxy is not None:
                self._call(proxy.stop())
            for table, hooks in HOOKS.items():
                for hook in hooks:
                    while self._ipt(n, table, "-D", hook, "-j", CHAIN,
                                    check=False).returncode == 0:
                        pass
                self._ipt(n, table, "-F", CHAIN, check=False)
                self._ipt(n, table, "-X", CHAIN, check=False)
        if not self._proxies:
            self._stop_loop()

    def rules(self, name: str) -> dict[str, list[str]]:
        """table -> the `iptables -S` lines of `name`'s fault chain and hooks (empty when
        healed): what checks look at."""
        self._check(name, "name")
        out: dict[str, list[str]] = {}
        for table in HOOKS:
            done = self._ipt(name, table, "-S", check=False)
            lines = [x for x in done.stdout.splitlines() if CHAIN in x]
            if lines:
                out[table] = lines
        return out

    def proxied(self, name: str) -> int:
        """How many connections `name`'s slow-link proxy has taken (0 without one)."""
        proxy = self._proxies.get(name)
        return proxy.accepted if proxy is not None else 0

    def __enter__(self) -> NetFaults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()

    # ---- helpers -------------------------------------------------------------------------

    def _check(self, name: str, what: str) -> str:
        if name not in self.members:
            raise NetFaultError(f"{what}: {name!r} is not a member "
                                f"({', '.join(sorted(self.members))})")
        return name

    def _others(self, name: str, chosen: Iterable[str] | None, what: str) -> list[str]:
        self._check(name, "name")
        if chosen is None:
            return [n for n in self.members if n != name]
        if isinstance(chosen, str):
            raise NetFaultError(f"{what}: a list of member names, not the string {chosen!r}")
        others = [self._check(n, what) for n in chosen]
        if name in others:
            raise NetFaultError(f"{what}: {name} cannot be isolated from itself")
        return others

    def _ns(self, name: str, *argv: str, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        full = ["ip", "netns", "exec", self.members[name].namespace, *argv]
        done = self._run(full)
        if check and done.returncode != 0:
            raise NetFaultError(f"{name}: `{' '.join(argv)}` failed: {done.stderr.strip()}")
        return done

    def _ipt(self, name: str, table: str, *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
        return self._ns(name, "iptables", "-w", "-t", table, *args, check=check)

    def _append(self, name: str, table: str, rules: list[list[str]]) -> None:
        if self._ipt(name, table, "-L", CHAIN, "-n", check=False).returncode != 0:
            self._ipt(name, table, "-N", CHAIN)
        for hook in HOOKS[table]:
            if self._ipt(name, table, "-C", hook, "-j", CHAIN, check=False).returncode != 0:
                self._ipt(name, table, "-I", hook, "1", "-j", CHAIN)
        for rule in rules:
            self._ipt(name, table, "-A", CHAIN, *rule)

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            self._thread = threading.Thread(target=serve, name="netfaults-proxy",
                                            daemon=True)
            self._thread.start()
            ready.wait(5)
            self._loop = loop
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def _stop_loop(self) -> None:
        if self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop.close()
        self._loop = self._thread = None


def check_groups(groups: Sequence[Sequence[str]], members: Mapping[str, object]) -> None:
    if isinstance(groups, str) or len(groups) < 2:
        raise NetFaultError("groups: a partition needs a list of 2 or more lists of names")
    seen: set[str] = set()
    for group in groups:
        if isinstance(group, str) or not group:
            raise NetFaultError(f"groups: {group!r} is not a non-empty list of names")
        for name in group:
            if name not in members:
                raise NetFaultError(f"groups: {name!r} is not a member "
                                    f"({', '.join(sorted(members))})")
            if name in seen:
                raise NetFaultError(f"groups: {name} is in more than one group")
            seen.add(name)


# ---- the slow link's proxy -------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def socket_in(namespace: str, make: Callable[[], socket.socket]) -> socket.socket:
    """`make()` run in a fresh thread that has joined `namespace`: the socket belongs to
    that namespace for good, and no thread of ours stays in it."""
    result: list[socket.socket] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise NetFaultError(f"setns into {namespace}: {os.strerror(e)}")
            finally:
                os.close(fd)
            result.append(make())
        except BaseException as e:  # handed to the caller
            error.append(e)

    t = threading.Thread(target=body, name=f"setns-{namespace}", daemon=True)
    t.start()
    t.join(10)
    if error:
        raise error[0]
    if not result:
        raise NetFaultError(f"no socket could be made in {namespace}")
    return result[0]


def original_dst(sock: Any) -> tuple[str, int]:
    raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    port, packed = struct.unpack_from("!H4s", raw, 2)
    return socket.inet_ntoa(packed), int(port)


class _Proxy:
    """The delaying TCP proxy of one member (runs on NetFaults' loop)."""

    def __init__(self, namespace: str, delay: float) -> None:
        self.namespace = namespace
        self.delay = delay
        self.port = 0
        self.accepted = 0
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, namespace: str, delay: float) -> _Proxy:
        self = cls(namespace, delay)

        def listener() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 0))
            s.listen(MAX_CONNECTIONS)
            s.setblocking(False)
            return s

        sock = socket_in(namespace, listener)
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, sock=sock)
        return self

    async def stop(self) -> None:
        """Close the listener and abort every proxied connection (its member reconnects,
        now directly); return once every connection's task has ended."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=5)
            for t in late:
                t.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                      ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= MAX_CONNECTIONS:
            writer.transport.abort()
            return
        self._tasks.add(task)
        self._writers.add(writer)
        self.accepted += 1
        up_writer: asyncio.StreamWriter | None = None
        try:
            dst = original_dst(writer.get_extra_info("socket"))

            def upstream() -> socket.socket:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, MARK)
                s.setblocking(False)
                return s

            up = socket_in(self.namespace, upstream)
            loop = asyncio.get_running_loop()
            try:
                await asyncio.wait_for(loop.sock_connect(up, dst), timeout=5)
            except BaseException:
                up.close()
                raise
            up_reader, up_writer = await asyncio.open_connection(sock=up)
            self._writers.add(up_writer)
            pumps = [asyncio.ensure_future(self._pump(reader, up_writer)),
                     asyncio.ensure_future(self._pump(up_reader, writer))]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for p in pumps:
                    p.cancel()
                await asyncio.wait(pumps)
                for p in pumps:
                    if not p.cancelled():
                        p.exception()  # retrieved: a reset link is no error of ours
        except (OSError, asyncio.CancelledError):  # TimeoutError too; a stopped proxy
            pass  # (asyncio's server logs a connection task that ends cancelled)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.transport.abort()
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                    ) -> None:
        """Every chunk from `reader` written to `writer` `delay` seconds after it came."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=QUEUED_CHUNKS)

        async def feed() -> None:
            while True:
                data = await reader.read(CHUNK)
                await queue.put((loop.time() + self.delay, data))
                if not data:
                    return

        async def drain() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        await asyncio.gather(feed(), drain())
