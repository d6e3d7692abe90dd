"""Benchmark of pod start-up on the Docker runtime, beside the engine's own limit.

Everything runs in one process on this machine, in one run, so the figures are
comparable: first the raw engine (the docker SDK, no raftkube), then a local cluster
(`rk up`: 3 masters, 2 agents on the Docker runtime), each timed with this process's
monotonic clock.

- raw start: a busybox httpd with a published port, created and started through the
  SDK until the engine says it runs, `--serial` times one after another (p50, p99);
- raw 30: thirty such containers, serially and with 4 starts at once (wall time; the
  latter the median of `--rounds`);
- raw pod-shaped: the same httpd as the agent makes a pod (a pause container, then the
  httpd in its namespaces), one after another (p50, p99) and thirty with 4 at once: the
  engine's floor under a pod, beside the goals' single-container anchor;
- pods one after another: `--serial` pods (scheduled, not bound by hand) each from the
  create request to its Ready condition as a watch delivers it (p50, p99);
- Deployment: `--replicas` replicas of the same httpd on the 2 agents, from the create
  to all Ready (wall time, the median of `--rounds`, each begun once the pods before
  it are gone), and its ratio to raw 30 with 4 starts at once;
- idle agent: with 10 pods running on it, the agent's RSS and its CPU over
  `--idle-seconds` (utime + stime from /proc).

Goals (issue 8): p99 ≤ 1 s for one pod, the Deployment ≤ 1.3 x raw, the idle agent
≤ 60 MB and ≤ 1 % CPU.

Run: `python bench/pod_startup.py [--serial 20] [--replicas 30] [--rounds 3]
[--record docs/benchmarks.md]`.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from raftkube.api import conditions, kinds  # noqa: E402
from raftkube.cli import local  # noqa: E402
from raftkube.client import informer as inf  # noqa: E402
from raftkube.client import rest, transport  # noqa: E402
from tests.cluster.harness import Cluster  # noqa: E402

Obj = dict[str, Any]
IMAGE = "busybox:1.36"
PAUSE = "raftkube/pause:1"  # the agent's sandbox image (scripts/docker-setup.sh)
HTTPD = ["httpd", "-f", "-p", "8080", "-h", "/etc"]
RAW_LABEL = "io.raftkube.bench=pod_startup"
SECTION_BEGIN = "<!-- bench/pod_startup.py: begin -->"
SECTION_END = "<!-- bench/pod_startup.py: end -->"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


# ---- the raw engine ----------------------------------------------------------------------


def raw_start(client: docker.DockerClient) -> float:
    start = time.monotonic()
    c = client.containers.run(IMAGE, HTTPD, detach=True, ports={"8080/tcp": None},
                              labels={"io.raftkube.bench": "pod_startup"})
    c.reload()
    assert c.status == "running", c.status
    return time.monotonic() - start


def raw_pod_start(client: docker.DockerClient) -> float:
    """The same httpd as a pod is made of: a pause container holding the network and IPC
    namespaces, then the httpd joining them, each waited for until it runs, as the
    kubelet does; no published port (a node's ports are the agent's proxy's)."""
    start = time.monotonic()
    pause = client.containers.run(PAUSE, detach=True, ipc_mode="shareable",
                                  labels={"io.raftkube.bench": "pod_startup"})
    pause.reload()
    assert pause.status == "running", pause.status
    app = client.containers.run(IMAGE, HTTPD, detach=True,
                                network_mode=f"container:{pause.id}",
                                ipc_mode=f"container:{pause.id}",
                                labels={"io.raftkube.bench": "pod_startup"})
    app.reload()
    assert app.status == "running", app.status
    return time.monotonic() - start


def raw_clean(client: docker.DockerClient) -> None:
    for c in client.containers.list(all=True, filters={"label": RAW_LABEL}):
        c.remove(force=True)


def raw(serial: int, many: int, rounds: int) -> dict[str, Any]:
    client = docker.from_env()
    try:
        raw_clean(client)
        one = [raw_start(client) for _ in range(serial)]
        raw_clean(client)
        start = time.monotonic()
        for _ in range(many):
            raw_start(client)
        serially = time.monotonic() - start
        raw_clean(client)
        parallel, pod_parallel = [], []
        for _ in range(rounds):  # each the median of `rounds`, as the Deployment's
            parallel.append(four_at_once(client, raw_start, many))
            pod_parallel.append(four_at_once(client, raw_pod_start, many))
        pod_one = [raw_pod_start(client) for _ in range(serial)]
        raw_clean(client)
    finally:
        client.close()
    return {"one": one, "serial": serially, "parallel4": statistics.median(parallel),
            "parallel4_all": parallel, "pod_one": pod_one,
            "pod_parallel4": statistics.median(pod_parallel), "pod_parallel4_all": pod_parallel}


def four_at_once(client: docker.DockerClient, start_one: Any, many: int) -> float:
    """Wall time of `many` starts, 4 at once; the containers are removed after."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: start_one(client), range(many)))
    took = time.monotonic() - start
    raw_clean(client)
    return took


# ---- raftkube ----------------------------------------------------------------------------


def httpd_pod(name: str, node: str | None = None) -> Obj:
    spec: Obj = {"terminationGracePeriodSeconds": 0, "containers": [
        {"name": "httpd", "image": IMAGE, "command": HTTPD}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"bench": name.split("-")[0]}},
            "spec": spec}


class ReadyClock:
    """When each pod was first seen Ready, from a watch (this process's clock)."""

    def __init__(self, api: rest.RestClient) -> None:
        self.ready: dict[str, float] = {}
        self.changed = asyncio.Event()
        self.informer = inf.Informer(api, kinds.POD, namespace="default")
        self.informer.add_handler(inf.Handler(add=self._see,
                                              update=lambda _o, p: self._see(p),
                                              delete=lambda _p: self.changed.set()))

    def _see(self, p: Obj) -> None:
        name = p["metadata"]["name"]
        if name not in self.ready and conditions.is_true(p, "Ready"):
            self.ready[name] = time.monotonic()
            self.changed.set()

    async def until(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not all(n in self.ready for n in names):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.1, deadline - time.monotonic()))

    async def gone(self, prefix: str, timeout: float) -> None:
        """Until no pod named `prefix`... is left."""
        deadline = time.monotonic() + timeout
        while any(p["metadata"]["name"].startswith(prefix)
                  for p in self.informer.cache.list()):
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), max(0.1, deadline - time.monotonic()))


