"""The core `v1` Endpoints of Services, read-only, made on each read from their
EndpointSlices.

Kubernetes keeps both: Endpoints, one per Service, and the EndpointSlices that replaced
them. raftkube's endpoints controller writes slices only, and its proxies and DNS read
those; but kubectl before 1.33 reads a Service's addresses from its Endpoints (`kubectl
describe service`: "Endpoints:"), `kubectl get endpoints` lists them, and older tools
watch nothing else. So they are served, and never stored: an Endpoints object is the
slices labelled `kubernetes.io/service-name=NAME`, their ready addresses in `addresses`
and the others in `notReadyAddresses`, grouped in subsets by port set, as Kubernetes
groups them. Its resourceVersion is the newest of its slices', its creationTimestamp the
oldest's, its uid derived from its Service's (the slices' owner).

Only get and list are served (discovery says so): a write, or a watch, is a 405 that
says to use the EndpointSlices.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from raftkube.api import kinds, names, selectors
from raftkube.apiserver import objects as ob
from raftkube.apiserver import status as stt

KIND = kinds.Kind("", "v1", "Endpoints", "endpoints", True, ("ep",))
SLICE = ob.known_kind("discovery.k8s.io/v1", "EndpointSlice")
SERVICE_NAME = "kubernetes.io/service-name"
SLICE_ONLY_LABELS = (SERVICE_NAME, "endpointslice.kubernetes.io/managed-by")
DISCOVERY = {"name": "endpoints", "singularName": "endpoints", "namespaced": True,
             "kind": "Endpoints", "shortNames": ["ep"], "verbs": ["get", "list"]}
_PATH = re.compile(r"^/api/v1/(?:namespaces/(?P<ns>[^/]+)/)?endpoints(?:/(?P<name>[^/]+))?/?$")
_UIDS = uuid.UUID("6f1c1b1e-5a0e-4f7e-9a53-0e6f7a1d2c3b")  # the namespace of derived uids

Obj = dict[str, Any]


def match(path: str) -> tuple[str, str] | None:
    """(namespace, name) of an Endpoints path (either may be ""), or None."""
    found = _PATH.match(path)
    if found is None:
        return None
    namespace, name = found.group("ns") or "", found.group("name") or ""
    if name and not namespace:
        return None  # a namespaced kind: named only under its namespace
    return namespace, name


def refuse_method(method: str) -> stt.ApiError:
    return stt.ApiError(405, "MethodNotAllowed",
                        f"the server does not allow this method on the requested resource "
                        f"({method} endpoints): Endpoints are read-only here, made from the "
                        "EndpointSlices (discovery.k8s.io/v1), which the endpoints controller "
                        "writes")


def of_slices(namespace: str, name: str, slices: list[Obj]) -> Obj:
    """The Endpoints of Service `name` from its slices (at least one)."""
    subsets: dict[tuple[tuple[str, int, str], ...], Obj] = {}
    for es in sorted(slices, key=lambda s: s["metadata"]["name"]):
        # A slice port without a number (allowed there) has no place in Endpoints.
        ports = tuple((str(p.get("name") or ""), int(p["port"]),
                       str(p.get("protocol") or "TCP"))
                      for p in es.get("ports") or []
                      if isinstance(p, dict) and isinstance(p.get("port"), int))
        for ep in es.get("endpoints") or []:
            if not isinstance(ep, dict):
                continue
            subset = subsets.setdefault(ports, {"addresses": [], "notReadyAddresses": []})
            conditions = ep.get("conditions") or {}
            ready = conditions.get("ready") is not False
            if not ready and conditions.get("terminating") is True:
                continue  # a terminating pod is not listed, as the endpoints controller does
            for ip in ep.get("addresses") or []:
                address: Obj = {"ip": ip}
                for field in ("hostname", "nodeName", "targetRef"):
                    if ep.get(field):
                        address[field] = ep[field]
                subset["addresses" if ready else "notReadyAddresses"].append(address)
    metas = [es["metadata"] for es in slices]
    first = min(metas, key=lambda m: str(m.get("creationTimestamp") or ""))
    meta: Obj = {"name": name, "namespace": namespace,
                 "resourceVersion": str(max(int(m.get("resourceVersion") or 0)
                                            for m in metas))}
    if first.get("creationTimestamp"):
        meta["creationTimestamp"] = first["creationTimestamp"]
    owner = next((r for r in first.get("ownerReferences") or []
                  if isinstance(r, dict) and r.get("kind") == "Service" and r.get("uid")), None)
    if owner is not None:
        meta["uid"] = str(uuid.uuid5(_UIDS, f"{owner['uid']}/endpoints"))
    labels = {k: v for k, v in (first.get("labels") or {}).items()
              if k not in SLICE_ONLY_LABELS}
    if labels:
        meta["labels"] = labels
    out: Obj = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta}
    listed = []
    for ports, subset in sorted(subsets.items()):
        entry = {k: v for k, v in subset.items() if v}
        if not entry:
            continue
        if ports:
            entry["ports"] = [{**({"name": n} if n else {}), "port": p, "protocol": proto}
                              for n, p, proto in ports]
        listed.append(entry)
    if listed:
        out["subsets"] = listed
    return out


def group(slices: list[Obj]) -> list[Obj]:
    """The Endpoints of every Service that has slices, by namespace and name."""
    by_service: dict[tuple[str, str], list[Obj]] = {}
    for es in slices:
        meta = es.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME)
        if isinstance(service, str) and service:
            by_service.setdefault((str(meta.get("namespace") or ""), service), []).append(es)
    return [of_slices(ns, name, found) for (ns, name), found in sorted(by_service.items())]


async def get(objects: ob.Objects, namespace: str, name: str) -> Obj:
    # A Service's name is a DNS label; anything else names no Endpoints (and is never
    # read as a selector: "web,app=web" must not find web's).
    if names.dns1123_label_errors(name):
        raise stt.not_found("endpoints", name)
    result = await objects.list_objects(SLICE, namespace)
    mine = [es for es in result.items
            if ((es.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME) == name]
    if not mine:
        raise stt.not_found("endpoints", name)
    return of_slices(namespace, name, mine)


async def list_all(objects: ob.Objects, namespace: str | None,
                   label: selectors.LabelSelector | None,
                   fields: selectors.FieldSelector | None) -> tuple[list[Obj], int]:
    """The Endpoints of `namespace` (None: all) that the selectors choose, and the
    revision they were read at."""
    result = await objects.list_objects(SLICE, namespace)
    items = [e for e in group(result.items)
             if (label is None or label.matches(e["metadata"].get("labels") or {}))
             and (fields is None or fields.matches(e))]
    return items, result.revision
