"""Figures the cluster tests used to assert as timings, printed instead of asserted.

On a shared 2-core machine a timing is a figure, not an invariant: the tests now check
that every write is acknowledged and kept however slow it gets (tests/cluster/
test_semantics.py), and this script prints how slow it got, on a fresh 3-master cluster
started through the test harness:

- **saturation**: 64 writers put 100-byte values through all three members for
  `--seconds`; writes/s, p50/p99 latency, and the Raft term before and after (elections
  under load; the old test required none and more than 1,000 writes in 6 s);
- **large values**: one put of each size around pysyncobj's 64/128 KiB chunk edges and up
  to the 1.5 MiB request limit, through a follower, until applied on every member (the
  old test required each under 5 s).

Run: `python -m bench.load [--seconds 6]` from the repository root.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from tests.cluster.harness import Cluster, b64

SIZES = [60 * 1024, 64 * 1024 - 100, 100 * 1024, 128 * 1024 - 64, 130 * 1024, 1_500_000]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def terms(c: Cluster) -> dict[str, int]:
    out = {}
    for name in c.names:
        status = await c.status(name)
        out[name] = int(status["header"]["raft_term"]) if status else -1
    return out


async def saturation(c: Cluster, seconds: float) -> None:
    before = await terms(c)
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    errors = 0

    async def writer(i: int) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                await c.put(c.names[(i + n) % 3], f"busy/{i}/{n}", "x" * 100, timeout=10)
                latencies.append(time.monotonic() - started)
            except Exception:  # noqa: BLE001 - counted, not fatal: this is a measurement
                errors += 1
            n += 1

    await asyncio.gather(*(writer(i) for i in range(64)))
    after = await terms(c)
    print(f"saturation, 64 writers, {seconds:.0f} s: {len(latencies) / seconds:.0f} writes/s, "
          f"p50 {pct(latencies, 0.5) * 1000:.0f} ms, p99 {pct(latencies, 0.99) * 1000:.0f} ms, "
          f"{errors} failed; terms {before} -> {after} "
          f"({max(after.values()) - max(before.values())} elections)")


async def large_values(c: Cluster) -> None:
    leader = await c.leader()
    follower = next(n for n in c.names if n != leader)
    for size in SIZES:
        value = os.urandom(size)
        started = time.monotonic()
        resp = await c.call(follower, "/v3/kv/put", {"key": b64("big"), "value": b64(value)},
                            timeout=60)
        acked = time.monotonic() - started
        rev = int(resp["header"]["revision"])
        for name in c.names:
            while True:
                got = await c.call(name, "/v3/kv/range", {"key": b64("big"), "keys_only": True,
                                                          "serializable": True})
                if got.get("kvs") and int(got["kvs"][0]["mod_revision"]) >= rev:
                    break
                await asyncio.sleep(0.01)
        everywhere = time.monotonic() - started
        print(f"large value {size:>9,} B: acknowledged in {acked * 1000:.0f} ms, "
              f"on every member in {everywhere * 1000:.0f} ms")


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as state:
        c = Cluster(state)
        try:
            c.up()
            async with c:
                await c.leader()
                await saturation(c, seconds)
                await large_values(c)
        finally:
            c.down()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=6.0)
    asyncio.run(main(p.parse_args().seconds))
