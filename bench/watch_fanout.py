"""Benchmark: many watch streams on the leader plus a steady write stream.

10,000 REST watch streams on a leader once starved its Raft tick (ticks up to 322 ms,
leadership lost); as many `/v3` watches did not. This script starts a fresh 3-master
cluster (`rk up`), opens N watches of ConfigMaps in `default` on the leader from a helper
process (`bench/watch_holder.py`: raw sockets, cheap on CPU), creates ConfigMaps of about
1 KiB at a steady rate through a follower, and prints:

- the leader's tick-loop gap (`raftkube_raft_tick_seconds`, the histogram's delta over
  the write phase): p50, p99 and the largest bucket hit, against the election timeout;
  and the same, with the terms, while the watches were being opened;
- leader changes and terms before and after;
- event latency on the sample streams: from sending the write to the event's arrival,
  p50 and p99, and whether every sample stream saw every write once and in order.

Run: ``python bench/watch_fanout.py [--watchers 10000] [--kind rest|v3] [--rate 20]
[--seconds 20] [--sample 20] [--py-spy FILE]``. Everything runs on 127.0.0.1; the cluster
is stopped at the end (its state dir, logs included, is kept with RK_KEEP_STATE=1).
``--py-spy FILE`` records the leader with py-spy (if installed) during the write phase,
every thread, idle included, as collapsed stacks (flamegraph.pl input).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from raftkube.cli import local  # noqa: E402
from raftkube.store.replica import member_id  # noqa: E402

BUCKET = re.compile(r'^raftkube_raft_tick_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)


def tick_buckets(metrics_text: str) -> dict[float, float]:
    return {float(le): float(v) for le, v in BUCKET.findall(metrics_text)}


def tick_quantiles(before: dict[float, float], after: dict[float, float],
                   qs: tuple[float, ...] = (0.5, 0.99)) -> dict[str, float]:
    """Quantiles of the ticks between two scrapes, as bucket upper bounds; `max` is the
    upper bound of the highest bucket that gained a tick."""
    delta = {le: after[le] - before.get(le, 0.0) for le in sorted(after)}
    total = delta[float("inf")]
    out: dict[str, float] = {"count": total}
    for q in qs:
        out[f"p{round(q * 100)}"] = next(le for le, n in delta.items() if n >= q * total)
    previous = 0.0
    out["max"] = 0.0
    for le, n in delta.items():
        if n > previous:
            out["max"] = le
        previous = n
    return out


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}(?:_total)? ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else float("nan")


class Holder:
    """The helper process that holds the watch streams."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.progress = 0
        self.ready = 0

    @classmethod
    async def start(cls, *, url: str, token: str, kind: str, watchers: int, rv: int,
                    sample: int, timeout: float = 300) -> Holder:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.watch_holder", "--url", url, "--token", token,
            "--kind", kind, "--watchers", str(watchers), "--resource-version", str(rv),
            "--sample", str(sample), cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, limit=1 << 26)
        holder = cls(proc)
        line = await asyncio.wait_for(holder._line(), timeout)
        if not line.startswith("ready "):
            raise RuntimeError(f"watch holder: {line!r}")
        holder.ready = int(line.split()[1])
        return holder

    async def _line(self) -> str:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            raise RuntimeError("watch holder exited")
        return raw.decode().strip()

    async def wait_progress(self, n: int, timeout: float) -> bool:
        """Wait until every sample stream has `n` events; False on the deadline."""
        deadline = time.monotonic() + timeout
        while self.progress < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                line = await asyncio.wait_for(self._line(), left)
            except TimeoutError:
                return False
            if line.startswith("progress "):
                self.progress = int(line.split()[1])
        return True

    async def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        while True:
            line = await asyncio.wait_for(self._line(), 60)
            if line.startswith("{"):
                await self.proc.wait()
                result: dict[str, Any] = json.loads(line)
                return result

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


