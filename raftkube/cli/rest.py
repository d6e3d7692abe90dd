"""A small synchronous client for the Kubernetes-style REST API that every master serves.

It owns paths, verbs and error answers, nothing else: `kubectl.py` decides what to send
and `printers.py` how to show what comes back. It is synchronous and stdlib-only
(urllib), like `client.py`, because a CLI run makes a handful of requests in sequence.

Every master serves every request, so a request goes to the servers in turn until one
answers: a refused or dropped connection and a 503 (a master that cannot reach a quorum
right now) move on to the next server, while any other answer of a server (a 404, a 409,
a 422...) is final. The server that answered last is tried first next time, so that one
dead master costs one timeout per run rather than one per request.

Errors form the CLI's one hierarchy: `client.ClientError` for what the user must fix
(config, no server answered) and its subclass `RestError` for a server's `Status` answer.
"""

from __future__ import annotations

import builtins
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from raftkube.api import kinds
from raftkube.cli import client as cl

MERGE_PATCH = "application/merge-patch+json"
DRY_RUN = {"dryRun": "All"}  # the server checks everything and writes nothing


class RestError(cl.ClientError):
    """A server's error answer, a Kubernetes `Status` object: code, reason, message."""

    def __init__(self, status: dict[str, Any]) -> None:
        self.status = status
        self.code = int(status.get("code") or 0)
        self.reason = str(status.get("reason") or "")
        self.message = str(status.get("message") or "")
        super().__init__(self.message)

    @property
    def details(self) -> dict[str, Any]:
        details = self.status.get("details")
        return details if isinstance(details, dict) else {}

    def __str__(self) -> str:
        return format_error(self)


class Unauthorized(cl.ClientError):
    """The server refused the token: not one object's failure, the whole command's."""

    def __init__(self) -> None:
        super().__init__("You must be logged in to the server (Unauthorized)")


def format_error(error: RestError, *, context: str = "") -> str:
    """kubectl's wording: `Error from server (NotFound): [context: ]pods "x" not found`."""
    message = f"{context}: {error.message}" if context else error.message
    if error.reason:
        return f"Error from server ({error.reason}): {message}"
    return f"Error from server: {message}"


def path_of(kind: kinds.Kind, namespace: str | None = None, name: str | None = None) -> str:
    """The REST path of a kind's collection or object; no namespace lists across all."""
    path = f"/apis/{kind.group}/{kind.version}" if kind.group else f"/api/{kind.version}"
    if kind.namespaced and namespace:
        path += "/namespaces/" + _quote(namespace)
    path += "/" + kind.plural
    if name:
        path += "/" + _quote(name)
    return path


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _warning_text(header: str) -> str:
    """`299 - "unknown field \\"x\\""` → `unknown field "x"` (RFC 7234's warn-value)."""
    code, _, rest = header.partition(" - ")
    try:
        text = json.loads(rest)
    except ValueError:
        return header
    return text if isinstance(text, str) and code.strip().isdigit() else header


def _status_in(data: bytes) -> dict[str, Any] | None:
    """The Kubernetes `Status` an error answer carries; None when it carries none (the
    answer came from something that is not an API server)."""
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("kind") == "Status" else None


