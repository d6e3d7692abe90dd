"""What the API server reads of a replica, through its public methods: a snapshot made in
a child process, the stats /metrics shows, and the count of fenced writes (a resubmitted
copy is not a second write, and one carried into the log by a later leader is stale)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from raftkube.store import replica as rep
from raftkube.store import state as st
from tests.unit.conftest import Served, wait_for
from tests.unit.store_support import keys, running

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
    # The leader duties' own first write of the term (its fence) first, so that it
    # cannot land after the newer term below and be counted as fenced too.
    await wait_for(lambda: replica.stats().stamped_writes.get(term, 0) >= 1, deadline=10,
                   what="the leader's first stamped write")
    before = replica.stats()
    assert (await replica.propose("put", {"key": b"a", "value": b"1"}, term=term)).get(
        "error") is None
    await replica.propose("noop", term=term + 1)  # a newer leader's first write
    refused = await replica.propose("put", {"key": b"a", "value": b"2"}, term=term)
    assert str(refused["error"]).startswith(st.ERR_STALE_TERM)
    after = replica.stats()
    assert after.fenced_writes == before.fenced_writes + 1
    assert after.stamped_writes.get(term, 0) == before.stamped_writes.get(term, 0) + 1
    assert after.stamped_writes[term + 1] == 1
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


async def idle_duties(self: rep.Replica) -> None:
    """No leader duties: no fencing write of the new term, no lease or compaction work."""
    await asyncio.Event().wait()


async def applied(r: rep.Replica, op_id: tuple[str, int], count: int) -> st.Result:
    """Wait until the replica has applied `count` entries in all, the last `op_id`."""
    await wait_for(lambda: r.applied_total >= count and op_id in r.state.results,
                   deadline=10, what=f"{op_id} to be applied")
    return r.state.results[op_id]


async def test_a_resubmission_after_a_leader_change_applies_nothing_stale_and_counts_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writes decided by the leader of term t1, in the bytes its replica would
    resubmit. The first was applied under t1; the second was lost with that leader.
    After the leader changed (a restart: the member leads again in a newer term, its
    leader duties held back so that no fencing write of the new term lands first),
    both are resubmitted: the first gets its first answer and is not counted again as
    a stamped write; the second is refused as stale, not applied."""
    monkeypatch.setattr(rep.Replica, "_leader_duties", idle_duties)
    data_dir = tmp_path / "m1"

    def command(seq: int, key: bytes, term: int) -> bytes:
        return st.encode_command({"op": "put", "req": {"key": key, "value": b"v"},
                                  "cid": "old-leader", "seq": seq, "term": term})

    async with running(data_dir) as r:
        t1 = r.view.term
        first = command(1, b"a", t1)
        lost = command(2, b"b", t1)
        r.node.submit(first)
        answer = await applied(r, ("old-leader", 1), 1)
        assert "error" not in answer
        assert r.stats().stamped_writes == {t1: 1}
    async with running(data_dir) as r:
        t2 = r.view.term
        assert t2 > t1
        await wait_for(lambda: ("old-leader", 1) in r.state.results, deadline=10,
                       what="the journal to be applied again")
        replayed = r.stats()
        assert replayed.stamped_writes == {t1: 1}
        count = r.applied_total
        r.node.submit(first)  # resubmitted: its first copy was applied
        r.node.submit(lost)  # resubmitted: its first copy never reached the log
        assert await applied(r, ("old-leader", 1), count + 1) == answer
        refused = await applied(r, ("old-leader", 2), count + 2)
        assert str(refused.get("error", "")).startswith(st.ERR_STALE_TERM), refused
        assert await keys(r, "b") == set() and r.key_count() == 1
        after = r.stats()
        assert after.stamped_writes == {t1: 1}, "a deduplicated resubmission was counted"
        assert after.fenced_writes == replayed.fenced_writes + 1
