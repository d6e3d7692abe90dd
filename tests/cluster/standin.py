"""A stand-in for the ReplicaSet controller, for tests and the node-loss benchmark.

The ReplicaSet controller is being written on another branch; until it is in main,
`Replicas` does the one thing these tests need from it, with its rule: keep `replicas`
pods labelled `app=NAME` that are neither finished nor being deleted (a terminating pod
does not count, so an evicted pod is replaced at once). It watches through an informer
and creates from a template, nothing more: no adoption, no scale-down order, no
ownerReferences. Swap it for a real ReplicaSet once there is one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from raftkube.api import kinds
from raftkube.client import informer as inf
from raftkube.client import rest

Obj = dict[str, Any]


def active(pod: Obj) -> bool:
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class Replicas:
    def __init__(self, client: rest.RestClient, name: str, replicas: int, *,
                 namespace: str = "default", port: int = 8080) -> None:
        self.client = client
        self.name = name
        self.replicas = replicas
        self.namespace = namespace
        self.port = port
        self.created = 0
        self.pods = inf.Informer(client, kinds.POD, namespace=namespace,
                                 label_selector=f"app={name}")
        self._changed = asyncio.Event()
        self.pods.add_handler(inf.Handler(add=self._poke, update=lambda _o, _n: self._poke(),
                                          delete=self._poke))

    def _poke(self, *_: Any) -> None:
        self._changed.set()

    def template(self) -> Obj:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": f"{self.name}-", "labels": {"app": self.name}},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [
                    {"name": "app", "image": "busybox:1.36",
                     "ports": [{"name": "http", "containerPort": self.port}]}]}}

    def active(self) -> list[Obj]:
        return [p for p in self.pods.cache.list() if active(p)]

    async def run(self) -> None:
        watching = asyncio.ensure_future(self.pods.run())
        try:
            await self.pods.wait_synced()
            made: set[str] = set()  # created, not yet seen by the informer
            while True:
                self._changed.clear()
                made = {n for n in made if self.pods.cache.get(f"{self.namespace}/{n}") is None}
                for _ in range(self.replicas - len(self.active()) - len(made)):
                    pod = await self.client.create(kinds.POD, self.namespace, self.template())
                    made.add(pod["metadata"]["name"])
                    self.created += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 1.0)
        finally:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)


@contextlib.asynccontextmanager
async def keeping(client: rest.RestClient, name: str, replicas: int) -> AsyncIterator[Replicas]:
    """`replicas` pods of `name` kept while the block runs."""
    keeper = Replicas(client, name, replicas)
    task = asyncio.ensure_future(keeper.run())
    try:
        yield keeper
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
