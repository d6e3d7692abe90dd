"""Run scenarios against fresh local clusters and judge them.

For each scenario: a new cluster in `OUT/NAME/state`, the workload started, the
scenario's rounds of faults, a second of calm, the workload stopped, every member
running again, then the checks: every member converges to one revision; every member
holds every acknowledged write; the history is linearizable; no write stamped with a
deposed leader's term was applied; at most one leader per term; the watch saw every
acknowledged write exactly once, in order. The cluster is stopped and its processes
and namespaces removed, whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import time
import traceback
from typing import Any

from chaos import checks, linearizability, report
from chaos.cluster import Cluster
from chaos.history import Faults, History
from chaos.scenarios import SCENARIOS, Context, Scenario
from chaos.workload import Workload

CONVERGE_SECONDS = 30.0
CALM_SECONDS = 1.0


class Options:
    def __init__(self, *, rounds: int, seed: int, topology: str, masters: int, out: str,
                 keep: bool = False, check_timeout: float = 60.0,
                 serializable_reads: bool = False) -> None:
        self.rounds = rounds
        self.seed = seed
        self.topology = topology
        self.masters = masters
        self.out = os.path.abspath(out)
        self.keep = keep
        # The register reads served from each member's own copy, which a member cut off
        # from the others keeps serving stale: the checker must then say "not
        # linearizable" (how the chaos tier shows that it can fail).
        self.serializable_reads = serializable_reads
        self.check_timeout = check_timeout


def names(selection: str) -> list[str]:
    if selection == "all":
        return list(SCENARIOS)
    unknown = [n for n in selection.split(",") if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"--scenario: unknown {', '.join(unknown)} (choose from all, "
                         f"{', '.join(SCENARIOS)})")
    return selection.split(",")


async def run(selection: str, options: Options) -> dict[str, Any]:
    """Run the scenarios; write the report files; return the report."""
    chosen = names(selection)
    results: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for i, name in enumerate(chosen):
        print(f"chaos: {name} ({i + 1}/{len(chosen)}), seed {options.seed + i}", flush=True)
        result, rows = await run_one(SCENARIOS[name], options, options.seed + i)
        results[name] = result
        histories[name] = rows
        print(report.summary({**result, "seed": options.seed + i}).splitlines()[1], flush=True)
    if len(chosen) == 1:
        top = results[chosen[0]]
    else:
        top = totals(selection, options, results)
    report.write(options.out, top, histories)
    return top


def totals(selection: str, options: Options, results: dict[str, dict[str, Any]]
           ) -> dict[str, Any]:
    every = list(results.values())
    apps = [r["app_unavailable_seconds"] for r in every
            if r.get("app_unavailable_seconds") is not None]
    failovers = [s for r in every for s in r["failover_seconds"] if s is not None]
    lin = [r["linearizable"] for r in every]
    # The first scenario whose history is not linearizable, with its offending key's
    # sub-history: what the issue asks of `linearizable: false`, at the top for `all` too.
    offending = next(({"scenario": name, "key": r["linearizability"].get("key"),
                       "history": r["linearizability"].get("history"),
                       "explanation": r["linearizability"].get("explanation")}
                      for name, r in results.items()
                      if r["linearizable"] is False and r.get("linearizability")), None)
    return {
        "scenario": selection, "seed": options.seed, "rounds": options.rounds,
        "topology": options.topology, "masters": options.masters,
        "passed": all(r["passed"] for r in every),
        "acked_writes": sum(r["acked_writes"] for r in every),
        "lost_writes": sum(r["lost_writes"] for r in every),
        "linearizable": (False if False in lin else None if None in lin else True),
        **({"linearizability": offending} if offending else {}),
        "failover_seconds": failovers,
        "failover": checks.summary(failovers),
        "stale_term_writes_applied": sum(r["stale_term_writes_applied"] for r in every),
        "max_leaders_per_term": max(r["max_leaders_per_term"] for r in every),
        "watch_gaps": sum(r["watch_gaps"] for r in every),
        "app_unavailable_seconds": round(sum(apps), 3) if apps else None,
        "scenarios": results,
    }


async def run_one(scenario: Scenario, options: Options, seed: int
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rng = random.Random(seed)
    topology = scenario.topology or options.topology
    base = os.path.join(options.out, scenario.name)
    state = os.path.join(base, "state")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base)
    cluster = Cluster(state, masters=options.masters, agents=scenario.agents,
                      runtime=scenario.runtime, topology=topology,
                      master_args=list(scenario.master_args),
                      agent_args=list(scenario.agent_args))
    history, faults = History(), Faults()
    ctx = Context(cluster, rng, options.rounds, faults)
    workload: Workload | None = None
    result: dict[str, Any] = {"scenario": scenario.name, "seed": seed,
                              "rounds": options.rounds, "topology": topology,
                              "masters": options.masters}
    problems: list[str] = []
    started = time.monotonic()
    try:
        await cluster.up()
        async with cluster:
            history.start = time.monotonic()
            if scenario.kv_workload:
                workload = Workload(cluster, history, rng,
                                    serializable_reads=options.serializable_reads)
                await workload.start()
                ctx.workload = workload
            try:
                await scenario.run(ctx)
                await asyncio.sleep(CALM_SECONDS)
            except Exception as e:  # noqa: BLE001 - the report says what broke
                problems.append(f"the scenario broke off: {e!r}")
                result["error"] = traceback.format_exc()
            finally:
                for fault in faults.items:  # a fault the scenario could not heal
                    if fault.healed_at is None:
                        problems.append(f"fault not healed: {fault.kind} {fault.target}")
                if workload is not None:
                    await workload.stop()
            await cluster.up()  # whatever a broken scenario left down
            if workload is not None:
                await judge(cluster, workload, options, result, problems)
                await workload.close()
    except Exception as e:  # noqa: BLE001
        problems.append(f"the run broke off: {e!r}")
        result.setdefault("error", traceback.format_exc())
    finally:
        if workload is not None:
            await workload.close()
        try:
            if not options.keep:
                await cluster.down()
        except Exception as e:  # noqa: BLE001
            problems.append(f"stopping the cluster failed: {e!r}")
    result["faults"] = [{"kind": f.kind, "target": f.target,
                         "began": history.relative(f.began),
                         "healed": None if f.healed_at is None
                         else history.relative(f.healed_at), "note": f.note,
                         "converged_seconds": f.converged}
                        for f in faults.items]
    failover = checks.failover_seconds(faults.items, history.samples)
    result["failover_seconds"] = failover
    result["failover"] = checks.summary([s for s in failover if s is not None])
    result["fault_convergence"] = checks.summary(
        [f.converged for f in faults.items if f.converged is not None])
    result.update(ctx.report)
    problems += [str(p) for p in ctx.report.get("violations", [])]
    defaults = {"acked_writes": 0, "lost_writes": 0, "linearizable": None,
                "stale_term_writes_applied": 0, "max_leaders_per_term": 0, "watch_gaps": 0}
    for key, value in defaults.items():
        result.setdefault(key, value)
    result.setdefault("app_unavailable_seconds", None)
    result["seconds"] = round(time.monotonic() - started, 1)
    result["problems"] = problems
    result["passed"] = not problems
    rows = history.as_rows()
    with open(os.path.join(base, "history.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return result, rows


def final_reads(ops: list[linearizability.Op], held: dict[str, tuple[str, int]], *,
                invoked: float, completed: float, first_client: int
                ) -> list[linearizability.Op]:
    """What one member holds, as gets after everything (clients `first_client`,
    `first_client - 1`, ...): the checker then also proves the final state is one the
    history allows. Every key the history touched, and every key the member holds: a
    key that only writes classified as certainly failed (left out of the history) put
    there is read with no write to explain it, so a wrong `fail` cannot go unseen."""
    keys = sorted({op.key for op in ops} | set(held))
    return [linearizability.Op(client=first_client - i, key=key, kind="get",
                               result=held[key][0] if key in held else None,
                               invoked=invoked, completed=completed)
            for i, key in enumerate(keys)]


async def judge(cluster: Cluster, workload: Workload, options: Options,
                result: dict[str, Any], problems: list[str]) -> None:
    """The checks after the faults, on a whole cluster."""
    healed = time.monotonic()
    revisions: set[int] = set()
    while time.monotonic() - healed < CONVERGE_SECONDS:
        statuses = await asyncio.gather(*(cluster.status(n) for n in cluster.names))
        revisions = {int(s["header"]["revision"]) for s in statuses if s}
        if len(revisions) == 1 and all(statuses):
            break
        await asyncio.sleep(0.1)
    else:
        problems.append(f"members did not converge within {CONVERGE_SECONDS:g}s: "
                        f"revisions {sorted(revisions)}")
    result["convergence_seconds"] = round(time.monotonic() - healed, 3)

    deadline = time.monotonic() + CONVERGE_SECONDS
    while not workload.saw_every_ack() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)

    acked = {k: (a.value, a.revision) for k, a in workload.acked.items()}
    stored: dict[str, dict[str, tuple[str, int]]] = {}
    final_ops: list[linearizability.Op] = []
    for name in cluster.names:
        try:
            invoked = time.monotonic()
            keys = await workload.kv.range_prefix(name, "w/")
            keys.update(await workload.kv.range_prefix(name, "r/"))
        except RuntimeError as e:
            problems.append(f"final read: {e}")
            continue
        completed = time.monotonic()
        stored[name] = keys
        final_ops += final_reads(workload.ops, keys, invoked=invoked, completed=completed,
                                 first_client=-1 - len(final_ops))

    lost = checks.lost_writes(acked, stored)
    result["acked_writes"] = len(acked)
    result["lost_writes"] = len(lost)
    if lost:
        result["lost_examples"] = lost[:10]
        problems.append(f"{len(lost)} acknowledged writes missing, e.g. {lost[0]}")

    verdict = await asyncio.get_running_loop().run_in_executor(
        None, lambda: linearizability.check(workload.ops + final_ops,
                                            timeout=options.check_timeout))
    result["linearizable"] = verdict.linearizable
    result["linearizability"] = {"keys": verdict.keys, "ops": verdict.ops,
                                 "explanation": verdict.explanation}
    if verdict.linearizable is not True:
        result["linearizability"].update({"key": verdict.key, "history": verdict.history})
        problems.append(f"not linearizable: {verdict.explanation}"
                        if verdict.linearizable is False
                        else f"linearizability unknown: {verdict.explanation}")

    stale = checks.stale_term_writes(workload.fenced + workload.stale_acked)
    flagged = {s["revision"] for s in stale}
    # A deposed leader's stamped writes sent on purpose (stale_writes) must all have
    # been refused, whether or not a newer stamp had been applied before them.
    stale += [{"revision": rev, "term": term, "after_term": 0}
              for term, rev in workload.stale_acked if rev not in flagged]
    result["stale_term_writes_applied"] = len(stale)
    result["fenced_writes"] = {"acked": len(workload.fenced),
                               "refused_stale": workload.fenced_refused}
    if stale:
        result["stale_examples"] = stale[:10]
        problems.append(f"{len(stale)} writes from a deposed leader's term applied")

    most, doubled = checks.max_leaders_per_term(workload.claims)
    result["max_leaders_per_term"] = most
    result["terms"] = sorted(workload.claims)
    if doubled:
        problems.append(f"two leaders in one term: {doubled}")

    gaps = checks.watch_gaps(acked, workload.watched)
    result["watch_gaps"] = gaps["total"]
    result["watch"] = {**gaps, "events": len(workload.watched),
                       "resumes": workload.watch_resumes, "errors": workload.watch_errors}
    if gaps["total"] or workload.watch_errors:
        problems.append(f"the watch: {gaps['missing']} acknowledged writes missing, "
                        f"{gaps['duplicates']} duplicates, {gaps['out_of_order']} out of "
                        f"order; {workload.watch_errors[:2]}")
    if not acked:
        problems.append("no write was acknowledged: the workload did not run")
