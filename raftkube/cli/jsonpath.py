"""kubectl's JSONPath templates (`-o jsonpath=...`, custom columns, `--sort-by`): a small
parser and an evaluator over JSON-shaped data, with kubectl's results and error words.

A template is text with actions in braces: `{.items[*].metadata.name}`, `{range
.items[*]}...{end}`, string literals `{"\\n"}`. Paths take fields (`.a`, `['a.b']`),
wildcards (`[*]`, `.*`), recursive descent (`..name`), indexes and slices (`[0]`, `[-1]`,
`[1:3]`, `[::2]`), unions (`[0,1]`, `['a','b']`) and filters (`[?(@.type=="Ready")]`,
`[?(@.port>80)]`, `[?(@.ready)]`). Several results of one action print space-separated;
maps and lists print as compact JSON, as kubectl does. A missing field yields nothing
(kubectl's `--allow-missing-template-keys`, on by default); an index past the end is an
error, as in kubectl.

Parsing and evaluating are pure; errors are `JsonPathError` whose text names the
template and what is wrong, in kubectl's words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


class JsonPathError(ValueError):
    """A template that cannot be parsed, or cannot be evaluated on an object."""


# ---- the parsed template -------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    names: tuple[str, ...]  # several for a union `['a','b']`


@dataclass(frozen=True)
class Wildcard:
    pass


@dataclass(frozen=True)
class Recursive:
    pass


@dataclass(frozen=True)
class Slice:
    start: int | None
    stop: int | None
    step: int | None
    single: bool  # `[i]`: one element


@dataclass(frozen=True)
class Union:
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class Filter:
    left: Path | Literal
    op: str  # "==", "!=", "<", ">", "<=", ">=", or "exists"
    right: Path | Literal | None


@dataclass(frozen=True)
class Literal:
    value: Any


Step = Field | Wildcard | Recursive | Slice | Union | Filter


@dataclass(frozen=True)
class Path:
    steps: tuple[Step, ...]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Range:
    path: Path
    body: tuple[Node, ...]


Node = Text | Literal | Path | Range


# ---- parsing -------------------------------------------------------------------------------

_TERMINATORS = set(".[](){},=!<>&| \t\n'\"")
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")


class _Parser:
    def __init__(self, template: str) -> None:
        self.template = template

    def fail(self, what: str) -> JsonPathError:
        return JsonPathError(f"error parsing jsonpath {self.template}, {what}")

    def parse(self) -> tuple[Node, ...]:
        nodes: list[Node] = []
        stack: list[tuple[Path, list[Node]]] = []
        pos = 0
        t = self.template
        while pos < len(t):
            open_at = t.find("{", pos)
            if open_at < 0:
                nodes.append(Text(t[pos:]))
                break
            if open_at > pos:
                nodes.append(Text(t[pos:open_at]))
            close = self._action_end(open_at + 1)
            inside = t[open_at + 1:close].strip()
            pos = close + 1
            if inside.startswith("range ") or inside == "range":
                stack.append((self.path(inside[5:].strip()), nodes))
                nodes = []
            elif inside == "end":
                if not stack:
                    # kubectl parses it, then fails when it runs.
                    nodes.append(Range(Path(()), ()))
                    continue
                path, outer = stack.pop()
                outer.append(Range(path, tuple(nodes)))
                nodes = outer
            elif inside[:1] in ("'", '"'):
                value, rest = self.quoted(inside)
                if rest.strip():
                    raise self.fail(f"unrecognized character in action: {_char(rest.strip())}")
                nodes.append(Literal(value))
            else:
                nodes.append(self.path(inside))
        # A range without {end} runs to the end of the template, as in kubectl.
        while stack:
            path, outer = stack.pop()
            outer.append(Range(path, tuple(nodes)))
            nodes = outer
        return tuple(nodes)

    def _action_end(self, start: int) -> int:
        """Where the action opened before `start` closes, skipping quoted braces."""
        t, pos, quote = self.template, start, ""
        while pos < len(t):
            c = t[pos]
            if quote:
                if c == "\\":
                    pos += 1
                elif c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c == "}":
                return pos
            pos += 1
        raise self.fail("unclosed action")

    def quoted(self, text: str) -> tuple[str, str]:
        """A string literal at the start of `text` (Go's escapes), and what follows it."""
        quote = text[0]
        pos = 1
        while pos < len(text) and text[pos] != quote:
            pos += 2 if text[pos] == "\\" else 1
        if pos >= len(text):
            raise self.fail("unclosed quote")
        try:
            value = _unescape(text[1:pos])
        except ValueError:
            raise self.fail(f"invalid escape in {text[:pos + 1]}") from None
        return value, text[pos + 1:]

    def path(self, text: str) -> Path:
        steps, rest = self.steps(text)
        if rest.strip():
            raise self.fail(f"unrecognized character in action: {_char(rest.strip())}")
        return Path(tuple(steps))

    def steps(self, text: str) -> tuple[list[Step], str]:
        steps: list[Step] = []
        pos = 0
        if text[:1] in ("@", "$"):
            pos = 1
        elif text and text[0] not in ".[":
            name, pos = self.name(text, 0)  # `{kind}` reads as `{.kind}`
            steps.append(Field((name,)))
        while pos < len(text):
            c = text[pos]
            if text.startswith("..", pos):
                steps.append(Recursive())
                pos += 1
                if pos + 1 < len(text) and text[pos + 1] == "[":
                    pos += 1
                continue
            if c == ".":
                if text.startswith("*", pos + 1):
                    steps.append(Wildcard())
                    pos += 2
                    continue
                name, pos = self.name(text, pos + 1)
                steps.append(Field((name,)))
            elif c == "[":
                step, pos = self.bracket(text, pos)
                steps.append(step)
            else:
                break
        return steps, text[pos:]

    def name(self, text: str, pos: int) -> tuple[str, int]:
        """A field name; a backslash keeps the next character (`app\\.kubernetes\\.io`)."""
        end, chars = pos, []
        while end < len(text) and text[end] not in _TERMINATORS:
            if text[end] == "\\" and end + 1 < len(text):
                end += 1
            chars.append(text[end])
            end += 1
        return "".join(chars), end

    def bracket(self, text: str, pos: int) -> tuple[Step, int]:
        """`[...]` starting at `pos`: the step and where it ends."""
        if text.startswith("[?(", pos):
            return self.filter(text, pos + 3)
        close, quote = pos + 1, ""
        while close < len(text):
            c = text[close]
            if quote:
                if c == "\\":
                    close += 1
                elif c == quote:
                    quote = ""
            elif c in "'\"":
                quote = c
            elif c == "]":
                break
            close += 1
        else:
            raise self.fail("unterminated array")
        inside = text[pos + 1:close].strip()
        end = close + 1
        if inside == "*":
            return Wildcard(), end
        if inside[:1] in ("'", '"'):
            names = []
            rest = inside
            while rest:
                value, rest = self.quoted(rest)
                names.append(value)
                rest = rest.strip()
                if rest.startswith(","):
                    rest = rest[1:].strip()
                elif rest:
                    raise self.fail(f"invalid array index {inside}")
            return Field(tuple(names)), end
        if "," in inside:
            try:
                return Union(tuple(int(p) for p in inside.split(","))), end
            except ValueError:
                raise self.fail(f"invalid array index {inside}") from None
        parts = inside.split(":")
        if len(parts) > 3 or not inside:
            raise self.fail(f"invalid array index {inside}")
        try:
            numbers = [int(p) if p.strip() else None for p in parts]
        except ValueError:
            word = next(p for p in parts if p.strip() and not re.fullmatch(r"\s*-?\d+\s*", p))
            raise self.fail(f'invalid array index "{word}"') from None
        if len(parts) == 1:
            return Slice(numbers[0], None, None, single=True), end
        return Slice(numbers[0], numbers[1], numbers[2] if len(parts) == 3 else None,
                     single=False), end

    def filter(self, text: str, pos: int) -> tuple[Step, int]:
        close = text.find(")]", pos)
        while close >= 0 and _unbalanced_quotes(text[pos:close]):
            close = text.find(")]", close + 1)
        if close < 0:
            raise self.fail("unclosed filter, expect )]")
        inside = text[pos:close].strip()
        left, rest = self.operand(inside)
        rest = rest.strip()
        if not rest:
            return Filter(left, "exists", None), close + 2
        match = re.match(r"(==|!=|<=|>=|<|>)", rest)
        if match is None:
            odd = rest.lstrip("=!<>") or rest
            raise self.fail(f"unrecognized character in action: {_char(odd)}")
        right, tail = self.operand(rest[match.end():].strip())
        if tail.strip():
            raise self.fail(f"unrecognized character in action: {_char(tail.strip())}")
        return Filter(left, match.group(1), right), close + 2

    def operand(self, text: str) -> tuple[Path | Literal, str]:
        if not text:
            raise self.fail("a filter operand is missing")
        if text[:1] in ("'", '"'):
            value, rest = self.quoted(text)
            return Literal(value), rest
        number = _NUMBER.match(text)
        if number:
            word = number.group(0)
            return Literal(float(word) if any(c in word for c in ".eE") else int(word)), \
                text[number.end():]
        for keyword, truth in (("true", True), ("false", False)):
            if text.startswith(keyword):
                return Literal(truth), text[len(keyword):]
        if text[:1] in ("@", "$", "."):
            steps, rest = self.steps(text)
            return Path(tuple(steps)), rest
        raise self.fail(f"unrecognized character in action: {_char(text)}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


def _unescape(body: str) -> str:
    """Go's escapes in a quoted literal: `\\n`, `\\t`, `\\"`, `\\u00e9`, `\\x41`."""
    out, pos = [], 0
    while pos < len(body):
        c = body[pos]
        if c != "\\":
            out.append(c)
            pos += 1
            continue
        code = body[pos + 1:pos + 2]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            pos += 2
        elif code in ("x", "u", "U"):
            width = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[pos + 2:pos + 2 + width]
            if len(digits) != width:
                raise ValueError(body)
            out.append(chr(int(digits, 16)))
            pos += 2 + width
        else:
            raise ValueError(body)
    return "".join(out)


def _unbalanced_quotes(text: str) -> bool:
    return text.count('"') % 2 == 1 or text.count("'") % 2 == 1


def _char(text: str) -> str:
    c = text[0]
    return f"U+{ord(c):04X} '{c}'"


@dataclass(frozen=True)
class Template:
    """A parsed template; `render(obj)` is what kubectl prints for it."""

    source: str
    nodes: tuple[Node, ...]

    def render(self, obj: Any, *, allow_missing: bool = True) -> str:
        try:
            return "".join(_render(self.nodes, obj, allow_missing=allow_missing,
                                   in_range=False))
        except _EvalError as e:
            raise JsonPathError(f"error executing jsonpath {json.dumps(self.source)}: "
                                f"{e}") from None

    def results(self, obj: Any, *, allow_missing: bool = True) -> list[list[Any]]:
        """The values of each action (literals and ranges left out): what custom columns
        and `--sort-by` read."""
        out = []
        try:
            for node in self.nodes:
                if isinstance(node, Path):
                    out.append(list(_walk(node, [obj], allow_missing=allow_missing)))
        except _EvalError as e:
            raise JsonPathError(f"error executing jsonpath {json.dumps(self.source)}: "
                                f"{e}") from None
        return out


def parse(template: str) -> Template:
    """A template, or JsonPathError naming it and what is wrong."""
    return Template(template, _Parser(template).parse())


_RELAXED = re.compile(r"^\{\.?([^{}]+)\}$|^\.?([^{}]+)$")


def relaxed(expression: str) -> str:
    """kubectl's relaxed path for custom columns and --sort-by: `a.b`, `.a.b`, `{a.b}`
    and `{.a.b}` all mean `{.a.b}`."""
    if not expression:
        return expression
    match = _RELAXED.match(expression)
    if match is None:
        raise JsonPathError("unexpected path string, expected a 'name1.name2' or "
                            "'.name1.name2' or '{name1.name2}' or '{.name1.name2}'")
    spec = match.group(1) or match.group(2)
    return "{." + spec.lstrip(".") + "}" if not spec.startswith("[") else "{" + spec + "}"


# ---- evaluating ----------------------------------------------------------------------------


class _EvalError(Exception):
    pass


def _render(nodes: tuple[Node, ...], cur: Any, *, allow_missing: bool,
            in_range: bool) -> Iterator[str]:
    for node in nodes:
        if isinstance(node, Text):
            yield node.text
        elif isinstance(node, Literal):
            yield text_of(node.value)
        elif isinstance(node, Range):
            if not node.path.steps and not node.body:
                raise _EvalError("not in range, nothing to end")
            for item in _walk(node.path, [cur], allow_missing=allow_missing):
                yield from _render(node.body, item, allow_missing=allow_missing,
                                   in_range=True)
        else:
            values = list(_walk(node, [cur], allow_missing=allow_missing))
            yield " ".join(text_of(v) for v in values)


def text_of(value: Any) -> str:
    """A value as kubectl prints one: maps and lists as compact JSON, the rest as Go's
    fmt prints them."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def go_float(value: float) -> str:
    """Go's `%v` of a float64: shortest form, exponent from 1e21 up."""
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exp = text.split("e")
        sign = exp[0] if exp[0] in "+-" else "+"
        return f"{mantissa}e{sign}{exp.lstrip('+-').zfill(2)}"
    return text


def _walk(path: Path, values: list[Any], *, allow_missing: bool) -> list[Any]:
    for step in path.steps:
        values = _step(step, values, allow_missing=allow_missing)
    return values


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value[k] for k in sorted(value)]
    if isinstance(value, list):
        return list(value)
    return []


def _step(step: Step, values: list[Any], *, allow_missing: bool) -> list[Any]:
    out: list[Any] = []
    if isinstance(step, Field):
        for v in values:
            for name in step.names:
                if isinstance(v, dict) and name in v:
                    out.append(v[name])
                elif isinstance(v, dict) and not allow_missing:
                    raise _EvalError(f"{name} is not found")
        return out
    if isinstance(step, Wildcard):
        return [c for v in values for c in _children(v)]
    if isinstance(step, Recursive):
        def every(v: Any) -> Iterator[Any]:
            yield v
            for c in _children(v):
                yield from every(c)
        return [x for v in values for x in every(v)]
    if isinstance(step, Union):
        for v in values:
            if not isinstance(v, list):
                raise _EvalError(f"{go_type(v)} is not array or slice")
            for i in step.indexes:
                j = i + len(v) if i < 0 else i
                if not 0 <= j < len(v):
                    raise _EvalError(f"array index out of bounds: index {i}, "
                                     f"length {len(v)}")
                out.append(v[j])
        return out
    if isinstance(step, Slice):
        for v in values:
            if not isinstance(v, list):
                raise _EvalError(f"{go_type(v)} is not array or slice")
            out += _slice(step, v)
        return out
    for v in values:
        if not isinstance(v, list):
            raise _EvalError(f"{text_of(v)} is not array or slice and cannot be filtered")
        out += [item for item in v if _keep(step, item, allow_missing)]
    return out


def go_type(value: Any) -> str:
    """The Go type kubectl names in its errors for a JSON value."""
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string" if isinstance(value, str) else "interface {}"


def _slice(step: Slice, v: list[Any]) -> list[Any]:
    n = len(v)
    start = 0 if step.start is None else step.start
    if start < 0:
        start += n
    if step.single:
        stop = start + 1
    else:
        stop = n if step.stop is None else step.stop
        if stop < 0:
            stop += n
    if step.step is not None and step.step <= 0:
        raise _EvalError("step must be > 0")
    if stop == start:
        return []
    if not 0 <= start < n:
        raise _EvalError(f"array index out of bounds: index {start}, length {n}")
    if not 0 <= stop <= n:
        raise _EvalError(f"array index out of bounds: index {stop - 1}, length {n}")
    if start > stop:
        raise _EvalError(f"starting index {start} is greater than ending index {stop}")
    return v[start:stop:step.step or 1]


def _operand(operand: Path | Literal | None, item: Any, allow_missing: bool) -> list[Any]:
    if operand is None:
        return []
    if isinstance(operand, Literal):
        return [operand.value]
    try:
        return _walk(operand, [item], allow_missing=True)
    except _EvalError:
        return []  # kubectl does not fail a filter on an item its path does not fit


def _keep(step: Filter, item: Any, allow_missing: bool) -> bool:
    lefts = _operand(step.left, item, allow_missing)
    if step.op == "exists":
        return bool(lefts)
    rights = _operand(step.right, item, allow_missing)
    if not lefts or not rights:
        return False
    a, b = lefts[0], rights[0]
    if step.op == "==":
        return _same(a, b)
    if step.op == "!=":
        return not _same(a, b)
    numbers = all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))
    if not numbers and not (isinstance(a, str) and isinstance(b, str)):
        raise _EvalError("incompatible types for comparison")
    return bool({"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[step.op])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return bool(a == b)
