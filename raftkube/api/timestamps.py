"""Kubernetes' timestamps: RFC 3339 in UTC with whole seconds (`2024-05-01T12:00:00Z`).

Every writer (the API server, controllers, agents) formats times here and every reader
parses them here, from wall-clock seconds that the caller passes in (clocks are
injected, never read, below the I/O shell).
"""

from __future__ import annotations

import calendar
import time
from typing import Any

# The last second RFC 3339 can write. A deadline past it (a grace period of an int64's
# worth of seconds is valid input) is written as this second: it is as good as never.
LAST_SECOND = 253402300799.0  # 9999-12-31T23:59:59Z


def rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(t, LAST_SECOND)))


def parse_time(text: Any) -> float | None:
    """Seconds since the epoch of an RFC 3339 timestamp; None if there is none."""
    if not isinstance(text, str) or len(text) < 19:
        return None
    try:
        return float(calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None