class RestClient:
    def __init__(self, config: cl.Config, *, timeout: float = 15.0) -> None:
        self.servers = list(config.servers)
        self.token = config.token
        self.timeout = timeout
        self.warnings: list[str] = []  # from the answers' Warning headers, oldest first
        self.field_validation = "Strict"  # what create and patch ask the server for

    def request(self, method: str, path: str, *, body: Any = None,
                query: dict[str, str] | None = None,
                content_type: str = "application/json") -> Any:
        """Send one request to the first server that answers; return its JSON answer."""
        if query:
            path += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = content_type
        errors = []
        for url in list(self.servers):
            req = urllib.request.Request(url + path, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    raw = resp.read()
                    self.warnings += [_warning_text(w) for w in resp.headers.get_all("Warning")
                                      or []]
            except urllib.error.HTTPError as e:
                with e:
                    answer = e.read()
                status = _status_in(answer)
                if e.code == 503:
                    message = (status or {}).get("message") or \
                        answer.decode(errors="replace").strip() or str(e.reason)
                    errors.append(f"{url}: unavailable ({message})")
                    continue
                if status is None:
                    # Not a raftkube (or Kubernetes) answer: something else on that address.
                    errors.append(f"{url}: HTTP {e.code} without a Status: not an API server")
                    continue
                self._prefer(url)
                if e.code == 401:
                    raise Unauthorized from None
                status.setdefault("code", e.code)
                raise RestError(status) from None
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                # urllib wraps what fails while connecting and sending in URLError; a bare
                # timeout came while waiting for the answer to a request that was sent.
                if method != "GET" and isinstance(e, TimeoutError):
                    # The write may have been committed there: sending it to the next
                    # server could apply it twice, or answer AlreadyExists for our own.
                    raise cl.ClientError(
                        f"{url} did not answer {method} {path} within {self.timeout:g}s; "
                        "it may or may not have been applied") from None
                errors.append(f"{url}: {reason}")
                continue
            self._prefer(url)
            try:
                return json.loads(raw) if raw else {}
            except ValueError:
                raise cl.ClientError(f"{url} answered {method} {path} with something "
                                     "that is not JSON") from None
        raise cl.ClientError("no server answered: " + "; ".join(errors))

    def _prefer(self, url: str) -> None:
        self.servers.remove(url)
        self.servers.insert(0, url)

    # ---- verbs ------------------------------------------------------------------------

    def get(self, kind: kinds.Kind, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = self.request("GET", path_of(kind, namespace, name))
        return obj

    def list(self, kind: kinds.Kind, namespace: str | None, *, label_selector: str = "",
             field_selector: str = "", limit: int = 0, continue_token: str = ""
             ) -> dict[str, Any]:
        """One page of a list (a `{Kind}List`); namespace None lists across namespaces."""
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if limit:
            query["limit"] = str(limit)
        if continue_token:
            query["continue"] = continue_token
        answer: dict[str, Any] = self.request("GET", path_of(kind, namespace), query=query)
        return answer

    def list_all(self, kind: kinds.Kind, namespace: str | None, *, label_selector: str = "",
                 field_selector: str = "", chunk: int = 500
                 ) -> builtins.list[dict[str, Any]]:
        """Every item of a list, fetched in pages of `chunk` (kubectl's --chunk-size)."""
        items: builtins.list[dict[str, Any]] = []
        token = ""
        while True:
            page = self.list(kind, namespace, label_selector=label_selector,
                             field_selector=field_selector, limit=chunk, continue_token=token)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def create(self, kind: kinds.Kind, namespace: str, obj: dict[str, Any], *,
               dry_run: bool = False) -> dict[str, Any]:
        created: dict[str, Any] = self.request("POST", path_of(kind, namespace), body=obj,
                                               query=self._write_query(dry_run))
        return created

    def _write_query(self, dry_run: bool) -> dict[str, str]:
        query = {"fieldValidation": self.field_validation}
        return {**query, **DRY_RUN} if dry_run else query

    def patch(self, kind: kinds.Kind, namespace: str, name: str,
              patch: dict[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): null deletes a field, objects merge, lists replace."""
        patched: dict[str, Any] = self.request("PATCH", path_of(kind, namespace, name),
                                               body=patch, content_type=MERGE_PATCH,
                                               query=self._write_query(dry_run))
        return patched

    def delete(self, kind: kinds.Kind, namespace: str, name: str, *,
               propagation: str = "") -> dict[str, Any]:
        query = {"propagationPolicy": propagation} if propagation else None
        answer: dict[str, Any] = self.request("DELETE", path_of(kind, namespace, name),
                                              query=query)
        return answer
