"""What a REST write answers when the store cannot say what became of it.

A write that was proposed and whose result never came (its deadline passed, or the
replica failed while it waited) may still be applied: the answer is Kubernetes' 504
Timeout, and the client reports an unknown outcome instead of sending it to another
master. A request refused before anything was proposed (the replica is not serving) is
a 503, which a client may take elsewhere. The real replica is used throughout; the
store's proposals are lost on the way (`submit` drops them), or its disk fails.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from typing import Any

import pytest

from raftkube.client import transport
from raftkube.client.errors import UnknownOutcome
from raftkube.store import journal as jr
from raftkube.store import replica as rep
from raftkube.store import state as st
from tests.unit.conftest import Served
from tests.unit.test_client_transport import Scripted
from tests.unit.test_client_transport import ok as answer_ok
from tests.unit.test_rest import CMS, call, ok

pytestmark = pytest.mark.unit

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "lost"}}


def lose_writes(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes are submitted and never committed (reads' barriers still are), and a
    proposal gives up after a second instead of ten."""
    node = served.replica.node
    submit = node.submit

    def dropping(data: bytes) -> Any:
        if st.decode_command(data)["op"] != "noop":
            return None
        return submit(data)

    monkeypatch.setattr(node, "submit", dropping)
    monkeypatch.setitem(rep.Replica.propose.__kwdefaults__, "timeout", 1.0)


async def test_a_write_whose_result_never_came_is_a_504_timeout(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    lose_writes(served, monkeypatch)
    status, out = await call(served, "POST", CMS, CM)
    assert status == 504, out
    assert (out["kind"], out["reason"], out["code"]) == ("Status", "Timeout", 504)
    assert out["message"].startswith("Timeout: ")
    assert "may or may not have been applied" in out["message"]
    listed = await ok(served, "GET", CMS)  # reads are not affected
    assert listed["items"] == []


async def test_a_write_pending_when_the_replica_fails_is_504_and_the_next_is_503(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    pwrite = os.pwrite

    def no_space(fd: int, data: Any, offset: int) -> int:
        # The journal's own writes only: journal.meta's once-a-second rewrite goes on.
        if fd != served.replica.journal.fileno():
            return pwrite(fd, data, offset)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(jr.os, "pwrite", no_space)
    status, out = await call(served, "POST", CMS, CM)
    assert (status, out["reason"]) == (504, "Timeout"), out
    assert "cannot write its journal" in out["message"]
    status, out = await call(served, "POST", CMS, {**CM, "metadata": {"name": "next"}})
    assert (status, out["reason"]) == (503, "ServiceUnavailable"), out  # nothing was done
    assert "it is stopping" in out["message"]


async def test_the_client_reports_the_unknown_outcome_and_sends_it_nowhere_else(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    lose_writes(served, monkeypatch)
    other = await Scripted(answer_ok).start()
    try:
        url = str(served.client.make_url("")).rstrip("/")
        async with transport.Transport([url, other.url], served.token, wait=0) as tp:
            with pytest.raises(UnknownOutcome, match="may or may not have been applied"):
                await tp.request("POST", CMS, body=json.dumps(CM).encode(),
                                 headers={"Content-Type": "application/json"})
            assert other.seen == []
            # A read goes on being served.
            assert (await tp.request("GET", CMS)).server == url
    finally:
        await other.stop()


async def test_a_served_store_changes_only_when_a_test_changes_it(served: Served) -> None:
    # The leader's own first writes (its member record, the term's fence) are made
    # before a test starts, so that a test's first write is not raced by them.
    assert served.replica.settled_leader
    before = served.replica.revision
    await asyncio.sleep(0.5)  # several rounds of the leader's duties
    assert served.replica.revision == before


def test_the_journal_names_the_descriptor_its_entries_are_written_to(
        served: Served) -> None:
    fd = served.replica.journal.fileno()
    assert os.readlink(f"/proc/self/fd/{fd}") == served.replica.journal.path
