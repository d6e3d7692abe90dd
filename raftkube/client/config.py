"""Where the cluster is and how to authenticate: `RK_CONFIG` or `~/.raftkube/config.yaml`.

The file `rk up` writes: `servers` (every master's API URL), `token`, `ca` (the PEM
certificate of the cluster's CA, which https servers are verified against; without it,
the system's trust store), and optionally `namespace` (the default for commands given
no `-n`).
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from dataclasses import dataclass

import yaml

from raftkube.client.errors import ClientError
from raftkube.client.transport import tls_context


@dataclass
class Config:
    servers: list[str]
    token: str
    namespace: str = "default"  # the optional `namespace:`, for commands given no -n
    ca: str | None = None  # PEM text of the CA that signed the masters' certificates


def server_problem(url: str) -> str | None:
    """What is wrong with a master's URL, or None. Plain HTTP only to a loopback
    address: a master serves HTTP nowhere else, so a token sent there in clear could
    only reach something else."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        return f"{url!r} is not an http(s) URL"
    if parsed.scheme == "http":
        try:
            loopback = ipaddress.ip_address(parsed.hostname).is_loopback
        except ValueError:
            loopback = parsed.hostname == "localhost"
        if not loopback:
            return (f"{url!r}: plain HTTP is for loopback addresses only (a master "
                    "serves HTTPS); use https://")
    return None


def ca_problem(ca: object) -> str | None:
    """What is wrong with a CA given as PEM text, or None."""
    if not isinstance(ca, str) or "-----BEGIN CERTIFICATE-----" not in ca:
        return "expected a PEM certificate"
    try:
        tls_context(ca)
    except ClientError as e:
        return str(e)
    return None


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
        problem = server_problem(server)
        if problem:
            raise ClientError(f"config {path}: servers: {problem}")
    ca = raw.get("ca")
    if ca is not None:
        problem = ca_problem(ca)
        if problem:
            raise ClientError(f"config {path}: ca: {problem}")
    namespace = raw.get("namespace")
    return Config([s.rstrip("/") for s in servers], token,
                  namespace if isinstance(namespace, str) and namespace else "default", ca)
