"""Kubernetes' timestamps: RFC 3339 in UTC with whole seconds (`2024-05-01T12:00:00Z`).

Every writer (the API server, controllers, agents) formats times here and every reader
parses them here, from wall-clock seconds that the caller passes in (clocks are
injected, never read, below the I/O shell).
"""

from __future__ import annotations

import calendar
import time
from typing import Any


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def parse_time(text: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp; None if there is none."""
    if not isinstance(text, str) or len(text) < 19:
        return None
    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None
