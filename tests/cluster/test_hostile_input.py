"""Hostile bodies sent to a real leader, over and over: each is refused, and the master
does not notice. Its memory stays where it was (its peak resident size, VmHWM in /proc,
reset before the bombs), its Raft term and its leadership do not change (no election:
the bomb of issue 6 item 1 once blocked a master for 4 s and moved the term from 5 to
16), and a writer on the same master keeps being answered promptly meanwhile.

The bodies come with a node token (an agent may create Events), or the admin's for the
store's own API, which a node may not use.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests import hostile
from tests.cluster.harness import Cluster, RequestFailed, b64

pytestmark = pytest.mark.cluster

NODE_TOKEN = "n" * 24
EVENTS = "/api/v1/namespaces/default/events"
ROUNDS = 5
SENDERS = 3  # bombs in flight at once
PEAK_GROWTH = 40 * 1024 * 1024  # the bomb of item 1 grew a master by 659 MB
WRITE_DEADLINE = 3.0  # seconds a normal write may take while bombs land (a loaded box)


def hostile_requests() -> list[tuple[str, str, str, bytes]]:
    """(what, path, token, body) for every hostile body; all JSON ones but the YAML."""
    deep = hostile.nested(100_000)
    return [
        ("alias bomb 9x8", EVENTS, NODE_TOKEN, hostile.alias_bomb(9, 8)),
        ("alias bomb 9x9", EVENTS, NODE_TOKEN, hostile.alias_bomb(9, 9)),
        ("alias bomb 10x20", EVENTS, NODE_TOKEN, hostile.alias_bomb(10, 20)),
        ("merge-key bomb 9x9", EVENTS, NODE_TOKEN, hostile.merge_bomb(9, 9)),
        ("YAML nested 100,000 deep", EVENTS, NODE_TOKEN,
         hostile.EVENT_HEAD.encode() + b"x: " + deep),
        ("JSON event nested 100,000 deep", EVENTS, NODE_TOKEN,
         hostile.with_field({"apiVersion": "v1", "kind": "Event"}, "x", deep)),
        ("etcd put nested 100,000 deep", "/v3/kv/put", "",
         hostile.with_field({"key": b64("k"), "value": b64("v")}, "x", deep)),
        ("etcd txn nested 100,000 deep", "/v3/kv/txn", "", b'{"success": ' + deep + b"}"),
        ("etcd txn of txns 40 deep", "/v3/kv/txn", "",
         json.dumps(hostile.nested_txn(40)).encode()),
        # Not bombs, just big: what parsing them would cost is bounded before it starts.
        ("JSON event of a million values", EVENTS, NODE_TOKEN,
         hostile.with_field({"apiVersion": "v1", "kind": "Event"}, "series",
                            b'{"x": ' + hostile.many(1_000_000) + b"}")),
        ("YAML event of 10,001 nodes", EVENTS, NODE_TOKEN,
         hostile.EVENT_HEAD.encode() + b"series:\n  x:\n" + b"  - 0\n" * 10_000),
        # Crafted against a pattern: a regular expression once counted this body's values
        # and took minutes over it, holding the GIL (the Raft tick too).
        ("JSON event, a string of 150,000 escaped quotes", EVENTS, NODE_TOKEN,
         b'{"apiVersion": "v1", "kind": "Event", "x": "' + b'\\"' * 150_000),
        ("etcd put, a string of 150,000 escaped quotes", "/v3/kv/put", "",
         b'{"key": "YQ==", "x": "' + b'\\"' * 150_000),
    ]


def memory(pid: int, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the peak since the last reset), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def reset_peak(pid: int) -> None:
    """Start VmHWM again from VmRSS, so that it says the peak of what follows."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


@pytest.fixture
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master cluster that knows the node token of `n1`."""
    state = tmp_path_factory.mktemp("cluster")
    tokens = Path(state) / "node-tokens"
    tokens.write_text(f"{NODE_TOKEN},n1\n")
    c = Cluster(str(state))
    try:
        c.up(master_args=["--node-token-file", str(tokens)])
        yield c
    finally:
        c.down()


async def send(c: Cluster, name: str, path: str, token: str, body: bytes) -> tuple[int, str]:
    assert c.session is not None
    yaml = body.lstrip().startswith(b"apiVersion")
    headers = {"Content-Type": "application/yaml" if yaml else "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    # A BytesIO body: aiohttp warns about sending large bytes in one piece.
    async with c.session.post(c.url[name] + path, data=io.BytesIO(body), headers=headers,
                              timeout=aiohttp.ClientTimeout(total=10)) as resp:
        text = await resp.text()
    try:
        return resp.status, json.loads(text).get("message", "")
    except ValueError:
        return resp.status, text


async def raft_views(c: Cluster) -> dict[str, tuple[str, str]]:
    """(term, leader) as each member sees it."""
    views = {}
    for name in c.names:
        status = await c.call(name, "/v3/maintenance/status")
        views[name] = (status["raftTerm"], status["leader"])
    return views


async def test_hostile_bodies_leave_the_leader_as_it_was(guarded: Cluster) -> None:
    async with guarded as c:
        leader = await c.leader()
        pid = c.pid(leader)
        assert pid is not None
        # Warm up what any first request allocates (and the YAML worker), then measure.
        warm = hostile.EVENT_HEAD.replace("name: bomb", "name: warm-up").encode()
        status, _ = await send(c, leader, EVENTS, NODE_TOKEN, warm)
        assert status == 201
        for i in range(20):
            await c.put(leader, f"warm/{i}", "v")
        views = await raft_views(c)
        start_rss = memory(pid, "VmRSS")
        reset_peak(pid)

        stop = asyncio.Event()
        write_times: list[float] = []

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    await c.put(leader, f"meanwhile/{n}", "v", timeout=WRITE_DEADLINE)
                except (RequestFailed, TimeoutError, aiohttp.ClientError) as e:
                    raise AssertionError(f"a normal write failed while bombs landed: {e!r}"
                                         ) from e
                write_times.append(time.monotonic() - started)
                n += 1

        refused: dict[str, int] = {}

        async def bomber(k: int) -> None:
            requests = hostile_requests()
            for r in range(ROUNDS):
                for i in range(len(requests)):
                    what, path, token, body = requests[(i + k + r) % len(requests)]
                    status, message = await send(c, leader, path, token, body)
                    assert status == 400, (what, status, message)
                    assert any(w in message for w in ("nest", "aliases", "values", "nodes",
                                                      "not valid JSON")), (what, message)
                    refused[what] = refused.get(what, 0) + 1

        writing = asyncio.create_task(writer())
        try:
            await asyncio.gather(*(bomber(k) for k in range(SENDERS)))
        finally:
            stop.set()
            await writing
        grown = memory(pid, "VmHWM") - start_rss  # at the worst moment, not after

        assert set(refused) == {r[0] for r in hostile_requests()}
        assert all(n == ROUNDS * SENDERS for n in refused.values()), refused
        assert write_times and max(write_times) < WRITE_DEADLINE, max(write_times)
        assert grown < PEAK_GROWTH, f"the leader grew by {grown / 1e6:.0f} MB"
        assert await raft_views(c) == views, "an election happened while bombs landed"
        assert await c.leader() == leader
