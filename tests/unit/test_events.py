"""The events the controllers record are ones the server accepts."""

from __future__ import annotations

import asyncio
import copy
import io
import json
import random
from typing import Any

import aiohttp
import pytest

from raftkube.api import kinds
from raftkube.apiserver import objects as ob
from raftkube.apiserver import status as stt
from raftkube.client import events as ev
from raftkube.client import rest, transport
from raftkube.client.errors import ApiError
from raftkube.store import replica as rep
from tests.unit.conftest import NODE_TOKEN, Served, wait_for

pytestmark = pytest.mark.unit


async def test_a_recorded_event_is_accepted_and_names_do_not_clash(served: Served) -> None:
    recorder = ev.EventRecorder(None, "raftkube-controller-manager",  # type: ignore[arg-type]
                                clock=lambda: 1_700_000_000.0)
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": "web", "namespace": "default", "uid": "u"}}
    for _ in range(2):  # the same object, the same second
        recorder.event(deployment, "Normal", "ScalingReplicaSet",
                       "Scaled up replica set web-5d9c to 3 from 0")
    for _ in range(2):
        namespace, body = recorder._queue.get_nowait()
        answer = await served.client.post(f"/api/v1/namespaces/{namespace}/events",
                                          json=body, headers=served.auth)
        assert answer.status == 201, await answer.text()
    listed = await served.client.get("/api/v1/namespaces/default/events",
                                     headers=served.auth)
    items = (await listed.json())["items"]
    assert [e["message"] for e in items] == ["Scaled up replica set web-5d9c to 3 from 0"] * 2
    assert all(e["metadata"]["name"].startswith("web.") for e in items)


def _event(name: str, message: str = "m", namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
            "reason": "Scheduled", "message": message, "type": "Normal"}


async def test_an_event_list_is_created_in_one_transaction(served: Served) -> None:
    before = served.replica.revision
    answer = await served.client.post(
        "/api/v1/namespaces/default/events", headers=served.auth,
        json={"apiVersion": "v1", "kind": "EventList",
              "items": [_event(f"e{i}", f"m{i}") for i in range(30)]})
    assert answer.status == 201, await answer.text()
    created = (await answer.json())["items"]
    assert [e["metadata"]["name"] for e in created] == [f"e{i}" for i in range(30)]
    # One revision for all of them: one store write, one Raft entry.
    assert {e["metadata"]["resourceVersion"] for e in created} == {str(before + 1)}
    assert served.replica.revision == before + 1
    listed = await served.client.get("/api/v1/namespaces/default/events",
                                     headers=served.auth)
    assert sorted(e["message"] for e in (await listed.json())["items"]) == \
        sorted(f"m{i}" for i in range(30))


@pytest.mark.parametrize(("items", "status", "words"), [
    ([], 400, "non-empty list"),
    (["not an object"], 400, "non-empty list"),
    ([_event(f"e{i}") for i in range(101)], 400, "at most 100"),
    ([_event("ok"), {**_event("bad"), "type": 7}], 422, "items[1]."),
    ([_event("ok"), {**_event("x"), "apiVersion": "apps/v1"}], 400, "do not match"),
])
async def test_a_bad_event_list_creates_nothing(served: Served, items: list[Any],
                                                status: int, words: str) -> None:
    before = served.replica.revision
    answer = await served.client.post(
        "/api/v1/namespaces/default/events", headers=served.auth,
        json={"apiVersion": "v1", "kind": "EventList", "items": items})
    assert answer.status == status, await answer.text()
    assert words in (await answer.json())["message"]
    assert served.replica.revision == before


async def test_an_event_list_with_a_name_taken_creates_the_others(served: Served) -> None:
    first = await served.client.post("/api/v1/namespaces/default/events",
                                     json=_event("taken", "old"), headers=served.auth)
    assert first.status == 201
    answer = await served.client.post(
        "/api/v1/namespaces/default/events", headers=served.auth,
        json={"apiVersion": "v1", "kind": "EventList",
              "items": [_event("a"), _event("taken", "new"), _event("b")]})
    assert answer.status == 201, await answer.text()
    assert [e["metadata"]["name"] for e in (await answer.json())["items"]] == ["a", "b"]
    taken = await served.client.get("/api/v1/namespaces/default/events/taken",
                                    headers=served.auth)
    assert (await taken.json())["message"] == "old"


