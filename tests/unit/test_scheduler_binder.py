"""The scheduler's binder: decisions made while a binding is out go together."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkube.client.errors import ApiError, ClientError
from raftkube.scheduler.binder import Binder

pytestmark = pytest.mark.unit


class FakeClient:
    """Answers bindings as the server does; pods named `taken*` are bound already."""

    def __init__(self, *, lists: bool = True, fail: bool = False) -> None:
        self.lists = lists
        self.fail = fail
        self.calls: list[list[str]] = []

    def _answer(self, pod: str) -> dict[str, Any]:
        if pod.startswith("taken"):
            return {"kind": "Status", "code": 409, "reason": "Conflict",
                    "message": f"pod {pod} is already assigned"}
        return {"kind": "Status", "status": "Success", "code": 201}

    async def bind(self, namespace: str, pod: str, node: str, *, uid: str = "") -> Any:
        self.calls.append([pod])
        await asyncio.sleep(0.01)
        answer = self._answer(pod)
        if answer["code"] != 201:
            raise ApiError(answer)
        return answer

    async def bind_batch(self, namespace: str, bindings: Any) -> list[dict[str, Any]]:
        self.calls.append([p for p, _, _ in bindings])
        await asyncio.sleep(0.01)
        if not self.lists:
            raise ApiError({"code": 400, "reason": "BadRequest", "message": "no lists"})
        if self.fail:
            raise ClientError("the master went away")
        return [self._answer(p) for p, _, _ in bindings]


async def test_bindings_decided_meanwhile_go_in_one_request() -> None:
    client = FakeClient()
    binder = Binder(client, batch=64)  # type: ignore[arg-type]
    names = ["a0", *(f"p{i}" for i in range(20)), "taken1"]
    results = await asyncio.gather(*(binder.bind("ns", n, "n1") for n in names),
                                   return_exceptions=True)
    # Decided in one go: one request.
    assert client.calls == [names]
    assert results[:-1] == [None] * 21
    assert isinstance(results[-1], ApiError) and results[-1].code == 409


async def test_a_batch_is_at_most_the_batch_size() -> None:
    client = FakeClient()
    binder = Binder(client, batch=5)  # type: ignore[arg-type]
    await asyncio.gather(*(binder.bind("ns", f"p{i}", "n1") for i in range(12)))
    assert [len(c) for c in client.calls] == [5, 5, 2]


async def test_one_decision_alone_goes_alone_and_later_ones_wait_for_it() -> None:
    client = FakeClient()
    binder = Binder(client, batch=64)  # type: ignore[arg-type]
    first = asyncio.ensure_future(binder.bind("ns", "p0", "n1"))
    await asyncio.sleep(0.001)  # its request is out
    rest = [asyncio.ensure_future(binder.bind("ns", f"p{i}", "n1")) for i in range(1, 4)]
    await asyncio.gather(first, *rest)
    assert client.calls == [["p0"], ["p1", "p2", "p3"]]


async def test_an_older_master_gets_one_binding_a_request() -> None:
    client = FakeClient(lists=False)
    binder = Binder(client, batch=64)  # type: ignore[arg-type]
    await asyncio.gather(*(binder.bind("ns", f"p{i}", "n1") for i in range(4)))
    assert client.calls == [["p0", "p1", "p2", "p3"], ["p0"], ["p1"], ["p2"], ["p3"]]
    await binder.bind("ns", "later", "n1")
    assert client.calls[-1] == ["later"]


async def test_a_failed_request_fails_each_of_its_bindings() -> None:
    client = FakeClient(fail=True)
    binder = Binder(client, batch=64)  # type: ignore[arg-type]
    results = await asyncio.gather(*(binder.bind("ns", f"p{i}", "n1") for i in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, ClientError) for r in results)


async def test_closing_tells_whoever_waits() -> None:
    client = FakeClient()
    binder = Binder(client, batch=64)  # type: ignore[arg-type]
    waiting = [asyncio.ensure_future(binder.bind("ns", f"p{i}", "n1")) for i in range(3)]
    await asyncio.sleep(0)
    binder.close()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ClientError) for r in results)


async def test_one_by_one_a_lost_binding_fails_only_itself() -> None:
    client = FakeClient(lists=False)
    lost = client.bind

    async def bind(namespace: str, pod: str, node: str, *, uid: str = "") -> Any:
        if pod == "lost":
            client.calls.append([pod])
            raise ClientError("the master went away")
        return await lost(namespace, pod, node, uid=uid)

    client.bind = bind  # type: ignore[method-assign]
    binder = Binder(client, batch=64)  # type: ignore[arg-type]
    # The list is refused (an older master): its bindings go one by one.
    results = await asyncio.gather(*(binder.bind("ns", n, "n1") for n in ["p0", "lost", "p2"]),
                                   return_exceptions=True)
    assert client.calls == [["p0", "lost", "p2"], ["p0"], ["lost"], ["p2"]]
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ClientError) and not isinstance(results[1], ApiError)


def test_a_batch_is_never_past_what_the_server_takes() -> None:
    assert Binder(FakeClient(), batch=500).batch == 100  # type: ignore[arg-type]
