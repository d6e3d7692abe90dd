"""`slow-disk`: every fsync of one master takes 0.2 s longer, while the workload writes.

Every master's data dir is first moved onto FaultFS (`chaos.slowdisk`, one restart at a
time); then, each round, the leader's disk is slowed for a while, then a follower's.
The cluster must go on taking writes (the runner's checks: nothing acknowledged lost,
linearizable, one leader per term). A slow follower should not be felt (a majority of
two fast members commits); a slow leader is: it syncs its own journal before it counts
its copy, so every commit waits for its disk. The write latencies of each window, beside
those of the quiet second before it, go into the report (`slow_disk`), with whether the
slowed leader kept leading.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from chaos import slowdisk
from chaos.scenarios import Context, Scenario, register

FSYNC_DELAY = 0.2
SLOW_SECONDS = 5.0


def latencies(ctx: Context, since: float, until: float) -> dict[str, Any]:
    """Median and p99 (ms) of the acknowledged writes invoked in [since, until)."""
    if ctx.workload is None:
        return {}
    took = sorted(s.completed - s.invoked for s in ctx.workload.history.samples
                  if s.kind in ("put", "cas", "fenced-put") and s.outcome == "ok"
                  and since <= s.invoked < until)
    failed = sum(1 for s in ctx.workload.history.samples
                 if s.kind in ("put", "cas", "fenced-put") and s.outcome != "ok"
                 and since <= s.invoked < until)
    if not took:
        return {"writes_ok": 0, "writes_not_ok": failed}
    by_server: dict[str, list[float]] = {}
    for s in ctx.workload.history.samples:
        if s.kind in ("put", "cas", "fenced-put") and s.outcome == "ok" \
                and since <= s.invoked < until:
            by_server.setdefault(s.server, []).append(s.completed - s.invoked)
    return {"writes_ok": len(took), "writes_not_ok": failed,
            "median_ms": round(statistics.median(took) * 1000, 1),
            "p99_ms": round(took[min(len(took) - 1, int(len(took) * 0.99))] * 1000, 1),
            # Through which member: a client waits for the member it asked to apply.
            "median_ms_by_member": {k: round(statistics.median(v) * 1000, 1)
                                    for k, v in sorted(by_server.items())}}


async def slow_disk(ctx: Context) -> None:
    c = ctx.cluster
    disks = {n: slowdisk.SlowDisk(c, n) for n in c.names}
    windows: list[dict[str, Any]] = ctx.report.setdefault("slow_disk", [])
    finished = False
    try:
        for name in c.names:  # one at a time: a majority runs throughout
            fault = ctx.faults.begin("restart", name, note="onto FaultFS")
            await disks[name].mount()
            await c.leader()
            await ctx.converged(fault)
        for _ in range(ctx.rounds):
            await ctx.pause_between()
            leader = await c.leader()
            follower = ctx.rng.choice([n for n in c.names if n != leader])
            for victim, role in ((leader, "leader"), (follower, "follower")):
                before = time.monotonic()
                await asyncio.sleep(1.0)
                fault = ctx.faults.begin("slow-disk", victim,
                                         note=f"fsync +{FSYNC_DELAY:g}s ({role})")
                await disks[victim].set_fsync_delay(FSYNC_DELAY)
                began = time.monotonic()
                await asyncio.sleep(SLOW_SECONDS)
                await disks[victim].set_fsync_delay(0.0)
                ended = time.monotonic()
                leads_now = await c.leader()
                fault.healed()
                windows.append({"member": victim, "role": role,
                                "fsync_delay_seconds": FSYNC_DELAY,
                                "still_leader": leads_now == victim if role == "leader"
                                else None,
                                "baseline": latencies(ctx, before, began),
                                "slowed": latencies(ctx, began, ended)})
        finished = True
    finally:
        # Back on the real disk, one at a time; a member that does not come back (or
        # an unmount that fails) must not leave the others' FaultFS mounts behind.
        failed: list[Exception] = []
        for name, disk in disks.items():
            if disk.fs is None:
                continue
            fault = ctx.faults.begin("restart", name, note="off FaultFS")
            try:
                await disk.unmount()
                await c.leader()
                await ctx.converged(fault)
            except Exception as e:  # noqa: BLE001 - reported, after every unmount
                failed.append(e)
                ctx.report.setdefault("violations", []).append(
                    f"{name} back off FaultFS: {e!r}")
        if failed and finished:  # else the error that broke the scenario goes on
            raise failed[0]


register(Scenario("slow-disk", slow_disk,
                  f"every fsync of the leader, then of a follower, {FSYNC_DELAY:g}s slower "
                  "(FaultFS): writes go on, nothing lost"))
