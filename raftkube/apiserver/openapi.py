"""`/openapi/v2` and `/openapi/v3`: the server's API as OpenAPI, from the schema it
validates with (`api.schema`), so that kubectl can validate before it sends and
`kubectl explain` can describe fields.

Both are built once per process (the schema does not change while a server runs) and
served with an ETag (a hash of the document), answering a request that already has it
with 304. v3 is what kubectl 1.27+ reads: `/openapi/v3` lists a document per group
version (`api/v1`, `apis/apps/v1`...) at a URL carrying its hash, and each document
holds the group version's kinds (`components.schemas`, each marked with its
`x-kubernetes-group-version-kind`) and paths. The PATCH of every object names the
`fieldValidation` parameter: kubectl then leaves field validation to the server, which
does it (`rest.check_fields`), rather than validating by itself. v2 is answered in JSON;
a client asking only for v2's protobuf gets 406, on which client-go asks again for JSON.

The schema knows JSON types, not descriptions: fields have no description here.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from raftkube.api import kinds, schema
from raftkube.apiserver import version

V3_PREFIX = "/openapi/v3"


def _json_schema(s: schema.Schema) -> dict[str, Any]:
    if isinstance(s, schema.Obj):
        return {"type": "object",
                "properties": {k: _json_schema(v) for k, v in s.fields.items()}}
    if isinstance(s, schema.Arr):
        return {"type": "array", "items": _json_schema(s.items)}
    if isinstance(s, schema.MapOf):
        return {"type": "object", "additionalProperties": _json_schema(s.values)}
    leaves: dict[str, dict[str, Any]] = {
        schema.STRING: {"type": "string"},
        schema.INTEGER: {"type": "integer", "format": "int64"},
        schema.BOOLEAN: {"type": "boolean"},
        schema.NUMBER: {"type": "number", "format": "double"},
        schema.INT_OR_STRING: {"x-kubernetes-int-or-string": True},
        schema.QUANTITY: {"x-kubernetes-int-or-string": True},
        schema.OBJECT: {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    }
    return dict(leaves.get(s, {"x-kubernetes-preserve-unknown-fields": True}))


def definition_name(kind: kinds.Kind) -> str:
    """Kubernetes' name for a kind's schema: `io.k8s.api.apps.v1.Deployment`."""
    group = kind.group.split(".")[0] if kind.group else "core"
    return f"io.k8s.api.{group}.{kind.version}.{kind.kind}"


def _gvk(kind: kinds.Kind) -> dict[str, str]:
    return {"group": kind.group, "version": kind.version, "kind": kind.kind}


def kind_schema(kind: kinds.Kind) -> dict[str, Any]:
    out = _json_schema(schema.object_schema(kind.kind))
    out["x-kubernetes-group-version-kind"] = [_gvk(kind)]
    return out


FIELD_VALIDATION = {"name": "fieldValidation", "in": "query", "schema": {"type": "string"},
                    "description": "Ignore, Warn or Strict: what to do with unknown fields"}


def _paths(kind: kinds.Kind, ref: dict[str, Any]) -> dict[str, Any]:
    base = f"/apis/{kind.group}/{kind.version}" if kind.group else "/api/v1"
    where = f"{base}/namespaces/{{namespace}}/{kind.plural}" if kind.namespaced \
        else f"{base}/{kind.plural}"
    gvk = _gvk(kind)
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}

    def op(action: str, **extra: Any) -> dict[str, Any]:
        return {"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk,
                "responses": ok, **extra}

    return {
        where: {"get": op("list"), "post": op("post", parameters=[FIELD_VALIDATION])},
        where + "/{name}": {
            "get": op("get"), "put": op("put", parameters=[FIELD_VALIDATION]),
            "delete": op("delete"), "patch": op("patch", parameters=[FIELD_VALIDATION]),
            "parameters": [FIELD_VALIDATION]},
    }


def _group_versions() -> dict[str, list[kinds.Kind]]:
    out: dict[str, list[kinds.Kind]] = {}
    for k in kinds.KINDS:
        key = f"apis/{k.group}/{k.version}" if k.group else "api/v1"
        out.setdefault(key, []).append(k)
    return out


def _encode(doc: dict[str, Any]) -> tuple[bytes, str]:
    body = json.dumps(doc, sort_keys=True).encode()
    return body, hashlib.sha512(body).hexdigest()[:32].upper()


@functools.cache
def v3_documents() -> dict[str, tuple[bytes, str]]:
    """Per group version (`apis/apps/v1`): the v3 document's bytes and ETag."""
    out = {}
    for gv, members in _group_versions().items():
        schemas = {definition_name(k): kind_schema(k) for k in members}
        paths: dict[str, Any] = {}
        for k in members:
            paths.update(_paths(k, {"$ref": f"#/components/schemas/{definition_name(k)}"}))
        out[gv] = _encode({"openapi": "3.0.0",
                           "info": {"title": "Kubernetes", "version": version.GIT_VERSION},
                           "paths": paths, "components": {"schemas": schemas}})
    return out


@functools.cache
def v3_index() -> tuple[bytes, str]:
    return _encode({"paths": {gv: {"serverRelativeURL": f"{V3_PREFIX}/{gv}?hash={etag}"}
                              for gv, (_, etag) in v3_documents().items()}})


V2_FIELD_VALIDATION = {"name": "fieldValidation", "in": "query", "type": "string",
                       "uniqueItems": True}


def _v2_operation(op: dict[str, Any], name: str) -> dict[str, Any]:
    """A v3 operation in v2's words: parameters typed in place, responses by schema."""
    out = {k: v for k, v in op.items() if k not in ("responses", "parameters")}
    if "parameters" in op:
        out["parameters"] = [V2_FIELD_VALIDATION]
    out["responses"] = {"200": {"description": "OK",
                                "schema": {"$ref": f"#/definitions/{name}"}}}
    return out


@functools.cache
def v2_document() -> tuple[bytes, str]:
    definitions: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for k in kinds.KINDS:
        definitions[definition_name(k)] = kind_schema(k)
        for path, item in _paths(k, {"$ref": f"#/definitions/{definition_name(k)}"}).items():
            paths[path] = {method: _v2_operation(o, definition_name(k))
                           if method != "parameters" else [V2_FIELD_VALIDATION]
                           for method, o in item.items()}
    return _encode({"swagger": "2.0",
                    "info": {"title": "Kubernetes", "version": version.GIT_VERSION},
                    "paths": paths, "definitions": definitions})
