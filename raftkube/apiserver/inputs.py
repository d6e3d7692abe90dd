"""What a request sends, read one way for both APIs: its body and its integers.

A body is refused as soon as it is known to be too big: on its Content-Length when it has
one, and on the bytes actually read when it is chunked (nothing past the limit is kept);
and when it has not all arrived within `BODY_DEADLINE` (408).
JSON bodies are parsed, then measured (`nesting`): how deep they nest (the parser's own
RecursionError on a very deep body is the same refusal) and how many values they hold.
YAML bodies (REST only) are one document, composed and measured by `yamltext` before
any value is built: their depth, their node count and what their aliases expand to are
bounded. The work on a YAML body, or on a big JSON one, is done on a worker thread of
its own, so that a slow (pure-Python) parse or walk never holds the event loop, and only
one runs at a time.

Every refusal is a `BadInput` with the HTTP status to answer and a message that names
what was wrong; each API renders it in its own error shape (etcd's grpc-gateway body,
Kubernetes' Status). What an empty body means is each API's own: etcd's gateway reads it
as an empty message, REST as no body at all.

Integers sent as text (etcd's int64 fields, query parameters, headers) are read strictly:
ASCII digits with an optional leading '-', within int64, and nothing else (no spaces, no
'+', no '_', no other scripts' digits, all of which Python's `int()` accepts).
"""

from __future__ import annotations

import asyncio
import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from raftkube.api import nesting, yamltext

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml")
# Nodes a YAML body may compose to. PyYAML composes some 30,000 nodes a second on this
# kind of machine, idle (pure Python: its C parser recurses without a bound and so cannot
# take hostile input), and keeps about 1 KB a node: this bounds one body to a third of a
# second of one core (more when the machine is busy; it runs on the worker, not the
# event loop) and some 10 MB, and it is still a hundred times a big manifest (a
# Deployment is ~60 nodes, a ConfigMap of 1,000 keys 2,000; kubectl sends JSON anyway).
MAX_YAML_NODES = 10_000
# Values (containers and scalars) a JSON body may hold. Parsing one costs the
# interpreter, held, some 0.2 µs, and what the API server does with an object after
# (defaults on a copy, validation, the schema walk, encoding) some 5 µs and 300 bytes: a
# node's 3 MiB Event of a million empty lists once took 5 s and 356 MB, and held the
# Raft tick thread long enough for elections. A big Kubernetes object holds a few
# thousand values (a ConfigMap's data are a few strings, a txn of 128 ops ~1,500): this
# is a hundred times that, and about half a second at worst, mostly off the event loop.
MAX_JSON_VALUES = 100_000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_INT = re.compile(r"-?[0-9]+")  # [0-9], not \d: \d matches every script's digits
# The structure outside strings is counted a slice at a time: a slice's split holds at
# most this many parts (some 2 MB for a slice of quotes), and the GIL is free in between.
COUNT_SLICE = 64 * 1024
# JSON bodies up to this size are parsed on the event loop (a few ms at most); bigger
# ones on the worker, where measuring their depth does not hold the loop (json.loads,
# being C, holds the interpreter wherever it runs: some 0.15 s a MiB at worst).
INLINE_JSON_BYTES = 64 * 1024
# Seconds a request's body may take to arrive, all of it: 3 MiB (the largest body) at
# 50 KiB/s. Without it a client trickling a body held its connection, the bytes read so
# far and a handler for as long as it liked. Kubernetes' API server gives a whole
# request 60 s. Once refused, aiohttp reads and drops what is still coming for at most
# its `lingering_time` (10 s), then closes the connection.
BODY_DEADLINE = 60.0
# One worker: YAML bodies and big JSON ones are parsed one at a time, off the event loop.
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="body-parser")


class BadInput(Exception):
    """A request refused for what it sent: `status` (400, 413) and a message naming it."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class TooLarge(BadInput):
    def __init__(self, limit: int) -> None:
        super().__init__(f"body: larger than the limit of {limit} bytes", status=413)
        self.limit = limit


class TooSlow(BadInput):
    def __init__(self, deadline: float) -> None:
        super().__init__(f"body: not received within {deadline:g} seconds; send it faster, "
                         "or in smaller requests", status=408)
        self.deadline = deadline


async def read_body(request: web.Request, *, limit: int) -> bytes:
    """The raw body, refused (TooLarge) as soon as it is known to exceed `limit`, and
    (TooSlow) when it has not all come within `BODY_DEADLINE` seconds."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    deadline = BODY_DEADLINE
    try:
        # One deadline for the whole body, not one per read: a client that sends a byte
        # now and then would pass any per-read timeout.
        async with asyncio.timeout(deadline):
            while chunk := await request.content.readany():
                size += len(chunk)
                if size > limit:
                    raise TooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise TooSlow(deadline) from None
    return b"".join(chunks)


