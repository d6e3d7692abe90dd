"""The etcd v3 JSON API, through aiohttp's TestClient, against a real single-member replica.

Two halves. A table of bad requests: each must be answered with the right HTTP status and
a message that names the field (or carries etcd's own error text), and must leave the
store exactly as it was. Then the happy paths, checked the way a client written for etcd's
grpc-gateway reads them: int64 fields as strings, zero fields left out, a header on every
answer, watches as newline-delimited JSON.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import io
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from pysyncobj.config import SERIALIZER_STATE

from raftkube.store import disk
from raftkube.store import state as st
from tests import hostile
from tests.unit.conftest import NODE_TOKEN

pytestmark = pytest.mark.unit

MiB = 1024 * 1024


def b64(x: str | bytes) -> str:
    return base64.b64encode(x.encode() if isinstance(x, str) else x).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


def fingerprint(served: Any) -> tuple[Any, ...]:
    """Everything a refused request must leave alone."""
    r = served.replica
    with r.lock:
        s = r.state
        return (s.revision, len(s.kvs), dict(s.kvs), sorted(s.leases), s.compact_revision)


async def call(
    served: Any,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    auth: bool = True,
    data: Any = None,
    method: str = "POST",
) -> tuple[int, Any]:
    """One request; returns (status, JSON body or text when the body is not JSON)."""
    h = dict(served.auth) if auth else {}
    h.update(headers or {})
    kwargs: dict[str, Any] = {"headers": h}
    if data is None and body is not None:
        data = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    if isinstance(data, bytes):
        # A file-like body: aiohttp warns (ResourceWarning) about large raw bytes.
        data = io.BytesIO(data)
    if data is not None:
        kwargs["data"] = data
    async with served.client.request(method, path, **kwargs) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def ok(served: Any, path: str, body: Any = None, **kwargs: Any) -> dict[str, Any]:
    status, out = await call(served, path, body, **kwargs)
    assert status == 200, (path, body, status, out)
    assert isinstance(out, dict)
    return out


async def put(
    served: Any, key: str, value: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"key": b64(key), "value": b64(value), **extra}
    return await ok(served, "/v3/kv/put", body, headers=headers)


def rev(out: dict[str, Any]) -> int:
    return int(out["header"]["revision"])


# ---- bad requests ---------------------------------------------------------------------------


def put_op(key: str, value: str = "v") -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": b64(value)}}


GOOD_PUT = {"key": b64("fresh"), "value": b64("v")}
NO_SUCH_LEASE = 7_777_777


def oversized_put_body() -> bytes:
    # Valid JSON, so only its size can be the reason for refusing it.
    return json.dumps({"key": b64("big"), "value": b64(b"x" * (6 * MiB))}).encode()


async def chunks(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@dataclasses.dataclass(frozen=True)
class Bad:
    id: str
    path: str
    body: Any = None
    status: int = 400
    says: str = ""
    headers: dict[str, str] | None = None
    auth: bool = True
    raw: Callable[[], bytes] | None = None
    chunked: bool = False
    method: str = "POST"
    is_json: bool = True


BAD = [
    Bad("no token", "/v3/kv/put", GOOD_PUT, 401, "user name is empty", auth=False),
    Bad(
        "wrong token",
        "/v3/kv/put",
        GOOD_PUT,
        401,
        "invalid auth token",
        headers={"Authorization": "Bearer " + "u" * 24},
    ),
    Bad(
        "basic auth scheme",
        "/v3/kv/range",
        {"key": b64("seed")},
        401,
        "invalid auth token",
        headers={"Authorization": "Basic " + b64("root:" + "t" * 24)},
    ),
    Bad(
        "malformed json", "/v3/kv/put", raw=lambda: b'{"key": "a2V5", ', says="body: not valid JSON"
    ),
    Bad("body is a list", "/v3/kv/put", [GOOD_PUT], says="body: expected a JSON object, got list"),
    Bad(
        "key not base64",
        "/v3/kv/put",
        {"key": "not base64!", "value": b64("v")},
        says="key: not valid base64",
    ),
    Bad(
        "range_end not base64",
        "/v3/kv/range",
        {"key": b64("a"), "range_end": "%%%"},
        says="range_end: not valid base64",
    ),
    Bad("key missing", "/v3/kv/range", {"limit": 1}, says="key: must not be empty"),
    Bad("key empty", "/v3/kv/put", {"key": "", "value": b64("v")}, says="key: must not be empty"),
    Bad("delete key missing", "/v3/kv/deleterange", {}, says="key: must not be empty"),
    Bad(
        "value is a number",
        "/v3/kv/put",
        {"key": b64("k"), "value": 42},
        says="value: expected a base64 string, got int",
    ),
    Bad(
        "limit negative",
        "/v3/kv/range",
        {"key": b64("seed"), "limit": -1},
        says="limit: must be at least 0",
    ),
    Bad(
        "limit abc",
        "/v3/kv/range",
        {"key": b64("seed"), "limit": "abc"},
        says="limit: expected an integer, got 'abc'",
    ),
    Bad(
        "limit float",
        "/v3/kv/range",
        {"key": b64("seed"), "limit": 1.5},
        says="limit: expected an integer, got float",
    ),
    Bad(
        "limit beyond int64",
        "/v3/kv/range",
        {"key": b64("seed"), "limit": str(2**63)},
        says="limit: out of the int64 range",
    ),
    Bad(
        "revision is a bool",
        "/v3/kv/range",
        {"key": b64("seed"), "revision": True},
        says="revision: expected an integer, got bool",
    ),
    Bad(
        "sort_order unknown",
        "/v3/kv/range",
        {"key": b64("seed"), "sort_order": "SIDEWAYS"},
        says="sort_order: expected one of NONE, ASCEND, DESCEND",
    ),
    Bad(
        "sort_target out of range",
        "/v3/kv/range",
        {"key": b64("seed"), "sort_target": 9},
        says="sort_target: expected one of",
    ),
    Bad(
        "prev_kv is a string",
        "/v3/kv/put",
        {**GOOD_PUT, "prev_kv": "yes"},
        says="prev_kv: expected true or false",
    ),
    Bad(
        "txn compare not a list",
        "/v3/kv/txn",
        {"compare": {"key": b64("seed")}, "success": [put_op("fresh")]},
        says="compare: expected a list",
    ),
    Bad(
        "txn compare empty object",
        "/v3/kv/txn",
        {"compare": {}, "success": [put_op("fresh")]},
        says="compare: expected a list",
    ),
    Bad(
        "txn compare item not an object",
        "/v3/kv/txn",
        {"compare": ["VERSION"]},
        says="compare[0]: expected a JSON object",
    ),
    Bad(
        "txn compare target unknown",
        "/v3/kv/txn",
        {
            "compare": [{"key": b64("seed"), "target": "COLOR", "result": "EQUAL"}],
            "success": [put_op("fresh")],
        },
        says="compare[0].target: expected one of VERSION, CREATE, MOD, VALUE, LEASE",
    ),
    Bad(
        "txn compare result unknown",
        "/v3/kv/txn",
        {
            "compare": [{"key": b64("seed"), "target": "VERSION", "result": "ABOUT"}],
            "success": [put_op("fresh")],
        },
        says="compare[0].result: expected one of EQUAL, GREATER, LESS, NOT_EQUAL",
    ),
    Bad(
        "txn success not a list", "/v3/kv/txn", {"success": "put"}, says="success: expected a list"
    ),
    Bad(
        "txn op with no kind",
        "/v3/kv/txn",
        {"success": [put_op("fresh"), {}]},
        says="success[1]: needs exactly one of request_range, request_put",
    ),
    Bad(
        "txn op with two kinds",
        "/v3/kv/txn",
        {"failure": [{**put_op("fresh"), "request_range": {"key": b64("seed")}}]},
        says="failure[0]: needs exactly one of",
    ),
    Bad(
        "txn nested field named by path",
        "/v3/kv/txn",
        {"success": [{"request_txn": {"success": [{"request_put": {"key": "@@"}}]}}]},
        says="success[0].request_txn.success[0].request_put.key: not valid base64",
    ),
    Bad(
        "txn 129 ops",
        "/v3/kv/txn",
        {"success": [put_op(f"k{i}") for i in range(129)]},
        says="etcdserver: too many operations in txn request",
    ),
    Bad(
        "txn duplicate put keys",
        "/v3/kv/txn",
        {"success": [put_op("dup", "1"), put_op("dup", "2")]},
        says="etcdserver: duplicate key given in txn request",
    ),
    Bad(
        "txn delete overlapping a put",
        "/v3/kv/txn",
        {
            "success": [
                put_op("dup/a"),
                {"request_delete_range": {"key": b64("dup/"), "range_end": b64("dup0")}},
            ]
        },
        says="etcdserver: duplicate key given in txn request",
    ),
    Bad(
        "put 1.6 MB value",
        "/v3/kv/put",
        {"key": b64("big"), "value": b64(b"x" * 1_600_000)},
        says="etcdserver: request is too large",
    ),
    Bad(
        "txn with a 1.6 MB put",
        "/v3/kv/txn",
        {"success": [{"request_put": {"key": b64("big"), "value": b64(b"x" * 1_600_000)}}]},
        says="etcdserver: request is too large",
    ),
    Bad(
        "body over 6 MiB",
        "/v3/kv/put",
        raw=oversized_put_body,
        status=413,
        says="etcdserver: request is too large",
    ),
    Bad(
        "chunked body over 6 MiB",
        "/v3/kv/put",
        raw=oversized_put_body,
        chunked=True,
        status=413,
        says="etcdserver: request is too large",
    ),
    Bad(
        "range at a future revision",
        "/v3/kv/range",
        {"key": b64("seed"), "revision": 10**6},
        says="mvcc: required revision is a future revision",
    ),
    Bad(
        "compaction at a future revision",
        "/v3/kv/compaction",
        {"revision": 10**6},
        says="mvcc: required revision is a future revision",
    ),
    Bad("compaction without revision", "/v3/kv/compaction", {}, says="revision: "),
    Bad("lease grant TTL 0", "/v3/lease/grant", {"TTL": 0}, says="TTL: must be at least 1"),
    Bad("lease grant without TTL", "/v3/lease/grant", {}, says="TTL: "),
    Bad(
        "lease grant TTL x",
        "/v3/lease/grant",
        {"TTL": "x"},
        says="TTL: expected an integer, got 'x'",
    ),
    Bad(
        "put with an unknown lease",
        "/v3/kv/put",
        {**GOOD_PUT, "lease": NO_SUCH_LEASE},
        status=404,
        says="etcdserver: requested lease not found",
    ),
    Bad(
        "keepalive of an unknown lease",
        "/v3/lease/keepalive",
        {"ID": NO_SUCH_LEASE},
        status=404,
        says="etcdserver: requested lease not found",
    ),
    Bad(
        "revoke of an unknown lease",
        "/v3/lease/revoke",
        {"ID": NO_SUCH_LEASE},
        status=404,
        says="etcdserver: requested lease not found",
    ),
    Bad(
        "term header abc",
        "/v3/kv/put",
        GOOD_PUT,
        headers={"X-Raftkube-Term": "abc"},
        says="X-Raftkube-Term: expected an integer, got 'abc'",
    ),
    Bad(
        "term header zero",
        "/v3/kv/deleterange",
        {"key": b64("seed")},
        headers={"X-Raftkube-Term": "0"},
        says="X-Raftkube-Term: must be a positive Raft term",
    ),
    Bad(
        "term header beyond 64 bits",
        "/v3/kv/put",
        GOOD_PUT,
        headers={"X-Raftkube-Term": "1" + "0" * 30},
        says="X-Raftkube-Term",
    ),
    Bad(
        "watch without create_request",
        "/v3/watch",
        {"cancel_request": {}},
        says="create_request: expected a JSON object",
    ),
    Bad(
        "watch key not base64",
        "/v3/watch",
        {"create_request": {"key": "***"}},
        says="create_request.key: not valid base64",
    ),
    Bad(
        "watch filter unknown",
        "/v3/watch",
        {"create_request": {"key": b64("seed"), "filters": ["NOPE"]}},
        says="create_request.filters[0]: expected one of NOPUT, NODELETE",
    ),
    # Hostile input: nesting that would blow the parser's (or a reader's) recursion, and
    # integers that Python's int() would take but etcd's gateway does not.
    Bad(
        "put nested 100,000 deep",
        "/v3/kv/put",
        raw=lambda: hostile.with_field(GOOD_PUT, "x", hostile.nested(100_000)),
        says="body: nested deeper than 100 levels",
    ),
    Bad(
        "put nested 101 deep",
        "/v3/kv/put",
        raw=lambda: hostile.with_field(GOOD_PUT, "x", hostile.nested(100)),
        says="body: nested deeper than 100 levels",
    ),
    Bad(
        "txn nested 100,000 deep",
        "/v3/kv/txn",
        raw=lambda: b'{"success": ' + hostile.nested(100_000) + b"}",
        says="body: nested deeper than 100 levels",
    ),
    Bad(
        "txn of txns 40 deep",
        "/v3/kv/txn",
        hostile.nested_txn(40),
        says="body: nested deeper than 100 levels",
    ),
    Bad(
        "put of a million values",
        "/v3/kv/put",
        raw=lambda: hostile.with_field(GOOD_PUT, "x", hostile.many(1_000_000)),
        says="body: more than 100000 values",
    ),
    Bad(
        "put of 100,001 values",
        "/v3/kv/put",
        # The object, its two fields' values, and the list with its elements.
        raw=lambda: hostile.with_field(GOOD_PUT, "x", hostile.many(100_001 - 3)),
        says="body: more than 100000 values",
    ),
    Bad(
        "range nested 100,000 deep",
        "/v3/kv/range",
        raw=lambda: hostile.with_field({"key": b64("seed")}, "x", hostile.nested(100_000)),
        says="body: nested deeper than 100 levels",
    ),
    *[
        Bad(
            f"limit {text!r}",
            "/v3/kv/range",
            {"key": b64("seed"), "limit": text},
            says=f"limit: expected an integer, got {text!r}",
        )
        for text in (" 5 ", "5 ", "+3", "5_0", "\u0665", "\uff15", "5\n", "0x10", "")
    ],
    Bad(
        "compare mod_revision 1_0",
        "/v3/kv/txn",
        {"compare": [{"key": b64("seed"), "target": "MOD", "result": "EQUAL",
                      "mod_revision": "1_0"}]},
        says="compare[0].mod_revision: expected an integer, got '1_0'",
    ),
    Bad(
        "lease grant TTL +3",
        "/v3/lease/grant",
        {"TTL": "+3"},
        says="TTL: expected an integer, got '+3'",
    ),
    Bad(
        "limit of 23 digits",
        "/v3/kv/range",
        {"key": b64("seed"), "limit": "1" * 23},
        says="limit: out of the int64 range",
    ),
    Bad(
        "term header with a plus",
        "/v3/kv/put",
        GOOD_PUT,
        headers={"X-Raftkube-Term": "+1"},
        says="X-Raftkube-Term: expected an integer, got '+1'",
    ),
    Bad(
        "node token on the store",
        "/v3/kv/put",
        GOOD_PUT,
        403,
        "etcdserver: permission denied",
        headers={"Authorization": "Bearer " + NODE_TOKEN},
    ),
    Bad("unknown path", "/v3/kv/frobnicate", GOOD_PUT, 404, "Not Found", is_json=False),
    Bad(
        "GET on a POST route",
        "/v3/kv/put",
        None,
        405,
        "Method Not Allowed",
        method="GET",
        is_json=False,
    ),
]


@pytest.mark.parametrize("bad", BAD, ids=[b.id for b in BAD])
async def test_bad_request_is_refused_and_changes_nothing(served: Any, bad: Bad) -> None:
    await put(served, "seed", "v")
    before = fingerprint(served)
    data: Any = None
    if bad.raw is not None:
        data = chunks(bad.raw()) if bad.chunked else bad.raw()
    status, out = await call(
        served, bad.path, bad.body, headers=bad.headers, auth=bad.auth, data=data, method=bad.method
    )
    assert status == bad.status, out
    if bad.is_json:
        assert isinstance(out, dict), out
        assert bad.says in out["message"], out
        assert out["error"] == out["message"]
        assert isinstance(out["code"], int)
    else:
        assert bad.says in out
    # Let anything that was (wrongly) proposed get applied before looking at the store.
    await served.replica.barrier()
    assert fingerprint(served) == before


# ---- key-value ------------------------------------------------------------------------------


def assert_header(served: Any, out: dict[str, Any]) -> None:
    h = out["header"]
    r = served.replica
    with r.lock:
        now = r.state.revision
    assert set(h) == {"cluster_id", "member_id", "revision", "raft_term"}
    assert all(isinstance(v, str) for v in h.values())
    assert (h["cluster_id"], h["member_id"], h["raft_term"]) == (
        str(r.cluster_id), str(r.member_id), str(r.view.term))
    # The store's revision when the answer was made: no newer than the store's now (a
    # background write, e.g. an event lease expiring, may have come since).
    assert 1 <= int(h["revision"]) <= now
    assert int(h["raft_term"]) >= 1


async def test_put_range_deleterange_in_grpc_gateway_shape(served: Any) -> None:
    start = rev(await ok(served, "/v3/kv/range", {"key": b64("nothing")}))

    first = await put(served, "a/1", "one")
    assert_header(served, first)
    assert rev(first) == start + 1
    assert set(first) == {"header"}  # no prev_kv asked for, none given

    second = await put(served, "a/1", "uno", prev_kv=True)
    assert rev(second) == start + 2
    assert second["prev_kv"] == {
        "key": b64("a/1"),
        "value": b64("one"),
        "create_revision": str(start + 1),
        "mod_revision": str(start + 1),
        "version": "1",
    }
    await put(served, "a/2", "two")
    await put(served, "b", "other")

    got = await ok(served, "/v3/kv/range", {"key": b64("a/1")})
    assert_header(served, got)
    assert got["kvs"] == [
        {
            "key": b64("a/1"),
            "value": b64("uno"),
            "create_revision": str(start + 1),
            "mod_revision": str(start + 2),
            "version": "2",
        }
    ]
    assert got["count"] == "1"
    assert "more" not in got  # false is a zero value: left out

    prefix = {"key": b64("a/"), "range_end": b64("a0")}
    limited = await ok(served, "/v3/kv/range", {**prefix, "limit": 1})
    assert [unb64(kv["key"]) for kv in limited["kvs"]] == [b"a/1"]
    assert limited["more"] is True and limited["count"] == "2"
    desc = await ok(served, "/v3/kv/range", {**prefix, "sort_order": "DESCEND"})
    assert [unb64(kv["key"]) for kv in desc["kvs"]] == [b"a/2", b"a/1"]
    everything = await ok(
        served, "/v3/kv/range", {"key": b64("\0"), "range_end": b64("\0"), "keys_only": True}
    )
    # Every key; the API server's own objects (the default namespaces) sort under /registry/.
    keys = [unb64(kv["key"]) for kv in everything["kvs"]]
    assert [k for k in keys if not k.startswith(b"/registry/")] == [b"a/1", b"a/2", b"b"]
    assert all("value" not in kv for kv in everything["kvs"])
    counted = await ok(served, "/v3/kv/range", {**prefix, "count_only": True})
    assert "kvs" not in counted and counted["count"] == "2"
    # Reading the past; int64 fields accepted as strings or numbers.
    past = await ok(served, "/v3/kv/range", {"key": b64("a/1"), "revision": str(start + 1)})
    assert unb64(past["kvs"][0]["value"]) == b"one"
    assert rev(past) == start + 4

    missing = await ok(served, "/v3/kv/range", {"key": b64("zzz")})
    assert set(missing) == {"header"}  # no kvs, count 0 left out

    deleted = await ok(served, "/v3/kv/deleterange", {**prefix, "prev_kv": True})
    assert rev(deleted) == start + 5
    assert deleted["deleted"] == "2"
    assert [unb64(kv["value"]) for kv in deleted["prev_kvs"]] == [b"uno", b"two"]
    nothing = await ok(served, "/v3/kv/deleterange", {"key": b64("a/1")})
    assert set(nothing) == {"header"}  # deleted 0 left out
    assert rev(nothing) == start + 5  # deleting nothing takes no revision
    gone = await ok(served, "/v3/kv/range", prefix)
    assert "kvs" not in gone


async def test_txn_compare_and_swap(served: Any) -> None:
    created = await put(served, "cas", "v1")
    mod = rev(created)

    def swap(expected_mod: int, value: str) -> dict[str, Any]:
        return {
            "compare": [
                {
                    "key": b64("cas"),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": str(expected_mod),
                }
            ],
            "success": [
                {"request_put": {"key": b64("cas"), "value": b64(value), "prev_kv": True}},
                put_op("cas-audit", value),
                {"request_range": {"key": b64("cas")}},
            ],
            "failure": [{"request_range": {"key": b64("cas")}}],
        }

    won = await ok(served, "/v3/kv/txn", swap(mod, "v2"))
    assert won["succeeded"] is True
    assert rev(won) == mod + 1  # two puts, one revision
    put_resp, audit_resp, range_resp = won["responses"]
    assert unb64(put_resp["response_put"]["prev_kv"]["value"]) == b"v1"
    assert "response_put" in audit_resp
    kv = range_resp["response_range"]["kvs"][0]
    assert unb64(kv["value"]) == b"v2" and kv["mod_revision"] == str(mod + 1)
    assert range_resp["response_range"]["header"]["revision"] == str(mod + 1)

    lost = await ok(served, "/v3/kv/txn", swap(mod, "v3"))
    assert "succeeded" not in lost  # false: left out
    assert rev(lost) == mod + 1  # the failure branch only read
    (only,) = lost["responses"]
    assert unb64(only["response_range"]["kvs"][0]["value"]) == b"v2"

    by_value = await ok(
        served,
        "/v3/kv/txn",
        {
            "compare": [
                {"key": b64("cas"), "target": "VALUE", "result": "EQUAL", "value": b64("v2")},
                {"key": b64("cas"), "target": "VERSION", "result": "GREATER", "version": 1},
            ],
            "success": [{"request_delete_range": {"key": b64("cas")}}],
        },
    )
    assert by_value["succeeded"] is True
    assert by_value["responses"][0]["response_delete_range"]["deleted"] == "1"
    assert rev(by_value) == mod + 2


# ---- leases ---------------------------------------------------------------------------------


async def test_lease_grant_timetolive_leases_keepalive_revoke(served: Any) -> None:
    granted = await ok(served, "/v3/lease/grant", {"TTL": 60})
    lease = granted["ID"]
    assert isinstance(lease, str) and int(lease) > 0
    assert granted["TTL"] == "60"
    short = await ok(served, "/v3/lease/grant", {"TTL": "1", "ID": 4242})
    assert short["ID"] == "4242"
    assert int(short["TTL"]) >= 2  # raised to the minimum TTL, as etcd does
    again = await call(served, "/v3/lease/grant", {"TTL": 5, "ID": 4242})
    assert again[0] == 400 and "lease already exists" in again[1]["message"]

    await put(served, "leased/1", "x", lease=lease)
    await put(served, "leased/2", "y", lease=int(lease))
    await put(served, "free", "z")
    held = await ok(served, "/v3/kv/range", {"key": b64("leased/1")})
    assert held["kvs"][0]["lease"] == lease

    ttl = await ok(served, "/v3/lease/timetolive", {"ID": lease, "keys": True})
    assert ttl["ID"] == lease and ttl["grantedTTL"] == "60"
    assert 55 <= int(ttl["TTL"]) <= 60
    assert [unb64(k) for k in ttl["keys"]] == [b"leased/1", b"leased/2"]
    no_keys = await ok(served, "/v3/lease/timetolive", {"ID": lease})
    assert "keys" not in no_keys

    listed = await ok(served, "/v3/lease/leases", {})
    assert {item["ID"] for item in listed["leases"]} == {lease, "4242"}

    alive = await ok(served, "/v3/lease/keepalive", {"ID": lease})
    assert alive["result"]["ID"] == lease and alive["result"]["TTL"] == "60"
    assert_header(served, alive["result"])

    before = rev(await ok(served, "/v3/kv/range", {"key": b64("free")}))
    revoked = await ok(served, "/v3/lease/revoke", {"ID": lease})
    assert rev(revoked) == before + 1  # both keys deleted in one revision
    gone = await ok(served, "/v3/kv/range", {"key": b64("leased/"), "range_end": b64("leased0")})
    assert "kvs" not in gone
    still = await ok(served, "/v3/kv/range", {"key": b64("free")})
    assert unb64(still["kvs"][0]["value"]) == b"z"
    dead = await ok(served, "/v3/lease/timetolive", {"ID": lease})
    assert dead["TTL"] == "-1"
    listed = await ok(served, "/v3/lease/leases", {})
    assert [item["ID"] for item in listed["leases"]] == ["4242"]


async def test_lease_expiry_deletes_every_attached_key(served: Any) -> None:
    granted = await ok(served, "/v3/lease/grant", {"TTL": 1})
    lease = granted["ID"]
    await put(served, "exp/a", "1", lease=lease)
    await put(served, "exp/b", "2", lease=lease)
    async with watch(served, key=b64("exp/"), range_end=b64("exp0")) as resp:
        assert (await next_message(resp))["created"] is True
        events = await next_events(resp, 2)  # after the granted TTL (the 2 s minimum)
    assert [(e.get("type"), unb64(e["kv"]["key"])) for e in events] == [
        ("DELETE", b"exp/a"),
        ("DELETE", b"exp/b"),
    ]
    assert events[0]["kv"]["mod_revision"] == events[1]["kv"]["mod_revision"]
    dead = await ok(served, "/v3/lease/timetolive", {"ID": lease})
    assert dead["TTL"] == "-1"


async def test_lease_expiry_survives_a_write_stamped_with_a_bogus_future_term(
    served: Any,
) -> None:
    """Expiry is the leader's job, stamped with its Raft term; a client's invented term
    far above any real one must not fence the real leader off for good."""
    term = served.replica.view.term
    lease = (await ok(served, "/v3/lease/grant", {"TTL": 1}))["ID"]
    await put(served, "ephemeral", "x", lease=lease)
    status, out = await call(
        served,
        "/v3/kv/put",
        {"key": b64("k"), "value": b64("v")},
        headers={"X-Raftkube-Term": str(term + 1_000_000)},
    )
    # Refusing a term from the future is one acceptable answer, accepting it the other;
    # either way the leader's own expiry must still get through.
    assert status in (200, 400), out
    deadline = time.monotonic() + 20  # TTL 2 s, expiry checked every 0.1 s; slack
    while time.monotonic() < deadline:
        got = await ok(served, "/v3/kv/range", {"key": b64("ephemeral")})
        if "kvs" not in got:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(
        "the lease never expired: the leader's expiry, stamped with its "
        f"real term {term}, is refused after a client wrote with term "
        f"{term + 1_000_000}"
    )


# ---- compaction and fencing -----------------------------------------------------------------


async def test_compaction_makes_old_revisions_unreadable(served: Any) -> None:
    revs = [rev(await put(served, "hist", f"v{i}")) for i in range(4)]
    compacted = await ok(served, "/v3/kv/compaction", {"revision": revs[2]})
    assert_header(served, compacted)

    status, out = await call(served, "/v3/kv/range", {"key": b64("hist"), "revision": revs[1]})
    assert status == 400
    assert out["message"] == "mvcc: required revision has been compacted"
    at_point = await ok(served, "/v3/kv/range", {"key": b64("hist"), "revision": revs[2]})
    assert unb64(at_point["kvs"][0]["value"]) == b"v2"
    latest = await ok(served, "/v3/kv/range", {"key": b64("hist")})
    assert unb64(latest["kvs"][0]["value"]) == b"v3"

    status, out = await call(served, "/v3/kv/compaction", {"revision": revs[1]})
    assert status == 400
    assert out["message"] == "mvcc: required revision has been compacted"


async def test_write_stamped_with_a_term_is_fenced(served: Any) -> None:
    """One member never sees a leader change, so a *stale* term cannot happen here (the
    cluster tier kills a leader for that); a term from the future is refused, since it
    would fence off every real leader's writes, and the current term is accepted."""
    term = served.replica.view.term
    await put(served, "fenced", "mine", headers={"X-Raftkube-Term": str(term)})
    before = fingerprint(served)

    for path, body in [
        ("/v3/kv/put", {"key": b64("fenced"), "value": b64("late")}),
        ("/v3/kv/deleterange", {"key": b64("fenced")}),
        ("/v3/kv/txn", {"success": [put_op("fenced", "late")]}),
    ]:
        status, out = await call(served, path, body,
                                 headers={"X-Raftkube-Term": str(term + 4)})
        assert status == 400, (path, out)
        assert "X-Raftkube-Term" in out["message"] and "newer" in out["message"], out
        assert fingerprint(served) == before

    same = await put(served, "fenced", "again", headers={"X-Raftkube-Term": str(term)})
    assert rev(same) == before[0] + 1
    unstamped = await put(served, "fenced", "plain")
    assert rev(unstamped) == before[0] + 2
    # The stale case, through the replica: a command stamped below the newest term seen.
    result = await served.replica.propose("put", {"key": b"fenced", "value": b"x"}, term=term)
    assert "error" not in result
    served.replica.state.max_term = term + 1  # as if a newer leader had written
    result = await served.replica.propose("put", {"key": b"fenced", "value": b"x"}, term=term)
    assert "stale term" in result["error"]


