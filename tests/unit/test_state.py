"""Tests of the store's state machine, `raftkube.store.state`.

The state machine is pure and deterministic, so it is tested the way etcd-io/raft tests its
core: first tables of etcd's observable semantics (revisions, ranges, txns, leases,
compaction, exactly-once, term fencing, garbage input), then hypothesis properties over
random command sequences, checked against a deliberately naive reference model that keeps
a full copy of the key space for every revision.

Where a case pins etcd behaviour that is easy to get subtly wrong, the comment names the
etcd code it follows (v3.4: `etcdserver/apply.go`, `mvcc/kvstore_txn.go`,
`etcdserver/api/v3rpc/key.go`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from raftkube.store import state as st

pytestmark = pytest.mark.unit

ALL = {"key": b"\0", "range_end": b"\0"}


# ---- helpers --------------------------------------------------------------------------------


def cmd(op: str, req: Any = None, **fields: Any) -> dict[str, Any]:
    return {"op": op, "req": {} if req is None else req, **fields}


def apply(s: st.State, op: str, req: Any = None, **fields: Any) -> tuple[st.Result, list[Any]]:
    return s.apply(cmd(op, req, **fields))


def ok(s: st.State, op: str, req: Any = None, **fields: Any) -> st.Result:
    result, _ = apply(s, op, req, **fields)
    assert "error" not in result, result
    return result


def put(s: st.State, key: bytes, value: bytes = b"v", **extra: Any) -> st.Result:
    return ok(s, "put", {"key": key, "value": value, **extra})


def delete(s: st.State, key: bytes, range_end: bytes = b"", **extra: Any) -> st.Result:
    return ok(s, "delete_range", {"key": key, "range_end": range_end, **extra})


def grant(s: st.State, lease_id: int, ttl: int = 10) -> st.Result:
    return ok(s, "lease_grant", {"ID": lease_id, "TTL": ttl})


def txn(
    s: st.State, *, compare: Any = (), success: Any = (), failure: Any = ()
) -> tuple[st.Result, list[Any]]:
    return apply(s, "txn", txn_req(compare=compare, success=success, failure=failure))


def txn_req(*, compare: Any = (), success: Any = (), failure: Any = ()) -> dict[str, Any]:
    return {"compare": list(compare), "success": list(success), "failure": list(failure)}


def op_put(key: bytes, value: bytes = b"v", **extra: Any) -> dict[str, Any]:
    return {"request_put": {"key": key, "value": value, **extra}}


def op_del(key: bytes, range_end: bytes = b"") -> dict[str, Any]:
    return {"request_delete_range": {"key": key, "range_end": range_end}}


def op_range(key: bytes, range_end: bytes = b"", **extra: Any) -> dict[str, Any]:
    return {"request_range": {"key": key, "range_end": range_end, **extra}}


def op_txn(*, compare: Any = (), success: Any = (), failure: Any = ()) -> dict[str, Any]:
    return {"request_txn": txn_req(compare=compare, success=success, failure=failure)}


def cmp(key: bytes, target: str, result: str, wanted: Any) -> dict[str, Any]:
    return {"key": key, "target": target, "result": result, FIELD[target]: wanted}


FIELD = {"VERSION": "version", "CREATE": "create_revision", "MOD": "mod_revision",
         "VALUE": "value", "LEASE": "lease"}


def keys_of(result: st.Result) -> list[bytes]:
    return [kv["key"] for kv in result["kvs"]]


def value_at(s: st.State, key: bytes, revision: int = 0) -> bytes | None:
    kvs = s.range({"key": key, "revision": revision})["kvs"]
    return kvs[0]["value"] if kvs else None


def fingerprint(s: st.State) -> tuple[Any, ...]:
    """Everything a refused command must leave alone.

    Compared by value rather than through `dump()`: a rolled-back txn may re-insert a key
    into `kvs` at another dict position, which changes the snapshot's bytes but nothing a
    client or another replica can see (every replica rolls back the same way).
    """
    return (s.revision, s.compact_revision, dict(s.kvs), list(s._keys),
            [(rev, list(evs)) for rev, evs in s.history],
            {i: (ls.ttl, sorted(ls.keys), ls.renewals) for i, ls in s.leases.items()},
            dict(s.results), s.max_term, dict(s.members))


# ---- revisions and key metadata -------------------------------------------------------------


def test_fresh_state_is_at_revision_1_and_the_first_write_gets_2() -> None:
    s = st.State()
    assert s.revision == 1
    assert s.range(ALL) == {"count": 0, "more": False, "kvs": [], "revision": 1}
    result, events = apply(s, "put", {"key": b"k", "value": b"v"})
    assert result == {"revision": 2}
    assert s.revision == 2
    assert events == [st.Event(st.PUT, st.KeyValue(b"k", b"v", 2, 2, 1, 0), None)]
    assert s.history == [(2, events)]


# Each step is ("put", key, value) or ("del", key); the expectation is key b"k"'s
# (value, create_revision, mod_revision, version), or None when it does not exist.
METADATA_CASES = [
    ("first put", [("put", b"k", b"1")], (b"1", 2, 2, 1), 2),
    ("same value again still bumps", [("put", b"k", b"1"), ("put", b"k", b"1")],
     (b"1", 2, 3, 2), 3),
    ("create_revision is kept", [("put", b"k", b"1"), ("put", b"k", b"2"),
                                 ("put", b"k", b"3")], (b"3", 2, 4, 3), 4),
    ("created after another key", [("put", b"o", b"1"), ("put", b"k", b"2")],
     (b"2", 3, 3, 1), 3),
    ("delete", [("put", b"k", b"1"), ("del", b"k")], None, 3),
    ("delete resets version and create_revision",
     [("put", b"k", b"1"), ("put", b"k", b"2"), ("del", b"k"), ("put", b"k", b"3")],
     (b"3", 5, 5, 1), 5),
    ("delete of a missing key takes no revision", [("del", b"k")], None, 1),
    ("second delete takes no revision", [("put", b"k", b"1"), ("del", b"k"), ("del", b"k")],
     None, 3),
    ("delete of another key", [("put", b"k", b"1"), ("del", b"o")], (b"1", 2, 2, 1), 2),
]


@pytest.mark.parametrize(("steps", "want", "revision"),
                         [c[1:] for c in METADATA_CASES], ids=[c[0] for c in METADATA_CASES])
def test_key_metadata(steps: list[tuple[Any, ...]], want: Any, revision: int) -> None:
    s = st.State()
    for step in steps:
        if step[0] == "put":
            put(s, step[1], step[2])
        else:
            delete(s, step[1])
    assert s.revision == revision
    kvs = s.range({"key": b"k"})["kvs"]
    if want is None:
        assert kvs == []
    else:
        value, create, mod, version = want
        assert kvs == [{"key": b"k", "value": value, "create_revision": create,
                        "mod_revision": mod, "version": version, "lease": 0}]


def test_put_and_delete_events_and_prev_kv() -> None:
    s = st.State()
    put(s, b"k", b"1")
    first = s.kvs[b"k"]
    result, events = apply(s, "put", {"key": b"k", "value": b"2", "prev_kv": True})
    assert result == {"prev_kv": first.as_dict(), "revision": 3}
    assert events == [st.Event(st.PUT, st.KeyValue(b"k", b"2", 2, 3, 2, 0), first)]
    second = s.kvs[b"k"]
    result, events = apply(s, "delete_range", {"key": b"k", "prev_kv": True})
    assert result == {"deleted": 1, "prev_kvs": [second.as_dict()], "revision": 4}
    # etcd's tombstone: only the key and the revision of the delete.
    assert events == [st.Event(st.DELETE, st.KeyValue(b"k", b"", 0, 4, 0, 0), second)]
    result, events = apply(s, "delete_range", {"key": b"k"})
    assert (result, events) == ({"deleted": 0, "revision": 4}, [])


@pytest.mark.parametrize(("key", "range_end", "gone"), [
    (b"a/", st.prefix_end(b"a/"), [b"a/1", b"a/2"]),
    (b"a/2", b"\0", [b"a/2", b"b", b"c"]),
    (b"\0", b"\0", [b"a", b"a/1", b"a/2", b"b", b"c"]),
    (b"a", b"", [b"a"]),
    (b"a/1", b"b", [b"a/1", b"a/2"]),
], ids=["prefix", "from key", "everything", "one key", "interval"])
def test_delete_range_deletes_every_key_in_one_revision(
    key: bytes, range_end: bytes, gone: list[bytes]
) -> None:
    s = st.State()
    for k in (b"a", b"a/1", b"a/2", b"b", b"c"):
        put(s, k)
    result, events = apply(s, "delete_range", {"key": key, "range_end": range_end})
    assert result == {"deleted": len(gone), "revision": 7}
    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (st.DELETE, k, 7) for k in gone]
    assert sorted(set([b"a", b"a/1", b"a/2", b"b", b"c"]) - set(gone)) == sorted(s.kvs)


@pytest.mark.parametrize(("prefix", "end"), [
    (b"a", b"b"), (b"abc", b"abd"), (b"a\xff", b"b"), (b"\xff", b"\0"), (b"\xff\xff", b"\0"),
    (b"", b"\0"), (b"a/", b"a0"),
])
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert st.prefix_end(prefix) == end


# ---- range ----------------------------------------------------------------------------------


def seeded() -> st.State:
    """a, a/1, a/2, a/3, b, c with distinct create and mod revisions, at revision 9.

    a (c2 m2 "1"), a/1 (c3 m8 v2 "x2"), a/2 (c4 m4 "y"), a/3 (c5 m9 v2 "a"), b (c6 m6 "2"),
    c (c7 m7 "3").
    """
    s = st.State()
    for key, value in [(b"a", b"1"), (b"a/1", b"x"), (b"a/2", b"y"), (b"a/3", b"z"),
                       (b"b", b"2"), (b"c", b"3"), (b"a/1", b"x2"), (b"a/3", b"a")]:
        put(s, key, value)
    assert s.revision == 9
    return s


SIX = [b"a", b"a/1", b"a/2", b"a/3", b"b", b"c"]
A_PREFIX = {"key": b"a/", "range_end": st.prefix_end(b"a/")}

RANGE_CASES = [
    ("one key", {"key": b"a"}, [b"a"], 1, False),
    ("missing key", {"key": b"zz"}, [], 0, False),
    ("prefix a/", A_PREFIX, [b"a/1", b"a/2", b"a/3"], 3, False),
    ("prefix a", {"key": b"a", "range_end": st.prefix_end(b"a")}, SIX[:4], 4, False),
    ("range_end \\0 is everything from key", {"key": b"a/2", "range_end": b"\0"},
     [b"a/2", b"a/3", b"b", b"c"], 4, False),
    ("everything", ALL, SIX, 6, False),
    ("half-open interval", {"key": b"a/1", "range_end": b"b"}, SIX[1:4], 3, False),
    ("range_end before key", {"key": b"b", "range_end": b"a"}, [], 0, False),
    ("limit", {**ALL, "limit": 2}, SIX[:2], 6, True),
    ("limit equal to count", {**ALL, "limit": 6}, SIX, 6, False),
    ("limit above count", {**ALL, "limit": 7}, SIX, 6, False),
    ("descend by key", {**ALL, "sort_order": "DESCEND"}, SIX[::-1], 6, False),
    ("ascend by key", {**ALL, "sort_order": "ASCEND", "sort_target": "KEY"}, SIX, 6, False),
    ("ascend by mod", {**ALL, "sort_order": "ASCEND", "sort_target": "MOD"},
     [b"a", b"a/2", b"b", b"c", b"a/1", b"a/3"], 6, False),
    # apply.go: a target other than KEY with order NONE sorts ASCEND.
    ("target without order ascends", {**ALL, "sort_target": "MOD"},
     [b"a", b"a/2", b"b", b"c", b"a/1", b"a/3"], 6, False),
    ("descend by create, then limit", {**ALL, "sort_order": "DESCEND", "sort_target": "CREATE",
                                       "limit": 2}, [b"c", b"b"], 6, True),
    ("ascend by value", {**ALL, "sort_order": "ASCEND", "sort_target": "VALUE"},
     [b"a", b"b", b"c", b"a/3", b"a/1", b"a/2"], 6, False),
    # apply.go: count is the number of keys in the range, before the min/max filters.
    ("min_mod_revision", {**ALL, "min_mod_revision": 7}, [b"a/1", b"a/3", b"c"], 6, False),
    ("max_mod_revision", {**ALL, "max_mod_revision": 4}, [b"a", b"a/2"], 6, False),
    ("min_create_revision", {**ALL, "min_create_revision": 6}, [b"b", b"c"], 6, False),
    ("max_create_revision", {**ALL, "max_create_revision": 3}, [b"a", b"a/1"], 6, False),
    ("mod window", {**ALL, "min_mod_revision": 4, "max_mod_revision": 7},
     [b"a/2", b"b", b"c"], 6, False),
    ("filter, then limit", {**ALL, "min_mod_revision": 7, "limit": 1}, [b"a/1"], 6, True),
    ("filter, sort, limit", {**ALL, "min_create_revision": 4, "sort_order": "DESCEND",
                             "sort_target": "MOD", "limit": 3}, [b"a/3", b"c", b"b"], 6, True),
    ("past revision", {**ALL, "revision": 5}, SIX[:4], 4, False),
    ("past revision, prefix", {**A_PREFIX, "revision": 3}, [b"a/1"], 1, False),
    ("past revision, filter", {**ALL, "revision": 7, "min_mod_revision": 5},
     [b"a/3", b"b", b"c"], 6, False),
    ("revision 1 is empty", {**ALL, "revision": 1}, [], 0, False),
    ("current revision named", {**ALL, "revision": 9}, SIX, 6, False),
]


@pytest.mark.parametrize(("req", "want", "count", "more"),
                         [c[1:] for c in RANGE_CASES], ids=[c[0] for c in RANGE_CASES])
def test_range(req: dict[str, Any], want: list[bytes], count: int, more: bool) -> None:
    s = seeded()
    result = s.range(req)
    assert keys_of(result) == want
    assert (result["count"], result["more"], result["revision"]) == (count, more, 9)


def test_range_sorted_by_version_is_ordered_by_version() -> None:
    s = seeded()
    up = s.range({**ALL, "sort_order": "ASCEND", "sort_target": "VERSION"})["kvs"]
    down = s.range({**ALL, "sort_order": "DESCEND", "sort_target": "VERSION"})["kvs"]
    assert [kv["version"] for kv in up] == [1, 1, 1, 1, 2, 2]
    assert [kv["version"] for kv in down] == [2, 2, 1, 1, 1, 1]
    assert {kv["key"] for kv in down[:2]} == {b"a/1", b"a/3"}


def test_range_keys_only_drops_values_but_keeps_metadata() -> None:
    s = seeded()
    full = s.range(ALL)["kvs"]
    bare = s.range({**ALL, "keys_only": True})["kvs"]
    assert [kv["value"] for kv in bare] == [b""] * 6
    assert [{**kv, "value": b""} for kv in full] == bare


def test_range_count_only_answers_the_count_without_kvs() -> None:
    s = seeded()
    assert s.range({**ALL, "count_only": True}) == {"count": 6, "more": False, "revision": 9}
    assert s.range({**A_PREFIX, "count_only": True, "revision": 4})["count"] == 2


def test_range_count_only_with_a_limit_has_no_more() -> None:
    # kvstore_txn.go rangeKeys: with Count set it returns {KVs: nil, Count: total}, so
    # apply.go's `len(rr.KVs) > r.Limit` never holds and `more` stays false.
    s = seeded()
    assert s.range({**ALL, "count_only": True, "limit": 2}) == {
        "count": 6, "more": False, "revision": 9}


def test_reads_of_the_past_see_each_revision_as_it_was() -> None:
    s = st.State()
    seen = {1: s.range(ALL)["kvs"]}
    steps: list[tuple[Any, ...]] = [
        ("put", b"a", b"1"), ("put", b"b", b"1"), ("put", b"a", b"2"), ("del", b"b"),
        ("put", b"b", b"3"), ("del", b"a"), ("put", b"c", b"1")]
    for step in steps:
        if step[0] == "put":
            put(s, step[1], step[2])
        else:
            delete(s, step[1])
        seen[s.revision] = s.range(ALL)["kvs"]
    assert s.revision == 8
    for revision, kvs in seen.items():
        assert s.range({**ALL, "revision": revision})["kvs"] == kvs, revision
        assert s.range({**ALL, "revision": revision})["revision"] == 8
    assert value_at(s, b"a", 4) == b"2"
    assert value_at(s, b"b", 5) is None
    assert s.range({"key": b"b", "revision": 6})["kvs"][0]["create_revision"] == 6


def test_read_below_the_compaction_point_is_refused_as_compacted() -> None:
    s = seeded()
    ok(s, "compact", {"revision": 5})
    with pytest.raises(st.Compacted) as info:
        s.range({**ALL, "revision": 4})
    assert info.value.message == st.ERR_COMPACTED == "mvcc: required revision has been compacted"
    assert info.value.compact_revision == 5
    assert info.value.code == "OutOfRange"
    assert isinstance(info.value, st.StoreError)
    assert keys_of(s.range({**ALL, "revision": 5})) == SIX[:4]  # the compaction point itself


def test_read_of_a_future_revision_is_refused() -> None:
    s = seeded()
    with pytest.raises(st.StoreError) as info:
        s.range({**ALL, "revision": 10})
    assert not isinstance(info.value, st.Compacted)
    assert info.value.message == "mvcc: required revision is a future revision"
    assert info.value.code == "OutOfRange"


def test_range_without_a_key_is_refused() -> None:
    with pytest.raises(st.StoreError, match="key is not provided"):
        seeded().range({"range_end": b"\0"})


# ---- txn ------------------------------------------------------------------------------------


def compare_state() -> st.State:
    """k: value b"v", create 2, mod 3, version 2, lease 7. b"none" does not exist."""
    s = st.State()
    grant(s, 7)
    put(s, b"k", b"v0")
    put(s, b"k", b"v", lease=7)
    return s


COMPARE_CASES = [
    (cmp(b"k", "VERSION", "EQUAL", 2), True),
    (cmp(b"k", "VERSION", "EQUAL", 1), False),
    (cmp(b"k", "VERSION", "NOT_EQUAL", 2), False),
    (cmp(b"k", "VERSION", "NOT_EQUAL", 1), True),
    (cmp(b"k", "VERSION", "GREATER", 1), True),
    (cmp(b"k", "VERSION", "GREATER", 2), False),
    (cmp(b"k", "VERSION", "LESS", 3), True),
    (cmp(b"k", "VERSION", "LESS", 2), False),
    (cmp(b"k", "CREATE", "EQUAL", 2), True),
    (cmp(b"k", "CREATE", "GREATER", 2), False),
    (cmp(b"k", "CREATE", "LESS", 3), True),
    (cmp(b"k", "MOD", "EQUAL", 3), True),
    (cmp(b"k", "MOD", "NOT_EQUAL", 3), False),
    (cmp(b"k", "MOD", "GREATER", 2), True),
    (cmp(b"k", "MOD", "LESS", 3), False),
    (cmp(b"k", "VALUE", "EQUAL", b"v"), True),
    (cmp(b"k", "VALUE", "EQUAL", b"w"), False),
    (cmp(b"k", "VALUE", "NOT_EQUAL", b"v"), False),
    (cmp(b"k", "VALUE", "NOT_EQUAL", b"w"), True),
    (cmp(b"k", "VALUE", "GREATER", b"u"), True),
    (cmp(b"k", "VALUE", "LESS", b"w"), True),
    (cmp(b"k", "VALUE", "LESS", b"v"), False),
    (cmp(b"k", "LEASE", "EQUAL", 7), True),
    (cmp(b"k", "LEASE", "EQUAL", 0), False),
    (cmp(b"k", "LEASE", "GREATER", 6), True),
    (cmp(b"k", "LEASE", "NOT_EQUAL", 7), False),
    # A missing key compares as zeros...
    (cmp(b"none", "VERSION", "EQUAL", 0), True),
    (cmp(b"none", "VERSION", "GREATER", 0), False),
    (cmp(b"none", "CREATE", "EQUAL", 0), True),
    (cmp(b"none", "MOD", "LESS", 1), True),
    (cmp(b"none", "LEASE", "EQUAL", 0), True),
    # ...except that a VALUE compare on it is always false (apply.go applyCompare).
    (cmp(b"none", "VALUE", "EQUAL", b""), False),
    (cmp(b"none", "VALUE", "NOT_EQUAL", b"x"), False),
    (cmp(b"none", "VALUE", "LESS", b"x"), False),
    (cmp(b"none", "VALUE", "GREATER", b""), False),
    # Over a range, every key must satisfy the compare.
    ({**cmp(b"k", "VERSION", "GREATER", 1), "range_end": st.prefix_end(b"k")}, True),
    ({**cmp(b"a", "VERSION", "EQUAL", 0), "range_end": b"j"}, True),
]


@pytest.mark.parametrize(("compare", "holds"), COMPARE_CASES,
                         ids=[f"{c['key'].decode()} {c['target']} {c['result']} "
                              f"{c[FIELD[c['target']]]!r}{' range' if 'range_end' in c else ''}"
                              for c, _ in COMPARE_CASES])
def test_txn_compare(compare: dict[str, Any], holds: bool) -> None:
    s = compare_state()
    result, events = txn(s, compare=[compare], success=[op_put(b"then")],
                         failure=[op_put(b"else")])
    assert result == {"succeeded": holds, "responses": [{"response_put": {}}], "revision": 4}
    assert [e.kv.key for e in events] == [b"then" if holds else b"else"]
    assert (b"then" in s.kvs, b"else" in s.kvs) == (holds, not holds)


def test_txn_all_compares_must_hold() -> None:
    s = compare_state()
    good, bad = cmp(b"k", "VERSION", "EQUAL", 2), cmp(b"k", "MOD", "EQUAL", 2)
    assert txn(s, compare=[good, good])[0]["succeeded"] is True
    assert txn(s, compare=[good, bad])[0]["succeeded"] is False
    assert txn(s, compare=[bad, good])[0]["succeeded"] is False
    assert txn(s)[0]["succeeded"] is True  # no compares: success


def test_txn_answers_one_response_per_op_of_the_branch_taken() -> None:
    s = seeded()
    result, _ = txn(s, compare=[cmp(b"a", "VALUE", "EQUAL", b"1")],
                    success=[op_range(b"b"), op_put(b"a", b"2", prev_kv=True),
                             op_del(b"c")],
                    failure=[op_put(b"nope")])
    old_a = {"key": b"a", "value": b"1", "create_revision": 2, "mod_revision": 2,
             "version": 1, "lease": 0}
    assert result == {
        "succeeded": True,
        "responses": [
            {"response_range": {"count": 1, "more": False, "revision": 9,
                                "kvs": [s.range({"key": b"b"})["kvs"][0]]}},
            {"response_put": {"prev_kv": old_a}},
            {"response_delete_range": {"deleted": 1}},
        ],
        "revision": 10,
    }
    result, events = txn(s, compare=[cmp(b"a", "VALUE", "EQUAL", b"1")],
                         success=[op_put(b"nope")], failure=[op_range(b"a")])
    assert result["succeeded"] is False
    assert result["responses"][0]["response_range"]["kvs"][0]["value"] == b"2"
    assert (events, s.revision) == ([], 10)


def test_txn_range_sees_the_txns_earlier_writes() -> None:
    s = seeded()
    result, _ = txn(s, success=[op_range(b"a/", b"a0"), op_put(b"a/new", b"n"), op_del(b"a/1"),
                                op_range(b"a/", b"a0")])
    before, after = result["responses"][0]["response_range"], result["responses"][3][
        "response_range"]
    assert keys_of(before) == [b"a/1", b"a/2", b"a/3"]
    assert keys_of(after) == [b"a/2", b"a/3", b"a/new"]
    # mvcc's storeTxnWrite.Range: the txn's own revision once it has written something.
    assert (before["revision"], after["revision"]) == (9, 10)
    assert after["kvs"][2]["mod_revision"] == 10


def test_whole_txn_takes_exactly_one_revision() -> None:
    s = seeded()
    result, events = txn(s, success=[op_put(b"x", b"1"), op_put(b"a", b"9"),
                                     op_del(b"a/", b"a0"), op_put(b"y", b"2")])
    assert result["revision"] == s.revision == 10
    assert [(e.type, e.kv.key) for e in events] == [
        (st.PUT, b"x"), (st.PUT, b"a"), (st.DELETE, b"a/1"), (st.DELETE, b"a/2"),
        (st.DELETE, b"a/3"), (st.PUT, b"y")]
    assert {e.kv.mod_revision for e in events} == {10}
    assert s.history[-1] == (10, events)
    assert s.events_from(10, b"\0", b"\0") == [(10, events)]


@pytest.mark.parametrize("req", [
    txn_req(),
    txn_req(success=[op_range(b"a")]),
    txn_req(success=[op_del(b"missing"), op_del(b"x/", b"x0")]),
    txn_req(compare=[cmp(b"a", "VERSION", "EQUAL", 5)], success=[op_put(b"z")]),
    txn_req(success=[op_txn(success=[op_range(b"b"), op_del(b"nothing")])]),
], ids=["empty", "only a range", "deletes of missing keys", "failure branch is empty",
        "nested read-only"])
def test_txn_that_writes_nothing_takes_no_revision(req: dict[str, Any]) -> None:
    s = seeded()
    before = fingerprint(s)
    result, events = apply(s, "txn", req)
    assert "error" not in result, result
    assert (result["revision"], events) == (9, [])
    assert fingerprint(s) == before


def test_nested_txn_runs_inside_the_outer_revision() -> None:
    s = seeded()
    inner = op_txn(compare=[cmp(b"a", "VALUE", "EQUAL", b"1")],
                   success=[op_put(b"then"), op_range(b"x")],
                   failure=[op_put(b"else")])
    result, events = txn(s, compare=[cmp(b"b", "VERSION", "EQUAL", 1)],
                         success=[op_put(b"x", b"outer"), inner])
    assert result["succeeded"] is True
    nested = result["responses"][1]["response_txn"]
    assert nested["succeeded"] is True
    assert nested["responses"][0] == {"response_put": {}}
    assert nested["responses"][1]["response_range"]["kvs"][0]["value"] == b"outer"
    assert [e.kv.key for e in events] == [b"x", b"then"]
    assert s.revision == 10 and b"else" not in s.kvs


def test_nested_txn_compares_see_the_state_before_the_txn() -> None:
    # etcd (apply.go Txn -> compareToPath) evaluates the compares of the whole txn tree,
    # nested ones included, against the read view taken before any op of the txn runs.
    # Here k does not exist before the txn, so the nested VALUE compare is false.
    s = st.State()
    result, _ = txn(s, success=[
        op_put(b"k", b"1"),
        op_txn(compare=[cmp(b"k", "VALUE", "EQUAL", b"1")],
               success=[op_put(b"then")], failure=[op_put(b"else")]),
    ])
    assert result["responses"][1]["response_txn"]["succeeded"] is False
    assert sorted(s.kvs) == [b"else", b"k"]


DUPLICATE_CASES = [
    ("same key put twice", txn_req(success=[op_put(b"a"), op_put(b"a", b"2")]), True),
    ("same key put twice in failure", txn_req(failure=[op_put(b"a"), op_put(b"a")]), True),
    ("delete of the key, then put", txn_req(success=[op_del(b"a"), op_put(b"a")]), True),
    ("put, then a delete range covering it",
     txn_req(success=[op_put(b"a/1"), op_del(b"a/", b"a0")]), True),
    ("delete from key (\\0) covering a put",
     txn_req(success=[op_put(b"b"), op_del(b"a", b"\0")]), True),
    ("outer put and nested put", txn_req(success=[op_put(b"a"),
                                                  op_txn(success=[op_put(b"a")])]), True),
    ("nested delete covering an outer put",
     txn_req(success=[op_put(b"a"), op_txn(failure=[op_del(b"a")])]), True),
    ("nested txn with its own duplicate",
     txn_req(success=[op_txn(success=[op_put(b"q"), op_put(b"q")])]), True),
    ("different keys", txn_req(success=[op_put(b"a"), op_put(b"b")]), False),
    ("delete range beside a put", txn_req(success=[op_put(b"b"), op_del(b"a/", b"a0")]), False),
    ("same key in success and failure",
     txn_req(success=[op_put(b"a")], failure=[op_put(b"a")]), False),
    ("two deletes of one key", txn_req(success=[op_del(b"a"), op_del(b"a")]), False),
    ("range and put of one key", txn_req(success=[op_range(b"a"), op_put(b"a")]), False),
    # v3rpc/key.go checkIntervals: "if key is from putsThen, overlap is OK since either
    # then/else are mutually exclusive".
    ("same key in a nested txn's success and failure",
     txn_req(success=[op_txn(success=[op_put(b"a")], failure=[op_put(b"a")])]), False),
    ("a nested txn's success deletes what its failure puts",
     txn_req(success=[op_txn(success=[op_del(b"a")], failure=[op_put(b"a")])]), False),
    ("an earlier nested txn deletes what a later one puts",
     txn_req(success=[op_txn(success=[op_del(b"a")]), op_txn(success=[op_put(b"a")])]),
     True),
    ("a nested put and a later sibling's put",
     txn_req(success=[op_txn(success=[op_put(b"a")]), op_txn(failure=[op_put(b"a")])]),
     True),
    ("an outer delete covering a nested put",
     txn_req(success=[op_txn(success=[op_put(b"a")]), op_del(b"a")]), True),
]


@pytest.mark.parametrize(("req", "duplicate"), [c[1:] for c in DUPLICATE_CASES],
                         ids=[c[0] for c in DUPLICATE_CASES])
def test_txn_duplicate_keys(req: dict[str, Any], duplicate: bool) -> None:
    s = seeded()
    before = fingerprint(s)
    result, events = apply(s, "txn", req)
    if duplicate:
        assert result == {"error": "etcdserver: duplicate key given in txn request",
                          "code": "InvalidArgument"}
        assert events == []
        assert fingerprint(s) == before
    else:
        assert "error" not in result, result


@pytest.mark.parametrize(("req", "too_many"), [
    (txn_req(success=[op_put(b"k%d" % i) for i in range(129)]), True),
    (txn_req(failure=[op_put(b"k%d" % i) for i in range(129)]), True),
    (txn_req(compare=[cmp(b"a", "VERSION", "GREATER", 0)] * 129), True),
    (txn_req(success=[op_txn(success=[op_range(b"a")] * 129)]), True),
    (txn_req(success=[op_put(b"k%d" % i) for i in range(128)]), False),
    (txn_req(compare=[cmp(b"a", "VERSION", "GREATER", 0)] * 128,
             success=[op_range(b"a")] * 128, failure=[op_range(b"b")] * 128), False),
], ids=["129 in success", "129 in failure", "129 compares", "129 in a nested txn",
        "128 puts", "128 everywhere"])
def test_txn_op_limit(req: dict[str, Any], too_many: bool) -> None:
    s = seeded()
    before = fingerprint(s)
    result, _ = apply(s, "txn", req)
    if too_many:
        assert result["error"] == "etcdserver: too many operations in txn request"
        assert fingerprint(s) == before
    else:
        assert "error" not in result, result
        assert s.revision == (10 if req["success"] and "request_put" in req["success"][0]
                              else 9)


def rollback_state() -> st.State:
    """a, b, c; `leased` on lease 5; lease 6 granted; compacted at 3; revision 5."""
    s = st.State()
    grant(s, 5)
    grant(s, 6)
    put(s, b"a", b"1")
    put(s, b"b", b"1")
    put(s, b"c", b"1")
    put(s, b"leased", b"1", lease=5)
    ok(s, "compact", {"revision": 3})
    return s


# Ops that fail only after earlier ops of the txn have changed keys and leases.
FAILING_LAST_OPS = [
    ("put with a lease that does not exist", op_put(b"z", lease=99),
     "etcdserver: requested lease not found"),
    ("put ignore_value of a missing key", op_put(b"z", b"", ignore_value=True),
     "etcdserver: key not found"),
    ("put ignore_lease of a missing key", op_put(b"z", ignore_lease=True),
     "etcdserver: key not found"),
    ("put with an empty key", op_put(b""), "etcdserver: key is not provided"),
    ("range at a compacted revision", op_range(b"a", revision=2), st.ERR_COMPACTED),
    ("range at a future revision", op_range(b"a", revision=99), st.ERR_FUTURE_REV),
    ("nested txn whose put fails", op_txn(success=[op_put(b"y"), op_put(b"z", lease=99)]),
     "etcdserver: requested lease not found"),
    ("nested txn with an unknown compare target",
     op_txn(compare=[{"key": b"a", "target": "COLOR"}]), "unknown compare target"),
    ("unknown op kind", {"request_frobnicate": {}}, "unknown txn operation"),
]


@pytest.mark.parametrize(("last", "says"), [c[1:] for c in FAILING_LAST_OPS],
                         ids=[c[0] for c in FAILING_LAST_OPS])
def test_txn_whose_later_op_fails_leaves_no_trace(last: dict[str, Any], says: str) -> None:
    s = rollback_state()
    before = fingerprint(s)
    leases_before = {i: s.lease_keys(i) for i in s.leases}
    result, events = txn(s, success=[
        op_put(b"a", b"2"),                 # changes a key
        op_del(b"b"),                       # deletes one
        op_put(b"new", b"1", lease=6),      # creates one on a lease
        op_put(b"leased", b"2"),            # detaches one from its lease
        op_range(b"a"),
        last,
    ])
    assert "error" in result and says in result["error"], result
    assert events == []
    assert fingerprint(s) == before
    assert {i: s.lease_keys(i) for i in s.leases} == leases_before
    assert sorted(s.kvs) == s._keys  # the sorted index was rolled back too
    # ...and the store still works: the lease still owns its key.
    revoked, gone = apply(s, "lease_revoke", {"ID": 5})
    assert [e.kv.key for e in gone] == [b"leased"] and revoked["revision"] == 6


# ---- leases ---------------------------------------------------------------------------------


def test_lease_grant_uses_the_proposers_id_and_takes_no_revision() -> None:
    s = st.State()
    assert apply(s, "lease_grant", {"ID": 42, "TTL": 30}) == (
        {"ID": 42, "TTL": 30, "revision": 1}, [])
    assert s.leases[42] == st.Lease(30, set(), 0)
    again = apply(s, "lease_grant", {"ID": 42, "TTL": 5})[0]
    assert again == {"error": "etcdserver: lease already exists", "code": "FailedPrecondition"}
    assert "error" in apply(s, "lease_grant", {"ID": 0, "TTL": 5})[0]
    assert "error" in apply(s, "lease_grant", {"ID": -3, "TTL": 5})[0]
    assert s.revision == 1 and list(s.leases) == [42]


def test_lease_keepalive_counts_renewals() -> None:
    s = st.State()
    grant(s, 5, ttl=30)
    assert apply(s, "lease_keepalive", {"ID": 5}) == ({"ID": 5, "TTL": 30, "revision": 1}, [])
    ok(s, "lease_keepalive", {"ID": 5})
    assert s.leases[5].renewals == 2
    assert apply(s, "lease_keepalive", {"ID": 6})[0] == {
        "error": "etcdserver: requested lease not found", "code": "NotFound"}


def test_lease_revoke_deletes_every_attached_key_in_one_revision() -> None:
    s = st.State()
    grant(s, 5)
    grant(s, 6)
    put(s, b"b", b"1", lease=5)
    put(s, b"a", b"2", lease=5)
    put(s, b"c", b"3", lease=6)
    put(s, b"d", b"4")
    old_a, old_b = s.kvs[b"a"], s.kvs[b"b"]
    result, events = apply(s, "lease_revoke", {"ID": 5})
    assert result == {"expired": False, "revision": 6}
    assert events == [st.Event(st.DELETE, st.KeyValue(b"a", b"", 0, 6, 0, 0), old_a),
                      st.Event(st.DELETE, st.KeyValue(b"b", b"", 0, 6, 0, 0), old_b)]
    assert s.history[-1] == (6, events)
    assert sorted(s.kvs) == [b"c", b"d"] and sorted(s.leases) == [6]
    assert apply(s, "lease_revoke", {"ID": 5})[0] == {
        "error": "etcdserver: requested lease not found", "code": "NotFound"}
    assert s.revision == 6


def test_lease_revoke_without_keys_takes_no_revision() -> None:
    s = seeded()
    grant(s, 5)
    assert apply(s, "lease_revoke", {"ID": 5}) == ({"expired": False, "revision": 9}, [])
    assert 5 not in s.leases


# Each case ends with key b"a" attached, or not, to lease 5.
DETACH_CASES = [
    ("attached", [cmd("put", {"key": b"a", "lease": 5})], True),
    ("re-put without a lease", [cmd("put", {"key": b"a", "lease": 5}),
                                cmd("put", {"key": b"a"})], False),
    ("moved to another lease", [cmd("put", {"key": b"a", "lease": 5}),
                                cmd("put", {"key": b"a", "lease": 6})], False),
    ("deleted", [cmd("put", {"key": b"a", "lease": 5}), cmd("delete_range", {"key": b"a"})],
     False),
    ("deleted by a range", [cmd("put", {"key": b"a", "lease": 5}),
                            cmd("delete_range", {"key": b"\0", "range_end": b"b"})], False),
    ("re-put with ignore_lease", [cmd("put", {"key": b"a", "lease": 5}),
                                  cmd("put", {"key": b"a", "value": b"2",
                                              "ignore_lease": True})], True),
    ("ignore_value with a new lease", [cmd("put", {"key": b"a", "lease": 5}),
                                       cmd("put", {"key": b"a", "ignore_value": True,
                                                   "lease": 6})], False),
    ("re-put by a txn", [cmd("put", {"key": b"a", "lease": 5}),
                         cmd("txn", txn_req(success=[op_put(b"a")]))], False),
    ("attached by a txn", [cmd("txn", txn_req(success=[op_put(b"a", lease=5)]))], True),
    ("deleted by a txn", [cmd("put", {"key": b"a", "lease": 5}),
                          cmd("txn", txn_req(success=[op_del(b"a")]))], False),
    ("deleted and re-created", [cmd("put", {"key": b"a", "lease": 5}),
                                cmd("delete_range", {"key": b"a"}),
                                cmd("put", {"key": b"a"})], False),
]


@pytest.mark.parametrize(("steps", "attached"), [c[1:] for c in DETACH_CASES],
                         ids=[c[0] for c in DETACH_CASES])
def test_lease_revoke_deletes_exactly_the_keys_attached_now(
    steps: list[dict[str, Any]], attached: bool
) -> None:
    s = st.State()
    grant(s, 5)
    grant(s, 6)
    put(s, b"other", lease=5)
    for c in steps:
        assert "error" not in s.apply(c)[0], c
    assert s.lease_keys(5) == ([b"a", b"other"] if attached else [b"other"])
    had_a = b"a" in s.kvs
    _, events = apply(s, "lease_revoke", {"ID": 5})
    assert [e.kv.key for e in events] == ([b"a", b"other"] if attached else [b"other"])
    assert (b"a" in s.kvs) == (had_a and not attached)


def test_lease_expire_with_a_stale_renewal_count_does_nothing() -> None:
    s = st.State()
    grant(s, 5)
    put(s, b"a", lease=5)
    ok(s, "lease_keepalive", {"ID": 5})  # won the race against the leader's expiry
    before = fingerprint(s)
    assert apply(s, "lease_expire", {"ID": 5, "renewals": 0}) == (
        {"expired": False, "revision": 2}, [])
    assert apply(s, "lease_expire", {"ID": 5}) == ({"expired": False, "revision": 2}, [])
    assert fingerprint(s) == before
    result, events = apply(s, "lease_expire", {"ID": 5, "renewals": 1})
    assert result == {"expired": True, "revision": 3}
    assert [(e.type, e.kv.key) for e in events] == [(st.DELETE, b"a")]
    assert s.leases == {} and s.kvs == {}
    assert apply(s, "lease_expire", {"ID": 5, "renewals": 1})[0]["code"] == "NotFound"


def test_put_with_a_lease_that_does_not_exist_is_refused() -> None:
    s = seeded()
    before = fingerprint(s)
    assert apply(s, "put", {"key": b"a", "value": b"2", "lease": 77}) == (
        {"error": "etcdserver: requested lease not found", "code": "NotFound"}, [])
    assert fingerprint(s) == before


def test_put_ignore_value_and_ignore_lease() -> None:
    s = st.State()
    grant(s, 5)
    grant(s, 6)
    put(s, b"a", b"keep", lease=5)
    put(s, b"a", ignore_value=True, lease=6)
    assert s.kvs[b"a"] == st.KeyValue(b"a", b"keep", 2, 3, 2, 6)
    put(s, b"a", b"new", ignore_lease=True)
    assert s.kvs[b"a"] == st.KeyValue(b"a", b"new", 2, 4, 3, 6)
    put(s, b"a", ignore_value=True, ignore_lease=True)
    assert s.kvs[b"a"] == st.KeyValue(b"a", b"new", 2, 5, 4, 6)
    before = fingerprint(s)
    for flag in ("ignore_value", "ignore_lease"):
        assert apply(s, "put", {"key": b"missing", flag: True})[0] == {
            "error": "etcdserver: key not found", "code": "InvalidArgument"}
    assert fingerprint(s) == before


# ---- compaction -----------------------------------------------------------------------------


def test_compaction_keeps_the_events_at_the_compaction_revision() -> None:
    s = st.State()
    for i in range(5):
        put(s, b"k", b"%d" % i)  # revisions 2..6
    put(s, b"other")  # 7
    assert apply(s, "compact", {"revision": 4}) == ({"revision": 7}, [])
    assert (s.revision, s.compact_revision) == (7, 4)
    assert [rev for rev, _ in s.history] == [4, 5, 6, 7]
    assert [rev for rev, _ in s.events_from(4, b"k", b"")] == [4, 5, 6]
    assert s.events_from(4, b"k", b"")[0][1][0].kv.value == b"2"
    with pytest.raises(st.Compacted) as info:
        s.events_from(3, b"k", b"")
    assert info.value.compact_revision == 4
    assert value_at(s, b"k", 4) == b"2"
    assert value_at(s, b"other", 4) is None
    with pytest.raises(st.Compacted):
        value_at(s, b"k", 3)


@pytest.mark.parametrize(("revision", "says"), [
    (4, st.ERR_COMPACTED), (3, st.ERR_COMPACTED), (8, st.ERR_FUTURE_REV), (7, None), (5, None),
], ids=["again at the point", "below the point", "future", "current revision", "forward"])
def test_compaction_errors(revision: int, says: str | None) -> None:
    s = st.State()
    for i in range(6):
        put(s, b"k", b"%d" % i)  # revisions 2..7
    ok(s, "compact", {"revision": 4})
    before = fingerprint(s)
    result, _ = apply(s, "compact", {"revision": revision})
    if says is None:
        assert result == {"revision": 7}
        assert s.compact_revision == revision
    else:
        assert result == {"error": says, "code": "OutOfRange"}
        assert fingerprint(s) == before


# ---- exactly-once ---------------------------------------------------------------------------


def once_state() -> st.State:
    s = st.State()
    grant(s, 5)
    put(s, b"k", b"1", lease=5)
    put(s, b"other")
    return s


ONCE_CASES = [
    ("put", cmd("put", {"key": b"k", "value": b"2", "prev_kv": True})),
    ("put a new key", cmd("put", {"key": b"new"})),
    ("delete_range", cmd("delete_range", {"key": b"k"})),
    ("txn", cmd("txn", txn_req(compare=[cmp(b"k", "VERSION", "EQUAL", 1)],
                               success=[op_put(b"k", b"2"), op_range(b"k")]))),
    ("lease_grant", cmd("lease_grant", {"ID": 9, "TTL": 5})),
    ("lease_keepalive", cmd("lease_keepalive", {"ID": 5})),
    ("lease_revoke", cmd("lease_revoke", {"ID": 5})),
    ("lease_expire", cmd("lease_expire", {"ID": 5, "renewals": 0})),
    ("compact", cmd("compact", {"revision": 3})),
    ("noop", cmd("noop")),
    ("stale term refusal", cmd("put", {"key": b"k"}, term=1)),
]


@pytest.mark.parametrize("command", [c[1] for c in ONCE_CASES], ids=[c[0] for c in ONCE_CASES])
def test_same_cid_and_seq_applied_twice_changes_nothing_the_second_time(
    command: dict[str, Any],
) -> None:
    s = once_state()
    ok(s, "noop", term=2)
    command = {**command, "cid": "client-1", "seq": 7}
    first, _ = s.apply(command)
    after_first = fingerprint(s)
    assert s.apply(command) == (first, [])
    assert s.apply(st.decode_command(st.encode_command(command))) == (first, [])
    assert fingerprint(s) == after_first
    # Another seq, or another client with the same seq, is a new command.
    for other in ({**command, "seq": 8}, {**command, "cid": "client-2"}):
        s.apply(other)
        assert (other["cid"], other["seq"]) in s.results
    assert len(s.results) == 3


@pytest.mark.parametrize(("first", "between"), [
    (cmd("put", {"key": b"k", "ignore_value": True}), cmd("put", {"key": b"k"})),
    (cmd("put", {"key": b"k", "lease": 77}), cmd("lease_grant", {"ID": 77, "TTL": 5})),
    (cmd("txn", txn_req(success=[op_put(b"k", lease=77)])),
     cmd("lease_grant", {"ID": 77, "TTL": 5})),
], ids=["put ignore_value of a missing key", "put with an unknown lease",
        "txn put with an unknown lease"])
def test_a_retried_command_whose_first_copy_failed_is_not_applied(
    first: dict[str, Any], between: dict[str, Any]
) -> None:
    # The proposer resubmits the same bytes after a leader change; both copies can commit.
    # The waiter is completed by the first copy's error, so the second copy must not
    # quietly apply the write the client was told had failed.
    s = st.State()
    command = {**first, "cid": "client-1", "seq": 1}
    refused, _ = s.apply(command)
    assert "error" in refused
    assert "error" not in s.apply(between)[0]
    revision = s.revision
    assert s.apply(command) == (refused, [])
    assert s.revision == revision


def test_a_retry_carrying_an_old_term_is_answered_from_the_table() -> None:
    s = st.State()
    command = cmd("put", {"key": b"k"}, term=2, cid="leader", seq=1)
    first, _ = s.apply(command)
    ok(s, "noop", term=3)
    assert s.apply(command) == (first, [])
    assert s.revision == 2


def test_result_table_keeps_only_the_newest_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "RESULT_TABLE_SIZE", 3)
    s = st.State()
    for seq in range(1, 6):
        s.apply(cmd("put", {"key": b"k%d" % seq}, cid="c", seq=seq))
    assert list(s.results) == [("c", 3), ("c", 4), ("c", 5)]
    s.apply(cmd("put", {"key": b"k5"}, cid="c", seq=5))
    assert s.revision == 6
    s.apply(cmd("put", {"key": b"k1"}, cid="c", seq=1))  # forgotten: applied again
    assert s.revision == 7


# ---- term fencing ---------------------------------------------------------------------------


@pytest.mark.parametrize(("highest", "term", "accepted"), [
    (3, 2, False), (3, 1, False), (3, 3, True), (3, 4, True), (3, None, True),
    (None, 1, True), (None, None, True),
], ids=["older", "much older", "equal", "newer", "unstamped after stamped", "first stamped",
        "never stamped"])
def test_term_fence(highest: int | None, term: int | None, accepted: bool) -> None:
    s = st.State()
    if highest is not None:
        ok(s, "noop", term=highest)
    before = fingerprint(s)
    fields = {} if term is None else {"term": term}
    result, events = apply(s, "put", {"key": b"k"}, **fields)
    if accepted:
        assert (result, s.revision) == ({"revision": 2}, 2)
        assert s.max_term == max(highest or 0, term or 0)
    else:
        assert result["code"] == "FailedPrecondition"
        assert f"stale term {term}" in result["error"] and str(highest) in result["error"]
        assert events == []
        assert fingerprint(s) == before


@pytest.mark.parametrize("command", [
    cmd("put", {"key": b"a", "value": b"late"}),
    cmd("delete_range", {"key": b"a"}),
    cmd("txn", txn_req(success=[op_put(b"a")])),
    cmd("compact", {"revision": 3}),
    cmd("lease_grant", {"ID": 9, "TTL": 5}),
    cmd("lease_keepalive", {"ID": 5}),
    cmd("lease_revoke", {"ID": 5}),
    cmd("lease_expire", {"ID": 5, "renewals": 0}),
    cmd("member", {"raft": "x:1", "name": "m9", "api": "http://x"}),
    cmd("noop"),
], ids=lambda c: c["op"])
def test_every_command_with_a_stale_term_is_refused(command: dict[str, Any]) -> None:
    s = once_state()
    ok(s, "noop", term=5)
    before = fingerprint(s)
    result, events = s.apply({**command, "term": 4})
    assert "stale term" in result["error"] and events == []
    assert fingerprint(s) == before


# ---- odd and garbage input ------------------------------------------------------------------


def test_unknown_op_returns_an_error_value() -> None:
    s = seeded()
    before = fingerprint(s)
    assert apply(s, "frobnicate", {"key": b"a"}) == (
        {"error": "raftkube: unknown command 'frobnicate'", "code": "InvalidArgument"}, [])
    assert apply(s, "range", {"key": b"a"})[0]["error"].startswith("raftkube: unknown command")
    assert fingerprint(s) == before


GARBAGE = [
    {},
    {"op": None},
    {"op": 7, "req": {"key": b"a"}},
    {"op": "put"},
    {"op": "put", "req": "not a map"},
    {"op": "put", "req": ["key", b"a"]},
    {"op": "put", "req": {"key": b""}},
    {"op": "put", "req": {"key": [b"a"]}},
    {"op": "put", "req": {"key": b"a", "lease": "x"}},
    {"op": "put", "req": {"key": b"a", "lease": None}},
    {"op": "put", "req": {"key": b"a", "lease": float("inf")}},
    {"op": "put", "req": {"key": {"k": 1}}},
    {"op": "put", "req": {"key": b"a"}, "cid": "c", "seq": "x"},
    {"op": "put", "req": {"key": b"a"}, "term": "x"},
    {"op": "put", "req": {"key": b"a"}, "term": [3]},
    {"op": "delete_range", "req": {"key": b"a", "range_end": 5}},
    {"op": "delete_range", "req": {"key": 5, "range_end": b"\0"}},
    {"op": "txn", "req": {"compare": [5]}},
    {"op": "txn", "req": {"compare": 5}},
    {"op": "txn", "req": {"compare": [{"key": b"a", "target": "VERSION", "result": "ABOUT"}]}},
    {"op": "txn", "req": {"compare": [{"key": b"k", "target": "VALUE", "result": "LESS",
                                       "value": 3}]}},
    {"op": "txn", "req": {"success": [{"request_put": 5}]}},
    {"op": "txn", "req": {"success": [op_put(b"x"), {"request_put": {"key": b"y",
                                                                     "lease": "no"}}]}},
    {"op": "txn", "req": {"success": [op_put(b"x"), op_range(b"a", limit="no")]}},
    {"op": "txn", "req": {"success": [op_put(b"x"), op_range(b"a", sort_target="COLOR")]}},
    {"op": "txn", "req": {"success": [{"request_txn": "no"}]}},
    {"op": "compact", "req": {"revision": "x"}},
    {"op": "compact", "req": {"revision": None}},
    {"op": "lease_grant", "req": {"ID": "x"}},
    {"op": "lease_grant", "req": {"ID": 3, "TTL": [1]}},
    {"op": "lease_keepalive", "req": {"ID": {}}},
    {"op": "lease_revoke", "req": {"ID": None}},
    {"op": "lease_expire", "req": {"ID": 5, "renewals": "x"}},
    {"op": "member", "req": {}},
    {"op": "member", "req": {"raft": "x"}},
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=[repr(g)[:60] for g in GARBAGE])
def test_garbage_is_answered_with_an_error_value_and_changes_nothing(
    garbage: dict[str, Any],
) -> None:
    s = once_state()
    before = fingerprint(s)
    result, events = s.apply(garbage)
    assert set(result) == {"error", "code"}, result
    assert isinstance(result["error"], str) and events == []
    assert fingerprint(s) == before


@pytest.mark.parametrize("garbage", [None, ["put", {"key": b"a"}]], ids=["None", "a list"])
def test_apply_never_raises_even_when_the_command_is_not_a_map(garbage: Any) -> None:
    s = st.State()
    result, events = s.apply(garbage)
    assert "error" in result and events == []
    assert s.dump() == st.State().dump()


@pytest.mark.parametrize("req", [{"key": "a", "value": b"1"}, {"key": 7, "value": b"1"}],
                         ids=["str key", "int key"])
def test_a_key_of_the_wrong_type_does_not_break_later_writes(req: dict[str, Any]) -> None:
    s = st.State()
    s.apply(cmd("put", req))  # refused or not, the store must stay usable
    result, _ = apply(s, "put", {"key": b"b", "value": b"2"})
    assert "error" not in result, result
    assert value_at(s, b"b") == b"2"


def test_member_and_noop() -> None:
    s = seeded()
    assert apply(s, "noop") == ({"revision": 9}, [])
    assert apply(s, "member", {"raft": "10.0.0.1:7000", "name": "m1", "api": "http://a"}) == (
        {"revision": 9}, [])
    assert s.members == {"10.0.0.1:7000": {"name": "m1", "api": "http://a"}}
    assert s.revision == 9


# ---- snapshots ------------------------------------------------------------------------------


def test_dump_and_load_round_trip_everything() -> None:
    s = st.State()
    grant(s, 5, ttl=30)
    ok(s, "lease_keepalive", {"ID": 5})
    for i in range(4):
        s.apply(cmd("put", {"key": b"k%d" % i, "lease": 5 if i % 2 else 0}, cid="c", seq=i + 1))
    delete(s, b"k0")
    ok(s, "compact", {"revision": 4})
    ok(s, "member", {"raft": "a:1", "name": "m1", "api": "http://a"}, term=3)
    loaded = st.State.load(s.dump())
    for attr in ("revision", "compact_revision", "kvs", "_keys", "history", "leases",
                 "results", "max_term", "members"):
        assert getattr(loaded, attr) == getattr(s, attr), attr
    assert loaded.dump() == s.dump()
    # The loaded state goes on exactly like the original.
    for state in (s, loaded):
        assert state.apply(cmd("put", {"key": b"k1"}, cid="c", seq=2))[1] == []  # retry
        assert "stale term" in apply(state, "noop", term=2)[0]["error"]
        _, events = apply(state, "lease_revoke", {"ID": 5})
        assert [e.kv.key for e in events] == [b"k1", b"k3"]
    assert loaded.dump() == s.dump()


def test_load_refuses_an_unknown_snapshot_format() -> None:
    import msgpack

    with pytest.raises(ValueError, match="unknown snapshot format"):
        st.State.load(msgpack.packb({"v": 2}))


def test_commands_survive_encoding() -> None:
    c = cmd("txn", txn_req(compare=[cmp(b"a", "VALUE", "EQUAL", b"\xff")],
                           success=[op_put(b"k", b"\x00v", lease=5)]), cid="c", seq=3, term=2)
    assert st.decode_command(st.encode_command(c)) == c
    with pytest.raises(ValueError, match="a command is a map"):
        st.decode_command(st.encode_command([1, 2]))  # type: ignore[arg-type]


# ---- properties -----------------------------------------------------------------------------
#
# Random command sequences over a small alphabet, so that keys, leases and revisions
# collide often. `run` turns the generated commands into concrete ones (compaction targets
# and retries depend on the state reached) and records every step.

KEYS = (b"a", b"a/1", b"a/2", b"b")
VALUES = (b"", b"x", b"y")
ENDS = (b"", b"", b"\0", b"a0", b"b", b"c")  # b"a0" = prefix_end(b"a/")

keys_st = hs.sampled_from(KEYS)
values_st = hs.sampled_from(VALUES)
ends_st = hs.sampled_from(ENDS)


@hs.composite
def put_reqs(draw: Any, leases: tuple[int, ...] = (0, 0, 0, 1, 2, 3)) -> dict[str, Any]:
    req: dict[str, Any] = {"key": draw(keys_st), "value": draw(values_st)}
    lease = draw(hs.sampled_from(leases))
    if lease:
        req["lease"] = lease
    flag = draw(hs.sampled_from([None] * 10 + ["ignore_value", "ignore_lease"]))
    if flag:
        req[flag] = True
    return req


@hs.composite
def delete_reqs(draw: Any) -> dict[str, Any]:
    return {"key": draw(keys_st), "range_end": draw(ends_st)}


@hs.composite
def compares(draw: Any) -> dict[str, Any]:
    target = draw(hs.sampled_from(sorted(FIELD)))
    wanted = draw(values_st) if target == "VALUE" else draw(hs.integers(0, 6))
    return cmp(draw(keys_st), target, draw(hs.sampled_from(
        ["EQUAL", "NOT_EQUAL", "GREATER", "LESS"])), wanted)


txn_ops = hs.one_of(
    put_reqs(leases=(0, 0, 0, 0, 1, 2, 3)).map(lambda r: {"request_put": r}),
    delete_reqs().map(lambda r: {"request_delete_range": r}),
    hs.tuples(keys_st, ends_st).map(lambda ke: op_range(*ke)),
)


@hs.composite
def abstract_commands(draw: Any) -> dict[str, Any]:
    kind = draw(hs.sampled_from(
        ["put"] * 4 + ["delete_range"] * 2 + ["txn"] * 4
        + ["compact", "lease_grant", "lease_grant", "lease_keepalive", "lease_revoke",
           "lease_expire", "retry"]))
    if kind == "retry":
        return {"op": "retry", "pick": draw(hs.integers(0, 100))}
    if kind == "put":
        req = draw(put_reqs())
    elif kind == "delete_range":
        req = draw(delete_reqs())
    elif kind == "txn":
        req = txn_req(compare=draw(hs.lists(compares(), max_size=2)),
                      success=draw(hs.lists(txn_ops, min_size=1, max_size=4)),
                      failure=draw(hs.lists(txn_ops, max_size=3)))
    elif kind == "compact":
        req = {"back": draw(hs.integers(0, 4))}
    elif kind == "lease_grant":
        req = {"ID": draw(hs.sampled_from([1, 2])), "TTL": 5}
    elif kind == "lease_expire":
        req = {"ID": draw(hs.sampled_from([1, 2])), "renewals": draw(hs.integers(0, 1))}
    else:
        req = {"ID": draw(hs.sampled_from([1, 2]))}
    c: dict[str, Any] = {"op": kind, "req": req}
    term = draw(hs.sampled_from([0] * 12 + [1, 2, 3]))
    if term:
        c["term"] = term
    return c


command_lists = hs.lists(abstract_commands(), min_size=1, max_size=40)
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass
class Step:
    cmd: dict[str, Any]
    retry: bool
    result: st.Result
    events: list[Any]
    before: int
    after: int
    kvs_before: dict[bytes, st.KeyValue]
    kvs_after: dict[bytes, st.KeyValue]


# Leases 1 and 2 exist from the start, so that puts attach keys and revokes delete them.
PREAMBLE = [{"op": "lease_grant", "req": {"ID": 1, "TTL": 5}},
            {"op": "lease_grant", "req": {"ID": 2, "TTL": 5}}]


def run(abstract: list[dict[str, Any]]) -> tuple[st.State, list[Step]]:
    s = st.State()
    steps: list[Step] = []
    seq = itertools.count(1)
    for a in PREAMBLE + abstract:
        retry = a["op"] == "retry"
        if retry:
            done = [p.cmd for p in steps if not p.retry and "error" not in p.result]
            if not done:
                continue
            c = done[a["pick"] % len(done)]
        else:
            c = {**a, "cid": "prop", "seq": next(seq)}
            if a["op"] == "compact":
                c["req"] = {"revision": max(1, s.revision - a["req"]["back"])}
        before, kvs_before = s.revision, dict(s.kvs)
        result, events = s.apply(c)
        steps.append(Step(c, retry, result, events, before, s.revision, kvs_before,
                          dict(s.kvs)))
    return s, steps


def in_range(key: bytes, start: bytes, end: bytes) -> bool:
    """etcd's range rule, written out again so the model does not lean on the code."""
    if end == b"":
        return key == start
    if end == b"\0":
        return key >= start
    return start <= key < end


