"""The cloud service controller over seeded caches and a fake provider: a LoadBalancer
Service gets the finalizer, then its ingress; a provider error is an Event and a retry;
a Service changed to another type, or deleted, loses its load balancer; and the API
refuses bad loadBalancerSourceRanges, naming the field."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from raftkube.api import kinds, validation
from raftkube.client import workqueue
from raftkube.cloud import provider as pv
from raftkube.cloud import service as svcs
from tests.unit.cloud_support import FakeProvider, cloud_context, service
from tests.unit.controller_fixture import Fixture, conflict

pytestmark = pytest.mark.unit
KEY = "default/web"


def make(f: Fixture, provider: Any, **options: Any) -> svcs.ServiceController:
    return svcs.ServiceController(cloud_context(f, provider, **options))


async def test_a_load_balancer_service_gets_the_finalizer_then_its_ingress() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web"))
    provider = FakeProvider(ingress=["192.0.2.10", "192.0.2.11"])
    actions = await f.run(make(f, provider), KEY)
    assert [(a.verb, a.name) for a in actions] == [("update", "web"), ("update_status", "web")]
    assert actions[0].body["metadata"]["finalizers"] == [svcs.FINALIZER]
    assert actions[1].body["status"]["loadBalancer"] == {
        "ingress": [{"ip": "192.0.2.10"}, {"ip": "192.0.2.11"}]}
    assert provider.calls == ["ensure web"]
    assert ("Normal", "EnsuredLoadBalancer",
            "Ensured load balancer at 192.0.2.10, 192.0.2.11") in f.recorded_events()


async def test_nothing_is_written_when_the_ingress_is_already_right() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web", finalizers=[svcs.FINALIZER], ingress=["192.0.2.10"]))
    assert await f.run(make(f, FakeProvider()), KEY) == []


@pytest.mark.parametrize("spec", [{"type_": "ClusterIP"}, {"type_": "NodePort"},
                                  {"loadBalancerClass": "example.com/other"}])
async def test_services_that_want_no_load_balancer_are_left_alone(spec: dict[str, Any]) -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web", **spec))
    provider = FakeProvider()
    assert await f.run(make(f, provider), KEY) == []
    assert provider.calls == []


async def test_a_provider_error_is_an_event_and_a_retry_that_blocks_nothing_else() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web", finalizers=[svcs.FINALIZER]),
           service("db", finalizers=[svcs.FINALIZER]))
    provider = FakeProvider(fail=pv.ProviderError("quota exceeded"))
    c = make(f, provider)
    with pytest.raises(pv.ProviderError, match="cloud provider fake: ensure the load "
                                                "balancer of default/web: quota exceeded"):
        await f.run(c, KEY)
    (event,) = f.recorded_events()
    assert event[:2] == ("Warning", "SyncLoadBalancerFailed")
    assert "Error syncing load balancer: cloud provider fake" in event[2]
    # Through the workers: the failed key backs off (1 s first), the other one is done.
    provider.fail = None
    calls: list[str] = []
    real = provider.ensure_load_balancer

    async def flaky(svc: dict[str, Any], view: pv.View) -> list[str]:
        calls.append(svc["metadata"]["name"])
        if svc["metadata"]["name"] == "web":
            raise pv.ProviderError("still no quota")
        return await real(svc, view)

    provider.ensure_load_balancer = flaky  # type: ignore[method-assign]
    c.queue.add("default/web")
    c.queue.add("default/db")
    task = asyncio.ensure_future(workqueue.run_workers(c.queue, c.reconcile, workers=1))
    try:
        for _ in range(100):
            if any(a.verb == "update_status" and a.name == "db" for a in f.client.actions):
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls.count("web") == 1, "web waits for its back-off"
    assert c.queue.requeues("default/web") == 1
    assert any(a.verb == "update_status" and a.name == "db" for a in f.client.actions)


async def test_a_provider_that_hangs_is_an_error_after_the_call_timeout() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web", finalizers=[svcs.FINALIZER]))
    with pytest.raises(pv.ProviderError, match="no answer in"):
        await f.run(make(f, FakeProvider(hang=True), call_timeout=0.05), KEY)


async def test_changed_to_another_type_it_loses_its_load_balancer() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web", type_="ClusterIP", finalizers=[svcs.FINALIZER],
                                  ingress=["192.0.2.10"]))
    provider = FakeProvider()
    actions = await f.run(make(f, provider), KEY)
    assert provider.calls == ["delete web"]
    assert [(a.verb, a.name) for a in actions] == [("update_status", "web"), ("update", "web")]
    assert actions[0].body["status"]["loadBalancer"] == {}
    assert "finalizers" not in actions[1].body["metadata"]
    assert ("Normal", "DeletedLoadBalancer", "Deleted load balancer") in f.recorded_events()


async def test_a_deleted_service_is_cleaned_up_then_released() -> None:
    f = Fixture()
    deleting = service("web", finalizers=["example.com/keep", svcs.FINALIZER],
                       ingress=["192.0.2.10"])
    deleting["metadata"]["deletionTimestamp"] = "2023-11-14T22:13:20Z"
    f.seed(kinds.SERVICE, deleting)
    provider = FakeProvider()
    actions = await f.run(make(f, provider), KEY)
    assert provider.calls == ["delete web"]
    assert actions[-1].body["metadata"]["finalizers"] == ["example.com/keep"]


async def test_a_provider_error_on_delete_keeps_the_finalizer() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web", type_="NodePort", finalizers=[svcs.FINALIZER]))
    with pytest.raises(pv.ProviderError):
        await f.run(make(f, FakeProvider(fail=RuntimeError("boom"))), KEY)
    assert f.client.actions == []
    assert f.recorded_events()[0][1] == "SyncLoadBalancerFailed"


async def test_a_service_gone_without_the_finalizer_still_has_its_load_balancer_deleted(
        ) -> None:
    f = Fixture()
    c = make(f, FakeProvider())
    svc = service("web", ingress=["192.0.2.10"])
    c._service_gone(svc)  # as the informer tells a deletion
    await f.run(c, KEY)
    assert c.provider.calls == ["delete web"]  # type: ignore[attr-defined]


async def test_a_conflict_writes_nothing_more_and_raises_nothing() -> None:
    f = Fixture()
    f.seed(kinds.SERVICE, service("web"))
    f.client.fail[("update", "web")] = conflict("web")
    provider = FakeProvider()
    assert await f.run(make(f, provider), KEY) == []
    assert provider.calls == []  # the newer Service comes back through the informer


async def test_node_and_slice_changes_enqueue_the_services_they_decide() -> None:
    from tests.unit.cloud_support import endpoint_slice, node

    f = Fixture()
    f.seed(kinds.SERVICE, service("web"), service("local", port=81,
                                                  externalTrafficPolicy="Local"),
           service("plain", type_="ClusterIP"))
    c = make(f, FakeProvider())
    while len(c.queue):
        c.queue.done(await c.queue.get())
    old = node("n1", ip="192.0.2.1")
    new = copy.deepcopy(old)
    new["status"]["conditions"][0]["status"] = "Unknown"
    c.nodes._notify("update", old, new)
    assert sorted(c.queue._queue) == ["default/local", "default/web"]
    while len(c.queue):
        c.queue.done(await c.queue.get())
    c.nodes._notify("update", old, copy.deepcopy(old))  # a heartbeat: nothing
    c.slices._notify("add", endpoint_slice("web", ("10.0.0.1", "n1", True)))
    assert len(c.queue) == 0, "a Cluster-policy Service does not depend on its endpoints"
    c.slices._notify("add", endpoint_slice("local", ("10.0.0.1", "n1", True)))
    assert list(c.queue._queue) == ["default/local"]


@pytest.mark.parametrize(("spec", "field", "reason"), [
    ({"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0/8", "nope"]},
     "spec.loadBalancerSourceRanges[1]", "FieldValueInvalid"),
    ({"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.1"]},
     "spec.loadBalancerSourceRanges[0]", "FieldValueInvalid"),
    ({"type": "NodePort", "loadBalancerSourceRanges": ["10.0.0.0/8"]},
     "spec.loadBalancerSourceRanges", "FieldValueForbidden"),
])
def test_bad_source_ranges_are_refused_naming_the_field(spec: dict[str, Any], field: str,
                                                         reason: str) -> None:
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"ports": [{"port": 80}], **spec}}
    found = {(c.field, c.reason) for c in validation.validate(obj)}
    assert (field, reason) in found


def test_good_source_ranges_pass() -> None:
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"type": "LoadBalancer", "ports": [{"port": 80}],
                    "loadBalancerSourceRanges": ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]}}
    assert validation.validate(obj) == []


async def test_a_service_whose_port_becomes_taken_loses_its_stale_ingress() -> None:
    """`second` had its load balancer on port 81; changed to port 80, which the older
    `first` holds, it may not keep an ingress the agents cannot serve (they would pick
    one of the two by name, not by age, and `first` could lose its port)."""
    from raftkube.cloud import local
    from tests.unit.cloud_support import node
    from tests.unit.controller_fixture import T0

    f = Fixture()
    f.seed(kinds.NODE, node("n1", ip="192.0.2.1"))
    f.seed(kinds.SERVICE,
           service("first", created=T0 - 60, finalizers=[svcs.FINALIZER],
                   ingress=["192.0.2.1"]),
           service("second", created=T0, finalizers=[svcs.FINALIZER], ingress=["192.0.2.1"]))
    c = make(f, local.LocalProvider())
    with pytest.raises(pv.ProviderError, match="default/first"):
        await f.run(c, "default/second")
    assert [(a.verb, a.name) for a in f.client.actions] == [("update_status", "second")]
    assert f.client.actions[0].body["status"]["loadBalancer"] == {}
    assert [e[1] for e in f.recorded_events()] == ["SyncLoadBalancerFailed"]


async def test_a_port_freed_by_a_port_change_wakes_the_services_waiting_for_it() -> None:
    f = Fixture()
    first = service("first", finalizers=[svcs.FINALIZER], ingress=["192.0.2.1"])
    f.seed(kinds.SERVICE, first, service("second", finalizers=[svcs.FINALIZER]))
    c = make(f, FakeProvider())
    while len(c.queue):
        c.queue.done(await c.queue.get())
    moved = copy.deepcopy(first)
    moved["spec"]["ports"][0]["port"] = 81
    c.services._notify("update", first, moved)
    assert sorted(c.queue._queue) == ["default/first", "default/second"]


async def test_a_failed_delete_of_a_service_gone_without_the_finalizer_is_retried() -> None:
    f = Fixture()
    provider = FakeProvider(fail=pv.ProviderError("api down"))
    c = make(f, provider)
    c._service_gone(service("web", ingress=["192.0.2.10"]))
    with pytest.raises(pv.ProviderError):
        await f.run(c, KEY)
    provider.fail = None
    await f.run(c, KEY)  # the retry the workers make after the back-off
    assert provider.calls == ["delete web", "delete web"]
    await f.run(c, KEY)
    assert provider.calls == ["delete web", "delete web"], "done once it succeeded"


async def test_an_older_service_that_becomes_a_load_balancer_wakes_the_others() -> None:
    """`first` (older) turns into a LoadBalancer on the port `second` serves: it wins
    the port, so `second` must be looked at again to give up its ingress."""
    from tests.unit.controller_fixture import T0

    f = Fixture()
    first = service("first", type_="ClusterIP", created=T0 - 60)
    f.seed(kinds.SERVICE, first,
           service("second", finalizers=[svcs.FINALIZER], ingress=["192.0.2.1"]))
    c = make(f, FakeProvider())
    while len(c.queue):
        c.queue.done(await c.queue.get())
    now_lb = copy.deepcopy(first)
    now_lb["spec"]["type"] = "LoadBalancer"
    c.services._notify("update", first, now_lb)
    assert sorted(c.queue._queue) == ["default/first", "default/second"]