async def read_json(request: web.Request, *, limit: int, empty: Any) -> Any:
    """A JSON body; `empty` when the body is empty or blank."""
    raw = await read_body(request, limit=limit)
    return await _parse_json(raw) if raw.strip() else empty


async def read_document(request: web.Request, *, limit: int) -> Any:
    """A JSON body, or one YAML document when the Content-Type says YAML; None when the
    body is empty or blank."""
    raw = await read_body(request, limit=limit)
    if not raw.strip():
        return None
    if request.content_type in YAML_TYPES:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_worker, parse_yaml, raw, limit)
    return await _parse_json(raw)


async def _parse_json(raw: bytes) -> Any:
    if len(raw) <= INLINE_JSON_BYTES:
        return parse_json(raw)
    return await asyncio.get_running_loop().run_in_executor(_worker, parse_json, raw)


def parse_json(raw: bytes) -> Any:
    if len(raw) > 2 * MAX_JSON_VALUES:
        # json.loads is C and holds the interpreter until it is done (a dense 3 MiB body:
        # half a second, longer than an election timeout), so a body that must hold too
        # many values is refused before it is parsed. Outside strings, every ',', '[' and
        # '{' stands for a distinct value (a container, or the value after a comma), so
        # more than twice the bound of them means more values than the bound.
        if structure_outside_strings(raw) > 2 * MAX_JSON_VALUES:
            raise _too_many()
    try:
        value = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadInput(f"body: not valid JSON: {e}") from None
    shape = nesting.shape(value, max_values=MAX_JSON_VALUES)
    if shape.depth > nesting.MAX_DEPTH:
        raise _too_deep()
    if shape.values > MAX_JSON_VALUES:
        raise _too_many()
    return value


def structure_outside_strings(raw: bytes) -> int:
    """How many ',', '[' and '{' of a JSON text lie outside its strings, in one pass.

    A regular expression for a JSON string (an opening quote, then characters and
    escapes up to the closing quote) is tried again from every quote that does not end
    one, to the end of the text: 300 KB of `\\"` pinned the process for minutes. Here
    escapes go first (`\\\\`, then `\\"`: pairs from the left, as a JSON reader takes
    them), after which every quote left opens or closes a string, so the text between
    quotes is alternately outside and inside one. Linear, done by bytes methods in C,
    and a slice at a time, so memory stays bounded whatever the text. Text that is not
    JSON is counted exactly up to where the parser refuses it, which is all that the
    parser would walk.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = True  # whether the text before the slice ends outside a string
    count = 0
    for start in range(0, len(raw), COUNT_SLICE):
        parts = raw[start:start + COUNT_SLICE].split(b'"')
        text = b"".join(parts[0::2] if outside else parts[1::2])
        count += text.count(b",") + text.count(b"[") + text.count(b"{")
        if len(parts) % 2 == 0:  # an odd number of quotes in the slice
            outside = not outside
    return count


def parse_yaml(raw: bytes, max_expanded: int) -> Any:
    """One YAML document, which may stand for at most `max_expanded` bytes of JSON (what
    a JSON body may be: aliases never make a body bigger than one that spells it out)."""
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise BadInput(f"body: not valid UTF-8: {e}") from None
    try:
        docs = list(yamltext.load_all(text, max_expanded=max_expanded,
                                      max_nodes=MAX_YAML_NODES))
    except yamltext.TooComplex as e:
        raise BadInput(f"body: refused: {yamltext.problem(e)}") from None
    except yamltext.YAMLError as e:
        raise BadInput(f"body: not valid YAML: {yamltext.problem(e)}") from None
    if len(docs) != 1:
        raise BadInput(f"body: must be one YAML document, got {len(docs)}")
    return docs[0]


def _too_many() -> BadInput:
    return BadInput(f"body: more than {MAX_JSON_VALUES} values")


def _too_deep() -> BadInput:
    return BadInput(f"body: nested deeper than {nesting.MAX_DEPTH} levels")


def int64(text: str) -> int:
    """A decimal int64 written strictly; a ValueError that says what is wrong otherwise,
    worded to follow the name of the field or parameter."""
    if not _INT.fullmatch(text):
        raise ValueError(f"expected an integer, got {_quote(text)}")
    # Leading zeros aside, more than 19 digits is out of range: checked before int(),
    # which would spend time on (or refuse) thousands of digits.
    if len(text.lstrip("-").lstrip("0")) > 19 or not INT64_MIN <= int(text) <= INT64_MAX:
        raise ValueError(f"out of the int64 range: {_quote(text)}")
    return int(text)


def _quote(text: str) -> str:
    """A value to show in an error: never all of a long one."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + f"... ({len(text)} chars)"
