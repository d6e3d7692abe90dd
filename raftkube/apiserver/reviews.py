"""Self reviews: who the caller is, and whether it may do something, asked of the server
as Kubernetes' clients ask: `kubectl auth whoami` posts an `authentication.k8s.io/v1`
SelfSubjectReview, `kubectl auth can-i` (and dashboards, before they offer an action) an
`authorization.k8s.io/v1` SelfSubjectAccessReview, and `kubectl auth can-i --list` a
SelfSubjectRulesReview.

This module owns the shapes: the discovery of the two groups, reading a review, and the
answer. The decision is the REST layer's own (`rest.Rest.allowed`), made by the same
rules that then admit or refuse the request itself, so a review never says yes to what
would be refused.

Users: the admin (every token of `--token-file`) is in `system:masters`, as Kubernetes'
cluster admin is; a node agent is `system:node:NAME` in `system:nodes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from raftkube.apiserver import auth
from raftkube.apiserver import status as stt

AUTHORIZATION = "authorization.k8s.io"
AUTHENTICATION = "authentication.k8s.io"
ACCESS = "selfsubjectaccessreviews"
RULES = "selfsubjectrulesreviews"
WHO = "selfsubjectreviews"
RESOURCES = {
    AUTHORIZATION: [{"name": ACCESS, "singularName": "selfsubjectaccessreview",
                     "namespaced": False, "kind": "SelfSubjectAccessReview",
                     "verbs": ["create"]},
                    {"name": RULES, "singularName": "selfsubjectrulesreview",
                     "namespaced": False, "kind": "SelfSubjectRulesReview",
                     "verbs": ["create"]}],
    AUTHENTICATION: [{"name": WHO, "singularName": "selfsubjectreview", "namespaced": False,
                      "kind": "SelfSubjectReview", "verbs": ["create"]}],
}
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")

Obj = dict[str, Any]


@dataclass(frozen=True)
class Access:
    """What a SelfSubjectAccessReview asks about (its `resourceAttributes`)."""

    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str


def route(path: str) -> tuple[str, str] | None:
    """(group, resource) of a review path; (group, "") of the group's discovery path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3 or parts[0] != "apis" or parts[1] not in RESOURCES or parts[2] != "v1":
        return None
    if len(parts) == 3:
        return parts[1], ""
    if len(parts) == 4 and parts[3] in {r["name"] for r in RESOURCES[parts[1]]}:
        return parts[1], parts[3]
    return parts[1], "?"  # under the group, but nothing served there


def discovery(group: str) -> Obj:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{group}/v1",
            "resources": [dict(r) for r in RESOURCES[group]]}


def groups(user: auth.User) -> list[str]:
    return ["system:masters" if user.admin else "system:nodes", "system:authenticated"]


def who(user: auth.User) -> Obj:
    return {"kind": "SelfSubjectReview", "apiVersion": f"{AUTHENTICATION}/v1",
            "metadata": {"creationTimestamp": None},
            "status": {"userInfo": {"username": user.name, "groups": groups(user)}}}


def _review(body: Obj, kind: str, group: str) -> None:
    if body.get("kind") not in (None, kind) or body.get("apiVersion") not in (None,
                                                                             f"{group}/v1"):
        raise stt.bad_request(f"the body must be a {group}/v1 {kind}, got "
                              f"{body.get('apiVersion')} {body.get('kind')}")


def access(body: Obj) -> Access | None:
    """The resource access a SelfSubjectAccessReview asks about; None when it asks about
    a non-resource URL (`nonResourceAttributes`)."""
    _review(body, "SelfSubjectAccessReview", AUTHORIZATION)
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise stt.bad_request("spec: Required value: resourceAttributes or "
                              "nonResourceAttributes")
    attrs = spec.get("resourceAttributes")
    other = spec.get("nonResourceAttributes")
    if (attrs is None) == (other is None):
        raise stt.bad_request("spec: Invalid value: exactly one of resourceAttributes and "
                              "nonResourceAttributes must be given")
    if attrs is None:
        if not isinstance(other, dict) or not isinstance(other.get("path", ""), str) \
                or not isinstance(other.get("verb", ""), str):
            raise stt.bad_request("spec.nonResourceAttributes: must be an object of path "
                                  "and verb strings")
        return None
    if not isinstance(attrs, dict):
        raise stt.bad_request("spec.resourceAttributes: must be an object")
    values = {}
    for field in ("verb", "group", "resource", "subresource", "namespace", "name"):
        value = attrs.get(field, "")
        if not isinstance(value, str):
            raise stt.bad_request(f"spec.resourceAttributes.{field}: must be a string")
        values[field] = value
    return Access(**values)


def answer(body: Obj, allowed: bool, reason: str) -> Obj:
    status: Obj = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return {"kind": "SelfSubjectAccessReview", "apiVersion": f"{AUTHORIZATION}/v1",
            "metadata": {"creationTimestamp": None}, "spec": body.get("spec"),
            "status": status}


# What a node may do without naming an object (`rest.Rest.authorize`); the rest is
# decided object by object, so a node's list is incomplete, as Kubernetes marks it.
_READ = ["get", "list", "watch"]
NODE_RULES = [
    {"verbs": _READ, "apiGroups": [""],
     "resources": ["endpoints", "events", "namespaces", "nodes", "pods", "services"]},
    {"verbs": _READ, "apiGroups": ["coordination.k8s.io"], "resources": ["leases"]},
    {"verbs": _READ, "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"]},
    {"verbs": ["create"], "apiGroups": [""], "resources": ["events"]},
]


def rules(user: auth.User, body: Obj) -> Obj:
    """A SelfSubjectRulesReview's answer (`kubectl auth can-i --list`)."""
    _review(body, "SelfSubjectRulesReview", AUTHORIZATION)
    if user.admin:
        status: Obj = {"resourceRules": [{"verbs": ["*"], "apiGroups": ["*"],
                                          "resources": ["*"]}],
                       "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                       "incomplete": False}
    else:
        status = {"resourceRules": [dict(r) for r in NODE_RULES], "nonResourceRules": [],
                  "incomplete": True,
                  "evaluationError": "a node's other rights are decided object by object"}
    return {"kind": "SelfSubjectRulesReview", "apiVersion": f"{AUTHORIZATION}/v1",
            "metadata": {"creationTimestamp": None}, "spec": body.get("spec") or {},
            "status": status}


def check_who(body: Obj) -> None:
    _review(body, "SelfSubjectReview", AUTHENTICATION)
