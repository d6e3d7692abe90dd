"""Linearizability of a key-value history: is there one sequential order of the operations,
respecting real time, that a single atomic map would have produced?

The chaos runner records every KV operation it sent (who, what, when it was invoked, when and
how it completed, or that its outcome is unknown) and hands the list to `check`. The shape is
the one porcupine (Athalye) uses, written afresh in stdlib Python:

* **Partition by key** (Horn & Kroening's P-compositionality): a map is linearizable iff every
  key, taken alone as a register, is. A few thousand ops over hundreds of keys become hundreds
  of tiny searches and a few dozen larger ones, checked smallest first.
* **Wing & Gong's search with Lowe's memo** per key: call and return events sorted by time in
  a doubly linked list; repeatedly linearize an op whose call comes before every pending
  return (lifting both events out of the list), and backtrack when a pending return is reached
  with its op not linearized. A configuration (set of linearized ops as an int bitset, register
  value) already explored is never explored again. A get or failed cas that fits the current
  value is linearized at once without branching (partial-order reduction, see `_search`), so
  only writes are ordered by trial and error. The loop is iterative, with an explicit stack,
  so history length is not bounded by Python's recursion limit.
* **Unknown outcomes** (a put or cas whose reply never came: timed out, connection lost) are
  ops with no return event: they may take effect at any point after their call, or never
  (porcupine and Knossos model them with a return time of +infinity and an unconstrained
  result). "Never" is the same as being linearized after everything, so the search is done as
  soon as every *completed* op is linearized; a cas with unknown outcome is only ever
  linearized as a swap, since not swapping is indistinguishable from not happening. Unknown
  gets carry no information and are dropped. Exact reductions keep unknown ops from
  multiplying the search (see `_prepare`): an unknown write whose value nobody could have
  observed is dropped or becomes one of a count of interchangeable "blind" writes, and one
  whose value is unique and was observed must precede its first observer's return, which
  gives it a finite return time. What remains (unknown writes of values that are written
  more than once, or that only failed cas compare against) is searched as porcupine does;
  many of them on one key can still make a wrong history slow to refute, hence the budget.

The register semantics: every key starts absent (None); put sets the value; get returns it;
cas(expected, value) swaps iff the current value equals `expected` (None = absent) and its
result says whether it did. Real-time order: a precedes b iff a.completed < b.invoked.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

__all__ = ["Op", "Verdict", "check"]

KINDS = ("put", "get", "cas")
# How many ops of a failing key's history a Verdict keeps when it has to trim.
WINDOW_BEFORE = 10
WINDOW_MAX = 40


@dataclasses.dataclass(frozen=True)
class Op:
    """One KV operation as the workload saw it.

    `completed` None means the outcome is unknown. `result` is the value a get read (None =
    absent) or whether a cas swapped; a put's result is ignored.
    """

    client: int
    key: str
    kind: Literal["put", "get", "cas"]
    value: str | None = None
    expected: str | None = None
    result: str | bool | None = None
    invoked: float = 0.0
    completed: float | None = None


@dataclasses.dataclass
class Verdict:
    """The answer for a whole history.

    `linearizable` is None when the time budget ran out on `key`. `keys` and `ops` count what
    was examined: every key and op when the answer is True, and up to and including the
    reported key otherwise (unknown-outcome gets, which say nothing, are not counted).
    """

    linearizable: bool | None
    key: str | None
    history: list[dict[str, Any]]
    keys: int
    ops: int
    explanation: str


def check(ops: Iterable[Op], *, timeout: float = 30.0) -> Verdict:
    """Decide whether `ops` is linearizable, within `timeout` seconds for the whole check."""
    deadline = time.monotonic() + timeout
    by_key: dict[str, list[Op]] = collections.defaultdict(list)
    for index, op in enumerate(ops):
        _validate(op, index)
        if op.kind == "get" and op.completed is None:
            continue
        by_key[op.key].append(op)
    keys = sorted(by_key, key=lambda k: (len(by_key[k]), k))
    checked_ops = 0
    for checked_keys, key in enumerate(keys, start=1):
        history = sorted(by_key[key], key=lambda o: (o.invoked, _completed(o), o.client))
        checked_ops += len(history)
        if time.monotonic() > deadline:
            outcome, blame = None, 0
        else:
            outcome, blame = _search(_prepare(history), deadline)
        if outcome is True:
            continue
        window = [dataclasses.asdict(op) for op in _window(history, blame)]
        if outcome is None:
            explanation = (
                f"the search for key {key!r} ({len(history)} operations) ran out of the "
                f"{timeout:g} s budget before deciding, after {checked_keys - 1} of "
                f"{len(keys)} keys were found linearizable"
            )
        else:
            explanation = (
                f"key {key!r} is not linearizable: no order of its {len(history)} operations "
                f"that respects real time explains {_describe(history[blame])}"
            )
        return Verdict(
            linearizable=outcome,
            key=key,
            history=window,
            keys=checked_keys,
            ops=checked_ops,
            explanation=explanation,
        )
    return Verdict(
        linearizable=True,
        key=None,
        history=[],
        keys=len(keys),
        ops=checked_ops,
        explanation=f"all {checked_ops} operations on {len(keys)} keys are linearizable",
    )


def _validate(op: Op, index: int) -> None:
    if not isinstance(op, Op):
        raise TypeError(f"op {index}: expected a chaos.linearizability.Op, got {type(op)!r}")
    where = f"op {index} (client {op.client!r}, key {op.key!r})"
    if not isinstance(op.key, str):
        raise ValueError(f"{where}: Op.key must be a str, got {op.key!r}")
    if op.kind not in KINDS:
        raise ValueError(f"{where}: Op.kind must be one of {KINDS}, got {op.kind!r}")
    if not isinstance(op.invoked, int | float) or not math.isfinite(op.invoked):
        raise ValueError(f"{where}: Op.invoked must be a finite number, got {op.invoked!r}")
    if op.completed is not None:
        if not isinstance(op.completed, int | float) or not math.isfinite(op.completed):
            raise ValueError(
                f"{where}: Op.completed must be a finite number or None, got {op.completed!r}")
        if op.completed < op.invoked:
            raise ValueError(
                f"{where}: Op.completed ({op.completed}) is before Op.invoked ({op.invoked})")
    if op.kind in ("put", "cas") and not isinstance(op.value, str):
        raise ValueError(f"{where}: Op.value of a {op.kind} must be a str, got {op.value!r}")
    if op.kind == "cas":
        if op.expected is not None and not isinstance(op.expected, str):
            raise ValueError(f"{where}: Op.expected must be a str or None, got {op.expected!r}")
        if op.completed is not None and not isinstance(op.result, bool):
            raise ValueError(
                f"{where}: Op.result of a completed cas must be True or False, "
                f"got {op.result!r}")
    if op.kind == "get" and op.result is not None and not isinstance(op.result, str):
        raise ValueError(f"{where}: Op.result of a get must be a str or None, got {op.result!r}")


def _completed(op: Op) -> float:
    return math.inf if op.completed is None else op.completed


# Step codes of the register model. A cas with unknown outcome is searched as CAS_SWAP only.
GET, PUT, CAS_SWAP, CAS_FAIL = 0, 1, 2, 3
# Register states are small ints: ABSENT, UNSEEN (every value that no get reads and no cas
# compares against: from the model's point of view they all behave alike), then one id per
# value that some op observes.
ABSENT, UNSEEN = 0, 1


@dataclasses.dataclass
class _Prepared:
    """One key's ops in the form the search wants; indexes refer to the sorted history."""

    codes: list[int] = dataclasses.field(default_factory=list)
    args: list[int] = dataclasses.field(default_factory=list)     # get: state read; cas: expected
    values: list[int] = dataclasses.field(default_factory=list)   # put/cas: state written
    returns: list[float] = dataclasses.field(default_factory=list)  # inf: outcome unknown
    invoked: list[float] = dataclasses.field(default_factory=list)
    index: list[int] = dataclasses.field(default_factory=list)    # position in the history
    blind: list[float] = dataclasses.field(default_factory=list)  # see _prepare
    states: int = 2