def agent_usage(pid: int, seconds: float) -> tuple[float, float]:
    """(RSS in MB, CPU % of one core over `seconds`) of a process."""
    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu()
    time.sleep(seconds)
    used = cpu() - before
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss / 1024, 100 * used / seconds


async def deployment_ready(api: rest.RestClient, clock: ReadyClock, name: str,
                           replicas: int) -> float:
    """Seconds from the create of a `replicas` Deployment to all its pods Ready; it is
    deleted after, and its pods waited out."""
    start = time.monotonic()
    template = httpd_pod(name)
    await api.create(kinds.DEPLOYMENT, "default", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"bench": name}},
                 "template": {"metadata": {"labels": {"bench": name}},
                              "spec": template["spec"]}}})
    while sum(1 for p in clock.informer.cache.list()
              if (p["metadata"].get("labels") or {}).get("bench") == name
              and conditions.is_true(p, "Ready")) < replicas:
        clock.changed.clear()
        await asyncio.wait_for(clock.changed.wait(), 300)
    took = time.monotonic() - start
    await api.delete(kinds.DEPLOYMENT, "default", name, propagation="Background")
    await clock.gone(f"{name}-", 120)
    await asyncio.sleep(3)
    return took


async def cluster_figures(c: Cluster, serial: int, replicas: int, deploy_rounds: int,
                          idle_seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with transport.Transport(list(c.url.values()), c.token, ca=c.ca) as tp:
        api = rest.RestClient(tp)
        clock = ReadyClock(api)
        watching = asyncio.ensure_future(clock.informer.run())
        try:
            await clock.informer.wait_synced()
            one = []
            for i in range(serial):
                name = f"one-{i}"
                start = time.monotonic()
                await api.create(kinds.POD, "default", httpd_pod(name))
                await clock.until([name], 120)
                one.append(clock.ready[name] - start)
            out["one"] = one
            for i in range(serial):
                await api.delete(kinds.POD, "default", f"one-{i}")
            # Timed from a quiet engine: their containers are gone first (a pod object
            # goes once its node has removed them).
            await clock.gone("one-", 120)
            await asyncio.sleep(3)
            rounds = []
            for r in range(deploy_rounds):
                rounds.append(await deployment_ready(api, clock, f"deploy{r}", replicas))
            out["deployment"] = statistics.median(rounds)
            out["deployment_all"] = rounds
            for i in range(10):
                await api.create(kinds.POD, "default", httpd_pod(f"idle-{i}", "n1"))
            await clock.until([f"idle-{i}" for i in range(10)], 300)
            await asyncio.sleep(10)  # the agents settle
            pid = c.pid("n1")
            assert pid is not None
            out["idle"] = await asyncio.to_thread(agent_usage, pid, idle_seconds)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
    return out


def seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values) + " s"


