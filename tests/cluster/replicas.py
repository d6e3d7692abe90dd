"""A ReplicaSet and a live view of its pods, for the node-loss tests and benchmark.

`replicaset_running(client, NAME, N)` creates the ReplicaSet `NAME` (N pods labelled
`app=NAME`, a container port named `http`) and yields a `Pods` view kept current by an
informer, so that a test reads where the pods are as the controllers move them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from raftkube.api import conditions, kinds
from raftkube.client import informer as inf
from raftkube.client import rest

Obj = dict[str, Any]


def active(pod: Obj) -> bool:
    """Neither finished nor being deleted: what a ReplicaSet counts."""
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def replicaset(name: str, replicas: int, *, port: int = 8080) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                         "terminationGracePeriodSeconds": 5, "containers": [
                             {"name": "app", "image": "busybox:1.36",
                              "ports": [{"name": "http", "containerPort": port}]}]}}}}


class Pods:
    def __init__(self, client: rest.RestClient, name: str, namespace: str = "default") -> None:
        self.informer = inf.Informer(client, kinds.POD, namespace=namespace,
                                     label_selector=f"app={name}")

    def all(self) -> list[Obj]:
        return self.informer.cache.list()

    def active(self) -> list[Obj]:
        return [p for p in self.all() if active(p)]

    def ready(self) -> list[Obj]:
        return [p for p in self.active() if conditions.is_true(p, "Ready")]


@contextlib.asynccontextmanager
async def replicaset_running(client: rest.RestClient, name: str, replicas: int,
                             namespace: str = "default") -> AsyncIterator[Pods]:
    pods = Pods(client, name, namespace)
    task = asyncio.ensure_future(pods.informer.run())
    try:
        await client.create(kinds.REPLICASET, namespace, replicaset(name, replicas))
        await pods.informer.wait_synced()
        yield pods
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
