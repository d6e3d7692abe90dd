"""The EndpointSlice controller: for every Service with a selector, where its pods are.

`desired(service, pods, zones)` is the pure part: the pods the selector matches that
have an address (finished pods never do), each as an endpoint with Kubernetes'
conditions (`serving`: the pod is Ready; `terminating`: it is being deleted; `ready`:
serving and not terminating, or always if the Service publishes not-ready addresses),
its node, zone and a `targetRef`; the Service's ports resolved per pod (a `targetPort`
that names a port is looked up in the pod's containers, and left out for a pod that has
no such port). Endpoints with the same address type and ports share slices of at most
100 endpoints; a Service with none gets one empty slice, so that readers can tell "no
endpoints" from "not yet computed", as Kubernetes does.

Slices are named `SERVICE-HASH[-N]` from their address type and ports, so that a new
leader, or a create whose answer was lost, finds the slice it would make instead of
making a second one; readers find them by the `kubernetes.io/service-name` label.
Slices are owned by their Service (a controller reference): when it goes, the garbage
collector removes them. Writes happen only when a slice differs from what it should be,
and each is a compare-and-swap.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from raftkube.api import conditions, kinds
from raftkube.client import informer as inf
from raftkube.client import workqueue
from raftkube.client.errors import ApiError
from raftkube.controllers import base, disruption

log = logging.getLogger(__name__)

Obj = dict[str, Any]
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
HEADLESS = "service.kubernetes.io/headless"
MAX_PER_SLICE = 100
TERMINATED = ("Succeeded", "Failed")


def selects(selector: Mapping[str, Any], labels: Mapping[str, Any] | None) -> bool:
    """A Service's selector (a plain map) selects the labels: every pair is there."""
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


def pod_address(pod: Obj) -> tuple[str, str] | None:
    """(address type, IP) of a pod that has an address and has not finished."""
    status = pod.get("status") or {}
    ip = status.get("podIP")
    if not isinstance(ip, str) or not ip or status.get("phase") in TERMINATED:
        return None
    try:
        version = ipaddress.ip_address(ip).version
    except ValueError:
        return None
    return ("IPv4" if version == 4 else "IPv6"), ip