class Refused(Exception):
    pass


class Model:
    """A naive reference store: a full copy of the key space for every revision.

    Leases own the keys whose `lease` field names them (no separate bookkeeping), so the
    state's own attach/detach bookkeeping is checked rather than copied.
    """

    def __init__(self) -> None:
        self.revision = 1
        self.compact_revision = 0
        self.max_term = 0
        self.kvs: dict[bytes, st.KeyValue] = {}
        self.renewals: dict[int, int] = {}
        self.at: dict[int, dict[bytes, st.KeyValue]] = {1: {}}
        self.applied: set[tuple[str, int]] = set()

    def apply(self, c: dict[str, Any]) -> dict[str, Any]:
        op_id = (c["cid"], c["seq"])
        if op_id in self.applied:
            return {"retry": True}
        out = self._apply(c)
        if not out["error"]:
            self.applied.add(op_id)
        return out

    def _apply(self, c: dict[str, Any]) -> dict[str, Any]:
        term = c.get("term", 0)
        if term:
            if term < self.max_term:
                return {"error": True}
            self.max_term = term
        op, req = c["op"], c["req"]
        if op == "compact":
            if not self.compact_revision < req["revision"] <= self.revision:
                return {"error": True}
            self.compact_revision = req["revision"]
            return {"error": False}
        if op == "lease_grant":
            if req["ID"] in self.renewals:
                return {"error": True}
            self.renewals[req["ID"]] = 0
            return {"error": False}
        if op == "lease_keepalive":
            if req["ID"] not in self.renewals:
                return {"error": True}
            self.renewals[req["ID"]] += 1
            return {"error": False}
        if op in ("lease_revoke", "lease_expire"):
            lease_id = req["ID"]
            if lease_id not in self.renewals:
                return {"error": True}
            if op == "lease_expire" and req["renewals"] != self.renewals[lease_id]:
                return {"error": False, "expired": False}
            del self.renewals[lease_id]
            self._write(lambda kvs, rev, changed: self._delete_keys(
                kvs, [k for k in sorted(kvs) if kvs[k].lease == lease_id], changed))
            return {"error": False, "expired": op == "lease_expire"}
        handler: Callable[..., dict[str, Any]] = {
            "put": self._put, "delete_range": self._delete, "txn": self._txn}[op]
        return self._write(lambda kvs, rev, changed: handler(kvs, req, rev, changed))

    def _write(self, fn: Callable[..., dict[str, Any]]) -> dict[str, Any]:
        kvs, rev = dict(self.kvs), self.revision + 1
        changed: list[bytes] = []
        try:
            extra = fn(kvs, rev, changed)
        except Refused:
            return {"error": True}
        self.kvs = kvs
        if changed:
            self.revision = rev
            self.at[rev] = dict(kvs)
        return {"error": False, **extra}

    def _put(self, kvs: dict[bytes, st.KeyValue], req: dict[str, Any], rev: int,
             changed: list[bytes]) -> dict[str, Any]:
        key, old = req["key"], kvs.get(req["key"])
        value, lease = req.get("value", b""), req.get("lease", 0)
        if req.get("ignore_value") or req.get("ignore_lease"):
            if old is None:
                raise Refused
            value = old.value if req.get("ignore_value") else value
            lease = old.lease if req.get("ignore_lease") else lease
        if lease and lease not in self.renewals:
            raise Refused
        kvs[key] = st.KeyValue(key, value, old.create_revision if old else rev, rev,
                               old.version + 1 if old else 1, lease)
        changed.append(key)
        return {}

    def _delete(self, kvs: dict[bytes, st.KeyValue], req: dict[str, Any], rev: int,
                changed: list[bytes]) -> dict[str, Any]:
        doomed = [k for k in sorted(kvs) if in_range(k, req["key"], req["range_end"])]
        return self._delete_keys(kvs, doomed, changed)

    @staticmethod
    def _delete_keys(kvs: dict[bytes, st.KeyValue], doomed: list[bytes],
                     changed: list[bytes]) -> dict[str, Any]:
        for k in doomed:
            del kvs[k]
            changed.append(k)
        return {"deleted": len(doomed)}

    def _txn(self, kvs: dict[bytes, st.KeyValue], req: dict[str, Any], rev: int,
             changed: list[bytes]) -> dict[str, Any]:
        for branch in (req["success"], req["failure"]):
            puts = [op["request_put"]["key"] for op in branch if "request_put" in op]
            if len(puts) != len(set(puts)):
                raise Refused
            for op in branch:
                d = op.get("request_delete_range")
                if d and any(in_range(p, d["key"], d["range_end"]) for p in puts):
                    raise Refused
        succeeded = all(self._holds(c, kvs.get(c["key"])) for c in req["compare"])
        responses: list[tuple[Any, ...]] = []
        for op in req["success"] if succeeded else req["failure"]:
            if "request_range" in op:
                r = op["request_range"]
                responses.append(("range", [kvs[k].as_dict() for k in sorted(kvs)
                                            if in_range(k, r["key"], r["range_end"])],
                                  rev if changed else self.revision))
            elif "request_put" in op:
                self._put(kvs, op["request_put"], rev, changed)
                responses.append(("put",))
            else:
                responses.append(("delete", self._delete(
                    kvs, op["request_delete_range"], rev, changed)["deleted"]))
        return {"succeeded": succeeded, "responses": responses}

    @staticmethod
    def _holds(c: dict[str, Any], kv: st.KeyValue | None) -> bool:
        field = FIELD[c["target"]]
        if kv is None and c["target"] == "VALUE":
            return False
        actual, wanted = (getattr(kv, field) if kv else 0), c[field]
        return bool({"EQUAL": actual == wanted, "NOT_EQUAL": actual != wanted,
                     "GREATER": actual > wanted, "LESS": actual < wanted}[c["result"]])