async def test_a_node_may_send_an_event_list_but_not_other_lists(served: Served) -> None:
    node = {"Authorization": f"Bearer {NODE_TOKEN}"}
    answer = await served.client.post(
        "/api/v1/namespaces/default/events", headers=node,
        json={"apiVersion": "v1", "kind": "EventList", "items": [_event("n1.e")]})
    assert answer.status == 201, await answer.text()
    pods = await served.client.post(
        "/api/v1/namespaces/default/pods", headers=served.auth,
        json={"apiVersion": "v1", "kind": "PodList", "items": []})
    assert pods.status == 400


async def test_the_recorder_sends_its_backlog_in_few_requests(served: Served) -> None:
    url = str(served.client.make_url("")).rstrip("/")
    async with transport.Transport([url], served.token, wait=5.0, timeout=10.0) as tp:
        client = rest.RestClient(tp)
        recorder = ev.EventRecorder(client, "test")
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "namespace": "default", "uid": "u"}}
        before = served.replica.revision
        for i in range(120):  # queued before the recorder runs: a backlog
            recorder.event(pod, "Normal", "Started", f"Started container c{i}")
        task = asyncio.ensure_future(recorder.run())
        try:
            await wait_for(lambda: recorder.sent == 120, deadline=20, what="120 events")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        # 50 a request (plus the events' lease): a handful of revisions, not 120.
        assert served.replica.revision - before <= 4
        listed = await client.list(kinds.EVENT, "default")
        assert len(listed["items"]) == 120


async def _post_large(served: Served, path: str, body: dict[str, Any]
                      ) -> aiohttp.ClientResponse:
    """POST a body of megabytes (streamed: aiohttp warns of a large bytes body)."""
    return await served.client.post(
        path, data=io.BytesIO(json.dumps(body).encode()),
        headers={**served.auth, "Content-Type": "application/json"})


async def test_an_event_list_past_the_store_limit_goes_in_several_transactions(
        served: Served) -> None:
    # 40 x 50 KB is past the store's 1.5 MiB request limit for one txn: the events that
    # do not fit go into a next one instead of all being refused as too large.
    before = served.replica.revision
    answer = await _post_large(served, "/api/v1/namespaces/default/events", {
        "apiVersion": "v1", "kind": "EventList",
        "items": [_event(f"e{i}", f"{i}" + "m" * 50_000) for i in range(40)]})
    assert answer.status == 201, (await answer.text())[:500]
    created = (await answer.json())["items"]
    assert [e["metadata"]["name"] for e in created] == [f"e{i}" for i in range(40)]
    assert 1 < served.replica.revision - before <= 4
    listed = await served.client.get("/api/v1/namespaces/default/events",
                                     headers=served.auth)
    assert len((await listed.json())["items"]) == 40


@pytest.mark.parametrize(("bad", "status", "words"), [
    ({**_event("x"), "apiVersion": "apps/v1"}, 400, "items[1]: "),
    ({**_event("x"), "kind": "Pod"}, 400, "items[1]: "),
    (_event("x", namespace="other"), 400, "items[1]: "),
    ({**_event("x"), "unknownField": 1}, 400, "items[1]: "),
    (_event("x", "m" * 1_600_000), 413, "items[1]: Request entity too large"),
    ({**_event("x"), "metadata": 5}, 422, "items[1]: "),
], ids=["apiVersion", "kind", "namespace", "strict", "too large", "metadata"])
async def test_every_refusal_of_an_event_list_names_the_item(
        served: Served, bad: dict[str, Any], status: int, words: str) -> None:
    before = served.replica.revision
    answer = await _post_large(
        served, "/api/v1/namespaces/default/events?fieldValidation=Strict",
        {"apiVersion": "v1", "kind": "EventList", "items": [_event("ok"), bad]})
    assert answer.status == status, (await answer.text())[:500]
    assert words in (await answer.json())["message"]
    assert served.replica.revision == before


