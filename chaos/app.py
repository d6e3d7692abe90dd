"""The app of the app scenarios: a Deployment behind a NodePort Service, asked over HTTP
through every node while faults happen, and its pods watched.

What it measures:
- **Availability as a client sees it.** Every `PERIOD` seconds one *tick* asks every
  node's NodePort at once (each request bounded by `REQUEST_TIMEOUT`); a tick succeeds
  when any node answered 200, as a client that tries each node in turn would be served.
  `unavailable()` turns the ticks into windows: a window opens at the first tick that
  failed after one that succeeded and closes at the start of the next tick that
  succeeded (or at the end), so its length is how long no request could be served.
- **What a rolling update promised.** `PodTracker` hears every state of the app's pods
  through an informer (every write is one watch event, in order): the most pods alive at
  once (not terminating, not finished), and any pod whose `spec.nodeName` changed once
  set (bound to two nodes) or that was bound again after being unbound (bound twice).

The HTTP part needs real containers: the scenarios that use it run Docker agents (the
simulated runtime has no process that could answer). The app is busybox's httpd serving
its pod's name, as the demo's (examples/hello-web.yaml); a template change is an
annotation of the pod template, so a rolling update needs no second image.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from raftkube.api import kinds
from raftkube.client import informer as inf
from raftkube.client import rest
from raftkube.client.errors import ApiError, ClientError

Obj = dict[str, Any]
NAMESPACE = "default"
PERIOD = 0.1  # seconds between the starts of two ticks
REQUEST_TIMEOUT = 1.0  # one request; a slower answer counts as none


# ---- the pure part: availability and pod counts ----------------------------------------

@dataclass(frozen=True)
class Tick:
    """One round of requests: when it started, when it ended, whether any answered."""

    start: float
    end: float
    ok: bool


@dataclass(frozen=True)
class Unavailability:
    total: float
    longest: float
    windows: list[tuple[float, float]]  # (start, end) of each window without an answer


def unavailable(ticks: list[Tick]) -> Unavailability:
    """The windows in which no tick succeeded, from the ticks in any order."""
    windows: list[tuple[float, float]] = []
    opened: float | None = None
    last_end = 0.0
    for tick in sorted(ticks, key=lambda t: t.start):
        last_end = max(last_end, tick.end)
        if tick.ok:
            if opened is not None:
                windows.append((opened, tick.start))
                opened = None
        elif opened is None:
            opened = tick.start
    if opened is not None:
        windows.append((opened, last_end))
    lengths = [end - start for start, end in windows]
    return Unavailability(total=round(sum(lengths), 3),
                          longest=round(max(lengths, default=0.0), 3), windows=windows)


def is_alive(pod: Obj) -> bool:
    """Neither terminating nor finished: a pod that counts against replicas + maxSurge."""
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and \
        (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def version_of(pod: Obj) -> str:
    """The app version (template annotation) that the pod was made from."""
    return str(((pod.get("metadata") or {}).get("annotations") or {}).get("chaos/version"))


@dataclass
class PodTracker:
    """The pods labelled `app=<app>`, as add/update/delete events tell them."""

    app: str
    pods: dict[str, Obj] = field(default_factory=dict)  # uid -> newest state
    peak: int = 0  # the most pods alive at once
    bindings: dict[str, int] = field(default_factory=dict)  # uid -> times it became bound
    rebound: list[str] = field(default_factory=list)  # what went wrong, pod by pod

    def _ours(self, pod: Obj) -> bool:
        return ((pod.get("metadata") or {}).get("labels") or {}).get("app") == self.app

    def alive(self) -> int:
        return sum(1 for p in self.pods.values() if is_alive(p))

    def reset_peak(self) -> None:
        self.peak = self.alive()

    def add(self, pod: Obj) -> None:
        if not self._ours(pod):
            return
        uid = str(pod["metadata"].get("uid", ""))
        if (pod.get("spec") or {}).get("nodeName"):
            self.bindings[uid] = self.bindings.get(uid, 0) + 1
        self.pods[uid] = pod
        self.peak = max(self.peak, self.alive())

    def update(self, old: Obj, new: Obj) -> None:
        if not self._ours(new):
            return
        uid = str(new["metadata"].get("uid", ""))
        name = new["metadata"].get("name")
        was = (old.get("spec") or {}).get("nodeName") or ""
        now = (new.get("spec") or {}).get("nodeName") or ""
        if was and now != was:
            self.rebound.append(f"pod {name} ({uid}) moved from node {was!r} to {now!r}")
        elif now and not was:
            self.bindings[uid] = self.bindings.get(uid, 0) + 1
            if self.bindings[uid] > 1:
                self.rebound.append(f"pod {name} ({uid}) bound a second time, to {now}")
        self.pods[uid] = new
        self.peak = max(self.peak, self.alive())

    def delete(self, pod: Obj) -> None:
        self.pods.pop(str((pod.get("metadata") or {}).get("uid", "")), None)

    def handler(self) -> inf.Handler:
        return inf.Handler(add=self.add, update=self.update, delete=self.delete)

    def nodes(self) -> dict[str, str]:
        """Alive pod name -> its node ('' while unbound)."""
        return {p["metadata"]["name"]: (p.get("spec") or {}).get("nodeName") or ""
                for p in self.pods.values() if is_alive(p)}


# ---- the manifests --------------------------------------------------------------------

def deployment(name: str, replicas: int, max_surge: int, version: str = "1") -> Obj:
    serve = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": max_surge, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app": name},
                             "annotations": {"chaos/version": version}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,  # httpd as PID 1 ignores SIGTERM
                    "containers": [{
                        "name": "web", "image": "busybox:1.36",
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["sh", "-c", serve],
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                           "periodSeconds": 1},
                    }],
                },
            },
        },
    }


def service(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {"type": "NodePort", "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


UNAVAILABLE = (429, 500, 503, 504)


async def retry(attempt: Any, *, timeout: float = 30.0,
                codes: tuple[int, ...] = (409, *UNAVAILABLE)) -> Any:
    """An object-API request retried through elections (and, by default, conflicts)
    within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except ClientError as e:
            if time.monotonic() > deadline or (isinstance(e, ApiError) and e.code not in codes):
                raise
            await asyncio.sleep(0.2)


