"""How objects are kept: the shortcuts a selective list takes over stored bytes.

`records.could_match` lets a list skip decoding an object whose bytes cannot hold what a
field selector asks for; it must never skip one that matches (a property over objects
and selectors), and `records.name_key` pins a `metadata.name=X` list to one key only
where that key is the only one the list can hold.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from raftkube.api import selectors
from raftkube.apiserver import objects as ob
from raftkube.apiserver import records as rec

pytestmark = pytest.mark.unit

POD = ob.known_kind("v1", "Pod")
NODE = ob.known_kind("v1", "Node")
FIELDS = sorted(selectors.FIELD_SELECTABLE)
# Names, node names and phases, with what JSON escapes: quotes, backslashes, non-ASCII.
TEXT = hs.one_of(hs.sampled_from(["n1", "n1-10", "n10", "Running", "", "default", "5",
                                  "true", 'a"b', "a\\b", "é", "ü-1"]),
                 hs.text(max_size=6))
LEAF = hs.one_of(TEXT, hs.integers(-3, 12), hs.booleans(), hs.none())


def pod(name: Any, namespace: Any, node: Any, phase: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase}}


@settings(max_examples=400, deadline=None)
@given(obj=hs.builds(pod, LEAF, LEAF, LEAF, LEAF),
       reqs=hs.lists(hs.tuples(hs.sampled_from(FIELDS), hs.sampled_from(["=", "!="]), TEXT),
                     max_size=3))
def test_could_match_never_drops_an_object_that_matches(obj: dict[str, Any],
                                                        reqs: list[tuple[str, str, str]]
                                                        ) -> None:
    fields = selectors.FieldSelector(tuple(reqs))
    if fields.matches(obj):
        assert rec.could_match(rec.encode(obj), fields)


def test_could_match_skips_other_nodes_pods() -> None:
    fields = selectors.parse_field_selector("spec.nodeName=n1-1")
    assert rec.could_match(rec.encode(pod("p", "default", "n1-1", "Running")), fields)
    assert not rec.could_match(rec.encode(pod("p", "default", "n2-7", "Running")), fields)
    assert rec.could_match(b"anything", None)
    # A superset test: bytes that hold the value elsewhere are decoded and checked.
    assert rec.could_match(rec.encode(pod("n1-1", "default", "n2", "Running")), fields)


def test_name_key_only_where_one_key_can_match() -> None:
    by_name = selectors.parse_field_selector("metadata.name=n1-5")
    assert rec.name_key(NODE, None, by_name) == rec.key_of(NODE, "", "n1-5")
    assert rec.name_key(POD, "default", by_name) == rec.key_of(POD, "default", "n1-5")
    assert rec.name_key(POD, None, by_name) is None  # every namespace may have one
    assert rec.name_key(NODE, None, None) is None
    assert rec.name_key(NODE, None, selectors.parse_field_selector("metadata.name!=x")) \
        is None
    assert rec.name_key(NODE, None, selectors.parse_field_selector("metadata.name=")) is None