def check_agrees(step: Step, want: dict[str, Any], first: dict[Any, st.Result],
                 model: Model) -> None:
    got = step.result
    op_id = (step.cmd["cid"], step.cmd["seq"])
    if want.get("retry"):
        assert (got, step.events, step.after) == (first[op_id], [], step.before)
        return
    first[op_id] = got
    assert ("error" in got) == want["error"], (step.cmd, got)
    if want["error"]:
        return
    assert got["revision"] == model.revision
    for field in ("succeeded", "deleted", "expired"):
        if field in want:
            assert got[field] == want[field], (field, step.cmd, got)
    for g, w in zip(got.get("responses", []), want.get("responses", []), strict=True):
        if w[0] == "range":
            assert (g["response_range"]["kvs"], g["response_range"]["revision"]) == w[1:]
        elif w[0] == "put":
            assert "response_put" in g
        else:
            assert g["response_delete_range"]["deleted"] == w[1]


def everything_at(s: st.State, revision: int, key: bytes = b"\0",
                  end: bytes = b"\0") -> list[dict[str, Any]]:
    kvs: list[dict[str, Any]] = s.range({"key": key, "range_end": end,
                                         "revision": revision})["kvs"]
    return kvs


@PROPERTY
@given(command_lists)
def test_property_revisions_strictly_increase_by_at_most_one(
    abstract: list[dict[str, Any]],
) -> None:
    s, steps = run(abstract)
    write_revisions = [1]
    for step in steps:
        assert step.after - step.before in (0, 1), step.cmd
        assert (step.after > step.before) == bool(step.events), step.cmd
        if step.events:
            write_revisions.append(step.after)
            assert {e.kv.mod_revision for e in step.events} == {step.after}
            assert len({e.kv.key for e in step.events}) == len(step.events)  # once per key
        if "error" in step.result:
            assert not step.events and step.kvs_after == step.kvs_before
        elif not step.retry:
            assert step.result["revision"] == step.after
    assert write_revisions == list(range(1, s.revision + 1))
    assert [rev for rev, _ in s.history] == [
        r for r in write_revisions if r >= max(s.compact_revision, 2)]


