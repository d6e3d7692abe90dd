"""A single-member `Replica` on a data dir that a test restarts, and small helpers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from raftkube.store import disk
from raftkube.store import replica as rep
from tests.unit.conftest import FAST, LEADER_DEADLINE, SECRET, free_port, wait_for


@asynccontextmanager
async def running(data_dir: Path, *, compaction: int = 20_000) -> AsyncIterator[rep.Replica]:
    """A single-member replica on `data_dir`, with the Raft address it had last time (a
    dump records the members, and a member at a new address would wait for its old self)."""
    addr_file = data_dir.parent / f"{data_dir.name}.addr"
    if not addr_file.exists():
        addr_file.write_text(f"127.0.0.1:{free_port()}")
    r = rep.Replica(name="m1", raft_addr=addr_file.read_text(), peers=[],
                    api_url="http://x", data_dir=str(data_dir), secret=SECRET, timing=FAST,
                    log_compaction_entries=compaction)
    r.start(asyncio.get_running_loop())
    try:
        await wait_for(lambda: r.view.is_leader, deadline=LEADER_DEADLINE,
                       what="the single member to become leader")
        yield r
    finally:
        await r.stop()


async def put_keys(r: rep.Replica, prefix: str, n: int) -> None:
    for i in range(n):
        result = await r.propose("put", {"key": f"{prefix}/{i:04d}".encode(), "value": b"v"})
        assert "error" not in result, result


async def keys(r: rep.Replica, prefix: str) -> set[bytes]:
    got = await r.range({"key": prefix.encode() + b"/", "range_end": prefix.encode() + b"0"})
    return {kv["key"] for kv in got["kvs"]}


def dump_index(data_dir: Path) -> int:
    _blob, raft_data = disk.read_dump_file(str(data_dir / disk.DUMP))
    return int(raft_data[0][1])
