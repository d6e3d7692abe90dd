"""podcontrol: slow start, writes in flight, claiming."""

from __future__ import annotations

import pytest

from raftkube.client import informer as inf
from raftkube.controllers import podcontrol

pytestmark = pytest.mark.unit


async def test_slow_start_doubles_batches_and_stops_after_a_failing_one() -> None:
    seen: list[int] = []

    async def write(i: int) -> None:
        seen.append(i)
        if i == 4:
            raise RuntimeError("quota")

    done, error = await podcontrol.slow_start(list(range(20)), write)
    assert sorted(seen) == [0, 1, 2, 3, 4, 5, 6]  # batches of 1, 2, 4; the third failed
    assert done == 6 and isinstance(error, RuntimeError)
    assert await podcontrol.slow_start([], write) == (0, None)


def test_writes_in_flight_settle_when_seen_or_expired() -> None:
    now = [100.0]
    flight = podcontrol.InFlight(clock=lambda: now[0], ttl=60)
    cache = inf.Cache()
    flight.expect_create("ns/owner", "ns/a")
    flight.expect_delete("ns/owner", "ns/b")
    cache.put({"metadata": {"namespace": "ns", "name": "b"}})
    assert not flight.settled("ns/owner", cache)
    cache.put({"metadata": {"namespace": "ns", "name": "a"}})
    assert not flight.settled("ns/owner", cache)  # b is still there, not marked
    cache.put({"metadata": {"namespace": "ns", "name": "b", "deletionTimestamp": "x"}})
    assert flight.settled("ns/owner", cache)
    flight.expect_create("ns/owner", "ns/never")
    now[0] += 61  # its watch event was lost for good: the owner is not stalled forever
    assert flight.settled("ns/owner", cache)
    assert flight.settled("ns/other", cache)
