"""The invariants a chaos run is judged by, computed from what the workload recorded.

Each function is pure: it takes what was seen and returns figures, so that the report
states them and the tests can feed them known-bad inputs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from chaos.history import Fault, Sample

WRITES = ("put", "cas", "fenced-put")


def lost_writes(acked: Mapping[str, tuple[str, int]],
                stored: Mapping[str, Mapping[str, tuple[str, int]]]) -> list[dict[str, Any]]:
    """Acknowledged unique writes (key -> (value, revision)) that some member does not
    hold, or holds at another revision; `stored` is what each member holds."""
    lost = []
    for member, keys in sorted(stored.items()):
        for key, (value, revision) in sorted(acked.items()):
            got = keys.get(key)
            if got is None or got != (value, revision):
                lost.append({"member": member, "key": key, "acked": [value, revision],
                             "stored": list(got) if got else None})
    return lost


def max_leaders_per_term(claims: Mapping[int, set[str]]) -> tuple[int, dict[str, list[str]]]:
    """The most leaders any term had (members' claims), and the terms with more than one."""
    most = max((len(v) for v in claims.values()), default=0)
    return most, {str(t): sorted(v) for t, v in sorted(claims.items()) if len(v) > 1}


def stale_term_writes(fenced: Iterable[tuple[int, int]]) -> list[dict[str, int]]:
    """Acknowledged term-stamped writes that the store should have refused.

    A stamped write is applied only in the term it is stamped with (the store refuses
    a stamp older than its entry's term), and terms never go down along the log; so in
    revision order the stamps of applied writes never decrease. A stamp below one
    applied at an earlier revision is a write from a deposed leader's term that got in
    after a newer leader had written."""
    stale, newest = [], 0
    for stamp, revision in sorted(fenced, key=lambda x: x[1]):
        if stamp < newest:
            stale.append({"revision": revision, "term": stamp, "after_term": newest})
        newest = max(newest, stamp)
    return stale


def watch_gaps(acked: Mapping[str, tuple[str, int]],
               watched: list[tuple[int, str]]) -> dict[str, Any]:
    """What the resuming watch got wrong: acknowledged writes it never delivered,
    events delivered twice, and events out of revision order."""
    seen = set(watched)
    missing = sorted((key, rev) for key, (_v, rev) in acked.items() if (rev, key) not in seen)
    duplicates = len(watched) - len(seen)
    disorder = sum(1 for a, b in zip(watched, watched[1:], strict=False) if b[0] < a[0])
    return {"missing": len(missing), "missing_examples": missing[:5],
            "duplicates": duplicates, "out_of_order": disorder,
            "total": len(missing) + duplicates + disorder}


def failover_seconds(faults: list[Fault], samples: list[Sample]) -> list[float | None]:
    """For each fault, how long until the cluster acknowledged a write again: from the
    fault to the answer of the first write invoked after it that was acknowledged (None:
    no write was acknowledged after it)."""
    acked = sorted((s.invoked, s.completed) for s in samples
                   if s.kind in WRITES and s.outcome == "ok")
    out: list[float | None] = []
    for fault in faults:
        after = [done for invoked, done in acked if invoked >= fault.began]
        out.append(round(min(after) - fault.began, 3) if after else None)
    return out


def unavailable_windows(samples: list[Sample], kinds: tuple[str, ...] = WRITES,
                        ) -> list[tuple[float, float]]:
    """The spans between consecutive acknowledged answers (of `kinds`) that are longer
    than a second: when nothing of that kind got through."""
    done = sorted(s.completed for s in samples if s.kind in kinds and s.outcome == "ok")
    return [(a, b) for a, b in zip(done, done[1:], strict=False) if b - a > 1.0]


def summary(values: list[float]) -> dict[str, float | None]:
    """Median, p99 and max of a list of seconds (None when empty)."""
    if not values:
        return {"median": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"median": round(statistics.median(ordered), 3), "p99": round(p99, 3),
            "max": round(ordered[-1], 3)}
