"""The key-value workload of a chaos run, and what it records.

Clients, each one operation at a time, through a master picked at random per operation:
- unique writers put keys `w/<client>/<n>` once each (what was acknowledged must never
  be lost, and the watch must see it exactly once, in order);
- register clients read, put and compare-and-swap a few shared keys `r/<i>` (the
  linearizability checker's food: many clients, every master, reads included);
- a fenced writer stamps each put with the newest Raft term it has seen a leader hold
  (`X-Raftkube-Term`, as leader-only loops do), and now and then with the term before it
  (a deposed leader's loop that has not noticed yet): the store must refuse a stamp older
  than a term that has already written;
- a watch on `w/` that resumes on another master whenever its stream breaks, from the
  revision after the last event it saw (as etcd clients do);
- an observer that asks every master who leads, every 50 ms: at most one leader per term.

Every operation goes into the `History` (for the plot and the failover figures) and, if
it did not certainly fail, into the linearizability history as an `Op`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.cluster import Cluster
from chaos.history import History, Outcome
from chaos.linearizability import Op

TIMEOUT = 2.0  # per request: an answer later than this is an unknown outcome
SHUN = 2.0  # seconds the clients keep off a master that timed out or refused them
REGISTERS = 6


def prefix_end(prefix: bytes) -> bytes:
    """etcd's range end for "every key that starts with `prefix`"."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def unb64(s: str | None) -> str:
    return base64.b64decode(s or "").decode()


@dataclass
class Answer:
    outcome: Outcome
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""