def _prepare(history: Sequence[Op]) -> _Prepared:
    """Encode one key's ops, reducing unknown-outcome writes of a value v in three exact ways.

    Dropped, when nobody observes v (no get read it, no cas expected it) and no failed cas
    could be ordered after the write. Were it linearized, nothing until the next write could
    see the state v (only a failed cas could use it, and none may follow), and that next
    write is a put (no cas expects v), so removing it from any linearization leaves a valid
    one.

    Blind, when nobody observes v but a failed cas may follow (the write can explain why that
    cas failed). Such puts all do the same thing, set the register to UNSEEN, and none ever
    stops being available once invoked, so they are interchangeable: the search treats them
    as a count of "blind writes used", taken in order of invocation, instead of a subset.

    Pinned, when the write is the only op writing v and some completed op observed v (a get
    that read v, a cas that swapped from v). Every linearization must include it, as a swap,
    before that observer, hence before the observer's return: giving it the earliest such
    return as its own describes exactly the same linearizations, and bounds the search.
    """
    writers: collections.Counter[str | None] = collections.Counter()
    seen: set[str | None] = set()        # read by a get or expected by any cas
    deadline: dict[str | None, float] = {}  # earliest return of a completed observer
    last_failed_cas = -math.inf
    for op in history:
        if op.kind in ("put", "cas"):
            writers[op.value] += 1
        if op.kind == "get":
            seen.add(_as_value(op.result))
            if op.completed is not None:
                observed = _as_value(op.result)
                deadline[observed] = min(deadline.get(observed, math.inf), op.completed)
        elif op.kind == "cas":
            seen.add(op.expected)
            if op.completed is not None and op.result is False:
                last_failed_cas = max(last_failed_cas, op.completed)
            elif op.completed is not None:
                deadline[op.expected] = min(deadline.get(op.expected, math.inf), op.completed)
    ids: dict[str, int] = {}

    def state(value: str | None) -> int:
        if value is None:
            return ABSENT
        if value not in seen:
            return UNSEEN
        return ids.setdefault(value, len(ids) + 2)

    prepared = _Prepared()
    for position, op in enumerate(history):
        returns = _completed(op)
        if op.completed is None:    # a put or a cas: unknown gets were dropped already
            if op.value not in seen:
                if last_failed_cas < op.invoked:
                    continue
                if op.kind == "put":
                    prepared.blind.append(op.invoked)
                    continue
            elif writers[op.value] == 1 and op.value in deadline:
                returns = max(deadline[op.value], op.invoked)
        if op.kind == "get":
            code, arg = GET, state(_as_value(op.result))
        elif op.kind == "put":
            code, arg = PUT, ABSENT
        else:
            swapped = op.result is True or op.completed is None
            code, arg = (CAS_SWAP if swapped else CAS_FAIL), state(op.expected)
        prepared.codes.append(code)
        prepared.args.append(arg)
        prepared.values.append(state(op.value))
        prepared.returns.append(returns)
        prepared.invoked.append(op.invoked)
        prepared.index.append(position)
    prepared.blind.sort()
    prepared.states = len(ids) + 2
    return prepared


