"""`DockerRuntime`: the node's pods as containers on the local Docker engine.

It implements the kubelet's `ContainerRuntime` with the `docker` SDK's low-level API
(what each container is made with is `dockerspec.py`'s business). The SDK blocks, so
every call runs in the runtime's own bounded thread pool: a container that takes its
whole grace period to stop holds one thread, never the event loop or the threads of
the rest of the agent.

It keeps no state of its own that matters: the labels on the containers are the
record. `pods()` lists this node's containers by label (one list call; a container is
inspected once when it starts and once when it ends, since neither answer changes
after) and keeps the newest two instances of each container (older exited ones are
removed), so an agent restarted after `kill -9` sees the same containers, with the
same ids, and restarts none. What the engine's answers mean (an instance's state,
exit reason, the sandbox's IP) is `dockerstate.py`'s, pure.

Images follow imagePullPolicy: Never uses what is present (`ErrImageNeverPull`
otherwise), IfNotPresent pulls what is missing, Always pulls every time. A pull that
fails raises `ImagePullFailure(ErrImagePull, the engine's message)`, except that with
Always an image that is present is used after a failed pull (logged; not retried for a
minute): machines without a registry, like this project's, run `busybox:latest` from
their local images, which Kubernetes would refuse.

Stopping a container runs its preStop hook (kept in a label, so it survives an agent
restart), then the engine's stop: SIGTERM, and SIGKILL once the rest of the grace
period has passed (at least 2 s after a hook, as the kubelet gives).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import math
import os
import shutil
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions

from raftkube.agent import dockerio, hooks, mounts
from raftkube.agent import dockerspec as ds
from raftkube.agent import dockerstate as dst
from raftkube.agent import runtime as rt

log = logging.getLogger(__name__)

Obj = dict[str, Any]
T = TypeVar("T")
PULL_RETRY = 60.0  # seconds a failed pull of a present image is not tried again
POST_START_TIMEOUT = 30.0
STOP_AFTER_HOOK = 2.0  # the least time between a preStop hook's end and SIGKILL
SANDBOX_STOP_GRACE = 2.0  # seconds: the pause container ends at SIGTERM
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)


def _message(e: BaseException) -> str:
    if isinstance(e, docker.errors.APIError) and e.explanation:
        return str(e.explanation)
    return str(e) or type(e).__name__


def _status(e: BaseException) -> int | None:
    return e.status_code if isinstance(e, docker.errors.APIError) else None


def connect(base_url: str | None = None, *, pool: int = 16,
            timeout: float = 120.0) -> Any:
    """A low-level client of the engine at `base_url` (DOCKER_HOST, or the local
    socket); RuntimeFailure naming the socket if it does not answer."""
    url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.APIClient(base_url=url, version="auto", timeout=int(timeout),
                                  max_pool_size=pool)
        client.ping()
    except ENGINE_ERRORS as e:
        raise rt.RuntimeFailure(
            f"the Docker engine at {url} does not answer ({_message(e)}): start dockerd "
            "(scripts/docker-setup.sh does), or use --runtime simulated") from None
    return client


class DockerRuntime:
    name = "docker"

    def __init__(self, *, node_name: str, cluster: str, host_ip: str,
                 pause_image: str = ds.PAUSE_IMAGE, client: Any = None,
                 workers: int = 8, clock: Callable[[], float] = time.time) -> None:
        self.node_name = node_name
        self.cluster = cluster
        self.host_ip = host_ip
        self.pause_image = pause_image
        self.clock = clock
        self.api = client if client is not None else connect(pool=workers)
        self.version = str(self.api.version().get("Version") or "unknown")
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"docker-{node_name}")
        self._exec_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=2 * workers, thread_name_prefix=f"docker-exec-{node_name}")
        self._inspected: dict[str, tuple[str, Obj]] = {}  # id -> (list status, inspect)
        self._creating: set[str] = set()  # names of containers made but not yet started
        self._pull_failed: dict[str, float] = {}  # image -> when a pull of it failed
        self._pull_locks: dict[str, asyncio.Lock] = {}
        self._removing: set[str] = set()
        self._orphaning: set[str] = set()  # pods whose containers are being killed
        self._tasks: set[asyncio.Task[None]] = set()
        self._have_pause = False  # the pause image was found or pulled by this process

    # ---- the engine, off the event loop ---------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def _engine(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn` in the pool; an engine error is a RuntimeFailure saying what failed."""
        try:
            return await self._call(fn, *args, **kwargs)
        except ENGINE_ERRORS as e:
            raise rt.RuntimeFailure(f"{what}: {_message(e)}") from None

    async def _list(self, *labels: str) -> list[Obj]:
        rows: list[Obj] = await self._engine(
            "listing containers", self.api.containers, all=True,
            filters={"label": ds.selector(self.cluster, self.node_name) + list(labels)})
        return rows

    async def _inspect(self, row: Obj) -> Obj | None:
        """The inspect answer of a listed container, from the cache while its status is
        the one it was inspected in; None if it is gone meanwhile."""
        cid = row["Id"]
        cached = self._inspected.get(cid)
        if cached is not None and cached[0] == row.get("State"):
            return cached[1]
        try:
            info: Obj = await self._call(self.api.inspect_container, cid)
        except docker.errors.NotFound:
            return None
        except ENGINE_ERRORS as e:
            raise rt.RuntimeFailure(f"inspecting container {cid[:12]}: {_message(e)}") \
                from None
        self._inspected[cid] = (str(row.get("State")), info)
        return info

    async def _inspect_id(self, what: str, cid: str) -> Obj:
        """Inspect a container this runtime just made or started; the answer is kept for
        the next listing while its state is the same (a list row's `State` is the
        inspect's `State.Status`), so the relist that its events cause need not ask
        again."""
        info: Obj = await self._engine(what, self.api.inspect_container, cid)
        status = (info.get("State") or {}).get("Status")
        if status:
            self._inspected[cid] = (str(status), info)
        return info

    # ---- reading ----------------------------------------------------------------------

    def _container(self, info: Obj) -> rt.Container | None:
        return dst.container(info, now=self.clock(), creating=self._creating)

    def _sandbox(self, info: Obj) -> rt.Sandbox:
        return dst.sandbox(info, host_ip=self.host_ip, now=self.clock())

    async def pods(self, *, namespace: str | None = None, name: str | None = None
                   ) -> list[rt.PodState]:
        if name is None:
            rows = await self._list()
            listed = {r["Id"] for r in rows}
            for cid in [c for c in self._inspected if c not in listed]:
                del self._inspected[cid]
        else:  # the engine answers with that pod's containers only (a list of every
            # container costs it ~0.1 ms each, and this is read on every sync of a pod)
            rows = await self._list(f"{ds.POD_NAMESPACE}={namespace or ''}",
                                    f"{ds.POD_NAME}={name}")
        infos = await asyncio.gather(*(self._inspect(r) for r in rows))
        sandboxes: dict[str, rt.Sandbox] = {}
        dead: list[str] = []
        instances: dict[str, list[tuple[rt.Container, str]]] = {}
        for info in infos:
            if info is None:
                continue
            labels = ds.labels_of(info)
            if labels.get(ds.KIND) == ds.SANDBOX:
                sandbox = self._sandbox(info)
                sandboxes[sandbox.uid] = sandbox
                if (info.get("State") or {}).get("Status") in ("exited", "dead"):
                    dead.append(sandbox.uid)
            elif labels.get(ds.KIND) == ds.CONTAINER:
                c = self._container(info)
                if c is not None:
                    instances.setdefault(c.pod_uid, []).append((c, info["Id"]))
        # A stopped sandbox under running containers died (`_kill_orphans`); one with
        # nothing running is a pod's that ended (`stop_sandbox`), or one whose
        # containers all exited with it: the kubelet starts it again with them if the
        # pod's policy restarts them.
        for uid in dead:
            if uid not in self._orphaning and any(
                    c.state == rt.RUNNING for c, _ in instances.get(uid, [])):
                self._background(self._kill_orphans(uid))
        out = []
        for uid, sandbox in sandboxes.items():
            kept = self._keep(instances.get(uid, []))
            out.append(rt.PodState(sandbox, tuple(kept)))
        return out

    def _keep(self, found: list[tuple[rt.Container, str]]) -> list[rt.Container]:
        """The newest instances of each container; older exited ones are removed in
        the background."""
        kept, drop = dst.keep(found)
        for cid in drop:
            if cid not in self._removing:
                self._background(self._remove(cid))
        return kept

    async def _kill_orphans(self, pod_uid: str) -> None:
        """The pod's sandbox died (its pause container was killed, the engine
        restarted): its running containers have lost their network, so they are killed,
        as the kubelet kills a pod whose sandbox changed. They then read as exited, the
        kubelet restarts them as the pod's policy says, and the first start brings the
        sandbox back (`start_container`)."""
        self._orphaning.add(pod_uid)
        try:
            for row in await self._running(pod_uid):
                if ds.labels_of(row).get(ds.KIND) == ds.CONTAINER:
                    log.warning("%s: the sandbox of pod %s died; killing its container %s",
                                self.node_name, ds.labels_of(row).get(ds.POD_NAME),
                                ds.labels_of(row).get(ds.CONTAINER_NAME))
                    await self._call(self.api.kill, row["Id"])
        except ENGINE_ERRORS as e:
            log.warning("%s: killing the containers of pod %s: %s", self.node_name,
                        pod_uid, _message(e))
        except rt.RuntimeFailure as e:
            log.warning("%s: %s", self.node_name, e)
        finally:
            self._orphaning.discard(pod_uid)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove(self, cid: str) -> None:
        """Remove a container with its anonymous volumes (those of an image's VOLUME:
        nothing else could ever use them again)."""
        self._removing.add(cid)
        try:
            await self._call(self.api.remove_container, cid, force=True, v=True)
        except docker.errors.NotFound:
            pass
        except ENGINE_ERRORS as e:
            log.warning("%s: removing container %s: %s", self.node_name, cid[:12], _message(e))
        finally:
            self._removing.discard(cid)
            self._inspected.pop(cid, None)

    def changes(self) -> AsyncGenerator[None, None] | None:
        return dockerio.changes(self.api, ds.selector(self.cluster, self.node_name))

    async def recover(self, pods: Sequence[Obj]) -> None:
        """Nothing to rebuild: the containers' labels are the record. What runs is
        adopted as it is; containers of pods that are gone or moved are removed by the
        kubelet's reconcile, which sees them in `pods()`."""
        states = await self.pods()
        log.info("%s: found %d pod(s) and %d container(s) on the engine", self.node_name,
                 len(states), sum(len(s.containers) for s in states))

    # ---- sandboxes --------------------------------------------------------------------

    async def _sandbox_row(self, uid: str) -> Obj | None:
        rows = await self._list(f"{ds.POD_UID}={uid}", f"{ds.KIND}={ds.SANDBOX}")
        return rows[0] if rows else None

    async def run_sandbox(self, pod: Obj, config: rt.SandboxConfig | None = None
                          ) -> rt.Sandbox:
        uid = pod["metadata"]["uid"]
        rows = await self._list(f"{ds.POD_UID}={uid}")
        row = next((r for r in rows if ds.labels_of(r).get(ds.KIND) == ds.SANDBOX), None)
        if row is None:
            # Containers left from a sandbox removed behind our back share no network
            # with the new one: they go, and the pod's containers start afresh.
            for old in rows:
                await self._remove(old["Id"])
            if not self._have_pause:  # the runtime's own image: once is enough
                await self.ensure_image(self.pause_image, "IfNotPresent")
                self._have_pause = True
            spec = ds.sandbox_spec(pod, config or ds.default_sandbox_config(pod),
                                   cluster=self.cluster, node=self.node_name,
                                   image=self.pause_image)
            try:
                cid = await self._create(spec)
            except rt.RuntimeFailure:
                self._have_pause = False  # removed behind our back? looked for again
                raise
            await self._engine(f"starting the sandbox of pod {uid}", self.api.start, cid)
        else:
            cid = row["Id"]
            if row.get("State") != "running":
                await self._engine(f"starting the sandbox of pod {uid}", self.api.start, cid)
        info = await self._inspect_id("inspecting a sandbox", cid)
        return self._sandbox(info)

    async def _create(self, spec: ds.Spec) -> str:
        """Create the container, or find the one of that name (made by an earlier try
        that failed after it); its id."""
        return (await self._create_or_find(spec))[0]

    async def _create_or_find(self, spec: ds.Spec) -> tuple[str, bool]:
        """(id, whether it was made now) of the container `spec` names."""
        host = self.api.create_host_config(**spec.host)
        try:
            created: Obj = await self._call(self.api.create_container, name=spec.name,
                                            host_config=host, use_config_proxy=False,
                                            **spec.create)
            return str(created["Id"]), True
        except docker.errors.APIError as e:
            if e.status_code != 409:
                raise rt.RuntimeFailure(f"creating container {spec.name}: {_message(e)}") \
                    from None
        except ENGINE_ERRORS as e:
            raise rt.RuntimeFailure(f"creating container {spec.name}: {_message(e)}") \
                from None
        info = await self._engine("inspecting a container", self.api.inspect_container,
                                  spec.name)
        return str(info["Id"]), False

    # ---- images -----------------------------------------------------------------------

    async def _present(self, image: str) -> bool:
        try:
            await self._call(self.api.inspect_image, image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except docker.errors.NotFound:
            return False
        except ENGINE_ERRORS as e:
            raise rt.RuntimeFailure(f"inspecting image {image}: {_message(e)}") from None

    def _pull(self, image: str) -> None:
        repository, tag = docker.utils.parse_repository_tag(image)
        for line in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                raise docker.errors.APIError(str(line["error"]),
                                             explanation=str(line["error"]))

    async def ensure_image(self, image: str, policy: str) -> None:
        """Have `image` as `policy` says, or raise ImagePullFailure."""
        if policy == "Never":
            if not await self._present(image):
                raise rt.ImagePullFailure(
                    rt.ERR_IMAGE_NEVER_PULL,
                    f'Container image "{image}" is not present with pull policy of Never')
            return
        if policy != "Always" and await self._present(image):
            return
        lock = self._pull_locks.setdefault(image, asyncio.Lock())
        async with lock:
            failed = self._pull_failed.get(image)
            if failed is not None and self.clock() - failed < PULL_RETRY and \
                    await self._present(image):
                return
            try:
                await self._call(self._pull, image)
                self._pull_failed.pop(image, None)
            except ENGINE_ERRORS as e:
                self._pull_failed[image] = self.clock()
                if policy == "Always" and await self._present(image):
                    log.warning("%s: pulling %s failed (%s); using the local image",
                                self.node_name, image, _message(e))
                    return
                raise rt.ImagePullFailure(
                    rt.ERR_IMAGE_PULL,
                    f'Failed to pull image "{image}": {_message(e)}') from None

    async def images(self) -> list[Obj]:
        """The images present, as a Node's `status.images` lists them (largest first,
        at most 50, as the kubelet's default)."""
        rows: list[Obj] = await self._engine("listing images", self.api.images)
        out = []
        for row in sorted(rows, key=lambda r: -int(r.get("Size") or 0)):
            names = [n for n in (row.get("RepoTags") or []) + (row.get("RepoDigests") or [])
                     if n and "<none>" not in n]
            if names:
                out.append({"names": names, "sizeBytes": int(row.get("Size") or 0)})
        return out[:50]

    async def root_dir(self) -> str:
        """Where the engine keeps images and containers (the node's image filesystem)."""
        info: Obj = await self._engine("reading the engine's info", self.api.info)
        return str(info.get("DockerRootDir") or "/var/lib/docker")

    # ---- containers -------------------------------------------------------------------

    async def start_container(self, pod: Obj, container: Obj, *, attempt: int,
                              request: rt.ContainerRequest | None = None) -> rt.Container:
        uid = pod["metadata"]["uid"]
        sandbox = await self._sandbox_row(uid)
        if sandbox is None:
            raise rt.RuntimeFailure(f"pod {uid} has no sandbox")
        if sandbox.get("State") != "running":
            # Its pause container died since the kubelet looked (killed by hand, or the
            # engine restarted). Not started again here: the kubelet does that first
            # (`run_sandbox`), so that the new IP reaches the status, the containers'
            # env and the prober before anything starts in it; its retry will.
            raise rt.RuntimeFailure(f"the sandbox of pod {uid} is not running")
        await self.ensure_image(str(container.get("image") or ""), ds.pull_policy(container))
        spec = ds.container_spec(pod, container,
                                 request if request is not None
                                 else ds.request_from_spec(container),
                                 attempt=attempt, sandbox_id=sandbox["Id"],
                                 cluster=self.cluster, node=self.node_name)
        self._creating.add(spec.name)
        try:
            cid, fresh = await self._create_or_find(spec)
            if not fresh:  # made by an earlier try: started already, or not
                info = await self._engine("inspecting a container",
                                          self.api.inspect_container, cid)
            if fresh or (info.get("State") or {}).get("Status") == "created":
                try:
                    await self._call(self.api.start, cid)
                except ENGINE_ERRORS as e:  # it stays, and reads as exited (StartError)
                    raise rt.RuntimeFailure(
                        f"starting container {container['name']}: {_message(e)}") from None
        finally:
            self._creating.discard(spec.name)
        post_start = ds.resolved_hook(container, "postStart")
        if post_start is not None:
            await self._post_start(pod, container["name"], cid, post_start, sandbox)
        info = await self._inspect_id("inspecting a container", cid)
        found = self._container(info)
        assert found is not None
        return found

    async def _post_start(self, pod: Obj, name: str, cid: str, hook: Obj,
                          sandbox: Obj) -> None:
        """Run the postStart hook; if it fails, kill the container, as Kubernetes does
        (it then restarts as the pod's policy says)."""
        sandbox_info = await self._inspect(sandbox)
        ip = self._sandbox(sandbox_info).ip if sandbox_info is not None else ""
        try:
            await hooks.run(hook, exec_=functools.partial(self._exec, cid), pod_ip=ip,
                            timeout=POST_START_TIMEOUT)
        except hooks.HookFailure as e:
            grace = float((pod.get("spec") or {}).get("terminationGracePeriodSeconds") or 0)
            await self._engine(f"stopping container {name}", self.api.stop, cid,
                               timeout=int(math.ceil(grace)))
            raise rt.RuntimeFailure(f"FailedPostStartHook: container {name}: {e}") from None

    async def _running(self, pod_uid: str, name: str | None = None) -> list[Obj]:
        labels = [f"{ds.POD_UID}={pod_uid}"]
        if name is not None:
            labels += [f"{ds.CONTAINER_NAME}={name}", f"{ds.KIND}={ds.CONTAINER}"]
        return [r for r in await self._list(*labels) if r.get("State") == "running"]

    async def _stop(self, row: Obj, *, grace: float, pod_ip: str) -> None:
        """preStop hook, then SIGTERM and SIGKILL after the rest of the grace period."""
        labels = ds.labels_of(row)
        started = time.monotonic()
        hook_json = labels.get(ds.PRE_STOP)
        if hook_json and grace > 0:
            try:
                await hooks.run(json.loads(hook_json), exec_=functools.partial(
                    self._exec, row["Id"]), pod_ip=pod_ip, timeout=grace)
            except (hooks.HookFailure, ValueError) as e:
                log.warning("%s: preStop hook of %s in pod %s failed: %s", self.node_name,
                            labels.get(ds.CONTAINER_NAME), labels.get(ds.POD_NAME), e)
            left = max(STOP_AFTER_HOOK, grace - (time.monotonic() - started))
        else:
            left = grace
        try:
            await self._call(self.api.stop, row["Id"], timeout=int(math.ceil(left)))
        except docker.errors.NotFound:
            pass
        except ENGINE_ERRORS as e:
            raise rt.RuntimeFailure(f"stopping container {labels.get(ds.CONTAINER_NAME)}: "
                                    f"{_message(e)}") from None

    async def _pod_ip(self, pod_uid: str) -> str:
        row = await self._sandbox_row(pod_uid)
        info = await self._inspect(row) if row is not None else None
        return self._sandbox(info).ip if info is not None else ""

    async def stop_container(self, pod_uid: str, name: str, *, grace: float) -> None:
        rows = await self._running(pod_uid, name)
        if rows:
            ip = await self._pod_ip(pod_uid)
            await asyncio.gather(*(self._stop(r, grace=grace, pod_ip=ip) for r in rows))

    async def remove_pod(self, pod_uid: str, *, grace: float) -> None:
        """Stop the pod's containers together (each with its preStop hook and the
        grace period), then the sandbox, then remove them all."""
        rows = await self._list(f"{ds.POD_UID}={pod_uid}")
        apps = [r for r in rows if r.get("State") == "running"
                and ds.labels_of(r).get(ds.KIND) != ds.SANDBOX]
        if apps:
            ip = await self._pod_ip(pod_uid)
            await asyncio.gather(*(self._stop(r, grace=grace, pod_ip=ip) for r in apps))
        for r in rows:
            await self._remove(r["Id"])

    async def stop_sandbox(self, pod_uid: str) -> None:
        """Kill what still runs of the pod, then stop its pause container: its network
        namespace and bridge IP go; the exited containers stay for `rk logs`."""
        rows = [r for r in await self._list(f"{ds.POD_UID}={pod_uid}")
                if r.get("State") == "running"]
        apps = [r for r in rows if ds.labels_of(r).get(ds.KIND) != ds.SANDBOX]
        await asyncio.gather(*(self._stop(r, grace=0, pod_ip="") for r in apps))
        for r in rows:
            if ds.labels_of(r).get(ds.KIND) == ds.SANDBOX:
                await self._stop(r, grace=SANDBOX_STOP_GRACE, pod_ip="")

    async def _exec(self, cid: str, command: Sequence[str], timeout: float
                    ) -> rt.ExecResult:
        def run() -> rt.ExecResult:
            exec_id = self.api.exec_create(cid, list(command), stdout=True, stderr=True)
            output = self.api.exec_start(exec_id)
            code = self.api.exec_inspect(exec_id).get("ExitCode")
            return rt.ExecResult(int(code) if code is not None else 126, bytes(output or b""))

        loop = asyncio.get_running_loop()
        try:
            # Its own pool: an exec that outlives its timeout keeps its thread until the
            # command ends (the engine cannot cancel it) or the client's read times out,
            # and must not take the threads that start and stop containers.
            async with asyncio.timeout(timeout):
                return await loop.run_in_executor(self._exec_pool, run)
        except TimeoutError:
            raise rt.RuntimeFailure(f"command {list(command)!r} timed out after "
                                    f"{timeout:g}s") from None
        except ENGINE_ERRORS as e:
            raise rt.RuntimeFailure(f"exec {list(command)!r}: {_message(e)}") from None

    async def exec_sync(self, pod_uid: str, name: str, command: Sequence[str], *,
                        timeout: float) -> rt.ExecResult:
        rows = await self._running(pod_uid, name)
        if not rows:
            raise rt.RuntimeFailure(f"container {name} of pod {pod_uid} is not running")
        newest = max(rows, key=lambda r: int(ds.labels_of(r).get(ds.ATTEMPT, "0") or 0))
        return await self._exec(newest["Id"], command, timeout)

    # ---- streams: logs, exec, usage (dockerio.py) ----------------------------------

    async def _instance_row(self, pod_uid: str, name: str, previous: bool) -> Obj:
        rows = await self._list(f"{ds.POD_UID}={pod_uid}", f"{ds.CONTAINER_NAME}={name}",
                                f"{ds.KIND}={ds.CONTAINER}")
        rows.sort(key=lambda r: int(ds.labels_of(r).get(ds.ATTEMPT, "0") or 0))
        if previous:
            if len(rows) < 2:
                raise rt.RuntimeFailure(f'previous terminated container "{name}" in pod '
                                        f"{pod_uid} not found")
            return rows[-2]
        if not rows:
            raise rt.RuntimeFailure(f'container "{name}" in pod {pod_uid} has not started')
        return rows[-1]

    async def logs(self, pod_uid: str, name: str,
                   options: rt.LogOptions) -> AsyncIterator[bytes]:
        row = await self._instance_row(pod_uid, name, options.previous)
        async for chunk in dockerio.logs(self.api, row["Id"], options):
            yield chunk

    async def exec(self, pod_uid: str, name: str, command: Sequence[str], *,
                   stdin: bool, tty: bool) -> rt.ExecSession:
        rows = await self._running(pod_uid, name)
        if not rows:
            raise rt.RuntimeFailure(f"container {name} of pod {pod_uid} is not running")
        newest = max(rows, key=lambda r: int(ds.labels_of(r).get(ds.ATTEMPT, "0") or 0))
        try:
            return await dockerio.start_exec(self.api, newest["Id"], command, stdin=stdin,
                                             tty=tty)
        except ENGINE_ERRORS as e:
            raise rt.RuntimeFailure(f"exec {list(command)!r}: {_message(e)}") from None

    async def usage(self) -> list[rt.ContainerUsage]:
        rows = [r for r in await self._list(f"{ds.KIND}={ds.CONTAINER}")
                if r.get("State") == "running"]

        async def one(row: Obj) -> rt.ContainerUsage | None:
            labels = ds.labels_of(row)
            try:
                stats: Obj = await self._call(self.api.stats, row["Id"], stream=False,
                                              one_shot=True)
            except ENGINE_ERRORS:
                return None  # gone meanwhile
            return dockerio.usage_of(stats, labels.get(ds.POD_UID, ""),
                                     labels.get(ds.CONTAINER_NAME, ""), self.clock())

        found = await asyncio.gather(*(one(r) for r in rows))
        return [u for u in found if u is not None]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._exec_pool.shutdown(wait=False, cancel_futures=True)


def remove_cluster(cluster: str, *, base_url: str | None = None) -> tuple[int, list[str]]:
    """Remove every container of `cluster` on the engine (any node's, running or not)
    and the pod directories their volumes were bound from (`.../pods/UID/` holding a
    `volumes/` source, its tmpfs emptyDirs unmounted); (containers removed, directories
    removed). Blocking; for `rk down`, which may run after the agents were killed."""
    try:
        api = connect(base_url, pool=4)
    except rt.RuntimeFailure:
        return 0, []
    rows = api.containers(all=True, filters={"label": [f"{ds.CLUSTER}={cluster}"]})
    pod_dirs: set[str] = set()
    for row in rows:
        uid = ds.labels_of(row).get(ds.POD_UID, "")
        for m in row.get("Mounts") or []:
            source = str(m.get("Source") or "")
            marker = f"/pods/{uid}/volumes/"
            if uid and m.get("Type") == "bind" and marker in source:
                pod_dirs.add(source[:source.index(marker) + len(f"/pods/{uid}")])
    removed = 0
    for row in rows:
        try:
            api.remove_container(row["Id"], force=True, v=True)
            removed += 1
        except docker.errors.NotFound:
            pass
    for d in sorted(pod_dirs):
        if not mounts.unmount_under(d):  # its tmpfs emptyDirs first
            shutil.rmtree(d, ignore_errors=True)
    api.close()
    return removed, sorted(pod_dirs)


def remove_cluster_networks_volumes(cluster: str, *, base_url: str | None = None
                                    ) -> tuple[int, int]:
    """Remove the networks and named volumes labelled with `cluster` (none today: pods
    share the engine's default bridge and their volumes are directories or anonymous
    volumes, which go with their containers; this keeps `rk down`'s promise should an
    agent ever make them); (networks removed, volumes removed). Run after
    remove_cluster, as an engine refuses to remove what a container still uses."""
    try:
        api = connect(base_url, pool=4)
    except rt.RuntimeFailure:
        return 0, 0
    label = {"label": [f"{ds.CLUSTER}={cluster}"]}
    networks = volumes = 0
    try:
        for net in api.networks(filters=label):
            try:
                api.remove_network(net["Id"])
                networks += 1
            except docker.errors.NotFound:
                pass
        for vol in (api.volumes(filters=label) or {}).get("Volumes") or []:
            try:
                api.remove_volume(vol["Name"], force=True)
                volumes += 1
            except docker.errors.NotFound:
                pass
    finally:
        api.close()
    return networks, volumes
