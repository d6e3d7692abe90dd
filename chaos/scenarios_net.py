"""Network scenarios: masters in network namespaces of their own, links cut, made lossy
or slow with `chaos.netfaults` (iptables in the member's namespace, and a userspace
delay proxy: this kernel has no netem). The chaos client stays in the root namespace and
keeps reaching every member, so it sees what an isolated one answers. A fault is
recorded once its rules are in place, so failover is measured from the real cut.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from chaos.netfaults import NetFaults
from chaos.scenarios import Context, Scenario, register

HOLD = (3.0, 5.0)  # how long a fault lasts: past the leader's fallback timeout (2 s)
STEP_DOWN_SECONDS = 6.0


async def _stepped_down(ctx: Context, name: str) -> bool:
    """Whether `name` has stopped claiming to lead, within STEP_DOWN_SECONDS."""
    by_name = {v: k for k, v in ctx.cluster.by_id.items()}
    deadline = time.monotonic() + STEP_DOWN_SECONDS
    while time.monotonic() < deadline:
        st = await ctx.cluster.status(name)
        if st is not None and str(st.get("leader")) != by_name[name]:
            return True
        await asyncio.sleep(0.1)
    return False


async def partition_leader(ctx: Context) -> None:
    """Cut the leader off from every other master. The others elect a leader; the old
    one must step down and acknowledge no write; after the heal it rejoins, and
    writes stamped with its old term are refused."""
    c = ctx.cluster
    net = NetFaults.from_state_dir(c.state_dir)
    violations = ctx.report.setdefault("violations", [])
    try:
        for _ in range(ctx.rounds):
            await ctx.pause_between()
            victim = await c.leader()
            old_term = await c.term(victim)
            await asyncio.to_thread(net.isolate, victim)
            fault = ctx.faults.begin("partition", victim, note="cut off from every master")
            await c.leader(among=[n for n in c.names if n != victim])
            if not await _stepped_down(ctx, victim):
                violations.append(f"{victim}, cut off, still claims to lead after "
                                  f"{STEP_DOWN_SECONDS:g}s")
            if ctx.workload is not None:
                # Through the cut-off member: nothing may be acknowledged.
                answer = await ctx.workload.kv.put(victim, f"cut/{victim}/{old_term}", "x")
                if answer.outcome == "ok":
                    violations.append(f"{victim}, cut off, acknowledged a write")
            await asyncio.sleep(ctx.rng.uniform(*HOLD) - STEP_DOWN_SECONDS / 2)
            await asyncio.to_thread(net.heal)
            if ctx.workload is not None and old_term:
                await ctx.workload.stale_writes(victim, old_term)
            await ctx.converged(fault)
    finally:
        await asyncio.to_thread(net.heal)


Inject = Callable[[NetFaults, str], tuple[str, str, str]]
"""`inject(net, leader)` puts a fault in place and says what it was: (kind, target, note)."""


async def _rounds(ctx: Context, inject: Inject) -> None:
    """Each round: `inject` a fault, hold it a few seconds, heal, wait for every master
    to catch up. The fault is recorded once its rules are in place."""
    net = NetFaults.from_state_dir(ctx.cluster.state_dir)
    try:
        for _ in range(ctx.rounds):
            await ctx.pause_between()
            leader = await ctx.cluster.leader()
            kind, target, note = await asyncio.to_thread(inject, net, leader)
            fault = ctx.faults.begin(kind, target, note=note)
            await asyncio.sleep(ctx.rng.uniform(*HOLD))
            await asyncio.to_thread(net.heal)
            await ctx.converged(fault)
    finally:
        await asyncio.to_thread(net.heal)


async def partition_minority(ctx: Context) -> None:
    """Cut a minority of followers (one of three, two of five) off from the rest: the
    majority goes on taking writes; the minority catches up after the heal."""
    names = ctx.cluster.names

    def cut(net: NetFaults, leader: str) -> tuple[str, str, str]:
        followers = [n for n in names if n != leader]
        minority = ctx.rng.sample(followers, (len(names) - 1) // 2)
        majority = [n for n in names if n not in minority]
        net.partition([minority, majority])
        return "partition", ",".join(minority), f"cut off from {','.join(majority)}"

    await _rounds(ctx, cut)


def _one_master(ctx: Context, kind: str, note: str,
                degrade: Callable[[NetFaults, str], None]) -> Inject:
    """`degrade` one master's links: the leader's half of the time, any one's else."""
    def inject(net: NetFaults, leader: str) -> tuple[str, str, str]:
        victim = leader if ctx.rng.random() < 0.5 else ctx.rng.choice(ctx.cluster.names)
        degrade(net, victim)
        return kind, victim, note
    return inject


async def flaky_link(ctx: Context) -> None:
    """30% of one master's packets to and from the others dropped."""
    await _rounds(ctx, _one_master(ctx, "flaky", "30% packet loss",
                                   lambda net, n: net.flaky(n, 0.3)))


async def slow_network(ctx: Context) -> None:
    """One master's traffic with the others delayed by 100 ms each way (a userspace
    proxy): writes slow down, nothing breaks."""
    await _rounds(ctx, _one_master(ctx, "slow", "100 ms each way",
                                   lambda net, n: net.slow(n, 0.1)))


register(Scenario("partition-leader", partition_leader,
                  "cut the leader off: it steps down and refuses writes; heal",
                  topology="netns"))
register(Scenario("partition-minority", partition_minority,
                  "cut a minority of followers off from the majority; heal",
                  topology="netns"))
register(Scenario("flaky-link", flaky_link,
                  "30% packet loss on one master's links (iptables statistic)",
                  topology="netns"))
register(Scenario("slow-network", slow_network,
                  "100 ms each way on one master's links (userspace delay proxy)",
                  topology="netns"))
