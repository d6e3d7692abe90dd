"""The `pods/NAME/eviction` subresource: a `policy/v1` Eviction, which `kubectl drain`
posts for each pod it moves off a node (it looks for `pods/eviction` in discovery, and
deletes pods itself only where that is missing).

An eviction is a delete of the pod that a PodDisruptionBudget may refuse (429). raftkube
has no PodDisruptionBudgets, so an eviction of a pod is its delete, with the Eviction's
`deleteOptions` (grace period, preconditions, dry run), answered as Kubernetes answers an
accepted eviction: 201 and a Status of Success.
"""

from __future__ import annotations

from typing import Any

from raftkube.apiserver import status as stt

API_VERSIONS = ("policy/v1", "policy/v1beta1")
DISCOVERY = {"name": "pods/eviction", "singularName": "", "namespaced": True,
             "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}
ACCEPTED = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "code": 201}


def delete_options(name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    """The DeleteOptions of the Eviction `body` posted for pod `name`, once it is one."""
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if kind not in (None, "Eviction") or api_version not in (None, *API_VERSIONS):
        raise stt.bad_request(f"the body must be a policy/v1 Eviction, got {api_version} "
                              f"{kind}")
    meta = body.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != name:
        raise stt.bad_request("metadata.name: name in URL does not match name in Eviction "
                              "object")
    if meta.get("namespace") not in (None, "", namespace):
        raise stt.bad_request("metadata.namespace: the namespace of the Eviction does not "
                              "match the namespace sent on the request")
    options = body.get("deleteOptions")
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise stt.bad_request("deleteOptions: must be an object")
    return options
