"""`validate(obj, old=...)`: every problem of an object, each with its field path.

This is the one entry point the API server calls before it writes anything, on create
(`old` None) and on update (`old` the stored object). It runs on objects after
`raftkube.api.defaults`, and in three passes that never stop early, so a user sees all
that is wrong at once: the JSON type of every known field (`raftkube.api.schema`), the
rules of the object's kind (`metadata`, `podspec`, `workloads`, `core`, `discovery`), and,
on update, what may not change (`updates`). It never raises, whatever it is given: the
server passes it whatever a client sent, and a crash there would be a 500 instead of a 422
that says what to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from raftkube.api import (
    causes,
    core,
    discovery,
    kinds,
    metadata,
    podspec,
    schema,
    updates,
    workloads,
)

Cause = causes.Cause

__all__ = ["Cause", "validate"]

# Kind → validator of its `spec` (a dict, possibly empty).
_SPEC_RULES: dict[str, Callable[..., None]] = {
    "Deployment": workloads.validate_deployment,
    "ReplicaSet": workloads.validate_replicaset,
    "DaemonSet": workloads.validate_daemonset,
    "Job": workloads.validate_job,
    "Service": core.validate_service,
}
# Kind → validator of the whole object, for kinds whose contents are not under `spec`.
_OBJECT_RULES: dict[str, Callable[..., None]] = {
    "ConfigMap": core.validate_configmap,
    "Secret": core.validate_secret,
    "Namespace": core.validate_namespace,
    "Node": core.validate_node,
    "Event": core.validate_event,
    "Lease": core.validate_lease,
    "EndpointSlice": discovery.validate_endpointslice,
}


def validate(obj: dict[str, Any], *, old: dict[str, Any] | None = None) -> list[Cause]:
    """Every problem of `obj` (and of the change from `old`), or [] when it may be written."""
    errs = causes.Causes()
    try:
        _validate(obj, old=old, errs=errs)
    except RecursionError:
        errs.invalid("", "<object>", "is nested too deeply")
    return errs.items


def _validate(obj: Any, *, old: Any, errs: causes.Causes) -> None:
    if not isinstance(obj, dict):
        errs.type_invalid("", obj, "object")
        return
    kind_name = schema.get_str(obj, "kind") or ""
    schema.check(obj, schema.object_schema(kind_name), path="", errs=errs)
    kind = _kind(obj, errs=errs)
    metadata.validate_metadata(obj.get("metadata"), kind=kind_name, path="metadata",
                               namespaced=kind.namespaced if kind else None, errs=errs)
    spec = obj.get("spec")
    if kind_name == "Pod":
        if isinstance(spec, dict) or spec is None:
            podspec.validate_pod_spec(spec, path="spec", errs=errs)
    elif kind_name in _SPEC_RULES:
        if isinstance(spec, dict) or spec is None:
            _SPEC_RULES[kind_name](spec or {}, errs=errs)
    elif kind_name in _OBJECT_RULES:
        _OBJECT_RULES[kind_name](obj, errs=errs)
    if isinstance(old, dict):
        updates.validate_update(obj, old, errs=errs)


def _kind(obj: dict[str, Any], *, errs: causes.Causes) -> kinds.Kind | None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if api_version is None or api_version == "":
        errs.required("apiVersion")
    if kind is None or kind == "":
        errs.required("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not api_version \
            or not kind:
        return None
    found = kinds.by_kind(api_version, kind)
    if found is None:
        errs.invalid("kind", kind, f'no kind "{kind}" is registered for version '
                                   f'"{api_version}"')
    return found
