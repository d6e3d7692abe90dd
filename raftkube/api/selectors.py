"""Label and field selectors: parsing, canonical form and matching.

Selectors choose objects in three places: the `labelSelector` and `fieldSelector` query
parameters of list and watch, and the `spec.selector` of workloads, which decides which
pods a Deployment or Job owns. All three must agree on what matches, so they share the
`LabelSelector` value here; the string syntax is Kubernetes' (`app=web,tier!=db`,
`env in (prod, staging)`, `!canary`) and the object syntax is `matchLabels` plus
`matchExpressions`. Parsing checks keys and values the way label validation does, so a
selector that could never match a valid label is refused instead of silently empty.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from raftkube.api import names

OPS = ("=", "!=", "in", "notin", "exists", "!")
# The fields a list or watch may select on, per kind, as Kubernetes' registries offer
# them: every kind has its name and namespace; Events are found by what they are about
# (`kubectl describe` asks for `involvedObject.name=...,involvedObject.uid=...`). Only
# fields that read as "" when absent, as Kubernetes reads them, are offered: an absent
# boolean or integer reads "false" or "0" there, which the stored bytes do not hold
# (`records.could_match`).
OBJECT_FIELDS = frozenset({"metadata.name", "metadata.namespace"})
KIND_FIELDS: Mapping[str, frozenset[str]] = {
    "Pod": frozenset({"spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
                      "spec.serviceAccountName", "status.phase", "status.podIP",
                      "status.nominatedNodeName"}),
    "Event": frozenset({"involvedObject.kind", "involvedObject.namespace",
                        "involvedObject.name", "involvedObject.uid",
                        "involvedObject.apiVersion", "involvedObject.resourceVersion",
                        "involvedObject.fieldPath", "reason", "reportingComponent",
                        "source", "type"}),
    "Secret": frozenset({"type"}),
    "Namespace": frozenset({"status.phase"}),
}
# A selectable name that is not the object's path to its value.
FIELD_PATHS = {"source": "source.component"}
FIELD_SELECTABLE = OBJECT_FIELDS | KIND_FIELDS["Pod"]
_EXPRESSION_OPS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
_SPECIAL = "!=(),"


class SelectorError(ValueError):
    """A selector that cannot be parsed or can never be valid; the message says why."""


@dataclass(frozen=True)
class Requirement:
    """One condition on one label key; `values` is empty for `exists` and `!`."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op in ("gt", "lt"):  # node selectors only: numeric comparisons
            try:
                have, bound = int(str(value)), int(self.values[0])
            except (ValueError, IndexError):
                return False
            return present and (have > bound if self.op == "gt" else have < bound)
        return not present  # "!"

    def __str__(self) -> str:
        if self.op == "exists":
            return self.key
        if self.op == "!":
            return f"!{self.key}"
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"


