"""etcd's member add/remove through the JSON gateway: answers in etcd's shapes, and the
refusals a single member can show (the cluster tests change a real cluster's members)."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.store.replica import member_id
from tests.unit.conftest import Served

pytestmark = pytest.mark.unit


async def call(served: Served, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    resp = await served.client.post(path, json=body, headers=served.auth)
    return resp.status, await resp.json()


async def test_removing_an_unknown_member_or_this_one_is_refused(served: Served) -> None:
    status, body = await call(served, "/v3/cluster/member/remove", {"ID": "12345"})
    assert (status, body["message"]) == (404, "etcdserver: member not found")
    own = str(served.replica.member_id)
    status, body = await call(served, "/v3/cluster/member/remove", {"ID": own})
    assert status == 400 and body["code"] == 9 and "ask another member" in body["message"]
    status, body = await call(served, "/v3/cluster/member/remove", {})
    assert status == 400 and "ID" in body["message"]


@pytest.mark.parametrize("urls", [None, [], ["127.0.0.1:1"], ["http://host"],
                                  ["http://h:99999"], ["http://a:1", "http://b:2"]])
async def test_a_bad_peer_url_is_refused(served: Served, urls: Any) -> None:
    status, body = await call(served, "/v3/cluster/member/add", {"peerURLs": urls})
    assert status == 400 and "peerURLs" in body["message"]


async def test_adding_a_member_that_is_one_already_is_refused(served: Served) -> None:
    own = f"http://{served.replica.raft_addr}"
    status, body = await call(served, "/v3/cluster/member/add", {"peerURLs": [own]})
    assert (status, body["code"]) == (400, 9)
    assert body["message"] == "etcdserver: Peer URLs already exists"
    status, listed = await call(served, "/v3/cluster/member/list", {})
    assert [m["ID"] for m in listed["members"]] == [str(member_id(served.replica.raft_addr))]
