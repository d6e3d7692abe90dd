"""The client's errors: one small hierarchy that every caller of the APIs handles.

- `ClientError`: something the user or the caller must know or fix; the CLI prints it.
- `NoServer`: no master answered within the wait (every one refused, was unreachable,
  or could not serve right now). Nothing was applied.
- `UnknownOutcome`: a write was sent and no answer came. It may or may not have been
  applied; it is never sent again by the client, because a second copy could apply twice.
- `Unauthorized`: the token was refused.
- `ApiError`: a REST server's answer, a Kubernetes `Status` (code, reason, message,
  details with field causes). `EtcdError`: a `/v3` server's answer (grpc code, message).
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Something the user must fix or know; the CLI prints it and exits non-zero."""


class NoServer(ClientError):
    """No server answered within the wait; the request was not applied anywhere."""


class UnknownOutcome(ClientError):
    """A write was sent but its answer never came: it may or may not have been applied."""


class Unauthorized(ClientError):
    """The server refused the token: not one object's failure, the whole command's."""

    def __init__(self) -> None:
        super().__init__("You must be logged in to the server (Unauthorized)")


class ApiError(ClientError):
    """A REST server's error answer, a Kubernetes `Status`: code, reason, message."""

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


class EtcdError(ClientError):
    """A `/v3` server's error answer: grpc-gateway's `code` and `message`."""

    def __init__(self, http_status: int, body: dict[str, Any]) -> None:
        self.http_status = http_status
        self.code = int(body.get("code") or 0)
        self.message = str(body.get("message") or body.get("error") or "")
        super().__init__(f"Error from server ({http_status}): {self.message}")


def format_error(error: ApiError, *, context: str = "") -> str:
    """kubectl's wording: `Error from server (NotFound): [context: ]pods "x" not found`.

    An Invalid answer reads as kubectl prints it, from the Status's details: `The
    Deployment "front" is invalid: spec.replicas: ...`, one `* field: problem` line each
    when there are several (kubectl drops the context there too)."""
    if error.reason == "Invalid" and error.code == 422:
        return _invalid(error.details)
    message = f"{context}: {error.message}" if context else error.message
    if error.reason:
        return f"Error from server ({error.reason}): {message}"
    return f"Error from server: {message}"


def _invalid(details: dict[str, Any]) -> str:
    kind, name = details.get("kind") or "", details.get("name") or ""
    head = f'The {kind} "{name}" is invalid' if kind or name else "The request is invalid"
    problems = [f"{c['field']}: {c.get('message', '')}" if c.get("field")
                else str(c.get("message", ""))
                for c in details.get("causes") or [] if isinstance(c, dict)]
    if not problems:
        return head
    if len(problems) == 1:
        return f"{head}: {problems[0]}"
    return f"{head}: \n" + "\n".join(f"* {p}" for p in problems)


def is_reason(error: BaseException, *reasons: str) -> bool:
    """Whether `error` is a Status answer with one of `reasons` (`NotFound`, `Conflict`...)."""
    return isinstance(error, ApiError) and error.reason in reasons