def report(rawf: dict[str, Any], rk: dict[str, Any], args: argparse.Namespace) -> str:
    rows = [
        "| measure | raftkube | raw Docker (same run) | goal |",
        "|---|---|---|---|",
        f"| one pod, create → Ready, p50 / p99 ({args.serial} one after another) | "
        f"{pct(rk['one'], 50):.2f} s / {pct(rk['one'], 99):.2f} s | start of one httpd "
        f"with a published port: {pct(rawf['one'], 50):.2f} s / {pct(rawf['one'], 99):.2f} s"
        " | p99 ≤ 1 s |",
        f"| {args.replicas}-replica Deployment on 2 agents → all Ready, median of "
        f"{args.rounds} ({seconds(rk['deployment_all'])}) | "
        f"{rk['deployment']:.1f} s ({rk['deployment'] / rawf['parallel4']:.2f} × raw "
        f"4-parallel) | {args.replicas} containers: {rawf['parallel4']:.1f} s with 4 "
        f"parallel starts ({seconds(rawf['parallel4_all'])}), {rawf['serial']:.1f} s "
        "serially | ≤ 1.3 × |",
        f"| idle agent with 10 pods: RSS, CPU over {args.idle_seconds:g} s | "
        f"{rk['idle'][0]:.0f} MB, {rk['idle'][1]:.2f} % | | ≤ 60 MB, ≤ 1 % |",
        "",
        "The same pods made by hand through the SDK (a pause container, then the httpd "
        "joining its namespaces, each waited for until it runs): what a pod costs the "
        "engine before any orchestration, the floor under the raftkube column.",
        "",
        "| measure | raw Docker, pod-shaped (same run) | raftkube over it |",
        "|---|---|---|",
        f"| one pod, p50 / p99 | {pct(rawf['pod_one'], 50):.2f} s / "
        f"{pct(rawf['pod_one'], 99):.2f} s | {pct(rk['one'], 50) / pct(rawf['pod_one'], 50):.2f}"
        f" × / {pct(rk['one'], 99) / pct(rawf['pod_one'], 99):.2f} × |",
        f"| {args.replicas} pods, 4 at once, median of {args.rounds} "
        f"({seconds(rawf['pod_parallel4_all'])}) | {rawf['pod_parallel4']:.1f} s | "
        f"{rk['deployment'] / rawf['pod_parallel4']:.2f} × |",
    ]
    return "\n".join(rows)


def record(path: Path, body: str, argv: list[str]) -> None:
    load = os.getloadavg()
    section = "\n".join([
        SECTION_BEGIN, "## Pod start-up on Docker (bench/pod_startup.py)", "",
        f"Recorded {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `python "
        f"bench/pod_startup.py {' '.join(argv)}`: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} at the end, the Docker engine "
        "on this machine.", "", body, SECTION_END, ""])
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END) + r"\n?",
                         re.S)
    text = pattern.sub(lambda _m: section, text) if pattern.search(text) else \
        text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serial", type=int, default=20)
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Deployments (and raw 4-parallel runs) timed; the median counts")
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args(argv)
    print("raw Docker ...", flush=True)
    rawf = raw(args.serial, args.replicas, args.rounds)
    print(f"  one: p50 {pct(rawf['one'], 50):.2f} s p99 {pct(rawf['one'], 99):.2f} s; "
          f"{args.replicas}: {rawf['parallel4']:.1f} s 4-parallel, {rawf['serial']:.1f} s "
          "serially", flush=True)
    print(f"  pod-shaped one: p50 {pct(rawf['pod_one'], 50):.2f} s p99 "
          f"{pct(rawf['pod_one'], 99):.2f} s; {args.replicas}: {rawf['pod_parallel4']:.1f} s"
          " 4-parallel", flush=True)
    state = tempfile.mkdtemp(prefix="rk-bench-startup-")
    c = Cluster(state)
    try:
        print("rk up (3 masters, 2 Docker agents) ...", flush=True)
        c.up(agents=2, runtime="docker")
        rk = asyncio.run(cluster_figures(c, args.serial, args.replicas, args.rounds,
                                          args.idle_seconds))
    finally:
        c.down()
        local.remove_containers(state_dir=state)
    body = report(rawf, rk, args)
    print(body)
    if args.record:
        record(args.record, body, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
