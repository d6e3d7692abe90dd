"""Thousands of REST watch streams on the leader and a steady write stream, on real masters.

The fan-out must not hold up the Raft tick: no election, the same leader and term, the
leader's tick-loop gap (raftkube_raft_tick_seconds) at p99 below the election timeout,
and every sampled stream sees every write once and in order. The streams are held by a
separate process (bench/watch_holder.py) on raw sockets, so the test's own CPU does not
count. 10,000 streams, as in the issue, is `bench/watch_fanout.py`'s default; the CI
budget takes 3,000 here. Plain HTTP on loopback (`rk up --insecure-http`), as the
benchmark runs beside etcd's: the holder keeps its streams on bare sockets, and what is
measured is the fan-out, not TLS.
"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from bench import watch_fanout as wf
from tests.cluster.harness import Cluster, started

pytestmark = pytest.mark.cluster

WATCHERS = 3000
RATE = 10.0  # writes per second
SECONDS = 8.0
ELECTION_MIN = 0.25  # rk master's default election timeout is 0.25-0.5 s


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "fanout", insecure_http=True)


async def scrape(c: Cluster, name: str) -> str:
    assert c.session is not None
    async with c.session.get(c.url[name] + "/metrics",
                             timeout=aiohttp.ClientTimeout(total=30)) as resp:
        return await resp.text()


async def terms(c: Cluster) -> dict[str, str | None]:
    return {n: ((await c.status(n)) or {}).get("header", {}).get("raft_term")
            for n in c.names}


async def test_rest_watch_fanout_does_not_hold_up_the_raft_tick(cluster: Cluster) -> None:
    async with cluster as c:
        assert c.session is not None
        leader = await c.leader()
        follower = next(n for n in c.names if n != leader)
        status = await c.status(leader)
        assert status is not None
        rv = int(status["header"]["revision"])
        before = await terms(c)
        holder = await wf.Holder.start(url=c.url[leader], token=c.token, kind="rest",
                                    watchers=WATCHERS, rv=rv, sample=10, timeout=120)
        try:
            assert holder.ready == WATCHERS
            m0 = await scrape(c, leader)
            writer = wf.ConfigMapWriter(c.session, c.url[follower])
            await writer.run(rate=RATE, seconds=SECONDS)
            assert writer.failed == 0 and len(writer.revision) >= RATE * SECONDS - 1
            assert await holder.wait_progress(len(writer.revision), timeout=60), \
                "the sampled streams did not receive every write"
            m1 = await scrape(c, leader)
            result = await holder.stop()
        finally:
            holder.kill()
        ticks = wf.tick_quantiles(wf.tick_buckets(m0), wf.tick_buckets(m1))
        assert ticks["p99"] < ELECTION_MIN, f"leader's tick gap: {ticks}"
        assert await c.leader() == leader
        assert await terms(c) == before, "an election happened during the fan-out"
        assert result["closed_early"] == 0
        samples = wf.check_samples(result["samples"], writer)
        assert samples["complete"] == samples["samples"] == 10, samples
