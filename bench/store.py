"""Benchmark of an etcd-v3-JSON-gateway key-value service: raftkube's store against real etcd.

raftkube's store promises to behave like etcd v3 behind its ``/v3/`` JSON API (see
shared/STORE-SEMANTICS.md), so the fair yardstick for its speed is etcd itself, run on the same
machine, through the same JSON gateway, by the same Python client. This script starts a fresh
3-member cluster of each backend on 127.0.0.1 (raftkube through ``rk up``, etcd from the
``etcd`` binary with its shipped timings: heartbeat 100 ms, election timeout 1000 ms), runs the
same workload against it, tears it down, and prints both sets of figures side by side with the
raftkube/etcd ratio and raftkube's goals.

Workload (one "round" per backend; rounds alternate raftkube, etcd, raftkube, ...):

1. **Sequential puts** - N puts of 100-byte values, one at a time, to the leader, over
   ``POST /v3/kv/put``. Measures the commit path latency a single writer sees: ops/s, p50, p99.
2. **64 puts in flight** - a fixed total of puts by 64 concurrent workers sharing one HTTP
   session, all sent to the leader. Measures throughput under load (batching and pipelining
   in the Raft log and the fsync path): ops/s, p50, p99.
3. **Watch latency** - a watch on a key prefix is opened on a *follower*; M sequential puts go
   to the leader; latency is from the put being issued to its event arriving on the stream.
   This covers replication to the follower, apply there and the watch fan-out: p50, p99.
4. **Leader-kill failover** - while one client writes continuously (one put at a time, each
   attempt with a 0.3 s timeout, moving to the next member on failure, no pause), the
   leader's process is SIGKILLed; we measure from the kill to the first acknowledged put
   *issued after* the kill. The member is restarted, the cluster must be healthy again (three
   members answering status with the same leader), and the round repeats. Note the figure's
   resolution is the attempt timeout when a leaderless member holds a request instead of
   failing fast (etcd does: its figures land on ~0.3 s steps), so a poller also records
   when a survivor's status first names a new leader (the election alone). The Raft term
   before and after shows how many elections each failover took (a jump > 1 means split
   votes or spurious extra elections).

**Durability cost** (``--fsync-cost``, on by default whenever raftkube runs): raftkube
acknowledges a write only after its journal is fdatasync'd (group commit: one flush covers every
write that arrived meanwhile). To show what that costs, each round also starts a fresh
``raftkube-nofsync`` cluster (``rk up --master-arg=--unsafe-no-fsync``: the journal is never
flushed; a measuring device only, never a configuration to run) right after the normal raftkube
round and runs workloads 1 and 2 on it (no watch, no failover). An extra table puts the two
side by side: throughput as the fsync / no-fsync ratio, latencies as the difference in ms.
``--no-fsync-cost`` skips it.

Leaders are found with ``POST /v3/maintenance/status`` on every member (``leader`` and
``header.member_id``; etcd's gateway renders int64 as JSON strings); a leader's member id is
mapped to a process through ``/v3/cluster/member/list`` names.

Run: ``python bench/store.py [--backend raftkube|etcd|both] [--rounds R] [--seq N]
[--inflight-total N] [--watch N] [--failover K] [--attempt-timeout S] [--no-fsync-cost]
[--record docs/benchmarks.md]``.
A backend that cannot run here (no ``etcd`` binary, no raftkube CLI) is skipped with a note.
All traffic goes to 127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import codecs
import contextlib
import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

if __package__ in (None, ""):  # run as `python bench/store.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.etcd_cluster import (  # noqa: E402
    BACKENDS,
    BackendUnavailable,
    ClusterBackend,
    RaftkubeNoFsyncCluster,
)

VALUE_SIZE = 100
OP_TIMEOUT_S = 5.0  # any single request in the throughput/latency workloads
STATUS_TIMEOUT_S = 1.0
FAILOVER_ATTEMPT_TIMEOUT_S = 0.3
FAILOVER_ACK_DEADLINE_S = 30.0  # give up on a failover round after this long without an ack
HEALTHY_TIMEOUT_S = 60.0
SETTLE_AFTER_HEALTHY_S = 1.0
INFLIGHT = 64

GOAL_SEQ_P99_MS = 5.0
GOAL_WATCH_P99_MS = 10.0
GOAL_FAILOVER_S = 0.6

NOFSYNC = RaftkubeNoFsyncCluster.label
DURABILITY_TITLE = "Durability cost (group commit: fdatasync before ack)"

SECTION_BEGIN = "<!-- bench/store.py: begin -->"
SECTION_END = "<!-- bench/store.py: end -->"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not samples:
        return math.nan
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix"."""
    p = bytearray(prefix)
    for i in range(len(p) - 1, -1, -1):
        if p[i] < 0xFF:
            p[i] += 1
            return bytes(p[: i + 1])
    return b"\0"


def as_int(value: Any) -> int:
    """int64 fields come as JSON strings from etcd's gateway and are omitted when zero."""
    if value is None or value == "":
        return 0
    return int(value)


# --------------------------------------------------------------------------- JSON gateway client


