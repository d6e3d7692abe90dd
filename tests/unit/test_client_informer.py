"""Informers against a scripted server: list, watch, resume, 410, indexes; the work queue."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from raftkube.api import kinds
from raftkube.client import informer as inf
from raftkube.client import rest, transport, workqueue

pytestmark = pytest.mark.unit

POD = kinds.by_plural("", "v1", "pods")
assert POD is not None


def pod(name: str, rv: int, node: str = "", owner: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "resourceVersion": str(rv)}
    if owner:
        meta["ownerReferences"] = [{"uid": owner, "kind": "ReplicaSet", "name": "rs"}]
    return {"kind": "Pod", "metadata": meta, "spec": {"nodeName": node} if node else {}}


class Script:
    """A REST server that answers lists and watches from a script, one step per request."""

    def __init__(self, steps: list[Any]) -> None:
        self.steps = steps
        self.queries: list[dict[str, str]] = []
        self.hold = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.queries.append(dict(request.query))
        step = self.steps.pop(0)
        if step[0] == "list":
            _, rv, items = step
            return web.json_response({"kind": "PodList", "metadata": {"resourceVersion":
                                      str(rv)}, "items": items})
        _, events, end = step
        resp = web.StreamResponse()
        await resp.prepare(request)
        for kind, obj in events:
            await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
        if end == "hold":
            await self.hold.wait()
        elif end == "drop":
            assert request.transport is not None
            request.transport.abort()
        return resp


async def serve(script: Script) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/{tail:.*}", script.handle)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert site._server is not None
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def recorder(heard: list[str], one: Any, two: Any) -> inf.Handler:
    """A handler that writes down what it hears: `one(obj)`, `two(old, new)` say which."""
    return inf.Handler(add=lambda o: heard.append(f"add {one(o)}"),
                       update=lambda old, new: heard.append(f"update {two(old, new)}"),
                       delete=lambda o: heard.append(f"delete {one(o)}"))


async def until(pred: Any, what: str) -> None:
    for _ in range(200):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def test_list_watch_resume_and_relist_after_410() -> None:
    gone = {"kind": "Status", "code": 410, "reason": "Gone", "message": "too old"}
    script = Script([
        ("list", 10, [pod("a", 5, node="n1", owner="u1"), pod("b", 8, node="n2")]),
        ("watch", [("ADDED", pod("c", 11, node="n1")), ("MODIFIED", pod("a", 12, "n2", "u1"))],
         "drop"),
        ("watch", [("ERROR", gone)], "end"),
        ("list", 20, [pod("a", 12, "n2", "u1"), pod("c", 11, "n1"), pod("d", 15, "n1")]),
        ("watch", [("BOOKMARK", {"kind": "Pod", "metadata": {"resourceVersion": "25"}}),
                   ("DELETED", pod("c", 26, "n1"))], "hold"),
    ])
    runner, url = await serve(script)
    heard: list[str] = []
    try:
        async with transport.Transport([url], "t") as tp:
            informer = inf.Informer(rest.RestClient(tp), POD)
            informer.add_handler(recorder(heard, lambda o: o["metadata"]["name"],
                                          lambda old, new: f"{new['metadata']['name']} "
                                          f"{old['metadata']['resourceVersion']}->"
                                          f"{new['metadata']['resourceVersion']}"))
            task = asyncio.ensure_future(informer.run())
            await until(lambda: informer.resource_version == "26", "the last event")
            script.hold.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await runner.cleanup()
    assert heard == ["add a", "add b", "add c", "update a 5->12",  # list, watch
                     "add d", "delete b",  # the relist after 410 reports what changed
                     "delete c"]
    # The second watch resumed where the first broke; the third started at the new list.
    watches = [q.get("resourceVersion") for q in script.queries if q.get("watch")]
    assert watches == ["10", "12", "20"]
    assert informer.lists == 2
    assert sorted(inf.key_of(o) for o in informer.cache.by_index(inf.NODE, "n1")) == ["ns/d"]
    assert [inf.key_of(o) for o in informer.cache.by_index(inf.OWNER, "u1")] == ["ns/a"]
    assert informer.cache.by_index(inf.NODE, "n2")[0]["metadata"]["resourceVersion"] == "12"


def with_uid(obj: dict[str, Any], uid: str) -> dict[str, Any]:
    obj["metadata"]["uid"] = uid
    return obj


async def test_an_object_made_again_under_the_same_name_is_a_delete_and_an_add() -> None:
    gone = {"kind": "Status", "code": 410, "reason": "Gone", "message": "too old"}
    script = Script([
        ("list", 10, [with_uid(pod("a", 5), "a1"), with_uid(pod("b", 8), "b1")]),
        # The name's uid changed between two events (the delete was not seen).
        ("watch", [("MODIFIED", with_uid(pod("a", 12), "a2"))], "end"),
        ("watch", [("ERROR", gone)], "end"),
        # After the 410: b deleted, a deleted and made again, meanwhile.
        ("list", 20, [with_uid(pod("a", 18), "a3")]),
        ("watch", [], "hold"),
    ])
    runner, url = await serve(script)
    heard: list[str] = []
    try:
        async with transport.Transport([url], "t") as tp:
            informer = inf.Informer(rest.RestClient(tp), POD)
            informer.add_handler(recorder(
                heard, lambda o: o["metadata"]["uid"],
                lambda old, new: f"{old['metadata']['uid']}->{new['metadata']['uid']}"))
            task = asyncio.ensure_future(informer.run())
            await until(lambda: informer.lists == 2 and len(script.queries) == 5, "relist")
            script.hold.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await runner.cleanup()
    assert heard == ["add a1", "add b1",
                     "delete a1", "add a2",  # a new uid is a new object
                     "delete a2", "add a3", "delete b1"]
    assert informer.cache.get("ns/a")["metadata"]["uid"] == "a3"  # type: ignore[index]


def test_cache_indexes_follow_updates_and_removals() -> None:
    cache = inf.Cache()
    cache.put(pod("a", 1, node="n1"))
    cache.put(pod("a", 2, node="n2"))
    assert cache.by_index(inf.NODE, "n1") == []
    assert [o["metadata"]["resourceVersion"] for o in cache.by_index(inf.NODE, "n2")] == ["2"]
    cache.remove("ns/a")
    assert cache.by_index(inf.NODE, "n2") == [] and len(cache) == 0
    assert cache.by_index(inf.NAMESPACE, "ns") == []


# ---- the work queue ------------------------------------------------------------------------


async def test_a_key_is_queued_once_and_never_processed_twice_at_once() -> None:
    q = workqueue.WorkQueue()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    key = await q.get()
    assert key == "a"
    q.add("a")  # changed while being processed: not handed out again yet
    assert await q.get() == "b"
    assert len(q) == 0
    q.done("a")  # now it comes back, once
    assert len(q) == 1 and await q.get() == "a"
    q.done("a")
    q.done("b")
    assert len(q) == 0


def test_backoff_doubles_per_key_to_a_cap_and_forget_resets_it() -> None:
    b = workqueue.Backoff(base=0.01, cap=0.1)
    assert [b.when("k") for _ in range(6)] == [0.01, 0.02, 0.04, 0.08, 0.1, 0.1]
    assert b.when("other") == 0.01
    b.forget("k")
    assert b.when("k") == 0.01


def test_the_bucket_bounds_the_overall_retry_rate() -> None:
    bucket = workqueue.TokenBucket(qps=10, burst=2)
    assert [bucket.reserve(100.0) for _ in range(4)] == [0.0, 0.0, 0.1, pytest.approx(0.2)]
    assert bucket.reserve(101.0) == 0.0  # a second later the bucket has refilled


async def test_add_after_keeps_the_earlier_time() -> None:
    q = workqueue.WorkQueue()
    q.add_after("k", 5.0)
    q.add_after("k", 0.05)
    assert await asyncio.wait_for(q.get(), 1) == "k"


async def test_workers_retry_failures_with_backoff_and_forget_success() -> None:
    q = workqueue.WorkQueue(backoff=workqueue.Backoff(base=0.01))
    attempts: list[str] = []

    async def reconcile(key: str) -> None:
        attempts.append(key)
        if attempts.count(key) < 3:
            raise RuntimeError("not yet")

    q.add("k")
    task = asyncio.ensure_future(workqueue.run_workers(q, reconcile, workers=2))
    await until(lambda: attempts.count("k") == 3, "three attempts")
    await until(lambda: q.requeues("k") == 0, "the success to forget the failures")
    q.shutdown()
    await asyncio.wait_for(task, 1)
    assert attempts == ["k", "k", "k"]


class Spun(BaseException):
    """Stops a worker that never gives the loop back (a plain cancel could not)."""


async def test_a_key_re_added_when_already_due_does_not_freeze_the_loop() -> None:
    # A reconcile that finds its deadline already passed and adds its key again at once,
    # without awaiting anything, must still let every other task run between turns.
    q = workqueue.WorkQueue()
    turns = 0

    async def reconcile(key: str) -> None:
        nonlocal turns
        turns += 1
        if turns > 10_000:
            raise Spun
        q.add_after(key, -1.0)

    others: list[int] = []

    async def other() -> None:
        for i in range(3):
            others.append(i)
            await asyncio.sleep(0)

    q.add("k")
    workers = asyncio.ensure_future(workqueue.run_workers(q, reconcile))
    await asyncio.wait_for(other(), 5)
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    assert others == [0, 1, 2] and turns < 100


async def test_workers_that_end_leave_no_timer_behind() -> None:
    q = workqueue.WorkQueue()
    q.add_after("k", 3600.0)  # a Job's TTL, say: the loop must not keep it for an hour

    async def reconcile(key: str) -> None:
        return None

    workers = asyncio.ensure_future(workqueue.run_workers(q, reconcile))
    await asyncio.sleep(0.01)
    workers.cancel()
    with pytest.raises(asyncio.CancelledError):
        await workers
    assert q._waiting == {}
