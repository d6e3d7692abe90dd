"""The leader's loops as one unit: they start when this master leads and stop when not.

`LeaderLoops.run()` watches this master's own Raft role through its API (`/v3/maintenance
/status`, every `poll` seconds, over one kept-alive connection). When the master becomes
leader in term T, it starts one
task group: the shared informers, the event recorder, the scheduler and every
controller, all talking to the API through the client layer over loopback, with every
write stamped with T. The loops start working once the informers have listed
everything (a loop that acted on an empty cache would create what already exists). When
the master stops leading, or leads in a new term, the group is cancelled at once and,
for a new term, started afresh: nothing is carried over, because everything is
level-triggered and re-derived from the API.

A role read that fails (a slow `/status` answer under load, a dropped connection) says
nothing about the role: the loops go on as they are until reads have failed for
`role_grace` seconds, rather than being torn down and started again, which would cost a
full relist of every informer for a hiccup. Going on is safe: every write of the loops
carries their term, so a leader deposed meanwhile changes nothing; an answer that says
this master no longer leads stops them at once.

The loops hold no store internals and would run the same out of process.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkube.client import events as ev
from raftkube.client import informer as inf
from raftkube.client import rest, transport
from raftkube.client.errors import ClientError
from raftkube.client.etcd import EtcdClient
from raftkube.controllers import (
    base,
    daemonset,
    deployment,
    endpointslice,
    garbagecollector,
    job,
    namespace,
    nodelifecycle,
    podgc,
    replicaset,
    tainteviction,
)
from raftkube.scheduler.loop import Scheduler

log = logging.getLogger(__name__)

Loop = Any  # anything with `name` and `async run()`
MakeLoops = Callable[[base.Context], list[Loop]]


def default_loops(ctx: base.Context) -> list[Loop]:
    """The scheduler and every controller, each registering its informers."""
    return [Scheduler(client=ctx.client, informers=ctx.informers, events=ctx.events,
                      clock=ctx.clock),
            replicaset.ReplicaSetController(ctx), deployment.DeploymentController(ctx),
            daemonset.DaemonSetController(ctx), job.JobController(ctx),
            nodelifecycle.NodeLifecycle(ctx), tainteviction.TaintEviction(ctx),
            podgc.PodGC(ctx), endpointslice.EndpointSliceController(ctx),
            garbagecollector.GarbageCollector(ctx), namespace.NamespaceController(ctx)]


@dataclass
class Role:
    leader: bool
    term: int


class LeaderLoops:
    def __init__(self, *, api_url: str, token: str, member_id: str, ca: str | None = None,
                 options: base.Options | None = None, make_loops: MakeLoops = default_loops,
                 poll: float = 0.1, role_grace: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.api_url = api_url
        self.token = token
        self.ca = ca  # this master's own certificate, pinned (https)
        self.member_id = member_id
        self.options = options or base.Options()
        self.make_loops = make_loops
        self.poll = poll
        self.role_grace = role_grace  # how long failed role reads keep the role as it was
        self.clock = clock
        self.term = 0  # the term the loops run for; 0 when they do not run
        self.started = 0  # how many times they were started (a test reads it)

    async def role(self, store: EtcdClient) -> Role | None:
        """This master's role, or None if it could not be read."""
        try:
            # Through the poll's own transport (this master only): its session and
            # connection serve every poll.
            status = await store.status()
            leads = str(status.get("leader")) == self.member_id
            return Role(leads, int(status["header"]["raft_term"]))
        except (ClientError, KeyError, TypeError, ValueError) as e:
            log.debug("leader loops: this master's role could not be read: %s", e)
            return None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async with transport.Transport([self.api_url], self.token, ca=self.ca, pinned=True,
                                       wait=0, timeout=2.0) as tp:
            store = EtcdClient(tp)
            group: asyncio.Task[None] | None = None
            read_at = loop.time()  # the last role read that answered
            try:
                while True:
                    role = await self.role(store)
                    if role is not None:
                        read_at = loop.time()
                        want = role.term if role.leader else 0
                    elif loop.time() - read_at < self.role_grace:
                        want = self.term  # unknown for now: as it was
                    else:
                        if self.term:
                            log.warning("leader loops: no answer about this master's role "
                                        "for %.1fs", loop.time() - read_at)
                        want = 0
                    if group is not None and (want != self.term or group.done()):
                        await self._stop(group)
                        group = None
                    if group is None and want and role is not None:  # known to lead
                        group = asyncio.ensure_future(self._lead(want))
                    await asyncio.sleep(self.poll)
            finally:
                if group is not None:
                    await self._stop(group)

    async def _stop(self, group: asyncio.Task[None]) -> None:
        group.cancel()
        try:
            await group
        except asyncio.CancelledError:
            # The group's own cancel ends here; one of run() itself (the master
            # stopping) must go on up, or run() would poll on and never end.
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise
        finally:
            log.warning("leader loops stopped (term %d)", self.term)
            self.term = 0

    async def _lead(self, term: int) -> None:
        self.term = term
        self.started += 1
        log.warning("leader loops starting for term %d", term)
        # Requests to this master only: a leader's loops must not act through another.
        async with transport.Transport([self.api_url], self.token, ca=self.ca, pinned=True,
                                       wait=5.0, timeout=10.0) as tp:
            client = rest.RestClient(tp, term=term)
            informers = inf.InformerFactory(client, resync=self.options.resync)
            events = ev.EventRecorder(client, "raftkube-controller-manager", clock=self.clock)
            ctx = base.Context(client=client, informers=informers, events=events,
                               clock=self.clock, options=self.options)
            loops = self.make_loops(ctx)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(informers.run())
                    group.create_task(events.run())
                    await informers.wait_synced()
                    log.warning("leader loops at work for term %d: %s", term,
                                ", ".join(loop.name for loop in loops))
                    for loop in loops:
                        group.create_task(loop.run())
            except Exception:
                log.exception("leader loops failed (term %d); they restart", term)
                await asyncio.sleep(1.0 + random.random())
