"""What the kubelet reads and makes for a pod before its containers start.

The kubelet's pod loop asks two things of this module, and nothing else of the pod's
configuration: `prepare(pod)`, which reads the ConfigMaps and Secrets the pod refers to
(`configs.ReferencedObjects`) and sets its volumes up on the host
(`volumes.VolumeManager`), and `request(pod, container, prepared, sandbox)`, which
resolves one container's environment, command, args and mounts into the runtime's
`ContainerRequest` once the sandbox (and so the pod IP) exists. Failures come out as
`volumes.VolumeError` (FailedMount: nothing of the pod starts) and `podenv.ConfigError`
(CreateContainerConfigError: that container waits), both retried by the kubelet; a
volume set up before whose source went keeps its files, and its error comes back in
`Prepared.kept` (FailedMount told, the pod's containers still start and restart).

The Services the environment tells of come from an informer over every namespace that
the agent's nodes share: the node may read them all, and one watch serves every node of
the process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raftkube.agent import configs, podenv, volumes
from raftkube.agent import runtime as rt
from raftkube.client import informer as inf

Obj = dict[str, Any]
VolumeError = volumes.VolumeError  # named here: `Prepared.volumes` hides the module


@dataclass(frozen=True)
class Prepared:
    """A pod's references as read, and its volumes as they are on the host."""

    objects: Mapping[tuple[str, str], Obj | None]
    volumes: Mapping[str, volumes.HostVolume]
    # volumes that kept their last files: their source cannot be read now (FailedMount)
    kept: tuple[VolumeError, ...] = ()


class PodConfig:
    def __init__(self, *, objects: configs.ReferencedObjects, services: inf.Informer,
                 volume_manager: volumes.VolumeManager, host_ip: str,
                 allocatable: Mapping[str, str]) -> None:
        self.objects = objects
        self.services = services
        self.volumes = volume_manager
        self.host_ip = host_ip
        self.allocatable = dict(allocatable)

    def _sources(self, pod: Obj, objects: Mapping[tuple[str, str], Obj | None],
                 pod_ips: tuple[str, ...]) -> podenv.Sources:
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        seen = self.services.cache.by_index(inf.NAMESPACE, namespace)
        master = self.services.cache.get("default/kubernetes")
        if master is not None and namespace != "default":
            seen = [*seen, master]
        return podenv.Sources(objects=objects, services=seen, host_ip=self.host_ip,
                              pod_ips=pod_ips, allocatable=self.allocatable)

    async def prepare(self, pod: Obj, *, fresh: bool, pod_ip: str = "") -> Prepared:
        """Read the pod's references (again, if `fresh`: a container is about to start)
        and set its volumes up; VolumeError if one cannot be, ClientError if the API
        cannot be read."""
        objects = await self.objects.load(pod, max_age=0.0 if fresh else math.inf)
        sources = self._sources(pod, objects, (pod_ip,) if pod_ip else ())
        made = self.volumes.setup(pod, sources)
        return Prepared(objects, made.volumes, made.kept)

    def request(self, pod: Obj, container: Obj, prepared: Prepared, sandbox: rt.Sandbox,
                warn: Callable[[str], None] | None = None) -> rt.ContainerRequest:
        """The container's ContainerRequest; ConfigError if it cannot be made."""
        sources = self._sources(pod, prepared.objects, (sandbox.ip,) if sandbox.ip else ())
        environment = podenv.environment(pod, container, sources)
        if warn is not None:
            for message in environment.warnings:
                warn(message)
        env = environment.as_dict()
        command, args = podenv.command_and_args(container, env)
        return rt.ContainerRequest(
            command=command, args=args, env=environment.env,
            working_dir=str(container.get("workingDir") or "") or None,
            mounts=volumes.mounts(pod, container, prepared.volumes, env))

    def in_use(self, pods: list[Obj]) -> set[configs.Key]:
        return {k for p in pods for k in configs.keys_of(p)}