@PROPERTY
@given(command_lists, hs.sampled_from([(b"\0", b"\0"), (b"a", b""), (b"a/", b"a0"),
                                       (b"a/1", b"b"), (b"b", b"\0")]))
def test_property_a_watch_from_any_start_replays_the_history(
    abstract: list[dict[str, Any]], watched: tuple[bytes, bytes],
) -> None:
    s, steps = run(abstract)
    key, end = watched
    observed = [(p.after, [e for e in p.events if in_range(e.kv.key, key, end)])
                for p in steps if p.events]
    observed = [(rev, evs) for rev, evs in observed if evs]
    for start in range(s.compact_revision, s.revision + 2):
        assert s.events_from(start, key, end) == [(r, e) for r, e in observed if r >= start]
        # Folding the stream onto the range as it was just before `start` gives the range
        # as it is now, and each event's prev_kv is exactly what the watcher had.
        if start - 1 < max(s.compact_revision, 1):
            continue
        view = {kv["key"]: kv for kv in everything_at(s, start - 1, key, end)}
        for _rev, events in s.events_from(start, key, end):
            for e in events:
                had = view.pop(e.kv.key, None)
                assert had == (e.prev_kv.as_dict() if e.prev_kv else None)
                if e.type == st.PUT:
                    view[e.kv.key] = e.kv.as_dict()
        assert sorted(view.items()) == [(k, kv.as_dict()) for k, kv in sorted(s.kvs.items())
                                        if in_range(k, key, end)]
    for start in range(1, s.compact_revision):
        with pytest.raises(st.Compacted):
            s.events_from(start, key, end)


