"""Validation findings: one `Cause` per problem, worded as Kubernetes words it.

A `Cause` is what the REST server puts in a `Status`'s `details.causes` and what kubectl
prints after `is invalid:`; its `reason` is one of Kubernetes' `StatusCause` reasons and
its message is Kubernetes' `field.Error` text without the field. `Causes` collects them:
validators never stop at the first problem, they add to one collector and carry on, so a
user sees everything wrong with a manifest in one round trip. Values inside messages are
rendered the way Go's `%q`/`%v` render them (`"web"`, `-1`, `map[string]string{...}`), so
messages read like the ones in Kubernetes' documentation and issue trackers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

REQUIRED = "FieldValueRequired"
INVALID = "FieldValueInvalid"
NOT_SUPPORTED = "FieldValueNotSupported"
DUPLICATE = "FieldValueDuplicate"
FORBIDDEN = "FieldValueForbidden"
TYPE_INVALID = "FieldValueTypeInvalid"
NOT_FOUND = "FieldValueNotFound"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"


@dataclass(frozen=True)
class Cause:
    """One problem: the field path, Kubernetes' reason, and the message without the field."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def json_type(value: Any) -> str:
    """The JSON schema type name of a decoded value: "string", "integer", "object", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def show(value: Any) -> str:
    """`value` as Go's `%q`/`%#v` would show it in a Kubernetes error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if (isinstance(value, dict) and all(isinstance(k, str) for k in value)
            and all(isinstance(v, str) for v in value.values())):
        inner = ", ".join(f"{json.dumps(k, ensure_ascii=False)}:{json.dumps(v, ensure_ascii=False)}"
                          for k, v in sorted(value.items()))
        return f"map[string]string{{{inner}}}"
    try:
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                          default=str)
    except (TypeError, ValueError, RecursionError):
        return f"<{json_type(value)}>"


def child(path: str, name: str) -> str:
    """`spec` + `replicas` → `spec.replicas`; the root path is ""."""
    return f"{path}.{name}" if path else name


def index(path: str, i: int) -> str:
    return f"{path}[{i}]"


def key(path: str, k: object) -> str:
    return f"{path}[{k}]"


class Causes:
    """An ordered collector of causes, with one method per Kubernetes error type."""

    def __init__(self) -> None:
        self.items: list[Cause] = []

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, cause: Cause) -> None:
        self.items.append(cause)

    def required(self, field: str, detail: str = "") -> None:
        self.add(Cause(field, REQUIRED, f"Required value: {detail}" if detail
                       else "Required value"))

    def require(self, obj: dict[str, Any], name: str, path: str) -> Any:
        """`obj[name]`, or a Required cause at `path.name` and None when it is missing or ""."""
        value = obj.get(name)
        if value is None or value == "":
            self.required(child(path, name))
            return None
        return value

    def invalid(self, field: str, value: Any, detail: str) -> None:
        self.add(Cause(field, INVALID, f"Invalid value: {show(value)}: {detail}"))

    def invalid_each(self, field: str, value: Any, details: Iterable[str]) -> None:
        """One cause per message, as Kubernetes reports name and label problems."""
        for detail in details:
            self.invalid(field, value, detail)

    def not_supported(self, field: str, value: Any, supported: Iterable[str]) -> None:
        """The supported values are listed sorted, as Kubernetes' string sets list them."""
        listed = ", ".join(json.dumps(s) for s in sorted(supported))
        self.add(Cause(field, NOT_SUPPORTED,
                       f"Unsupported value: {show(value)}: supported values: {listed}"))

    def duplicate(self, field: str, value: Any) -> None:
        self.add(Cause(field, DUPLICATE, f"Duplicate value: {show(value)}"))

    def forbidden(self, field: str, detail: str) -> None:
        self.add(Cause(field, FORBIDDEN, f"Forbidden: {detail}"))

    def not_found(self, field: str, value: Any) -> None:
        self.add(Cause(field, NOT_FOUND, f"Not found: {show(value)}"))

    def too_long(self, field: str, limit: int) -> None:
        self.add(Cause(field, TOO_LONG, f"Too long: must have at most {limit} bytes"))

    def too_many(self, field: str, actual: int, limit: int) -> None:
        self.add(Cause(field, TOO_MANY, f"Too many: {actual}: must have at most {limit} items"))

    def type_invalid(self, field: str, value: Any, expected: str) -> None:
        """Kubernetes' OpenAPI wording: the value shown is the JSON type that was found."""
        found = json_type(value)
        self.add(Cause(field, TYPE_INVALID,
                       f'Invalid value: "{found}": {field or "body"} in body must be of type '
                       f'{expected}: "{found}"'))

    def immutable(self, field: str, value: Any) -> None:
        self.invalid(field, value, "field is immutable")

    def non_negative(self, field: str, value: int | None) -> None:
        if value is not None and value < 0:
            self.invalid(field, value, "must be greater than or equal to 0")

    def positive(self, field: str, value: int | None) -> None:
        if value is not None and value <= 0:
            self.invalid(field, value, "must be greater than zero")
