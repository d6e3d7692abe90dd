"""The ReplicaSet controller: exactly `spec.replicas` active pods, and a status that says
how many there are, are ready and are available.

One reconcile of a ReplicaSet (Kubernetes' syncReplicaSet):

1. claim its pods: its own (the pod informer's OWNER index) and orphans its selector
   matches are its own; pods it owns that no longer match are released;
2. add what it has created or deleted that the informer has not shown yet (`inflight`),
   so that a create is never repeated nor a deleted pod counted;
3. create the missing pods from the template, in batches of 1, 2, 4... that stop at the
   first failure (a quota or a bad template fails once, not `replicas` times), or delete
   the least valuable surplus (`podstate.to_delete`: unscheduled, not ready, newest first),
   at most `burst` either way per reconcile, through `podcontrol.PodControl` (its events,
   and its record of what is in flight);
4. write the status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
   observedGeneration, and a ReplicaFailure condition while creates or deletes fail)
   when it changed, with the resourceVersion read.

The status counts the pods as the reconcile left them (creates and deletes that
succeeded included), so that a Deployment reading it never sees fewer pods than there
are, nor more available ones. Work is proportional to the ReplicaSet's own pods.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from raftkube.api import kinds, selectors
from raftkube.api.timestamps import rfc3339
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError
from raftkube.controllers import base, claims, inflight, podcontrol, podstate

log = logging.getLogger(__name__)

Obj = dict[str, Any]
BURST = 500  # pods created or deleted at most per reconcile (Kubernetes' burstReplicas)


class ManageError(Exception):
    """Creating or deleting pods failed; `reason` is the ReplicaFailure reason."""

    def __init__(self, reason: str, error: Exception) -> None:
        super().__init__(str(error))
        self.reason = reason
        self.error = error


def _message(error: Exception) -> str:
    return error.message if isinstance(error, ApiError) else str(error)


def replicaset_status(rs: Obj, active: list[Obj], now: float,
                      failure: ManageError | None = None) -> Obj:
    """The status a ReplicaSet with these active pods reports (Kubernetes' shape)."""
    spec = rs.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    status: Obj = {
        "replicas": len(active),
        "fullyLabeledReplicas": sum(
            1 for p in active
            if all(claims.labels_of(p).get(k) == v for k, v in template_labels.items())),
        "readyReplicas": sum(1 for p in active if podstate.is_ready(p)),
        "availableReplicas": sum(1 for p in active if podstate.is_available(p, min_ready, now)),
        "observedGeneration": int(rs["metadata"].get("generation") or 0),
    }
    old = [c for c in (rs.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]
    kept = [c for c in old if c.get("type") != "ReplicaFailure"]
    had = next((c for c in old if c.get("type") == "ReplicaFailure"), None)
    if failure is not None:
        kept.append(had if had is not None else {
            "type": "ReplicaFailure", "status": "True", "reason": failure.reason,
            "message": _message(failure.error), "lastTransitionTime": rfc3339(now)})
    if kept:
        status["conditions"] = kept
    return status


class ReplicaSetController(base.Controller):
    name = "replicaset"

    def __init__(self, ctx: base.Context, *, burst: int = BURST) -> None:
        super().__init__(ctx)
        self.burst = burst
        self.inflight = inflight.InFlight()
        self.pod_control = podcontrol.PodControl(ctx, self.inflight)
        self.settling = inflight.Settling()
        self.replicasets = ctx.informers.informer(kinds.REPLICASET)
        self.pods = ctx.informers.informer(kinds.POD)
        self.orphans = claims.Orphans(self.pods.cache)
        self.pods.add_handler(self.orphans.handler())
        self.replicasets.add_handler(inf.Handler(
            add=self.enqueue, update=lambda _old, new: self.enqueue(new),
            delete=self._replicaset_deleted))
        self.pods.add_handler(claims.OwnerEvents(
            "ReplicaSet", self.replicasets.cache, lambda key: self.queue.add(key)).handler())

    # ---- events -----------------------------------------------------------------------

    def _replicaset_deleted(self, rs: Obj) -> None:
        self.inflight.forget(claims.uid_of(rs))
        self.settling.forget(inf.key_of(rs))

    # ---- one ReplicaSet ---------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rs = self.replicasets.cache.get(key)
        if rs is None or not self.settling.settled(key):
            return  # gone, or our last status or claim write is yet to be seen (it
            # re-enqueues)
        meta = rs["metadata"]
        uid, namespace = meta["uid"], meta.get("namespace", "")
        now = self.ctx.clock()
        try:
            selector = claims.selector_of(rs)
        except selectors.SelectorError as e:
            log.warning("replicaset %s: invalid selector: %s", key, e)
            return
        claim = claims.claim(rs, selector, self.pods.cache.by_index(inf.OWNER, uid),
                             self.orphans.in_namespace(namespace))
        mine = await claims.send(self.ctx.client, kinds.POD, rs, claim,
                                 wrote=lambda pod: self.settling.wrote(key, self.pods, pod))
        family = self.inflight.view(uid, mine, seen_revision=inflight.at(self.pods), now=now)
        active = [p for p in family if podstate.is_active(p)]
        failure: ManageError | None = None
        if not meta.get("deletionTimestamp"):
            active, failure = await self._manage(rs, active)
        status = replicaset_status(rs, active, now, failure)
        if status != rs.get("status"):
            updated = copy.deepcopy(rs)
            updated["status"] = status
            try:
                written = await self.ctx.client.update_status(kinds.REPLICASET, updated)
                self.settling.wrote(key, self.replicasets, written)
            except ApiError as e:
                if e.code != 404:
                    raise
        if failure is not None:
            raise failure
        wait = podstate.next_available(active, int(rs["spec"].get("minReadySeconds") or 0),
                                       now)
        if wait is not None:
            self.queue.add_after(key, wait + 1.0)  # a second late rather than a moment early

    async def _manage(self, rs: Obj, active: list[Obj]
                      ) -> tuple[list[Obj], ManageError | None]:
        """Create or delete pods towards `spec.replicas`; the active pods afterwards."""
        diff = len(active) - int(rs["spec"].get("replicas", 1))
        if diff < 0:
            template = rs["spec"].get("template") or {}
            made, error = await self.pod_control.create_all(
                rs, [podcontrol.from_template(rs, template)
                     for _ in range(min(-diff, self.burst))])
            return active + made, ManageError("FailedCreate", error) if error else None
        if diff > 0:
            victims = podstate.to_delete(active, min(diff, self.burst))
            gone, error = await self._delete(rs, victims)
            left = [p for p in active if claims.uid_of(p) not in gone]
            return left, ManageError("FailedDelete", error) if error else None
        return active, None

    async def _delete(self, rs: Obj, victims: list[Obj]) -> tuple[set[str], Exception | None]:
        """Delete the victims all at once; the uids of those deleted, and an error."""
        results = await asyncio.gather(*(self.pod_control.delete(rs, p) for p in victims),
                                       return_exceptions=True)
        gone = set()
        error: Exception | None = None
        for pod, result in zip(victims, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancelled: the leader is stepping down
                error = error or result
            elif result:
                gone.add(claims.uid_of(pod))
        return gone, error
