"""Whether an object has become what it was asked to be, in kubectl's words.

`rk rollout status`, `rk apply --wait` and `rk wait` all ask one question of an object
they just read: is it done, and if not, what is it waiting for? `status()` answers it
from the object alone (and, optionally, the objects it controls), with no I/O, so the
commands differ only in how they fetch and how long they wait. The words are kubectl's
rollout status viewers' (Deployment, DaemonSet, StatefulSet) and, for kinds kubectl has
no viewer for, sentences of the same shape: a Pod is done when Ready, a Job when
Complete, a ReplicaSet when its replicas are available, anything else once it exists.

A state that can no longer become done by waiting (a Deployment past its progress
deadline, a failed Job or Pod, a DaemonSet that does not roll) raises RolloutError with
the message to print after `error: `.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftkube.api import conditions, kinds

Obj = dict[str, Any]

# Container waiting reasons that waiting alone will not clear: a caller may say so early.
STUCK_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                           "CrashLoopBackOff", "CreateContainerConfigError",
                           "CreateContainerError", "RunContainerError"})


class RolloutError(Exception):
    """The object cannot become done by waiting; str() is kubectl's message."""


@dataclass(frozen=True)
class Progress:
    """Where an object is: `done`, and the line kubectl prints (without a newline).

    `blocked` names a controlled pod that is stuck (`pod/web-1: ImagePullBackOff`) when
    the caller passed the pods as `children`; empty otherwise.
    """

    done: bool
    message: str
    blocked: str = ""


def status(kind: kinds.Kind, obj: Obj, *, children: Sequence[Obj] | None = None
           ) -> Progress:
    """Where `obj` (of `kind`) is. `children` are objects it controls that the caller
    already has (a workload's pods): they only fill `Progress.blocked`."""
    viewer = _VIEWERS.get(kind.kind)
    if viewer is None:
        return Progress(True, f'{kind.kind.lower()} "{_name(obj)}" exists')
    progress = viewer(obj)
    if progress.done or not children:
        return progress
    blocked = stuck(children)
    return Progress(False, progress.message, blocked) if blocked else progress


