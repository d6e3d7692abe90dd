"""The scenarios: which faults a run injects, round after round, while the workload runs.

A scenario is a coroutine over a `Context`: it injects `ctx.rounds` rounds of its fault,
records each with `ctx.faults.begin(kind, target)` and `.healed()` (or
`ctx.converged(fault)`: healed once every master has caught up with the leader), and
leaves the cluster whole at the end (every member running), so that the runner's checks
compare all of them. Figures of its own go into `ctx.report`. The scenarios of the masters are here;
those that need more than the masters register themselves from their own modules
(imported at the bottom).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.cluster import Cluster
from chaos.history import Fault, Faults
from chaos.workload import Workload


@dataclass
class Context:
    cluster: Cluster
    rng: random.Random
    rounds: int
    faults: Faults
    workload: Workload | None = None  # None when the scenario runs without the KV workload
    report: dict[str, Any] = field(default_factory=dict)

    async def converged(self, fault: Fault) -> None:
        """Heal `fault` once every master has caught up with the leader, and record
        how long after the fault that was."""
        await self.cluster.caught_up()
        fault.healed()
        fault.converged = round(time.monotonic() - fault.began, 3)

    async def pause_between(self) -> None:
        """Quiet time between rounds: the workload runs on a healthy cluster."""
        await asyncio.sleep(self.rng.uniform(1.0, 2.0))


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Context], Awaitable[None]]
    doc: str
    agents: int = 0
    runtime: str = "simulated"
    topology: str | None = None  # the topology it needs; None: either
    master_args: tuple[str, ...] = ()
    agent_args: tuple[str, ...] = ()
    kv_workload: bool = True


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    SCENARIOS[scenario.name] = scenario
    return scenario


async def _kill_and_restart(ctx: Context, victim: str) -> None:
    c = ctx.cluster
    fault = ctx.faults.begin("kill", victim)
    await c.kill(victim)
    survivors = [n for n in c.names if n != victim]
    await c.leader(among=survivors)
    await asyncio.sleep(ctx.rng.uniform(0.5, 1.5))
    await c.start(victim)
    await ctx.converged(fault)


async def kill_leader(ctx: Context) -> None:
    for _ in range(ctx.rounds):
        await ctx.pause_between()
        await _kill_and_restart(ctx, await ctx.cluster.leader())


async def kill_random(ctx: Context) -> None:
    for _ in range(ctx.rounds):
        await ctx.pause_between()
        await ctx.cluster.leader()  # a whole cluster before each fault
        await _kill_and_restart(ctx, ctx.rng.choice(ctx.cluster.names))


async def kill_all(ctx: Context) -> None:
    c = ctx.cluster
    for _ in range(ctx.rounds):
        await ctx.pause_between()
        await c.leader()
        fault = ctx.faults.begin("kill", "all")
        await c.kill(*c.names)
        await asyncio.sleep(ctx.rng.uniform(0.5, 1.5))
        await c.up()
        await ctx.converged(fault)


async def pause_leader(ctx: Context) -> None:
    """SIGSTOP the leader until the others have elected another (past the election
    timeout), then a little longer; SIGCONT: it wakes believing it leads."""
    c = ctx.cluster
    for _ in range(ctx.rounds):
        await ctx.pause_between()
        victim = await c.leader()
        old_term = await c.term(victim)
        fault = ctx.faults.begin("pause", victim)
        c.pause(victim)
        try:
            await c.leader(among=[n for n in c.names if n != victim])
            await asyncio.sleep(ctx.rng.uniform(0.5, 1.5))
        finally:
            c.resume(victim)
        if ctx.workload is not None and old_term:
            # What a deposed leader's loops do the moment they wake: write in their term.
            await ctx.workload.stale_writes(victim, old_term)
        await ctx.converged(fault)


async def quorum_loss(ctx: Context) -> None:
    """Two of three masters lost for good, processes and data; the survivor (the
    leader, which holds every acknowledged write) is restarted with
    `--force-new-cluster`, and two fresh, empty masters join it."""
    c = ctx.cluster
    for _ in range(ctx.rounds):
        await ctx.pause_between()
        survivor = await c.leader()
        lost = [n for n in c.names if n != survivor]
        fault = ctx.faults.begin("quorum-loss", ",".join(lost))
        await c.kill(*lost)
        for name in lost:
            shutil.rmtree(c.data_dir(name), ignore_errors=True)
        await asyncio.sleep(ctx.rng.uniform(1.0, 2.0))  # no quorum: writes must fail
        await c.kill(survivor)
        await c.start(survivor, ["--force-new-cluster"])
        await c.leader(among=[survivor])
        for name in lost:
            await c.start(name, ["--initial-cluster-state", "existing"])
        await c.leader()
        await ctx.converged(fault)


register(Scenario("kill-leader", kill_leader, "kill -9 the leader, restart it; repeat"))
register(Scenario("kill-random", kill_random, "kill -9 any master, restart it; repeat"))
register(Scenario("kill-all", kill_all, "kill -9 every master at once, restart them all"))
register(Scenario("pause-leader", pause_leader,
                  "SIGSTOP the leader past the election timeout, then SIGCONT"))
register(Scenario("quorum-loss", quorum_loss,
                  "lose two of three masters for good, recover with --force-new-cluster"))

# The scenarios of other modules register themselves (after SCENARIOS exists).
from chaos import (  # noqa: E402, F401, I001
    scenarios_app, scenarios_clock, scenarios_disk, scenarios_net)