@dataclass(frozen=True)
class LabelSelector:
    """All requirements must hold; no requirements match everything."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels if isinstance(labels, Mapping) else {}
        return all(r.matches(found) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def requirement(*, key: str, op: str, values: Collection[str] = ()) -> Requirement:
    """A checked requirement; values of set operators are sorted, as Kubernetes does."""
    if op not in OPS:
        raise SelectorError(f'"{op}" is not a valid label selector operator')
    problems = names.label_key_errors(key)
    if problems:
        raise SelectorError(f'invalid label key "{key}": {"; ".join(problems)}')
    vals = tuple(values)
    if op in ("exists", "!") and vals:
        raise SelectorError(f'values must be empty for "{op}" (key "{key}")')
    if op in ("=", "!=") and len(vals) != 1:
        raise SelectorError(f'exactly one value is required for "{op}" (key "{key}")')
    if op in ("in", "notin") and not vals:
        raise SelectorError(f'for "{op}" (key "{key}"), the set of values must be non-empty')
    for v in vals:
        problems = names.label_value_errors(v)
        if problems:
            raise SelectorError(f'invalid label value "{v}" for key "{key}": '
                                + "; ".join(problems))
    if op in ("in", "notin"):
        vals = tuple(sorted(set(vals)))
    return Requirement(key=key, op=op, values=vals)


def _selector(reqs: list[Requirement]) -> LabelSelector:
    return LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))


# ---- the string form ------------------------------------------------------------------


def _tokens(text: str) -> Iterator[tuple[int, str]]:
    """(position, token) pairs: identifiers, `!`, `!=`, `=`, `==`, `(`, `)`, `,`."""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "!=" and text[i + 1:i + 2] == "=":
            yield i, text[i:i + 2]
            i += 2
        elif c in _SPECIAL:
            yield i, c
            i += 1
        else:
            start = i
            while i < len(text) and not text[i].isspace() and text[i] not in _SPECIAL:
                i += 1
            yield start, text[start:i]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = list(_tokens(text))
        self.at = 0

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def take(self, expected: str) -> str:
        token = self.peek()
        if token is None:
            raise self.error(f"found end of input, expected: {expected}")
        self.at += 1
        return token

    def error(self, detail: str) -> SelectorError:
        return SelectorError(f'unable to parse requirement in "{self.text}": {detail}')

    @staticmethod
    def is_identifier(token: str | None) -> bool:
        return token is not None and token not in ("!", "!=", "=", "==", "(", ")", ",")

    def requirement(self) -> Requirement:
        if self.peek() == "!":
            self.at += 1
            key = self.identifier("a label key after '!'")
            return requirement(key=key, op="!")
        key = self.identifier("a label key")
        op = self.peek()
        if op is None or op == ",":
            return requirement(key=key, op="exists")
        self.at += 1
        if op in ("=", "=="):
            return requirement(key=key, op="=", values=(self.value(),))
        if op == "!=":
            return requirement(key=key, op="!=", values=(self.value(),))
        if op in ("in", "notin"):
            return requirement(key=key, op=op, values=self.value_set())
        raise self.error(f"found '{op}', expected: '=', '!=', '==', 'in', 'notin'")

    def identifier(self, what: str) -> str:
        token = self.take(what)
        if not self.is_identifier(token):
            raise self.error(f"found '{token}', expected: {what}")
        return token

    def value(self) -> str:
        token = self.peek()
        if token is None or token == ",":
            return ""  # `key=` selects an empty value, as in Kubernetes
        return self.identifier("a label value")

    def value_set(self) -> list[str]:
        """`(a, b)`; an empty slot between commas is the empty value, as in Kubernetes."""
        token = self.take("'('")
        if token != "(":
            raise self.error(f"found '{token}', expected: '('")
        values: list[str] = []
        want_value = True
        while True:
            token = self.take("a label value, ',' or ')'")
            if token in (")", ","):
                if want_value and (values or token == ","):
                    values.append("")
                if token == ")":
                    return values
                want_value = True
            elif not want_value:
                raise self.error(f"found '{token}', expected: ',' or ')'")
            elif not self.is_identifier(token):
                raise self.error(f"found '{token}', expected: a label value")
            else:
                values.append(token)
                want_value = False

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        if not self.tokens:
            return LabelSelector()
        while True:
            reqs.append(self.requirement())
            token = self.peek()
            if token is None:
                return _selector(reqs)
            if token != ",":
                raise self.error(f"found '{token}', expected: ',' or end of input")
            self.at += 1


def parse_label_selector(text: str) -> LabelSelector:
    """Kubernetes' `labelSelector` syntax; an empty string selects everything."""
    if not isinstance(text, str):
        raise SelectorError("a label selector must be a string")
    return _Parser(text).parse()


# ---- the object form ------------------------------------------------------------------


def selector_from_object(sel: Mapping[str, Any] | None) -> LabelSelector:
    """`{"matchLabels": {...}, "matchExpressions": [...]}` as a selector.

    `None` and `{}` give the empty selector, which matches everything; callers that must not
    select everything (workloads) refuse an absent or empty selector in validation first.
    """
    if sel is None:
        return LabelSelector()
    if not isinstance(sel, Mapping):
        raise SelectorError("a label selector must be an object with matchLabels and "
                            "matchExpressions")
    reqs: list[Requirement] = []
    match_labels = sel.get("matchLabels")
    if match_labels is not None:
        if not isinstance(match_labels, Mapping):
            raise SelectorError("matchLabels must be a map of strings")
        for key, value in match_labels.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise SelectorError(f"matchLabels[{key}] must be a string")
            reqs.append(requirement(key=key, op="=", values=(value,)))
    expressions = sel.get("matchExpressions")
    if expressions is not None:
        if not isinstance(expressions, list):
            raise SelectorError("matchExpressions must be a list")
        for i, expr in enumerate(expressions):
            reqs.append(_expression(expr, where=f"matchExpressions[{i}]"))
    return _selector(reqs)