@PROPERTY
@given(command_lists)
def test_property_state_and_reads_of_the_past_match_a_naive_model(
    abstract: list[dict[str, Any]],
) -> None:
    s, steps = run(abstract)
    model = Model()
    first: dict[Any, st.Result] = {}
    for step in steps:
        check_agrees(step, model.apply(step.cmd), first, model)
        assert step.kvs_after == model.kvs, step.cmd
        assert step.after == model.revision
    assert (s.revision, s.compact_revision, s.max_term) == (
        model.revision, model.compact_revision, model.max_term)
    assert {i: lease.renewals for i, lease in s.leases.items()} == model.renewals
    for lease_id in model.renewals:
        assert s.lease_keys(lease_id) == sorted(
            k for k, kv in model.kvs.items() if kv.lease == lease_id)
    # Compaction never loses a revision at or above the compaction point.
    for revision in range(max(s.compact_revision, 1), s.revision + 1):
        past = model.at[revision]
        for key, end in ((b"\0", b"\0"), (b"a/", b"a0"), (b"a", b""), (b"a/2", b"\0")):
            assert everything_at(s, revision, key, end) == [
                past[k].as_dict() for k in sorted(past) if in_range(k, key, end)], revision
    for revision in range(1, s.compact_revision):
        with pytest.raises(st.Compacted):
            everything_at(s, revision)
    with pytest.raises(st.StoreError, match="future revision"):
        everything_at(s, s.revision + 1)


