"""The ConfigMaps and Secrets a pod spec refers to by name.

One answer for the two places that must agree on it: the API server's node authorizer
(a node may read exactly the ConfigMaps and Secrets of the pods bound to it, as
Kubernetes' node authorizer allows) and the node agent, which reads those objects to
build its containers' environment and volumes. Anything the agent reads but the
authorizer did not list would be refused, so both read this function.
"""

from __future__ import annotations

from typing import Any

CONFIGMAPS = "configmaps"
SECRETS = "secrets"


def pod_references(spec: dict[str, Any]) -> set[tuple[str, str]]:
    """The (plural, name) of every ConfigMap and Secret a pod spec refers to: volumes
    (projected ones too), image pull secrets, env and envFrom of every container."""
    refs: set[tuple[str, str]] = set()

    def add(plural: str, ref: Any, key: str = "name") -> None:
        if isinstance(ref, dict) and isinstance(ref.get(key), str) and ref[key]:
            refs.add((plural, ref[key]))

    for volume in _dicts(spec.get("volumes")):
        add(CONFIGMAPS, volume.get("configMap"))
        add(SECRETS, volume.get("secret"), "secretName")
        projected = volume.get("projected")
        if isinstance(projected, dict):
            for source in _dicts(projected.get("sources")):
                add(CONFIGMAPS, source.get("configMap"))
                add(SECRETS, source.get("secret"))
    for secret in _dicts(spec.get("imagePullSecrets")):
        add(SECRETS, secret)
    for c in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
        for var in _dicts(c.get("env")):
            value_from = var.get("valueFrom")
            if isinstance(value_from, dict):
                add(CONFIGMAPS, value_from.get("configMapKeyRef"))
                add(SECRETS, value_from.get("secretKeyRef"))
        for env_from in _dicts(c.get("envFrom")):
            add(CONFIGMAPS, env_from.get("configMapRef"))
            add(SECRETS, env_from.get("secretRef"))
    return refs


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