class ConfigMapWriter:
    """Creates ConfigMaps `fan-N` at a steady rate; when each was sent and its revision."""

    def __init__(self, session: aiohttp.ClientSession, url: str, *, size: int = 1024) -> None:
        self.session = session
        self.url = url
        self.size = size
        self.sent: dict[str, float] = {}
        self.revision: dict[str, int] = {}
        self.failed = 0
        self._n = 0

    async def one(self) -> None:
        name = f"fan-{self._n:06d}"
        self._n += 1
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                "data": {"blob": "x" * self.size}}
        self.sent[name] = time.monotonic()
        try:
            async with self.session.post(
                    self.url + "/api/v1/namespaces/default/configmaps", json=body,
                    timeout=aiohttp.ClientTimeout(total=10)) as resp:
                obj = await resp.json()
                if resp.status != 201:
                    raise RuntimeError(f"{resp.status}: {obj}")
                self.revision[name] = int(obj["metadata"]["resourceVersion"])
        except (aiohttp.ClientError, TimeoutError, RuntimeError):
            self.failed += 1

    async def run(self, *, rate: float, seconds: float) -> None:
        tasks = []
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < seconds:
            tasks.append(asyncio.create_task(self.one()))
            n += 1
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await asyncio.gather(*tasks)


def check_samples(samples: list[list[list[Any]]], writer: ConfigMapWriter) -> dict[str, Any]:
    """Every acknowledged write in every sample stream, once, in revision order; and the
    latency from sending each write to its arrival."""
    wanted = {n: r for n, r in writer.revision.items()}
    latencies = []
    complete = 0
    for events in samples:
        seen = [(name, rv) for name, rv, kind, _t in events if kind != "BOOKMARK"]
        revs = [rv for _n, rv in seen]
        in_order = revs == sorted(revs) and len(set(revs)) == len(revs)
        if in_order and set(wanted.items()) <= set(seen):
            complete += 1
        for name, _rv, kind, arrived in events:
            if kind != "BOOKMARK" and name in writer.sent:
                latencies.append(arrived - writer.sent[name])
    latencies.sort()
    return {
        "complete": complete, "samples": len(samples),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies
        else float("nan"),
    }


async def scrape(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url + "/metrics", timeout=aiohttp.ClientTimeout(total=30)) as r:
        return await r.text()


async def statuses(session: aiohttp.ClientSession, urls: dict[str, str]) -> dict[str, Any]:
    out = {}
    for name, url in urls.items():
        try:
            async with session.post(url + "/v3/maintenance/status", json={},
                                    timeout=aiohttp.ClientTimeout(total=5)) as r:
                out[name] = await r.json()
        except (aiohttp.ClientError, TimeoutError):
            out[name] = None
    return out


