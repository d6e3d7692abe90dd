"""What the API server reads of a replica, through its public methods: a snapshot made in
a child process, the stats /metrics shows, and the count of fenced writes."""

from __future__ import annotations

import asyncio

import pytest

from raftkube.store import replica as rep
from raftkube.store import state as st
from tests.unit.conftest import Served

pytestmark = pytest.mark.unit


async def test_a_snapshot_is_the_state_and_writes_go_on_while_it_is_taken(
        replica: rep.Replica) -> None:
    for i in range(200):
        await replica.propose("put", {"key": f"k{i:03d}".encode(), "value": b"v" * 1000})
    await replica.barrier()
    with replica.lock:
        expected = replica.state.dump()
    assert await replica.snapshot() == expected
    # A write proposed while the child encodes commits meanwhile: nothing waits for it.
    snapshot = asyncio.ensure_future(replica.snapshot())
    result = await replica.propose("put", {"key": b"during", "value": b"x"})
    assert "error" not in result
    blob = await snapshot
    assert st.State.load(blob).revision in (201, 202)


async def test_stats_count_stamped_and_fenced_writes(replica: rep.Replica) -> None:
    term = replica.view.term
    before = replica.stats()
    assert (await replica.propose("put", {"key": b"a", "value": b"1"}, term=term)).get(
        "error") is None
    await replica.propose("noop", term=term + 1)  # a newer leader's first write
    refused = await replica.propose("put", {"key": b"a", "value": b"2"}, term=term)
    assert str(refused["error"]).startswith(st.ERR_STALE_TERM)
    after = replica.stats()
    assert after.fenced_writes == before.fenced_writes + 1
    assert after.stamped_writes.get(term, 0) >= before.stamped_writes.get(term, 0) + 1
    assert after.stamped_writes[term + 1] >= 1
    assert after.revision == replica.revision


async def test_metrics_show_fencing(served: Served) -> None:
    async def scrape() -> dict[str, float]:
        async with served.client.get("/metrics", headers=served.auth) as resp:
            text = await resp.text()
        return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
                for line in text.splitlines() if line.startswith("raftkube_store_")}

    r = served.replica
    newer = r.view.term + 5
    before = await scrape()
    await r.propose("noop", term=newer)
    await r.propose("put", {"key": b"late", "value": b"x"}, term=r.view.term)
    after = await scrape()
    fenced = "raftkube_store_fenced_writes_total"
    assert after[fenced] >= before.get(fenced, 0) + 1
    assert after[f'raftkube_store_stamped_writes_total{{term="{newer}"}}'] == 1
