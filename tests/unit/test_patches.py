"""JSON patch (RFC 6902) and strategic merge patch as pure functions: what each
operation and directive does, and the error that names what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.api import jsonpatch, strategic

pytestmark = pytest.mark.unit

DOC: dict[str, Any] = {"metadata": {"name": "a", "labels": {"x": "1", "a/b": "2"}},
                       "data": {"k": "v"}, "items": [1, 2, 3]}


@pytest.mark.parametrize(("ops", "expected"), [
    ([{"op": "add", "path": "/data/n", "value": "w"}], {"k": "v", "n": "w"}),
    ([{"op": "remove", "path": "/data/k"}], {}),
    ([{"op": "replace", "path": "/data/k", "value": "z"}], {"k": "z"}),
    ([{"op": "test", "path": "/data/k", "value": "v"},
      {"op": "add", "path": "/data/t", "value": "ok"}], {"k": "v", "t": "ok"}),
    ([{"op": "copy", "from": "/data/k", "path": "/data/c"}], {"k": "v", "c": "v"}),
    ([{"op": "move", "from": "/data/k", "path": "/data/m"}], {"m": "v"}),
    ([{"op": "add", "path": "/data/s~1l", "value": "1"},
      {"op": "add", "path": "/data/t~0l", "value": "2"}], {"k": "v", "s/l": "1", "t~l": "2"}),
])
def test_json_patch_operations(ops: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    assert jsonpatch.apply(DOC, ops)["data"] == expected
    assert DOC["data"] == {"k": "v"}  # never changed in place


def test_json_patch_lists_and_escaped_keys() -> None:
    out = jsonpatch.apply(DOC, [{"op": "add", "path": "/items/-", "value": 4},
                                {"op": "add", "path": "/items/0", "value": 0},
                                {"op": "remove", "path": "/items/2"},
                                {"op": "remove", "path": "/metadata/labels/a~1b"}])
    assert out["items"] == [0, 1, 3, 4]
    assert out["metadata"]["labels"] == {"x": "1"}


@pytest.mark.parametrize(("ops", "error", "words"), [
    ({"op": "add"}, jsonpatch.Malformed, "must be a list"),
    ([{"op": "frob", "path": "/a"}], jsonpatch.Malformed, "[0].op: Unsupported value"),
    ([{"op": "add", "path": "a", "value": 1}], jsonpatch.Malformed, "must start with"),
    ([{"op": "add", "path": "/a"}], jsonpatch.Malformed, "[0].value: Required value"),
    ([{"op": "move", "path": "/a"}], jsonpatch.Malformed, "[0].from"),
    ([{"op": "remove", "path": "/data/nope"}], jsonpatch.NotApplicable, "does not exist"),
    ([{"op": "replace", "path": "/nope/x", "value": 1}], jsonpatch.NotApplicable,
     '"/nope" does not exist'),
    ([{"op": "add", "path": "/items/9", "value": 1}], jsonpatch.NotApplicable,
     "out of range"),
    ([{"op": "test", "path": "/data/k", "value": "other"}], jsonpatch.NotApplicable,
     'testing value "/data/k" failed'),
    ([{"op": "move", "from": "/data", "path": "/data/in"}], jsonpatch.NotApplicable,
     "into itself"),
])
def test_json_patch_errors_name_the_operation(ops: Any, error: type[Exception],
                                              words: str) -> None:
    with pytest.raises(error) as e:
        jsonpatch.apply(DOC, ops)
    assert words in str(e.value)


POD: dict[str, Any] = {
    "metadata": {"name": "p", "finalizers": ["a"]},
    "spec": {"containers": [
        {"name": "app", "image": "app:1", "ports": [{"containerPort": 80}],
         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
         "args": ["x", "y"]},
        {"name": "side", "image": "side:1"}],
        "volumes": [{"name": "v", "emptyDir": {}}]}}


def containers(obj: dict[str, Any]) -> dict[str, Any]:
    return {c["name"]: c for c in obj["spec"]["containers"]}


def test_strategic_merges_containers_by_name_and_their_lists_by_key() -> None:
    out = strategic.apply(POD, {"spec": {"containers": [
        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "3"},
                                                  {"name": "C", "value": "4"}],
         "ports": [{"containerPort": 443}], "args": ["z"]}]}}, "Pod")
    app = containers(out)["app"]
    assert app["image"] == "app:2"
    assert app["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                          {"name": "C", "value": "4"}]
    assert app["ports"] == [{"containerPort": 80}, {"containerPort": 443}]
    assert app["args"] == ["z"]  # no strategy: replaced, as in a merge patch
    assert containers(out)["side"] == {"name": "side", "image": "side:1"}
    assert POD["spec"]["containers"][0]["image"] == "app:1"


def test_strategic_directives() -> None:
    out = strategic.apply(POD, {
        "metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
        "spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
                 "containers": [{"name": "side", "$patch": "delete"},
                                {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}],
                 "volumes": [{"$patch": "replace"}, {"name": "w", "emptyDir": {}}]}}, "Pod")
    assert out["metadata"]["finalizers"] == ["b"]
    assert list(containers(out)) == ["app"]
    assert containers(out)["app"]["env"] == [{"name": "B", "value": "2"}]
    assert out["spec"]["volumes"] == [{"name": "w", "emptyDir": {}}]
    replaced = strategic.apply(POD, {"spec": {"$patch": "replace", "containers": []}}, "Pod")
    assert replaced["spec"] == {"containers": []}
    gone = strategic.apply({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}},
                           {"spec": {"template": {"metadata": {"$patch": "delete"}}}},
                           "Deployment")
    assert gone == {"spec": {"template": {}}}


def test_strategic_merges_a_deployments_template_and_a_services_ports() -> None:
    dep = {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"},
                                                         {"name": "b", "image": "1"}]}}}}
    out = strategic.apply(dep, {"spec": {"template": {"spec": {"containers": [
        {"name": "b", "image": "2"}]}}}}, "Deployment")
    assert [c["image"] for c in out["spec"]["template"]["spec"]["containers"]] == ["1", "2"]
    svc = {"spec": {"ports": [{"port": 80, "name": "http"}]}}
    assert strategic.apply(svc, {"spec": {"ports": [{"port": 443, "name": "https"}]}},
                           "Service")["spec"]["ports"] == [{"port": 80, "name": "http"},
                                                           {"port": 443, "name": "https"}]
    # A kind without strategies for a list: replaced whole.
    cm = {"data": {"a": "1"}, "metadata": {"name": "c"}}
    assert strategic.apply(cm, {"data": {"a": None, "b": "2"}}, "ConfigMap")["data"] == \
        {"b": "2"}


@pytest.mark.parametrize(("patch", "words"), [
    ([1], "must be a JSON object"),
    ({"spec": {"containers": [{"image": "x"}]}}, "spec.containers[0].name: Required value"),
    ({"spec": {"containers": ["x"]}}, "spec.containers[0]: must be an object"),
    ({"spec": {"$patch": "frob"}}, "spec.$patch: Unsupported value"),
    ({"spec": {"$frob": 1}}, "spec.$frob: unknown patch directive"),
    ({"metadata": {"$retainKeys": "name"}}, "metadata.$retainKeys: must be a list"),
    ({"$patch": "delete"}, "would delete the whole object"),
    ({"metadata": {"finalizers": [{"a": 1}]}}, "merges only strings"),
])
def test_strategic_errors_name_the_field(patch: Any, words: str) -> None:
    with pytest.raises(jsonpatch.Malformed) as e:
        strategic.apply(POD, patch, "Pod")
    assert words in str(e.value)


def test_json_patch_refuses_more_operations_than_kubernetes_allows() -> None:
    ops = [{"op": "test", "path": "/data/k", "value": "v"}] * (jsonpatch.MAX_OPERATIONS + 1)
    with pytest.raises(jsonpatch.TooLarge, match="maximum operations"):
        jsonpatch.check(ops)
    assert jsonpatch.apply(DOC, ops[:jsonpatch.MAX_OPERATIONS])["data"] == {"k": "v"}


def test_json_patch_copies_that_double_the_document_are_refused_by_a_budget() -> None:
    # Each copy doubles /a; unbounded, 40 of them would build 2**40 values.
    doc: dict[str, Any] = {"a": {"x": ["v"] * 10}}
    ops = [{"op": "copy", "from": "/a", "path": f"/a/c{i}"} for i in range(40)]
    with pytest.raises(jsonpatch.TooLarge, match=r"\[1[0-9]\]: copying \"/a\""):
        jsonpatch.apply(doc, ops)
    # Copying as much as the budget allows, in several operations, still works.
    small = jsonpatch.apply(doc, ops[:5])
    assert len(small["a"]) == 6


def test_json_patch_refuses_a_result_nested_too_deep() -> None:
    # Each copy of /a into itself nests it one level deeper, with few values copied.
    doc: dict[str, Any] = {"a": {}}
    ops = [{"op": "copy", "from": "/a", "path": "/a/b"}] * 120
    with pytest.raises(jsonpatch.NotApplicable, match="nests deeper"):
        jsonpatch.apply(doc, ops)


@pytest.mark.parametrize("token", ["\u00b2", "1\u00b2", "\u0661", "9" * 5000, "01",
                                   "99999999999"])
def test_json_patch_list_indices_are_short_ascii_numbers(token: str) -> None:
    with pytest.raises(jsonpatch.NotApplicable, match="is not a list index"):
        jsonpatch.apply(DOC, [{"op": "replace", "path": f"/items/{token}", "value": 0}])


def test_strategic_merge_lists_are_linear_in_their_size() -> None:
    """A guard against quadratic list merges (tens of thousands of items took minutes),
    bounded generously: not a benchmark."""
    import time
    n = 20_000
    refs = [{"uid": f"u{i}", "name": f"n{i}"} for i in range(n)]
    doc = {"metadata": {"name": "a", "ownerReferences": refs,
                        "finalizers": [f"f{i}" for i in range(n)]}}
    patch = {"metadata": {
        "ownerReferences": [{"uid": f"u{i}", "name": f"m{i}"} for i in range(0, 2 * n, 2)],
        "finalizers": [f"f{i}" for i in range(n, 2 * n)],
        "$deleteFromPrimitiveList/finalizers": [f"f{i}" for i in range(0, n, 2)]}}
    started = time.monotonic()
    out = strategic.apply(doc, patch, "Pod")
    assert time.monotonic() - started < 5
    got = out["metadata"]["ownerReferences"]
    assert len(got) == n + n // 2
    assert got[0] == {"uid": "u0", "name": "m0"} and got[1] == {"uid": "u1", "name": "n1"}
    assert got[n] == {"uid": f"u{n}", "name": f"m{n}"}
    fins = out["metadata"]["finalizers"]
    assert len(fins) == n // 2 + n and fins[0] == "f1" and fins[-1] == f"f{2 * n - 1}"


def test_strategic_merge_list_deletes_and_key_changes_keep_the_order() -> None:
    doc = {"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "a", "i": 2},
                                   {"name": "c"}]}}
    patch = {"spec": {"containers": [{"name": "a", "$patch": "delete"},
                                     {"name": "b", "image": "x"}, {"name": "a", "i": 3},
                                     {"name": "c", "$patch": "delete"}, {"name": "b"}]}}
    out = strategic.apply(doc, patch, "Pod")
    assert out["spec"]["containers"] == [{"name": "b", "image": "x"}, {"name": "a", "i": 3}]
