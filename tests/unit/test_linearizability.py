"""The KV linearizability checker on known-good and known-bad histories, and against a
brute-force checker (every order of every subset of unknown-outcome ops) on small random ones."""

from __future__ import annotations

import heapq
import itertools
import json
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from chaos import linearizability as lin
from chaos.linearizability import Op

pytestmark = pytest.mark.unit


def put(client: int, value: str, invoked: float, completed: float | None, key: str = "k") -> Op:
    return Op(client=client, key=key, kind="put", value=value, invoked=invoked,
              completed=completed)


def get(client: int, result: str | None, invoked: float, completed: float | None,
        key: str = "k") -> Op:
    return Op(client=client, key=key, kind="get", result=result, invoked=invoked,
              completed=completed)


def cas(client: int, expected: str | None, value: str, result: bool | None, invoked: float,
        completed: float | None, key: str = "k") -> Op:
    return Op(client=client, key=key, kind="cas", expected=expected, value=value, result=result,
              invoked=invoked, completed=completed)


# (name, history, linearizable, why)
TABLE: list[tuple[str, list[Op], bool]] = [
    # One client, one op after another: the only order is the real-time one, and it fits.
    ("sequential", [
        get(1, None, 0, 1), put(1, "a", 2, 3), get(1, "a", 4, 5),
        cas(1, "a", "b", True, 6, 7), cas(1, "a", "c", False, 8, 9), get(1, "b", 10, 11),
    ], True),
    # Two overlapping puts may take effect in either order; the reads after both completed
    # agree on one winner ("x" here), so x-after-y is the linearization.
    ("concurrent puts, later one wins", [
        put(1, "x", 0, 10), put(2, "y", 1, 5), get(3, "x", 11, 12), get(3, "x", 13, 14),
    ], True),
    ("concurrent puts, earlier one wins", [
        put(1, "x", 0, 10), put(2, "y", 1, 5), get(3, "y", 11, 12),
    ], True),
    # A get overlapping a put may see the old or the new value.
    ("get overlapping a put sees the old value", [
        put(1, "a", 0, 1), put(1, "b", 2, 6), get(2, "a", 3, 4), get(2, "b", 7, 8),
    ], True),
    ("get overlapping a put sees the new value", [
        put(1, "a", 0, 1), put(1, "b", 2, 6), get(2, "b", 3, 4), get(2, "b", 7, 8),
    ], True),
    # Ops that touch at one instant (completed == invoked) overlap: either order is allowed.
    ("touching intervals overlap", [
        put(1, "a", 0, 5), get(2, None, 5, 6),
    ], True),
    # The put of "b" completed before the get was invoked, yet the get saw "a": stale read.
    ("stale read after a completed write", [
        put(1, "a", 0, 1), put(1, "b", 2, 3), get(2, "a", 4, 5),
    ], False),
    # Nobody ever wrote "z".
    ("read of a value never written", [
        put(1, "a", 0, 1), get(2, "z", 2, 3),
    ], False),
    # Two cas from "a" both report success, one after the other: the second must have seen
    # the first one's "b" (or "c") and failed.
    ("two successful cas from the same expected value", [
        put(1, "a", 0, 1), cas(1, "a", "b", True, 2, 3), cas(2, "a", "c", True, 4, 5),
    ], False),
    # Same, but overlapping: still only one of them can have swapped from "a".
    ("two overlapping successful cas from the same expected value", [
        put(1, "a", 0, 1), cas(1, "a", "b", True, 2, 5), cas(2, "a", "c", True, 3, 6),
    ], False),
    # A cas that says it failed while the value certainly was its expected value.
    ("failed cas on a matching value", [
        put(1, "a", 0, 1), cas(1, "a", "b", False, 2, 3),
    ], False),
    # cas with expected None means "absent": succeeds on a fresh key, fails after a put.
    ("cas from absent", [
        cas(1, None, "a", True, 0, 1), cas(2, None, "b", False, 2, 3), get(1, "a", 4, 5),
    ], True),
    # The put of "new" was acknowledged, then a get saw the older "old": the write was lost.
    ("lost write", [
        put(1, "old", 0, 1), put(2, "new", 2, 3), get(3, "new", 4, 5), get(3, "old", 6, 7),
    ], False),
    # Acknowledged put, then a read of absent: lost as well.
    ("lost write to absent", [
        put(1, "a", 0, 1), get(2, None, 2, 3),
    ], False),
    # A put whose reply never came, later observed by a read: it took effect.
    ("unknown put observed later", [
        put(1, "a", 0, 1), put(2, "b", 2, None), get(3, "b", 50, 51), get(3, "b", 52, 53),
    ], True),
    # ... observed long after: an unknown op has no return time, it may take effect any time.
    ("unknown put observed after other ops", [
        put(1, "a", 0, 1), put(2, "b", 2, None), get(3, "a", 10, 11), put(3, "c", 12, 13),
        get(3, "c", 14, 15), put(3, "a", 16, 17), get(4, "b", 20, 21),
    ], True),
    # ... and never observed: it never took effect (or was overwritten at once).
    ("unknown put never observed", [
        put(1, "a", 0, 1), put(2, "b", 2, None), get(3, "a", 10, 11), get(3, "a", 12, 13),
    ], True),
    # An unknown put still cannot take effect before it was invoked.
    ("unknown put observed before it was invoked", [
        get(3, "b", 0, 1), put(2, "b", 2, None),
    ], False),
    # Nor can it explain reads that flip back and forth: once "b" is overwritten by "c" and
    # seen, nothing writes "b" again.
    ("unknown put observed twice around another write", [
        put(2, "b", 0, None), get(3, "b", 1, 2), put(3, "c", 3, 4), get(3, "c", 5, 6),
        get(3, "b", 7, 8),
    ], False),
    # A cas with unknown outcome that swapped, as a later read shows.
    ("unknown cas that swapped", [
        put(1, "a", 0, 1), cas(2, "a", "b", None, 2, None), get(3, "b", 5, 6),
    ], True),
    # ... or did not swap.
    ("unknown cas that did not swap", [
        put(1, "a", 0, 1), cas(2, "a", "b", None, 2, None), get(3, "a", 5, 6),
        get(3, "a", 7, 8),
    ], True),
    # ... it swapped, but only after a later successful cas from "a" (it may take effect at
    # any time), so its expected value "a" was gone by then: it cannot have written "c".
    ("unknown cas whose expected value was gone", [
        put(1, "a", 0, 1), cas(1, "a", "b", True, 2, 3), cas(2, "x", "c", None, 4, None),
        get(3, "c", 5, 6),
    ], False),
    # An unknown put enables a failed cas: put "a" is followed by a cas from "a" that failed,
    # which is only possible if the unknown put of "b" took effect in between.
    ("unknown put explains a failed cas", [
        put(1, "a", 0, 1), put(2, "b", 2, None), cas(3, "a", "c", False, 5, 6),
    ], True),
    # Unknown gets carry no information and are ignored, whatever they "read".
    ("unknown get ignored", [
        put(1, "a", 0, 1), get(2, "nonsense", 2, None), get(3, "a", 3, 4),
    ], True),
]


