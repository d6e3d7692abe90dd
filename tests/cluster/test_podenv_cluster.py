"""A pod's configuration through real masters and a real agent (simulated runtime): the
node reads exactly the ConfigMaps and Secrets its pods name, a missing one shows as
CreateContainerConfigError (status and Event) until it is created, the ConfigMap's files
are written under the agent's root and follow an update, and `rk down` removes them."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.client import rest
from tests.cluster.harness import Cluster, pod_where, rest_client, started, wait_for

pytestmark = pytest.mark.cluster

Obj = dict[str, Any]


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "podenv", agents=1, agent_args=[
        "--config-refresh", "1", "--node-status-update-frequency", "60"])


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(cluster) as client:
        yield client


def waiting(p: Obj) -> Obj:
    statuses = (p.get("status") or {}).get("containerStatuses") or [{}]
    return dict((statuses[0].get("state") or {}).get("waiting") or {})


async def test_config_error_then_env_and_files_that_follow_updates(
        cluster: Cluster, api: rest.RestClient) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
           "spec": {"nodeName": "n1", "containers": [{
               "name": "c", "image": "busybox:1.36",
               "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {
                   "name": "app", "key": "mode"}}}],
               "volumeMounts": [{"name": "conf", "mountPath": "/etc/app"},
                                {"name": "pw", "mountPath": "/etc/pw"}]}],
               "volumes": [{"name": "conf", "configMap": {"name": "app"}},
                           {"name": "pw", "secret": {"secretName": "pw", "optional": True}}]}}
    await api.create(kinds.POD, "default", pod)
    # No ConfigMap: the volume cannot be set up, so nothing starts, and an Event says why.
    await wait_for(lambda: _event(api, "FailedMount"), timeout=30, what="FailedMount event")

    await api.create(kinds.CONFIGMAP, "default", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
        "data": {"other": "1"}})
    # The volume is there now, but the key the env names is not.
    p = await pod_where(api, "web", lambda p: waiting(p).get("reason") ==
                        "CreateContainerConfigError", what="CreateContainerConfigError")
    assert waiting(p)["message"] == "couldn't find key mode in ConfigMap default/app"
    assert p["status"]["phase"] == "Pending"
    await wait_for(lambda: _event(api, "Failed"), timeout=30, what="Failed event")

    cm = await api.get(kinds.CONFIGMAP, "default", "app")
    cm["data"] = {"mode": "blue"}
    await api.update(kinds.CONFIGMAP, cm)
    p = await pod_where(api, "web", lambda p: p["status"].get("phase") == "Running",
                        what="web Running once the key exists")
    uid = p["metadata"]["uid"]
    volume = os.path.join(cluster.state_dir, "agents", "n1", "pods", uid, "volumes", "conf")
    assert os.readlink(os.path.join(volume, "mode")) == "..data/mode"

    def file_is(text: str) -> Any:
        async def check() -> bool:
            try:
                with open(os.path.join(volume, "mode")) as f:
                    return f.read() == text
            except OSError:
                return False
        return check

    await wait_for(file_is("blue"), timeout=30, what="the ConfigMap's file")
    cm = await api.get(kinds.CONFIGMAP, "default", "app")
    cm["data"] = {"mode": "green"}
    await api.update(kinds.CONFIGMAP, cm)
    await wait_for(file_is("green"), timeout=30, what="the file after the update")

    # The pod's directory goes with the pod, and rk down takes the agent's root.
    await api.delete(kinds.POD, "default", "web", grace=0)
    pod_dir = os.path.dirname(os.path.dirname(volume))

    async def gone() -> bool:
        return not os.path.exists(pod_dir)

    await wait_for(gone, timeout=30, what="the pod's directory removed")
    cluster.down()
    assert not os.path.exists(os.path.join(cluster.state_dir, "agents"))


async def _event(api: rest.RestClient, reason: str) -> bool:
    events, _ = await api.list_all(kinds.EVENT, "default")
    return any(e.get("reason") == reason and
               (e.get("involvedObject") or {}).get("name") == "web" for e in events)
