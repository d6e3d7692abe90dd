"""How fast the node lifecycle controller may taint nodes, zone by zone: Kubernetes' rule
that many nodes going dark at once is the masters' problem, not the nodes'.

Nodes are grouped by zone (`topology.kubernetes.io/zone`, with the region; "" when
unlabelled). A zone is in

- full disruption when none of its nodes is Ready,
- partial disruption when more than two are not Ready and they are at least
  `unhealthy_threshold` (55 %) of it,
- normal otherwise.

Tainting a node NoExecute (which evicts its pods after their toleration) draws a token
from its zone's bucket, refilled at `eviction_rate` nodes a second (0.1, burst 1), or at
`secondary_rate` (0.01) in a zone in partial disruption, which stops altogether in a zone
of at most `large_cluster` (50) nodes. When every zone is in full disruption the
controller is in *master disruption mode*: it suspects itself (its network, its store),
not the nodes, so it taints nothing and lifts the NoExecute taints it had set; leaving
that mode restarts every node's grace period.

All of it is pure: the caller passes the clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NORMAL, PARTIAL, FULL = "Normal", "PartialDisruption", "FullDisruption"
ZONE = "topology.kubernetes.io/zone"
REGION = "topology.kubernetes.io/region"


def zone_of(node: Mapping[str, Any]) -> str:
    """Kubernetes' zone key: region and zone joined; "" for a node with neither."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    region, zone = labels.get(REGION, ""), labels.get(ZONE, "")
    return f"{region}:\x00:{zone}" if region or zone else ""


def zone_state(ready: Iterable[bool], *, unhealthy_threshold: float) -> str:
    """The state of a zone whose nodes' readiness is `ready`."""
    states = list(ready)
    not_ready = sum(1 for r in states if not r)
    if states and not_ready == len(states):
        return FULL
    if not_ready > 2 and not_ready / len(states) >= unhealthy_threshold:
        return PARTIAL
    return NORMAL


@dataclass
class Limits:
    eviction_rate: float = 0.1
    secondary_rate: float = 0.01
    unhealthy_threshold: float = 0.55
    large_cluster: int = 50

    def rate(self, state: str, size: int) -> float:
        if state == PARTIAL:
            return self.secondary_rate if size > self.large_cluster else 0.0
        return self.eviction_rate


@dataclass
class Bucket:
    """A token bucket of burst 1: one node now, then one every 1/rate seconds."""

    rate: float
    tokens: float = 1.0
    last: float | None = None

    def refill(self, now: float) -> None:
        if self.last is not None and self.rate > 0:
            self.tokens = min(1.0, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait(self, now: float) -> float | None:
        """Seconds until a token; None while the rate is 0."""
        self.refill(now)
        if self.tokens >= 1.0:
            return 0.0
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else None

    def set_rate(self, rate: float, now: float) -> None:
        self.refill(now)
        self.rate = rate


@dataclass
class Disruption:
    """Zone states, their buckets and master disruption mode, updated by `observe`."""

    limits: Limits = field(default_factory=Limits)
    states: dict[str, str] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)
    master_mode: bool = False

    def observe(self, zones: Mapping[str, list[bool]], now: float) -> str:
        """Take the nodes' readiness by zone; "entered" or "left" when master disruption
        mode changes, else ""."""
        new = {z: zone_state(r, unhealthy_threshold=self.limits.unhealthy_threshold)
               for z, r in zones.items()}
        for gone in set(self.buckets) - set(new):  # a bucket may precede its zone's state
            del self.buckets[gone]
        all_full = bool(new) and all(s == FULL for s in new.values())
        change = ""
        if all_full and not self.master_mode:
            change = "entered"
        elif not all_full and self.master_mode:
            change = "left"
        self.master_mode = all_full
        for z, state in new.items():
            bucket = self.buckets.setdefault(z, Bucket(self.limits.eviction_rate))
            rate = 0.0 if all_full else self.limits.rate(state, len(zones[z]))
            if bucket.rate != rate:
                bucket.set_rate(rate, now)
        self.states = new
        return change

    def may_taint(self, zone: str, now: float) -> bool:
        bucket = self.buckets.setdefault(zone, Bucket(self.limits.eviction_rate))
        return not self.master_mode and bucket.take(now)

    def wait(self, zone: str, now: float) -> float | None:
        if self.master_mode:
            return None
        return self.buckets.setdefault(zone, Bucket(self.limits.eviction_rate)).wait(now)
