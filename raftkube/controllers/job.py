"""The Job controller: pods that run to completion, counted, limited, cleaned up.

Handlers only enqueue Job keys: the Job on any change, the owner of a pod that changes
(an orphan wakes the Jobs of its namespace that select it). `reconcile(key)`, as
Kubernetes' syncJob:

1. A finished Job (Complete or Failed) is only left to its ttlSecondsAfterFinished: once
   that has passed since it finished, it is deleted with Foreground propagation (its
   pods first), with its uid and resourceVersion as preconditions, as Kubernetes'
   ttlafterfinished controller does.
2. Otherwise its pods are claimed and counted (`jobplan.count`). It fails when more pods
   failed than backoffLimit allows (or, with restartPolicy OnFailure, its pods restarted
   that often), `BackoffLimitExceeded`, or when it has been active activeDeadlineSeconds,
   `DeadlineExceeded`: its active pods are deleted (and counted failed) and the Failed
   condition is set. Otherwise, when its writes are in the cache (`podcontrol.InFlight`),
   pods are deleted or created to have `want_active` running, new ones only once the
   back-off after failed pods has passed (Indexed Jobs start their lowest pending
   indexes); a suspended Job has none. It completes when `completions` pods (or indexes)
   succeeded and none is active (without `completions`: one succeeded and none is
   active), `Complete` with completionTime and a `Completed` event.
3. Its status (active, ready, succeeded, failed, completedIndexes, startTime,
   conditions) is written compare-and-swap on the resourceVersion it read. The events
   of a finish are recorded only once that write is in, so a lost race records none and
   the next reconcile decides again.

Timed re-checks (back-off, deadline, TTL) are `queue.add_after`; the informers' resync
is the safety net after a failover.
"""

from __future__ import annotations

import logging
from typing import Any

from raftkube.api import conditions, kinds, selectors
from raftkube.api.timestamps import parse_time, rfc3339
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError
from raftkube.controllers import base, jobplan, podcontrol

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MAX_PODS_PER_SYNC = 500  # creates or deletes in one reconcile, as Kubernetes'