def resolve_port(service_port: Obj, pod: Obj) -> int | None:
    """The pod's port for a Service port: its targetPort as a number, or the container
    port it names (with the same protocol); None when the pod has no such port."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in (container or {}).get("ports") or []:
            if isinstance(port, dict) and port.get("name") == target and \
                    (port.get("protocol") or "TCP") == protocol:
                number = port.get("containerPort")
                return number if isinstance(number, int) else None
    return None


def ports_for(service: Obj, pod: Obj) -> tuple[tuple[str, str, int, str], ...]:
    """(name, protocol, port, appProtocol) of each Service port this pod serves."""
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        if not isinstance(sp, dict):
            continue
        number = resolve_port(sp, pod)
        if number is not None:
            out.append((str(sp.get("name") or ""), str(sp.get("protocol") or "TCP"), number,
                        str(sp.get("appProtocol") or "")))
    return tuple(out)


def endpoint_of(pod: Obj, ip: str, *, publish_not_ready: bool, zone: str) -> Obj:
    meta = pod["metadata"]
    serving = conditions.is_true(pod, "Ready")
    terminating = bool(meta.get("deletionTimestamp"))
    endpoint: Obj = {
        "addresses": [ip],
        "conditions": {"ready": publish_not_ready or (serving and not terminating),
                       "serving": serving, "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": meta.get("namespace", ""),
                      "name": meta["name"], "uid": meta.get("uid", "")},
    }
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        endpoint["nodeName"] = node
    if zone:
        endpoint["zone"] = zone
    return endpoint


def _port_objects(ports: tuple[tuple[str, str, int, str], ...]) -> list[Obj]:
    out = []
    for name, protocol, number, app in ports:
        port: Obj = {"name": name, "protocol": protocol, "port": number}
        if app:
            port["appProtocol"] = app
        out.append(port)
    return out


def slice_name(service_name: str, address_type: str, ports: Iterable[Any], index: int) -> str:
    digest = hashlib.sha256(json.dumps([address_type, list(ports)]).encode()).hexdigest()[:8]
    return f"{service_name}-{digest}" + (f"-{index}" if index else "")


def desired(service: Obj, pods: Iterable[Obj], zones: Mapping[str, str]) -> list[Obj]:
    """Every slice the Service should have, complete but for resourceVersion."""
    meta = service["metadata"]
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    publish = spec.get("publishNotReadyAddresses") is True
    groups: dict[tuple[str, tuple[tuple[str, str, int, str], ...]], list[Obj]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        address = pod_address(pod)
        if address is None or not selects(selector, pod["metadata"].get("labels")):
            continue
        zone = zones.get(str((pod.get("spec") or {}).get("nodeName") or ""), "")
        groups.setdefault((address[0], ports_for(service, pod)), []).append(
            endpoint_of(pod, address[1], publish_not_ready=publish, zone=zone))
    if not groups:
        groups[("IPv4", ())] = []  # the placeholder: "no endpoints", said once
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if k not in (SERVICE_NAME, MANAGED_BY)}
    labels.update({SERVICE_NAME: meta["name"], MANAGED_BY: CONTROLLER})
    if spec.get("clusterIP") == "None":
        labels[HEADLESS] = ""
    owner = base.owner_ref({"apiVersion": "v1", "kind": "Service", "metadata": meta})
    out = []
    for (address_type, ports), endpoints in sorted(groups.items()):
        chunks = [endpoints[i:i + MAX_PER_SLICE]
                  for i in range(0, len(endpoints), MAX_PER_SLICE)] or [[]]
        for index, chunk in enumerate(chunks):
            out.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": slice_name(meta["name"], address_type, ports, index),
                             "namespace": meta.get("namespace", ""), "labels": labels,
                             "ownerReferences": [owner]},
                "addressType": address_type, "endpoints": chunk,
                "ports": _port_objects(ports)})
    return out


def differs(want: Obj, have: Obj) -> bool:
    """Whether a stored slice says something other than the wanted one."""
    wm, hm = want["metadata"], have.get("metadata") or {}
    return bool(want["endpoints"] != (have.get("endpoints") or [])
            or want["ports"] != (have.get("ports") or [])
            or want["addressType"] != have.get("addressType")
            or wm["labels"] != (hm.get("labels") or {})
            or wm["ownerReferences"] != (hm.get("ownerReferences") or []))


class EndpointSliceController:
    name = "endpointslice-controller"

    def __init__(self, ctx: base.Context) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.queue = workqueue.WorkQueue(name=self.name)
        self.services = ctx.informers.informer(kinds.SERVICE)
        self.pods = ctx.informers.informer(kinds.POD)
        self.slices = ctx.informers.informer(kinds.ENDPOINTSLICE)
        self.nodes = ctx.informers.informer(kinds.NODE)
        self.services.add_handler(inf.Handler(add=self._service,
                                              update=lambda _o, new: self._service(new)))
        self.pods.add_handler(inf.Handler(add=self._pod,
                                          update=lambda old, new: self._pod(new, old),
                                          delete=self._pod))
        self.slices.add_handler(inf.Handler(update=lambda _o, new: self._slice(new),
                                            delete=self._slice))

    def _service(self, service: Obj) -> None:
        self.queue.add(inf.key_of(service))

    def _pod(self, pod: Obj, old: Obj | None = None) -> None:
        if old is not None and old is not pod and _unchanged_for_endpoints(old, pod):
            return
        namespace = pod["metadata"].get("namespace")
        label_sets = [(pod["metadata"].get("labels") or {})]
        if old is not None:
            label_sets.append(old["metadata"].get("labels") or {})
        for service in self.services.cache.by_index(inf.NAMESPACE, str(namespace)):
            selector = (service.get("spec") or {}).get("selector")
            if selector and any(selects(selector, labels) for labels in label_sets):
                self.queue.add(inf.key_of(service))

    def _slice(self, found: Obj) -> None:
        labels = found["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY) == CONTROLLER and labels.get(SERVICE_NAME):
            self.queue.add(f"{found['metadata'].get('namespace')}/{labels[SERVICE_NAME]}")

    async def reconcile(self, key: str) -> None:
        service = self.services.cache.get(key)
        if service is None:
            return  # its slices are the garbage collector's
        spec = service.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            return  # a Service without a selector has its endpoints written by hand
        namespace = service["metadata"].get("namespace", "")
        zones = {n["metadata"]["name"]: z for n in self.nodes.cache.list()
                 if (z := (n["metadata"].get("labels") or {}).get(disruption.ZONE))}
        want = {s["metadata"]["name"]: s for s in desired(
            service, self.pods.cache.by_index(inf.NAMESPACE, namespace), zones)}
        have = {s["metadata"]["name"]: s for s in
                self.slices.cache.by_index(inf.OWNER, service["metadata"].get("uid", ""))
                if (s["metadata"].get("labels") or {}).get(MANAGED_BY) == CONTROLLER}
        try:
            for name, slice_ in want.items():
                old = have.get(name) or self.slices.cache.get(f"{namespace}/{name}")
                if old is None:
                    await self.client.create(kinds.ENDPOINTSLICE, namespace, slice_)
                elif differs(slice_, old):
                    updated = copy.deepcopy(slice_)
                    updated["metadata"]["resourceVersion"] = old["metadata"].get(
                        "resourceVersion")
                    await self.client.update(kinds.ENDPOINTSLICE, updated)
            for name, old in have.items():
                if name not in want:
                    await self.client.delete(kinds.ENDPOINTSLICE, namespace, name,
                                             uid=old["metadata"].get("uid", ""),
                                             resource_version=old["metadata"].get(
                                                 "resourceVersion", ""))
        except ApiError as e:
            if e.code not in (404, 409):  # 404, 409: changed meanwhile: again, from the cache
                self.ctx.events.event(service, "Warning", "FailedToUpdateEndpointSlices",
                                      f"Error updating Endpoint Slices for Service {key}: "
                                      f"{e}")
            raise

    async def run(self) -> None:
        await workqueue.run_workers(self.queue, self.reconcile,
                                    workers=self.ctx.options.workers)


def _unchanged_for_endpoints(old: Obj, new: Obj) -> bool:
    """Whether nothing an endpoint shows changed (most pod updates are status noise)."""
    def view(p: Obj) -> Any:
        status = p.get("status") or {}
        return (p["metadata"].get("labels"), p["metadata"].get("deletionTimestamp"),
                (p.get("spec") or {}).get("nodeName"), status.get("podIP"),
                status.get("phase"), conditions.is_true(p, "Ready"),
                [c.get("ports") for c in (p.get("spec") or {}).get("containers") or []
                 if isinstance(c, dict)])
    return bool(view(old) == view(new))