async def bench(args: argparse.Namespace) -> int:
    state_dir = tempfile.mkdtemp(prefix="rk-fanout-")
    holder: Holder | None = None
    spy: subprocess.Popen[bytes] | None = None
    try:
        # Plain HTTP on loopback: the holder's streams are bare sockets (and the etcd
        # anchors are measured without TLS too).
        local.up(state_dir=state_dir, masters=3, agents=0, insecure_http=True,
                 master_args=list(args.master_arg) or None)
        layout = local.load_layout(state_dir, 3)
        with open(os.path.join(state_dir, "token")) as f:
            token = f.read().strip()
        urls = {m["name"]: f"http://{m['api']}" for m in layout["masters"]}
        by_id = {str(member_id(m["raft"])): m["name"] for m in layout["masters"]}
        async with aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {token}"}) as session:
            before = await statuses(session, urls)
            leader = by_id[next(s["leader"] for s in before.values() if s)]
            follower = next(n for n in urls if n != leader)
            rv = int(before[leader]["header"]["revision"])
            terms_start = {n: (s or {}).get("header", {}).get("raft_term")
                           for n, s in before.items()}
            m_start = await scrape(session, urls[leader])
            t0 = time.monotonic()
            holder = await Holder.start(url=urls[leader], token=token, kind=args.kind,
                                        watchers=args.watchers, rv=rv, sample=args.sample)
            opened = time.monotonic() - t0
            before = await statuses(session, urls)
            m0 = await scrape(session, urls[leader])
            opening = tick_quantiles(tick_buckets(m_start), tick_buckets(m0))
            terms_open = {n: (s or {}).get("header", {}).get("raft_term")
                          for n, s in before.items()}
            print(f"{holder.ready} {args.kind} watches open on the leader {leader} in "
                  f"{opened:.1f} s; meanwhile tick gap p99 {opening['p99'] * 1000:.0f} ms, "
                  f"max bucket {opening['max'] * 1000:.0f} ms; terms {terms_start} -> "
                  f"{terms_open}", flush=True)
            pid = local.pid_alive(os.path.join(state_dir, "pids", f"{leader}.pid"))
            py_spy = shutil.which("py-spy", path=os.path.dirname(sys.executable)
                                  + os.pathsep + os.environ.get("PATH", ""))
            if args.py_spy and pid and py_spy:
                spy = subprocess.Popen(
                    [py_spy, "record", "--pid", str(pid), "--duration",
                     str(int(args.seconds)), "--format", "raw", "--threads", "--idle",
                     "--nonblocking", "--output", args.py_spy], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
            writer = ConfigMapWriter(session, urls[follower])
            await writer.run(rate=args.rate, seconds=args.seconds)
            delivered = await holder.wait_progress(len(writer.revision), timeout=30)
            m1 = await scrape(session, urls[leader])
            after = await statuses(session, urls)
            result = await holder.stop()
            holder = None
            if spy is not None:
                spy.wait(60)
        ticks = tick_quantiles(tick_buckets(m0), tick_buckets(m1))
        samples = check_samples(result["samples"], writer)
        terms = {n: (s or {}).get("header", {}).get("raft_term") for n, s in before.items()}
        terms_after = {n: (s or {}).get("header", {}).get("raft_term")
                       for n, s in after.items()}
        leader_after = by_id.get(next((s["leader"] for s in after.values() if s), ""), "?")
        print(f"watches: {result['ok']} opened, {result['closed_early']} closed early")
        print(f"writes: {len(writer.revision)} acknowledged, {writer.failed} failed, "
              f"{args.rate}/s for {args.seconds:.0f} s")
        print(f"leader tick gap: p50 {ticks['p50'] * 1000:.0f} ms, p99 "
              f"{ticks['p99'] * 1000:.0f} ms, max bucket {ticks['max'] * 1000:.0f} ms "
              f"({ticks['count']:.0f} ticks); election timeout {args.election_min_ms} ms")
        print(f"leader: {leader} -> {leader_after}; terms {terms} -> {terms_after}; "
              f"leader changes on the leader: {metric(m1, 'raftkube_raft_leader_changes')}"
              f" (before {metric(m0, 'raftkube_raft_leader_changes')})")
        print(f"event latency (sample of {samples['samples']}): p50 {samples['p50_ms']:.0f} ms, "
              f"p99 {samples['p99_ms']:.0f} ms; every write seen once and in order on "
              f"{samples['complete']}/{samples['samples']}{'' if delivered else ' (timed out)'}")
        ok = (leader_after == leader and terms == terms_after
              and samples["complete"] == samples["samples"])
        return 0 if ok else 1
    finally:
        if spy is not None and spy.poll() is None:
            spy.send_signal(signal.SIGINT)
        if holder is not None:
            holder.kill()
        local.down(state_dir=state_dir)
        if os.environ.get("RK_KEEP_STATE"):
            print(f"state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--watchers", type=int, default=10_000)
    p.add_argument("--kind", choices=["rest", "v3"], default="rest")
    p.add_argument("--rate", type=float, default=20.0, help="ConfigMap creates per second")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--sample", type=int, default=20, help="watch streams read and checked")
    p.add_argument("--py-spy", metavar="FILE", help="record the leader with py-spy")
    p.add_argument("--master-arg", action="append", default=[],
                   help="extra argument for every rk master")
    p.add_argument("--election-min-ms", type=int, default=250)
    sys.exit(asyncio.run(bench(p.parse_args())))


if __name__ == "__main__":
    main()
