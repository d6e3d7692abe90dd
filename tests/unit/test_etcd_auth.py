"""etcd's password login on the /v3 gateway: a token for a name and password, sent
back without `Bearer`, good on /v3 only; refusals in etcd's words."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import test_utils, web

from raftkube.apiserver import app as apiapp
from raftkube.apiserver import etcdauth
from raftkube.store import replica as rep
from tests.unit.conftest import TOKEN, Served

pytestmark = pytest.mark.unit
Client = test_utils.TestClient[web.Request, web.Application]


@pytest.fixture
async def gateway(replica: rep.Replica) -> AsyncIterator[Client]:
    app = apiapp.make_app(replica, token=TOKEN, etcd_users={"root": "s3cret", "ann": "pw"})
    client: Client = test_utils.TestClient(test_utils.TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def post(client: Client, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    async with client.post(path, data=json.dumps(body), headers=headers) as resp:
        return resp.status, await resp.json()


async def test_login_then_the_token_without_bearer_opens_v3(gateway: Client) -> None:
    status, out = await post(gateway, "/v3/auth/authenticate",
                             {"name": "root", "password": "s3cret"})
    assert status == 200 and out["token"] and out["header"]["revision"]
    token = out["token"]
    status, put = await post(gateway, "/v3/kv/put", {"key": "a2V5", "value": "dg=="},
                             Authorization=token)
    assert status == 200, put
    status, got = await post(gateway, "/v3/kv/range", {"key": "a2V5"}, Authorization=token)
    assert status == 200 and got["kvs"][0]["value"] == "dg=="
    # Not a REST credential.
    async with gateway.get("/api/v1/namespaces", headers={"Authorization": token}) as resp:
        assert resp.status == 401


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"name": "root", "password": "wrong"}, 400, "authentication failed"),
    ({"name": "nobody", "password": "s3cret"}, 400, "authentication failed"),
    ({"name": "root"}, 400, "name and password must be strings"),
])
async def test_bad_logins(gateway: Client, body: dict[str, Any], status: int,
                          words: str) -> None:
    got, out = await post(gateway, "/v3/auth/authenticate", body)
    assert got == status and words in out["message"]
    got, out = await post(gateway, "/v3/kv/range", {"key": "a2V5"}, Authorization="made.1")
    assert got == 401 and "invalid auth token" in out["message"]


def test_tokens_expire_after_their_ttl_since_last_use() -> None:
    now = [0.0]
    sessions = etcdauth.Sessions({"u": "p"}, clock=lambda: now[0])
    token = sessions.login("u", "p")
    now[0] = etcdauth.TTL - 1
    assert sessions.user(token) == "u"  # used: good for another TTL
    now[0] += etcdauth.TTL - 1
    assert sessions.user(token) == "u"
    now[0] += etcdauth.TTL + 1
    assert sessions.user(token) is None
    with pytest.raises(etcdauth.NotEnabled):
        etcdauth.Sessions({}).login("u", "p")


def test_users_file_errors_name_the_line() -> None:
    assert etcdauth.read_users("# c\nroot,pw,with,commas\n\n", "f") == {"root": "pw,with,commas"}
    with pytest.raises(ValueError, match="f:2: expected `name,password`"):
        etcdauth.read_users("a,b\nnocomma\n", "f")


async def test_without_users_login_is_not_enabled(served: Served) -> None:
    async with served.client.post("/v3/auth/authenticate",
                                  data=json.dumps({"name": "a", "password": "b"})) as resp:
        assert resp.status == 400
        assert "authentication is not enabled" in (await resp.json())["message"]


async def test_login_bodies_are_small_and_not_read_when_logins_are_off(
        gateway: Client, served: Served) -> None:
    big = {"name": "root", "password": "x" * 8192}
    async with gateway.post("/v3/auth/authenticate", data=json.dumps(big)) as resp:
        assert resp.status == 413, await resp.text()
    # No users given: "not enabled", whatever the body (it is not read).
    async with served.client.post("/v3/auth/authenticate", data=b"{" * 100_000) as resp:
        assert "authentication is not enabled" in await resp.text()
