"""Chaos: kill and pause masters on a seeded schedule while writers and a watcher work.

Faults: SIGKILL of one member (it restarts a little later with its data), SIGSTOP/SIGCONT
(a paused leader is a partitioned one: it wakes up believing it still leads), and once
per run, halfway, SIGKILL of every member at once and a restart of all of them, so that
the loss check covers durability and not only replication. Between whole-cluster
restarts at most one member is faulty at a time, so a majority exists and the cluster
must keep taking writes. Kills and restarts run off the event loop: writers, the
watcher and the leader observer keep going while a member dies or starts. Checked
continuously and at the end:
- every planned fault fired (kills, pauses and the whole-cluster restart are counted);
- at most one leader per term, as reported by every member's status;
- no acknowledged write is lost, on any member, after the cluster heals;
- a watch that resumes on another member whenever its stream breaks (as an etcd client
  does) saw each acknowledged write exactly once, in revision order; a watch that is
  cancelled or refused fails the test with its own error;
- every member converges to the same revision within 30 s of the last fault.
The seed is printed; CHAOS_SEED reproduces a run, CHAOS_SECONDS makes it longer.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import time

import aiohttp
import pytest

from raftkube.store.state import prefix_end
from tests.cluster.harness import Cluster, Writer, b64, unb64, wait_for

pytestmark = pytest.mark.chaos
SECONDS = float(os.environ.get("CHAOS_SECONDS", "45"))


async def watch_leaders(c: Cluster, claims: dict[int, set[str]]) -> None:
    while True:
        for name in c.names:
            st = await c.status(name)
            if st and st.get("leader") not in (None, "0"):
                claims.setdefault(int(st["header"]["raft_term"]), set()).add(st["leader"])
        await asyncio.sleep(0.05)


class ResumableWatch:
    """A watch that, like an etcd client, resumes on another member after its stream
    breaks, from the revision after the last one it received."""

    def __init__(self, c: Cluster, prefix: str, start_revision: int) -> None:
        self.c = c
        self.prefix = prefix
        self.next_revision = start_revision
        self.events: list[tuple[int, str, str]] = []
        self.resumes = 0

    async def run(self, rng: random.Random) -> None:
        assert self.c.session is not None
        while True:
            name = rng.choice(self.c.names)
            body = {"create_request": {
                "key": b64(self.prefix), "range_end": b64(prefix_end(self.prefix.encode())),
                "start_revision": str(self.next_revision)}}
            try:
                async with self.c.session.post(
                        self.c.url[name] + "/v3/watch", json=body,
                        timeout=aiohttp.ClientTimeout(total=None, sock_read=3)) as resp:
                    if resp.status >= 500:  # a member without a leader yet: elsewhere
                        continue
                    assert resp.status == 200, (resp.status, await resp.text())
                    async for line in resp.content:
                        msg = json.loads(line)["result"]
                        assert not msg.get("canceled"), f"the watch was cancelled: {msg}"
                        for ev in msg.get("events", []):
                            rev = int(ev["kv"]["mod_revision"])
                            self.events.append((rev, ev.get("type", "PUT"),
                                                unb64(ev["kv"]["key"]).decode()))
                            self.next_revision = rev + 1
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                pass  # the stream broke (a member died or paused): resume elsewhere
            finally:
                self.resumes += 1
                await asyncio.sleep(0.1)


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


@pytest.mark.timeout(SECONDS + 300)
async def test_kill_and_pause_masters_while_writing(cluster: Cluster) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"chaos seed {seed}, {SECONDS:.0f}s")
    async with cluster as c:
        await c.leader()
        start_rev = await c.put("m1", "chaos/start", "0")
        claims: dict[int, set[str]] = {}
        observer = asyncio.create_task(watch_leaders(c, claims))
        writers = [Writer(c, f"c{i}", c.names) for i in range(4)]
        tasks = [asyncio.create_task(w.run()) for w in writers]
        faults: list[str] = []
        fired: collections.Counter[str] = collections.Counter()
        watch = ResumableWatch(c, "c", start_rev + 1)
        watcher = asyncio.create_task(watch.run(random.Random(seed + 1)))

        async def watch_saw(acked: set[tuple[str, int]]) -> bool:
            if watcher.done():  # it failed: its own error, not a timeout
                watcher.result()
                raise AssertionError("the watcher stopped")
            return acked <= {(k, r) for r, _t, k in watch.events}

        try:
            started = time.monotonic()
            deadline = started + SECONDS
            # One kill and one pause first (in a seeded order), the whole-cluster restart
            # halfway, then either kind at random.
            planned = rng.sample(["kill", "pause"], 2)
            restart_all_at = started + SECONDS / 2
            while time.monotonic() < deadline or planned or not fired["restart-all"]:
                await asyncio.sleep(rng.uniform(1.0, 3.0))
                if not fired["restart-all"] and time.monotonic() >= restart_all_at \
                        and not planned:
                    faults.append("restart-all")
                    pids = {n: c.pid(n) for n in c.names}
                    await c.kill_async(*c.names)
                    assert all(c.pid(n) is None for n in c.names)
                    await c.up_async()
                    assert all(c.pid(n) not in (None, pids[n]) for n in c.names)
                    fired["restart-all"] += 1
                    continue
                kind = planned.pop(0) if planned else rng.choice(["kill", "pause"])
                # The leader half of the time, any member otherwise.
                leader = await c.leader(timeout=30)
                victim = leader if rng.random() < 0.5 else rng.choice(c.names)
                faults.append(f"{kind} {victim}")
                pid = c.pid(victim)
                assert pid is not None, f"{victim} is not running"
                if kind == "kill":
                    await c.kill_async(victim)
                    assert c.pid(victim) is None
                    fired["kill"] += 1
                    await asyncio.sleep(rng.uniform(0.5, 2.0))
                    await c.up_async()
                    assert c.pid(victim) not in (None, pid)
                else:
                    os.kill(pid, signal.SIGSTOP)
                    try:  # a signal is delivered a moment later
                        await wait_for(lambda pid=pid: asyncio.sleep(0, stopped(pid)), timeout=10,
                                       what=f"{victim} to stop")
                        fired["pause"] += 1
                        await asyncio.sleep(rng.uniform(0.5, 2.5))
                    finally:
                        os.kill(pid, signal.SIGCONT)
            for w in writers:
                w.stop()
            await asyncio.gather(*tasks)
            healed = time.monotonic()
            acked = {(k, r) for w in writers for k, r in w.acked.items()}
            await wait_for(lambda: watch_saw(acked), timeout=30,
                           what="the watch to see every acknowledged write")
        finally:
            for task in [watcher, observer, *tasks]:
                task.cancel()
            await asyncio.gather(watcher, observer, *tasks, return_exceptions=True)
        print(f"faults: {faults}; acknowledged writes: {len(acked)}; "
              f"watch resumed {watch.resumes} times")
        assert fired["kill"] >= 1 and fired["pause"] >= 1 and fired["restart-all"] == 1, \
            f"planned faults did not all fire: {dict(fired)}"
        assert sum(fired.values()) == len(faults), (dict(fired), faults)
        assert watch.resumes >= 1 + fired["restart-all"], "the watch never had to resume"
        assert len(acked) > 200, "the cluster stopped taking writes"

        two = {term: leaders for term, leaders in claims.items() if len(leaders) > 1}
        assert not two, f"two leaders in one term: {two}"

        revisions = [r for r, _t, _k in watch.events]
        assert revisions == sorted(revisions)
        keys = [(k, r) for r, _t, k in watch.events]
        assert len(keys) == len(set(keys)), "an event was delivered twice"

        async def converged() -> bool:
            revs = set()
            for name in c.names:
                st = await c.status(name)
                if st is None:
                    return False
                revs.add(st["header"]["revision"])
            return len(revs) == 1

        await wait_for(converged, timeout=30, what="every member to converge")
        print(f"converged {time.monotonic() - healed:.1f}s after the last fault")
        for name in c.names:
            stored = {}
            for w in writers:
                stored.update(await c.get_prefix(name, w.prefix + "/"))
            # A client that timed out retries with a new request; the first may still
            # commit later (as in etcd), so a key can be newer than its acknowledgement.
            lost = [(k, r) for k, r in acked if k not in stored or stored[k][1] < r]
            assert not lost, f"{name} lost acknowledged writes: {lost[:5]}"
