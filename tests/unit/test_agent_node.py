"""The node's own objects: its Node as registered and kept current, and its Lease."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from raftkube.agent import agent as ag
from raftkube.agent import node
from raftkube.api import conditions, kinds, validation
from raftkube.client.errors import ApiError, UnknownOutcome
from tests.unit.agent_support import T0, Clock

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def config(**kw: Any) -> node.NodeConfig:
    return node.NodeConfig(name="n1", address="192.0.2.10", pod_cidr="10.244.1.0/24", **kw)


class Store:
    """A tiny API: objects by (plural, namespace, name) with resourceVersions, and a
    queue of failures to answer instead."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.rv = 100
        self.fail: list[Exception] = []
        self.writes: list[str] = []
        self.reads = 0
        self.token = "t" * 16
        self.transport: Any = None

    def _key(self, kind: kinds.Kind, obj: Obj) -> tuple[str, str, str]:
        meta = obj["metadata"]
        return kind.plural, meta.get("namespace", ""), meta["name"]

    def _save(self, key: tuple[str, str, str], obj: Obj, verb: str) -> Obj:
        if self.fail:
            raise self.fail.pop(0)
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        obj["metadata"].setdefault("uid", f"uid-{key[2]}")
        self.objects[key] = obj
        self.writes.append(f"{verb} {key[0]}")
        return copy.deepcopy(obj)

    async def get(self, kind: kinds.Kind, namespace: str, name: str) -> Obj:
        self.reads += 1
        found = self.objects.get((kind.plural, namespace, name))
        if found is None:
            raise ApiError({"code": 404, "reason": "NotFound", "message": "not found"})
        return copy.deepcopy(found)

    async def create(self, kind: kinds.Kind, namespace: str, obj: Obj) -> Obj:
        key = self._key(kind, obj)
        if key in self.objects:
            raise ApiError({"code": 409, "reason": "AlreadyExists", "message": "exists"})
        return self._save(key, obj, "create")

    async def update(self, kind: kinds.Kind, obj: Obj, **_: Any) -> Obj:
        key = self._key(kind, obj)
        if obj["metadata"].get("resourceVersion") != \
                self.objects[key]["metadata"]["resourceVersion"]:
            raise ApiError({"code": 409, "reason": "Conflict", "message": "changed"})
        return self._save(key, obj, "update")

    async def update_status(self, kind: kinds.Kind, obj: Obj) -> Obj:
        return await self.update(kind, obj)

    async def patch(self, kind: kinds.Kind, namespace: str, name: str, patch: Obj) -> Obj:
        obj = copy.deepcopy(self.objects[(kind.plural, namespace, name)])
        obj["metadata"]["labels"].update(patch["metadata"]["labels"])
        return self._save((kind.plural, namespace, name), obj, "patch")


def heartbeat(store: Store, clock: Clock, **kw: Any) -> node.NodeHeartbeat:
    hb = node.NodeHeartbeat(config=config(**kw), client=store, clock=clock)  # type: ignore[arg-type]
    hb.lease_client = store  # type: ignore[assignment]
    return hb


