"""JSON patch (RFC 6902): a list of operations applied to a JSON document, in order.

`add`, `remove`, `replace`, `move`, `copy` and `test`, each at a JSON pointer (RFC 6901:
`/spec/containers/0/image`, `~1` for '/', `~0` for '~', `-` for the end of a list).
The patch is applied to a copy, all or nothing: the first operation that cannot be
applied stops it and nothing is written. Two kinds of failure, told apart as Kubernetes
does: a patch that is not a well-formed list of operations (`Malformed`, 400), and one
that is well formed but does not apply to this document (`NotApplicable`, 422: a path
that is not there, a `test` whose value differs). A third, `TooLarge` (413), bounds the
work a small patch can ask for: at most `MAX_OPERATIONS` operations (Kubernetes'
maxJSONPatchOperations), and at most `MAX_COPIED_VALUES` values copied by all its `copy`
operations together, each source measured before it is copied: without that, a few
dozen `copy` operations that each double the document would take gigabytes.
"""

from __future__ import annotations

import copy
from typing import Any

from raftkube.api import merge, nesting

OPS = ("add", "remove", "replace", "move", "copy", "test")
MAX_OPERATIONS = 10_000  # Kubernetes' maxJSONPatchOperations
# As many values as one API request body may hold (apiserver.inputs.MAX_JSON_VALUES):
# a patch may copy as much as a client could have sent.
MAX_COPIED_VALUES = 100_000


class PatchError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Malformed(PatchError):
    """The patch itself is wrong: 400."""


class NotApplicable(PatchError):
    """A good patch that does not apply to this document: 422."""


class TooLarge(PatchError):
    """A patch that asks for more work than is allowed: 413."""


def parse_pointer(pointer: Any, where: str) -> list[str]:
    if not isinstance(pointer, str):
        raise Malformed(f"{where}: must be a string (a JSON pointer)")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise Malformed(f'{where}: "{pointer}" is not a JSON pointer: it must start with "/"')
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def _index(token: str, size: int, *, adding: bool, pointer: str) -> int:
    if adding and token == "-":
        return size
    # ASCII digits only ("²" is a digit to str.isdigit, not to int), and few enough of
    # them to be an index at all (int() of thousands of digits is slow, then refused).
    if (not token.isascii() or not token.isdigit() or len(token) > 10
            or (len(token) > 1 and token[0] == "0")):
        raise NotApplicable(f'"{pointer}": "{token}" is not a list index')
    i = int(token)
    if i > size or (i == size and not adding):
        raise NotApplicable(f'"{pointer}": index {i} is out of range (the list has {size} '
                            "items)")
    return i


def _parent(doc: Any, tokens: list[str], pointer: str) -> Any:
    cur = doc
    for i, token in enumerate(tokens[:-1]):
        if isinstance(cur, dict):
            if token not in cur:
                raise NotApplicable(f'"{pointer}": "/{"/".join(tokens[:i + 1])}" does not '
                                    "exist")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(token, len(cur), adding=False, pointer=pointer)]
        else:
            raise NotApplicable(f'"{pointer}": "/{"/".join(tokens[:i])}" is not an object '
                                "or a list")
    return cur


def _get(doc: Any, tokens: list[str], pointer: str) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, pointer), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise NotApplicable(f'"{pointer}" does not exist')
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(last, len(parent), adding=False, pointer=pointer)]
    raise NotApplicable(f'"{pointer}": its parent is not an object or a list')


def _add(doc: Any, tokens: list[str], value: Any, pointer: str) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, pointer), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), adding=True, pointer=pointer), value)
    else:
        raise NotApplicable(f'"{pointer}": its parent is not an object or a list')
    return doc


def _remove(doc: Any, tokens: list[str], pointer: str) -> tuple[Any, Any]:
    """(the document, the value removed)."""
    if not tokens:
        raise NotApplicable("the whole document cannot be removed")
    parent, last = _parent(doc, tokens, pointer), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise NotApplicable(f'"{pointer}" does not exist')
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), adding=False, pointer=pointer))
    raise NotApplicable(f'"{pointer}": its parent is not an object or a list')


def check(patch: Any) -> list[dict[str, Any]]:
    """The operations, each with what its op needs, or Malformed naming what is wrong."""
    if not isinstance(patch, list):
        raise Malformed("a JSON patch must be a list of operations, got "
                        f"{type(patch).__name__}")
    if len(patch) > MAX_OPERATIONS:
        raise TooLarge(f"the allowed maximum operations in a JSON patch is {MAX_OPERATIONS},"
                       f" got {len(patch)}")
    for i, op in enumerate(patch):
        where = f"[{i}]"
        if not isinstance(op, dict):
            raise Malformed(f"{where}: an operation must be an object")
        name = op.get("op")
        if name not in OPS:
            raise Malformed(f'{where}.op: Unsupported value: {name!r}: supported values: '
                            + ", ".join(f'"{o}"' for o in OPS))
        parse_pointer(op.get("path"), f"{where}.path")
        if name in ("add", "replace", "test") and "value" not in op:
            raise Malformed(f'{where}.value: Required value: "{name}" needs a value')
        if name in ("move", "copy"):
            parse_pointer(op.get("from"), f"{where}.from")
    return patch


def apply(doc: Any, patch: Any) -> Any:
    """`patch` applied to a copy of `doc`; `doc` is never changed."""
    ops = check(patch)
    out = copy.deepcopy(doc)
    copied = 0
    for i, op in enumerate(ops):
        name, pointer = op["op"], op["path"]
        tokens = parse_pointer(pointer, "path")
        if name == "add":
            out = _add(out, tokens, copy.deepcopy(op["value"]), pointer)
        elif name == "remove":
            out, _ = _remove(out, tokens, pointer)
        elif name == "replace":
            _get(out, tokens, pointer)  # it must exist
            out, _ = _remove(out, tokens, pointer) if tokens else (out, None)
            out = _add(out, tokens, copy.deepcopy(op["value"]), pointer)
        elif name == "test":
            if not merge.same(_get(out, tokens, pointer), op["value"]):
                raise NotApplicable(f'testing value "{pointer}" failed: it is '
                                    f"{_get(out, tokens, pointer)!r}, not {op['value']!r}")
        else:
            source = op["from"]
            from_tokens = parse_pointer(source, "from")
            if name == "move":
                if tokens[:len(from_tokens)] == from_tokens and tokens != from_tokens:
                    raise NotApplicable(f'"{source}" cannot be moved into itself ("{pointer}")')
                out, value = _remove(out, from_tokens, source)
            else:
                value = _get(out, from_tokens, source)
                left = MAX_COPIED_VALUES - copied
                copied += nesting.shape(value, max_depth=MAX_COPIED_VALUES,
                                        max_values=left).values
                if copied > MAX_COPIED_VALUES:
                    raise TooLarge(f"[{i}]: copying \"{source}\" would take the values "
                                   f"copied by the patch past the limit of "
                                   f"{MAX_COPIED_VALUES}")
                value = copy.deepcopy(value)
            out = _add(out, tokens, value, pointer)
    if nesting.depth(out) > nesting.MAX_DEPTH:
        raise NotApplicable(f"the patched document nests deeper than {nesting.MAX_DEPTH} "
                            "levels")
    return out