def _as_value(result: str | bool | None) -> str | None:
    return result if isinstance(result, str) else None


# Sentinels of the two linked lists: the events of ops that complete, and the calls of ops
# whose outcome is unknown (which never block the search, so need no return event).
HEAD, TAIL, UNKNOWN_HEAD, UNKNOWN_TAIL = 0, 1, 2, 3
CHECK_CLOCK_EVERY = 1024
MEMO_LIMIT = 2_000_000


def _search(prepared: _Prepared, deadline: float) -> tuple[bool | None, int]:
    """Wing & Gong with Lowe's memo over one key. Returns (verdict, blamed history index):
    the op whose return the deepest branch of the search could not get past.

    Each configuration (linearized ops, register state, blind writes used) is expanded in
    phases. 0: an op that leaves the state as it is (a get, a failed cas) and fits now is
    linearized without branching: if any linearization exists from here, moving that op to
    its front keeps it valid (the op is minimal and changes nothing), so trying the
    alternatives too would only repeat work. 1: branch over the writes among the completed
    ops that may go next. 2: over the unknown-outcome ops invoked before the earliest pending
    return. 3: one more blind write. Then backtrack.
    """
    codes, args, values = prepared.codes, prepared.args, prepared.values
    count = len(codes)
    keeps = [code in (GET, CAS_FAIL) or (code == CAS_SWAP and args[op] == values[op])
             for op, code in enumerate(codes)]
    blind = prepared.blind
    events: list[tuple[float, int, int]] = []   # (time, 0 call / 1 return, op)
    unknown: list[tuple[float, int, int]] = []
    for op in range(count):
        if prepared.returns[op] == math.inf:
            unknown.append((prepared.invoked[op], 0, op))
        else:
            # Calls sort before returns at equal times: a.completed == b.invoked is overlap.
            events.append((prepared.invoked[op], 0, op))
            events.append((prepared.returns[op], 1, op))
    events.sort()
    unknown.sort()
    size = 4 + len(events) + len(unknown)
    nxt = [0] * size
    prv = [0] * size
    owner = [-1] * size          # op of an event
    is_call = [False] * size
    when = [math.inf] * size
    partner = [-1] * size        # call event -> its return event (-1 for unknown ops)
    call_of: dict[int, int] = {}

    def link(head: int, tail: int, items: list[tuple[float, int, int]], first: int) -> None:
        previous = head
        for offset, (moment, kind, op) in enumerate(items):
            entry = first + offset
            owner[entry], is_call[entry], when[entry] = op, kind == 0, moment
            if kind == 0:
                call_of[op] = entry
            else:
                partner[call_of[op]] = entry
            nxt[previous], prv[entry] = entry, previous
            previous = entry
        nxt[previous], prv[tail] = tail, previous

    link(HEAD, TAIL, events, 4)
    link(UNKNOWN_HEAD, UNKNOWN_TAIL, unknown, 4 + len(events))

    # Memo keys pack (linearized bitset, state, blind writes used) into one int. Ops are
    # numbered in invocation order, so the linearized set is mostly a prefix: storing the
    # prefix's length and the bits above it keeps keys a few words long, not n bits.
    state_bits = prepared.states.bit_length()
    used_bits = len(blind).bit_length()
    prefix_bits = count.bit_length()

    def pack(bits: int, state: int, used: int) -> int:
        prefix = ((bits + 1) & ~bits).bit_length() - 1
        return (((((bits >> prefix) << state_bits) | state) << used_bits | used)
                << prefix_bits) | prefix

    remaining = len(events) // 2   # completed ops not yet linearized
    state = ABSENT
    linearized = 0
    used = 0
    memo: set[int] = set()   # configurations explored: all failed, or are on the stack
    # Frames: (call event or -1 for a blind write, state before, phase, limit, blocked op).
    stack: list[tuple[int, int, int, float, int]] = []
    entry = nxt[HEAD]
    phase = 0
    limit = math.inf             # from phase 1 on: the earliest pending return
    blocked = -1                 # and its op
    best_depth, blame = -1, 0
    steps = 0
    while remaining:
        steps += 1
        if not steps % CHECK_CLOCK_EVERY:
            if time.monotonic() > deadline:
                return None, prepared.index[blame] if count else 0
            if len(memo) > MEMO_LIMIT:
                # Forgetting is safe (the memo only saves repeated work) and bounds memory.
                memo.clear()
        if phase == 3:
            if used < len(blind) and blind[used] <= limit and state != UNSEEN:
                key = pack(linearized, UNSEEN, used + 1)
                if key not in memo:
                    memo.add(key)
                    stack.append((-1, state, 3, limit, blocked))
                    state, used = UNSEEN, used + 1
                    entry, phase = nxt[HEAD], 0
                    continue
            phase = 4
        if phase == 4:   # this configuration is exhausted: back to the last open choice
            while True:
                if not stack:
                    return False, prepared.index[blame]
                entry, state, phase, limit, blocked = stack.pop()
                if entry < 0:
                    used -= 1
                    continue
                linearized ^= 1 << owner[entry]
                back = partner[entry]
                if back >= 0:
                    nxt[prv[back]] = back
                    prv[nxt[back]] = back
                    remaining += 1
                nxt[prv[entry]] = entry
                prv[nxt[entry]] = entry
                if phase in (1, 2):
                    entry = nxt[entry]
                    break
            continue
        if phase == 2:
            if when[entry] > limit:
                phase = 3
                continue
        elif not is_call[entry]:
            if phase == 0:
                limit, blocked = when[entry], owner[entry]
                if len(stack) > best_depth:
                    best_depth, blame = len(stack), blocked
                entry, phase = nxt[HEAD], 1
            else:
                entry, phase = nxt[UNKNOWN_HEAD], 2
            continue
        op = owner[entry]
        if (phase == 0) is not keeps[op]:
            entry = nxt[entry]
            continue
        code = codes[op]
        if code == GET:
            ok, after = state == args[op], state
        elif code == PUT:
            ok, after = True, values[op]
        elif code == CAS_SWAP:
            ok, after = state == args[op], values[op]
        else:
            ok, after = state != args[op], state
        if not ok:
            entry = nxt[entry]
            continue
        bits = linearized | (1 << op)
        key = pack(bits, after, used)
        if key in memo:
            # Phase 0's move was forced, so a configuration it leads to that has been
            # explored already (and failed) condemns this one too.
            if phase == 0:
                phase = 4
            else:
                entry = nxt[entry]
            continue
        memo.add(key)
        stack.append((entry, state, phase, limit, blocked))
        state, linearized = after, bits
        nxt[prv[entry]] = nxt[entry]
        prv[nxt[entry]] = prv[entry]
        back = partner[entry]
        if back >= 0:
            nxt[prv[back]] = nxt[back]
            prv[nxt[back]] = prv[back]
            remaining -= 1
        # After a forced move the scan goes on where it was: the state is unchanged, so
        # nothing before this op has become possible.
        entry = nxt[prv[entry]] if phase == 0 else nxt[HEAD]
        phase = 0
    return True, 0


