"""The machine provider: the one thing the cloud controller asks about the world.

A provider answers four questions, as Kubernetes' cloud-provider interface does
(`InstancesV2` and `LoadBalancer`), in the smallest shape that serves raftkube:

- `machines(view)`: the machines there are, each with the Node name it carries, its
  addresses, its `spec.providerID` and its optional labels (instance type, zone);
- `exists(node, view)`: whether the machine of a Node still exists (asked fresh before a
  Node is deleted, never answered from a list read earlier);
- `ensure_load_balancer(service, view)`: make a `type: LoadBalancer` Service reachable and
  say at which addresses (its `status.loadBalancer.ingress` IPs);
- `delete_load_balancer(service, view)`: undo that (idempotent).

Every call gets a `View`: what the cluster knows (its Nodes, Services and EndpointSlices,
from the controller's caches, never to be changed), so that a provider needs no client of
its own. Calls are coroutines and must not block the event loop (a provider that shells
out uses asyncio's subprocesses, one that calls a blocking SDK `asyncio.to_thread`); the
controller bounds each with a timeout and treats any exception as a provider error: an
Event, and a retry with back-off.

Providers are found by name in the entry point group `raftkube.cloud_providers`; the
entry point is a callable that takes no argument and returns the provider (a class
does). `local` and `vagrant` are registered there by raftkube itself.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Obj = dict[str, Any]
GROUP = "raftkube.cloud_providers"
NONE = "none"  # `--cloud-provider none`: no cloud loops at all
# The built-ins, in case the installed metadata predates them (an editable install that
# was not installed again): the same callables their entry points name.
BUILTIN = {"local": "raftkube.cloud.local:LocalProvider",
           "vagrant": "raftkube.cloud.vagrant:VagrantProvider"}


class ProviderError(Exception):
    """A provider could not answer (its message says what failed and what to do)."""


class Unavailable(ProviderError):
    """The load balancer cannot be there now (e.g. its port is taken), as opposed to a
    provider that could not be reached: the Service keeps no ingress meanwhile."""


@dataclass(frozen=True)
class Machine:
    """One machine as its provider sees it."""

    name: str  # the name of the Node that runs on it
    provider_id: str  # `spec.providerID`, e.g. `local://n1`
    addresses: tuple[str, ...] = ()
    instance_type: str = ""  # node.kubernetes.io/instance-type ("" = no label)
    zone: str = ""  # topology.kubernetes.io/zone ("" = no label)


@dataclass(frozen=True)
class View:
    """The cluster as the controller's caches have it (shared objects: read only)."""

    nodes: Sequence[Obj] = ()
    services: Sequence[Obj] = ()
    slices: Sequence[Obj] = ()
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    name: str

    async def machines(self, view: View) -> list[Machine]: ...

    async def exists(self, node: Obj, view: View) -> bool: ...

    async def ensure_load_balancer(self, service: Obj, view: View) -> list[str]: ...

    async def delete_load_balancer(self, service: Obj, view: View) -> None: ...


def wants_load_balancer(service: Obj) -> bool:
    """Whether a Service should have a load balancer now: `type: LoadBalancer`, not of
    another implementation's `loadBalancerClass`, and not being deleted."""
    spec = service.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass") and \
        not (service.get("metadata") or {}).get("deletionTimestamp")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    found = {ep.name: ep for ep in importlib.metadata.entry_points(group=GROUP)}
    for name, target in BUILTIN.items():
        found.setdefault(name, importlib.metadata.EntryPoint(name, target, GROUP))
    return found


def names() -> list[str]:
    """Every provider name that can be loaded (and `none`)."""
    return sorted([*_entry_points(), NONE])


def load(name: str) -> Provider | None:
    """The provider registered as `name` (None for `none`); a ValueError naming the flag
    when there is no such provider or it cannot be made."""
    if name == NONE:
        return None
    known = _entry_points()
    entry = known.get(name)
    if entry is None:
        raise ValueError(f"--cloud-provider: no provider named {name!r} (known: "
                         f"{', '.join(names())}); a provider registers itself in the entry "
                         f"point group {GROUP!r} (docs/cloud.md)")
    try:
        factory: Callable[[], Any] = entry.load()
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--cloud-provider: provider {name!r} cannot be loaded: {e}") from None
    try:
        made = factory()
    except ProviderError as e:
        raise ValueError(f"--cloud-provider: provider {name!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a plugin's own failure, said as such
        raise ValueError(f"--cloud-provider: provider {name!r} cannot be made: "
                         f"{type(e).__name__}: {e}") from None
    if not isinstance(made, Provider):
        raise ValueError(f"--cloud-provider: {name!r} did not make a provider (it needs "
                         "name, machines, exists, ensure_load_balancer, delete_load_balancer)")
    return made
