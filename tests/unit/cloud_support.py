"""A fake machine provider and the cloud loops' context over the controller fixture."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from raftkube.api.timestamps import rfc3339
from raftkube.cloud import context
from raftkube.cloud import provider as pv
from tests.unit.controller_fixture import T0, Fixture

Obj = dict[str, Any]


@dataclass
class FakeProvider:
    """Machines by name; `fail` makes every call raise it; `hang` makes calls wait."""

    name: str = "fake"
    listed: list[pv.Machine] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)  # what `exists` denies
    ingress: list[str] = field(default_factory=lambda: ["192.0.2.10"])
    fail: Exception | None = None
    hang: bool = False
    calls: list[str] = field(default_factory=list)

    async def _answer(self, what: str) -> None:
        self.calls.append(what)
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail

    async def machines(self, view: pv.View) -> list[pv.Machine]:
        await self._answer("machines")
        return list(self.listed)

    async def exists(self, node: Obj, view: pv.View) -> bool:
        await self._answer(f"exists {node['metadata']['name']}")
        return node["metadata"]["name"] not in self.gone

    async def ensure_load_balancer(self, service: Obj, view: pv.View) -> list[str]:
        await self._answer(f"ensure {service['metadata']['name']}")
        return list(self.ingress)

    async def delete_load_balancer(self, service: Obj, view: pv.View) -> None:
        await self._answer(f"delete {service['metadata']['name']}")


def cloud_context(f: Fixture, provider: Any, **options: Any) -> context.Context:
    return context.Context(provider=provider, client=f.client,  # type: ignore[arg-type]
                           informers=f.informers, events=f.events, clock=lambda: f.now,
                           options=context.Options(**options))


def node(name: str, ready: str | None = "True", *, ip: str = "", provider_id: str = "",
         labels: dict[str, str] | None = None, unschedulable: bool = False) -> Obj:
    out: Obj = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "uid": f"u-{name}", "resourceVersion": "5",
                             "labels": dict(labels or {})},
                "spec": {}, "status": {"conditions": [], "addresses": []}}
    if provider_id:
        out["spec"]["providerID"] = provider_id
    if unschedulable:
        out["spec"]["unschedulable"] = True
    if ready is not None:
        out["status"]["conditions"] = [{"type": "Ready", "status": ready,
                                        "lastHeartbeatTime": rfc3339(T0)}]
    if ip:
        out["status"]["addresses"] = [{"type": "InternalIP", "address": ip},
                                      {"type": "Hostname", "address": name}]
    return out


def service(name: str, *, type_: str = "LoadBalancer", port: int = 80, created: float = T0,
            finalizers: list[str] | None = None, ingress: list[str] | None = None,
            namespace: str = "default", **spec: Any) -> Obj:
    out: Obj = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": namespace, "uid": f"u-{name}",
                             "resourceVersion": "7", "creationTimestamp": rfc3339(created)},
                "spec": {"type": type_, "clusterIP": "10.96.0.20", "selector": {"app": name},
                         "ports": [{"port": port, "protocol": "TCP", "targetPort": port}],
                         **spec},
                "status": {}}
    if finalizers:
        out["metadata"]["finalizers"] = list(finalizers)
    if ingress:
        out["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return out


def endpoint_slice(service_name: str, *endpoints: tuple[str, str, bool],
                   namespace: str = "default") -> Obj:
    """A slice of `service_name` with (ip, node, ready) endpoints."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service_name}-abc", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4", "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": on, "conditions": {"ready": ok}}
                          for ip, on, ok in endpoints]}
