"""Benchmark of the Kubernetes-style object API on a local 3-master cluster.

There is no Kubernetes apiserver on this machine to run side by side, so the yardstick is
the layer below: the same cluster's raw store put (`/v3/kv/put`, 100 B values). The ratio
shows what the object layer (decode, default, validate, encode, a compare-and-swap txn,
and the JSON answer) costs on top of the replicated write.

Workload, against a fresh `rk up` cluster in a temporary directory (127.0.0.1 only):

1. Sequential ConfigMap creates through the leader, and the same count of raw puts.
2. Creates with 64 in flight (64 workers sharing one session), through the leader and
   through a follower (a follower forwards the write to the leader through Raft).
3. GET of one object from a follower (a linearizable read: a read barrier first).
4. LIST of 1,000 ConfigMaps, whole and in pages of 100.
5. Watch latency: a watch on a follower, creates through the leader; from the create
   being sent to its ADDED event arriving.
6. `rk apply -f examples/` wall time, first (creates) and again (unchanged).

Run: `python bench/objects.py [--seq N] [--total N] [--watch N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parent.parent
RK = str(Path(sys.executable).parent / "rk")
CMS = "/api/v1/namespaces/default/configmaps"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def configmap(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"v": "x" * 100}}


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session

    async def call(self, method: str, url: str, body: Any = None) -> Any:
        async with self.session.request(method, url, json=body) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 300:
                raise RuntimeError(f"{method} {url}: {resp.status} {data}")
            return data


async def leader_and_follower(api: Api, urls: list[str]) -> tuple[str, str]:
    ids: dict[str, str] = {}
    leader = ""
    for url in urls:
        st = await api.call("POST", url + "/v3/maintenance/status", {})
        ids[url] = st["header"]["member_id"]
        leader = st["leader"]
    first = next(u for u, i in ids.items() if i == leader)
    return first, next(u for u in urls if u != first)


async def timed(n: int, one: Any) -> tuple[float, list[float]]:
    lat: list[float] = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        await one(i)
        lat.append(time.perf_counter() - t)
    return time.perf_counter() - start, lat


async def in_flight(total: int, workers: int, one: Any) -> tuple[float, list[float]]:
    lat: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            await one(i)
            lat.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return time.perf_counter() - start, lat


def row(what: str, n: int, elapsed: float, lat: list[float]) -> str:
    return (f"| {what} | {n / elapsed:,.0f} | {pct(lat, 0.5):.2f} | {pct(lat, 0.99):.2f} |")


async def watch_latency(api: Api, leader: str, follower: str, n: int) -> list[float]:
    listed = await api.call("GET", follower + CMS + "?limit=1")
    rv = listed["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    lat: list[float] = []
    url = follower + CMS + f"?watch=true&resourceVersion={rv}&allowWatchBookmarks=false"
    async with api.session.get(url, timeout=aiohttp.ClientTimeout(total=120)) as resp:
        async def writer() -> None:
            for i in range(n):
                name = f"w-{i}"
                sent[name] = time.perf_counter()
                await api.call("POST", leader + CMS, configmap(name))
                await asyncio.sleep(0.005)

        task = asyncio.create_task(writer())
        while len(lat) < n:
            line = await resp.content.readline()
            event = json.loads(line)
            name = event["object"]["metadata"]["name"]
            if event["type"] == "ADDED" and name in sent:
                lat.append(time.perf_counter() - sent[name])
        await task
    return lat


def apply_time(config: str) -> tuple[float, float]:
    env = {**os.environ, "RK_CONFIG": config}
    times = []
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run([RK, "apply", "-f", str(ROOT / "examples")], env=env, check=True,
                       capture_output=True, timeout=60)
        times.append(time.perf_counter() - start)
    return times[0], times[1]


async def run(args: argparse.Namespace, state: str) -> list[str]:
    cfg = yaml.safe_load(open(f"{state}/config.yaml"))
    urls: list[str] = cfg["servers"]
    headers = {"Authorization": f"Bearer {cfg['token']}"}
    async with aiohttp.ClientSession(headers=headers,
                                     connector=aiohttp.TCPConnector(limit=100)) as session:
        api = Api(session)
        leader, follower = await leader_and_follower(api, urls)
        out = ["| workload | ops/s | p50 ms | p99 ms |", "|---|---:|---:|---:|"]
        n = args.seq
        e, lat = await timed(n, lambda i: api.call("POST", leader + "/v3/kv/put", {
            "key": b64(f"bench/{i}"), "value": b64("x" * 100)}))
        out.append(row("raw put, sequential (the yardstick)", n, e, lat))
        e, lat = await timed(n, lambda i: api.call("POST", leader + CMS, configmap(f"s-{i}")))
        out.append(row("create ConfigMap, sequential", n, e, lat))
        e, lat = await in_flight(args.total, 64, lambda i: api.call(
            "POST", leader + "/v3/kv/put", {"key": b64(f"bench/{i}"), "value": b64("x" * 100)}))
        out.append(row("raw put, 64 in flight", args.total, e, lat))
        e, lat = await in_flight(args.total, 64, lambda i: api.call(
            "POST", leader + CMS, configmap(f"l-{i}")))
        out.append(row("create ConfigMap, 64 in flight, leader", args.total, e, lat))
        e, lat = await in_flight(args.total, 64, lambda i: api.call(
            "POST", follower + CMS, configmap(f"f-{i}")))
        out.append(row("create ConfigMap, 64 in flight, follower", args.total, e, lat))
        e, lat = await timed(n, lambda i: api.call("GET", follower + CMS + f"/s-{i}"))
        out.append(row("get ConfigMap from a follower", n, e, lat))
        count = len((await api.call("GET", follower + CMS))["items"])
        e, lat = await timed(20, lambda i: api.call("GET", follower + CMS))
        out.append(row(f"list {count:,} ConfigMaps (one answer)", 20, e, lat))

        async def paged(_: int) -> None:
            token = ""
            while True:
                page = await api.call("GET", follower + CMS + f"?limit=100&continue={token}")
                token = page["metadata"].get("continue", "")
                if not token:
                    return

        e, lat = await timed(10, paged)
        out.append(row(f"list {count:,} ConfigMaps in pages of 100", 10, e, lat))
        lat = await watch_latency(api, leader, follower, args.watch)
        out.append(f"| watch event on a follower | - | {pct(lat, 0.5):.2f} | "
                   f"{pct(lat, 0.99):.2f} |")
    first, again = apply_time(f"{state}/config.yaml")
    out.append("")
    out.append(f"`rk apply -f examples/`: {first:.2f} s creating, {again:.2f} s unchanged "
               f"(wall time of the whole `rk` process, Python start-up included)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=300)
    parser.add_argument("--total", type=int, default=2000)
    parser.add_argument("--watch", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rk-bench-objects-") as state:
        # Plain HTTP on loopback, as the etcd anchor is measured.
        subprocess.run([RK, "up", "--masters", "3", "--agents", "0", "--insecure-http",
                        "--state-dir", state],
                       check=True, capture_output=True, timeout=120)
        try:
            lines = asyncio.run(run(args, state))
        finally:
            subprocess.run([RK, "down", "--state-dir", state], capture_output=True,
                           timeout=60)
    print(f"object API on a 3-master cluster, {os.cpu_count()} cores, client on the same box")
    print("\n".join(line for line in lines if line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
