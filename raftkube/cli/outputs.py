"""kubectl's `-o` formats beyond tables: reading the flag, custom columns and `--sort-by`.

`parse(spec)` turns `-o wide|yaml|json|name|jsonpath=...|jsonpath-file=...|
jsonpath-as-json=...|custom-columns=...|custom-columns-file=...` into an `Output`, or a
ClientError in kubectl's words before anything is asked of the server. Custom columns and
`--sort-by` read objects through kubectl's relaxed paths (`.a.b`, `a.b`, `{.a.b}`) and
sort as kubectl's sorter does: numbers as numbers, timestamps as times, quantities as
amounts, other strings in natural order, objects without the field first. Pure: files
are read by the caller-supplied `read`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from raftkube.api import printers, quantity
from raftkube.cli import jsonpath
from raftkube.client import errors

Obj = dict[str, Any]
ALLOWED = ("custom-columns", "custom-columns-file", "json", "jsonpath", "jsonpath-as-json",
           "jsonpath-file", "name", "wide", "yaml")


@dataclass(frozen=True)
class Output:
    format: str  # table, wide, yaml, json, name, jsonpath, custom-columns
    template: jsonpath.Template | None = None  # jsonpath
    as_json: bool = False  # jsonpath-as-json
    columns: tuple[tuple[str, jsonpath.Template], ...] = field(default=())


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise errors.ClientError(f"error reading template {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise errors.ClientError(f"error reading template {path}: not UTF-8 text "
                                 f"(byte {e.start})") from None


def parse(spec: str | None, *, read: Callable[[str], str] = _read_file) -> Output:
    if not spec:
        return Output("table")
    name, eq, arg = spec.partition("=")
    if spec in ("wide", "yaml", "json", "name"):
        return Output(spec)
    try:
        if name in ("jsonpath", "jsonpath-file", "jsonpath-as-json") and eq:
            text = read(arg) if name == "jsonpath-file" else arg
            if not text:
                raise errors.ClientError("template format specified but no template given")
            return Output("jsonpath", jsonpath.parse(text), as_json=name == "jsonpath-as-json")
        if name in ("custom-columns", "custom-columns-file") and eq:
            if name == "custom-columns-file":
                return Output("custom-columns", columns=_columns_file(read(arg)))
            return Output("custom-columns", columns=_columns(arg))
    except jsonpath.JsonPathError as e:
        raise errors.ClientError(str(e)) from None
    raise errors.ClientError(f'unable to match a printer suitable for the output format '
                             f'"{spec}", allowed formats are: {",".join(ALLOWED)}')


def _columns(spec: str) -> tuple[tuple[str, jsonpath.Template], ...]:
    if not spec:
        raise errors.ClientError("custom-columns format specified but no custom columns "
                                 "given")
    out = []
    for part in spec.split(","):
        header, colon, path = part.partition(":")
        if not colon or not header:
            raise errors.ClientError(f"unexpected custom-columns spec: {part}, expected "
                                     "<header>:<json-path-expr>")
        out.append((header, jsonpath.parse(jsonpath.relaxed(path))))
    return tuple(out)


def _columns_file(text: str) -> tuple[tuple[str, jsonpath.Template], ...]:
    """kubectl's file: a line of headers, then a line of paths, whitespace-separated."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if len(lines) != 2:
        raise errors.ClientError("custom-columns-file must have exactly two lines: the "
                                 f"headers and their paths (it has {len(lines)})")
    headers, paths = lines
    if len(headers) != len(paths):
        raise errors.ClientError(f"expected {len(headers)} columns, got {len(paths)}: "
                                 "each header needs a path in custom-columns-file")
    return tuple((h, jsonpath.parse(jsonpath.relaxed(p))) for h, p in zip(headers, paths,
                                                                          strict=True))


def go_value(value: Any) -> str:
    """A value as Go's `%v` prints it, which is what a custom column shows."""
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if value is None:
        return "<nil>"
    return jsonpath.text_of(value)


def custom_rows(output: Output, objs: Sequence[Obj], *, headers: bool = True
                ) -> list[list[str]]:
    rows = [[h for h, _ in output.columns]] if headers else []
    for obj in objs:
        row = []
        for _, template in output.columns:
            try:
                found = [v for values in template.results(obj) for v in values]
            except jsonpath.JsonPathError as e:
                raise errors.ClientError(str(e)) from None
            row.append(",".join(go_value(v) for v in found) if found else "<none>")
        rows.append(row)
    return rows


def render_jsonpath(output: Output, doc: Obj) -> str:
    assert output.template is not None
    try:
        if output.as_json:
            found = [v for values in output.template.results(doc) for v in values]
            return json.dumps(found, indent=4, ensure_ascii=False) + "\n"
        return output.template.render(doc)
    except jsonpath.JsonPathError as e:
        raise errors.ClientError(str(e)) from None


# ---- --sort-by -----------------------------------------------------------------------------


def sort_template(expression: str) -> jsonpath.Template:
    try:
        return jsonpath.parse(jsonpath.relaxed(expression))
    except jsonpath.JsonPathError as e:
        raise errors.ClientError(str(e)) from None


def sort_objects(objs: Sequence[Obj], expression: str) -> list[Obj]:
    """`objs` in kubectl's `--sort-by` order; a path no object has is an error, as in
    kubectl (one missing on some objects puts those first)."""
    template = sort_template(expression)
    if not objs:
        return []
    keys: list[Any] = []
    for obj in objs:
        try:
            found = [v for values in template.results(obj) for v in values]
        except jsonpath.JsonPathError as e:
            raise errors.ClientError(str(e)) from None
        keys.append(found[0] if found else _MISSING)
    if all(k is _MISSING for k in keys):
        raise errors.ClientError(f'couldn\'t find any field with path "{template.source}" '
                                 "in the list of objects")
    def by_key(i: int, j: int) -> int:
        return _compare(keys[i], keys[j])

    order = sorted(range(len(objs)), key=functools.cmp_to_key(by_key))
    return [objs[i] for i in order]


_MISSING = object()


def _compare(a: Any, b: Any) -> int:
    if a is _MISSING or b is _MISSING:
        return (b is _MISSING) - (a is _MISSING)
    if _number(a) and _number(b):
        return int(a > b) - int(a < b)
    if isinstance(a, str) and isinstance(b, str):
        ta, tb = _time(a), _time(b)
        if ta is not None and tb is not None:
            return (ta > tb) - (ta < tb)
        qa, qb = _quantity(a), _quantity(b)
        if qa is not None and qb is not None:
            return int(qa > qb) - int(qa < qb)
        return _natural(a, b)
    if isinstance(a, bool) and isinstance(b, bool):
        return int(a) - int(b)
    return _natural(go_value(a), go_value(b))


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _time(text: str) -> datetime | None:
    return printers.parse_time(text) if "T" in text else None


def _quantity(text: str) -> Any:
    try:
        return quantity.parse_quantity(text)
    except quantity.QuantityError:
        return None


_CHUNKS = re.compile(r"(\d+)")


def _natural(a: str, b: str) -> int:
    """Natural order: `web-2` before `web-10`."""
    ka = [(0, int(c), "") if c.isdigit() else (1, 0, c) for c in _CHUNKS.split(a) if c]
    kb = [(0, int(c), "") if c.isdigit() else (1, 0, c) for c in _CHUNKS.split(b) if c]
    return (ka > kb) - (ka < kb)