@PROPERTY
@given(command_lists, hs.integers(0, 30))
def test_property_apply_is_deterministic_and_snapshots_resume_exactly(
    abstract: list[dict[str, Any]], split: int,
) -> None:
    s, steps = run(abstract)
    commands = [p.cmd for p in steps]
    # The same commands, through msgpack as Raft carries them, on a fresh replica.
    twin = st.State()
    twin_out = [twin.apply(st.decode_command(st.encode_command(c))) for c in commands]
    assert twin_out == [(p.result, p.events) for p in steps]
    assert twin.dump() == s.dump()
    # A snapshot at any point, loaded and continued, is the same replica.
    split = min(split, len(commands))
    head = st.State()
    for c in commands[:split]:
        head.apply(c)
    restored = st.State.load(head.dump())
    assert restored.dump() == head.dump()
    for c in commands[split:]:
        assert restored.apply(c) == head.apply(c), c
    assert restored.dump() == head.dump() == s.dump()


@PROPERTY
@given(command_lists)
def test_property_a_txn_is_all_or_nothing(abstract: list[dict[str, Any]]) -> None:
    s, steps = run(abstract)
    for step in steps:
        if step.cmd["op"] != "txn" or step.retry:
            continue
        if "error" in step.result:
            assert (step.kvs_after, step.after, step.events) == (
                step.kvs_before, step.before, [])
            continue
        req = step.cmd["req"]
        branch = req["success"] if step.result["succeeded"] else req["failure"]
        touched: set[bytes] = set()
        for op in branch:
            if "request_put" in op:
                p = op["request_put"]
                kv = step.kvs_after[p["key"]]
                assert kv.mod_revision == step.after
                if not p.get("ignore_value"):
                    assert kv.value == p["value"]
                touched.add(p["key"])
            elif "request_delete_range" in op:
                d = op["request_delete_range"]
                doomed = {k for k in step.kvs_before if in_range(k, d["key"], d["range_end"])}
                assert not doomed & set(step.kvs_after)
                touched |= doomed
        for k in set(step.kvs_before) | set(step.kvs_after):
            if k not in touched:
                assert step.kvs_before.get(k) == step.kvs_after.get(k)
        assert {e.kv.key for e in step.events} == touched
        # All of it is visible at the txn's revision, none of it just before.
        if step.events and step.before >= s.compact_revision:
            assert everything_at(s, step.after) == [
                kv.as_dict() for _, kv in sorted(step.kvs_after.items())]
            assert everything_at(s, step.before) == [
                kv.as_dict() for _, kv in sorted(step.kvs_before.items())]