# ---- the app ---------------------------------------------------------------------------

class App:
    """`await app.create()`, `app.start()` the poller and watcher, faults, `await app.stop()`."""

    def __init__(self, client: rest.RestClient, *, name: str = "chaos-web",
                 replicas: int = 2, max_surge: int = 1) -> None:
        self.client = client
        self.name = name
        self.replicas = replicas
        self.max_surge = max_surge
        self.version = 1
        self.urls: list[str] = []
        self.ticks: list[Tick] = []
        self.answers: dict[str, int] = {}  # url -> successful requests
        self.tracker = PodTracker(name)
        self.informer = inf.Informer(client, kinds.POD, namespace=NAMESPACE,
                                     label_selector=f"app={name}")
        self.informer.add_handler(self.tracker.handler())
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    async def create(self, timeout: float = 120.0) -> None:
        """The Deployment and Service, made (or made again); wait until every replica is
        ready and the app answers through a NodePort."""
        for kind, obj in ((kinds.DEPLOYMENT, deployment(self.name, self.replicas,
                                                        self.max_surge)),
                          (kinds.SERVICE, service(self.name))):
            try:
                await retry(lambda k=kind, o=obj: self.client.create(k, NAMESPACE, o),
                            codes=UNAVAILABLE)
            except ApiError as e:
                if e.code != 409:  # already there (a retried create that had worked)
                    raise
        svc = await retry(lambda: self.client.get(kinds.SERVICE, NAMESPACE, self.name))
        port = svc["spec"]["ports"][0]["nodePort"]
        nodes = await retry(lambda: self.client.list(kinds.NODE))
        self.urls = [f"http://{a['address']}:{port}/"
                     for n in sorted(nodes["items"], key=lambda n: n["metadata"]["name"])
                     for a in (n.get("status") or {}).get("addresses") or []
                     if a.get("type") == "InternalIP"]
        if not self.urls:
            raise RuntimeError("no node has an InternalIP address to reach the NodePort on")
        await self.rolled_out(timeout)
        deadline = time.monotonic() + 30
        self._session = aiohttp.ClientSession()
        while not await self._tick_ok():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app does not answer on {self.urls} within 30s")
            await asyncio.sleep(0.2)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._poll()),
                       asyncio.create_task(self.informer.run())]

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            if task is not self._tasks[0]:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # ---- HTTP ------------------------------------------------------------------------

    async def _ask(self, url: str) -> bool:
        assert self._session is not None
        try:
            async with self._session.get(
                    url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)) as resp:
                await resp.read()
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            return False
        if ok:
            self.answers[url] = self.answers.get(url, 0) + 1
        return ok

    async def _tick_ok(self) -> bool:
        return any(await asyncio.gather(*(self._ask(u) for u in self.urls)))

    async def _poll(self) -> None:
        deadline = time.monotonic() + 3600  # bounded, whatever the scenario does
        while not self._stop.is_set() and time.monotonic() < deadline:
            start = time.monotonic()
            ok = await self._tick_ok()
            self.ticks.append(Tick(start, time.monotonic(), ok))
            await asyncio.sleep(max(0.0, start + PERIOD - time.monotonic()))

    def unavailability(self, since: float = 0.0) -> Unavailability:
        return unavailable([t for t in self.ticks if t.start >= since])

    # ---- the Deployment --------------------------------------------------------------

    async def change_template(self) -> None:
        """Start a rolling update: a new value of a pod template annotation (a merge
        patch: it leaves the containers as they are)."""
        self.version += 1
        patch = {"spec": {"template": {"metadata": {"annotations": {
            "chaos/version": str(self.version)}}}}}
        await retry(lambda: self.client.patch(kinds.DEPLOYMENT, NAMESPACE, self.name, patch))

    async def rolled_out(self, timeout: float = 120.0) -> float:
        """Wait until the Deployment's newest template runs on every replica, ready, and
        nothing else is left; returns how long that took."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            try:
                d = await self.client.get(kinds.DEPLOYMENT, NAMESPACE, self.name)
                st = d.get("status") or {}
                if (st.get("observedGeneration", 0) >= d["metadata"]["generation"]
                        and st.get("updatedReplicas") == self.replicas
                        and st.get("replicas") == self.replicas
                        and st.get("readyReplicas") == self.replicas
                        and st.get("availableReplicas") == self.replicas):
                    return round(time.monotonic() - started, 3)
            except ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment {self.name} not rolled out in {timeout:g}s")
            await asyncio.sleep(0.25)

    def report(self) -> dict[str, Any]:
        u = self.unavailability()
        return {"app_unavailable_seconds": u.total,
                "app_longest_unavailable_seconds": u.longest,
                "app_unavailable_windows": len(u.windows),
                "app_unavailable_window_seconds": [round(b - a, 3) for a, b in u.windows],
                "app_ticks": len(self.ticks),
                "app_answers_by_url": dict(self.answers),
                "app_max_pods": self.tracker.peak,
                "app_pods_rebound": list(self.tracker.rebound)}
