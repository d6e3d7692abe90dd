"""The events the controllers record are ones the server accepts."""

from __future__ import annotations

import pytest

from raftkube.client import events as ev
from tests.unit.conftest import Served

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
