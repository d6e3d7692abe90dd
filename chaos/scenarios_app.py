"""The app scenarios: faults that only a running app shows, on Docker agents.

- `kill-agent`: kill -9 one agent that runs some of the app's pods; its Node must go
  NotReady (Ready Unknown), its pods be evicted and made again on the other node, the
  app answer throughout through the other node's NodePort; the agent is restarted.
- `rollout-kill-leader`: a rolling update (a new pod template) and, while it runs, kill
  -9 of the leader master (whose loops drive it); the new leader finishes the rollout.
  No pod may be bound twice or moved, and the app never has more than `replicas +
  maxSurge` pods alive at once.

Both run the app of `chaos.app` (busybox httpd, polled through every node's NodePort)
and set `app_unavailable_seconds`. The masters get short node timeouts so that a round of
`kill-agent` takes seconds, not Kubernetes' default minutes.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from chaos import app as app_mod
from chaos.scenarios import Context, Scenario, register
from raftkube.api import conditions, kinds

NODE_FLAGS = ("--node-monitor-grace-period", "4", "--node-monitor-period", "0.5",
              "--default-unreachable-toleration-seconds", "2",
              "--default-not-ready-toleration-seconds", "2")
AGENT_FLAGS = ("--crash-backoff-base", "1")


async def _app(ctx: Context, replicas: int) -> app_mod.App:
    app = app_mod.App(ctx.cluster.rest(), replicas=replicas, max_surge=1)
    await app.create()
    app.start()
    await app.informer.wait_synced(30)
    return app


async def _node_ready(ctx: Context, node: str) -> str | None:
    try:
        obj = await ctx.cluster.rest().get(kinds.NODE, "", node)
    except Exception:  # noqa: BLE001 - unknown this time; asked again
        return None
    cond = conditions.get(obj, "Ready")
    return str(cond.get("status")) if cond else None


async def kill_agent(ctx: Context) -> None:
    c = ctx.cluster
    app = await _app(ctx, replicas=2)
    recreated: list[float] = []
    not_ready: list[float] = []
    try:
        for _ in range(ctx.rounds):
            await ctx.pause_between()
            hosts = sorted({n for n in app.tracker.nodes().values() if n})
            victim = ctx.rng.choice(hosts or c.agent_names)
            moved = sorted(p for p, n in app.tracker.nodes().items() if n == victim)
            fault = ctx.faults.begin("kill-agent", victim, note=f"its pods: {moved}")
            began = time.monotonic()
            await c.kill(victim)
            seen_not_ready: float | None = None
            deadline = began + 90
            while True:
                if seen_not_ready is None and await _node_ready(ctx, victim) != "True":
                    seen_not_ready = time.monotonic() - began
                pods = app.tracker.nodes()
                if (seen_not_ready is not None and len(pods) == app.replicas
                        and all(n and n != victim for n in pods.values())):
                    try:
                        await app.rolled_out(timeout=1.0)
                        break
                    except TimeoutError:
                        pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the pods of {victim} were not made again elsewhere "
                                       f"within 90s (Ready seen not True after "
                                       f"{seen_not_ready}s; pods {pods})")
                await asyncio.sleep(0.2)
            recreated.append(round(time.monotonic() - began, 3))
            not_ready.append(round(seen_not_ready, 3))
            await c.start(victim)  # `rk up`: starts what is not running, waits Ready
            fault.healed()
    finally:
        await app.stop()
        ctx.report.update(app.report())
        ctx.report["node_not_ready_seconds"] = not_ready
        ctx.report["pods_recreated_seconds"] = recreated


async def rollout_kill_leader(ctx: Context) -> None:
    c = ctx.cluster
    replicas, surge = 3, 1
    app = await _app(ctx, replicas=replicas)
    rollouts: list[float] = []
    peaks: list[int] = []
    violations: list[str] = ctx.report.setdefault("violations", [])
    try:
        for _ in range(ctx.rounds):
            await ctx.pause_between()
            app.tracker.reset_peak()
            old = set(app.tracker.nodes())
            began = time.monotonic()
            await app.change_template()
            # Kill once the update is under way: a new pod exists, or a random moment.
            wait_until = began + ctx.rng.uniform(0.5, 3.0)
            while time.monotonic() < wait_until and set(app.tracker.nodes()) <= old:
                await asyncio.sleep(0.05)
            victim = await c.leader()
            new = sum(1 for p in app.tracker.pods.values() if app_mod.version_of(p)
                      == str(app.version) and app_mod.is_alive(p))
            fault = ctx.faults.begin("kill", victim, note=f"during a rolling update: "
                                     f"{new} of {replicas} pods of the new template")
            await c.kill(victim)
            await c.leader(among=[n for n in c.names if n != victim])
            await asyncio.sleep(ctx.rng.uniform(0.5, 1.5))
            await c.start(victim)
            await ctx.converged(fault)
            await app.rolled_out(timeout=120)
            rollouts.append(round(time.monotonic() - began, 3))
            peaks.append(app.tracker.peak)
            if app.tracker.peak > replicas + surge:
                violations.append(f"{app.tracker.peak} pods alive at once during a rollout "
                                  f"> replicas + maxSurge = {replicas + surge}")
    finally:
        await app.stop()
        report: dict[str, Any] = app.report()
        report["app_max_pods"] = max(peaks, default=app.tracker.peak)
        report["app_max_pods_allowed"] = replicas + surge
        report["rollout_seconds"] = rollouts
        ctx.report.update(report)
        violations += [f"bound twice: {r}" for r in app.tracker.rebound]


register(Scenario("kill-agent", kill_agent,
                  "kill -9 an agent running app pods: NotReady, pods made again elsewhere",
                  agents=2, runtime="docker", master_args=NODE_FLAGS,
                  agent_args=AGENT_FLAGS))
register(Scenario("rollout-kill-leader", rollout_kill_leader,
                  "kill -9 the leader during a rolling update: no pod bound twice, never "
                  "more than replicas + maxSurge pods", agents=2, runtime="docker",
                  master_args=NODE_FLAGS, agent_args=AGENT_FLAGS))
