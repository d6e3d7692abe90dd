"""The Raft port against a peer that does not hold the cluster secret, on real masters.

A length prefix of 2^31-1 followed by a stream of bytes, a negative length, an HTTP
request and idle or trickling connections must each be dropped early, without the member
buffering what it is sent (RSS flat), while the cluster keeps committing with the same
leader in the same term.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import pytest

from raftkube.store import wire
from tests.cluster.harness import Cluster, Writer, wait_for

pytestmark = pytest.mark.cluster

STREAM = 48 * 1024 * 1024  # what the attacker tries to make a member hold
CHUNK = 1024 * 1024


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def raft_addr(c: Cluster, name: str) -> tuple[str, int]:
    host, port = c.members[name]["raft"].rsplit(":", 1)
    return host, int(port)


def stream_after_prefix(addr: tuple[str, int], prefix: bytes) -> tuple[int, float]:
    """Send `prefix` then up to STREAM bytes; (bytes the member took, seconds it took to
    hang up). The kernel's socket buffers take a few MB whatever the member does."""
    started = time.monotonic()
    sent = 0
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(prefix)
        block = b"\x00" * CHUNK
        try:
            while sent < STREAM:
                sent += s.send(block)
        except (BrokenPipeError, ConnectionResetError):
            return sent, time.monotonic() - started
        except TimeoutError:
            pass  # nobody reads it any more, and nobody hung up: the check below says so
        try:
            s.settimeout(2)
            closed = s.recv(1) == b""
        except ConnectionResetError:
            closed = True
        except TimeoutError:
            closed = False
        assert closed, f"the member kept a connection open after taking {sent} bytes"
        return sent, time.monotonic() - started


def hung_up_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the member closed `s` (reading what it sends), or None."""
    started = time.monotonic()
    s.settimeout(seconds)
    try:
        while True:
            if not s.recv(4096):
                return time.monotonic() - started
    except ConnectionResetError:
        return time.monotonic() - started
    except TimeoutError:
        return None


async def terms(c: Cluster) -> dict[str, str | None]:
    return {n: ((await c.status(n)) or {}).get("header", {}).get("raft_term")
            for n in c.names}


async def test_raft_port_bounds_frames_and_drops_unauthenticated_peers(
        cluster: Cluster) -> None:
    async with cluster as c:
        leader = await c.leader()
        before = await terms(c)
        pid = c.pid(leader)
        assert pid is not None
        addr = raft_addr(c, leader)
        loop = asyncio.get_running_loop()
        writer = Writer(c, "rp", c.names)
        task = asyncio.create_task(writer.run())
        await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > 20), timeout=20,
                       what="writes before the attack")
        rss_before = rss_kib(pid)

        # 2^31-1 announced, then a stream: three connections at once, as in the issue.
        results = await asyncio.gather(*(
            loop.run_in_executor(None, stream_after_prefix, addr, struct.pack("i", 2**31 - 1))
            for _ in range(3)))
        for taken, seconds in results:
            assert taken < STREAM / 2, f"the member took {taken} bytes before hanging up"
            assert seconds < 5
        # A negative length, and HTTP spoken to the Raft port ("GET " reads as 542 MB).
        taken, _ = await loop.run_in_executor(
            None, stream_after_prefix, addr, struct.pack("i", -5))
        assert taken < STREAM / 2
        with socket.create_connection(addr, timeout=5) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: raft\r\n\r\n")
            took = await loop.run_in_executor(None, hung_up_within, s, 2.0)
            assert took is not None and took < 1.0, "an HTTP request was not dropped at once"
        rss_after = rss_kib(pid)
        assert rss_after - rss_before < 16 * 1024, \
            f"RSS grew from {rss_before} to {rss_after} KiB under the stream"

        # Idle and trickling connections are dropped after the handshake deadline, and
        # no more than MAX_UNAUTHENTICATED wait at once: the oldest go first.
        extra = 4
        idle = [socket.create_connection(addr, timeout=5)
                for _ in range(wire.MAX_UNAUTHENTICATED + extra)]
        trickle = socket.create_connection(addr, timeout=5)
        try:
            started = time.monotonic()
            trickle.sendall(struct.pack("i", 100))
            first = await asyncio.gather(*(loop.run_in_executor(None, hung_up_within, s, 1.0)
                                           for s in idle[:extra]))
            assert all(t is not None for t in first), "the oldest waiting were not dropped"
            while time.monotonic() - started < wire.AUTH_DEADLINE + 3:
                try:
                    trickle.send(b"x")  # never a whole frame, but never silent
                except (BrokenPipeError, ConnectionResetError):
                    break
                await asyncio.sleep(0.2)
            else:
                raise AssertionError("a trickling connection outlived the handshake deadline")
            rest = await asyncio.gather(*(
                loop.run_in_executor(None, hung_up_within, s, wire.AUTH_DEADLINE + 3)
                for s in idle[extra:]))
            assert all(t is not None for t in rest), "idle connections outlived the deadline"
        finally:
            for s in [*idle, trickle]:
                s.close()

        n_during = len(writer.acked)
        await wait_for(lambda: asyncio.sleep(0, len(writer.acked) > n_during + 20),
                       timeout=20, what="writes after the attack")
        writer.stop()
        await task
        assert await c.leader() == leader
        assert await terms(c) == before, "an election happened during the attack"
        log = c.log(leader)
        assert "dropping a Raft peer connection" in log
        assert "Traceback" not in log
