"""What a Job's pods say about it, and what it wants next: pure functions.

Kubernetes' pkg/controller/job without I/O: the counts (`count`), the back-off before a
failed pod is replaced (`backoff_remaining`: 10 s doubling to six minutes by default,
counted from the failures since the last success, as Kubernetes' backoffRecord), the
limits (`past_backoff_limit_on_failure`, `deadline_remaining`), how many pods should be
active (`want_active`), which pods to give up (`pods_to_remove`, duplicates and strays of
an Indexed Job first), which indexes to start (`pending_indexes`), the pod for an index
(`job_pod`) and the `completedIndexes` text ("1,3-5,7").

Counting. Kubernetes tracks finished pods with the `batch.kubernetes.io/job-tracking`
finalizer, so a pod deleted after it finished is still counted. raftkube does not (yet):
it counts the finished pods it sees, and never lets `succeeded` or `failed` go down
(each is the larger of what the status says and what the pods show), so a Job keeps the
finished pods it counts until it is deleted, and an Indexed Job's completed indexes are
kept in its status, as Kubernetes keeps them. A finished pod someone deletes and whose
replacement finishes the same way is counted once.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftkube.controllers import podcontrol, podutil

Obj = dict[str, Any]
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
INDEX_ENV = "JOB_COMPLETION_INDEX"


def spec(job: Obj) -> Obj:
    s = job.get("spec")
    return s if isinstance(s, dict) else {}


def completions(job: Obj) -> int | None:
    value = spec(job).get("completions")
    return int(value) if value is not None else None


def parallelism(job: Obj) -> int:
    return int(spec(job).get("parallelism", 1) or 0)


def backoff_limit(job: Obj) -> int:
    return int(spec(job).get("backoffLimit", 6))


def is_indexed(job: Obj) -> bool:
    return spec(job).get("completionMode") == "Indexed" and completions(job) is not None


def is_suspended(job: Obj) -> bool:
    return bool(spec(job).get("suspend"))


def finished(job: Obj) -> Obj | None:
    """The Complete or Failed condition that is True, if the Job has finished."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") in ("Complete", "Failed") \
                and c.get("status") == "True":
            return c
    return None


def completion_index(pod: Obj) -> int | None:
    meta = pod.get("metadata") or {}
    raw = (meta.get("annotations") or {}).get(INDEX_KEY, (meta.get("labels") or {}).get(
        INDEX_KEY))
    if not isinstance(raw, str) or not raw.isdigit():
        return None
    return int(raw)


# ---- completed indexes as text ----------------------------------------------------------


def parse_indexes(text: Any, limit: int) -> set[int]:
    """"1,3-5,7" as a set, keeping only indexes below `limit`; junk is skipped."""
    out: set[int] = set()
    if not isinstance(text, str):
        return out
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            continue
        out.update(i for i in range(int(first), int(last or first) + 1) if i < limit)
    return out


def format_indexes(indexes: Iterable[int]) -> str:
    """Increasing, three or more in a row as first-last: "1,3-5,7"."""
    ordered = sorted(set(indexes))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{ordered[i]}-{ordered[j]}")
        else:
            parts.extend(str(n) for n in ordered[i:j + 1])
        i = j + 1
    return ",".join(parts)


# ---- counts -------------------------------------------------------------------------------


@dataclass
class Counts:
    active: list[Obj] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    ready: int = 0
    succeeded_indexes: set[int] = field(default_factory=set)


def count(job: Obj, pods: Sequence[Obj]) -> Counts:
    status = job.get("status") or {}
    out = Counts(active=[p for p in pods if podutil.is_active(p)])
    out.ready = sum(1 for p in out.active if podutil.is_ready(p))
    succeeded = [p for p in pods if podutil.phase(p) == "Succeeded"]
    failed = [p for p in pods if podutil.phase(p) == "Failed"]
    total = completions(job)
    if is_indexed(job) and total is not None:
        out.succeeded_indexes = parse_indexes(status.get("completedIndexes"), total)
        for pod in succeeded:
            index = completion_index(pod)
            if index is not None and index < total:
                out.succeeded_indexes.add(index)
        out.succeeded = len(out.succeeded_indexes)
    else:
        out.succeeded = max(int(status.get("succeeded") or 0), len(succeeded))
    out.failed = max(int(status.get("failed") or 0), len(failed))
    return out


