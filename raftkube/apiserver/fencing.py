"""Fencing for leader-only loops: the `X-Raftkube-Term` header on a write.

A write may carry the Raft term its author decided it in. The store refuses it once a
leader of a newer term has written (`store.state`), so a deposed leader's late writes
change nothing. Both APIs read the header here: a term no leader has had yet is refused
up front, since it would fence off every real leader's writes.
"""

from __future__ import annotations

from raftkube.apiserver import inputs

TERM_HEADER = "X-Raftkube-Term"


def requested_term(raw: str | None, current_term: int) -> int | None:
    """The term a request is stamped with (None if it is not); ValueError if the header
    is not a term this member could have seen."""
    if raw is None:
        return None
    term = inputs.int64(raw)
    if term <= 0:
        raise ValueError("must be a positive Raft term")
    if term > current_term:
        raise ValueError(f"term {term} is newer than this member's Raft term {current_term}")
    return term
