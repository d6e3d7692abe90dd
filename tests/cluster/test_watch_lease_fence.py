"""Watches across a leader kill, lease expiry, and term fencing, on real masters."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from raftkube.store.state import prefix_end
from tests.cluster.harness import Cluster, RequestFailed, Writer, b64, unb64, wait_for

pytestmark = pytest.mark.cluster


class WatchStream:
    """One /v3/watch stream, collecting (revision, type, key) of every event."""

    def __init__(self, c: Cluster, name: str, prefix: str, start_revision: int = 0) -> None:
        self.c, self.name = c, name
        self.body = {"create_request": {
            "key": b64(prefix), "range_end": b64(prefix_end(prefix.encode())),
            "start_revision": str(start_revision), "prev_kv": True}}
        self.events: list[tuple[int, str, str]] = []
        self.messages: list[dict[str, Any]] = []
        self.created = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        assert self.c.session is not None
        async with self.c.session.post(self.c.url[self.name] + "/v3/watch", json=self.body,
                                       timeout=aiohttp.ClientTimeout(total=None)) as resp:
            assert resp.status == 200
            async for line in resp.content:
                msg = json.loads(line)["result"]
                self.messages.append(msg)
                if msg.get("created"):
                    self.created.set()
                for ev in msg.get("events", []):
                    self.events.append((int(ev["kv"]["mod_revision"]), ev.get("type", "PUT"),
                                        unb64(ev["kv"]["key"]).decode()))

    async def __aenter__(self) -> WatchStream:
        self.task = asyncio.create_task(self.run())
        await asyncio.wait_for(self.created.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_watch_on_follower_sees_every_event_across_leader_kill(cluster: Cluster) -> None:
    async with cluster as c:
        leader = await c.leader()
        follower = next(n for n in c.names if n != leader)
        start = await c.put(follower, "x/start", "0")
        async with WatchStream(c, follower, "w/", start) as watch:
            writer = Writer(c, "w", c.names)
            task = asyncio.create_task(writer.run())
            await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > 50), timeout=20,
                           what="writes before the kill")
            c.kill(leader)
            writer.among = [n for n in c.names if n != leader]
            n_at_kill = len(writer.acked)
            await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > n_at_kill + 50),
                           timeout=30, what="writes after the kill")
            writer.stop()
            await task
            acked = set(writer.acked.items())
            await wait_for(lambda: asyncio.sleep(0, acked <= {
                (k, r) for r, _t, k in watch.events}), timeout=20,
                what="the watch to deliver every acknowledged write")
        revisions = [r for r, _t, _k in watch.events]
        assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions), \
            "events out of order or duplicated"
        # No gap: a fresh watch from the same start on another survivor sees exactly the
        # same events, and so does the history in the store.
        other = next(n for n in c.names if n not in (leader, follower))
        async with WatchStream(c, other, "w/", start) as replay:
            await wait_for(lambda: asyncio.sleep(0, len(replay.events) >= len(watch.events)),
                           timeout=20, what="the replay")
        assert replay.events[:len(watch.events)] == watch.events
        stored = await c.get_prefix(other, "w/")
        latest = {k: r for r, _t, k in watch.events}  # a retried key has two events
        assert {k: rev for k, (_v, rev) in stored.items()} == latest


async def test_leader_change_restarts_lease_countdown(cluster: Cluster) -> None:
    """A new leader restarts every lease's countdown. The lease's keys must therefore go
    no sooner than TTL seconds after the old leader was killed (the new one led only
    after that); on the old leader's schedule they would go 1.5 s after the kill."""
    async with cluster as c:
        leader = await c.leader()
        survivors = [n for n in c.names if n != leader]
        grant = await c.call(survivors[0], "/v3/lease/grant", {"TTL": "4"})
        await c.call(survivors[0], "/v3/kv/put",
                     {"key": b64("k/lease"), "value": b64("v"), "lease": grant["ID"]})
        async with WatchStream(c, survivors[0], "k/") as watch:
            await asyncio.sleep(2.5)  # the scenario: the lease is 2.5 s into its 4 s
            await asyncio.get_running_loop().run_in_executor(None, c.kill, leader)
            killed = time.monotonic()
            await wait_for(lambda: asyncio.sleep(0, any(
                t == "DELETE" for _r, t, _k in watch.events)), timeout=30,
                what="the lease to expire on the new leader's schedule")
            gone = time.monotonic()
        assert gone - killed >= 4.0, (
            f"the lease expired {gone - killed:.2f}s after the leader was killed: on the "
            "old leader's schedule, not restarted by the new leader")
        assert not await c.get_prefix(survivors[0], "k/")


async def _gone(c: Cluster, name: str, key: str) -> bool:
    return key not in await c.get_prefix(name, key)


