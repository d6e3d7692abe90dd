"""The cloud node controller over seeded caches and a fake provider: Nodes initialised
from their machines (providerID, instance type, zone), a Node whose machine is gone
deleted only once it is not Ready and the provider confirms, an unreachable machine
left to node lifecycle, a provider error as an Event and a retry; and the pod GC that
then removes a deleted Node's pods at once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.cloud import node as cnode
from raftkube.cloud import provider as pv
from raftkube.controllers import podgc
from tests.unit.cloud_support import FakeProvider, cloud_context, node
from tests.unit.controller_fixture import Fixture

pytestmark = pytest.mark.unit
M1 = pv.Machine(name="n1", provider_id="fake://zone-a/n1", addresses=("192.0.2.1",),
                instance_type="small", zone="zone-a")


def make(f: Fixture, provider: Any, **options: Any) -> cnode.NodeController:
    return cnode.NodeController(cloud_context(f, provider, **options))


async def test_a_new_node_is_initialised_from_its_machine() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", labels={"kubernetes.io/hostname": "n1"}))
    (action,) = await f.run(make(f, FakeProvider(listed=[M1])), "n1")
    assert (action.verb, action.kind, action.name) == ("patch", "nodes", "n1")
    assert action.body == {"metadata": {"labels": {cnode.INSTANCE_TYPE: "small",
                                                   cnode.ZONE: "zone-a"},
                                        "resourceVersion": "5"},
                           "spec": {"providerID": "fake://zone-a/n1"}}


def test_the_init_patch_sets_only_what_the_machine_has() -> None:
    bare = pv.Machine(name="n1", provider_id="local://n1")
    assert cnode.init_patch(node("n1"), bare) == {"spec": {"providerID": "local://n1"}}
    done = node("n1", provider_id="fake://zone-a/n1",
                labels={cnode.INSTANCE_TYPE: "small", cnode.ZONE: "zone-a"})
    assert cnode.init_patch(done, M1) is None


async def test_an_initialised_ready_node_costs_no_provider_call() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", provider_id="fake://zone-a/n1"))
    provider = FakeProvider(listed=[M1])
    assert await f.run(make(f, provider), "n1") == []
    assert provider.calls == []


async def test_a_ready_node_without_a_machine_is_never_deleted() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"))
    provider = FakeProvider(listed=[], gone={"n1"})
    assert await f.run(make(f, provider), "n1") == []
    assert provider.calls == ["machines"]  # no `exists`: a Ready agent runs somewhere


@pytest.mark.parametrize("ready", ["Unknown", "False"])
async def test_a_not_ready_node_whose_machine_is_gone_is_deleted(ready: str) -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", ready, provider_id="fake://zone-a/n1"))
    provider = FakeProvider(listed=[], gone={"n1"})
    c = make(f, provider)
    (action,) = await f.run(c, "n1")
    assert (action.verb, action.name) == ("delete", "n1")
    assert action.body["uid"] == "u-n1"  # the Node it looked at, not a new one
    assert provider.calls == ["machines", "exists n1"]
    assert c.deleted == ["n1"]
    assert ("Normal", "DeletingNode", "Deleting node n1 because it does not exist in the "
            "cloud provider") in f.recorded_events()


async def test_an_unreachable_machine_that_exists_is_left_to_node_lifecycle() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", "Unknown", provider_id="fake://zone-a/n1"))
    provider = FakeProvider(listed=[M1])
    assert await f.run(make(f, provider), "n1") == []
    # Not listed, but `exists` says it is there (a list that lagged): kept.
    provider.listed, provider.calls = [], []
    c = make(f, provider)
    assert await f.run(c, "n1") == []
    assert provider.calls == ["machines", "exists n1"]


async def test_one_machine_list_serves_the_nodes_looked_at_together() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1"), node("n2"))
    provider = FakeProvider(listed=[M1, pv.Machine(name="n2", provider_id="fake://z/n2")])
    c = make(f, provider, node_period=10.0)
    await f.run(c, "n1")
    await f.run(c, "n2")
    assert provider.calls == ["machines"]
    f.now += 6  # past node_period / 2: listed again
    f.seed(kinds.NODE, node("n3"))
    await f.run(c, "n3")
    assert provider.calls == ["machines", "machines"]


async def test_a_provider_error_is_an_event_on_the_node_and_a_retry() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n1", "Unknown"))
    c = make(f, FakeProvider(fail=OSError("vagrant: connection refused")))
    with pytest.raises(pv.ProviderError, match="list the machines: OSError"):
        await f.run(c, "n1")
    (event,) = f.recorded_events()
    assert event[:2] == ("Warning", "CloudProviderError")
    assert f.client.actions == []


async def test_a_deleted_node_is_not_deleted_again() -> None:
    f = Fixture()
    provider = FakeProvider(gone={"n1"})
    assert await f.run(make(f, provider), "n1") == []
    assert provider.calls == []


async def test_the_pod_gc_sweeps_at_once_when_a_node_is_deleted() -> None:
    f = Fixture()
    f.seed(kinds.NODE, node("n3"))
    f.seed(kinds.POD, {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "p", "namespace": "ns", "uid": "u-p"},
                       "spec": {"nodeName": "n3", "containers": [{"name": "c", "image": "i"}]},
                       "status": {"phase": "Running"}})
    gc = podgc.PodGC(f.ctx, period=600.0)
    task = asyncio.ensure_future(gc.run())
    try:
        await asyncio.sleep(0.05)  # the first sweep: nothing to collect
        assert f.client.actions == []
        informer = f.informers.informer(kinds.NODE)
        gone = informer.cache.remove("n3")
        del f.client.live[("nodes", "", "n3")]
        assert gone is not None
        informer._notify("delete", gone)  # as the watch tells the Node's deletion
        for _ in range(100):
            if f.client.actions:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    (action,) = f.client.actions
    assert (action.verb, action.name, action.body["grace"]) == ("delete", "p", 0)