def _expression(expr: Any, *, where: str) -> Requirement:
    if not isinstance(expr, Mapping):
        raise SelectorError(f"{where} must be an object with key, operator and values")
    key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values")
    if not isinstance(key, str):
        raise SelectorError(f"{where}.key must be a string")
    if operator not in _EXPRESSION_OPS:
        raise SelectorError(f'{where}.operator: "{operator}" is not a valid label selector '
                            'operator (supported: "DoesNotExist", "Exists", "In", "NotIn")')
    if values is None:
        values = []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{where}.values must be a list of strings")
    return requirement(key=key, op=_EXPRESSION_OPS[operator], values=values)


def node_selector_term(term: Any) -> LabelSelector | None:
    """A node selector term (`matchExpressions` with In, NotIn, Exists, DoesNotExist, Gt,
    Lt) as a selector; None when it can match no node: Kubernetes' rule for an empty
    term, and for one that does not parse (validation refuses those on write)."""
    if not isinstance(term, Mapping):
        return None
    expressions = term.get("matchExpressions") or []
    if not expressions or not isinstance(expressions, list):
        return None
    reqs: list[Requirement] = []
    try:
        for i, expr in enumerate(expressions):
            op = expr.get("operator") if isinstance(expr, Mapping) else None
            if op in ("Gt", "Lt"):
                values = expr.get("values") or []
                if not isinstance(expr.get("key"), str) or len(values) != 1:
                    return None
                reqs.append(Requirement(expr["key"], op.lower(), (str(values[0]),)))
            else:
                reqs.append(_expression(expr, where=f"matchExpressions[{i}]"))
    except SelectorError:
        return None
    return _selector(reqs)


# ---- field selectors ------------------------------------------------------------------


@dataclass(frozen=True)
class FieldSelector:
    """(field, "=" or "!=", value) conditions on an object's fields; all must hold."""

    requirements: tuple[tuple[str, str, str], ...] = ()

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return all((field_value(obj, field) == value) == (op == "=")
                   for field, op, value in self.requirements)

    def __str__(self) -> str:
        return ",".join(f"{f}{op}{v}" for f, op, v in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


def selectable_fields(kind: str) -> frozenset[str]:
    """The fields a field selector may name for objects of `kind` (`Pod`, `Event`...)."""
    return OBJECT_FIELDS | KIND_FIELDS.get(kind, frozenset())


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The value of a selectable field as a string; a missing field (or a non-string)
    is ""."""
    node: Any = obj
    for part in FIELD_PATHS.get(path, path).split("."):
        if not isinstance(node, Mapping):
            return ""
        node = node.get(part)
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node) if isinstance(node, str | int) else ""


def parse_field_selector(text: str, *,
                         allowed: Collection[str] = FIELD_SELECTABLE) -> FieldSelector:
    """`spec.nodeName=n1,status.phase!=Running`; `==` means `=`; "" selects everything."""
    if not isinstance(text, str):
        raise SelectorError("a field selector must be a string")
    reqs: list[tuple[str, str, str]] = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            if text.strip():
                raise SelectorError(f'invalid field selector "{text}": empty requirement')
            continue
        op = next((o for o in ("!=", "==", "=") if o in term), None)
        if op is None:
            raise SelectorError(f'invalid field selector: "{term}": expected '
                                "field=value, field==value or field!=value")
        field, _, value = term.partition(op)
        canonical = "!=" if op == "!=" else "="
        field = field.strip()
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        reqs.append((field, canonical, value.strip()))
    return FieldSelector(tuple(reqs))
