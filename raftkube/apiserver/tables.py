"""Server-side printing: which clients asked for a Table, and the Table they get.

kubectl asks for `application/json;as=Table;v=v1;g=meta.k8s.io` (then v1beta1, then plain
JSON) on every `get`, and prints the columns the server sends; a server that answers a
plain list gets only NAME and AGE. The columns are `api.printers`', the same `rk get`
prints. A GET of one object, a list and a watch (every event's object a one-row Table)
can be answered with a Table; `includeObject` says what each row carries (None, the
object's metadata, the default, or all of it).

Kubernetes sends a watch's column definitions in its first event only. Here every event
carries them: a revision's bytes are made once and shared by every watcher of the same
stream (`fanout`), whatever each has sent before, and clients read repeated definitions
as the same columns (kubectl 1.30 and 1.32 `get -w` print one header).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from raftkube.api import kinds, printers
from raftkube.apiserver import status as stt


@dataclass(frozen=True)
class Wanted:
    version: str  # meta.k8s.io version of the Table: v1 or v1beta1
    include: str  # printers.INCLUDE_OBJECT


def _media(entry: str) -> tuple[str, dict[str, str]]:
    kind, *params = [p.strip() for p in entry.split(";")]
    out = {}
    for p in params:
        key, _, value = p.partition("=")
        out[key.strip().lower()] = value.strip()
    return kind.lower(), out


def wanted(accept: str, query: Any) -> Wanted | None:
    """The Table the Accept header asks for, or None for the object's own JSON: the first
    acceptable entry wins, in the client's order (quality values are not weighed, as
    clients that ask for Tables list them in the order they prefer)."""
    for entry in accept.split(","):
        if not entry.strip():
            continue
        media, params = _media(entry)
        if media not in ("application/json", "*/*", "application/*"):
            continue
        if params.get("as") != "Table":
            if "as" in params:
                continue  # another conversion (PartialObjectMetadata...): not served
            return None
        if params.get("g") == "meta.k8s.io" and params.get("v") in printers.TABLE_VERSIONS:
            return Wanted(params["v"], include_object(query))
    return None


def include_object(query: Any) -> str:
    value = query.get("includeObject") or "Metadata"
    if value not in printers.INCLUDE_OBJECT:
        raise stt.bad_request(f'includeObject: Unsupported value: "{value}": supported '
                              'values: "None", "Metadata", "Object"')
    return str(value)


def now() -> datetime:
    return datetime.now(UTC)


def of_list(kind: kinds.Kind, items: list[dict[str, Any]], list_meta: dict[str, Any],
            w: Wanted) -> dict[str, Any]:
    return printers.table_object(kind, items, now=now(), version=w.version,
                                 include=w.include, list_meta=list_meta)


def of_object(kind: kinds.Kind, obj: dict[str, Any], w: Wanted) -> dict[str, Any]:
    meta = {"resourceVersion": (obj.get("metadata") or {}).get("resourceVersion", "")}
    return printers.table_object(kind, [obj], now=now(), version=w.version,
                                 include=w.include, list_meta=meta)


def watch_lines(kind: kinds.Kind, lines: bytes, w: Wanted) -> bytes:
    """A watch stream's lines with each event's object as a one-row Table. BOOKMARKs and
    ERRORs are left as they are, as Kubernetes does (they carry no object to print)."""
    out = []
    for line in lines.splitlines():
        if not line:
            continue
        event = json.loads(line)
        if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
            event["object"] = of_object(kind, event["object"], w)
        out.append(json.dumps(event).encode() + b"\n")
    return b"".join(out)
