"""`/version`: Kubernetes' keys and etcd's in one object, served without a token."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftkube.apiserver import app as apiapp
from raftkube.apiserver import version
from raftkube.store import replica as rep
from tests.unit.conftest import TOKEN, Served
from tests.unit.test_rest import call

pytestmark = pytest.mark.unit


async def test_version_has_kubernetes_and_etcd_keys_without_a_token(served: Served) -> None:
    status, body = await call(served, "GET", "/version", auth=False)
    assert status == 200, body
    assert (await call(served, "GET", "/version/", auth=False)) == (200, body)
    assert body["major"] == "1" and body["minor"] == "30"
    assert body["gitVersion"] == "v1.30.0-raftkube"
    for key in ("gitCommit", "buildDate", "goVersion", "compiler", "platform"):
        assert isinstance(body[key], str) and body[key], key
    assert body["etcdserver"] == body["etcdcluster"] == "3.4.0"
    assert "/" in body["platform"]


async def test_other_paths_still_need_a_token(served: Served) -> None:
    status, _ = await call(served, "GET", "/api/v1/namespaces", auth=False)
    assert status == 401


def test_a_directory_without_git_gives_the_unknown_values(tmp_path: Path) -> None:
    assert version.source_commit(tmp_path) == (version.UNKNOWN_COMMIT,
                                               version.UNKNOWN_DATE)
    assert version.info()["gitTreeState"] == ""


def test_the_commit_is_read_when_the_app_is_made_not_at_the_first_request(
        replica: rep.Replica) -> None:
    # /version's handler only reads the cache; making the app fills it, so that no
    # request waits on git.
    apiapp._version.cache_clear()
    apiapp.make_app(replica, token=TOKEN)
    assert apiapp._version.cache_info().currsize == 1
