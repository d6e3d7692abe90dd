"""What an update may not change: identity, selectors, allocated addresses, running pods,
and the finalizers of an object being deleted.

These rules compare the new object with the stored one, so they live apart from the rules
that look at one object. Each protects something other parts of the cluster already rely
on: the store key (name, namespace), ownership (a workload's selector, which decides the
pods it owns), addresses handed out to clients (a Service's cluster IP and node ports), and
pods that an agent is already running (whose spec it will not re-read, beyond images).
"""

from __future__ import annotations

import copy
from typing import Any

from raftkube.api import causes, merge, schema

SELECTOR_OWNERS = ("Deployment", "ReplicaSet", "DaemonSet", "Job")
POD_UPDATE_RULE = (
    "pod updates may not change fields other than `spec.containers[*].image`, "
    "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds` (only to set or lower "
    "it), `spec.tolerations` (only additions to existing tolerations) or `spec.nodeName` "
    "(only to bind an unbound pod)")


def validate_update(new: dict[str, Any], old: dict[str, Any], *, errs: causes.Causes) -> None:
    kind = new.get("kind")
    if old.get("kind") != kind:
        errs.immutable("kind", kind)
        return
    new_meta = schema.get_map(new, "metadata") or {}
    old_meta = schema.get_map(old, "metadata") or {}
    for field in ("name", "namespace", "uid", "creationTimestamp"):
        if not merge.same(new_meta.get(field), old_meta.get(field)):
            errs.immutable(f"metadata.{field}", new_meta.get(field))
    if old_meta.get("deletionTimestamp"):
        _no_new_finalizers(new_meta, old_meta, errs=errs)
    new_spec = schema.get_map(new, "spec") or {}
    old_spec = schema.get_map(old, "spec") or {}
    if kind in SELECTOR_OWNERS and not merge.same(new_spec.get("selector"),
                                                   old_spec.get("selector")):
        errs.immutable("spec.selector", new_spec.get("selector"))
    if kind == "Job" and not merge.same(new_spec.get("template"), old_spec.get("template")):
        errs.immutable("spec.template", new_spec.get("template"))
    if kind == "Service":
        _service(new_spec, old_spec, errs=errs)
    if kind == "Pod":
        _pod(new_spec, old_spec, errs=errs)
    if kind in ("ConfigMap", "Secret"):
        _config(new, old, errs=errs)
    if kind == "EndpointSlice" and not merge.same(new.get("addressType"),
                                                  old.get("addressType")):
        errs.immutable("addressType", new.get("addressType"))


def _no_new_finalizers(new: dict[str, Any], old: dict[str, Any], *,
                       errs: causes.Causes) -> None:
    """An object being deleted may lose finalizers but never gain one: whoever waits for
    its deletion must be able to count on the list only shrinking (Kubernetes' rule)."""
    was = {f for f in schema.as_list(old.get("finalizers")) or [] if isinstance(f, str)}
    extra = sorted({f for f in schema.as_list(new.get("finalizers")) or []
                    if isinstance(f, str)} - was)
    if extra:
        shown = ", ".join(f'"{f}"' for f in extra)
        errs.forbidden("metadata.finalizers", "no new finalizers can be added if the object "
                                              f"is being deleted, found new finalizers "
                                              f"[]string{{{shown}}}")


def _service(new: dict[str, Any], old: dict[str, Any], *, errs: causes.Causes) -> None:
    was = old.get("clusterIP")
    if isinstance(was, str) and was and not merge.same(new.get("clusterIP"), was):
        errs.immutable("spec.clusterIP", new.get("clusterIP"))
    old_ports = schema.maps(old.get("ports"))
    by_name = {p["name"]: p for _, p in old_ports if isinstance(p.get("name"), str)
               and p["name"]}
    by_index = dict(old_ports)
    for i, port in schema.maps(new.get("ports")):
        now = schema.get_int(port, "nodePort")
        if not now:
            continue  # not given: the server keeps (or frees) the allocated one
        name = schema.get_str(port, "name")
        before = by_name.get(name) if name else by_index.get(i)
        then = schema.get_int(before, "nodePort")
        if then and then != now:
            errs.immutable(f"spec.ports[{i}].nodePort", now)


def _pod(new: dict[str, Any], old: dict[str, Any], *, errs: causes.Causes) -> None:
    """Kubernetes' pod update rule: mask what may change, then nothing else may differ."""
    masked = copy.deepcopy(new)
    for field in ("containers", "initContainers"):
        now, then = schema.as_list(masked.get(field)), schema.as_list(old.get(field))
        if now is None or then is None or len(now) != len(then):
            continue
        for c, was in zip(now, then, strict=True):
            if isinstance(c, dict) and isinstance(was, dict) and "image" in was:
                if isinstance(c.get("image"), str) and c["image"]:
                    c["image"] = was["image"]
    deadline, was_deadline = (schema.get_int(new, "activeDeadlineSeconds"),
                              schema.get_int(old, "activeDeadlineSeconds"))
    if deadline is not None and (was_deadline is None or 0 < deadline <= was_deadline):
        _restore(masked, old, "activeDeadlineSeconds")
    tolerations, was_tolerations = (schema.as_list(new.get("tolerations")) or [],
                                    schema.as_list(old.get("tolerations")) or [])
    if all(any(merge.same(t, n) for n in tolerations) for t in was_tolerations):
        _restore(masked, old, "tolerations")
    if not old.get("nodeName") and isinstance(new.get("nodeName"), str):
        _restore(masked, old, "nodeName")  # binding: an unbound pod gets its node once
    if not merge.same(masked, old):
        changed = sorted(k for k in set(masked) | set(old)
                         if not merge.same(masked.get(k), old.get(k)))
        errs.forbidden("spec", f"{POD_UPDATE_RULE} (changed: "
                               f"{', '.join('spec.' + str(k) for k in changed)})")


def _restore(masked: dict[str, Any], old: dict[str, Any], field: str) -> None:
    if field in old:
        masked[field] = copy.deepcopy(old[field])
    else:
        masked.pop(field, None)


def _config(new: dict[str, Any], old: dict[str, Any], *, errs: causes.Causes) -> None:
    if new.get("kind") == "Secret" and "type" in old and not merge.same(new.get("type"),
                                                                        old.get("type")):
        errs.immutable("type", new.get("type"))
    if old.get("immutable") is not True:
        return
    if new.get("immutable") is not True:
        errs.forbidden("immutable", "field is immutable when `immutable` is set")
    for field in ("data", "binaryData", "stringData"):
        if not merge.same(new.get(field), old.get(field)):
            errs.forbidden(field, "field is immutable when `immutable` is set")
