"""What every leader-only loop is made of: a context, a queue of keys, a reconcile.

A controller (kubernetes/sample-controller's shape) registers handlers on the shared
informers that only enqueue `namespace/name` keys, and runs workers that take a key,
read desired and actual state from the informers' caches, and write what converges
them through `ctx.client`. Success forgets the key; an exception requeues it with
back-off; the informers' periodic resync enqueues everything again, so nothing missed
stays missed. Objects from a cache are shared: copy before changing (`copy.deepcopy`).

Every write goes through `ctx.client`, whose writes carry the Raft term this leader was
elected in, so once a newer leader has written, a late write of this one is refused.
Writes that depend on what was read are compare-and-swap on resourceVersion (an update
carries the version it read), so a write never undoes one it did not see.

Time comes from `ctx.clock` (wall-clock seconds, as Kubernetes' timestamps are) for what
is written, and from `ctx.monotonic` for how long something took or has been silent, so
that a step of the wall clock neither fires nor stalls a countdown; tests set both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from raftkube.api import kinds
from raftkube.client import events, rest, workqueue
from raftkube.client import informer as inf
from raftkube.client.errors import ApiError

Obj = dict[str, Any]


def owner_ref(owner: Obj, *, controller: bool = True, block: bool = True) -> Obj:
    """The ownerReference a controller puts on what it makes."""
    meta = owner["metadata"]
    return {"apiVersion": owner.get("apiVersion", ""), "kind": owner.get("kind", ""),
            "name": meta["name"], "uid": meta["uid"], "controller": controller,
            "blockOwnerDeletion": block}


def controller_of(obj: Obj) -> Obj | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def is_controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref.get("uid") == owner["metadata"].get("uid")


@dataclass
class Options:
    """Flags of `rk master` that tune the leader's loops."""

    node_grace: float = 10.0  # a node whose lease lapsed this long is NotReady
    node_monitor_period: float = 1.0  # how often zones are looked at as a whole
    eviction_timeout: float = 30.0  # the default toleration of an unreachable node
    not_ready_timeout: float = 30.0  # the default toleration of a node that says NotReady
    eviction_rate: float = 0.1  # nodes a second tainted NoExecute (their pods evicted)
    secondary_eviction_rate: float = 0.01  # the same in a big zone mostly dark
    unhealthy_zone_threshold: float = 0.55  # a zone this much not ready is disrupted
    large_cluster_size: int = 50  # a smaller disrupted zone stops evicting altogether
    resync: float = 30.0  # every object is reconciled again this often
    workers: int = 4
    job_backoff: float = 10.0  # a Job waits this long after its first failed pod, doubling
    job_backoff_cap: float = 360.0  # ... up to six minutes


@dataclass
class Context:
    """What a leader-only loop gets: a term-stamped client, the shared informers, the
    event recorder, the clock and the options."""

    client: rest.RestClient
    informers: inf.InformerFactory
    events: events.EventRecorder
    clock: Callable[[], float] = time.time
    options: Options = field(default_factory=Options)
    # Countdowns (how long since a node was heard from, rate limits) run on this one: a
    # step of the wall clock (NTP, a restored VM) must not make time seem to pass.
    monotonic: Callable[[], float] = time.monotonic


class Controller:
    """A queue of keys and a `reconcile(key)`; subclasses register their handlers."""

    name = "controller"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.queue = workqueue.WorkQueue(name=self.name)

    def enqueue(self, obj: Obj) -> None:
        self.queue.add(inf.key_of(obj))

    def handler(self) -> inf.Handler:
        """Enqueue the object on add, update and delete."""
        return inf.Handler(add=self.enqueue, update=lambda _old, new: self.enqueue(new),
                           delete=self.enqueue)

    async def reconcile(self, key: str) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        await workqueue.run_workers(self.queue, self.reconcile,
                                    workers=self.ctx.options.workers)


async def write_status(ctx: Context, kind: kinds.Kind, obj: Obj, status: Obj) -> bool:
    """Write `status` over `obj` as read (its resourceVersion is the precondition);
    whether it was written. A Conflict or NotFound writes nothing and raises nothing:
    the newer object, or its deletion, is on its way to the cache and to a reconcile."""
    updated = {**obj, "status": status}
    try:
        await ctx.client.update_status(kind, updated)
    except ApiError as e:
        if e.code in (404, 409):
            return False
        raise
    return True
