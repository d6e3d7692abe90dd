"""A kubeconfig for kubectl and Kubernetes' client libraries, from a raftkube config.

kubectl talks to one server per cluster entry and does not fail over, so the file has a
cluster and a context per master (`raftkube-m1` ... for the first, second ... server)
and a default context, `raftkube`, on the first master; `kubectl --context raftkube-m2`
reaches another. The admin token is the user; the CA that signed the masters'
certificates goes in as `certificate-authority-data`.
"""

from __future__ import annotations

import base64
from typing import Any

import yaml

from raftkube.client.config import Config

USER = "raftkube-admin"


def build(config: Config, *, name: str = "raftkube") -> dict[str, Any]:
    def cluster(server: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"server": server}
        if config.ca:
            entry["certificate-authority-data"] = base64.b64encode(
                config.ca.encode()).decode()
        return entry

    def context(cluster_name: str) -> dict[str, Any]:
        entry = {"cluster": cluster_name, "user": USER}
        if config.namespace != "default":
            entry["namespace"] = config.namespace
        return entry

    members = [(f"{name}-m{i}", server) for i, server in enumerate(config.servers, 1)]
    clusters = [(name, config.servers[0]), *members]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": cluster(s)} for n, s in clusters],
        "users": [{"name": USER, "user": {"token": config.token}}],
        "contexts": [{"name": n, "context": context(n)} for n, _ in clusters],
        "current-context": name,
        "preferences": {},
    }


def render(config: Config, *, name: str = "raftkube") -> str:
    return yaml.safe_dump(build(config, name=name), sort_keys=False)