class GatewayError(RuntimeError):
    """A non-200 answer or an ``error`` body from the gateway."""


class Gateway:
    """Minimal client for the etcd v3 JSON gateway over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(
        self, url: str, path: str, body: dict[str, Any], timeout: float = OP_TIMEOUT_S
    ) -> dict[str, Any]:
        async with self.session.post(
            f"{url}{path}", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as resp:
            raw = await resp.read()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError as e:
            raise GatewayError(f"{path}: HTTP {resp.status}, not JSON: {raw[:200]!r}") from e
        if resp.status != 200 or not isinstance(data, dict) or "error" in data:
            msg = data.get("message") or data.get("error") if isinstance(data, dict) else data
            raise GatewayError(f"{path}: HTTP {resp.status}: {msg}")
        return data

    async def put(
        self, url: str, key: bytes, value: bytes, timeout: float = OP_TIMEOUT_S
    ) -> dict[str, Any]:
        return await self.call(
            url, "/v3/kv/put", {"key": b64(key), "value": b64(value)}, timeout=timeout
        )

    async def status(self, url: str, timeout: float = STATUS_TIMEOUT_S) -> dict[str, Any] | None:
        try:
            return await self.call(url, "/v3/maintenance/status", {}, timeout=timeout)
        except (GatewayError, aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def member_names(self, urls: Sequence[str]) -> dict[int, str]:
        """member_id -> name, from the first member that answers member/list."""
        last: Exception | None = None
        for url in urls:
            try:
                data = await self.call(url, "/v3/cluster/member/list", {}, timeout=2.0)
            except (GatewayError, aiohttp.ClientError, TimeoutError) as e:
                last = e
                continue
            return {as_int(m.get("ID")): str(m.get("name", "")) for m in data.get("members", [])}
        raise RuntimeError(f"no member answered /v3/cluster/member/list: {last}")


@dataclass
class ClusterView:
    """One status sweep over all members."""

    statuses: dict[str, dict[str, Any] | None]

    def member_id(self, url: str) -> int:
        st = self.statuses.get(url)
        return as_int(st.get("header", {}).get("member_id")) if st else 0

    def leaders(self) -> set[int]:
        return {as_int(st.get("leader")) for st in self.statuses.values() if st is not None}

    @property
    def healthy(self) -> bool:
        """All members answer and agree on one leader that is one of them."""
        if any(st is None for st in self.statuses.values()):
            return False
        leaders = self.leaders()
        ids = {self.member_id(u) for u in self.statuses}
        return len(leaders) == 1 and 0 not in leaders and leaders <= ids

    @property
    def leader_url(self) -> str | None:
        for url, st in self.statuses.items():
            if st is not None and as_int(st.get("leader")) == self.member_id(url) != 0:
                return url
        return None

    @property
    def term(self) -> int:
        terms = [
            as_int(st.get("header", {}).get("raft_term"))
            for st in self.statuses.values()
            if st is not None
        ]
        return max(terms, default=0)

    def version(self) -> str:
        for st in self.statuses.values():
            if st is not None and st.get("version"):
                return str(st["version"])
        return "?"


async def sweep(gw: Gateway, urls: Sequence[str]) -> ClusterView:
    results = await asyncio.gather(*(gw.status(u) for u in urls))
    return ClusterView(dict(zip(urls, results, strict=True)))


async def wait_healthy(
    gw: Gateway, urls: Sequence[str], timeout: float = HEALTHY_TIMEOUT_S
) -> ClusterView:
    deadline = time.monotonic() + timeout
    view = await sweep(gw, urls)
    while not view.healthy:
        if time.monotonic() > deadline:
            summary = {
                u: (
                    None
                    if st is None
                    else (st.get("header", {}).get("member_id"), st.get("leader"))
                )
                for u, st in view.statuses.items()
            }
            raise RuntimeError(f"cluster not healthy after {timeout:.0f}s: {summary}")
        await asyncio.sleep(0.1)
        view = await sweep(gw, urls)
    return view


async def leader_and_follower(gw: Gateway, urls: Sequence[str]) -> tuple[str, str, ClusterView]:
    view = await wait_healthy(gw, urls)
    leader = view.leader_url
    assert leader is not None  # healthy implies a leader among the members
    follower = next(u for u in urls if u != leader)
    return leader, follower, view


# --------------------------------------------------------------------------- results


@dataclass
class Throughput:
    ops: int
    seconds: float
    latencies_ms: list[float]
    errors: int

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds if self.seconds > 0 else math.nan


@dataclass
class FailoverRound:
    seconds: float  # kill -> first acknowledged put issued after the kill
    election_s: float  # kill -> a survivor's status names a new leader
    killed: str
    term_before: int
    term_at_ack: int
    term_after_rejoin: int
    failed_attempts: Counter[str]


@dataclass
class RoundResult:
    backend: str
    round_no: int
    version: str = "?"
    seq: Throughput | None = None
    inflight: Throughput | None = None
    watch_ms: list[float] = field(default_factory=list)
    watch_missing: int = 0
    failovers: list[FailoverRound] = field(default_factory=list)
    error: str | None = None


# --------------------------------------------------------------------------- workloads


def run_tag() -> str:
    return f"{os.getpid():x}{time.time_ns() % 10**9:x}"


async def seq_puts(gw: Gateway, leader: str, n: int, warmup: int = 10) -> Throughput:
    value = os.urandom(VALUE_SIZE)
    prefix = f"bench/seq/{run_tag()}/".encode()
    for i in range(warmup):
        await gw.put(leader, prefix + f"warm{i}".encode(), value)
    lats: list[float] = []
    errors = 0
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        try:
            await gw.put(leader, prefix + f"{i:07d}".encode(), value)
        except (GatewayError, aiohttp.ClientError, TimeoutError):
            errors += 1
            continue
        lats.append((time.perf_counter() - t0) * 1000)
    return Throughput(len(lats), time.perf_counter() - start, lats, errors)


async def inflight_puts(gw: Gateway, leader: str, total: int, inflight: int) -> Throughput:
    value = os.urandom(VALUE_SIZE)
    prefix = f"bench/par/{run_tag()}/".encode()
    lats: list[float] = []
    errors = 0

    async def worker(indices: Any) -> None:
        nonlocal errors
        for i in indices:
            t0 = time.perf_counter()
            try:
                await gw.put(leader, prefix + f"{i:07d}".encode(), value)
            except (GatewayError, aiohttp.ClientError, TimeoutError):
                errors += 1
                continue
            lats.append((time.perf_counter() - t0) * 1000)

    # warm-up: open the connections and let the leader's pipeline spin up
    warm = iter(range(total, total + 2 * inflight))
    await asyncio.gather(*(worker(warm) for _ in range(inflight)))
    lats.clear()
    errors = 0

    shared = iter(range(total))  # workers pull from one iterator: exactly `total` puts
    start = time.perf_counter()
    await asyncio.gather(*(worker(shared) for _ in range(inflight)))
    return Throughput(len(lats), time.perf_counter() - start, lats, errors)


class WatchStream:
    """Reads a ``/v3/watch`` response body: JSON objects, newline-separated or concatenated.

    Every object is ``{"result": {...}}`` (or ``{"error": {...}}``); the first result has
    ``created: true``. Each event key is recorded with the arrival time of the chunk that
    completed it.
    """

    def __init__(self) -> None:
        self.created = asyncio.Event()
        self.arrivals: dict[bytes, float] = {}
        self.expected = 0
        self.all_arrived = asyncio.Event()
        self.errors: list[str] = []
        self._decoder = json.JSONDecoder()
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self._buf = ""

    def feed(self, chunk: bytes, now: float) -> None:
        self._buf += self._utf8.decode(chunk)
        while True:
            text = self._buf.lstrip()
            if not text:
                self._buf = ""
                return
            try:
                obj, end = self._decoder.raw_decode(text)
            except ValueError:
                self._buf = text  # incomplete object: wait for more bytes
                return
            self._buf = text[end:]
            self._handle(obj, now)

    def _handle(self, obj: Any, now: float) -> None:
        if not isinstance(obj, dict):
            self.errors.append(f"unexpected frame {obj!r:.200}")
            return
        if "error" in obj:
            self.errors.append(str(obj["error"])[:300])
            self.created.set()  # unblock the waiter; it checks errors
            return
        result = obj.get("result", {})
        if result.get("created"):
            self.created.set()
        if result.get("canceled"):
            self.errors.append(f"watch canceled: {result.get('cancel_reason', '')}")
        for ev in result.get("events", []) or []:
            key = base64.b64decode(ev.get("kv", {}).get("key", ""))
            self.arrivals.setdefault(key, now)
        if self.expected and len(self.arrivals) >= self.expected:
            self.all_arrived.set()


async def watch_latency(gw: Gateway, leader: str, follower: str, m: int) -> tuple[list[float], int]:
    prefix = f"bench/watch/{run_tag()}/".encode()
    keys = [prefix + f"{i:07d}".encode() for i in range(m)]
    value = os.urandom(VALUE_SIZE)
    stream = WatchStream()
    stream.expected = m
    body = {"create_request": {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
    sent: dict[bytes, float] = {}
    async with gw.session.post(f"{follower}/v3/watch", json=body, timeout=timeout) as resp:
        if resp.status != 200:
            raise GatewayError(f"/v3/watch: HTTP {resp.status}: {(await resp.read())[:300]!r}")

        async def reader() -> None:
            async for chunk in resp.content.iter_any():
                stream.feed(chunk, time.perf_counter())

        reader_task = asyncio.create_task(reader())
        try:
            await asyncio.wait_for(stream.created.wait(), timeout=5.0)
            if stream.errors:
                raise GatewayError(f"/v3/watch: {stream.errors[0]}")
            for key in keys:
                sent[key] = time.perf_counter()
                try:
                    await gw.put(leader, key, value)
                except (GatewayError, aiohttp.ClientError, TimeoutError) as e:
                    del sent[key]  # counted as missing
                    log(f"  watch: put failed: {e}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stream.all_arrived.wait(), timeout=10.0)
        finally:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await reader_task
    lats = [(stream.arrivals[k] - t) * 1000 for k, t in sent.items() if k in stream.arrivals]
    if stream.errors:
        log(f"  watch stream errors: {stream.errors[:3]}")
    return lats, m - len(lats)


class FailoverWriter:
    """One put at a time, sticky to the last member that answered, moving on at any failure."""

    def __init__(
        self, gw: Gateway, urls: Sequence[str], first: str, attempt_timeout: float
    ) -> None:
        self.gw = gw
        self.attempt_timeout = attempt_timeout
        self.urls = list(urls)
        self.idx = self.urls.index(first)
        self.kill_time: float | None = None
        self.acked_after_kill = asyncio.Event()
        self.ack_time = math.nan
        self.ack_term = 0
        self.ok_before_kill = 0
        self.failures: Counter[str] = Counter()
        self.prefix = f"bench/failover/{run_tag()}/".encode()
        self.value = os.urandom(VALUE_SIZE)
        self._stop = False

    def stop(self) -> None:
        self._stop = True

    async def run(self, max_seconds: float) -> None:
        deadline = time.monotonic() + max_seconds
        i = 0
        while not self._stop and time.monotonic() < deadline:
            url = self.urls[self.idx]
            i += 1
            sent = time.perf_counter()
            try:
                resp = await self.gw.put(
                    url, self.prefix + f"{i:08d}".encode(), self.value,
                    timeout=self.attempt_timeout,
                )  # fmt: skip
            except (GatewayError, aiohttp.ClientError, TimeoutError, ValueError) as e:
                if self.kill_time is not None:
                    self.failures[_failure_kind(e)] += 1
                self.idx = (self.idx + 1) % len(self.urls)
                await asyncio.sleep(0)  # yield to the loop, no pause
                continue
            now = time.perf_counter()
            if self.kill_time is None:
                self.ok_before_kill += 1
            elif sent >= self.kill_time and not self.acked_after_kill.is_set():
                self.ack_time = now
                self.ack_term = as_int(resp.get("header", {}).get("raft_term"))
                self.acked_after_kill.set()


async def first_new_leader(
    gw: Gateway, urls: Sequence[str], old_leader: int, max_seconds: float
) -> float:
    """perf_counter time at which a member first reports a leader other than ``old_leader``.

    Polls every member's status every 20 ms (0.2 s timeout each); NaN if none within
    ``max_seconds``. This isolates the election from the client's retry granularity.
    """
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        results = await asyncio.gather(*(gw.status(u, timeout=0.2) for u in urls))
        now = time.perf_counter()
        for st in results:
            if st is not None and as_int(st.get("leader")) not in (0, old_leader):
                return now
        await asyncio.sleep(0.02)
    return math.nan


def _failure_kind(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, aiohttp.ClientConnectorError):
        return "connection refused"
    if isinstance(e, (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        return "connection reset/closed"
    text = str(e)
    text = re.sub(r"\d{4,}", "N", text)  # ports, ids: keep HTTP codes and errnos
    return f"{type(e).__name__}: {text[:80]}"


async def failover_round(
    gw: Gateway, cluster: ClusterBackend, round_no: int, attempt_timeout: float
) -> FailoverRound:
    urls = cluster.urls
    view = await wait_healthy(gw, urls)
    leader_url = view.leader_url
    assert leader_url is not None
    leader_id = view.member_id(leader_url)
    names = await gw.member_names([leader_url, *[u for u in urls if u != leader_url]])
    name = names.get(leader_id)
    if not name:
        raise RuntimeError(f"leader {leader_id} not in member/list {names}")
    term_before = view.term

    writer = FailoverWriter(gw, urls, first=leader_url, attempt_timeout=attempt_timeout)
    task = asyncio.create_task(writer.run(FAILOVER_ACK_DEADLINE_S + 10))
    try:
        # let writes flow for a moment (bounded) so the kill lands on a busy leader
        t_end = time.monotonic() + 5.0
        while writer.ok_before_kill < 20 and time.monotonic() < t_end:
            await asyncio.sleep(0.02)
        if writer.ok_before_kill == 0:
            raise RuntimeError("no put succeeded before the kill")
        pid = cluster.kill(name)
        writer.kill_time = time.perf_counter()
        survivors = [u for u in urls if u != leader_url]
        poller = asyncio.create_task(
            first_new_leader(gw, survivors, leader_id, FAILOVER_ACK_DEADLINE_S)
        )
        try:
            await asyncio.wait_for(writer.acked_after_kill.wait(), FAILOVER_ACK_DEADLINE_S)
        except TimeoutError as e:
            poller.cancel()
            raise RuntimeError(
                f"no put acknowledged within {FAILOVER_ACK_DEADLINE_S:.0f}s of killing "
                f"{name}; attempts: {dict(writer.failures)}"
            ) from e
        try:
            new_leader_at = await asyncio.wait_for(poller, 5.0)
        except TimeoutError:
            new_leader_at = math.nan
    finally:
        writer.stop()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, attempt_timeout * 3 + 1)
    seconds = writer.ack_time - writer.kill_time
    election = new_leader_at - writer.kill_time
    log(
        f"  failover {round_no}: killed {name} (pid {pid}, term {term_before}) -> "
        f"new leader seen after {election * 1000:.0f} ms, "
        f"ack after {seconds * 1000:.0f} ms at term {writer.ack_term}; "
        f"failed attempts {dict(writer.failures)}"
    )

    await asyncio.to_thread(cluster.restart, name)
    after = await wait_healthy(gw, urls)
    await asyncio.sleep(SETTLE_AFTER_HEALTHY_S)
    after = await wait_healthy(gw, urls)
    return FailoverRound(
        seconds=seconds,
        election_s=election,
        killed=name,
        term_before=term_before,
        term_at_ack=writer.ack_term,
        term_after_rejoin=after.term,
        failed_attempts=writer.failures,
    )


async def run_workload(cluster: ClusterBackend, args: argparse.Namespace, res: RoundResult) -> None:
    tag = f"[{res.backend} r{res.round_no}]"
    main_task = asyncio.current_task()
    if main_task is not None:  # SIGTERM: cancel cleanly, run_backend_round turns it into exit
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    connector = aiohttp.TCPConnector(limit=2 * INFLIGHT + 16)
    async with aiohttp.ClientSession(connector=connector, headers=cluster.headers) as session:
        gw = Gateway(session)
        view = await wait_healthy(gw, cluster.urls)
        res.version = view.version()
        log(f"{tag} healthy: leader {view.leaders()}, term {view.term}, version {res.version}")

        if args.seq > 0:
            leader, _, _ = await leader_and_follower(gw, cluster.urls)
            res.seq = await seq_puts(gw, leader, args.seq)
            log(f"{tag} sequential puts: {fmt_tp(res.seq)}")
        if args.inflight_total > 0:
            leader, _, _ = await leader_and_follower(gw, cluster.urls)
            res.inflight = await inflight_puts(gw, leader, args.inflight_total, INFLIGHT)
            log(f"{tag} {INFLIGHT} in flight (leader only): {fmt_tp(res.inflight)}")
        if args.watch > 0:
            leader, follower, _ = await leader_and_follower(gw, cluster.urls)
            res.watch_ms, res.watch_missing = await watch_latency(gw, leader, follower, args.watch)
            log(
                f"{tag} watch on follower: p50 {percentile(res.watch_ms, 50):.2f} ms, "
                f"p99 {percentile(res.watch_ms, 99):.2f} ms, missing {res.watch_missing}"
            )
        for k in range(1, args.failover + 1):
            res.failovers.append(await failover_round(gw, cluster, k, args.attempt_timeout))


def fmt_tp(t: Throughput) -> str:
    return (
        f"{t.ops_per_s:,.0f} ops/s, p50 {percentile(t.latencies_ms, 50):.2f} ms, "
        f"p99 {percentile(t.latencies_ms, 99):.2f} ms ({t.ops} ok, {t.errors} errors)"
    )


def run_backend_round(
    cls: type[ClusterBackend], args: argparse.Namespace, round_no: int
) -> RoundResult:
    res = RoundResult(backend=cls.label, round_no=round_no)
    cluster: ClusterBackend | None = None
    try:
        cluster = cls()
        log(f"[{cls.label} r{round_no}] starting 3-member cluster")
        cluster.start()
        log(f"[{cls.label} r{round_no}] members {cluster.urls}")
        try:
            asyncio.run(run_workload(cluster, args, res))
        finally:
            signal.signal(signal.SIGTERM, _sigterm)  # the loop reset it to SIG_DFL on close
    except asyncio.CancelledError:
        log(f"[{cls.label} r{round_no}] terminated")
        raise SystemExit(128 + signal.SIGTERM) from None
    except BackendUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - report and keep the other backend's figures
        res.error = f"{type(e).__name__}: {e}"
        log(f"[{cls.label} r{round_no}] FAILED: {res.error}")
        if cluster is not None:
            print(cluster.describe_failure(), flush=True)
    finally:
        if cluster is not None:
            cluster.stop()
            log(f"[{cls.label} r{round_no}] cluster stopped")
    return res


# --------------------------------------------------------------------------- report


@dataclass
class Summary:
    """All rounds of one backend pooled together."""

    backend: str
    version: str = "?"
    rounds: int = 0
    seq_ops: list[float] = field(default_factory=list)
    seq_ms: list[float] = field(default_factory=list)
    par_ops: list[float] = field(default_factory=list)
    par_ms: list[float] = field(default_factory=list)
    put_errors: int = 0
    watch_ms: list[float] = field(default_factory=list)
    watch_missing: int = 0
    failovers: list[FailoverRound] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, backend: str, results: Sequence[RoundResult]) -> Summary:
        s = cls(backend)
        for r in results:
            if r.backend != backend:
                continue
            s.rounds += 1
            s.version = r.version if r.version != "?" else s.version
            if r.seq is not None:
                s.seq_ops.append(r.seq.ops_per_s)
                s.seq_ms += r.seq.latencies_ms
                s.put_errors += r.seq.errors
            if r.inflight is not None:
                s.par_ops.append(r.inflight.ops_per_s)
                s.par_ms += r.inflight.latencies_ms
                s.put_errors += r.inflight.errors
            s.watch_ms += r.watch_ms
            s.watch_missing += r.watch_missing
            s.failovers += r.failovers
            if r.error:
                s.errors.append(f"round {r.round_no}: {r.error}")
        return s

    def metrics(self) -> dict[str, float]:
        """Numeric figures by row key (NaN where not measured)."""
        fo = [f.seconds for f in self.failovers]
        el = [f.election_s for f in self.failovers if not math.isnan(f.election_s)]
        return {
            "seq_ops": statistics.median(self.seq_ops) if self.seq_ops else math.nan,
            "seq_p50": percentile(self.seq_ms, 50),
            "seq_p99": percentile(self.seq_ms, 99),
            "par_ops": statistics.median(self.par_ops) if self.par_ops else math.nan,
            "par_p50": percentile(self.par_ms, 50),
            "par_p99": percentile(self.par_ms, 99),
            "watch_p50": percentile(self.watch_ms, 50),
            "watch_p99": percentile(self.watch_ms, 99),
            "fo_median": statistics.median(fo) if fo else math.nan,
            "elect_median": statistics.median(el) if el else math.nan,
        }


ROWS: list[tuple[str, str, str]] = [
    # key, label, format
    ("seq_ops", "sequential put (100 B), ops/s", "{:,.0f}"),
    ("seq_p50", "sequential put p50, ms", "{:.2f}"),
    ("seq_p99", "sequential put p99, ms", "{:.2f}"),
    ("par_ops", f"{INFLIGHT} puts in flight (to the leader only), ops/s", "{:,.0f}"),
    ("par_p50", f"{INFLIGHT} in flight p50, ms", "{:.2f}"),
    ("par_p99", f"{INFLIGHT} in flight p99, ms", "{:.2f}"),
    ("watch_p50", "watch on a follower, put → event p50, ms", "{:.2f}"),
    ("watch_p99", "watch on a follower, put → event p99, ms", "{:.2f}"),
    ("fo_median", "leader SIGKILL → next acked put, median s", "{:.3f}"),
    ("elect_median", "leader SIGKILL → new leader in a survivor's status, median s", "{:.3f}"),
]


def fmt(value: float, spec: str) -> str:
    return "—" if math.isnan(value) else spec.format(value)


def text_rows(s: Summary | None) -> dict[str, str]:
    if s is None:
        return {}
    return {
        "fo_each": ", ".join(f"{f.seconds:.3f}" for f in s.failovers) or "—",
        "term_ack": ", ".join(f"+{f.term_at_ack - f.term_before}" for f in s.failovers) or "—",
        "term_rejoin": ", ".join(f"+{f.term_after_rejoin - f.term_before}" for f in s.failovers)
        or "—",
        "errors": str(s.put_errors + s.watch_missing + len(s.errors)),
    }


TEXT_ROWS = [
    ("fo_each", "failover, each round, s"),
    ("term_ack", "raft term increase at the first ack after the kill"),
    ("term_rejoin", "raft term increase once the killed member has rejoined"),
    ("errors", "failed puts + missing watch events + failed rounds"),
]


def figures_table(rk: Summary | None, etcd: Summary | None) -> str:
    mr = rk.metrics() if rk else {}
    me = etcd.metrics() if etcd else {}
    head_rk = f"raftkube ({rk.version})" if rk else "raftkube (not run)"
    head_etcd = f"etcd {etcd.version}" if etcd else "etcd (not run)"
    lines = [
        f"| metric | {head_rk} | {head_etcd} | raftkube / etcd |",
        "|---|---:|---:|---:|",
    ]
    for key, label, spec in ROWS:
        a = mr.get(key, math.nan)
        b = me.get(key, math.nan)
        ratio = a / b if not (math.isnan(a) or math.isnan(b)) and b != 0 else math.nan
        lines.append(f"| {label} | {fmt(a, spec)} | {fmt(b, spec)} | {fmt(ratio, '{:.2f}×')} |")
    tr, te = text_rows(rk), text_rows(etcd)
    for key, label in TEXT_ROWS:
        lines.append(f"| {label} | {tr.get(key, '—')} | {te.get(key, '—')} | |")
    return "\n".join(lines)


def goals_table(rk: Summary | None, etcd: Summary | None) -> str:
    mr = rk.metrics() if rk else {}
    me = etcd.metrics() if etcd else {}

    def status(value: float, ok: bool | None) -> str:
        if math.isnan(value) or ok is None:
            return "n/a"
        return "met" if ok else "**missed**"

    rk_par, etcd_par = mr.get("par_ops", math.nan), me.get("par_ops", math.nan)
    par_ok = None if math.isnan(rk_par) or math.isnan(etcd_par) else rk_par >= etcd_par
    rows = [
        (
            f"put throughput @{INFLIGHT} in flight ≥ etcd's",
            fmt(rk_par, "{:,.0f} ops/s"),
            fmt(etcd_par, "{:,.0f} ops/s"),
            status(rk_par, par_ok),
        ),
    ]
    for key, label, limit, spec in (
        ("seq_p99", f"sequential put p99 ≤ {GOAL_SEQ_P99_MS:g} ms", GOAL_SEQ_P99_MS, "{:.2f} ms"),
        ("watch_p99", f"watch p99 ≤ {GOAL_WATCH_P99_MS:g} ms", GOAL_WATCH_P99_MS, "{:.2f} ms"),
        ("fo_median", f"failover median ≤ {GOAL_FAILOVER_S:g} s", GOAL_FAILOVER_S, "{:.3f} s"),
    ):
        v, e = mr.get(key, math.nan), me.get(key, math.nan)
        rows.append(
            (label, fmt(v, spec), fmt(e, spec), status(v, None if math.isnan(v) else v <= limit))
        )
    lines = [
        "| goal (for raftkube) | raftkube | etcd, for reference | status |",
        "|---|---:|---:|---|",
    ]
    lines += [f"| {g} | {a} | {b} | {st} |" for g, a, b, st in rows]
    return "\n".join(lines)


# The write rows of ROWS; a key ending in "_ops" is a throughput (cost = ratio), the
# others are latencies in ms (cost = difference).
DURABILITY_ROWS = [row for row in ROWS if row[0].startswith(("seq_", "par_"))]


def durability_table(fsync: Summary | None, nofsync: Summary | None) -> str:
    """raftkube with and without the journal fdatasync, and what the flush costs."""
    mf = fsync.metrics() if fsync else {}
    mn = nofsync.metrics() if nofsync else {}
    lines = [
        "| metric | raftkube (fsync) | raftkube (no fsync) "
        "| cost (ops/s: fsync / no fsync; latency: fsync − no fsync) |",
        "|---|---:|---:|---:|",
    ]
    for key, label, spec in DURABILITY_ROWS:
        a = mf.get(key, math.nan)
        b = mn.get(key, math.nan)
        if math.isnan(a) or math.isnan(b):
            cost = "—"
        elif key.endswith("_ops"):
            cost = fmt(a / b, "{:.2f}×") if b != 0 else "—"
        else:
            cost = fmt(a - b, "{:+.2f} ms")
        lines.append(f"| {label} | {fmt(a, spec)} | {fmt(b, spec)} | {cost} |")
    return "\n".join(lines)


def machine_description(etcd_version: str) -> list[str]:
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                mem = f"{kib / 1024 / 1024:.1f} GiB"
                break
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    tmp = os.path.realpath(tempfile.gettempdir())
    fs = "?"
    with contextlib.suppress(OSError):
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and tmp.startswith(parts[1]) and len(parts[1]) >= len(best):
                best, fs = parts[1], f"{parts[2]} ({parts[0]} on {parts[1]})"
    return [
        f"- CPUs (nproc): {len(os.sched_getaffinity(0))}; CPU model: {cpu}",
        f"- memory: {mem}",
        f"- kernel: {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {aiohttp.__version__}",
        f"- etcd: {etcd_version}",
        f"- data dirs under {tmp}: {fs} (set TMPDIR to move them)",
        "- all three members and the client on this one machine, over 127.0.0.1",
    ]


def etcd_binary_version() -> str:
    reason = BACKENDS["etcd"].unavailable_reason()
    if reason is not None:
        return "not installed"
    try:
        return BACKENDS["etcd"]().version()
    except BackendUnavailable:
        return "not installed"


def report(
    rk: Summary | None,
    etcd: Summary | None,
    nofsync: Summary | None = None,
    markdown: bool = False,
) -> str:
    """The tables; the durability one only when the no-fsync variant ran.

    ``markdown`` (for --record) makes the durability title a heading and adds a method note.
    """
    parts = [
        figures_table(rk, etcd),
        "",
        goals_table(rk, etcd),
    ]
    if nofsync is not None:
        parts += [
            "",
            f"### {DURABILITY_TITLE}" if markdown else DURABILITY_TITLE,
            "",
            durability_table(rk, nofsync),
        ]
        if markdown:
            parts += [
                "",
                "No fsync: the same sequential and "
                f"{INFLIGHT}-in-flight workloads on a fresh raftkube cluster started with "
                "`rk up --master-arg=--unsafe-no-fsync` (the journal is never fdatasync'd; "
                "only to measure this, never to run), right after the normal raftkube "
                "cluster in every round. Throughput cost is the fsync / no-fsync ratio "
                "(below 1× = slower with fsync); latency cost is the difference in ms.",
            ]
    for s in (rk, nofsync, etcd):
        if s and s.errors:
            parts += ["", f"{s.backend} errors:"] + [f"- {e}" for e in s.errors]
    return "\n".join(parts)


def record(
    path: Path,
    body: str,
    args_line: str,
    etcd_version: str,
    skipped: list[str],
    attempt_timeout: float,
) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = [
        SECTION_BEGIN,
        "## Store: raftkube vs etcd (bench/store.py)",
        "",
        f"Recorded {now} with `{args_line}`.",
        "",
        *machine_description(etcd_version),
        "",
        "Method: a fresh 3-member cluster per backend and round (rounds alternate), 100-byte "
        "values over the `/v3/` JSON API with an aiohttp client. Sequential puts and the "
        f"{INFLIGHT}-in-flight puts go to the leader only; the watch is opened on a follower "
        "while puts go to the leader; failover SIGKILLs the leader while one client keeps "
        f"writing (attempt timeout {attempt_timeout:g} s, any member) and measures "
        "kill → first acknowledged put issued after the kill (so its resolution is the "
        "attempt timeout when a leaderless member holds requests rather than failing fast; "
        "the row below it polls status every 20 ms for the election alone). Latency "
        "percentiles pool all "
        "rounds; throughput is the median of the rounds.",
        "",
        body,
    ]
    if skipped:
        section += ["", *[f"Skipped: {s}" for s in skipped]]
    section += [SECTION_END, ""]
    text = "\n".join(section)
    old = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END) + r"\n?", re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = (old.rstrip("\n") + "\n\n" if old.strip() else "# Benchmarks\n\n") + text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark raftkube's store against etcd over the v3 JSON gateway.",
    )
    p.add_argument("--backend", choices=["raftkube", "etcd", "both"], default="both")
    p.add_argument("--rounds", type=int, default=1, help="rounds per backend (alternating)")
    p.add_argument("--seq", type=int, default=1000, help="sequential puts")
    p.add_argument("--inflight-total", type=int, default=5000, help=f"puts at {INFLIGHT} in flight")
    p.add_argument("--watch", type=int, default=300, help="puts observed through a watch")
    p.add_argument("--failover", type=int, default=5, help="leader-kill rounds")
    p.add_argument(
        "--attempt-timeout",
        type=float,
        default=FAILOVER_ATTEMPT_TIMEOUT_S,
        help="per-put timeout of the failover writer, s (the failover figure's resolution "
        "when leaderless members hold requests instead of failing fast)",
    )
    p.add_argument(
        "--fsync-cost",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="in every round also run the sequential and in-flight puts on raftkube "
        "without the journal fdatasync (rk master --unsafe-no-fsync) and print what the "
        "flush costs (default: on whenever raftkube runs)",
    )
    p.add_argument("--record", type=Path, metavar="FILE", help="write the results into FILE")
    args = p.parse_args(argv)
    for name in ("rounds", "seq", "inflight_total", "watch", "failover"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be ≥ 0")
    if args.rounds < 1:
        p.error("--rounds must be ≥ 1")
    if not 0.01 <= args.attempt_timeout <= 5:
        p.error("--attempt-timeout must be within [0.01, 5] s")
    return args


def _sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwind through the finally blocks that stop clusters


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    wanted = ["raftkube", "etcd"] if args.backend == "both" else [args.backend]
    runnable: list[str] = []
    skipped: list[str] = []
    for name in wanted:
        reason = BACKENDS[name].unavailable_reason()
        if reason is None:
            runnable.append(name)
        else:
            skipped.append(reason)
            print(f"NOTE: {reason}", flush=True)
    if not runnable:
        print("nothing to benchmark: no requested backend is available", file=sys.stderr)
        return 2
    fsync_cost = args.fsync_cost is not False and "raftkube" in runnable
    if args.fsync_cost and not fsync_cost:
        print("NOTE: --fsync-cost needs the raftkube backend; not measured", flush=True)
    if fsync_cost and args.seq == 0 and args.inflight_total == 0:
        print("NOTE: --fsync-cost with --seq 0 --inflight-total 0: nothing to measure", flush=True)
        fsync_cost = False
    # the no-fsync variant runs only the put workloads: no watch, no failover
    nofsync_args = argparse.Namespace(**{**vars(args), "watch": 0, "failover": 0})

    results: list[RoundResult] = []
    for r in range(1, args.rounds + 1):
        for name in runnable:
            try:
                results.append(run_backend_round(BACKENDS[name], args, r))
            except BackendUnavailable as e:
                print(f"NOTE: {e}", flush=True)
                skipped.append(str(e))
                runnable = [n for n in runnable if n != name]
                fsync_cost = fsync_cost and "raftkube" in runnable
                continue
            if name == "raftkube" and fsync_cost:  # alternate: fsync, no fsync, ...
                try:
                    results.append(run_backend_round(BACKENDS[NOFSYNC], nofsync_args, r))
                except BackendUnavailable as e:
                    print(f"NOTE: {e}", flush=True)
                    skipped.append(str(e))
                    fsync_cost = False

    rk = Summary.of("raftkube", results) if "raftkube" in runnable else None
    etcd = Summary.of("etcd", results) if "etcd" in runnable else None
    nofsync = Summary.of(NOFSYNC, results) if fsync_cost else None
    body = report(rk, etcd, nofsync)
    print()
    print(body)
    if args.record is not None:
        argv_line = shlex.join(["python", "bench/store.py", *(argv or sys.argv[1:])])
        md_body = report(rk, etcd, nofsync, markdown=True)
        record(
            args.record, md_body, argv_line, etcd_binary_version(), skipped, args.attempt_timeout
        )
        print(f"\nrecorded in {args.record}")
    failed = any(r.error for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