# ---- watch ----------------------------------------------------------------------------------


async def next_message(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    async with asyncio.timeout(5):
        line = await resp.content.readline()
    assert line, "the watch stream ended"
    msg: dict[str, Any] = json.loads(line)["result"]
    return msg


async def next_events(resp: aiohttp.ClientResponse, n: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < n:
        msg = await next_message(resp)
        assert not msg.get("canceled"), msg
        events.extend(msg.get("events", []))
    assert len(events) == n, events
    return events


def watch(served: Any, **create: Any) -> Any:
    return served.client.post("/v3/watch", json={"create_request": create}, headers=served.auth)


async def test_watch_streams_events_in_revision_order(served: Any) -> None:
    await put(served, "w/before", "old")
    prefix = {"key": b64("w/"), "range_end": b64("w0")}
    async with watch(served, **prefix, prev_kv=True) as resp:
        assert resp.status == 200
        created = await next_message(resp)
        assert created["created"] is True
        assert_header(served, created)

        one = await put(served, "w/a", "1")
        await put(served, "elsewhere", "ignored")
        two = await put(served, "w/b", "2")
        three = await put(served, "w/a", "3")
        events = await next_events(resp, 3)
        assert [(unb64(e["kv"]["key"]), e["kv"]["mod_revision"]) for e in events] == [
            (b"w/a", str(rev(one))),
            (b"w/b", str(rev(two))),
            (b"w/a", str(rev(three))),
        ]
        assert all("type" not in e for e in events)  # PUT is the zero value
        assert "prev_kv" not in events[0]
        assert unb64(events[2]["prev_kv"]["value"]) == b"1"

        both = await ok(served, "/v3/kv/txn", {"success": [put_op("w/c"), put_op("w/d")]})
        msg = await next_message(resp)  # one revision, one message
        assert [e["kv"]["mod_revision"] for e in msg["events"]] == [str(rev(both))] * 2
        assert msg["header"]["revision"] == str(rev(both))

        gone = await ok(served, "/v3/kv/deleterange", {"key": b64("w/a")})
        (deleted,) = await next_events(resp, 1)
        assert deleted["type"] == "DELETE"
        assert deleted["kv"] == {"key": b64("w/a"), "mod_revision": str(rev(gone))}
        assert unb64(deleted["prev_kv"]["value"]) == b"3"


async def test_watch_filters_drop_event_types(served: Any) -> None:
    async with watch(served, key=b64("f/"), range_end=b64("f0"), filters=["NOPUT"]) as resp:
        await next_message(resp)
        await put(served, "f/a", "1")
        gone = await ok(served, "/v3/kv/deleterange", {"key": b64("f/a")})
        (only,) = await next_events(resp, 1)
        assert only["type"] == "DELETE" and only["kv"]["mod_revision"] == str(rev(gone))
    async with watch(served, key=b64("f/"), range_end=b64("f0"), filters=[1]) as resp:
        await next_message(resp)  # NODELETE, given as its number
        await ok(served, "/v3/kv/deleterange", {"key": b64("f/none")})  # deletes nothing
        later = await put(served, "f/b", "2")
        await ok(served, "/v3/kv/deleterange", {"key": b64("f/b")})
        last = await put(served, "f/c", "3")
        events = await next_events(resp, 2)
        assert [e["kv"]["mod_revision"] for e in events] == [str(rev(later)), str(rev(last))]
        assert all("type" not in e for e in events)


async def test_watch_progress_notify_sends_the_current_revision(served: Any) -> None:
    async with watch(served, key=b64("p/"), range_end=b64("p0"), progress_notify=True) as resp:
        await next_message(resp)
        elsewhere = await put(served, "q/other", "x")  # moves the revision, not the watch
        while True:
            msg = await next_message(resp)  # a bookmark within the progress interval
            assert "events" not in msg
            if msg["header"]["revision"] == str(rev(elsewhere)):
                break
    async with watch(served, key=b64("p/"), range_end=b64("p0")) as resp:
        await next_message(resp)
        with pytest.raises(TimeoutError):  # without progress_notify: silence
            async with asyncio.timeout(1.0):
                await resp.content.readline()


async def test_watch_from_start_revision_replays_history(served: Any) -> None:
    first = await put(served, "r/x", "1")
    second = await put(served, "r/y", "2")
    await put(served, "r/x", "3")
    async with watch(
        served,
        key=b64("r/"),
        range_end=b64("r0"),
        start_revision=str(rev(second)),
        filters=["NODELETE"],
    ) as resp:
        assert (await next_message(resp))["created"] is True
        replayed = await next_events(resp, 2)
        assert [(unb64(e["kv"]["key"]), unb64(e["kv"]["value"])) for e in replayed] == [
            (b"r/y", b"2"),
            (b"r/x", b"3"),
        ]
        assert int(replayed[0]["kv"]["mod_revision"]) == rev(second) > rev(first)
        await ok(served, "/v3/kv/deleterange", {"key": b64("r/x")})  # filtered out
        live = await put(served, "r/z", "4")
        (event,) = await next_events(resp, 1)
        assert event["kv"]["mod_revision"] == str(rev(live))


async def test_watch_from_a_compacted_revision_is_cancelled(served: Any) -> None:
    revs = [rev(await put(served, "c/k", f"v{i}")) for i in range(3)]
    await ok(served, "/v3/kv/compaction", {"revision": revs[2]})
    async with watch(served, key=b64("c/k"), start_revision=revs[0]) as resp:
        assert resp.status == 200
        msg = await next_message(resp)
        assert msg["canceled"] is True
        assert msg["compact_revision"] == str(revs[2])
        assert "compacted" in msg["cancel_reason"]
        async with asyncio.timeout(5):
            assert await resp.content.readline() == b""  # the stream ends


# ---- health, metrics, maintenance -----------------------------------------------------------


@pytest.mark.parametrize(("path", "method"), [
    ("/v3/kv/range", "POST"), ("/v3/maintenance/status", "POST"), ("/readyz", "GET"),
    ("/metrics", "GET")])
async def test_a_node_token_is_not_the_admins(served: Any, path: str, method: str) -> None:
    """One authentication for every path: a node's token is known (so not 401) but the
    store, readiness and metrics are the admin's (403, in etcd's shape); /healthz needs no
    token, and the Kubernetes-style API takes the node's."""
    node = {"Authorization": "Bearer " + NODE_TOKEN}
    body = {"key": b64("k")} if path == "/v3/kv/range" else None
    status, out = await call(served, path, body, method=method, headers=node, auth=False)
    assert status == 403, out
    assert out == {"error": "etcdserver: permission denied",
                   "message": "etcdserver: permission denied", "code": 7}
    assert (await call(served, path, body, method=method))[0] == 200
    assert (await call(served, "/healthz", method="GET", headers=node, auth=False))[0] == 200
    assert (await call(served, "/api/v1/namespaces/default/pods", method="GET", headers=node,
                       auth=False))[0] == 200


async def test_health_readiness_and_membership(served: Any) -> None:
    status, text = await call(served, "/healthz", method="GET", auth=False)
    assert status == 200 and text.strip() == "ok"
    status, _ = await call(served, "/readyz", method="GET", auth=False)
    assert status == 401
    status, text = await call(served, "/readyz", method="GET")
    assert status == 200 and text.strip() == "ok"

    r = served.replica
    deadline = time.monotonic() + 5
    while True:  # the member registers itself through Raft shortly after it leads
        members = (await ok(served, "/v3/cluster/member/list", {}))["members"]
        if members[0]["name"] == "m1" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert members == [
        {
            "ID": str(r.member_id),
            "name": "m1",
            "peerURLs": [f"http://{r.raft_addr}"],
            "clientURLs": ["http://x"],
        }
    ]
    status_out = await ok(served, "/v3/maintenance/status", {})
    assert status_out["leader"] == str(r.member_id)
    assert int(status_out["raftTerm"]) == r.view.term
    assert_header(served, status_out)


async def test_metrics(served: Any) -> None:
    await put(served, "m", "1")
    await call(served, "/v3/kv/put", GOOD_PUT, auth=False)
    status, text = await call(served, "/metrics", method="GET")
    assert status == 200
    assert f"raftkube_raft_term {float(served.replica.view.term)}" in text
    assert "raftkube_raft_is_leader 1.0" in text
    assert 'raftkube_http_requests_total{code="200",method="POST",route="/v3/kv/put"}' in text
    assert 'raftkube_http_requests_total{code="401",method="POST",route="/v3/kv/put"}' in text
    assert served.replica.ticks.count > 0
    for le in ("0.01", "0.25", "+Inf"):
        assert f'raftkube_raft_tick_seconds_bucket{{le="{le}"}} ' in text
    status, _ = await call(served, "/metrics", method="GET", auth=False)
    assert status == 401


async def test_metrics_count_not_found_as_404(served: Any) -> None:
    status, _ = await call(served, "/v3/nope", {})
    assert status == 404
    _, text = await call(served, "/metrics", method="GET")
    counted = [
        line
        for line in text.splitlines()
        if line.startswith("raftkube_http_requests_total{") and "unmatched" in line
    ]
    assert counted == [
        'raftkube_http_requests_total{code="404",method="POST",route="unmatched"} 1.0'
    ], counted


async def test_snapshot_is_state_plus_sha256(served: Any) -> None:
    await put(served, "snap/1", "a")
    last = await put(served, "snap/2", "b")
    async with served.client.post("/v3/maintenance/snapshot", headers=served.auth) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/octet-stream"
        blob = await resp.read()
    body, digest = blob[:-32], blob[-32:]
    assert hashlib.sha256(body).digest() == digest
    restored = st.State.load(body)
    assert restored.revision == rev(last)
    assert restored.kvs[b"snap/2"].value == b"b"


async def test_a_malformed_command_in_the_log_does_not_stop_applying(served: Any) -> None:
    """A command whose seq is not a number gets an error value in the state machine; the
    replica's apply hook must not raise on it either (pysyncobj retries a raising apply
    for ever: bug 3)."""
    before = served.replica.applied_total
    served.replica.node.submit(st.encode_command(
        {"op": "put", "req": {"key": b"k", "value": b"v"}, "cid": "x", "seq": "x"}))
    await asyncio.wait_for(_applied_past(served, before), 5)
    put = await ok(served, "/v3/kv/put", {"key": b64("after"), "value": b64("1")})
    assert int(put["header"]["revision"]) >= 1


async def _applied_past(served: Any, count: int) -> None:
    while served.replica.applied_total <= count:
        await asyncio.sleep(0.01)


def test_a_lost_snapshot_writer_is_a_failed_dump(tmp_path: Any) -> None:
    writer = disk.SnapshotWriter(str(tmp_path))
    writer.pid = os.getpid()  # not our child: waitpid raises, as for a reaped child
    assert writer.check() == SERIALIZER_STATE.FAILED
    assert writer.pid == 0
    assert writer.check() == SERIALIZER_STATE.NOT_SERIALIZING
