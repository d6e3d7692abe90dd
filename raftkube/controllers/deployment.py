"""The Deployment controller: ReplicaSets named by their template's hash, rolled from old
to new by the Deployment's strategy, with revisions, pause and a progress deadline.

One reconcile of a Deployment (Kubernetes' syncDeployment, step by step):

1. claim its ReplicaSets (its own from the OWNER index, orphans its selector matches);
2. being deleted: only the status; paused: only resizes (`_sync`), and Progressing
   says `DeploymentPaused`/`DeploymentResumed`;
3. its size changed while ReplicaSets carry another `desired-replicas`: a resize, shared
   in proportion among the active ReplicaSets (`rolling.proportional_sizes`);
4. otherwise a rollout step: RollingUpdate grows the new ReplicaSet (created with the
   next revision if there is none) up to replicas + maxSurge and shrinks old ones while
   replicas - maxUnavailable stay available; Recreate scales every old ReplicaSet to 0,
   waits until their pods are gone, then scales the new one up;
5. once complete, old ReplicaSets beyond revisionHistoryLimit (empty ones) are deleted;
6. the status: counts, Available, Progressing (the deadline is re-checked by a timed
   requeue, since nothing else would happen to say it passed), ReplicaFailure.

Every write carries the resourceVersion read (ReplicaSets are resized with update, the
Deployment's revision annotation too, its status with update_status), so a decision made
on a stale cache fails and is retried rather than applied. The arithmetic is in
`rolling`, the status in `progress`, the annotations in `revisions`: this module reads,
decides with them and writes.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from raftkube.api import kinds, rollout, selectors
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError
from raftkube.controllers import base, claims, progress, revisions, rolling
from raftkube.controllers.inflight import Settling

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class DeploymentController(base.Controller):
    name = "deployment"

    def __init__(self, ctx: base.Context) -> None:
        super().__init__(ctx)
        self.deployments = ctx.informers.informer(kinds.DEPLOYMENT)
        self.replicasets = ctx.informers.informer(kinds.REPLICASET)
        self.pods = ctx.informers.informer(kinds.POD)
        self.orphans = claims.Orphans(self.replicasets.cache)
        self.settling = Settling()
        self.deployments.add_handler(inf.Handler(
            add=self.enqueue, update=lambda _old, new: self.enqueue(new),
            delete=lambda d: self.settling.forget(inf.key_of(d))))
        self.replicasets.add_handler(self.orphans.handler())
        self.replicasets.add_handler(inf.Handler(
            add=self._replicaset_changed, update=self._replicaset_updated,
            delete=self._replicaset_changed))
        self.pods.add_handler(inf.Handler(delete=self._pod_deleted))

    # ---- events -----------------------------------------------------------------------

    def _enqueue_owner(self, obj: Obj, ref: Obj | None) -> None:
        if ref is not None and ref.get("kind") == "Deployment":
            self.queue.add(f"{obj['metadata'].get('namespace', '')}/{ref.get('name', '')}")

    def _replicaset_changed(self, rs: Obj) -> None:
        ref = base.controller_of(rs)
        if ref is not None:
            self._enqueue_owner(rs, ref)
            return
        namespace = rs["metadata"].get("namespace", "")
        candidates = self.deployments.cache.by_index(inf.NAMESPACE, namespace)
        for d in claims.owners_matching(candidates, rs):
            self.enqueue(d)

    def _replicaset_updated(self, old: Obj, new: Obj) -> None:
        old_ref, new_ref = base.controller_of(old), base.controller_of(new)
        if old_ref is not None and (new_ref is None or old_ref.get("uid") != new_ref.get("uid")):
            self._enqueue_owner(old, old_ref)
        self._replicaset_changed(new)

    def _pod_deleted(self, pod: Obj) -> None:
        """Recreate waits for the old pods to be gone; this is how it hears they are."""
        ref = base.controller_of(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return
        rs = self.replicasets.cache.get(f"{pod['metadata'].get('namespace', '')}/"
                                        f"{ref.get('name', '')}")
        if rs is None:
            return
        owner = base.controller_of(rs)
        d = self.deployments.cache.get(f"{rs['metadata'].get('namespace', '')}/"
                                       f"{(owner or {}).get('name', '')}")
        if d is not None and not rolling.is_rolling(d):
            self.enqueue(d)

    # ---- one Deployment ---------------------------------------------------------------

    async def reconcile(self, key: str) -> None:
        d = self.deployments.cache.get(key)
        if d is None:
            return  # its ReplicaSets go with it: the server deletes dependents
        if not self.settling.settled(key):
            return  # what it last wrote is yet to be seen; seeing it enqueues the key
        try:
            await Sync(self, copy.deepcopy(d), key).run()
        except selectors.SelectorError as e:
            log.warning("deployment %s: invalid selector: %s", key, e)


class Sync:
    """One reconcile of one Deployment: what it read, as its own writes changed it."""

    def __init__(self, ctl: DeploymentController, d: Obj, key: str) -> None:
        self.ctl = ctl
        self.client = ctl.ctx.client
        self.events = ctl.ctx.events
        self.now = ctl.ctx.clock()
        self.key = key
        self.d = d
        self.rss: list[Obj] = []
        self.new_name = ""

    @property
    def namespace(self) -> str:
        return str(self.d["metadata"].get("namespace", ""))

    async def run(self) -> None:
        await self._claim()
        spec = self.d.get("spec") or {}
        if self.d["metadata"].get("deletionTimestamp"):
            await self._find(create=False)
            await self._write_status(progress.calculate_status(
                self.d, self.rss, self._new(), self.now))
            return
        await self._check_paused()
        if spec.get("paused") or await self._scaling_event():
            await self._sync()
        elif rolling.is_rolling(self.d):
            await self._rolling()
        else:
            await self._recreate()

    # ---- reading and writing ----------------------------------------------------------

    async def _claim(self) -> None:
        d = self.d
        uid = d["metadata"]["uid"]
        claim = claims.claim(d, claims.selector_of(d),
                             self.ctl.replicasets.cache.by_index(inf.OWNER, uid),
                             self.ctl.orphans.in_namespace(self.namespace))
        adopted = {}
        for rs in claim.adopt:
            body = copy.deepcopy(rs)
            body["metadata"]["ownerReferences"] = claims.adopt_patch(rs, d)[
                "metadata"]["ownerReferences"]
            adopted[rs["metadata"]["name"]] = self._wrote_replicaset(
                await self.client.update(kinds.REPLICASET, body))
        for rs in claim.release:
            try:
                self._wrote_replicaset(await self.client.patch(
                    kinds.REPLICASET, self.namespace, rs["metadata"]["name"],
                    claims.release_patch(rs, d)))
            except ApiError as e:
                if e.code != 404:
                    raise
        self.rss = [adopted.get(rs["metadata"]["name"], rs) for rs in claim.mine]

    def _wrote_deployment(self, obj: Obj) -> Obj:
        self.ctl.settling.wrote(self.key, self.ctl.deployments, obj)
        return obj

    def _wrote_replicaset(self, obj: Obj) -> Obj:
        self.ctl.settling.wrote(self.key, self.ctl.replicasets, obj)
        return obj

    def _new(self) -> Obj | None:
        return next((rs for rs in self.rss if rolling.name_of(rs) == self.new_name), None)

    def _old(self) -> list[Obj]:
        return [rs for rs in self.rss if rolling.name_of(rs) != self.new_name]

    def _replace(self, updated: Obj) -> None:
        name = rolling.name_of(updated)
        self.rss = [updated if rolling.name_of(rs) == name else rs for rs in self.rss]

    async def _write_status(self, status: Obj) -> None:
        if status == self.d.get("status"):
            return
        body = copy.deepcopy(self.d)
        body["status"] = status
        self.d = self._wrote_deployment(await self.client.update_status(kinds.DEPLOYMENT,
                                                                         body))

    async def _set_progressing(self, status: str, reason: str, message: str) -> None:
        new = copy.deepcopy(self.d.get("status") or {})
        progress.set_condition(new, progress.condition(progress.PROGRESSING, status, reason,
                                                       message, self.now))
        await self._write_status(new)

    async def _write_revision(self, revision: str) -> None:
        body = copy.deepcopy(self.d)
        if revisions.set_deployment_revision(body, revision):
            self.d = self._wrote_deployment(await self.client.update(kinds.DEPLOYMENT, body))

    async def _scale(self, rs: Obj, size: int, *, only_if_resized: bool = False) -> bool:
        """Resize a ReplicaSet (and stamp the Deployment's size on it); whether its size
        changed. With `only_if_resized`, a ReplicaSet of the right size is left alone."""
        old = rolling.replicas(rs)
        want = rolling.replicas(self.d)
        most = want + rolling.max_surge(self.d)
        resized = old != size
        if not resized and (only_if_resized or not revisions.replicas_annotations_need_update(
                rs, want, most)):
            return False
        body = copy.deepcopy(rs)
        body["spec"]["replicas"] = size
        revisions.set_replicas_annotations(body, want, most)
        self._replace(self._wrote_replicaset(await self.client.update(kinds.REPLICASET, body)))
        if resized:
            direction = "up" if size > old else "down"
            self.events.event(self.d, "Normal", "ScalingReplicaSet",
                              f"Scaled {direction} replica set {rolling.name_of(rs)} to "
                              f"{size} from {old}")
        return resized

    # ---- the new ReplicaSet -----------------------------------------------------------

    async def _find(self, *, create: bool) -> None:
        """Find (or create) the new ReplicaSet and bring its revision and the
        Deployment's up to date (Kubernetes' getAllReplicaSetsAndSyncRevision)."""
        found = rolling.find_new(self.d, self.rss)
        self.new_name = rolling.name_of(found) if found is not None else ""
        revision = rolling.max_revision(self._old()) + 1
        if found is not None:
            await self._refresh_new(found, revision)
        elif create:
            await self._create_new(revision)

    async def _refresh_new(self, rs: Obj, revision: int) -> None:
        body = copy.deepcopy(rs)
        changed = revisions.set_new_rs_annotations(self.d, body, revision, exists=True)
        min_ready = int((self.d.get("spec") or {}).get("minReadySeconds") or 0)
        if int(body["spec"].get("minReadySeconds") or 0) != min_ready:
            body["spec"]["minReadySeconds"] = min_ready
            changed = True
        if changed:
            body = self._wrote_replicaset(await self.client.update(kinds.REPLICASET, body))
            self._replace(body)
        if rollout.revision_of(body):
            await self._write_revision(str(rollout.revision_of(body)))
        status = self.d.get("status") or {}
        if progress.has_deadline(self.d) and \
                progress.get_condition(status, progress.PROGRESSING) is None:
            await self._set_progressing("True", progress.FOUND_NEW_RS,
                                        f'Found new replica set "{self.new_name}"')

    async def _create_new(self, revision: int) -> None:
        d = self.d
        collisions = int((d.get("status") or {}).get("collisionCount") or 0)
        template = copy.deepcopy(rolling.template_of(d))
        pod_hash = rollout.template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[rollout.HASH_LABEL] = \
            pod_hash
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[rollout.HASH_LABEL] = pod_hash
        name = f"{d['metadata']['name']}-{pod_hash}"
        rs: Obj = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": self.namespace,
                         "labels": dict(template["metadata"]["labels"]),
                         "ownerReferences": [base.owner_ref(d)]},
            "spec": {"replicas": 0, "selector": selector, "template": template,
                     "minReadySeconds": int(d["spec"].get("minReadySeconds") or 0)},
        }
        rs["spec"]["replicas"] = rolling.new_replicas(d, self._old() + [rs], rs)
        revisions.set_new_rs_annotations(d, rs, revision, exists=False)
        existed = False
        try:
            made = self._wrote_replicaset(
                await self.client.create(kinds.REPLICASET, self.namespace, rs))
        except ApiError as e:
            if e.code != 409:
                message = f'Failed to create new replica set "{name}": {e.message}'
                if progress.has_deadline(d):
                    await self._set_progressing("False", progress.FAILED_RS_CREATE, message)
                self.events.event(d, "Warning", progress.FAILED_RS_CREATE, message)
                raise
            found = self.ctl.replicasets.cache.get(f"{self.namespace}/{name}")
            if found is None:
                raise  # made by an earlier reconcile, not in the cache yet: retried
            if not (base.is_controlled_by(found, d) and rollout.equal_ignore_hash(
                    rolling.template_of(found), rolling.template_of(d))):
                # Another template with the same hash: hash again with a new count.
                status = copy.deepcopy(d.get("status") or {})
                status["collisionCount"] = collisions + 1
                await self._write_status(status)
                raise
            made, existed = found, True
        self.new_name = name
        self.rss = [rs for rs in self.rss if rolling.name_of(rs) != name] + [made]
        size = rolling.replicas(made)
        if not existed and size > 0:
            self.events.event(d, "Normal", "ScalingReplicaSet",
                              f"Scaled up replica set {name} to {size} from 0")
        await self._write_revision(str(revision))
        if not existed and progress.has_deadline(self.d):
            await self._set_progressing("True", progress.NEW_RS_CREATED,
                                        f'Created new replica set "{name}"')

    # ---- pause, resize --------------------------------------------------------------

    async def _check_paused(self) -> None:
        if not progress.has_deadline(self.d):
            return
        cond = progress.get_condition(self.d.get("status") or {}, progress.PROGRESSING)
        if cond is not None and cond.get("reason") == progress.TIMED_OUT:
            return  # a reported lack of progress is not hidden by a pause
        paused = bool(self.d["spec"].get("paused"))
        shown = cond is not None and cond.get("reason") == progress.PAUSED
        if paused and not shown:
            await self._set_progressing("Unknown", progress.PAUSED, "Deployment is paused")
        elif shown and not paused:
            await self._set_progressing("Unknown", progress.RESUMED, "Deployment is resumed")

    async def _scaling_event(self) -> bool:
        """Whether the Deployment's size differs from what its active ReplicaSets were
        last sized for: then this reconcile resizes instead of rolling out."""
        await self._find(create=False)
        want = rolling.replicas(self.d)
        return any(rolling.desired_annotation(rs) not in (None, want)
                   for rs in rolling.active(self.rss))

    async def _sync(self) -> None:
        """Resize without rolling out (paused, or a size change mid-rollout)."""
        await self._find(create=False)
        new, want = self._new(), rolling.replicas(self.d)
        target = rolling.active_or_latest(new, self._old())
        if target is not None:
            if rolling.replicas(target) != want:
                await self._scale(target, want, only_if_resized=True)
        elif rolling.is_saturated(self.d, new):
            for rs in rolling.active(self._old()):
                await self._scale(rs, 0, only_if_resized=True)
        elif rolling.is_rolling(self.d):
            live = rolling.active(self.rss)
            sizes = rolling.proportional_sizes(self.d, live)
            for rs in live:
                await self._scale(rs, sizes[rolling.name_of(rs)])
        if self.d["spec"].get("paused"):
            await self._cleanup()
        await self._write_status(progress.calculate_status(self.d, self.rss, self._new(),
                                                           self.now))

    # ---- rollouts ---------------------------------------------------------------------

    async def _rolling(self) -> None:
        await self._find(create=True)
        new, want = self._new(), rolling.replicas(self.d)
        if new is not None and rolling.replicas(new) != want:
            size = want if rolling.replicas(new) > want else \
                rolling.new_replicas(self.d, self.rss, new)
            if await self._scale(new, size, only_if_resized=True):
                await self._rollout_status()
                return
        shrink = rolling.old_sizes(self.d, self._new(), self._old())
        for rs in rolling.by_creation(self._old()):
            if rolling.name_of(rs) in shrink:
                await self._scale(rs, shrink[rolling.name_of(rs)], only_if_resized=True)
        if not shrink and progress.complete(self.d, self.d.get("status") or {}):
            await self._cleanup()
        await self._rollout_status()

    async def _recreate(self) -> None:
        await self._find(create=False)
        scaled = False
        for rs in rolling.active(self._old()):
            scaled = await self._scale(rs, 0, only_if_resized=True) or scaled
        if scaled:
            await self._rollout_status()
            return
        olds = self._old()
        old_pods = [p for rs in olds
                    for p in self.ctl.pods.cache.by_index(inf.OWNER, rs["metadata"]["uid"])
                    if base.is_controlled_by(p, rs)]
        if rolling.old_pods_running(olds, old_pods):
            await self._rollout_status()
            return
        if self._new() is None:
            await self._find(create=True)
        new = self._new()
        if new is not None:
            await self._scale(new, rolling.replicas(self.d), only_if_resized=True)
        if progress.complete(self.d, self.d.get("status") or {}):
            await self._cleanup()
        await self._rollout_status()

    async def _rollout_status(self) -> None:
        status = progress.rollout_status(self.d, self.rss, self._new(), self.now)
        if status != self.d.get("status"):
            await self._write_status(status)
            return
        after = progress.recheck_after(self.d, status, self.now)
        if after is not None:
            self.ctl.queue.add_after(self.key, after)

    async def _cleanup(self) -> None:
        """Delete the oldest empty ReplicaSets beyond revisionHistoryLimit."""
        limit = (self.d.get("spec") or {}).get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in self._old() if not rs["metadata"].get("deletionTimestamp")]
        surplus = len(alive) - int(limit)
        if surplus <= 0:
            return
        alive.sort(key=lambda rs: (rollout.revision_of(rs), rolling.created(rs),
                                   rolling.name_of(rs)))
        for rs in alive[:surplus]:
            meta = rs["metadata"]
            observed = int((rs.get("status") or {}).get("observedGeneration") or 0)
            if rolling.reported(rs, "replicas") or rolling.replicas(rs) or \
                    int(meta.get("generation") or 0) > observed:
                continue
            try:
                await self.client.delete(kinds.REPLICASET, self.namespace, meta["name"],
                                         uid=meta.get("uid", ""),
                                         resource_version=inf.resource_version(rs))
            except ApiError as e:
                if e.code != 404:
                    raise
            self.rss = [r for r in self.rss if r is not rs]