class JobController(base.Controller):
    name = "job"

    def __init__(self, ctx: base.Context) -> None:
        super().__init__(ctx)
        self.jobs = ctx.informers.informer(kinds.JOB)
        self.pods = ctx.informers.informer(kinds.POD)
        self.inflight = podcontrol.InFlight(clock=ctx.clock)
        self.pod_control = podcontrol.PodControl(ctx, self.inflight)
        self.jobs.add_handler(self.handler())
        self.pods.add_handler(inf.Handler(add=self._pod_changed, update=self._pod_updated,
                                          delete=self._pod_changed))

    # ---- handlers: keys only ---------------------------------------------------------------

    def _pod_changed(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        namespace = meta.get("namespace", "")
        ref = base.controller_of(pod)
        if ref is not None:
            if ref.get("kind") == "Job":
                self.queue.add(f"{namespace}/{ref.get('name', '')}")
            return
        labels = meta.get("labels") or {}
        for job in self.jobs.cache.by_index(inf.NAMESPACE, namespace):
            if _selector(job).matches(labels) and not _selector(job).empty:
                self.enqueue(job)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if base.controller_of(old) != base.controller_of(new):
            self._pod_changed(old)
        self._pod_changed(new)

    # ---- one Job ------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        job = self.jobs.cache.get(key)
        if job is None:
            self.inflight.forget(key)
            return
        now = self.ctx.clock()
        done = jobplan.finished(job)
        if done is not None:
            await self._expire(job, done, now)
            return
        if job["metadata"].get("deletionTimestamp"):
            return  # its pods go with it
        selector = _selector(job)
        if selector.empty:
            return  # the server always sets one; a manual empty selector selects nothing
        settled = self.inflight.settled(key, self.pods.cache)
        namespace = job["metadata"]["namespace"]
        if settled:
            pods = await self.pod_control.claim(
                job, selector, self.pods.cache.by_index(inf.NAMESPACE, namespace))
        else:
            pods = [p for p in self.pods.cache.by_index(inf.OWNER, job["metadata"]["uid"])
                    if base.is_controlled_by(p, job)]
        counts = jobplan.count(job, pods)
        old_status = job.get("status") or {}
        status: Obj = {k: v for k, v in old_status.items()}
        suspended = jobplan.is_suspended(job)
        if not status.get("startTime") and not suspended:
            status["startTime"] = rfc3339(now)
        start = parse_time(status.get("startTime"))
        finish: tuple[str, str, str] | None = None  # (type, reason, message)
        left = jobplan.deadline_remaining(job, start, now)
        if counts.failed > jobplan.backoff_limit(job) or \
                jobplan.past_backoff_limit_on_failure(job, pods):
            finish = ("Failed", "BackoffLimitExceeded",
                      "Job has reached the specified backoff limit")
        elif left is not None and left <= 0:
            finish = ("Failed", "DeadlineExceeded",
                      "Job was active longer than specified deadline")
        elif left is not None:
            self.queue.add_after(key, left)
        error: Exception | None = None
        active = len(counts.active)
        events: list[tuple[str, str, str]] = []
        if finish is not None:
            deleted = 0
            for pod in counts.active:
                if await self.pod_control.delete(job, pod):
                    deleted += 1
            counts.failed += deleted  # what was still running counts as failed
            active -= deleted
            if settled:
                events.append(("Warning", finish[1], finish[2]))
            else:
                finish = None  # pods it made may not be in the cache yet: not finished yet
        else:
            if settled:
                try:
                    active = await self._manage(job, pods, counts, now)
                except Exception as e:  # noqa: BLE001 - the status is written all the same
                    error = e
            total = jobplan.completions(job)
            # Not while pods it made may be missing from the cache: one could be running.
            complete = settled and active == 0 and (
                counts.succeeded >= total if total is not None else counts.succeeded > 0)
            if complete:
                finish = ("Complete", "CompletionsReached",
                          "Reached expected number of succeeded pods")
                status["completionTime"] = rfc3339(now)
                if total is not None and counts.succeeded > total:
                    events.append(("Warning", "TooManySucceededPods",
                                   "Too many succeeded pods running after completion "
                                   "count reached"))
                events.append(("Normal", "Completed", "Job completed"))
            elif settled:
                events += self._suspension(job, status, now)
        status.update(active=active, ready=counts.ready, succeeded=counts.succeeded,
                      failed=counts.failed)
        if jobplan.is_indexed(job):
            status["completedIndexes"] = jobplan.format_indexes(counts.succeeded_indexes)
        if finish is not None:
            conditions.put(status, {"type": finish[0], "status": "True", "reason": finish[1],
                                    "message": finish[2]}, now)
        if status != old_status and not await base.write_status(self.ctx, kinds.JOB, job,
                                                                status):
            events = []  # a newer Job is on its way: its reconcile decides and tells
        for type_, reason, message in events:
            self.ctx.events.event(job, type_, reason, message)
        if finish is not None and events:
            ttl = jobplan.spec(job).get("ttlSecondsAfterFinished")
            if ttl is not None:
                self.queue.add_after(key, float(ttl))
        if error is not None:
            raise error

    async def _manage(self, job: Obj, pods: list[Obj], counts: jobplan.Counts,
                      now: float) -> int:
        """Delete or create pods towards `want_active`; the number active after."""
        key = inf.key_of(job)
        active = len(counts.active)
        want = 0 if jobplan.is_suspended(job) else \
            jobplan.want_active(job, counts.succeeded, active)
        doomed = jobplan.pods_to_remove(job, counts.active, max(0, active - want))
        if doomed:
            for pod in doomed[:MAX_PODS_PER_SYNC]:
                if await self.pod_control.delete(job, pod):
                    active -= 1
            return active  # deletions first; creations, if any, next time
        missing = min(want - active, MAX_PODS_PER_SYNC)
        if missing <= 0:
            return active
        options = self.ctx.options
        wait = jobplan.backoff_remaining(pods, now, base=options.job_backoff,
                                         cap=options.job_backoff_cap)
        if wait > 0:
            self.queue.add_after(key, wait)
            return active
        if jobplan.is_indexed(job):
            bodies = [jobplan.job_pod(job, i) for i in jobplan.pending_indexes(
                job, counts.succeeded_indexes, counts.active, missing)]
        else:
            bodies = [jobplan.job_pod(job) for _ in range(missing)]
        made, error = await podcontrol.slow_start(
            bodies, lambda body: self.pod_control.create(job, body))
        if error is not None:
            raise error
        return active + made

    def _suspension(self, job: Obj, status: Obj, now: float) -> list[tuple[str, str, str]]:
        """The Suspended condition follows spec.suspend; a resumed Job starts its
        activeDeadlineSeconds again."""
        current = conditions.get({"status": status}, "Suspended")
        if jobplan.is_suspended(job):
            if current is not None and current.get("status") == "True":
                return []
            conditions.put(status, {"type": "Suspended", "status": "True",
                                    "reason": "JobSuspended", "message": "Job suspended"}, now)
            return [("Normal", "Suspended", "Job suspended")]
        if current is None or current.get("status") != "True":
            return []
        conditions.put(status, {"type": "Suspended", "status": "False",
                                "reason": "JobResumed", "message": "Job resumed"}, now)
        status["startTime"] = rfc3339(now)
        return [("Normal", "Resumed", "Job resumed")]

    async def _expire(self, job: Obj, done: Obj, now: float) -> None:
        """ttlSecondsAfterFinished: delete the Job once it has passed."""
        ttl = jobplan.spec(job).get("ttlSecondsAfterFinished")
        meta = job["metadata"]
        if ttl is None or meta.get("deletionTimestamp"):
            return
        finished_at = parse_time(done.get("lastTransitionTime"))
        if finished_at is None:
            return
        left = finished_at + float(ttl) - now
        if left > 0:
            self.queue.add_after(inf.key_of(job), left)
            return
        try:
            await self.ctx.client.delete(kinds.JOB, meta["namespace"], meta["name"],
                                         propagation="Foreground", uid=meta.get("uid", ""),
                                         resource_version=str(meta.get("resourceVersion")
                                                              or ""))
        except ApiError as e:
            if e.code not in (404, 409):
                raise  # a 409: it changed since it was read; its new version decides


def _selector(job: Obj) -> selectors.LabelSelector:
    try:
        return selectors.selector_from_object(jobplan.spec(job).get("selector"))
    except selectors.SelectorError:
        return selectors.LabelSelector()
