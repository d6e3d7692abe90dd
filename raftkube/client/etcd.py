"""The store's etcd-v3 JSON API (`/v3/...`) as calls: keys, leases, members, status.

Keys and values are bytes here and base64 on the wire, as etcd's gateway wants them.
Reads (`range`, `status`, `members`...) are idempotent and move on to the next master
when one cannot answer; writes are sent once (see `transport`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from raftkube.client import transport as tp
from raftkube.client.errors import EtcdError

READS = {"/v3/kv/range", "/v3/maintenance/status", "/v3/maintenance/snapshot",
         "/v3/cluster/member/list", "/v3/lease/timetolive", "/v3/lease/leases"}


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


class EtcdClient:
    def __init__(self, transport: tp.Transport, *, term: int | None = None) -> None:
        self.transport = transport
        self.term = term

    async def call(self, path: str, body: dict[str, Any] | None = None, *,
                   server: str | None = None) -> Any:
        answer = await self.raw(path, body, server=server)
        return answer.json()

    async def raw(self, path: str, body: dict[str, Any] | None = None, *,
                  server: str | None = None) -> tp.Answer:
        """POST to `path`; the answer, or EtcdError for an error answer. `server` asks one
        master in particular (its own status), with no failover."""
        headers = {"Content-Type": "application/json"}
        if self.term is not None and path not in READS:
            headers[tp.TERM_HEADER] = str(self.term)
        data = json.dumps(body or {}).encode()
        transport = self.transport
        if server is not None:
            # One member in particular (its own view): no failover, a short timeout.
            transport = tp.Transport([server], self.transport.token, ca=self.transport.ca,
                                     pinned=self.transport.pinned,
                                     timeout=min(self.transport.timeout, 3.0), wait=0)
        try:
            answer = await transport.request("POST", path, body=data, headers=headers,
                                             idempotent=path in READS,
                                             unavailable_is_unknown=True)
        finally:
            if transport is not self.transport:
                await transport.close()
        if answer.status >= 400:
            body_json = answer.json()
            raise EtcdError(answer.status, body_json if isinstance(body_json, dict) else {})
        return answer

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        result: dict[str, Any] = await self.call("/v3/kv/put", body)
        return result

    async def range(self, key: bytes, end: bytes = b"", *,
                    serializable: bool = False) -> list[tuple[bytes, bytes]]:
        body: dict[str, Any] = {"key": b64(key)}
        if end:
            body["range_end"] = b64(end)
        if serializable:
            body["serializable"] = True
        resp = await self.call("/v3/kv/range", body)
        return [(unb64(kv["key"]), unb64(kv.get("value"))) for kv in resp.get("kvs", [])]

    async def status(self, server: str | None = None) -> dict[str, Any]:
        """A member's status: `server`'s own (a new connection each time), or that of
        the first server of this client's transport that answers."""
        result: dict[str, Any] = await self.call("/v3/maintenance/status", server=server)
        return result

    async def members(self) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = (await self.call("/v3/cluster/member/list"))["members"]
        return members

    async def snapshot(self) -> bytes:
        return (await self.raw("/v3/maintenance/snapshot")).body
