"""Benchmark of node loss: from a node's death to NotReady, to eviction, to its pods
Running elsewhere, with the default flags and with tuned ones, loaded or not.

A fresh local cluster per configuration (`rk up`: 3 masters, 3 simulated nodes, the
configuration's `rk master` flags) runs a ReplicaSet of `--pods` pods (a terminating pod
does not count for it, so an evicted pod is replaced at once). Each round SIGKILLs the agent
of the node with the most pods and records, from informers' events (this process's
monotonic clock, first arrival), the time from the kill to:

- NotReady: the node's Ready condition Unknown;
- evicted: the last of its pods marked for deletion (deletionTimestamp);
- Running elsewhere: `--pods` pods Ready again, none of them on the dead node;

then restarts the agent and records the time to the node Ready with the node
controller's taints gone. Flaps are the other nodes' Ready transitions during the
round (there should be none). `--load N` adds N writers that update ConfigMaps through
the API as fast as they can for the whole run (every write a Raft commit), so the
masters are busy on this small machine while the leases must still be heard.

Run: `python bench/node_loss.py [--rounds 3] [--pods 6] [--load 32]
[--record docs/benchmarks.md]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from raftkube.api import conditions, kinds, taints  # noqa: E402
from raftkube.cli import local  # noqa: E402
from raftkube.client import informer as inf  # noqa: E402
from raftkube.client import rest, transport  # noqa: E402
from raftkube.client.errors import ClientError  # noqa: E402
from tests.cluster.harness import Cluster  # noqa: E402
from tests.cluster.replicas import Pods, replicaset_running  # noqa: E402

Obj = dict[str, Any]
SECTION_BEGIN = "<!-- bench/node_loss.py: begin -->"
SECTION_END = "<!-- bench/node_loss.py: end -->"
NODES = 3
TUNED = ["--node-monitor-grace-period", "5", "--default-unreachable-toleration-seconds", "5"]
CONFIGS = {"defaults": [], "tuned": TUNED}
GOALS = {"defaults": 45.0, "tuned": 15.0}
# Kubernetes' defaults: --node-monitor-grace-period 40 s (50 s since 1.29), checked every
# --node-monitor-period 5 s, then the DefaultTolerationSeconds admission's 300 s.
KUBERNETES = "40-50 s to NotReady (+ up to 5 s), then 300 s to eviction: 5 min 45-55 s"


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)


@dataclass
class Round:
    notready: float = float("nan")
    evicted: float = float("nan")
    running: float = float("nan")
    back: float = float("nan")
    flaps: int = 0
    pods: int = 0
    elections: int = 0  # Raft terms begun during the round (each a new leader's loops)


@dataclass
class Watch:
    """Informers on nodes and pods that stamp what this round waits for."""

    pods: inf.Informer
    nodes: inf.Informer
    victim: str = ""
    killed: float = 0.0
    doomed: set[str] = field(default_factory=set)
    marked: dict[str, float] = field(default_factory=dict)
    round: Round = field(default_factory=Round)

    def node_changed(self, old: Obj, new: Obj) -> None:
        now = time.monotonic()
        name = new["metadata"]["name"]
        was = (conditions.get(old, "Ready") or {}).get("status")
        ready = (conditions.get(new, "Ready") or {}).get("status")
        if not self.killed or was == ready:
            return
        if name == self.victim:
            if ready == "Unknown" and math.isnan(self.round.notready):
                self.round.notready = now - self.killed
        else:
            self.round.flaps += 1

    def pod_changed(self, _old: Obj, new: Obj) -> None:
        name = new["metadata"]["name"]
        if name in self.doomed and new["metadata"].get("deletionTimestamp") and \
                name not in self.marked:
            self.marked[name] = time.monotonic() - self.killed


async def write_load(client: rest.RestClient, writers: int, stop: asyncio.Event) -> int:
    """Update ConfigMaps from `writers` tasks until `stop`; the number of writes."""
    done = 0

    async def writer(i: int) -> None:
        nonlocal done
        name = f"load-{i}"
        with contextlib.suppress(ClientError):
            await client.create(kinds.CONFIGMAP, "default", {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
        n = 0
        while not stop.is_set():
            n += 1
            try:
                await client.patch(kinds.CONFIGMAP, "default", name, {"data": {"n": str(n)}})
                done += 1
            except ClientError:
                await asyncio.sleep(0.1)

    await asyncio.gather(*(writer(i) for i in range(writers)))
    return done


async def until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


async def one_config(name: str, flags: list[str], *, rounds: int, pods: int,
                     load: int) -> tuple[list[Round], int]:
    state = tempfile.mkdtemp(prefix=f"rk-nodeloss-{name}-")
    cluster = Cluster(state)
    log(f"{name}: rk up (3 masters, {NODES} nodes) with {' '.join(flags) or 'no flags'}")
    await asyncio.get_running_loop().run_in_executor(None, lambda: local.up(
        state_dir=state, masters=3, agents=NODES, master_args=flags))
    cluster.up()
    results: list[Round] = []
    writes = 0
    try:
        async with transport.Transport(list(cluster.url.values()), cluster.token,
                                       ca=cluster.ca, wait=30) as tp:
            client = rest.RestClient(tp)
            async with replicaset_running(client, "web", pods) as web:
                w = Watch(web.informer, inf.Informer(client, kinds.NODE))
                w.nodes.add_handler(inf.Handler(update=w.node_changed))
                w.pods.add_handler(inf.Handler(update=w.pod_changed))
                results, writes = await rounds_of(name, cluster, web, w, rounds=rounds,
                                                  pods=pods, client=client, load=load)
    finally:
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: local.down(state_dir=state))
    return results, writes


async def rounds_of(name: str, cluster: Cluster, web: Pods, w: Watch, *, rounds: int,
                    pods: int, client: rest.RestClient, load: int) -> tuple[list[Round], int]:
    results: list[Round] = []
    stop = asyncio.Event()
    nodes = asyncio.ensure_future(w.nodes.run())
    loader = asyncio.ensure_future(write_load(client, load, stop)) if load else None
    writes = 0
    try:
        for i in range(rounds):
            results.append(await one_round(cluster, web, w, pods))
            r = results[-1]
            log(f"{name} round {i + 1}: NotReady {r.notready:.1f}s, evicted "
                f"{r.evicted:.1f}s, Running elsewhere {r.running:.1f}s, back "
                f"{r.back:.1f}s, flaps {r.flaps}, leader changes {r.elections}")
    finally:
        stop.set()
        if loader is not None:
            writes = await loader
        nodes.cancel()
        await asyncio.gather(nodes, return_exceptions=True)
    return results, writes


async def one_round(cluster: Cluster, web: Pods, w: Watch, pods: int) -> Round:
    await until(lambda: len(web.ready()) == pods == len(web.active()), 120,
                f"{pods} pods Ready")
    on: dict[str, list[str]] = {}
    for p in web.ready():
        on.setdefault(p["spec"]["nodeName"], []).append(p["metadata"]["name"])
    w.victim = max(on, key=lambda n: len(on[n]))
    w.doomed, w.marked, w.round = set(on[w.victim]), {}, Round(pods=len(on[w.victim]))
    term = await raft_term(cluster)
    w.killed = time.monotonic()
    cluster.kill(w.victim)
    r = w.round
    await until(lambda: len(w.marked) == len(w.doomed), 600, "the dead node's pods evicted")
    r.evicted = max(w.marked.values())
    await until(lambda: len(web.ready()) == pods and not any(
        p["spec"]["nodeName"] == w.victim for p in web.ready()), 120,
                "the pods Running elsewhere")
    r.running = time.monotonic() - w.killed
    r.elections = await raft_term(cluster) - term
    restarted = time.monotonic()
    await asyncio.get_running_loop().run_in_executor(None, lambda: local.up(
        state_dir=cluster.state_dir, masters=3, agents=NODES))

    def back() -> bool:
        node = w.nodes.cache.get(w.victim) or {}
        return conditions.is_true(node, "Ready") and not any(
            taints.has(node, key) for key in (taints.UNREACHABLE, taints.NOT_READY))

    await until(back, 120, "the node back and untainted")
    r.back = time.monotonic() - restarted
    await until(lambda: not any(p["metadata"]["name"] in w.doomed
                                for p in w.pods.cache.list()), 120,
                "the evicted pods finished by their agent")
    w.killed = 0.0
    return r


async def raft_term(cluster: Cluster) -> int:
    """The highest Raft term any master reports."""
    def read() -> int:
        terms = [int(s["header"]["raft_term"]) for s in
                 (local.status_of(url, cluster.token) for url in cluster.url.values()) if s]
        return max(terms, default=0)
    return await asyncio.get_running_loop().run_in_executor(None, read)


def summary(values: list[float]) -> str:
    good = [v for v in values if not math.isnan(v)]
    if not good:
        return "–"
    return f"{statistics.median(good):.1f} (max {max(good):.1f})"


def table(results: dict[str, tuple[list[Round], int]], load: int) -> str:
    lines = ["| configuration | kill → NotReady, s | kill → evicted, s | "
             "kill → Running elsewhere, s | restart → Ready, untainted, s | flaps | "
             "leader changes | goal (Running elsewhere) |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name, (rounds, writes) in results.items():
        base = name.split("+")[0]
        goal = GOALS[base]
        worst = max((r.running for r in rounds), default=float("nan"))
        met = "met" if worst <= goal and not any(r.flaps for r in rounds) else "NOT met"
        shown = name + (f" ({writes:,} writes by {load} writers)" if "+load" in name else "")
        lines.append(
            f"| {shown} | {summary([r.notready for r in rounds])} | "
            f"{summary([r.evicted for r in rounds])} | {summary([r.running for r in rounds])} "
            f"| {summary([r.back for r in rounds])} | {sum(r.flaps for r in rounds)} | "
            f"{sum(r.elections for r in rounds)} | ≤ {goal:.0f} s, no flap: {met} |")
    return "\n".join(lines)


def record(path: Path, body: str, args_line: str, rounds: int, pods: int) -> None:
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = "\n".join([
        SECTION_BEGIN, "## Node loss (bench/node_loss.py)", "",
        f"Recorded {now} with `{args_line}`: {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, everything on this one machine over 127.0.0.1.", "",
        f"Method: per configuration a fresh `rk up` (3 masters, {NODES} simulated nodes), "
        f"a ReplicaSet of {pods} pods; {rounds} rounds each SIGKILL the agent of the node "
        "with the most "
        "pods, time kill → Ready=Unknown, → its last pod marked for deletion, → all pods "
        "Ready again on other nodes (informer events, first arrival), then restart the "
        "agent and time it → Ready with the node controller's taints gone. Median (max) "
        "over the rounds. Flaps: Ready transitions of the nodes that did not die. Leader "
        "changes: Raft terms begun between the kill and the pods running elsewhere; a new "
        "leader's loops start every countdown afresh (the grace period and, as Kubernetes' "
        "taint manager does after a controller-manager failover, the toleration), so a "
        "round with one takes up to a toleration longer. Loaded: `--load` writers update "
        "ConfigMaps as fast as they can through the API for the whole run, which on this "
        "machine starves Raft's ticks enough to cause elections now and then. "
        f"Tuned: `{' '.join(TUNED)}`. Kubernetes with its defaults: {KUBERNETES}.", "",
        body, SECTION_END, ""])
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END) + r"\n?",
                         re.S)
    new = pattern.sub(lambda _: text, old, count=1) if pattern.search(old) \
        else old.rstrip("\n") + "\n\n" + text
    path.write_text(new)


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pods", type=int, default=6)
    p.add_argument("--load", type=int, default=32, help="writers for the loaded runs (0: none)")
    p.add_argument("--configs", default="defaults,defaults+load,tuned,tuned+load",
                   help="comma-separated: defaults, tuned, defaults+load, tuned+load")
    p.add_argument("--record", type=Path, help="write the section into this markdown file")
    args = p.parse_args(argv)
    results: dict[str, tuple[list[Round], int]] = {}
    for name in args.configs.split(","):
        base, _, loaded = name.partition("+")
        results[name] = await one_config(name, CONFIGS[base], rounds=args.rounds,
                                         pods=args.pods, load=args.load if loaded else 0)
    body = table(results, args.load)
    print(body)
    if args.record:
        record(args.record, body, "python bench/node_loss.py " + " ".join(argv or sys.argv[1:]),
               args.rounds, args.pods)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
