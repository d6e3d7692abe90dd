"""A replica whose disk fails, or whose tick keeps failing, stops for good and says why:
pending and new requests get a 503 naming the cause, /readyz too, and it never retries
the write (nor logs a traceback per tick)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from raftkube.store import disk
from raftkube.store import journal as jr
from raftkube.store import replica as rep
from tests.unit.conftest import FAST, SECRET, Served, free_port

pytestmark = pytest.mark.unit


async def test_a_full_disk_fails_the_replica_and_every_request_says_why(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = served.replica
    ok = await served.client.post("/v3/kv/put", json={"key": "YQ==", "value": "MQ=="},
                                  headers=served.auth)
    assert ok.status == 200

    def no_space(fd: int, data: Any, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(jr.os, "pwrite", no_space)
    resp = await served.client.post("/v3/kv/put", json={"key": "Yg==", "value": "MQ=="},
                                    headers=served.auth)
    body = await resp.json()
    assert resp.status == 503 and body["code"] == 14
    assert "member m1 cannot write its journal (No space left on device" in body["message"]
    assert "it is stopping" in body["message"]
    failure = await asyncio.wait_for(replica.wait_failed(), 5)
    assert failure.kind == "disk"
    ready = await served.client.get("/readyz", headers=served.auth)
    assert ready.status == 503 and "cannot write its journal" in await ready.text()
    for path, payload in [("/v3/kv/put", {"key": "Yw==", "value": "MQ=="}),
                          ("/v3/kv/range", {"key": "YQ==", "serializable": True})]:
        again = await served.client.post(path, json=payload, headers=served.auth)
        assert again.status == 503 and "it is stopping" in (await again.json())["message"]
    assert replica._thread is not None
    await asyncio.get_running_loop().run_in_executor(None, replica._thread.join, 5)
    assert not replica._thread.is_alive()  # it stopped ticking: nothing more is sent


async def test_a_tick_that_keeps_failing_is_logged_rarely_then_fails_the_replica(
        replica: rep.Replica, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(rep, "TICK_FAILURE_LIMIT", 0.5)

    def broken(timeout: float) -> None:
        raise RuntimeError("a bug")

    with caplog.at_level(logging.ERROR, logger="raftkube.store.replica"):
        monkeypatch.setattr(replica.node, "doTick", broken)
        failure = await asyncio.wait_for(replica.wait_failed(), 5)
    assert failure.kind == "tick" and "RuntimeError: a bug" in failure.message
    tracebacks = [r for r in caplog.records if r.getMessage().startswith("raft tick failed")]
    assert len(tracebacks) == 1  # ~50 failures in 0.5 s, one traceback
    with pytest.raises(rep.Unavailable, match="the Raft tick failed every time"):
        await replica.propose("noop")


def test_a_bad_dump_is_refused_before_pysyncobj_binds_anything(tmp_path: Path) -> None:
    data_dir = tmp_path / "m1"
    data_dir.mkdir()
    disk.replace_dump_file(str(data_dir), b"x" * 300, disk.fresh_raft_entries())
    path = data_dir / disk.DUMP
    path.write_bytes(path.read_bytes()[:-100])
    port = free_port()
    with pytest.raises(jr.CorruptData, match="truncated"):
        rep.Replica(name="m1", raft_addr=f"127.0.0.1:{port}", peers=[], api_url="http://x",
                    data_dir=str(data_dir), secret=SECRET, timing=FAST)
    assert free_port_is(port)


def test_a_dump_whose_state_does_not_load_is_refused_before_pysyncobj_binds_anything(
        tmp_path: Path) -> None:
    """Its checksum holds (written whole) but the state inside is not one this version
    loads: pysyncobj logged "failed to load full dump" and ran with an empty state."""
    data_dir = tmp_path / "m1"
    data_dir.mkdir()
    disk.replace_dump_file(str(data_dir), b"\x81\xa1v\x02", disk.fresh_raft_entries())
    port = free_port()
    with pytest.raises(jr.CorruptData, match="the state in it does not load"):
        rep.Replica(name="m1", raft_addr=f"127.0.0.1:{port}", peers=[], api_url="http://x",
                    data_dir=str(data_dir), secret=SECRET, timing=FAST)
    assert free_port_is(port)


def free_port_is(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True
