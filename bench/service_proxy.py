"""Benchmark of the userspace service proxy (raftkube/agent/proxy.py) against its
physical limit, the same work without it, in one process on loopback:

- connect + first byte: `--connections` short connections one after another, each
  reading the backend's one-line greeting, direct to the backend and through a
  ClusterIP listener of the proxy (which dials the backend per connection): p50, p99;
- bulk: `--megabytes` MiB streamed from the backend to the client, direct and proxied:
  MiB/s (the proxy copies every byte through this process: its cost per byte).

The backend, the proxy and the client share one event loop and one core here, so the
proxied figures include the proxy's share of that core; in an agent the proxy runs
beside the kubelet, and clients and backends are containers.

Run: `python bench/service_proxy.py [--connections 500] [--megabytes 256]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

import prometheus_client as prom

from raftkube.agent import proxy as px
from raftkube.agent import servicemap as sm

CHUNK = 256 * 1024


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await reader.readline()
        if line.startswith(b"BULK "):
            left = int(line.split()[1])
            block = os.urandom(CHUNK)
            while left > 0:
                writer.write(block[:min(CHUNK, left)])
                left -= CHUNK
                await writer.drain()
        else:
            writer.write(b"hello\n")
            await writer.drain()
    finally:
        writer.close()


async def greet(host: str, port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"HI\n")
    assert await reader.readline() == b"hello\n"
    elapsed = time.perf_counter() - started
    writer.close()
    await writer.wait_closed()
    return elapsed


async def bulk(host: str, port: int, size: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"BULK {size}\n".encode())
    got = 0
    while data := await reader.read(CHUNK):
        got += len(data)
    assert got == size, (got, size)
    writer.close()
    return size / 2**20 / (time.perf_counter() - started)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(connections: int, megabytes: int) -> None:
    backend = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = backend.sockets[0].getsockname()[1]
    proxy = px.Proxy(node_address="127.0.0.1", cluster_address="127.0.0.1",
                     metrics=px.ProxyMetrics(prom.CollectorRegistry()),
                     rng=random.Random(1))
    frontend = sm.Frontend(namespace="default", service="bench", port_name="", protocol="TCP",
                           cluster_ip="10.96.0.1", port=80, node_port=None,
                           backends=(sm.Backend("127.0.0.1", port),))
    await proxy.apply(sm.ServiceMap(frontends=(frontend,)))
    p_host, p_port = proxy.cluster_ports()[("10.96.0.1", 80)]
    try:
        print(f"load average: {os.getloadavg()[0]:.1f} (cores: {os.cpu_count()})")
        for what, host, prt in (("direct", "127.0.0.1", port), ("proxied", p_host, p_port)):
            cpu = time.process_time()
            times = [await greet(host, prt) for _ in range(connections)]
            cpu = (time.process_time() - cpu) / connections
            print(f"{what:8s} connect+first byte, {connections} in a row: "
                  f"p50 {statistics.median(times) * 1e3:.2f} ms, "
                  f"p99 {pct(times, 0.99) * 1e3:.2f} ms, "
                  f"CPU {cpu * 1e3:.2f} ms a connection (client, backend and proxy)")
        for what, host, prt in (("direct", "127.0.0.1", port), ("proxied", p_host, p_port)):
            rate = await bulk(host, prt, megabytes * 2**20)
            print(f"{what:8s} bulk {megabytes} MiB: {rate:.0f} MiB/s")
    finally:
        await proxy.close()
        backend.close()
        await backend.wait_closed()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--megabytes", type=int, default=256)
    args = parser.parse_args()
    asyncio.run(main(args.connections, args.megabytes))
