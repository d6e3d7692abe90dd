"""The ReplicaSet controller: exactly `spec.replicas` active pods, and a status that says
how many there are, are ready and are available.

One reconcile of a ReplicaSet (Kubernetes' syncReplicaSet):

1. claim its pods: its own (the pod informer's OWNER index) and orphans its selector
   matches are its own; pods it owns that no longer match are released;
2. add what it has created or deleted that the informer has not shown yet (`inflight`),
   so that a create is never repeated nor a deleted pod counted;
3. create the missing pods from the template, in batches of 1, 2, 4... that stop at the
   first failure (a quota or a bad template fails once, not `replicas` times), or delete
   the least valuable surplus (`pods.to_delete`: unscheduled, not ready, newest first),
   at most `burst` either way per reconcile;
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
from raftkube.client.errors import ApiError, ClientError
from raftkube.controllers import base, claims, pods
from raftkube.controllers.inflight import InFlight, Settling

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
        "readyReplicas": sum(1 for p in active if pods.is_ready(p)),
        "availableReplicas": sum(1 for p in active if pods.is_available(p, min_ready, now)),
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
        self.inflight = InFlight()
        self.settling = Settling()
        self.replicasets = ctx.informers.informer(kinds.REPLICASET)
        self.pods = ctx.informers.informer(kinds.POD)
        self.orphans = claims.Orphans(self.pods.cache)
        self.pods.add_handler(self.orphans.handler())
        self.replicasets.add_handler(inf.Handler(
            add=self.enqueue, update=lambda _old, new: self.enqueue(new),
            delete=self._replicaset_deleted))
        self.pods.add_handler(inf.Handler(add=self._pod_changed, update=self._pod_updated,
                                          delete=self._pod_changed))

    # ---- events -----------------------------------------------------------------------

    def _replicaset_deleted(self, rs: Obj) -> None:
        self.inflight.forget(claims.uid_of(rs))
        self.settling.forget(inf.key_of(rs))

    def _enqueue_owner(self, pod: Obj, ref: Obj) -> None:
        if ref.get("kind") == "ReplicaSet":
            namespace = pod["metadata"].get("namespace", "")
            self.queue.add(f"{namespace}/{ref.get('name', '')}")

    def _pod_changed(self, pod: Obj) -> None:
        ref = base.controller_of(pod)
        if ref is not None:
            self._enqueue_owner(pod, ref)
            return
        namespace = pod["metadata"].get("namespace", "")
        siblings = self.replicasets.cache.by_index(inf.NAMESPACE, namespace)
        for rs in claims.owners_matching(siblings, pod):
            self.enqueue(rs)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        old_ref, new_ref = base.controller_of(old), base.controller_of(new)
        if old_ref is not None and (new_ref is None or old_ref.get("uid") != new_ref.get("uid")):
            self._enqueue_owner(old, old_ref)
        if new_ref is None and claims.labels_of(old) == claims.labels_of(new) \
                and old_ref is None:
            return  # an orphan whose labels did not change: no owner-to-be has news
        self._pod_changed(new)

    # ---- one ReplicaSet ---------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        rs = self.replicasets.cache.get(key)
        if rs is None or not self.settling.settled(key):
            return  # gone, or our last status write is yet to be seen (it re-enqueues)
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
        await self._adopt_and_release(rs, claim)
        family = self.inflight.view(uid, claim.mine, seen_revision=_int(
            self.pods.resource_version), now=now)
        active = [p for p in family if pods.is_active(p)]
        failure: ManageError | None = None
        if not meta.get("deletionTimestamp"):
            active, failure = await self._manage(rs, active, now)
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
        wait = pods.next_available(active, int(rs["spec"].get("minReadySeconds") or 0), now)
        if wait is not None:
            self.queue.add_after(key, wait)

    async def _adopt_and_release(self, rs: Obj, claim: claims.Claim) -> None:
        client = self.ctx.client
        for pod in claim.adopt:
            meta = pod["metadata"]
            await client.patch(kinds.POD, meta["namespace"], meta["name"],
                               claims.adopt_patch(pod, rs))
        for pod in claim.release:
            meta = pod["metadata"]
            try:
                await client.patch(kinds.POD, meta["namespace"], meta["name"],
                                   claims.release_patch(pod, rs))
            except ApiError as e:
                if e.code != 404:
                    raise

    async def _manage(self, rs: Obj, active: list[Obj],
                      now: float) -> tuple[list[Obj], ManageError | None]:
        """Create or delete pods towards `spec.replicas`; the active pods afterwards."""
        diff = len(active) - int(rs["spec"].get("replicas", 1))
        if diff < 0:
            made, error = await self._create(rs, min(-diff, self.burst), now)
            return active + made, ManageError("FailedCreate", error) if error else None
        if diff > 0:
            victims = pods.to_delete(active, min(diff, self.burst))
            gone, error = await self._delete(rs, victims, now)
            left = [p for p in active if claims.uid_of(p) not in gone]
            return left, ManageError("FailedDelete", error) if error else None
        return active, None

    async def _create(self, rs: Obj, count: int, now: float
                      ) -> tuple[list[Obj], Exception | None]:
        """Slow start: batches of 1, 2, 4..., stopping after a batch with a failure."""
        template = rs["spec"].get("template") or {}
        ref = base.owner_ref(rs)
        made: list[Obj] = []
        batch = 1
        while len(made) < count:
            size = min(batch, count - len(made))
            results = await asyncio.gather(
                *(self._create_one(rs, pods.from_template(template, rs, ref), now)
                  for _ in range(size)), return_exceptions=True)
            made += [r for r in results if isinstance(r, dict)]
            errors = [r for r in results if isinstance(r, BaseException)]
            for error in errors:
                if not isinstance(error, Exception):
                    raise error  # cancelled: the leader is stepping down
                return made, error
            batch *= 2
        return made, None

    async def _create_one(self, rs: Obj, pod: Obj, now: float) -> Obj:
        try:
            created = await self.ctx.client.create(kinds.POD, rs["metadata"]["namespace"],
                                                   pod)
        except ClientError as e:
            self.ctx.events.event(rs, "Warning", "FailedCreate",
                                  f"Error creating: {_message(e)}")
            raise
        self.inflight.created(rs["metadata"]["uid"], created, now)
        self.ctx.events.event(rs, "Normal", "SuccessfulCreate",
                              f"Created pod: {created['metadata']['name']}")
        return created

    async def _delete(self, rs: Obj, victims: list[Obj], now: float
                      ) -> tuple[set[str], Exception | None]:
        results = await asyncio.gather(*(self._delete_one(rs, p, now) for p in victims),
                                       return_exceptions=True)
        gone = set()
        error: Exception | None = None
        for pod, result in zip(victims, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                error = error or result
            else:
                gone.add(claims.uid_of(pod))
        return gone, error

    async def _delete_one(self, rs: Obj, pod: Obj, now: float) -> None:
        meta = pod["metadata"]
        try:
            await self.ctx.client.delete(kinds.POD, meta["namespace"], meta["name"],
                                         uid=meta.get("uid", ""))
        except ApiError as e:
            if e.code == 404:  # gone already: what we wanted, though the cache shows it
                self.inflight.deleted(rs["metadata"]["uid"], pod, now)
                return
            self.ctx.events.event(rs, "Warning", "FailedDelete",
                                  f"Error deleting: {_message(e)}")
            raise
        self.inflight.deleted(rs["metadata"]["uid"], pod, now)
        self.ctx.events.event(rs, "Normal", "SuccessfulDelete",
                              f"Deleted pod: {meta['name']}")


def _int(text: str) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0
