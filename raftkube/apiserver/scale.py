"""The `scale` subresource: a workload's replicas as an autoscaling/v1 Scale.

`kubectl scale`, the client libraries' scale calls and autoscalers read and write a
Deployment's or ReplicaSet's replicas through `.../NAME/scale` without knowing the
kind: GET answers a Scale (`spec.replicas`, and `status.replicas` with the pods'
`status.selector` as text), PUT takes one, PATCH patches one (merge, JSON or strategic
patch, on the Scale's own fields). Only `spec.replicas` is written back, into the
object's spec; the Scale's resourceVersion, when given, is the object's and a
precondition. The write is the object's ordinary update: its generation moves, its
controller sees it.
"""

from __future__ import annotations

import copy
from typing import Any

from raftkube.api import selectors, validation
from raftkube.apiserver import status as stt

SCALABLE = {"Deployment", "ReplicaSet", "StatefulSet", "ReplicationController"}
API_VERSION = "autoscaling/v1"


def selector_text(selector: Any) -> str:
    """A label selector (matchLabels and matchExpressions) as a selector string, as the
    selectors module writes it; "" for one that is absent or not a valid selector (the
    workload's own validation refuses those)."""
    if not isinstance(selector, dict):
        return ""
    try:
        return str(selectors.selector_from_object(selector))
    except selectors.SelectorError:
        return ""


def of(obj: dict[str, Any]) -> dict[str, Any]:
    """The Scale of a workload object."""
    meta = obj.get("metadata") or {}
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    replicas = spec.get("replicas")
    return {
        "kind": "Scale", "apiVersion": API_VERSION,
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                          "creationTimestamp") if k in meta},
        "spec": {"replicas": 1 if replicas is None else replicas},
        "status": {"replicas": status.get("replicas", 0),
                   "selector": selector_text(spec.get("selector"))},
    }


def _invalid(name: str, field: str, reason: str, message: str) -> stt.ApiError:
    return stt.invalid("Scale", "autoscaling", name, [validation.Cause(field, reason, message)])


def replicas_of(name: str, scale: Any) -> int:
    """`spec.replicas` of a Scale sent by a client; Invalid (422) naming the field, and
    400 for a Scale that names another object than the URL does."""
    if not isinstance(scale, dict):
        raise _invalid(name, "", "FieldValueTypeInvalid",
                       "Invalid value: a Scale must be an object")
    if scale.get("kind") not in (None, "Scale") or \
            scale.get("apiVersion") not in (None, API_VERSION):
        raise _invalid(name, "kind", "FieldValueInvalid",
                       f'Invalid value: "{scale.get("apiVersion")}, {scale.get("kind")}": must be '
                       f"{API_VERSION} Scale")
    meta = scale.get("metadata")
    sent = meta.get("name") if isinstance(meta, dict) else None
    if sent not in (None, "", name):
        raise stt.bad_request(f"metadata.name: the name of the object ({sent}) does not match "
                              f"the name on the URL ({name})")
    spec = scale.get("spec")
    replicas = spec.get("replicas") if isinstance(spec, dict) else None
    if replicas is None:
        replicas = 0  # Go decodes a missing int as 0, and Kubernetes scales to zero
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise _invalid(name, "spec.replicas", "FieldValueTypeInvalid",
                       f"Invalid value: {replicas!r}: must be an integer")
    if replicas < 0 or replicas > 2**31 - 1:
        raise _invalid(name, "spec.replicas", "FieldValueInvalid",
                       f"Invalid value: {replicas}: must be greater than or equal to 0")
    return replicas


def scaled(obj: dict[str, Any], replicas: int) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    out.setdefault("spec", {})["replicas"] = replicas
    return out
