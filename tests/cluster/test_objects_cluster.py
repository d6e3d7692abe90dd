"""The Kubernetes-style API on real masters: identical everywhere, and an informer-style
cache kept exactly in step across a leader kill while objects churn."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import pytest

from tests.cluster.harness import Cluster, wait_for

pytestmark = pytest.mark.cluster

CMS = "/api/v1/namespaces/default/configmaps"


async def rest(c: Cluster, name: str, method: str, path: str, body: Any = None, *,
               timeout: float = 5.0) -> tuple[int, Any]:
    assert c.session is not None
    headers = {"Content-Type": "application/merge-patch+json" if method == "PATCH"
               else "application/json"}
    async with c.session.request(method, c.url[name] + path,
                                 data=json.dumps(body) if body is not None else None,
                                 headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
        return resp.status, await resp.json(content_type=None)


async def any_master(c: Cluster, among: list[str], method: str, path: str,
                     body: Any = None) -> tuple[int, Any]:
    last: Any = None
    for _ in range(100):
        for name in among:
            try:
                status, out = await rest(c, name, method, path, body, timeout=3)
            except (aiohttp.ClientError, TimeoutError) as e:
                last = e
                continue
            if status != 503:
                return status, out
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{method} {path}: {last}")


async def test_every_master_serves_the_same_objects(cluster: Cluster) -> None:
    async with cluster as c:
        await c.leader()
        for i, name in enumerate(c.names):
            status, _ = await rest(c, name, "POST", CMS, {
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"from-{name}"},
                "data": {"i": str(i)}})
            assert status == 201
        lists = []
        for name in c.names:
            status, out = await rest(c, name, "GET", CMS)
            assert status == 200
            lists.append(out["items"])
        assert lists[0] == lists[1] == lists[2]
        assert {o["metadata"]["name"] for o in lists[0]} == {f"from-{n}" for n in c.names}
        for name in c.names:
            status, ns = await rest(c, name, "GET", "/api/v1/namespaces")
            assert {o["metadata"]["name"] for o in ns["items"]} >= {"default", "raftkube-system"}


class Informer:
    """client-go's pattern: list, then watch from the list's resourceVersion; on a broken
    stream re-watch from the last version seen, on 410 relist. `cache` maps names to
    objects."""

    def __init__(self, c: Cluster, rng: random.Random, first: str) -> None:
        self.c = c
        self.first = first
        self.rng = rng
        self.cache: dict[str, dict[str, Any]] = {}
        self.rv = ""
        self.relists = 0
        self.rewatches = 0

    async def relist(self) -> None:
        status, out = await any_master(self.c, self.c.names, "GET", CMS)
        assert status == 200, out
        self.cache = {o["metadata"]["name"]: o for o in out["items"]}
        self.rv = out["metadata"]["resourceVersion"]
        self.relists += 1

    async def run(self) -> None:
        await self.relist()
        assert self.c.session is not None
        while True:
            name, self.first = self.first or self.rng.choice(self.c.names), ""
            url = self.c.url[name] + CMS + f"?watch=true&resourceVersion={self.rv}" \
                                           "&allowWatchBookmarks=true"
            try:
                async with self.c.session.get(url, timeout=aiohttp.ClientTimeout(
                        total=None, sock_read=5)) as resp:
                    if resp.status == 410:
                        await self.relist()
                        continue
                    if resp.status != 200:
                        await asyncio.sleep(0.1)
                        continue
                    async for line in resp.content:
                        ev = json.loads(line)
                        obj = ev["object"]
                        if ev["type"] == "ERROR":
                            await self.relist()
                            break
                        self.rv = obj["metadata"]["resourceVersion"]
                        if ev["type"] in ("ADDED", "MODIFIED"):
                            self.cache[obj["metadata"]["name"]] = obj
                        elif ev["type"] == "DELETED":
                            self.cache.pop(obj["metadata"]["name"], None)
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                pass
            self.rewatches += 1
            await asyncio.sleep(0.05)


async def test_informer_stays_in_step_across_a_leader_kill(cluster: Cluster) -> None:
    rng = random.Random(7)
    async with cluster as c:
        leader = await c.leader()
        informer = Informer(c, random.Random(8), first=leader)  # its stream breaks
        task = asyncio.create_task(informer.run())
        alive = list(c.names)
        async def churn(steps: int) -> int:
            """Random creates, patches and deletes; each answer is one Kubernetes gives
            (a create of a name that exists: 409; a change of one that does not: 404).
            Returns how many changed something."""
            changed = 0
            for _ in range(steps):
                name = f"cm{rng.randrange(25)}"
                op = rng.random()
                if op < 0.5:
                    status, out = await any_master(c, alive, "POST", CMS, {
                        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                        "data": {"v": str(rng.random())}})
                    assert status in (201, 409), (status, out)
                elif op < 0.8:
                    status, out = await any_master(c, alive, "PATCH", f"{CMS}/{name}",
                                                   {"data": {"v": str(rng.random())}})
                    assert status in (200, 404), (status, out)
                else:
                    status, out = await any_master(c, alive, "DELETE", f"{CMS}/{name}")
                    assert status in (200, 404), (status, out)
                changed += status in (200, 201)
            return changed

        loop = asyncio.get_running_loop()
        assert await churn(150) > 0
        await loop.run_in_executor(None, c.kill, leader)
        alive.remove(leader)
        assert await churn(150) > 0, "no write went through after the leader was killed"
        # The killed master returns; the informer may land on it too.
        await loop.run_in_executor(None, c.up)
        alive = list(c.names)
        assert await churn(100) > 0

        async def in_step() -> bool:
            status, out = await any_master(c, alive, "GET", CMS)
            fresh = {o["metadata"]["name"]: o for o in out["items"]}
            return fresh == informer.cache

        await wait_for(in_step, timeout=30, what="the informer's cache to equal a fresh list")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert informer.rewatches >= 1, "the leader kill never broke the informer's stream"