def stuck(pods: Sequence[Obj]) -> str:
    """`pod/NAME: REASON` for the first pod whose container waits for a reason that
    waiting will not clear (an image that cannot be pulled, a crash loop); else ""."""
    for pod in pods:
        st = pod.get("status") or {}
        for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses")
                                                                or [])]:
            waiting = ((cs or {}).get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in STUCK_REASONS:
                return f"pod/{_name(pod)}: {waiting['reason']}"
    return ""


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _observed(obj: Obj) -> bool:
    """Whether the controller has seen the newest spec (generation <= observedGeneration)."""
    generation = _int((obj.get("metadata") or {}).get("generation"))
    return generation <= _int((obj.get("status") or {}).get("observedGeneration"))


def deployment(obj: Obj) -> Progress:
    name, spec, st = _name(obj), obj.get("spec") or {}, obj.get("status") or {}
    if not _observed(obj):
        return Progress(False, "Waiting for deployment spec update to be observed...")
    cond = conditions.get(obj, "Progressing")
    if cond is not None and cond.get("reason") == "ProgressDeadlineExceeded":
        raise RolloutError(f'deployment "{name}" exceeded its progress deadline')
    wanted = _int(spec.get("replicas"), 1)
    updated = _int(st.get("updatedReplicas"))
    replicas = _int(st.get("replicas"))
    available = _int(st.get("availableReplicas"))
    waiting = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < wanted:
        return Progress(False, f"{waiting}{updated} out of {wanted} new replicas have been "
                               "updated...")
    if replicas > updated:
        return Progress(False, f"{waiting}{replicas - updated} old replicas are pending "
                               "termination...")
    if available < updated:
        return Progress(False, f"{waiting}{available} of {updated} updated replicas are "
                               "available...")
    return Progress(True, f'deployment "{name}" successfully rolled out')


def daemonset(obj: Obj) -> Progress:
    name, spec, st = _name(obj), obj.get("spec") or {}, obj.get("status") or {}
    strategy = (spec.get("updateStrategy") or {}).get("type") or "RollingUpdate"
    if strategy != "RollingUpdate":
        raise RolloutError("rollout status is only available for RollingUpdate strategy type")
    if not _observed(obj):
        return Progress(False, "Waiting for daemon set spec update to be observed...")
    desired = _int(st.get("desiredNumberScheduled"))
    updated = _int(st.get("updatedNumberScheduled"))
    available = _int(st.get("numberAvailable"))
    waiting = f'Waiting for daemon set "{name}" rollout to finish: '
    if updated < desired:
        return Progress(False, f"{waiting}{updated} out of {desired} new pods have been "
                               "updated...")
    if available < desired:
        return Progress(False, f"{waiting}{available} of {desired} updated pods are "
                               "available...")
    return Progress(True, f'daemon set "{name}" successfully rolled out')


def statefulset(obj: Obj) -> Progress:
    spec, st = obj.get("spec") or {}, obj.get("status") or {}
    strategy = spec.get("updateStrategy") or {}
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        raise RolloutError("rollout status is only available for RollingUpdate strategy type")
    if _int(st.get("observedGeneration")) == 0 or not _observed(obj):
        return Progress(False, "Waiting for statefulset spec update to be observed...")
    wanted = _int(spec.get("replicas"), 1)
    ready = _int(st.get("readyReplicas"))
    if ready < wanted:
        return Progress(False, f"Waiting for {wanted - ready} pods to be ready...")
    updated = _int(st.get("updatedReplicas"))
    partition = _int((strategy.get("rollingUpdate") or {}).get("partition"))
    if partition > 0:
        if updated < wanted - partition:
            return Progress(False, "Waiting for partitioned roll out to finish: "
                                   f"{updated} out of {wanted - partition} new pods have "
                                   "been updated...")
        return Progress(True, f"partitioned roll out complete: {updated} new pods have been "
                              "updated...")
    revision = st.get("updateRevision", "")
    if revision != st.get("currentRevision", ""):
        return Progress(False, f"waiting for statefulset rolling update to complete "
                               f"{updated} pods at revision {revision}...")
    current = _int(st.get("currentReplicas"))
    return Progress(True, f"statefulset rolling update complete {current} pods at revision "
                          f"{revision}...")


def replicaset(obj: Obj) -> Progress:
    name, spec, st = _name(obj), obj.get("spec") or {}, obj.get("status") or {}
    if not _observed(obj):
        return Progress(False, "Waiting for replica set spec update to be observed...")
    wanted = _int(spec.get("replicas"), 1)
    available = _int(st.get("availableReplicas"))
    if available < wanted:
        return Progress(False, f'Waiting for replica set "{name}" to be available: '
                               f"{available} of {wanted} replicas are available...")
    return Progress(True, f'replica set "{name}" is available')


def pod(obj: Obj) -> Progress:
    name, st = _name(obj), obj.get("status") or {}
    phase = st.get("phase") or "Pending"
    if phase == "Succeeded":
        return Progress(True, f'pod "{name}" completed')
    if phase == "Failed":
        reason = st.get("reason") or st.get("message") or "Failed"
        raise RolloutError(f'pod "{name}" failed: {reason}')
    if conditions.is_true(obj, "Ready"):
        return Progress(True, f'pod "{name}" is ready')
    return Progress(False, f'Waiting for pod "{name}" to be ready: it is {phase}...')


def job(obj: Obj) -> Progress:
    name, spec, st = _name(obj), obj.get("spec") or {}, obj.get("status") or {}
    failed = conditions.get(obj, "Failed")
    if failed is not None and failed.get("status") == "True":
        why = ": ".join(str(p) for p in (failed.get("reason"), failed.get("message")) if p)
        raise RolloutError(f'job "{name}" failed' + (f": {why}" if why else ""))
    if conditions.is_true(obj, "Complete"):
        return Progress(True, f'job "{name}" completed')
    completions = spec.get("completions")
    succeeded = _int(st.get("succeeded"))
    if isinstance(completions, int) and not isinstance(completions, bool):
        return Progress(False, f'Waiting for job "{name}" to complete: {succeeded} of '
                               f"{completions} completions succeeded...")
    return Progress(False, f'Waiting for job "{name}" to complete...')


_VIEWERS = {
    "Deployment": deployment,
    "DaemonSet": daemonset,
    "StatefulSet": statefulset,
    "ReplicaSet": replicaset,
    "Pod": pod,
    "Job": job,
}