def backoff_remaining(pods: Sequence[Obj], now: float, *, base: float, cap: float) -> float:
    """Seconds before a pod may replace a failed one: `base` after one failure since the
    last success, doubling with each further one, at most `cap`."""
    last_success = max((podutil.finished_at(p) for p in pods
                        if podutil.phase(p) == "Succeeded"), default=float("-inf"))
    failures = [t for t in (podutil.finished_at(p) for p in pods
                            if podutil.phase(p) == "Failed") if t > last_success]
    if not failures:
        return 0.0
    delay = min(base * 2.0 ** min(len(failures) - 1, 62), cap)
    return max(0.0, delay - (now - max(failures)))


def past_backoff_limit_on_failure(job: Obj, pods: Sequence[Obj]) -> bool:
    """With restartPolicy OnFailure a pod restarts its containers rather than fail: the
    restarts of the running pods count against backoffLimit instead."""
    template_spec = (spec(job).get("template") or {}).get("spec") or {}
    if template_spec.get("restartPolicy") != "OnFailure":
        return False
    restarts = sum(podutil.restarts(p) for p in pods
                   if podutil.phase(p) in ("Running", "Pending"))
    limit = backoff_limit(job)
    return restarts > 0 if limit == 0 else restarts >= limit


def deadline_remaining(job: Obj, start: float | None, now: float) -> float | None:
    """Seconds left of activeDeadlineSeconds (<= 0 when past), None without one."""
    deadline = spec(job).get("activeDeadlineSeconds")
    if deadline is None or start is None or is_suspended(job):
        return None
    return start + float(deadline) - now


# ---- what to run --------------------------------------------------------------------------


def want_active(job: Obj, succeeded: int, active: int) -> int:
    total = completions(job)
    if total is None:
        # Any success means the work is done: what runs may finish, nothing new starts.
        return active if succeeded > 0 else parallelism(job)
    return max(0, min(total - succeeded, parallelism(job)))


def pods_to_remove(job: Obj, active: Sequence[Obj], at_least: int) -> list[Obj]:
    """Active pods to delete: for an Indexed Job, first those without a valid index and
    all but one of each repeated index; then, to reach `at_least`, in the order
    controllers give pods up."""
    remove: list[Obj] = []
    left: list[Obj] = list(active)
    total = completions(job)
    if is_indexed(job) and total is not None:
        left = []
        by_index: dict[int, list[Obj]] = {}
        for pod in active:
            index = completion_index(pod)
            if index is None or index >= total:
                remove.append(pod)
            else:
                by_index.setdefault(index, []).append(pod)
        for index in sorted(by_index):
            ranked = podutil.removal_order(by_index[index])
            remove += ranked[:-1]
            left.append(ranked[-1])
    if len(remove) < at_least:
        remove += podutil.removal_order(left)[:at_least - len(remove)]
    return remove


def pending_indexes(job: Obj, succeeded: set[int], active: Sequence[Obj], n: int) -> list[int]:
    """The `n` lowest indexes that have neither succeeded nor an active pod."""
    total = completions(job) or 0
    taken = succeeded | {i for p in active if (i := completion_index(p)) is not None}
    return [i for i in range(total) if i not in taken][:n]


def job_pod(job: Obj, index: int | None = None) -> Obj:
    """A pod of `job`; for an Indexed Job, the pod of `index`: its index as annotation and
    label, in JOB_COMPLETION_INDEX (read from the annotation through the downward API, as
    Kubernetes does), a hostname of `job-index`, and a name starting `job-index-`."""
    template = copy.deepcopy(spec(job).get("template") or {})
    name = job["metadata"]["name"]
    if index is None:
        return podcontrol.pod_from_template(job, template)
    meta = template.setdefault("metadata", {})
    meta.setdefault("annotations", {})[INDEX_KEY] = str(index)
    meta.setdefault("labels", {})[INDEX_KEY] = str(index)
    pod_spec = template.setdefault("spec", {})
    pod_spec["hostname"] = f"{name}-{index}"
    for container in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers")
                                                          or []):
        env = container.setdefault("env", [])
        if not any(isinstance(e, dict) and e.get("name") == INDEX_ENV for e in env):
            env.append({"name": INDEX_ENV, "valueFrom": {"fieldRef": {
                "apiVersion": "v1", "fieldPath": f"metadata.annotations['{INDEX_KEY}']"}}})
    return podcontrol.pod_from_template(job, template, generate_name=f"{name}-{index}-")
