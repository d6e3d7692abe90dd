"""`clock-jump`: the wall clock of the leader, then of a follower, jumps an hour ahead.

Nothing in the cluster may care: Raft timers and lease countdowns run on the monotonic
clock, and a controller's countdowns on its own observed time. Each round:

1. every master is restarted with its wall clock shiftable (`chaos.clock`), still right;
2. a lease is granted with a key on it (`/v3/lease/grant`, a put with `lease`), and a
   second lease kept alive through the jumping member;
3. the leader's wall clock jumps +1 h, and every Node is changed at once (a label), so
   that the node lifecycle controller looks at each before its next lease renewal; for
   a while longer than the node grace period,
   every master must agree on a leader, every Node must stay Ready, and the first lease
   and its key must live on; a follower's clock jumps too, same checks;
4. the first lease must still expire, about when its TTL says; the kept-alive one lives;
5. the jumped masters are restarted on the real clock.

Simulated agents (their Nodes are what the node lifecycle controller counts down), and
a short node grace period so that a controller fooled by the jump would show it at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from chaos import clock
from chaos.cluster import Cluster
from chaos.scenarios import Context, Scenario, register
from chaos.workload import b64
from raftkube.api import conditions, kinds
from raftkube.client import informer as inf

JUMP = 3600.0
GRACE = 4.0  # --node-monitor-grace-period
LEASE_TTL = 20  # the lease left to expire: longer than both jumps are watched
WATCH = GRACE * 2.5  # seconds of checks after each jump


async def etcd(c: Cluster, name: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One etcd JSON call to member `name`; raises RuntimeError on any failure."""
    try:
        async with c.session.post(c.urls[name] + path, json=body,
                                  timeout=aiohttp.ClientTimeout(total=3)) as resp:
            answer: dict[str, Any] = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"{name} {path}: HTTP {resp.status}: {answer}")
            return answer
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        raise RuntimeError(f"{name} {path}: {e!r}") from None


async def key_exists(c: Cluster, name: str, key: str) -> bool:
    answer = await etcd(c, name, "/v3/kv/range", {"key": b64(key)})
    return bool(answer.get("kvs"))


async def leased_key(c: Cluster, via: str, key: str, ttl: int) -> str:
    granted = await etcd(c, via, "/v3/lease/grant", {"TTL": ttl})
    await etcd(c, via, "/v3/kv/put", {"key": b64(key), "value": b64("x"),
                                      "lease": granted["ID"]})
    return str(granted["ID"])


async def ttl_left(c: Cluster, name: str, lease: str) -> int | None:
    """The lease's remaining TTL as member `name` tells it (-1: gone; None: no answer)."""
    try:
        return int((await etcd(c, name, "/v3/lease/timetolive", {"ID": lease}))["TTL"])
    except (RuntimeError, KeyError, ValueError):
        return None


async def poke_nodes(c: Cluster, value: str) -> None:
    client = c.rest()
    for node in (await client.list(kinds.NODE))["items"]:
        await client.patch(kinds.NODE, "", node["metadata"]["name"],
                           {"metadata": {"labels": {"chaos/clock-jump": value}}})