def test_the_node_object_is_valid_and_ready() -> None:
    obj = node.node_object(config(labels={"zone": "a"}), T0)
    assert validation.validate(obj) == []
    assert obj["metadata"]["labels"] == {
        "kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64", "zone": "a"}
    status = obj["status"]
    assert status["capacity"] == status["allocatable"] == {"cpu": "4", "memory": "8Gi",
                                                           "pods": "110"}
    assert status["addresses"] == [{"type": "InternalIP", "address": "192.0.2.10"},
                                   {"type": "Hostname", "address": "n1"}]
    ready = conditions.get(obj, "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "KubeletReady")
    assert obj["spec"]["podCIDR"] == "10.244.1.0/24"
    lease = node.lease_object(config(), {"metadata": {"uid": "u1"}}, T0 + 0.25)
    assert validation.validate(lease) == []
    assert lease["spec"]["renewTime"] == "2023-11-14T22:13:20.250000Z"


@pytest.mark.parametrize(("t", "text"), [
    (T0, "2023-11-14T22:13:20.000000Z"), (T0 + 0.999999, "2023-11-14T22:13:20.999999Z"),
    (T0 + 1.5, "2023-11-14T22:13:21.500000Z")])
def test_micro_time(t: float, text: str) -> None:
    assert node.micro_time(t) == text


async def test_registration_adopts_an_existing_node_and_adds_its_labels() -> None:
    store, clock = Store(), Clock()
    old = node.node_object(config(), T0 - 100)
    old["metadata"]["labels"] = {"mine": "yes"}
    conditions.put(old["status"], {"type": "Ready", "status": "Unknown",
                                   "reason": "NodeStatusUnknown"}, T0 - 50)
    store.objects[("nodes", "", "n1")] = {**old, "metadata": {**old["metadata"],
                                                              "resourceVersion": "5"}}
    hb = heartbeat(store, clock)
    await hb.register()
    kept = store.objects[("nodes", "", "n1")]
    assert kept["metadata"]["labels"]["mine"] == "yes"
    assert kept["metadata"]["labels"]["kubernetes.io/hostname"] == "n1"
    ready = conditions.get(kept, "Ready")
    assert ready is not None and ready["status"] == "True"  # back from Unknown
    assert store.writes == ["patch nodes", "update nodes"]


async def test_the_status_is_written_on_change_or_when_old_not_on_heartbeat_alone() -> None:
    store, clock = Store(), Clock()
    hb = heartbeat(store, clock, report_interval=300)
    await hb.register()
    clock.advance(10)
    await hb.sync_status()
    assert store.writes == ["create nodes"]
    clock.advance(300)
    await hb.sync_status()
    assert store.writes == ["create nodes", "update nodes"]  # the periodic report
    store.objects[("nodes", "", "n1")]["status"]["capacity"]["cpu"] = "1"
    clock.advance(1)
    await hb.sync_status()
    assert store.writes[-1] == "update nodes"
    assert store.objects[("nodes", "", "n1")]["status"]["capacity"]["cpu"] == "4"
    del store.objects[("nodes", "", "n1")]
    await hb.sync_status()
    assert store.writes[-1] == "create nodes"  # a deleted Node is registered again


async def test_the_lease_is_made_then_renewed_as_compare_and_swap() -> None:
    store, clock = Store(), Clock()
    hb = heartbeat(store, clock)
    await hb.register()
    await hb.renew()
    lease = store.objects[("leases", "raftkube-system", "n1")]
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-n1"
    clock.advance(2)
    await hb.renew()
    lease = store.objects[("leases", "raftkube-system", "n1")]
    assert lease["spec"]["renewTime"] == "2023-11-14T22:13:22.000000Z"
    assert lease["spec"]["holderIdentity"] == "n1"
    # Someone else wrote it: the renewal is refused, and the next reads it afresh.
    store.objects[("leases", "raftkube-system", "n1")]["metadata"]["resourceVersion"] = "1"
    with pytest.raises(ApiError):
        await hb.renew()
    await hb.renew()
    # A write whose outcome is unknown: the next renewal reads first.
    store.fail.append(UnknownOutcome("no answer"))
    with pytest.raises(UnknownOutcome):
        await hb.renew()
    assert hb.lease is None
    clock.advance(2)
    await hb.renew()
    assert store.objects[("leases", "raftkube-system", "n1")]["spec"]["renewTime"] == \
        "2023-11-14T22:13:24.000000Z"


def test_hollow_nodes_take_consecutive_ranges_and_names() -> None:
    assert ag.node_names("h", 3) == ["h-1", "h-2", "h-3"]
    assert ag.node_names("n1", 1) == ["n1"]
    assert ag.pod_cidrs("10.244.255.0/24", 3) == ["10.244.255.0/24", "10.245.0.0/24",
                                                  "10.245.1.0/24"]


async def test_the_status_check_reads_the_watched_node_not_the_api() -> None:
    store, clock = Store(), Clock()
    hb = heartbeat(store, clock)
    await hb.register()
    hb.watch.cache.put(copy.deepcopy(store.objects[("nodes", "", "n1")]))
    hb.watch.synced.set()
    # The lifecycle controller says the node is Unknown; the watch brings it.
    theirs = copy.deepcopy(store.objects[("nodes", "", "n1")])
    conditions.put(theirs["status"], {"type": "Ready", "status": "Unknown",
                                      "reason": "NodeStatusUnknown"}, T0)
    theirs = store._save(("nodes", "", "n1"), theirs, "update")
    hb.watch.cache.put(theirs)
    clock.advance(1)
    await hb.sync_status()
    ready = conditions.get(store.objects[("nodes", "", "n1")], "Ready")
    assert ready is not None and ready["status"] == "True"
    assert store.reads == 0
    # The watch has not brought that write back: what was written counts, not the
    # older copy (which would make the check write again, and be refused).
    writes = len(store.writes)
    await hb.sync_status()
    assert len(store.writes) == writes and store.reads == 0


def test_the_agent_puts_back_its_labels_and_certificate_fingerprint() -> None:
    """Removed by hand (`kubectl annotate node n1 ...-`, a replace without it), the
    fingerprint the masters pin the agent by comes back with the next status sync."""
    from raftkube.agent import node as agent_node

    config = agent_node.NodeConfig(name="n1", address="10.0.0.7", pod_cidr="10.244.1.0/24",
                                   agent_cert_sha256="ab" * 32)
    node = agent_node.node_object(config, 1000.0)
    assert agent_node.metadata_patch(node, config) == {}
    del node["metadata"]["annotations"]
    assert agent_node.metadata_patch(node, config) == {
        "annotations": {agent_node.AGENT_CERT_ANNOTATION: "ab" * 32}}
    plain = agent_node.NodeConfig(name="n1", address="10.0.0.7", pod_cidr="10.244.1.0/24")
    node["metadata"]["annotations"] = {agent_node.AGENT_CERT_ANNOTATION: "ab" * 32}
    assert agent_node.metadata_patch(node, plain) == {
        "annotations": {agent_node.AGENT_CERT_ANNOTATION: None}}
