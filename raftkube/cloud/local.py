"""The `local` provider (the default): the machines are the agents.

A machine is a registered Node: the agent that registered it is the machine, so a
machine exists exactly as long as its Node does, and nothing is ever deleted for being
gone (a silent agent is the node lifecycle controller's business). Its providerID is
`local://NODE` and its instance type `local`, as k3s labels its nodes `k3s`; no zone.

Load balancers are served by the agents (nodelb.py): ensuring one chooses the Ready
nodes' addresses, deleting one has nothing to undo (the agents stop listening when the
Service is no longer a LoadBalancer listing their address).

It is also the worked example of docs/cloud.md: a provider is a class with these four
coroutines and a `name`, registered in the entry point group `raftkube.cloud_providers`.
"""

from __future__ import annotations

from typing import Any

from raftkube.cloud import nodelb
from raftkube.cloud import provider as pv

Obj = dict[str, Any]


class LocalProvider:
    name = "local"

    async def machines(self, view: pv.View) -> list[pv.Machine]:
        out = []
        for node in view.nodes:
            name = node["metadata"]["name"]
            ip = nodelb.internal_ip(node)
            out.append(pv.Machine(name=name, provider_id=f"local://{name}",
                                  addresses=(ip,) if ip else (), instance_type="local"))
        return out

    async def exists(self, node: Obj, view: pv.View) -> bool:
        return True  # the machine is the agent: it is there while its Node is

    async def ensure_load_balancer(self, service: Obj, view: pv.View) -> list[str]:
        return nodelb.addresses(service, view)

    async def delete_load_balancer(self, service: Obj, view: pv.View) -> None:
        return None  # the agents stop serving it by themselves
