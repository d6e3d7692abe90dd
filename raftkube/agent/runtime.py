"""The seam between the node agent and whatever runs containers: `ContainerRuntime`.

The kubelet loop (`kubelet.py`) decides; a runtime only does and reports, in the shape
of Kubernetes' CRI: a pod gets a *sandbox* (its network identity: the pod IP), then its
containers are started one instance at a time. Every instance is kept with its attempt
number (0 for the first run, one more per restart) until a newer one replaces it, so an
exited instance still tells its exit code, times and id (`lastState`) after the restart.
`pods()` reports the state of everything, the way the kubelet's relister reads it;
`changes()` tells when to read it again, for a runtime whose engine has events (Docker);
the kubelet lists every second without them, and every 10 s with them.

`SimulatedRuntime` (simulated.py) keeps everything in memory and runs nothing; the
Docker runtime (docker.py) keeps the same records as container labels, finds them
again when the agent restarts (`recover`) and reports exits from the engine.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]

RUNNING = "running"
EXITED = "exited"


@dataclass(frozen=True)
class Container:
    """One instance (one attempt) of one container of a pod."""

    pod_uid: str
    name: str
    attempt: int  # 0 for the first run, +1 for each restart: the restartCount
    id: str  # `simulated://...`, `docker://...`: the status's containerID
    image: str
    image_id: str
    state: str  # RUNNING or EXITED
    started_at: float
    finished_at: float | None = None
    exit_code: int | None = None
    reason: str = ""  # when exited: Completed, Error, OOMKilled...


@dataclass(frozen=True)
class Sandbox:
    """A pod's sandbox: what its containers share (the network namespace, the IP)."""

    uid: str
    namespace: str
    name: str
    ip: str
    created_at: float
    # False once it stopped (Kubernetes' SANDBOX_NOTREADY): stopped by `stop_sandbox`
    # when its pod ended, or died; a stopped sandbox holds no IP.
    ready: bool = True


@dataclass(frozen=True)
class PodState:
    sandbox: Sandbox
    containers: tuple[Container, ...]  # the newest two instances of each container

    def latest(self, name: str) -> Container | None:
        found = [c for c in self.containers if c.name == name]
        return max(found, key=lambda c: c.attempt) if found else None

    def previous(self, name: str) -> Container | None:
        """The instance before the newest one (its `lastState`), if one is kept."""
        found = sorted((c for c in self.containers if c.name == name),
                       key=lambda c: c.attempt)
        return found[-2] if len(found) > 1 else None


@dataclass(frozen=True)
class Mount:
    """One volume mount of a container, resolved to the host: `source` is a host
    directory or file (emptyDir, hostPath, and the files the kubelet writes for
    ConfigMap, Secret and downwardAPI volumes; a `medium: Memory` emptyDir is the
    tmpfs the kubelet mounted on its directory, shared by the pod's containers)."""

    target: str  # the mountPath inside the container
    source: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerRequest:
    """What the kubelet resolved for one container from the API (ConfigMaps, Secrets,
    fieldRefs, Services, volumes): everything a runtime needs besides the container's
    own spec (image, imagePullPolicy, resources, securityContext it reads itself)."""

    command: tuple[str, ...] | None = None  # the spec's command after $(VAR) expansion
    args: tuple[str, ...] | None = None  # None: the image's own
    env: tuple[tuple[str, str], ...] = ()  # in order, every value resolved
    working_dir: str | None = None
    mounts: tuple[Mount, ...] = ()


@dataclass(frozen=True)
class SandboxConfig:
    """What a pod's sandbox is made with: its name resolution and host ports."""

    hostname: str = ""
    dns_servers: tuple[str, ...] = ()  # empty: the runtime's default resolver
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    # (containerPort, protocol, hostIP, hostPort) for every port with a hostPort
    port_mappings: tuple[tuple[int, str, str, int], ...] = ()


@dataclass(frozen=True)
class ExecResult:
    """The end of a command run to completion in a container (an exec probe)."""

    exit_code: int
    output: bytes  # stdout and stderr, as the container wrote them, possibly cut short


@dataclass(frozen=True)
class LogOptions:
    """Which of a container's log to read (the query of Kubernetes' `pods/log`)."""

    previous: bool = False  # the instance before the newest (its lastState)
    follow: bool = False
    tail: int | None = None  # the last N lines only
    timestamps: bool = False  # each line prefixed with its RFC 3339 time
    since: float | None = None  # only lines written at or after this time (epoch s)