def _window(history: Sequence[Op], blame: int) -> list[Op]:
    """The ops around the blamed one: some before it, everything invoked before it returned,
    and the latest write of the value it observed, so that a reader sees the conflict."""
    if len(history) <= WINDOW_MAX:
        return list(history)
    culprit = history[blame]
    chosen = set(range(max(0, blame - WINDOW_BEFORE), blame + 1))
    end = _completed(culprit)
    for position in range(blame + 1, len(history)):
        if history[position].invoked > end or len(chosen) >= WINDOW_MAX:
            break
        chosen.add(position)
    observed = culprit.expected if culprit.kind == "cas" else _as_value(culprit.result)
    for position in range(blame - 1, -1, -1):
        other = history[position]
        if other.kind in ("put", "cas") and other.value == observed:
            chosen.add(position)
            break
    return [history[position] for position in sorted(chosen)]


def _describe(op: Op) -> str:
    when = f"invoked at {op.invoked:.3f}s"
    if op.kind == "get":
        return f"client {op.client}'s get {when} that read {op.result!r}"
    if op.kind == "put":
        return f"client {op.client}'s put of {op.value!r} {when}"
    outcome = "unknown" if op.completed is None else repr(op.result)
    return (f"client {op.client}'s cas {op.expected!r} -> {op.value!r} {when} "
            f"that returned {outcome}")
