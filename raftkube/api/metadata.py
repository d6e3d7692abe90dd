"""Validation of `metadata` and of label maps, shared by every kind.

Names become store keys, URL segments and (for Namespaces and Services) DNS names, so
their syntax is checked strictly; labels and annotations are checked as Kubernetes checks
them, because selectors built from them are parsed by the same rules
(`raftkube.api.selectors`) and a label that no selector can name is a trap.

`int_annotation` reads a number kept in an annotation (a revision, a deletion cost) the
one forgiving way every reader wants: 0 when absent or not a number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raftkube.api import causes, names, schema

ANNOTATIONS_MAX_BYTES = 256 * 1024
# Kinds whose names are used as DNS labels; every other kind's name is a DNS subdomain.
LABEL_NAMED = {"Namespace": names.dns1123_label_errors, "Service": names.dns1035_label_errors}

NameCheck = Callable[[str], list[str]]


def name_check(kind: str) -> NameCheck:
    return LABEL_NAMED.get(kind, names.dns1123_subdomain_errors)


def validate_metadata(meta: Any, *, kind: str, namespaced: bool | None, path: str,
                      errs: causes.Causes) -> None:
    """Check an object's metadata; `namespaced` None means the scope is unknown."""
    meta = schema.as_map(meta)
    if meta is None:
        meta = {}
    check = name_check(kind)
    name = schema.get_str(meta, "name")
    generate = schema.get_str(meta, "generateName")
    if not name:
        if not generate and not _wrong_type(meta.get("name")):
            errs.required(causes.child(path, "name"), "name or generateName is required")
    else:
        errs.invalid_each(causes.child(path, "name"), name, check(name))
    if generate:
        # Kubernetes checks a prefix with its trailing dash masked: "web-" is a fine prefix.
        masked = generate[:-1] + "a" if generate.endswith("-") else generate
        errs.invalid_each(causes.child(path, "generateName"), generate, check(masked))
    namespace = schema.get_str(meta, "namespace")
    if namespace:
        if namespaced is False:
            errs.forbidden(causes.child(path, "namespace"), "not allowed on this type")
        else:
            errs.invalid_each(causes.child(path, "namespace"), namespace,
                              names.dns1123_label_errors(namespace))
    validate_labels(meta.get("labels"), path=causes.child(path, "labels"), errs=errs)
    _annotations(meta.get("annotations"), path=causes.child(path, "annotations"), errs=errs)
    _owner_references(meta.get("ownerReferences"), path=causes.child(path, "ownerReferences"),
                      errs=errs)
    for i, finalizer in enumerate(schema.get_list(meta, "finalizers") or []):
        if isinstance(finalizer, str):
            errs.invalid_each(causes.index(causes.child(path, "finalizers"), i), finalizer,
                              names.qualified_name_errors(finalizer))
    errs.non_negative(causes.child(path, "generation"), schema.get_int(meta, "generation"))
    errs.non_negative(causes.child(path, "deletionGracePeriodSeconds"),
                      schema.get_int(meta, "deletionGracePeriodSeconds"))


def validate_labels(labels: Any, *, path: str, errs: causes.Causes) -> None:
    """Kubernetes' `ValidateLabels`: every cause names the map, with the bad key or value."""
    for key, value in schema.str_map(labels).items():
        errs.invalid_each(path, key, names.label_key_errors(key))
        errs.invalid_each(path, value, names.label_value_errors(value))


def _annotations(annotations: Any, *, path: str, errs: causes.Causes) -> None:
    found = schema.str_map(annotations)
    for key in found:
        errs.invalid_each(path, key, names.qualified_name_errors(key.lower()))
    size = sum(len(k.encode()) + len(v.encode()) for k, v in found.items())
    if size > ANNOTATIONS_MAX_BYTES:
        errs.too_long(path, ANNOTATIONS_MAX_BYTES)


def _owner_references(refs: Any, *, path: str, errs: causes.Causes) -> None:
    controllers = []
    for i, ref in schema.maps(refs):
        at = causes.index(path, i)
        for field, what in (("apiVersion", "version"), ("kind", "kind"), ("name", "name"),
                            ("uid", "uid")):
            if not schema.get_str(ref, field) and not _wrong_type(ref.get(field)):
                errs.invalid(causes.child(at, field), "", f"{what} must not be empty")
        if schema.get_bool(ref, "controller"):
            controllers.append(schema.get_str(ref, "name") or "")
    if len(controllers) > 1:
        errs.invalid(path, controllers,
                     "Only one reference can have Controller set to true")


def _wrong_type(value: Any) -> bool:
    """Set, but not a string: the schema walk has reported it already."""
    return value is not None and not isinstance(value, str)


def int_annotation(obj: Any, key: str) -> int:
    """The annotation `key` of `obj` as an int; 0 when absent or not a number."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    value = ((meta if isinstance(meta, dict) else {}).get("annotations") or {}).get(key)
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0