class Kv:
    """The etcd JSON API of one cluster, with Jepsen's outcomes."""

    def __init__(self, cluster: Cluster, history: History, *,
                 serializable: bool = False) -> None:
        self.cluster = cluster
        self.history = history
        self.serializable = serializable  # reads from the member's own copy: may be stale

    async def call(self, kind: str, server: str, path: str, body: dict[str, Any],
                   headers: dict[str, str] | None = None) -> Answer:
        invoked = time.monotonic()
        answer = await self._call(server, path, body, headers)
        self.history.record(kind, server, invoked, answer.outcome, answer.error)
        return answer

    async def _call(self, server: str, path: str, body: dict[str, Any],
                    headers: dict[str, str] | None) -> Answer:
        try:
            async with self.cluster.session.post(
                    self.cluster.urls[server] + path, data=json.dumps(body),
                    headers={"Content-Type": "application/json", **(headers or {})},
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as resp:
                text = await resp.text()
                try:
                    data = json.loads(text) if text else {}
                except ValueError:
                    data = {"message": text[:200]}
                if resp.status == 200:
                    return Answer("ok", data)
                message = str(data.get("message") or data.get("error") or text[:200])
                # A refusal (4xx) happened before anything was proposed. A 5xx to a
                # write is an unknown outcome: it may have been proposed already.
                return Answer("fail" if resp.status < 500 else "info", data,
                              f"HTTP {resp.status}: {message}")
        except aiohttp.ClientConnectorError as e:  # nothing was sent
            return Answer("fail", error=f"unreachable: {e.__class__.__name__}")
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as e:
            return Answer("info", error=f"{e.__class__.__name__}: {e}"[:200])

    async def put(self, server: str, key: str, value: str, *, kind: str = "put",
                  headers: dict[str, str] | None = None) -> Answer:
        return await self.call(kind, server, "/v3/kv/put",
                               {"key": b64(key), "value": b64(value)}, headers)

    async def get(self, server: str, key: str) -> tuple[Answer, str | None]:
        answer = await self.call("get", server, "/v3/kv/range",
                                 {"key": b64(key), "serializable": self.serializable})
        kvs = answer.body.get("kvs") or []
        return answer, (unb64(kvs[0].get("value")) if kvs else None)

    async def cas(self, server: str, key: str, expected: str | None, value: str) -> Answer:
        compare = ({"key": b64(key), "target": "CREATE", "result": "EQUAL",
                    "create_revision": "0"} if expected is None else
                   {"key": b64(key), "target": "VALUE", "result": "EQUAL",
                    "value": b64(expected)})
        return await self.call("cas", server, "/v3/kv/txn", {
            "compare": [compare],
            "success": [{"request_put": {"key": b64(key), "value": b64(value)}}]})

    async def range_prefix(self, server: str, prefix: str) -> dict[str, tuple[str, int]]:
        """Every key under `prefix` as (value, mod_revision), read linearizably (always);
        raises RuntimeError when the member does not answer."""
        answer = await self.call("get", server, "/v3/kv/range", {
            "key": b64(prefix), "range_end": b64(prefix_end(prefix.encode()))})
        if answer.outcome != "ok":
            raise RuntimeError(f"{server}: reading {prefix}: {answer.error}")
        return {unb64(kv["key"]): (unb64(kv.get("value")), int(kv["mod_revision"]))
                for kv in answer.body.get("kvs") or []}


@dataclass
class Acked:
    value: str
    revision: int


class Workload:
    """Every client of a run; `start()`, let the faults happen, `await stop()`."""

    def __init__(self, cluster: Cluster, history: History, rng: random.Random, *,
                 writers: int = 3, registers: int = 3,
                 serializable_reads: bool = False) -> None:
        self.cluster = cluster
        self.kv = Kv(cluster, history, serializable=serializable_reads)
        self.history = history
        self.rng = rng
        self.n_writers = writers
        self.n_registers = registers
        self.ops: list[Op] = []
        self.acked: dict[str, Acked] = {}  # unique keys
        self.fenced: list[tuple[int, int]] = []  # (stamped term, revision) acknowledged
        self.fenced_refused = 0
        self.stale_acked: list[tuple[int, int]] = []  # deposed terms' writes that got in
        self.claims: dict[int, set[str]] = {}  # term -> leaders claimed by some member
        self.term = 0  # the newest term a member has reported a leader in
        self.watched: list[tuple[int, str]] = []  # (revision, key) of PUT events on w/
        self.watch_resumes = 0
        self.watch_errors: list[str] = []
        self.start_revision = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._watch: asyncio.Task[None] | None = None
        self._client = 0
        self._shunned: dict[str, float] = {}  # master -> until when clients keep off it

    def _next_client(self) -> int:
        self._client += 1
        return self._client

    def _server(self) -> str:
        """A master at random among those not shunned: like an etcd client's balancer,
        the clients share which masters just timed out or refused them, and keep off
        those for SHUN seconds (else, with a member cut off, every client soon waits
        out a timeout on it and the run shows the clients stuck, not the cluster)."""
        now = time.monotonic()
        healthy = [n for n in self.cluster.names if self._shunned.get(n, 0.0) <= now]
        return self.rng.choice(healthy or self.cluster.names)

    def _heard(self, server: str, answer: Answer) -> None:
        if answer.outcome == "info" or answer.error.startswith("unreachable"):
            self._shunned[server] = time.monotonic() + SHUN

    async def start(self) -> None:
        leader = await self.cluster.leader()
        first = await self.kv.put(leader, "chaos/start", "0")
        if first.outcome != "ok":
            raise RuntimeError(f"the first write failed: {first.error}")
        self.start_revision = int(first.body["header"]["revision"])
        self._tasks = [asyncio.create_task(self._observe())]
        self._tasks += [asyncio.create_task(self._unique(i)) for i in range(self.n_writers)]
        self._tasks += [asyncio.create_task(self._register()) for _ in range(self.n_registers)]
        self._tasks.append(asyncio.create_task(self._fenced()))
        self._watch = asyncio.create_task(self._watch_loop(self.start_revision + 1))

    async def stop(self) -> None:
        """Stop the clients (each finishes its operation); the watch goes on until
        `close()`, so that it can catch up."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)

    def _op(self, client: int, key: str, kind: str, invoked: float, outcome: Outcome, *,
            value: str | None = None, expected: str | None = None,
            result: str | bool | None = None) -> None:
        if outcome == "fail":
            return  # certainly did not happen
        self.ops.append(Op(client=client, key=key, kind=kind,  # type: ignore[arg-type]
                           value=value, expected=expected, result=result, invoked=invoked,
                           completed=time.monotonic() if outcome == "ok" else None))

    async def _unique(self, index: int) -> None:
        client = self._next_client()
        n = 0
        while not self._stop.is_set():
            n += 1
            key, value = f"w/{index}/{n:06d}", f"v{n}"
            invoked = time.monotonic()
            server = self._server()
            answer = await self.kv.put(server, key, value)
            self._heard(server, answer)
            self._op(client, key, "put", invoked, answer.outcome, value=value)
            if answer.outcome == "ok":
                self.acked[key] = Acked(value, int(answer.body["header"]["revision"]))
            elif answer.outcome == "info":
                # An unknown outcome ends this client, as in Jepsen: a new one takes over
                # (the checker needs one operation at a time per client).
                client = self._next_client()
            else:
                await asyncio.sleep(0.02)

    async def _register(self) -> None:
        client = self._next_client()
        seen: dict[str, str | None] = {}
        n = 0
        while not self._stop.is_set():
            n += 1
            key = f"r/{self.rng.randrange(REGISTERS)}"
            server = self._server()
            roll = self.rng.random()
            invoked = time.monotonic()
            if roll < 0.5:
                answer, value = await self.kv.get(server, key)
                if answer.outcome == "ok":
                    seen[key] = value
                    self._op(client, key, "get", invoked, "ok", result=value)
            elif roll < 0.7:
                value = f"c{client}-{n}"
                answer = await self.kv.put(server, key, value)
                self._op(client, key, "put", invoked, answer.outcome, value=value)
            else:
                value, expected = f"c{client}-{n}", seen.get(key)
                answer = await self.kv.cas(server, key, expected, value)
                swapped = bool(answer.body.get("succeeded")) if answer.outcome == "ok" else None
                self._op(client, key, "cas", invoked, answer.outcome, value=value,
                         expected=expected, result=swapped)
                if swapped:
                    seen[key] = value
            self._heard(server, answer)
            if answer.outcome == "info":
                client = self._next_client()
            elif answer.outcome == "fail":
                await asyncio.sleep(0.02)

    async def _fenced(self) -> None:
        n = 0
        while not self._stop.is_set():
            if not self.term:
                await asyncio.sleep(0.05)
                continue
            n += 1
            stamp = self._stamp()
            server = self._server()
            answer = await self.kv.put(server, f"f/{n:06d}", str(stamp), kind="fenced-put",
                                       headers={"X-Raftkube-Term": str(stamp)})
            self._heard(server, answer)
            if answer.outcome == "ok":
                self.fenced.append((stamp, int(answer.body["header"]["revision"])))
            elif "stale term" in answer.error:
                self.fenced_refused += 1
            else:
                await asyncio.sleep(0.02)

    def _stamp(self) -> int:
        """The fenced writer's stamp: the newest term a leader has held, or, one time in
        four, the newest before it. Without the older stamps the stale-term check could
        not fail: one client's newest-term stamps only ever go up, in time and so in
        revision order, whether or not the store fences."""
        older = [t for t in self.claims if t < self.term]
        if older and self.rng.random() < 0.25:
            return max(older)
        return self.term

    async def stale_writes(self, server: str, term: int, count: int = 20) -> int:
        """Writes stamped with a deposed leader's `term`, through `server` (the deposed
        leader itself, say): every one must be refused. Returns how many got in."""
        before = len(self.stale_acked)
        for n in range(count):
            answer = await self.kv.put(server, f"stale/{term}/{n}", "deposed",
                                       kind="fenced-put",
                                       headers={"X-Raftkube-Term": str(term)})
            if answer.outcome == "ok":
                self.stale_acked.append((term, int(answer.body["header"]["revision"])))
            elif "stale term" in answer.error:
                self.fenced_refused += 1
        return len(self.stale_acked) - before

    async def _observe(self) -> None:
        while not self._stop.is_set():
            statuses = await asyncio.gather(*(self.cluster.status(n, timeout=0.5)
                                              for n in self.cluster.names))
            for st in statuses:
                if st and st.get("leader") not in (None, "0", ""):
                    term = int(st["header"]["raft_term"])
                    self.claims.setdefault(term, set()).add(str(st["leader"]))
                    self.term = max(self.term, term)
            await asyncio.sleep(0.05)

    async def _watch_loop(self, revision: int) -> None:
        rng = random.Random(self.rng.random())
        while True:
            server = rng.choice(self.cluster.names)
            body = {"create_request": {"key": b64("w/"), "range_end": b64(prefix_end(b"w/")),
                                       "start_revision": str(revision)}}
            try:
                async with self.cluster.session.post(
                        self.cluster.urls[server] + "/v3/watch", json=body,
                        timeout=aiohttp.ClientTimeout(total=None, sock_connect=2,
                                                      sock_read=3)) as resp:
                    if resp.status != 200:
                        await asyncio.sleep(0.1)
                        continue
                    async for line in resp.content:
                        msg = json.loads(line).get("result") or {}
                        if msg.get("canceled"):
                            self.watch_errors.append(
                                f"{server} cancelled the watch at {revision}: "
                                f"{msg.get('cancel_reason', '')}")
                            break
                        for ev in msg.get("events") or []:
                            rev = int(ev["kv"]["mod_revision"])
                            if ev.get("type", "PUT") == "PUT":
                                self.watched.append((rev, unb64(ev["kv"]["key"])))
                            revision = rev + 1
            except (aiohttp.ClientError, TimeoutError, ConnectionError, ValueError):
                pass  # the stream broke: resume on another master
            self.watch_resumes += 1
            await asyncio.sleep(0.1)

    def saw_every_ack(self) -> bool:
        seen = {(k, r) for r, k in self.watched}
        return all((k, a.revision) in seen for k, a in self.acked.items())