@pytest.mark.parametrize(("history", "expected"), [(h, e) for _, h, e in TABLE],
                         ids=[name for name, _, _ in TABLE])
def test_known_histories(history: list[Op], expected: bool) -> None:
    verdict = lin.check(history)
    assert verdict.linearizable is expected, verdict.explanation
    assert brute_force(history) is expected  # the table and the reference agree
    # The order the runner hands ops in does not matter.
    shuffled = list(history)
    random.Random(7).shuffle(shuffled)
    assert lin.check(shuffled).linearizable is expected
    if not expected:
        assert verdict.key == "k"
        assert verdict.history == [vars_of(op) for op in history]
        assert "not linearizable" in verdict.explanation


def test_the_bad_key_among_good_ones_is_reported_with_its_history() -> None:
    good = [put(c, f"v{c}", c, c + 0.5, key=f"unique-{c}") for c in range(50)]
    good += [put(1, "a", 0, 1, key="reg"), get(2, "a", 2, 3, key="reg")]
    bad = [put(1, "a", 0, 1, key="bad"), put(1, "b", 2, 3, key="bad"),
           get(2, "a", 4, 5, key="bad")]
    verdict = lin.check(good + bad[::-1])
    assert verdict.linearizable is False
    assert verdict.key == "bad"
    assert verdict.history == [vars_of(op) for op in bad]   # only its ops, sorted by invoked
    assert "'bad'" in verdict.explanation and "client 2's get" in verdict.explanation
    assert lin.check(good).linearizable is True
    assert lin.check(good).keys == 51 and lin.check(good).ops == 52


