"""etcd's v3 JSON gateway conventions, both ways, as pure functions.

Incoming: keys and values are base64, int64 fields may be JSON numbers or strings (of
ASCII digits and an optional '-' only, within int64: `inputs.int64`), enums may be names
or numbers. Every problem is reported as a `BadRequest` that names the field.
Outgoing: int64 as strings and zero values left out, as etcd's grpc-gateway prints them,
so that a client written against etcd reads our answers unchanged.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from raftkube.apiserver import inputs
from raftkube.store import state as st


class BadRequest(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field


COMPARE_RESULTS = ["EQUAL", "GREATER", "LESS", "NOT_EQUAL"]
COMPARE_TARGETS = ["VERSION", "CREATE", "MOD", "VALUE", "LEASE"]
SORT_ORDERS = ["NONE", "ASCEND", "DESCEND"]
SORT_TARGETS = ["KEY", "VERSION", "CREATE", "MOD", "VALUE"]
WATCH_FILTERS = ["NOPUT", "NODELETE"]


def obj(body: Any, field: str = "") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(field or "body", f"expected a JSON object, got {type(body).__name__}")
    return body


def b64(body: dict[str, Any], name: str, path: str) -> bytes:
    raw = body.get(name)
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise BadRequest(path + name, f"expected a base64 string, got {type(raw).__name__}")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(path + name, "not valid base64") from None


def int64(body: dict[str, Any], name: str, path: str, *, minimum: int | None = None,
          required: bool = False) -> int:
    raw = body.get(name)
    if raw is None:
        if required:
            raise BadRequest(path + name, "required")
        return 0
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise BadRequest(path + name, f"expected an integer, got {type(raw).__name__}")
    try:
        # A string strictly (etcd's gateway writes int64 as strings); a number in range.
        value = inputs.int64(raw) if isinstance(raw, str) else inputs.int64(str(raw))
    except ValueError as e:
        raise BadRequest(path + name, str(e)) from None
    if minimum is not None and value < minimum:
        raise BadRequest(path + name, f"must be at least {minimum}, got {value}")
    return value


def boolean(body: dict[str, Any], name: str, path: str) -> bool:
    raw = body.get(name)
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise BadRequest(path + name, f"expected true or false, got {raw!r}")
    return raw


def enum(body: dict[str, Any], name: str, path: str, names: list[str]) -> str:
    raw = body.get(name)
    if raw is None:
        return names[0]
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(names):
        return names[raw]
    if isinstance(raw, str) and raw in names:
        return raw
    raise BadRequest(path + name, f"expected one of {', '.join(names)}, got {raw!r}")


def range_request(body: Any, path: str = "") -> dict[str, Any]:
    body = obj(body, path.rstrip("."))
    return {
        "key": b64(body, "key", path),
        "range_end": b64(body, "range_end", path),
        "limit": int64(body, "limit", path, minimum=0),
        "revision": int64(body, "revision", path, minimum=0),
        "sort_order": enum(body, "sort_order", path, SORT_ORDERS),
        "sort_target": enum(body, "sort_target", path, SORT_TARGETS),
        "serializable": boolean(body, "serializable", path),
        "keys_only": boolean(body, "keys_only", path),
        "count_only": boolean(body, "count_only", path),
        "min_mod_revision": int64(body, "min_mod_revision", path, minimum=0),
        "max_mod_revision": int64(body, "max_mod_revision", path, minimum=0),
        "min_create_revision": int64(body, "min_create_revision", path, minimum=0),
        "max_create_revision": int64(body, "max_create_revision", path, minimum=0),
    }


def put_request(body: Any, path: str = "") -> dict[str, Any]:
    body = obj(body, path.rstrip("."))
    return {
        "key": b64(body, "key", path),
        "value": b64(body, "value", path),
        "lease": int64(body, "lease", path, minimum=0),
        "prev_kv": boolean(body, "prev_kv", path),
        "ignore_value": boolean(body, "ignore_value", path),
        "ignore_lease": boolean(body, "ignore_lease", path),
    }


def delete_request(body: Any, path: str = "") -> dict[str, Any]:
    body = obj(body, path.rstrip("."))
    return {
        "key": b64(body, "key", path),
        "range_end": b64(body, "range_end", path),
        "prev_kv": boolean(body, "prev_kv", path),
    }


def compare(body: Any, path: str) -> dict[str, Any]:
    body = obj(body, path.rstrip("."))
    target = enum(body, "target", path, COMPARE_TARGETS)
    out: dict[str, Any] = {
        "key": b64(body, "key", path),
        "range_end": b64(body, "range_end", path),
        "target": target,
        "result": enum(body, "result", path, COMPARE_RESULTS),
    }
    field = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
             "VALUE": "value", "LEASE": "lease"}[target]
    out[field] = b64(body, "value", path) if target == "VALUE" else int64(body, field, path)
    return out


def txn_request(body: Any, path: str = "") -> dict[str, Any]:
    body = obj(body, path.rstrip("."))
    out: dict[str, Any] = {}
    compares = listed(body, "compare", path)
    out["compare"] = [compare(c, f"{path}compare[{i}].") for i, c in enumerate(compares)]
    for branch in ("success", "failure"):
        ops = listed(body, branch, path)
        out[branch] = [request_op(op, f"{path}{branch}[{i}].") for i, op in enumerate(ops)]
    return out


def listed(body: dict[str, Any], name: str, path: str) -> list[Any]:
    raw = body.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise BadRequest(path + name, f"expected a list, got {type(raw).__name__}")
    return raw


def request_op(body: Any, path: str) -> dict[str, Any]:
    body = obj(body, path.rstrip("."))
    kinds = [k for k in ("request_range", "request_put", "request_delete_range", "request_txn")
             if k in body]
    if len(kinds) != 1:
        raise BadRequest(path.rstrip("."), "needs exactly one of request_range, request_put, "
                                           "request_delete_range, request_txn")
    kind = kinds[0]
    parse = {"request_range": range_request, "request_put": put_request,
             "request_delete_range": delete_request, "request_txn": txn_request}[kind]
    return {kind: parse(body[kind], f"{path}{kind}.")}


# ---- outgoing ---------------------------------------------------------------------------


def enc(b: bytes) -> str:
    return base64.b64encode(b).decode()


def kv_json(kv: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"key": enc(kv["key"])}
    for name in ("create_revision", "mod_revision", "version", "lease"):
        if kv[name]:
            out[name] = str(kv[name])
    if kv["value"]:
        out["value"] = enc(kv["value"])
    return out


def header(*, cluster_id: int, member_id: int, revision: int, raft_term: int) -> dict[str, str]:
    return {
        "cluster_id": str(cluster_id),
        "member_id": str(member_id),
        "revision": str(revision),
        "raft_term": str(raft_term),
    }


def range_json(r: st.Result) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.get("kvs"):
        out["kvs"] = [kv_json(kv) for kv in r["kvs"]]
    if r.get("more"):
        out["more"] = True
    if r.get("count"):
        out["count"] = str(r["count"])
    return out


def put_json(r: st.Result) -> dict[str, Any]:
    return {"prev_kv": kv_json(r["prev_kv"])} if r.get("prev_kv") else {}


def delete_json(r: st.Result) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.get("deleted"):
        out["deleted"] = str(r["deleted"])
    if r.get("prev_kvs"):
        out["prev_kvs"] = [kv_json(kv) for kv in r["prev_kvs"]]
    return out


def txn_json(r: st.Result, hdr: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if r.get("succeeded"):
        out["succeeded"] = True
    responses = []
    for item in r.get("responses", []):
        if "response_range" in item:
            responses.append({"response_range": {"header": hdr,
                                                 **range_json(item["response_range"])}})
        elif "response_put" in item:
            responses.append({"response_put": {"header": hdr, **put_json(item["response_put"])}})
        elif "response_delete_range" in item:
            responses.append({"response_delete_range": {
                "header": hdr, **delete_json(item["response_delete_range"])}})
        else:
            responses.append({"response_txn": {"header": hdr,
                                               **txn_json(item["response_txn"], hdr)}})
    if responses:
        out["responses"] = responses
    return out


def event_json(ev: st.Event, *, prev_kv: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"kv": kv_json(ev.kv._asdict())}
    if ev.type == st.DELETE:
        out["type"] = "DELETE"
    if prev_kv and ev.prev_kv is not None:
        out["prev_kv"] = kv_json(ev.prev_kv._asdict())
    return out
