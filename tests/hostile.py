"""Hostile request bodies, shared by the unit and cluster tiers.

Each is small on the wire and enormous (or bottomless) once expanded or walked: YAML
alias bombs ("billion laughs", Kubernetes' CVE-2019-11253) and deeply nested JSON/YAML.
"""

from __future__ import annotations

import json
from typing import Any

EVENT_HEAD = """\
apiVersion: v1
kind: Event
metadata: {name: bomb, namespace: default}
involvedObject: {kind: Pod, name: p, namespace: default}
reason: Bomb
"""


def alias_bomb(aliases: int = 9, levels: int = 8, *, head: str = EVENT_HEAD) -> bytes:
    """An object whose `series` (free-form in an Event, so kept and stored as it is) holds
    `l{levels}`, which stands for aliases**(levels+1) strings: `l0` is a list of `aliases`
    strings, each next level a list of `aliases` aliases of the last."""
    lines = [head.rstrip("\n"), "series:", "  l0: &l0 [" + ", ".join(["lol"] * aliases) + "]"]
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * aliases) + "]")
    return ("\n".join(lines) + "\n").encode()


def merge_bomb(aliases: int = 9, levels: int = 8, *, head: str = EVENT_HEAD) -> bytes:
    """The same with mappings, the last pulled into `series` with a `<<` merge key."""
    keys = [f"k{j}" for j in range(aliases)]
    lines = [head.rstrip("\n"), "anchors:",
             "  m0: &m0 {" + ", ".join(f"{k}: lol" for k in keys) + "}"]
    for i in range(1, levels + 1):
        lines.append(f"  m{i}: &m{i} {{" + ", ".join(f"{k}: *m{i - 1}" for k in keys) + "}")
    lines.append(f"series:\n  <<: *m{levels}")
    return ("\n".join(lines) + "\n").encode()


def many(values: int) -> bytes:
    """A JSON list of `values` - 1 empty lists (`values` values, the list included): 3 bytes
    a value, the densest JSON there is but for numbers."""
    return b"[" + b",".join([b"[]"] * (values - 1)) + b"]"


def nested(levels: int) -> bytes:
    """`levels` lists inside each other, as JSON (and YAML flow) text."""
    return b"[" * levels + b"]" * levels


def with_field(obj: dict[str, Any], name: str, raw: bytes) -> bytes:
    """`obj` as JSON with one more field whose value is the raw JSON text `raw`."""
    text = json.dumps(obj).encode()
    return text[:-1] + b", " + json.dumps(name).encode() + b": " + raw + b"}"


def nested_txn(levels: int) -> dict[str, Any]:
    """An etcd txn whose success branch holds a txn, `levels` deep (3 JSON levels each)."""
    txn: dict[str, Any] = {"success": [{"request_range": {"key": "YQ=="}}]}
    for _ in range(levels):
        txn = {"success": [{"request_txn": txn}]}
    return txn