def test_a_long_failing_history_is_trimmed_around_the_failure() -> None:
    ops = []
    for i in range(200):
        ops.append(put(1, f"v{i}", 10 * i, 10 * i + 1))
        ops.append(get(2, f"v{i}", 10 * i + 2, 10 * i + 3))
    ops[201] = get(2, "v42", 1002, 1003)   # a stale read in the middle (v100 was written)
    verdict = lin.check(ops)
    assert verdict.linearizable is False
    assert verdict.history and len(verdict.history) < len(ops) // 4
    assert vars_of(ops[201]) in verdict.history        # the culprit
    assert vars_of(ops[84]) in verdict.history         # the write of the value it read
    assert vars_of(ops[200]) in verdict.history        # the write it should have seen
    invoked = [op["invoked"] for op in verdict.history]
    assert invoked == sorted(invoked)


def test_verdict_history_is_json_serializable() -> None:
    history = [put(1, "a", 0.5, 1.25), cas(2, None, "b", None, 1.5, None),
               cas(3, "a", "c", False, 0.75, 0.8), get(2, "b", 2.0, 3.0)]
    verdict = lin.check(history)
    assert verdict.linearizable is False
    text = json.dumps(verdict.history, allow_nan=False)
    assert json.loads(text) == verdict.history
    assert {op["completed"] for op in verdict.history} >= {None}
    assert json.dumps(vars(lin.check(history[:1])))


def test_the_time_budget_gives_none() -> None:
    # 22 overlapping puts and a read of something none of them wrote: proving it wrong means
    # trying every subset of the puts, far more than a 50 ms budget allows.
    ops = [put(c, f"v{c}", 0, 100) for c in range(22)] + [get(99, "nope", 200, 201)]
    ops += [put(1, "x", 0, 1, key="easy")]
    verdict = lin.check(ops, timeout=0.05)
    assert verdict.linearizable is None
    assert verdict.key == "k"
    assert "budget" in verdict.explanation
    assert verdict.keys == 2   # the small key was checked first
    assert len(verdict.history) <= lin.WINDOW_MAX


def test_forgetting_the_memo_changes_no_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # The memo is bounded by clearing it; that may repeat work but must not change answers.
    monkeypatch.setattr(lin, "MEMO_LIMIT", 0)
    puts = [put(c, f"v{c}", 0, 100) for c in range(7)]
    assert lin.check(puts + [get(99, "nope", 200, 201)]).linearizable is False
    assert lin.check(puts + [get(99, "v3", 200, 201)]).linearizable is True
    history = simulate(random.Random(5), clients=8, ops=600, registers=1, unique_every=0,
                       unknown=0.05)
    assert lin.check(history).linearizable is True


def test_a_large_random_atomic_history_is_linearizable() -> None:
    rng = random.Random(11)
    history = simulate(rng, clients=20, ops=3000, registers=8, unique_every=3, unknown=0.03)
    assert sum(op.completed is None for op in history) > 20
    verdict = lin.check(history, timeout=120)
    assert verdict.linearizable is True, verdict.explanation
    assert verdict.ops == sum(not (op.kind == "get" and op.completed is None) for op in history)


def test_a_random_counter_history_is_linearizable() -> None:
    # Counters write the same values many times over, so unknown-outcome swaps cannot be
    # pinned to their observers: the search has to place them.
    rng = random.Random(13)
    history = simulate(rng, clients=12, ops=2000, registers=3, unique_every=0, unknown=0.03,
                       counters=True)
    assert sum(op.kind == "cas" and op.result is True for op in history) > 100
    assert sum(op.kind == "cas" and op.completed is None for op in history) > 10
    verdict = lin.check(history, timeout=120)
    assert verdict.linearizable is True, verdict.explanation


