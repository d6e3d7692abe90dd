"""Pure rules behind the lifecycle loops: EndpointSlice validation, taints and
tolerations as Kubernetes matches them, and the updates an object being deleted refuses."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkube.api import taints, validation

pytestmark = pytest.mark.unit

INVALID, REQUIRED, TOO_MANY, DUPLICATE, NOT_SUPPORTED = (
    "FieldValueInvalid", "FieldValueRequired", "FieldValueTooMany", "FieldValueDuplicate",
    "FieldValueNotSupported")


def endpointslice(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default"}, "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    body.update(fields)
    return body


@pytest.mark.parametrize(("fields", "expected"), [
    ({}, set()),
    ({"addressType": None}, {("addressType", REQUIRED)}),
    ({"addressType": "IPv5"}, {("addressType", NOT_SUPPORTED)}),
    ({"endpoints": [{"addresses": []}]}, {("endpoints[0].addresses", REQUIRED)}),
    ({"endpoints": [{"addresses": ["fe80::1"]}]}, {("endpoints[0].addresses[0]", INVALID)}),
    ({"addressType": "IPv6", "endpoints": [{"addresses": ["fe80::1"]}]}, set()),
    ({"addressType": "FQDN", "endpoints": [{"addresses": ["db.example.com"]}]}, set()),
    ({"addressType": "FQDN", "endpoints": [{"addresses": ["Not A Name"]}]},
     {("endpoints[0].addresses[0]", INVALID)}),
    ({"endpoints": [{"addresses": ["10.0.0.1"] * 101}]}, {("endpoints[0].addresses", TOO_MANY)}),
    ({"endpoints": [{"addresses": ["10.0.0.1"]}] * 1001}, {("endpoints", TOO_MANY)}),
    ({"endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "No_Such"}]},
     {("endpoints[0].nodeName", INVALID)}),
    ({"ports": [{"name": "a", "port": 70000}]}, {("ports[0].port", INVALID)}),
    ({"ports": [{"name": "a"}, {"name": "a"}]}, {("ports[1].name", DUPLICATE)}),
    ({"ports": [{"name": "a", "protocol": "ICMP"}]}, {("ports[0].protocol", NOT_SUPPORTED)}),
    ({"ports": [{"name": "a"}] * 101}, {("ports", TOO_MANY)} | {
        (f"ports[{i}].name", DUPLICATE) for i in range(1, 101)}),
    ({"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]},
     {("endpoints[0].conditions.ready", "FieldValueTypeInvalid")}),
])
def test_endpointslice_validation(fields: dict[str, Any], expected: set[tuple[str, str]]) -> None:
    found = {(c.field, c.reason) for c in validation.validate(endpointslice(**fields))}
    assert found == expected


def test_an_endpointslice_keeps_its_address_type() -> None:
    old = endpointslice()
    causes = validation.validate(endpointslice(addressType="IPv6", endpoints=[]), old=old)
    assert [(c.field, c.message) for c in causes] == [
        ("addressType", 'Invalid value: "IPv6": field is immutable')]


def test_finalizers_of_an_object_being_deleted_only_shrink() -> None:
    old = {"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": "c", "namespace": "default", "uid": "u",
                        "deletionTimestamp": "2024-01-01T00:00:00Z",
                        "finalizers": ["a.io/x", "b.io/y"]}}
    fewer = {**old, "metadata": {**old["metadata"], "finalizers": ["b.io/y"]}}
    assert validation.validate(fewer, old=old) == []
    more = {**old, "metadata": {**old["metadata"], "finalizers": ["b.io/y", "c.io/z"]}}
    assert [c.field for c in validation.validate(more, old=old)] == ["metadata.finalizers"]
    alive = {**old, "metadata": {**old["metadata"], "deletionTimestamp": None}}
    assert validation.validate({**more, "metadata": {**more["metadata"],
                                                     "deletionTimestamp": None}},
                               old=alive) == []


UNREACHABLE = {"key": taints.UNREACHABLE, "effect": "NoExecute"}
DEDICATED = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


@pytest.mark.parametrize(("toleration", "taint", "tolerated"), [
    ({"key": taints.UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}, UNREACHABLE,
     True),
    ({"key": taints.UNREACHABLE, "operator": "Exists"}, UNREACHABLE, True),  # any effect
    ({"operator": "Exists"}, UNREACHABLE, True),  # any key
    ({"key": taints.UNREACHABLE, "effect": "NoSchedule", "operator": "Exists"}, UNREACHABLE,
     False),
    ({"key": "dedicated", "value": "gpu"}, DEDICATED, True),  # Equal by default
    ({"key": "dedicated", "value": "cpu"}, DEDICATED, False),
    ({"key": "dedicated", "operator": "Exists"}, DEDICATED, True),
    ({"key": "other", "operator": "Exists"}, DEDICATED, False),
    ({"key": "dedicated", "operator": "Lt", "value": "gpu"}, DEDICATED, False),
])
def test_tolerates(toleration: dict[str, Any], taint: dict[str, Any], tolerated: bool) -> None:
    assert taints.tolerates(toleration, taint) is tolerated


def test_matching_and_seconds() -> None:
    short = {"key": taints.UNREACHABLE, "operator": "Exists", "tolerationSeconds": 5}
    forever = {"key": "dedicated", "operator": "Exists"}
    ok, used = taints.matching([UNREACHABLE, DEDICATED], [short, forever])
    assert ok and used == [short, forever]
    assert taints.toleration_seconds(used) == 5.0
    assert taints.toleration_seconds([forever]) is None
    assert taints.toleration_seconds([{**short, "tolerationSeconds": -3}, forever]) == 0.0
    assert taints.matching([UNREACHABLE, DEDICATED], [short]) == (False, [])


def test_default_tolerations_are_added_only_where_the_pod_has_none() -> None:
    added = taints.with_defaults(None, not_ready=10, unreachable=30)
    assert added == [
        {"key": taints.NOT_READY, "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 10},
        {"key": taints.UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
         "tolerationSeconds": 30}]
    own = {"key": taints.UNREACHABLE, "operator": "Exists", "effect": "NoExecute",
           "tolerationSeconds": 2}
    assert taints.with_defaults([own], not_ready=10, unreachable=30)[:1] == [own]
    assert len(taints.with_defaults([own], not_ready=10, unreachable=30)) == 2
    assert taints.with_defaults([{"operator": "Exists"}], not_ready=1, unreachable=1) == [
        {"operator": "Exists"}]  # tolerates everything, for ever: nothing to add


@given(st.lists(st.fixed_dictionaries({
    "key": st.sampled_from(["", taints.UNREACHABLE, taints.NOT_READY, "x"]),
    "operator": st.sampled_from(["Exists", "Equal"]),
    "effect": st.sampled_from(["", "NoExecute", "NoSchedule"]),
}, optional={"tolerationSeconds": st.integers(-5, 500)}), max_size=4),
    st.integers(1, 300))
def test_with_defaults_every_pod_tolerates_a_dark_node_for_a_bounded_time_or_by_choice(
        own: list[dict[str, Any]], seconds: int) -> None:
    tolerations = taints.with_defaults(own, not_ready=seconds, unreachable=seconds)
    assert tolerations[:len(own)] == own  # the pod's own come first, untouched
    ok, used = taints.matching([UNREACHABLE], tolerations)
    assert ok  # with the defaults, a node going dark never evicts a pod at once...
    limit = taints.toleration_seconds(used)
    if used[0] not in own:  # ...and the default bounds the wait, unless the pod chose
        assert limit == seconds
