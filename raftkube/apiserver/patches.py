"""The patch types PATCH takes, by Content-Type, and how each is applied.

- `application/merge-patch+json`: RFC 7386 (`api.merge`); lists are replaced whole.
  `application/json` is read as one too, as raftkube always has.
- `application/json-patch+json`: RFC 6902 operations (`api.jsonpatch`).
- `application/strategic-merge-patch+json`: Kubernetes' strategic merge patch
  (`api.strategic`), what kubectl's `patch` and `apply` and the Python client send.
Anything else (server-side apply's `application/apply-patch+yaml` among them) is a 415
that names the accepted types, as Kubernetes answers. A patch that is not well formed is
a 400 naming the field at fault; a JSON patch that does not apply (a missing path, a
failed `test`) is a 422, as in Kubernetes; one that asks for too much work (more than
10,000 operations, or copies past a bound) is a 413. Either way nothing is written.
"""

from __future__ import annotations

from typing import Any

from raftkube.api import jsonpatch, merge, strategic
from raftkube.apiserver import status as stt

TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json": "merge",
}
ACCEPTED = ("application/json-patch+json", "application/merge-patch+json",
            "application/strategic-merge-patch+json")


def type_of(content_type: str) -> str:
    """The patch type a Content-Type names; 415 for any other."""
    found = TYPES.get(content_type)
    if found is None:
        raise stt.ApiError(415, "UnsupportedMediaType",
                           "the body of the request was in an unknown format "
                           f"({content_type or 'no Content-Type'}) - accepted media types "
                           "include: " + ", ".join(ACCEPTED))
    return found


def check(patch: Any, patch_type: str) -> None:
    """The patch's shape, before anything is read: a 400 naming what is wrong."""
    if patch_type == "json":
        try:
            jsonpatch.check(patch)
        except jsonpatch.TooLarge as e:
            raise stt.ApiError(413, "RequestEntityTooLarge", e.message) from None
        except jsonpatch.PatchError as e:
            raise stt.bad_request(f"invalid JSON patch: {e.message}") from None
    elif not isinstance(patch, dict):
        what = "a merge patch" if patch_type == "merge" else "a strategic merge patch"
        raise stt.bad_request(f"the patch must be a JSON object ({what}), got "
                              f"{type(patch).__name__}")


def apply(base: dict[str, Any], patch: Any, patch_type: str, kind: str) -> Any:
    """`patch` applied to a copy of `base`, an object of `kind`."""
    try:
        if patch_type == "json":
            return jsonpatch.apply(base, patch)
        if patch_type == "strategic":
            return strategic.apply(base, patch, kind)
    except jsonpatch.TooLarge as e:
        raise stt.ApiError(413, "RequestEntityTooLarge", e.message) from None
    except jsonpatch.NotApplicable as e:
        raise stt.ApiError(422, "Invalid", f"the JSON patch does not apply: {e.message}"
                           ) from None
    except jsonpatch.PatchError as e:
        raise stt.bad_request(f"invalid {'JSON' if patch_type == 'json' else 'strategic merge'}"
                              f" patch: {e.message}") from None
    return merge.merge_patch(base, patch)


def resource_version(obj: Any) -> Any:
    """The resourceVersion a patched object or a Scale names, if any: a precondition."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return meta.get("resourceVersion") if isinstance(meta, dict) else None
