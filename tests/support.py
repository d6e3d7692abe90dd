"""Helpers shared by the test tiers."""

from __future__ import annotations

from typing import Any


def contains(live: Any, written: Any, path: str = "") -> list[str]:
    """Where `live` does not hold what `written` says: the server may add fields
    (defaults, identity), but nothing written may be missing or changed. JSON equality:
    `1` is not `1.0` or `True`."""
    if isinstance(written, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        return [p for k, v in written.items() for p in contains(live.get(k), v, f"{path}.{k}")]
    if isinstance(written, list):
        if not isinstance(live, list) or len(live) != len(written):
            return [f"{path}: {live!r} != {written!r}"]
        return [p for i, (a, b) in enumerate(zip(live, written, strict=True))
                for p in contains(a, b, f"{path}[{i}]")]
    return [] if type(live) is type(written) and live == written else \
        [f"{path}: {live!r} != {written!r}"]
