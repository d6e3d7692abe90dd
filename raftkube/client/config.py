"""Where the cluster is and how to authenticate: `RK_CONFIG` or `~/.raftkube/config.yaml`.

The file `rk up` writes: `servers` (every master's API URL), `token`, `ca` (the PEM
certificate of the cluster's CA, which https servers are verified against; without it,
the system's trust store), and optionally `namespace` (the default for commands given
no `-n`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import yaml

from raftkube.client.errors import ClientError


@dataclass
class Config:
    servers: list[str]
    token: str
    namespace: str = "default"  # the optional `namespace:`, for commands given no -n
    ca: str | None = None  # PEM text of the CA that signed the masters' certificates


def default_config_path() -> str:
    return os.environ.get("RK_CONFIG") or os.path.expanduser("~/.raftkube/config.yaml")


def load_config(path: str | None = None) -> Config:
    path = path or default_config_path()
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as e:
        raise ClientError(f"cannot read config {path}: {e.strerror} "
                          "(run `rk up` or set RK_CONFIG)") from None
    except yaml.YAMLError as e:
        raise ClientError(f"config {path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ClientError(f"config {path}: expected a mapping with servers and token")
    servers = raw.get("servers")
    token = raw.get("token")
    if not isinstance(servers, list) or not servers or not all(
            isinstance(s, str) for s in servers):
        raise ClientError(f"config {path}: servers must be a non-empty list of URLs")
    if not isinstance(token, str) or not token:
        raise ClientError(f"config {path}: token must be a non-empty string")
    for server in servers:
        if not server.startswith(("https://", "http://")):
            raise ClientError(f"config {path}: servers: {server!r} is not an http(s) URL")
    ca = raw.get("ca")
    if ca is not None and not (isinstance(ca, str) and "-----BEGIN CERTIFICATE-----" in ca):
        raise ClientError(f"config {path}: ca must be a PEM certificate")
    namespace = raw.get("namespace")
    return Config([s.rstrip("/") for s in servers], token,
                  namespace if isinstance(namespace, str) and namespace else "default", ca)
