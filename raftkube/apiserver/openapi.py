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

Types come from `api.schema`, descriptions from `api.fielddocs`. In v3, shared
structures (ObjectMeta, PodSpec, Container...) and IntOrString and Quantity are components
under Kubernetes' names, referred to with `allOf: [{$ref}]` as Kubernetes does, so that
`kubectl explain` shows their names as types; v2 has everything inline.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from raftkube.api import fielddocs, kinds, schema
from raftkube.apiserver import version

V3_PREFIX = "/openapi/v3"


# Shared structures, served in v3 as components under Kubernetes' names, which
# `kubectl explain` shows as their type (`containers <[]Container>`). v2 has them inline.
NAMED: tuple[tuple[schema.Schema, str], ...] = (
    (schema.METADATA, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"),
    (schema.OWNER_REFERENCE, "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference"),
    (schema.LABEL_SELECTOR, "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"),
    (schema.POD_TEMPLATE, "io.k8s.api.core.v1.PodTemplateSpec"),
    (schema.POD_SPEC, "io.k8s.api.core.v1.PodSpec"),
    (schema.CONTAINER, "io.k8s.api.core.v1.Container"),
    (schema.PROBE, "io.k8s.api.core.v1.Probe"),
    (schema.VOLUME, "io.k8s.api.core.v1.Volume"),
    (schema.TOLERATION, "io.k8s.api.core.v1.Toleration"),
)
_NAMES = {id(s): name for s, name in NAMED}  # by identity: the schema's own constants
LEAF_NAMES = {schema.INT_OR_STRING: "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
              schema.QUANTITY: "io.k8s.apimachinery.pkg.api.resource.Quantity"}
LEAF_DESCRIPTIONS = {
    schema.INT_OR_STRING: "An integer or a string: a port's number or name, a count or a "
                          "percentage.",
    schema.QUANTITY: "An amount of a resource: a number with an optional suffix, such as "
                     "`100m` (of a CPU) or `128Mi` (bytes).",
}
LEAVES: dict[str, dict[str, Any]] = {
    schema.STRING: {"type": "string"},
    schema.INTEGER: {"type": "integer", "format": "int64"},
    schema.BOOLEAN: {"type": "boolean"},
    schema.NUMBER: {"type": "number", "format": "double"},
    schema.INT_OR_STRING: {"x-kubernetes-int-or-string": True},
    schema.QUANTITY: {"x-kubernetes-int-or-string": True},
    schema.OBJECT: {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
}


class _Converter:
    """The schema as OpenAPI, with `fielddocs`' descriptions. With `ref_prefix` (v3),
    shared structures become components referred to by `$ref`, gathered in
    `components`; without (v2), everything is inline."""

    def __init__(self, ref_prefix: str | None) -> None:
        self.ref_prefix = ref_prefix
        self.components: dict[str, Any] = {}

    def convert(self, s: schema.Schema, where: str) -> dict[str, Any]:
        """`s`, whose fields `fielddocs` describes under `where`."""
        name = _NAMES.get(id(s)) if isinstance(s, schema.Obj) else \
            LEAF_NAMES.get(s) if isinstance(s, str) else None
        if name is None:
            return self._body(s, where)
        if self.ref_prefix is None:
            return self._body(s, name.rsplit(".", 1)[1])
        if name not in self.components:
            self.components[name] = {}  # taken, should a structure ever hold itself
            body = self._body(s, name.rsplit(".", 1)[1])
            if isinstance(s, str):
                body["description"] = LEAF_DESCRIPTIONS[s]
            self.components[name] = body
        return {"allOf": [{"$ref": self.ref_prefix + name}]}

    def _body(self, s: schema.Schema, where: str) -> dict[str, Any]:
        if isinstance(s, schema.Obj):
            properties = {}
            for key, value in s.fields.items():
                prop = self.convert(value, f"{where}.{key}")
                text = fielddocs.field(where, key)
                properties[key] = {**prop, "description": text} if text else prop
            return {"type": "object", "properties": properties}
        if isinstance(s, schema.Arr):
            return {"type": "array", "items": self.convert(s.items, where)}
        if isinstance(s, schema.MapOf):
            return {"type": "object", "additionalProperties": self.convert(s.values, where)}
        return dict(LEAVES.get(s, {"x-kubernetes-preserve-unknown-fields": True}))


def definition_name(kind: kinds.Kind) -> str:
    """Kubernetes' name for a kind's schema: `io.k8s.api.apps.v1.Deployment`."""
    group = kind.group.split(".")[0] if kind.group else "core"
    return f"io.k8s.api.{group}.{kind.version}.{kind.kind}"


def _gvk(kind: kinds.Kind) -> dict[str, str]:
    return {"group": kind.group, "version": kind.version, "kind": kind.kind}


def kind_schema(kind: kinds.Kind, converter: _Converter) -> dict[str, Any]:
    out = converter.convert(schema.object_schema(kind.kind), kind.kind)
    text = fielddocs.kind(kind.kind)
    if text:
        out["description"] = text
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
        converter = _Converter("#/components/schemas/")
        schemas = {definition_name(k): kind_schema(k, converter) for k in members}
        schemas.update(converter.components)
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
    converter = _Converter(None)
    for k in kinds.KINDS:
        definitions[definition_name(k)] = kind_schema(k, converter)
        for path, item in _paths(k, {"$ref": f"#/definitions/{definition_name(k)}"}).items():
            paths[path] = {method: _v2_operation(o, definition_name(k))
                           if method != "parameters" else [V2_FIELD_VALIDATION]
                           for method, o in item.items()}
    return _encode({"swagger": "2.0",
                    "info": {"title": "Kubernetes", "version": version.GIT_VERSION},
                    "paths": paths, "definitions": definitions})
