"""Bindings written in groups: what the scheduler decided while the last write was out.

The scheduler decides one pod at a time, but each binding is a store write: a request,
a Raft entry, a journal record. The `Binder` sends one binding at once when nothing is
in flight for its namespace, and everything decided meanwhile as one `BindingList` when
the previous request returns (a journal's group commit, applied to bindings): an idle
cluster binds with no added delay, a busy one in requests of up to `batch` bindings, one
store transaction each. Every caller still gets its own binding's answer: `bind`
returns when the pod is bound and raises the `ApiError` its own `binding` POST would
have raised (409 bound already, 404 gone), or the `ClientError` of the request that
carried it (the outcome unknown). A server that does not take a `BindingList` (400 to
the whole list: an older master) gets one `binding` POST per pod from then on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from raftkube.client import rest
from raftkube.client.errors import ApiError, ClientError


@dataclass
class _Pending:
    pod: str
    node: str
    uid: str
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


# The most bindings one BindingList may hold (the API server's `BATCH_MAX`).
BATCH_MAX = 100


class Binder:
    def __init__(self, client: rest.RestClient, *, batch: int = 64) -> None:
        self.client = client
        self.batch = min(batch, BATCH_MAX)
        self.requests = 0  # bind requests sent (a BindingList counts once)
        self._queued: dict[str, list[_Pending]] = {}
        self._sending: set[str] = set()
        self._lists = True  # False once a master refused a BindingList
        self._tasks: set[asyncio.Future[None]] = set()

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> None:
        if not self._lists:
            self.requests += 1
            await self.client.bind(namespace, pod, node, uid=uid)
            return
        pending = _Pending(pod, node, uid)
        self._queued.setdefault(namespace, []).append(pending)
        if namespace not in self._sending:
            self._sending.add(namespace)
            task = asyncio.ensure_future(self._send_all(namespace))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await pending.done

    def close(self) -> None:
        """Stop sending (the scheduler stops): whoever still waits is told so."""
        for task in list(self._tasks):
            task.cancel()
        for namespace in list(self._queued):  # a task cancelled before it ran
            for p in self._queued.pop(namespace):
                if not p.done.done():
                    p.done.set_exception(ClientError("the scheduler stopped"))

    async def _send_all(self, namespace: str) -> None:
        try:
            while self._queued.get(namespace):
                queued = self._queued[namespace]
                group, self._queued[namespace] = queued[:self.batch], queued[self.batch:]
                await self._send(namespace, group)
        finally:
            self._sending.discard(namespace)
            for p in self._queued.pop(namespace, []):  # left behind by a cancel
                if not p.done.done():
                    p.done.set_exception(ClientError("the scheduler stopped"))

    async def _send(self, namespace: str, group: list[_Pending]) -> None:
        try:
            if len(group) == 1 or not self._lists:
                # Each binding's caller learns its own answer as it comes: one that
                # fails (its request lost, say) fails neither those before nor after it.
                for p in group:
                    self.requests += 1
                    try:
                        await self.client.bind(namespace, p.pod, p.node, uid=p.uid)
                    except ClientError as e:  # an ApiError too: 409 bound, 404 gone
                        if not p.done.done():
                            p.done.set_exception(e)
                    else:
                        if not p.done.done():
                            p.done.set_result(None)
                return
            self.requests += 1
            try:
                answers = await self.client.bind_batch(
                    namespace, [(p.pod, p.node, p.uid) for p in group])
            except ApiError as e:
                if e.code != 400:
                    raise
                self._lists = False  # an older master: one binding a request
                await self._send(namespace, group)
                return
        except ClientError as e:
            for p in group:
                if not p.done.done():
                    p.done.set_exception(e)
            return
        except BaseException as e:  # cancelled: nobody is left waiting in vain
            for p in group:
                if not p.done.done():
                    p.done.set_exception(ClientError(f"binding not sent: {e!r}"))
            raise
        for p, answer in zip(group, answers, strict=False):
            if p.done.done():
                continue
            if int(answer.get("code") or 0) in (200, 201):
                p.done.set_result(None)
            else:
                p.done.set_exception(ApiError(answer))
        for p in group[len(answers):]:  # a short answer: the outcome is unknown
            if not p.done.done():
                p.done.set_exception(ClientError("no answer for this binding"))
