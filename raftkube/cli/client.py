"""A small synchronous client for the CLI: config, servers in turn, etcd's JSON API.

The CLI reads `servers` and `token` from `RK_CONFIG` or `~/.raftkube/config.yaml` (the
file `rk up` writes) and tries every server in turn until one answers.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import yaml


class ClientError(Exception):
    """Something the user must fix or know; the CLI prints it and exits non-zero."""


@dataclass
class Config:
    servers: list[str]
    token: str
    namespace: str = "default"  # the optional `namespace:`, for commands given no -n


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
    namespace = raw.get("namespace")
    return Config([s.rstrip("/") for s in servers], token,
                  namespace if isinstance(namespace, str) and namespace else "default")


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: str | None) -> bytes:
    return base64.b64decode(s or "")


class Client:
    def __init__(self, config: Config, *, timeout: float = 5.0) -> None:
        self.config = config
        self.timeout = timeout

    def call(self, path: str, body: dict[str, Any] | None = None, *,
             server: str | None = None, raw: bool = False) -> Any:
        """POST to the first server that answers. A server's error answer is final."""
        errors = []
        for url in [server] if server else self.config.servers:
            req = urllib.request.Request(
                url + path, data=json.dumps(body or {}).encode(), method="POST",
                headers={"Authorization": f"Bearer {self.config.token}",
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    data = resp.read()
                    return data if raw else json.loads(data)
            except urllib.error.HTTPError as e:
                if e.code == 503:
                    errors.append(f"{url}: unavailable")
                    continue
                try:
                    msg = json.loads(e.read()).get("message", "")
                except ValueError:
                    msg = e.reason
                raise ClientError(f"Error from server ({e.code}): {msg}") from None
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
        raise ClientError("no server answered: " + "; ".join(errors))

    def put(self, key: bytes, value: bytes) -> dict[str, Any]:
        result: dict[str, Any] = self.call("/v3/kv/put", {"key": b64(key), "value": b64(value)})
        return result

    def range(self, key: bytes, end: bytes = b"") -> list[tuple[bytes, bytes]]:
        body = {"key": b64(key)}
        if end:
            body["range_end"] = b64(end)
        resp = self.call("/v3/kv/range", body)
        return [(unb64(kv["key"]), unb64(kv.get("value"))) for kv in resp.get("kvs", [])]

    def status(self, server: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("/v3/maintenance/status", server=server)
        return result

    def members(self) -> list[dict[str, Any]]:
        members: list[dict[str, Any]] = self.call("/v3/cluster/member/list")["members"]
        return members
