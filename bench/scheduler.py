"""Benchmark of the control plane: 10,000 pods onto 1,000 simulated nodes through Raft.

A fresh local cluster (`rk up`: 3 masters and simulated agents hosting many hollow nodes
each, as kubemark does, renewing their Leases every 10 s as kubelets do). Then, all at
once, Deployments (their ReplicaSets and pods made by the leader's controllers) and bare
pods are created, and one watch on every pod records, for each pod, when it was first
seen, when it was bound to a node and when its node reported it Running.

Printed: pods bound per second end to end (first bind to last), creation→bound and
creation→Running p50/p99, the store's write rate over the same window (revisions a
second, every write of every kind: creates, binds, statuses, leases, events) beside the
bind rate, and each master's CPU (seconds used over the run) and peak RSS. Beside them,
Kubernetes' published scheduler throughput: its density tests hold at least 100 pods/s;
scheduler_perf reports about 300 pods/s on much larger machines.

Run: `python bench/scheduler.py [--nodes 1000] [--pods 10000] [--deployments 20]
[--record docs/benchmarks.md]`; `--nodes 100 --pods 1000` is a quick look.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
RK = [sys.executable, "-m", "raftkube.cli"]
PODS = "/api/v1/namespaces/default/pods"
DEPLOYS = "/apis/apps/v1/namespaces/default/deployments"
ANCHORS = [("Kubernetes density test SLO (pods scheduled a second)", "≥ 100"),
           ("Kubernetes scheduler_perf, larger machines (pods/s)", "≈ 300")]
GOALS = {"bind_rate": 500.0, "leader_rss_mib": 500.0}


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Timeline:
    seen: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)

    def note(self, obj: dict[str, Any], now: float) -> None:
        name = obj["metadata"]["name"]
        self.seen.setdefault(name, now)
        if (obj.get("spec") or {}).get("nodeName"):
            self.bound.setdefault(name, now)
        if (obj.get("status") or {}).get("phase") == "Running":
            self.running.setdefault(name, now)


def proc_sample(pid: int) -> tuple[float, int]:
    """(cpu seconds used so far, peak RSS in bytes) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    peak = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return cpu, peak


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name,
                                                            "labels": {"bench": "bare"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:bench", "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"}}}]}}


def deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "c", "image": "busybox:bench", "resources": {
                             "requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}


async def watch_pods(session: aiohttp.ClientSession, url: str, timeline: Timeline,
                     stop: asyncio.Event) -> None:
    rv = ""
    while not stop.is_set():
        query = {"watch": "true", "allowWatchBookmarks": "true"}
        if rv:
            query["resourceVersion"] = rv
        try:
            async with session.get(url + PODS, params=query,
                                   timeout=aiohttp.ClientTimeout(sock_read=60)) as resp:
                async for line in resp.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event["object"]
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        timeline.note(obj, time.monotonic())
        except (aiohttp.ClientError, TimeoutError):
            await asyncio.sleep(0.2)


async def create_all(session: aiohttp.ClientSession, urls: list[str],
                     bodies: list[tuple[str, dict[str, Any]]], workers: int = 64) -> int:
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    failed = 0

    async def worker(i: int) -> None:
        nonlocal failed
        while not queue.empty():
            path, body = queue.get_nowait()
            for attempt in range(5):
                try:
                    async with session.post(urls[(i + attempt) % len(urls)] + path,
                                            json=body) as resp:
                        if resp.status in (200, 201, 409):  # 409: an earlier try applied
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass  # a master gone or too busy: the next one, after a pause
                await asyncio.sleep(0.2)
            else:
                failed += 1

    await asyncio.gather(*(worker(i) for i in range(workers)))
    return failed


async def revision(session: aiohttp.ClientSession, url: str) -> int:
    async with session.post(url + "/v3/maintenance/status", json={}) as resp:
        return int((await resp.json())["header"]["revision"])


async def leader_name(session: aiohttp.ClientSession, layout: dict[str, Any]) -> str:
    ids = {}
    leader = ""
    for m in layout["masters"]:
        async with session.post(f"http://{m['api']}/v3/maintenance/status", json={}) as r:
            st = await r.json()
        ids[st["header"]["member_id"]] = m["name"]
        leader = st["leader"]
    return ids.get(leader, "?")


async def run(args: argparse.Namespace, state: str) -> dict[str, Any]:
    per_agent = max(1, args.nodes // args.agents)
    started = time.monotonic()
    # Plain HTTP on loopback: the scheduler's cost, not TLS's, is what is measured.
    subprocess.run([*RK, "up", "--insecure-http", "--masters", "3", "--agents",
                    str(args.agents), "--count",
                    str(per_agent), "--runtime", "simulated", "--state-dir", state,
                    "--agent-arg=--lease-interval=10", "--agent-arg=--cpu=32",
                    "--agent-arg=--memory=64Gi",
                    *(f"--master-arg={a}" for a in args.master_arg)],
                   check=True, stdout=subprocess.DEVNULL)
    up_seconds = time.monotonic() - started
    layout = yaml.safe_load(open(f"{state}/cluster.yaml"))
    token = open(f"{state}/token").read().strip()
    urls = [f"http://{m['api']}" for m in layout["masters"]]
    pids = {m["name"]: int(open(f"{state}/pids/{m['name']}.pid").read())
            for m in layout["masters"]}
    # Every other process of the cluster (the simulated agents): their CPU is part of
    # what one pod costs this machine.
    others = {f[:-4]: int(open(f"{state}/pids/{f}").read())
              for f in os.listdir(f"{state}/pids") if f.endswith(".pid") and f[:-4] not in pids}
    timeline = Timeline()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"},
                                     connector=aiohttp.TCPConnector(limit=200)) as session:
        leader = await leader_name(session, layout)
        watcher = asyncio.ensure_future(watch_pods(session, urls[0], timeline, stop))
        await asyncio.sleep(1.0)
        # The idle cost first: Lease renewals and node heartbeats go on while pods are
        # bound, so what one pod costs is the CPU over the run less this rate.
        everyone = {**pids, **others}
        idle0, idle_t0 = {n: proc_sample(p)[0] for n, p in everyone.items()}, time.monotonic()
        await asyncio.sleep(args.idle_window)
        idle1, idle_t1 = {n: proc_sample(p)[0] for n, p in everyone.items()}, time.monotonic()
        idle_rate = {n: (idle1[n] - idle0[n]) / (idle_t1 - idle_t0) for n in everyone}
        cpu0 = {n: proc_sample(p)[0] for n, p in everyone.items()}
        client0 = time.process_time()
        spies = profile(args.profile, {**pids, **others})
        try:
            rev0 = await revision(session, urls[0])
            t0 = time.monotonic()
            in_deployments = args.pods // 2 if args.deployments else 0
            bodies: list[tuple[str, dict[str, Any]]] = []
            for d in range(args.deployments):
                share = in_deployments // args.deployments
                bodies.append((DEPLOYS, deployment(f"d{d}", share)))
            expected = (in_deployments // args.deployments) * args.deployments \
                if args.deployments else 0
            bare = args.pods - expected
            bodies += [(PODS, pod(f"p{i:05d}")) for i in range(bare)]
            expected += bare
            failed = await create_all(session, urls, bodies)
            created_at = time.monotonic()
            peak = dict.fromkeys(pids, 0)
            deadline = time.monotonic() + args.timeout
            while time.monotonic() < deadline:
                for n, p in pids.items():
                    peak[n] = max(peak[n], proc_sample(p)[1])
                if len(timeline.running) >= expected:
                    break
                await asyncio.sleep(0.5)
            t_end = time.monotonic()
            rev1 = await revision(session, urls[0])
            cpu1 = {n: proc_sample(p)[0] for n, p in {**pids, **others}.items()}
            client1 = time.process_time()
        finally:
            stop_profiles(spies)  # even if the run failed: no py-spy left behind
        stop.set()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    binds = sorted(timeline.bound.values())
    bind_window = (binds[-1] - binds[0]) if len(binds) > 1 else float("nan")
    to_bound = [timeline.bound[n] - timeline.seen[n] for n in timeline.bound]
    to_running = [timeline.running[n] - timeline.seen[n] for n in timeline.running]
    return {
        "nodes": per_agent * args.agents, "pods": expected, "failed_creates": failed,
        "bound": len(binds), "running": len(timeline.running), "leader": leader,
        "cluster_up_s": up_seconds, "create_s": created_at - t0,
        "bind_rate": len(binds) / bind_window if bind_window == bind_window else 0.0,
        "bound_p50": pct(to_bound, 0.5), "bound_p99": pct(to_bound, 0.99),
        "running_p50": pct(to_running, 0.5), "running_p99": pct(to_running, 0.99),
        "store_rate": (rev1 - rev0) / (t_end - t0),
        "cpu": {n: cpu1[n] - cpu0[n] for n in pids}, "wall": t_end - t0,
        "cpu_agents": sum(cpu1[n] - cpu0[n] for n in others),
        "cpu_client": client1 - client0,
        "idle_cpu": {n: idle_rate[n] * (t_end - t0) for n in pids},
        "idle_cpu_agents": sum(idle_rate[n] for n in others) * (t_end - t0),
        "peak_rss_mib": {n: peak[n] / 2**20 for n in pids},
    }


def profile(out: str | None, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    """py-spy on every process of the cluster while pods are created and bound: one
    profile (raw collapsed stacks, `NAME.txt`) per process under `out`. Idle threads
    are left out: the samples are where CPU went, not where threads waited."""
    if not out:
        return []
    os.makedirs(out, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    return [subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "40",
                              "--format", "raw", "--output", f"{out}/{name}.txt"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name, pid in pids.items()]


def stop_profiles(spies: list[subprocess.Popen[bytes]], *, grace: float = 60.0) -> None:
    """Stop the py-spy processes `profile` started: SIGINT, on which each writes its
    profile; one that has not exited `grace` seconds later is killed."""
    for spy in spies:
        if spy.poll() is None:
            spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def per_pod(r: dict[str, Any]) -> list[str]:
    """CPU one bound pod costs, per process and in all: the figure that does not depend
    on how much of the machine other work took (wall-clock rates do)."""
    n = max(1, r["bound"])
    gross = {f"{name}{' (leader)' if name == r['leader'] else ''}": 1000 * c / n
             for name, c in sorted(r["cpu"].items())}
    gross["agents"] = 1000 * r["cpu_agents"] / n
    gross["client"] = 1000 * r["cpu_client"] / n
    idle = [1000 * r["idle_cpu"][name] / n for name in sorted(r["cpu"])]
    idle += [1000 * r["idle_cpu_agents"] / n, 0.0]
    net = [g - i for g, i in zip(gross.values(), idle, strict=True)]
    names = " / ".join(gross)
    return [f"| CPU ms per bound pod: {names} | "
            f"{' / '.join(f'{v:.1f}' for v in gross.values())} | |",
            f"| the same less the idle cluster's rate (heartbeats, Leases) | "
            f"{' / '.join(f'{v:.1f}' for v in net)} | |",
            f"| CPU ms per bound pod, every process: gross / less idle | "
            f"{sum(gross.values()):.1f} / {sum(net):.1f} | |"]


def table(r: dict[str, Any]) -> str:
    lines = [
        f"{r['nodes']:,} simulated nodes, {r['pods']:,} pods created at once "
        f"({r['failed_creates']} creates failed); {r['bound']:,} bound, "
        f"{r['running']:,} Running; leader {r['leader']}.",
        "",
        "| metric | raftkube | anchor |",
        "|---|---:|---|",
        f"| pods bound a second, end to end through Raft | {r['bind_rate']:,.0f} | "
        f"{ANCHORS[0][1]} (Kubernetes density SLO); {ANCHORS[1][1]} (scheduler_perf) |",
        f"| store writes a second over the same run (all kinds) | {r['store_rate']:,.0f} | |",
        f"| store writes per bound pod (all kinds, Leases included) | "
        f"{r['store_rate'] * r['wall'] / max(1, r['bound']):.1f} | |",
        f"| creation → bound, p50 / p99, s | {r['bound_p50']:.2f} / {r['bound_p99']:.2f} | |",
        f"| creation → Running, p50 / p99, s | {r['running_p50']:.2f} / "
        f"{r['running_p99']:.2f} | Kubernetes pod startup SLO: p99 ≤ 5 s |",
        f"| creating every object (64 in flight), s | {r['create_s']:.1f} | |",
        f"| `rk up` with every node Ready, s | {r['cluster_up_s']:.1f} | |",
    ]
    for name in sorted(r["cpu"]):
        role = " (leader)" if name == r["leader"] else ""
        lines.append(f"| {name}{role}: CPU s over {r['wall']:.0f} s / peak RSS MiB | "
                     f"{r['cpu'][name]:.0f} / {r['peak_rss_mib'][name]:.0f} | |")
    lines.append(f"| agents ({r['nodes']:,} simulated nodes) / this client: CPU s | "
                 f"{r['cpu_agents']:.0f} / {r['cpu_client']:.0f} | |")
    lines += per_pod(r)
    leader_rss = r["peak_rss_mib"].get(r["leader"], float("nan"))
    lines += [
        "",
        "| goal | measured | status |",
        "|---|---:|---|",
        f"| ≥ {GOALS['bind_rate']:.0f} pods bound a second | {r['bind_rate']:,.0f} | "
        f"{'met' if r['bind_rate'] >= GOALS['bind_rate'] else 'not met'} |",
        f"| leader RSS < {GOALS['leader_rss_mib']:.0f} MiB | {leader_rss:.0f} MiB | "
        f"{'met' if leader_rss < GOALS['leader_rss_mib'] else 'not met'} |",
    ]
    return "\n".join(lines)


def record(path: str, text: str, command: str) -> None:
    begin, end = "<!-- bench/scheduler.py: begin -->", "<!-- bench/scheduler.py: end -->"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = (f"{begin}\n## Control plane: scheduling at scale (bench/scheduler.py)\n\n"
               f"Recorded {stamp} with `{command}` on {os.cpu_count()} CPUs, "
               f"Python {platform.python_version()}; masters, agents and the client on one "
               f"machine over 127.0.0.1.\n\n{text}\n{end}\n")
    doc = Path(path).read_text() if Path(path).exists() else "# Benchmarks\n"
    if begin in doc:
        doc = doc[:doc.index(begin)] + section + doc[doc.index(end) + len(end) + 1:]
    else:
        doc = doc.rstrip() + "\n\n" + section
    Path(path).write_text(doc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=4, help="agent processes")
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=20,
                        help="half the pods come from this many Deployments (0: all bare)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--master-arg", action="append", default=[], metavar="ARG",
                        help="an extra `rk master` flag, e.g. --election-timeout=1-2")
    parser.add_argument("--idle-window", type=float, default=15.0,
                        help="seconds the idle cluster's CPU is measured before pods")
    parser.add_argument("--record", metavar="FILE")
    parser.add_argument("--profile", metavar="DIR",
                        help="py-spy every process while pods are bound (NAME.txt in DIR)")
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="rk-bench-sched-")
    try:
        result = asyncio.run(run(args, state))
    finally:
        subprocess.run([*RK, "down", "--state-dir", state], stdout=subprocess.DEVNULL)
    load = os.getloadavg()
    text = table(result) + (f"\n\nLoad average at the end (1/5/15 min): {load[0]:.1f} / "
                            f"{load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} CPUs.")
    print(text)
    if args.record:
        record(args.record, text, "python bench/scheduler.py " + " ".join(sys.argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
