"""Services, EndpointSlices, Nodes and loopback TCP backends for the networking tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

Obj = dict[str, Any]


def service(name: str, *, ns: str = "default", cluster_ip: str = "10.96.0.10",
            ports: list[Obj] | None = None, type_: str = "ClusterIP") -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"type": type_, "clusterIP": cluster_ip,
                     "ports": ports if ports is not None else
                     [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]}}


def endpoint(ip: str, *, ready: bool = True, serving: bool | None = None,
             terminating: bool = False, node: str = "n1") -> Obj:
    return {"addresses": [ip], "nodeName": node,
            "conditions": {"ready": ready, "serving": ready if serving is None else serving,
                           "terminating": terminating}}


def endpoint_slice(service_name: str, endpoints: list[Obj], *, ns: str = "default",
                   ports: list[Obj] | None = None, name: str = "",
                   address_type: str = "IPv4") -> Obj:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name or f"{service_name}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": address_type, "endpoints": endpoints,
            "ports": ports if ports is not None else
            [{"name": "http", "protocol": "TCP", "port": 8080}]}


def node(name: str, address: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": address},
                                     {"type": "Hostname", "address": name}]}}


class Backend:
    """A TCP server on loopback that answers each connection with its name, then
    echoes what it reads (so a test can hold a connection open)."""

    def __init__(self, name: str, host: str = "127.0.0.1") -> None:
        self.name = name
        self.host = host
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            writer.write(self.name.encode() + b"\n")
            await writer.drain()
            while data := await reader.read(1024):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@contextlib.asynccontextmanager
async def backends(*names: str) -> AsyncIterator[list[Backend]]:
    started = [await Backend(n).start() for n in names]
    try:
        yield started
    finally:
        for b in started:
            await b.stop()


async def ask(host: str, port: int, timeout: float = 5.0) -> str:
    """Connect, read the first line (the backend's name), close."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return (await reader.readline()).decode().strip()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
