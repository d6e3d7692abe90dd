"""The agent's Prometheus metrics: one registry per agent process, served at /metrics.

What the runtime holds (pods, containers by state, restarts) is read at each scrape, so
nothing is counted twice and nothing goes stale; what happens (execs, probe results,
proxied connections) is counted where it happens, on this registry.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from raftkube.agent import runtime as rt


class AgentMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.pods = Gauge("raftkube_agent_pods", "Pods with a sandbox on the node.",
                          ["node"], registry=self.registry)
        self.containers = Gauge("raftkube_agent_containers",
                                "Newest container instances on the node, by state.",
                                ["node", "state"], registry=self.registry)
        self.restarts = Gauge("raftkube_agent_container_restarts",
                              "Restarts of the containers on the node (the sum of their "
                              "restartCounts).", ["node"], registry=self.registry)
        self.execs = Counter("raftkube_agent_execs", "Exec sessions started.", ["node"],
                             registry=self.registry)

    def render(self, states: Mapping[str, list[rt.PodState]]) -> tuple[bytes, str]:
        for node, pods in states.items():
            self.pods.labels(node=node).set(len(pods))
            counts = {rt.RUNNING: 0, rt.EXITED: 0}
            restarts = 0
            for pod in pods:
                for name in {c.name for c in pod.containers}:
                    latest = pod.latest(name)
                    if latest is not None:
                        counts[latest.state] = counts.get(latest.state, 0) + 1
                        restarts += latest.attempt
            for state, count in counts.items():
                self.containers.labels(node=node, state=state).set(count)
            self.restarts.labels(node=node).set(restarts)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