@dataclass(frozen=True)
class ContainerUsage:
    """What a running container uses now: cumulative CPU and its working set."""

    pod_uid: str
    name: str
    cpu_seconds: float  # CPU time used since it started (a rate needs two samples)
    memory_bytes: int  # working set: usage less inactive file cache, as cAdvisor reports
    at: float  # when it was sampled


class ExecSession(Protocol):
    """A command running in a container, its streams attached (`rk exec`, kubectl exec)."""

    async def read(self) -> tuple[int, bytes] | None:
        """The next output: (1 stdout or 2 stderr, data); None once both have ended."""

    async def write(self, data: bytes) -> None:
        """Give the command input (only when it was started with stdin)."""

    async def close_stdin(self) -> None:
        """The input has ended (EOF)."""

    async def resize(self, width: int, height: int) -> None:
        """The terminal's size changed (only with a tty)."""

    async def wait(self) -> int:
        """The command's exit code, once it has ended."""

    async def close(self) -> None:
        """Let go of the streams; a command still running is left to end by itself."""


class RuntimeFailure(Exception):
    """The runtime could not do what it was asked (the kubelet retries with back-off)."""


ERR_IMAGE_PULL = "ErrImagePull"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"


class ImagePullFailure(RuntimeFailure):
    """A container's image could not be had: `reason` is the waiting reason the kubelet
    reports (ErrImagePull with the engine's message, or ErrImageNeverPull for a missing
    image with policy Never); the kubelet backs off pulling it (ImagePullBackOff)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class ContainerRuntime(Protocol):
    """What the kubelet asks of a container runtime. Every call is idempotent enough to
    be retried after a failure: the kubelet re-reads `pods()` before deciding again."""

    name: str  # `simulated`, `docker`: the node's containerRuntimeVersion scheme
    version: str

    def changes(self) -> AsyncGenerator[None, None] | None:
        """The engine's own word that this node's containers changed (made, started,
        ended, removed): one item once subscribed, then one per change, until the
        stream fails (RuntimeFailure). None for a runtime that has no such stream: the
        kubelet then learns every change by listing."""

    async def recover(self, pods: Sequence[Obj]) -> None:
        """Once, at start, with the pods bound to this node as the API has them: learn
        the sandboxes and containers that this node ran before the agent restarted."""

    async def run_sandbox(self, pod: Obj, config: SandboxConfig | None = None) -> Sandbox:
        """The pod's sandbox, made if it has none (a second call returns the same)."""

    async def start_container(self, pod: Obj, container: Obj, *, attempt: int,
                              request: ContainerRequest | None = None) -> Container:
        """Start instance `attempt` of `container` (a pod spec's container) in the pod's
        sandbox, with what the kubelet resolved for it (None: nothing beyond the spec).
        Images are the runtime's business (pulled as its policy says); ImagePullFailure
        when the image cannot be had."""

    async def stop_container(self, pod_uid: str, name: str, *, grace: float) -> None:
        """Stop the running instance of `name`: SIGTERM, then SIGKILL after `grace`."""

    async def remove_pod(self, pod_uid: str, *, grace: float) -> None:
        """Stop every container of the pod, then remove them and its sandbox."""

    async def stop_sandbox(self, pod_uid: str) -> None:
        """The pod ended: stop its sandbox (its IP goes back to the node) and whatever
        of it still runs, keeping its exited containers (their logs, their statuses)
        until `remove_pod`. A stopped sandbox reads as not ready in `pods()` and is not
        taken for one that died: nothing of the pod is killed or restarted for it."""

    async def pods(self, *, namespace: str | None = None, name: str | None = None
                   ) -> list[PodState]:
        """Every pod this runtime holds, as it is now; with `namespace` and `name`, only
        those of that name (one, or an old one beside the pod that replaced it), which
        is what one pod's sync reads: the engine need not list every container."""

    async def exec_sync(self, pod_uid: str, name: str, command: Sequence[str], *,
                        timeout: float) -> ExecResult:
        """Run `command` in the running instance of container `name` to its end (an exec
        probe); RuntimeFailure if it cannot be run or does not end within `timeout`."""

    def logs(self, pod_uid: str, name: str, options: LogOptions) -> AsyncIterator[bytes]:
        """The container's output as it wrote it (stdout and stderr interleaved), in
        chunks; with `follow`, until the instance exits or the reader stops reading.
        RuntimeFailure (raised at the first read) when there is no such instance."""

    async def exec(self, pod_uid: str, name: str, command: Sequence[str], *,
                   stdin: bool, tty: bool) -> ExecSession:
        """Start `command` in the running instance of container `name`, attached."""

    async def usage(self) -> list[ContainerUsage]:
        """What each running container uses now (for `rk top` and the agent's summary)."""