def test_a_large_random_history_with_one_corrupted_read_is_not() -> None:
    rng = random.Random(12)
    history = simulate(rng, clients=10, ops=1500, registers=2, unique_every=0, unknown=0.0)
    reads = [i for i, op in enumerate(history) if op.kind == "get" and op.result is not None
             and op.invoked > history[len(history) // 2].invoked]
    victim = history[reads[0]]
    history[reads[0]] = Op(client=victim.client, key=victim.key, kind="get",
                           result="never-written", invoked=victim.invoked,
                           completed=victim.completed)
    verdict = lin.check(history, timeout=120)
    assert verdict.linearizable is False
    assert verdict.key == victim.key
    assert "never-written" in verdict.explanation


@pytest.mark.parametrize(("op", "field"), [
    (put(1, "a", 2, 1), "Op.completed"),
    (Op(client=1, key="k", kind="delete", invoked=0, completed=1), "Op.kind"),  # type: ignore[arg-type]
    (Op(client=1, key="k", kind="put", invoked=0, completed=1), "Op.value"),
    (cas(1, "a", "b", None, 0, 1), "Op.result"),
    (get(1, None, float("nan"), 1), "Op.invoked"),
    (Op(client=1, key=3, kind="get", invoked=0, completed=1), "Op.key"),  # type: ignore[arg-type]
])
def test_bad_ops_are_refused_naming_the_field(op: Op, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        lin.check([put(1, "a", 0, 1), op])


# --- the reference and the generators ---------------------------------------------------------

def vars_of(op: Op) -> dict[str, object]:
    return dict(vars(op))


def brute_force(history: Sequence[Op]) -> bool:
    """Straight from the definition: some subset of the unknown-outcome ops (the rest never
    took effect) and some order of everything kept, respecting real time, that an atomic map
    with those results would produce. Exponential; for a handful of ops only."""
    ops = [op for op in history if not (op.kind == "get" and op.completed is None)]
    done = [op for op in ops if op.completed is not None]
    unknown = [op for op in ops if op.completed is None]
    for size in range(len(unknown) + 1):
        for taken in itertools.combinations(unknown, size):
            for order in itertools.permutations(done + list(taken)):
                if respects_real_time(order) and atomic(order):
                    return True
    return False


def respects_real_time(order: Sequence[Op]) -> bool:
    return not any(later.completed is not None and later.completed < earlier.invoked
                   for i, earlier in enumerate(order) for later in order[i + 1:])


def atomic(order: Sequence[Op]) -> bool:
    state: dict[str, str] = {}
    for op in order:
        current = state.get(op.key)
        if op.kind == "get":
            if current != op.result:
                return False
        elif op.kind == "put":
            assert op.value is not None
            state[op.key] = op.value
        else:
            swapped = current == op.expected
            if op.completed is not None and swapped is not op.result:
                return False
            if swapped:
                assert op.value is not None
                state[op.key] = op.value
    return True


VALUES = [None, "1", "2", "3"]


@hs.composite
def small_histories(draw: hs.DrawFn) -> list[Op]:
    """Up to 6 ops on one or two keys with small integer times (so that ties are common).
    Half the time the results come from an atomic map run at random points inside each
    interval (mostly linearizable, perhaps with one result changed); otherwise at random."""
    count = draw(hs.integers(1, 6))
    faithful = draw(hs.booleans())
    shapes = []
    for client in range(count):
        kind = draw(hs.sampled_from(["put", "get", "cas"]))
        key = draw(hs.sampled_from(["k", "k", "j"]))
        invoked = draw(hs.integers(0, 6))
        length = draw(hs.one_of(hs.none(), hs.integers(0, 4)))
        completed = None if length is None else invoked + length
        value = draw(hs.sampled_from(VALUES[1:]))
        expected = draw(hs.sampled_from(VALUES))
        point = invoked + draw(hs.integers(0, 8 if length is None else length * 4)) / 4
        takes_effect = completed is not None or draw(hs.booleans())
        result: str | bool | None = None
        if kind == "get":
            result = draw(hs.sampled_from(VALUES))
        elif kind == "cas":
            result = None if completed is None else draw(hs.booleans())
        shapes.append((point, client, takes_effect, Op(
            client=client, key=key, kind=kind, value=value if kind != "get" else None,
            expected=expected if kind == "cas" else None, result=result,
            invoked=invoked, completed=completed)))
    if not faithful:
        return [op for *_, op in shapes]
    state: dict[str, str] = {}
    ops: list[Op] = []
    for _, _, takes_effect, op in sorted(shapes, key=lambda s: (s[0], s[1])):
        if not takes_effect:
            ops.append(op)
            continue
        ops.append(run(state, op))
    if draw(hs.booleans()):
        victim = draw(hs.integers(0, len(ops) - 1))
        ops[victim] = corrupt(ops[victim], draw(hs.sampled_from(VALUES)))
    return ops


def run(state: dict[str, str], op: Op) -> Op:
    """Apply op to the atomic map and return it with the result the map gave."""
    current = state.get(op.key)
    if op.kind == "get":
        return Op(**{**vars(op), "result": current})
    if op.kind == "put":
        assert op.value is not None
        state[op.key] = op.value
        return op
    swapped = current == op.expected
    if swapped:
        assert op.value is not None
        state[op.key] = op.value
    return Op(**{**vars(op), "result": swapped if op.completed is not None else None})


def corrupt(op: Op, other: str | None) -> Op:
    if op.kind == "get":
        return Op(**{**vars(op), "result": other})
    if op.kind == "cas" and op.completed is not None:
        return Op(**{**vars(op), "result": not op.result})
    return op


@settings(max_examples=300, deadline=None)
@given(history=small_histories())
def test_agrees_with_brute_force(history: list[Op]) -> None:
    assert lin.check(history).linearizable is brute_force(history)


def simulate(rng: random.Random, *, clients: int, ops: int, registers: int, unique_every: int,
             unknown: float, counters: bool = False) -> list[Op]:
    """An atomic map driven by `clients` concurrent clients, one op at a time each, as the
    chaos workload drives the cluster. Every op takes effect at a random instant inside its
    interval; one whose reply is lost (probability `unknown`) at a random instant after its
    call, or never, and its client is replaced by a fresh one. On registers a client reads,
    puts, or swaps from the value it last read or wrote (often stale by then, so the cas often
    fails); every `unique_every`-th op instead writes a fresh key. With `counters`, registers
    are counters instead: reads, and cas from the last value known to that value plus one, so
    that many ops write the same values."""
    events: list[tuple[float, int, str, int]] = [(rng.random(), slot, "invoke", slot)
                                                  for slot in range(clients)]
    heapq.heapify(events)
    client_of = list(range(clients))
    knows: dict[tuple[int, str], str | None] = {}
    history: list[Op] = []
    state: dict[str, str] = {}
    sequence = clients
    while events:
        now, _, what, target = heapq.heappop(events)
        sequence += 1
        if what == "apply":
            history[target] = run(state, history[target])
        elif what == "complete":
            done = history[target]
            if done.kind == "get" or done.kind == "put" or done.result is True:
                knows[(done.client, done.key)] = done.value if done.kind != "get" else \
                    _as_str(done.result)
        elif len(history) < ops:   # invoke the next op of the client in this slot
            n = len(history)
            client = client_of[target]
            duration = rng.expovariate(0.3)
            lost = rng.random() < unknown
            completed = None if lost else now + duration
            if unique_every and n % unique_every == 0:
                op = Op(client=client, key=f"unique-{n}", kind="put", value=f"v{n}",
                        invoked=now, completed=completed)
            else:
                key = f"reg-{rng.randrange(registers)}"
                known = (client, key) in knows
                kinds = ["get", "cas"] if counters else ["get", "get", "cas", "cas", "put"]
                kind = rng.choice(kinds) if known else "get"
                expected = knows.get((client, key))
                value = str(int(expected or 0) + 1) if counters else f"v{n}"
                op = Op(client=client, key=key, kind=kind,
                        value=None if kind == "get" else value,
                        expected=expected if kind == "cas" else None,
                        invoked=now, completed=completed)
            history.append(op)
            point = now + rng.random() * (3 * duration if lost else duration)
            if not lost or rng.random() < 0.5:
                heapq.heappush(events, (point, sequence, "apply", n))
            if lost:
                client_of[target] = clients + n
            else:
                heapq.heappush(events, (now + duration, sequence, "complete", n))
            heapq.heappush(events, (now + duration + rng.expovariate(2.0), sequence, "invoke",
                                    target))
    return history


def _as_str(result: str | bool | None) -> str | None:
    return result if isinstance(result, str) else None
