"""The ConfigMaps and Secrets that the pods of one node refer to, read by name.

A node token may read exactly the ConfigMaps and Secrets of the pods bound to its node,
one GET at a time (the API server's node authorizer): it may not list or watch them. So
the kubelet keeps a small cache of what it read, as Kubernetes' TTL-based configmap and
secret managers do: `load(pod, max_age)` answers a pod's references from the cache when
they were read within `max_age` seconds and GETs the others (a pod about to start a
container asks for fresh ones: `max_age` 0), and `refresh(in_use)` reads again every object some pod
still refers to and forgets the others. Whenever a read finds an object changed (or
created, or deleted), `on_change` hears its key, so that the kubelet syncs the pods that
use it: that is how a ConfigMap update reaches a running pod's volume.

An object that does not exist is cached as None: a pod waiting for it is retried, and
its creation is noticed at the next refresh.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

from raftkube.api import kinds, references
from raftkube.client import rest
from raftkube.client.errors import ApiError, ClientError

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (plural, namespace, name)
KINDS = {references.CONFIGMAPS: kinds.CONFIGMAP, references.SECRETS: kinds.SECRET}


def keys_of(pod: Obj) -> set[Key]:
    namespace = str((pod.get("metadata") or {}).get("namespace") or "")
    return {(plural, namespace, name)
            for plural, name in references.pod_references(pod.get("spec") or {})}


def _version(obj: Obj | None) -> str | None:
    return None if obj is None else str((obj.get("metadata") or {}).get("resourceVersion"))


class ReferencedObjects:
    def __init__(self, client: rest.RestClient, *, clock: Callable[[], float],
                 on_change: Callable[[Key], None] | None = None) -> None:
        self.client = client
        self.clock = clock
        self.on_change = on_change
        self._cache: dict[Key, tuple[Obj | None, float]] = {}  # key -> (object, read at)
        self.reads = 0

    async def _read(self, key: Key) -> Obj | None:
        plural, namespace, name = key
        self.reads += 1
        try:
            found: Obj | None = await self.client.get(KINDS[plural], namespace, name)
        except ApiError as e:
            if e.code != 404:
                raise
            found = None
        before = self._cache.get(key)
        self._cache[key] = (found, self.clock())
        if before is not None and _version(before[0]) != _version(found) and \
                self.on_change is not None:
            self.on_change(key)
        return found

    async def load(self, pod: Obj, *, max_age: float = math.inf
                   ) -> dict[tuple[str, str], Obj | None]:
        """The pod's references by (plural, name): None for one that does not exist.
        API errors other than 404 (the API unreachable, a refusal) are raised."""
        now = self.clock()
        out: dict[tuple[str, str], Obj | None] = {}
        for key in sorted(keys_of(pod)):
            cached = self._cache.get(key)
            if cached is not None and max_age > 0 and now - cached[1] <= max_age:
                out[(key[0], key[2])] = cached[0]
            else:
                out[(key[0], key[2])] = await self._read(key)
        return out

    async def refresh(self, in_use: Iterable[Key]) -> None:
        """Read again every object in use; forget the others."""
        wanted = set(in_use)
        for key in [k for k in self._cache if k not in wanted]:
            del self._cache[key]
        for key in sorted(wanted):
            try:
                await self._read(key)
            except ClientError as e:  # one bad read must not stop the others
                log.info("reading %s %s/%s failed: %s", *key, e)