GARBAGE_FIELDS = ["key", "value", "lease", "range_end", "ID", "TTL", "revision", "compare",
                  "success", "failure", "ignore_value", "ignore_lease", "prev_kv", "renewals",
                  "raft", "name", "api", "limit", "request_put", "request_txn", "target",
                  "result"]
msgpack_values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers(-(2**63), 2**63 - 1) | hs.floats(allow_nan=False)
    | hs.text(max_size=4) | hs.binary(max_size=4) | keys_st,
    lambda inner: hs.lists(inner, max_size=3)
    | hs.dictionaries(hs.sampled_from(GARBAGE_FIELDS), inner, max_size=4),
    max_leaves=12,
)
garbage_commands = hs.fixed_dictionaries(
    {"op": hs.sampled_from(["put", "delete_range", "txn", "compact", "lease_grant",
                            "lease_keepalive", "lease_revoke", "lease_expire", "member",
                            "noop", "bogus"]) | msgpack_values},
    optional={"req": hs.dictionaries(hs.sampled_from(GARBAGE_FIELDS), msgpack_values,
                                     max_size=5) | msgpack_values,
              "cid": msgpack_values, "seq": msgpack_values, "term": msgpack_values},
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hs.lists(garbage_commands, max_size=8))
def test_property_apply_never_raises_on_garbage(garbage: list[dict[str, Any]]) -> None:
    s = once_state()
    for c in garbage:
        result, events = s.apply(c)
        assert isinstance(result, dict) and isinstance(events, list)


