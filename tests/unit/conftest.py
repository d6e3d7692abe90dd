"""Fixtures for API tests: a real single-member Raft replica served through aiohttp.

The replica is the production `Replica` (pysyncobj, journal on disk, leader duties), not
a fake, so a test of the HTTP layer also exercises proposing, applying and watching. It
runs on the test's own event loop; everything it opens is closed again in teardown, since
pytest turns ResourceWarnings and unclosed-session warnings into errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import test_utils, web

from raftkube.apiserver import app as apiapp
from raftkube.store import replica as rep

TOKEN = "t" * 24
NODE_TOKEN = "n" * 24  # the agent of node "n1"
SECRET = "s" * 32
LEADER_DEADLINE = 10.0
# A single member has nobody to split a vote with, so a short election timeout is safe,
# and it keeps a fresh replica per test cheap (the default would add ~0.4 s to each).
FAST = rep.Timing(election_min=0.04, election_max=0.06, heartbeat=0.01, tick=0.01)


@dataclasses.dataclass
class Served:
    """One replica behind the API, and a client that talks to it."""

    replica: rep.Replica
    client: test_utils.TestClient[web.Request, web.Application]
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_for(predicate: Callable[[], bool], *, deadline: float, what: str) -> None:
    """Poll `predicate()` until it holds; fail with `what` after `deadline` seconds."""
    give_up = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError(f"timed out after {deadline}s waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.fixture
async def replica(tmp_path: Path) -> AsyncIterator[rep.Replica]:
    r = rep.Replica(
        name="m1",
        raft_addr=f"127.0.0.1:{free_port()}",
        peers=[],
        api_url="http://x",
        data_dir=str(tmp_path / "m1"),
        secret=SECRET,
        timing=FAST,
    )
    r.start(asyncio.get_running_loop())
    try:
        await wait_for(
            lambda: r.view.is_leader,
            deadline=LEADER_DEADLINE,
            what="the single member to become leader",
        )
        yield r
    finally:
        await r.stop()


@pytest.fixture
async def served(replica: rep.Replica) -> AsyncIterator[Served]:
    app = apiapp.make_app(replica, token=TOKEN, node_tokens={NODE_TOKEN: "n1"},
                          progress_every=0.3, bookmark_every=0.3, event_ttl=2)
    server = test_utils.TestServer(app)
    client: test_utils.TestClient[web.Request, web.Application] = test_utils.TestClient(server)
    await client.start_server()
    # The server creates `default` and `raftkube-system` as it starts; let that finish
    # so that tests see a store that changes only when they change it.
    await asyncio.wait_for(asyncio.shield(app[apiapp.SETUP]), LEADER_DEADLINE)
    # And the leader's own first writes (its member record, the term's fence), which
    # would otherwise land in the middle of a test.
    await wait_for(lambda: replica.settled_leader, deadline=LEADER_DEADLINE,
                   what="the leader's first writes")
    try:
        yield Served(replica=replica, client=client, token=TOKEN)
    finally:
        await client.close()


@pytest.fixture
async def collected(served: Served) -> AsyncIterator[Served]:
    """`served` with the loops that complete what a delete starts running against it: the
    garbage collector and the namespace controller, as on a leader."""
    from raftkube.controllers.garbagecollector import GarbageCollector
    from raftkube.controllers.namespace import NamespaceController
    from tests.unit.loops import running

    async with running(served, GarbageCollector, NamespaceController):
        yield served
