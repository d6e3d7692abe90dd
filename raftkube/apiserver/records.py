"""How an object is kept in the store: its key, its bytes, and the txn parts of a write.

Every object lives at one key, `/registry/{group|core}/{plural}/[{namespace}/]{name}`,
as JSON without its resourceVersion, which is the key's mod_revision. The writers
(`objects`, `deletion`, `namespaces`) build their transactions from the pieces here, so
that what a compare or a put looks like, and how an object is encoded, is written once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raftkube.api import kinds, selectors

PREFIX = b"/registry/"
MAX_OBJECT_BYTES = 1_500_000
Obj = dict[str, Any]


def key_of(kind: kinds.Kind, namespace: str, name: str) -> bytes:
    return prefix_of(kind, namespace) + name.encode()


def prefix_of(kind: kinds.Kind, namespace: str | None) -> bytes:
    """The key prefix of a kind, in one namespace or (None) in all of them."""
    base = PREFIX + f"{kind.group or 'core'}/{kind.plural}/".encode()
    if kind.namespaced and namespace:
        return base + f"{namespace}/".encode()
    return base


@dataclass
class Stored:
    obj: Obj
    mod_revision: int
    create_revision: int
    lease: int = 0


def decode(kv: dict[str, Any]) -> Stored:
    obj = json.loads(kv["value"])
    obj.setdefault("metadata", {})["resourceVersion"] = str(kv["mod_revision"])
    return Stored(obj, kv["mod_revision"], kv["create_revision"], int(kv.get("lease") or 0))


def encode(obj: Obj) -> bytes:
    body = dict(obj)
    meta = dict(body.get("metadata") or {})
    meta.pop("resourceVersion", None)
    body["metadata"] = meta
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def could_match(value: bytes, fields: selectors.FieldSelector | None) -> bool:
    """False only when stored bytes cannot hold an object that `fields` selects.

    `encode` writes every string the same way (`json.dumps`' escapes, ASCII only), so an
    object whose field equals `X` holds the bytes of `X` as `encode` writes them (an int
    or a boolean field reads as its JSON text, which is the same). A list or watch with a
    field selector checks this before decoding: each of 1,000 node agents lists and
    watches `spec.nodeName=ITSELF`, and decoding every pod for each of them cost the
    masters more than everything else while nodes came up.
    """
    if fields is None:
        return True
    for _field, op, wanted in fields.requirements:
        if op == "=" and wanted and json.dumps(wanted)[1:-1].encode() not in value:
            return False
    return True


def name_key(kind: kinds.Kind, namespace: str | None,
             fields: selectors.FieldSelector | None) -> bytes | None:
    """The one key a list can hold when its field selector names the object
    (`metadata.name=X`, as every node agent watches its own Node), else None."""
    if fields is None or (kind.namespaced and not namespace):
        return None
    for field, op, wanted in fields.requirements:
        if field == "metadata.name" and op == "=" and wanted:
            return key_of(kind, namespace or "", wanted)
    return None


def without_rv(obj: Obj) -> Obj:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out


def same(a: Obj, b: Obj) -> bool:
    return encode(a) == encode(b)  # encode leaves the resourceVersion out


# ---- transaction parts -------------------------------------------------------------------


def compare(key: bytes, target: str, value: int) -> dict[str, Any]:
    """`key`'s CREATE/MOD revision or VERSION equals `value`."""
    field_name = {"CREATE": "create_revision", "MOD": "mod_revision", "VERSION": "version"}
    return {"key": key, "range_end": b"", "target": target, "result": "EQUAL",
            field_name[target]: value}


def exists(key: bytes) -> dict[str, Any]:
    return {"key": key, "range_end": b"", "target": "VERSION", "result": "GREATER",
            "version": 0}


def put(key: bytes, value: bytes, lease: int = 0) -> dict[str, Any]:
    return {"request_put": {"key": key, "value": value, "lease": lease}}


def delete(key: bytes, end: bytes = b"") -> dict[str, Any]:
    return {"request_delete_range": {"key": key, "range_end": end}}