@pytest.mark.parametrize("command", [
    cmd("noop", term=1.9e19),
    cmd("noop", cid="c", seq=1e20),
    cmd("lease_grant", {"ID": 1e20, "TTL": 5}),
], ids=["term", "seq", "lease ID"])
def test_whatever_apply_accepts_can_still_be_snapshotted(command: dict[str, Any]) -> None:
    # msgpack can carry these floats; int() of them is beyond 64 bits, which msgpack
    # cannot pack again, so a state holding one can never be dumped (nor snapshotted).
    s = st.State()
    s.apply(st.decode_command(st.encode_command(command)))
    assert st.State.load(s.dump()).dump() == s.dump()


def test_a_command_stamped_older_than_its_log_entry_is_stale() -> None:
    """Decided under the leader of term 3, carried into the log by the leader of term 4
    (resubmitted after the leader changed): refused, even though no write stamped 4 has
    been applied yet. A resubmitted copy of one applied in its own term gets the first
    copy's answer and changes nothing."""
    s = st.State()
    first = {"op": "put", "req": {"key": b"a", "value": b"1"}, "cid": "c", "seq": 1,
             "term": 3}
    result, _ = s.apply(first, entry_term=3)
    assert result == {"revision": 2}
    assert s.apply(first, entry_term=4) == ({"revision": 2}, [])  # the copy: same answer
    before = fingerprint(s)
    late = {"op": "put", "req": {"key": b"b", "value": b"1"}, "cid": "c", "seq": 2,
            "term": 3}
    result, events = s.apply(late, entry_term=4)
    assert "stale term 3" in result["error"] and "term 4" in result["error"]
    assert result["code"] == "FailedPrecondition" and events == []
    assert s.apply(late, entry_term=3)[0] == result  # its copies are refused alike
    after = fingerprint(s)
    assert after[:6] + after[7:] == before[:6] + before[7:]  # only the result table moved
    assert s.max_term == 3
    assert "error" not in s.apply(cmd("noop", term=5), entry_term=4)[0]  # newer: fine
    assert "error" not in s.apply(cmd("put", {"key": b"c"}), entry_term=9)[0]  # unstamped