async def test_an_event_list_leaves_its_items_alone_and_renames_a_generated_clash(
        served: Served) -> None:
    objects = ob.Objects(served.replica, rng=random.Random(7))
    clash = "g-" + "".join(random.Random(7).choice(ob.GENERATE_ALPHABET) for _ in range(5))
    await objects.create(kinds.EVENT, "default", _event(clash, "there first"))
    objects.rng = random.Random(7)  # the batch's first generated name is `clash`
    generated = _event("", "generated")
    generated["metadata"] = {"generateName": "g-", "namespace": "default"}
    items = [generated, _event("given")]
    sent = copy.deepcopy(items)
    created = await objects.create_batch(kinds.EVENT, "default", items)
    assert items == sent  # the caller's items: no generated name written into them
    assert [e["message"] for e in created] == ["generated", "m"]
    assert created[0]["metadata"]["name"].startswith("g-")
    assert created[0]["metadata"]["name"] != clash
    there = await objects.get(kinds.EVENT, "default", clash)
    assert there.obj["message"] == "there first"


class _FakeEvents:
    """A client whose EventList POST answers `batch_error`, and whose POST of one event
    refuses those whose message is in `refused`."""

    def __init__(self, batch_error: dict[str, Any] | None, refused: set[str]) -> None:
        self.batch_error = batch_error
        self.refused = refused
        self.batches = 0
        self.created: list[str] = []

    async def create_batch(self, kind: Any, namespace: str, bodies: list[Any]
                           ) -> list[Any]:
        self.batches += 1
        if self.batch_error:
            raise ApiError({"kind": "Status", **self.batch_error})
        self.created += [b["message"] for b in bodies]
        return bodies

    async def create(self, kind: Any, namespace: str, body: dict[str, Any]) -> Any:
        if body["message"] in self.refused:
            raise ApiError({"kind": "Status", "code": 422, "message": "bad"})
        self.created.append(body["message"])
        return body


@pytest.mark.parametrize(("error", "batches_after"), [
    ({"code": 422, "message": 'Event "e" is invalid: items[1].type: Required value'}, True),
    ({"code": 413, "message": "items[1]: Request entity too large"}, True),
    ({"code": 400, "message": "items[1]: the namespace of the object does not match"}, True),
    ({"code": 400, "message": "a PodList is not created in one request"}, False),
], ids=["invalid", "too large", "an item's 400", "no EventList"])
async def test_an_event_refused_in_a_list_leaves_the_others_sent(
        error: dict[str, Any], batches_after: bool) -> None:
    fake = _FakeEvents(error, refused={"m1"})
    recorder = ev.EventRecorder(fake, "test")  # type: ignore[arg-type]
    await recorder._send("default", [_event(f"e{i}", f"m{i}") for i in range(3)])
    assert fake.created == ["m0", "m2"] and recorder.sent == 2
    assert recorder._batches is batches_after  # lists again only if the master takes them
    fake.batch_error = None
    await recorder._send("default", [_event(f"e{i}", f"n{i}") for i in range(2)])
    assert fake.batches == (2 if batches_after else 1)


async def test_one_by_one_an_event_refused_does_not_drop_the_rest() -> None:
    fake = _FakeEvents(None, refused={"m0"})
    recorder = ev.EventRecorder(fake, "test")  # type: ignore[arg-type]
    recorder._batches = False
    await recorder._send("default", [_event(f"e{i}", f"m{i}") for i in range(3)])
    assert fake.created == ["m1", "m2"] and recorder.sent == 2


async def test_an_event_list_failing_after_its_first_transaction_is_not_a_503(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    # A 503 says nothing was written (the client may send it elsewhere): once one of a
    # large list's transactions is in, a replica that fails is a 504.
    objects = ob.Objects(served.replica)
    commit = objects.commit
    commits = 0

    async def fails_second(req: dict[str, Any]) -> Any:
        nonlocal commits
        commits += 1
        if commits == 2:
            raise rep.Unavailable("no leader")
        return await commit(req)

    monkeypatch.setattr(objects, "commit", fails_second)
    items = [_event(f"e{i}", f"{i}" + "m" * 50_000) for i in range(40)]
    with pytest.raises(stt.ApiError) as refused:
        await objects.create_batch(kinds.EVENT, "default", items)
    assert refused.value.code == 504 and "were not created" in refused.value.message
    commits = 1  # the first fails now: nothing written, the replica's own 503
    with pytest.raises(rep.Unavailable):
        await objects.create_batch(kinds.EVENT, "default",
                                   [_event(f"f{i}", "m" * 50_000) for i in range(40)])