async def test_write_with_stale_term_is_refused(cluster: Cluster) -> None:
    async with cluster as c:
        leader = await c.leader()
        status = await c.status(leader)
        assert status is not None
        old_term = int(status["header"]["raft_term"])
        await c.put(leader, "f/ok", "1", headers={"X-Raftkube-Term": str(old_term)})
        c.kill(leader)
        survivors = [n for n in c.names if n != leader]
        new_leader = await c.leader(among=survivors)
        status = await c.status(new_leader)
        assert status is not None and int(status["header"]["raft_term"]) > old_term

        accepted: list[int] = []

        async def refused() -> bool:
            try:
                accepted.append(await c.put(new_leader, "f/late", "deposed",
                                            headers={"X-Raftkube-Term": str(old_term)}))
            except RequestFailed as e:
                assert e.status == 400 and "stale term" in e.body["message"]
                return True
            return False

        # The new leader's first write (its term fence) lands within moments of election.
        # A stale write that got in before it was still stamped with the newest term
        # then; the refused ones changed nothing: f/late is exactly the last accepted.
        await wait_for(refused, timeout=20, what="the stale term to be refused")
        stored = await c.get_prefix(new_leader, "f/")
        assert "f/ok" in stored
        assert stored.get("f/late", ("", 0))[1] == (accepted[-1] if accepted else 0)
        before = await c.get_prefix(new_leader, "f/")
        with pytest.raises(RequestFailed):
            await c.put(new_leader, "f/late2", "deposed",
                        headers={"X-Raftkube-Term": str(old_term)})
        assert await c.get_prefix(new_leader, "f/") == before


async def test_lease_expiry_deletes_keys_with_delete_events(shared_cluster: Cluster) -> None:
    async with shared_cluster as c:
        leader = await c.leader()
        follower = next(n for n in c.names if n != leader)
        # Before the grant is even sent: the lease's countdown starts later than this, so
        # its keys cannot go before TTL seconds from here (a bound that slowness only
        # widens).
        before_grant = time.monotonic()
        grant = await c.call(follower, "/v3/lease/grant", {"TTL": "2"})
        lease = grant["ID"]
        assert grant["TTL"] == "2"
        async with WatchStream(c, follower, "l/") as watch:
            for k in ("l/a", "l/b"):
                await c.call(follower, "/v3/kv/put",
                             {"key": b64(k), "value": b64("v"), "lease": lease})
            ttl = await c.call(follower, "/v3/lease/timetolive", {"ID": lease, "keys": True})
            assert sorted(unb64(k).decode() for k in ttl["keys"]) == ["l/a", "l/b"]
            await wait_for(lambda: asyncio.sleep(0, sum(
                t == "DELETE" for _r, t, _k in watch.events) == 2), timeout=30,
                what="DELETE events for the leased keys")
            took = time.monotonic() - before_grant
        deletes = [(r, k) for r, t, k in watch.events if t == "DELETE"]
        assert {k for _r, k in deletes} == {"l/a", "l/b"}
        assert len({r for r, _k in deletes}) == 1, "one revision for the whole expiry"
        assert took >= 2.0, f"expired {took:.2f}s after the grant, before its TTL of 2 s"
        assert await c.get_prefix(follower, "l/") == {}
        ttl = await c.call(leader, "/v3/lease/timetolive", {"ID": lease})
        assert ttl["TTL"] == "-1"


async def test_auth_and_bad_input_on_every_master_change_nothing(
        shared_cluster: Cluster) -> None:
    async with shared_cluster as c:
        await c.leader()
        rev = await c.put("m1", "a/x", "1")
        assert c.session is not None
        for name in c.names:
            url = c.url[name]
            async with c.http(token=False) as anon:
                async with anon.post(url + "/v3/kv/put",
                                     json={"key": b64("a/y"), "value": b64("2")}) as r:
                    assert r.status == 401
                async with anon.post(url + "/v3/kv/put", json={"key": b64("a/y")},
                                     headers={"Authorization": "Bearer wrong"}) as r:
                    assert r.status == 401
                async with anon.get(url + "/healthz") as r:
                    assert r.status == 200
            for body, field in [({"key": "%%%"}, "key"), ({"key": b64("a/y"), "lease": "x"},
                                                          "lease"), ([], "body")]:
                async with c.session.post(url + "/v3/kv/put", json=body) as r:
                    assert r.status == 400
                    assert field in (await r.json())["message"]
            async with c.session.post(url + "/v3/kv/put", data=b"{not json") as r:
                assert r.status == 400
                assert "not valid JSON" in (await r.json())["message"]
        status = await c.status("m2")
        assert status is not None and int(status["header"]["revision"]) == rev
        assert await c.get_prefix("m3", "a/") == {"a/x": ("1", rev)}
