"""Prometheus metrics for one master: request counts and latencies, and Raft's progress.

A registry per server (not the global one), so that tests running several servers in
one process do not collide. Raft figures are read from the replica at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import prometheus_client as prom
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector


class RaftSource(Protocol):
    """What the collector reads of a replica: its Raft view and its stats, through the
    replica's public methods (never its lock or state)."""

    @property
    def view(self) -> Any: ...

    def stats(self) -> Any: ...


class _RaftCollector(Collector):
    def __init__(self) -> None:
        self.replica: RaftSource | None = None

    def collect(self):  # type: ignore[no-untyped-def]
        r = self.replica
        if r is None:
            return
        view = r.view
        stats = r.stats()
        yield GaugeMetricFamily("raftkube_raft_term", "Current Raft term.", value=view.term)
        yield GaugeMetricFamily("raftkube_raft_commit_index", "Raft commit index.",
                                value=view.commit_index)
        yield GaugeMetricFamily("raftkube_raft_applied_index", "Last applied Raft index.",
                                value=view.last_applied)
        yield GaugeMetricFamily("raftkube_raft_is_leader", "1 if this master leads.",
                                value=1 if view.is_leader else 0)
        yield CounterMetricFamily("raftkube_raft_leader_changes",
                                  "Leader changes seen by this master.",
                                  value=view.leader_changes)
        yield GaugeMetricFamily("raftkube_store_revision", "Store revision.",
                                value=stats.revision)
        yield GaugeMetricFamily("raftkube_store_watchers", "Open watchers on this master.",
                                value=stats.watchers)
        ticks = stats.ticks
        counts, cumulative, buckets = list(ticks.buckets), 0, []
        for bound, n in zip([*ticks.BOUNDS, float("inf")], counts, strict=True):
            cumulative += n
            buckets.append((str(bound) if bound != float("inf") else "+Inf", cumulative))
        yield HistogramMetricFamily(
            "raftkube_raft_tick_seconds",
            "Time between two passes of the Raft tick loop (what a heartbeat can be late by).",
            buckets=buckets, sum_value=ticks.total)
        yield CounterMetricFamily("raftkube_journal_flushes",
                                  "Journal flushes (group commits) to disk.",
                                  value=stats.journal_flushes)
        yield CounterMetricFamily(
            "raftkube_store_fenced_writes",
            "Writes stamped with a replaced leader's Raft term, refused (fencing).",
            value=stats.fenced_writes)
        stamped = CounterMetricFamily(
            "raftkube_store_stamped_writes",
            "Writes stamped with a leader's Raft term and applied, by that term.",
            labels=["term"])
        for term, n in sorted(stats.stamped_writes.items()):
            stamped.add_metric([str(term)], n)
        yield stamped


class _ConnectionCollector(Collector):
    """The API's connections, read from the server at scrape time (serving.py)."""

    def __init__(self, open_count: Callable[[], int], accepted_count: Callable[[], int],
                 refused_count: Callable[[], int], cap: int) -> None:
        self.open_count = open_count
        self.accepted_count = accepted_count
        self.refused_count = refused_count
        self.cap = cap

    def collect(self):  # type: ignore[no-untyped-def]
        yield GaugeMetricFamily("raftkube_http_connections", "Open API client connections.",
                                value=self.open_count())
        yield GaugeMetricFamily("raftkube_http_connections_max",
                                "The cap on API client connections.", value=self.cap)
        yield CounterMetricFamily("raftkube_http_connections_accepted",
                                  "API connections accepted (refused ones included).",
                                  value=self.accepted_count())
        yield CounterMetricFamily("raftkube_http_connections_refused",
                                  "API connections refused over the cap.",
                                  value=self.refused_count())


class Metrics:
    def __init__(self) -> None:
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "raftkube_http_requests", "HTTP requests by route and status.",
            ["method", "route", "code"], registry=self.registry)
        self.latency = prom.Histogram(
            "raftkube_http_request_duration_seconds", "HTTP request latency by route.",
            ["route"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self._raft = _RaftCollector()
        self.registry.register(self._raft)

    def watch_connections(self, *, open_count: Callable[[], int],
                          accepted_count: Callable[[], int], refused_count: Callable[[], int],
                          cap: int) -> None:
        self.registry.register(
            _ConnectionCollector(open_count, accepted_count, refused_count, cap))

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        self.requests.labels(method, route, str(code)).inc()
        if route != "/v3/watch":
            self.latency.labels(route).observe(seconds)

    def render(self, replica: RaftSource) -> tuple[bytes, str]:
        self._raft.replica = replica
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
