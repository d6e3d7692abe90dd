"""Kubernetes `Status` errors: one exception type the REST layer raises and renders.

Every error a REST client can see is an `ApiError` with Kubernetes' reason, HTTP code
and message wording, so kubectl-style clients print `Error from server (NotFound): ...`
without special cases.
"""

from __future__ import annotations

from typing import Any

from raftkube.api import validation


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, *,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{resource} "{name}" not found',
                    details={"name": name, "kind": resource.split(".")[0]})


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists',
                    details={"name": name, "kind": resource.split(".")[0]})


def conflict(resource: str, name: str) -> ApiError:
    return ApiError(
        409, "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details={"name": name, "kind": resource.split(".")[0]})


def fenced(message: str) -> ApiError:
    """A write stamped with the Raft term of a leader that has been replaced: 409, with a
    cause saying so, so that callers never retry it as an ordinary conflict."""
    return ApiError(409, "Conflict", message,
                    details={"causes": [{"reason": "StaleTerm", "message": message}]})


def is_fenced(error: ApiError) -> bool:
    return any(c.get("reason") == "StaleTerm" for c in error.details.get("causes") or [])


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: str, group: str, name: str, causes: list[validation.Cause]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    listed = ", ".join(str(c) for c in causes)
    text = listed if len(causes) == 1 else f"[{listed}]"
    return ApiError(
        422, "Invalid", f'{qualified} "{name}" is invalid: {text}',
        details={"name": name, "group": group, "kind": kind,
                 "causes": [{"reason": c.reason, "message": c.message, "field": c.field}
                            for c in causes]})


def bad_binding(name: str, causes: list[validation.Cause]) -> ApiError:
    """A pod binding whose body is wrong: 400, with the same field causes as Invalid."""
    listed = ", ".join(str(c) for c in causes)
    return ApiError(
        400, "BadRequest", f'Binding "{name}" is invalid: {listed}',
        details={"name": name, "kind": "Binding",
                 "causes": [{"reason": c.reason, "message": c.message, "field": c.field}
                            for c in causes]})


def forbidden(user: str, verb: str, resource: str, name: str, namespace: str) -> ApiError:
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    what = f'{resource} "{name}"' if name else resource
    return ApiError(403, "Forbidden",
                    f'{what} is forbidden: User "{user}" cannot {verb} resource '
                    f'"{resource.split(".")[0]}"{where}')


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def gone(message: str) -> ApiError:
    """410 for a resourceVersion or continue token older than the history window. The
    reason is "Gone", as this project's API contract says; Kubernetes 1.16+ says
    "Expired" for the same answer, and client-go treats the two alike (IsGone or
    IsResourceExpired → relist)."""
    return ApiError(410, "Gone", message)


def of_item(index: int, e: ApiError) -> ApiError:
    """`e`, raised for one item of a list sent in one request (an EventList), with its
    message naming the item (`items[i]: ...`) so the sender knows which to fix or drop.
    A message that names it already (validation causes do) is left as it is."""
    prefix = f"items[{index}]"
    if prefix in e.message:
        return e
    return ApiError(e.code, e.reason, f"{prefix}: {e.message}", details=e.details)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "RequestEntityTooLarge",
                    f"Request entity too large: limit is {limit}")


def unavailable(message: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", message)


def timeout(message: str) -> ApiError:
    """504 Timeout, Kubernetes' answer to a write whose outcome it does not know: it was
    proposed and no result came in time, so it may still be applied. Never 503, which
    says that nothing was done, and which a client may send to another master."""
    return ApiError(504, "Timeout", f"Timeout: {message}")