class Checks:
    """What must hold while clocks are wrong: a leader and the leased keys, checked every
    0.5 s; the Nodes through an informer, which hears every state they pass through (an
    agent re-posts Ready within a second: a poll would miss most of a false alarm)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.violations: list[str] = ctx.report.setdefault("violations", [])
        self.leaderless: list[str] = []
        self.terms: set[int] = set()
        self.armed = ""  # what is being watched; Node states are judged while set
        self.nodes = inf.Informer(ctx.cluster.rest(), kinds.NODE)
        self.nodes.add_handler(inf.Handler(add=self._node, update=lambda _o, n: self._node(n)))
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.nodes.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _node(self, node: dict[str, Any]) -> None:
        if not self.armed:
            return
        ready = conditions.get(node, "Ready") or {}
        tainted = [t.get("key") for t in (node.get("spec") or {}).get("taints") or []
                   if str(t.get("key", "")).startswith("node.kubernetes.io/")]
        if ready.get("status") != "True" or tainted:
            self.violations.append(
                f"{self.armed}: node {node['metadata']['name']} Ready="
                f"{ready.get('status')} ({ready.get('reason', '')}), taints {tainted}")

    async def watch(self, seconds: float, lease_key: str, lease_deadline: float,
                    kept_key: str, what: str) -> None:
        c = self.ctx.cluster
        self.armed = what
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                leader = await c.leader(timeout=3.0)
                term = await c.term(leader)
                if term:
                    self.terms.add(term)
            except TimeoutError as e:
                self.leaderless.append(f"{what}: {e}")
                self.violations.append(f"{what}: no leader for 3s")
                continue
            # Early expiry would show on any member: read through each (linearizable).
            if time.monotonic() < lease_deadline - 1.0:
                for name in c.names:
                    try:
                        if not await key_exists(c, name, lease_key):
                            self.violations.append(
                                f"{what}: the leased key is gone on {name} "
                                f"{lease_deadline - time.monotonic():.1f}s before its TTL")
                    except RuntimeError:
                        pass  # a slow answer is no finding
            try:
                if not await key_exists(c, leader, kept_key):
                    self.violations.append(f"{what}: the kept-alive lease expired")
            except RuntimeError:
                pass
            await asyncio.sleep(0.5)
        self.armed = ""


async def keep_alive(c: Cluster, via: str, lease: str, stop: asyncio.Event) -> list[str]:
    errors: list[str] = []
    while not stop.is_set():
        try:
            await etcd(c, via, "/v3/lease/keepalive", {"ID": lease})
        except RuntimeError as e:
            errors.append(str(e))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            pass
    return errors


async def clock_jump(ctx: Context) -> None:
    c = ctx.cluster
    clocks = {n: clock.FakeClock(c, n) for n in c.names}
    checks = Checks(ctx)
    checks.start()
    expiries: list[float] = []
    stop = asyncio.Event()
    keeper: asyncio.Task[list[str]] | None = None
    try:
        for r in range(ctx.rounds):
            await ctx.pause_between()
            for name in c.names:  # one at a time: a majority runs throughout
                fault = ctx.faults.begin("restart", name, note="with the clock shim")
                await clocks[name].start()
                await c.leader()
                await ctx.converged(fault)
            leader = await c.leader()
            follower = ctx.rng.choice([n for n in c.names if n != leader])
            key, kept = f"clock/{r}/lease", f"clock/{r}/kept"
            lease = await leased_key(c, leader, key, LEASE_TTL)
            granted = time.monotonic()
            kept_lease = await leased_key(c, leader, kept, 3)
            stop = asyncio.Event()
            keeper = asyncio.create_task(keep_alive(c, follower, kept_lease, stop))

            fault = ctx.faults.begin("clock-jump", leader, note=f"+{JUMP:g}s (the leader)")
            checks.armed = f"{leader}'s clock +1h (leader)"
            clocks[leader].jump(JUMP)
            # Something about every Node at once, before their next lease renewal: the
            # node lifecycle controller looks at each right after the jump.
            await poke_nodes(c, f"{r}")
            await asyncio.sleep(0.5)
            ctx.report.setdefault("lease_ttl_left_after_jump", []).append(
                {n: await ttl_left(c, n, lease) for n in c.names})
            await checks.watch(WATCH, key, granted + LEASE_TTL, kept,
                               f"{leader}'s clock +1h (leader)")
            fault.healed()
            fault = ctx.faults.begin("clock-jump", follower, note=f"+{JUMP:g}s (a follower)")
            checks.armed = f"{follower}'s clock +1h (follower)"
            clocks[follower].jump(JUMP)
            await checks.watch(WATCH / 2, key, granted + LEASE_TTL, kept,
                               f"{follower}'s clock +1h (follower)")
            fault.healed()

            # And the lease still expires, on time: not never.
            deadline = granted + LEASE_TTL + 30
            while await key_exists(c, await c.leader(), key):
                if time.monotonic() > deadline:
                    checks.violations.append(f"the lease of {key} ({LEASE_TTL}s) never "
                                             "expired")
                    break
                await asyncio.sleep(0.2)
            else:
                expiries.append(round(time.monotonic() - granted, 3))
            stop.set()
            for error in (await keeper)[:3]:
                ctx.report.setdefault("keepalive_errors", []).append(error)

            for name in (leader, follower):
                fault = ctx.faults.begin("restart", name, note="on the real clock")
                await clocks[name].restore()
                await c.leader()
                await ctx.converged(fault)
    finally:
        if keeper is not None and not keeper.done():  # a round broke off: it would run on
            stop.set()
            await asyncio.gather(keeper, return_exceptions=True)
        await checks.stop()
        for name, fake in clocks.items():  # whatever broke: every member on the real clock
            if c.pid(name) is None or _faked(c, name):
                await fake.restore()
        ctx.report["lease_ttl_seconds"] = LEASE_TTL
        ctx.report["lease_expired_after_seconds"] = expiries
        ctx.report["clock_jump_terms"] = sorted(checks.terms)


def _faked(c: Cluster, name: str) -> bool:
    pid = c.pid(name)
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return b"RK_CLOCK_OFFSET_FILE=" in f.read()
    except OSError:
        return False


register(Scenario(
    "clock-jump", clock_jump,
    "the leader's, then a follower's wall clock jumps +1h (an injected offset): leases do "
    "not expire early, a leader stays, Nodes stay Ready",
    agents=2, master_args=("--node-monitor-grace-period", f"{GRACE:g}",
                           "--node-monitor-period", "0.5")))
