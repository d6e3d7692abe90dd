"""Kubernetes' protobuf bodies, read for the kinds that kubectl's typed clients send.

kubectl 1.32 and later send the objects of `kubectl create configmap|secret|namespace|
deployment|service|job` and `kubectl run`, and the reviews of `kubectl auth can-i|whoami`,
as
`application/vnd.kubernetes.protobuf`, not JSON, and do not fall back to JSON when
refused. The body is Kubernetes' envelope: the magic `k8s\\0`, then a
`runtime.Unknown` message (field 1 the TypeMeta, apiVersion and kind; field 2 the
object's own message). This reads the protobuf wire format (varints and
length-delimited fields are all these messages use) against the field numbers of the
messages those commands send, taken from Kubernetes' API (k8s.io/api's
generated.proto), and gives the object as the JSON it stands for: the same dict a JSON
body would have given.

Go's protobuf encoding writes every non-pointer field, set or not (`""`, `0`, `{}`), where
its JSON leaves them out (`omitempty`), so empty values are dropped here, except for the
pointer fields (`replicas: 0` is sent only when set). A field this table does not know,
holding anything but an empty value, is refused rather than dropped: nothing a client
sent is silently lost. So is any other kind: those clients send JSON.

Two refusals, told apart: `Unsupported` (415) for a body of a kind or an encoding not
read here, and `Malformed` (400) for one that is not a well-formed message at all (a
truncated field, a field of the wrong wire type, text that is not UTF-8, a time out of
range), naming the field at fault.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass
from typing import Any

MEDIA_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
# Fields a body may hold, all messages together: the JSON bodies' bound on values
# (`inputs.MAX_JSON_VALUES`), so that a body of tiny fields cannot hold the event loop.
MAX_FIELDS = 100_000


class Unsupported(Exception):
    """A protobuf body we cannot read faithfully: the message says what and why."""


class Malformed(Unsupported):
    """A protobuf body that is not a well-formed message: a 400, not a 415."""


@dataclass(frozen=True)
class F:
    name: str
    type: str  # string, int, bool, bytes, map, bytesmap, quantitymap, message, time,
    # intorstring
    message: str = ""  # the message's name, for message fields
    repeated: bool = False
    pointer: bool = False  # kept when zero: Go sends it only when set


S = "string"
MESSAGES: dict[str, dict[int, F]] = {
    "TypeMeta": {1: F("apiVersion", S), 2: F("kind", S)},
    "ObjectMeta": {
        1: F("name", S), 2: F("generateName", S), 3: F("namespace", S), 4: F("selfLink", S),
        5: F("uid", S), 6: F("resourceVersion", S), 7: F("generation", "int"),
        8: F("creationTimestamp", "time"), 9: F("deletionTimestamp", "time"),
        10: F("deletionGracePeriodSeconds", "int", pointer=True),
        11: F("labels", "map"), 12: F("annotations", "map"),
        14: F("finalizers", S, repeated=True)},
    "ConfigMap": {1: F("metadata", "message", "ObjectMeta"), 2: F("data", "map"),
                  3: F("binaryData", "bytesmap"), 4: F("immutable", "bool", pointer=True)},
    "Secret": {1: F("metadata", "message", "ObjectMeta"), 2: F("data", "bytesmap"),
               3: F("type", S)},
    "Namespace": {1: F("metadata", "message", "ObjectMeta"),
                  2: F("spec", "message", "NamespaceSpec"),
                  3: F("status", "message", "NamespaceStatus")},
    "NamespaceSpec": {1: F("finalizers", S, repeated=True)},
    "NamespaceStatus": {1: F("phase", S)},
    "Deployment": {1: F("metadata", "message", "ObjectMeta"),
                   2: F("spec", "message", "DeploymentSpec"),
                   3: F("status", "message", "DeploymentStatus")},
    "DeploymentSpec": {
        1: F("replicas", "int", pointer=True), 2: F("selector", "message", "LabelSelector"),
        3: F("template", "message", "PodTemplateSpec"),
        4: F("strategy", "message", "DeploymentStrategy"), 5: F("minReadySeconds", "int"),
        6: F("revisionHistoryLimit", "int", pointer=True), 7: F("paused", "bool"),
        9: F("progressDeadlineSeconds", "int", pointer=True)},
    "DeploymentStrategy": {1: F("type", S)},
    "DeploymentStatus": {1: F("observedGeneration", "int"), 2: F("replicas", "int"),
                         3: F("updatedReplicas", "int"), 4: F("availableReplicas", "int"),
                         5: F("unavailableReplicas", "int"), 7: F("readyReplicas", "int"),
                         8: F("collisionCount", "int", pointer=True)},
    "LabelSelector": {1: F("matchLabels", "map"),
                      2: F("matchExpressions", "message", "LabelSelectorRequirement",
                           repeated=True)},
    "LabelSelectorRequirement": {1: F("key", S), 2: F("operator", S),
                                 3: F("values", S, repeated=True)},
    "PodTemplateSpec": {1: F("metadata", "message", "ObjectMeta"),
                        2: F("spec", "message", "PodSpec")},
    "PodSpec": {
        2: F("containers", "message", "Container", repeated=True),
        3: F("restartPolicy", S), 4: F("terminationGracePeriodSeconds", "int", pointer=True),
        6: F("dnsPolicy", S), 7: F("nodeSelector", "map"), 8: F("serviceAccountName", S),
        9: F("serviceAccount", S), 10: F("nodeName", S), 11: F("hostNetwork", "bool"),
        12: F("hostPID", "bool"), 13: F("hostIPC", "bool"), 16: F("hostname", S),
        17: F("subdomain", S), 19: F("schedulerName", S), 24: F("priorityClassName", S)},
    "Container": {
        1: F("name", S), 2: F("image", S), 3: F("command", S, repeated=True),
        4: F("args", S, repeated=True), 5: F("workingDir", S),
        6: F("ports", "message", "ContainerPort", repeated=True),
        7: F("env", "message", "EnvVar", repeated=True),
        8: F("resources", "message", "ResourceRequirements"),
        13: F("terminationMessagePath", S), 14: F("imagePullPolicy", S),
        16: F("stdin", "bool"), 17: F("stdinOnce", "bool"), 18: F("tty", "bool"),
        20: F("terminationMessagePolicy", S)},
    "ContainerPort": {1: F("name", S), 2: F("hostPort", "int"), 3: F("containerPort", "int"),
                      4: F("protocol", S), 5: F("hostIP", S)},
    "EnvVar": {1: F("name", S), 2: F("value", S)},
    "ResourceRequirements": {1: F("limits", "quantitymap"), 2: F("requests", "quantitymap")},
    # kubectl create service (clusterip, nodeport, loadbalancer) and create job.
    "Service": {1: F("metadata", "message", "ObjectMeta"),
                2: F("spec", "message", "ServiceSpec"),
                3: F("status", "message", "ServiceStatus")},
    "ServiceSpec": {
        1: F("ports", "message", "ServicePort", repeated=True), 2: F("selector", "map"),
        3: F("clusterIP", S), 4: F("type", S), 5: F("externalIPs", S, repeated=True),
        7: F("sessionAffinity", S), 8: F("loadBalancerIP", S),
        9: F("loadBalancerSourceRanges", S, repeated=True), 10: F("externalName", S),
        11: F("externalTrafficPolicy", S), 12: F("healthCheckNodePort", "int"),
        13: F("publishNotReadyAddresses", "bool"), 17: F("ipFamilyPolicy", S, pointer=True),
        18: F("clusterIPs", S, repeated=True), 19: F("ipFamilies", S, repeated=True),
        20: F("allocateLoadBalancerNodePorts", "bool", pointer=True),
        21: F("loadBalancerClass", S, pointer=True),
        22: F("internalTrafficPolicy", S, pointer=True),
        23: F("trafficDistribution", S, pointer=True)},
    "ServicePort": {1: F("name", S), 2: F("protocol", S), 3: F("port", "int"),
                    4: F("targetPort", "intorstring"), 5: F("nodePort", "int"),
                    6: F("appProtocol", S, pointer=True)},
    "ServiceStatus": {1: F("loadBalancer", "message", "LoadBalancerStatus")},
    "LoadBalancerStatus": {1: F("ingress", "message", "LoadBalancerIngress", repeated=True)},
    "LoadBalancerIngress": {1: F("ip", S), 2: F("hostname", S)},
    "Job": {1: F("metadata", "message", "ObjectMeta"), 2: F("spec", "message", "JobSpec"),
            3: F("status", "message", "JobStatus")},
    "JobSpec": {
        1: F("parallelism", "int", pointer=True), 2: F("completions", "int", pointer=True),
        3: F("activeDeadlineSeconds", "int", pointer=True),
        4: F("selector", "message", "LabelSelector"),
        5: F("manualSelector", "bool", pointer=True),
        6: F("template", "message", "PodTemplateSpec"),
        7: F("backoffLimit", "int", pointer=True),
        8: F("ttlSecondsAfterFinished", "int", pointer=True),
        9: F("completionMode", S, pointer=True), 10: F("suspend", "bool", pointer=True),
        12: F("backoffLimitPerIndex", "int", pointer=True),
        13: F("maxFailedIndexes", "int", pointer=True),
        14: F("podReplacementPolicy", S, pointer=True), 15: F("managedBy", S, pointer=True)},
    "JobStatus": {2: F("startTime", "time"), 3: F("completionTime", "time"),
                  4: F("active", "int"), 5: F("succeeded", "int"), 6: F("failed", "int"),
                  7: F("completedIndexes", S), 9: F("ready", "int", pointer=True),
                  11: F("terminating", "int", pointer=True)},
    # kubectl auth can-i, can-i --list and whoami (authorization and authentication v1).
    "SelfSubjectAccessReview": {1: F("metadata", "message", "ObjectMeta"),
                                2: F("spec", "message", "SelfSubjectAccessReviewSpec"),
                                3: F("status", "message", "SubjectAccessReviewStatus")},
    "SelfSubjectAccessReviewSpec": {
        1: F("resourceAttributes", "message", "ResourceAttributes"),
        2: F("nonResourceAttributes", "message", "NonResourceAttributes")},
    "ResourceAttributes": {1: F("namespace", S), 2: F("verb", S), 3: F("group", S),
                           4: F("version", S), 5: F("resource", S), 6: F("subresource", S),
                           7: F("name", S)},
    "NonResourceAttributes": {1: F("path", S), 2: F("verb", S)},
    "SubjectAccessReviewStatus": {1: F("allowed", "bool"), 2: F("reason", S),
                                  3: F("evaluationError", S), 4: F("denied", "bool")},
    "SelfSubjectRulesReview": {1: F("metadata", "message", "ObjectMeta"),
                               2: F("spec", "message", "SelfSubjectRulesReviewSpec"),
                               3: F("status", "message", "SubjectRulesReviewStatus")},
    "SelfSubjectRulesReviewSpec": {1: F("namespace", S)},
    "SubjectRulesReviewStatus": {3: F("incomplete", "bool"), 4: F("evaluationError", S)},
    "SelfSubjectReview": {1: F("metadata", "message", "ObjectMeta"),
                          2: F("status", "message", "SelfSubjectReviewStatus")},
    "SelfSubjectReviewStatus": {1: F("userInfo", "message", "UserInfo")},
    "UserInfo": {1: F("username", S), 2: F("uid", S), 3: F("groups", S, repeated=True)},
}
# The kinds whose bodies are read, by (apiVersion, kind).
KINDS = {("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "Namespace"), ("v1", "Service"),
         ("apps/v1", "Deployment"), ("batch/v1", "Job"),
         ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
         ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
         ("authentication.k8s.io/v1", "SelfSubjectReview")}


def _varint(b: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise Malformed("protobuf: a truncated or overlong varint")
        byte = b[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if value >= 1 << 64:
                raise Malformed("protobuf: a varint overflows 64 bits")
            return value, i


def _fields(b: bytes, budget: list[int]) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value): an int for varints, bytes for the rest.
    `budget` holds the fields the body may still hold."""
    out: list[tuple[int, int, Any]] = []
    i = 0
    while i < len(b):
        budget[0] -= 1
        if budget[0] < 0:
            raise Unsupported(f"protobuf: the body holds more than {MAX_FIELDS} fields")
        key, i = _varint(b, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(b, i)
            out.append((number, wire, value))
        elif wire == 2:
            size, i = _varint(b, i)
            if i + size > len(b):
                raise Malformed(f"protobuf: field {number} runs past the end of the body")
            out.append((number, wire, b[i:i + size]))
            i += size
        elif wire in (1, 5):  # fixed64, fixed32: valid, but no field read here has them
            raise Unsupported(f"protobuf: wire type {wire} (field {number}) is not read here")
        else:  # 3 and 4 (groups, deprecated) and 6, 7 (none such)
            raise Malformed(f"protobuf: field {number} has the invalid wire type {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _empty(value: Any) -> bool:
    return value in ("", 0, False, b"") or value == {} or value == []


def _text(value: bytes, what: str) -> str:
    """A string field's bytes as text; Malformed naming `what` if they are not UTF-8."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise Malformed(f"protobuf: {what} is not valid UTF-8") from None


def _entry(raw: bytes, what: str, budget: list[int]) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, v in _fields(raw, budget):
        if number == 1 and isinstance(v, bytes):
            key = _text(v, f"a key of {what}")
        elif number == 2 and isinstance(v, bytes):
            value = v
        else:
            raise Malformed(f"protobuf: a malformed entry of {what}")
    return key, value


def decode_message(raw: bytes, name: str, budget: list[int]) -> dict[str, Any]:
    schema = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, wire, value in _fields(raw, budget):
        f = schema.get(number)
        if f is None:
            if _empty(value):
                continue  # Go's encoding of a field left unset
            raise Unsupported(f"protobuf: field {number} of {name} is not read here; "
                              "send the object as JSON")
        where = f"field {number} of {name} ({f.name})"
        if f.type in ("map", "bytesmap", "quantitymap"):
            if wire != 2:
                raise Malformed(f"protobuf: {where} must be a map entry (wire type 2)")
            key, data = _entry(value, where, budget)
            if f.type == "map":
                entry: Any = _text(data, f"a value of {where}")
            elif f.type == "bytesmap":
                entry = base64.b64encode(data).decode()
            else:
                entry = _quantity(data, where, budget)
            out.setdefault(f.name, {})[key] = entry
            continue
        if f.type == "intorstring":
            if wire != 2:
                raise Malformed(f"protobuf: {where} must be a message (wire type 2)")
            decoded: Any = _int_or_string(value, where, budget)
        elif f.type == "message" or f.type == "time":
            if wire != 2:
                raise Malformed(f"protobuf: {where} must be a message (wire type 2)")
            decoded = _time(value, where, budget) if f.type == "time" \
                else decode_message(value, f.message, budget)
        elif f.type == S:
            if wire != 2:
                raise Malformed(f"protobuf: {where} must be a string (wire type 2)")
            decoded = _text(value, where)
        elif f.type == "int":
            if wire != 0:
                raise Malformed(f"protobuf: {where} must be a varint (wire type 0)")
            decoded = _signed(value)
        elif f.type == "bool":
            if wire != 0:
                raise Malformed(f"protobuf: {where} must be a bool (wire type 0)")
            decoded = bool(value)
        else:
            if wire != 2:
                raise Malformed(f"protobuf: {where} must be bytes (wire type 2)")
            decoded = base64.b64encode(value).decode()
        if f.repeated:
            out.setdefault(f.name, []).append(decoded)
        elif f.pointer or not _empty(decoded):
            out[f.name] = decoded
    return out


def _int_or_string(raw: bytes, where: str, budget: list[int]) -> int | str:
    """An IntOrString (type 1 = string, else int; intVal, strVal)."""
    kind, number, text = 0, 0, ""
    for field, wire, v in _fields(raw, budget):
        if field == 1 and wire == 0:
            kind = v
        elif field == 2 and wire == 0:
            number = _signed(v)
        elif field == 3 and wire == 2:
            text = _text(v, f"the string of {where}")
        elif not _empty(v):
            raise Malformed(f"protobuf: {where}: field {field} of an IntOrString")
    if kind not in (0, 1):
        raise Malformed(f"protobuf: {where}: an IntOrString of type {kind} (0 is an int, "
                        "1 a string)")
    if kind == 0 and not -(1 << 31) <= number < 1 << 31:
        raise Malformed(f"protobuf: {where}: {number} does not fit an int32")
    return text if kind == 1 else number


def _quantity(raw: bytes, where: str, budget: list[int]) -> str:
    for number, _, v in _fields(raw, budget):
        if number == 1 and isinstance(v, bytes):
            return _text(v, f"a quantity of {where}")
    return "0"


# The seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the times RFC 3339 (and
# Go's metav1.Time in JSON) can write.
_MIN_SECONDS = -62135596800
_MAX_SECONDS = 253402300799


def _time(raw: bytes, where: str, budget: list[int]) -> Any:
    """A metav1.Time (seconds, nanos); the zero time, as Go sends an unset one, is "".
    Years 1 to 9999 only, as RFC 3339 writes them."""
    seconds = 0
    for number, _, v in _fields(raw, budget):
        if number == 1 and isinstance(v, int):
            seconds = _signed(v)
    if not seconds:
        return ""
    if not _MIN_SECONDS <= seconds <= _MAX_SECONDS:
        raise Malformed(f"protobuf: {where}: {seconds} seconds is outside the years 1 to 9999")
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def decode(body: bytes) -> dict[str, Any]:
    """A protobuf request body as the JSON object it stands for; Unsupported otherwise."""
    if not body.startswith(MAGIC):
        raise Unsupported("protobuf: the body does not start with Kubernetes' k8s\\0 magic")
    type_meta: dict[str, Any] = {}
    raw = b""
    budget = [MAX_FIELDS]
    for number, wire, value in _fields(body[len(MAGIC):], budget):
        if number == 1 and wire == 2:
            type_meta = decode_message(value, "TypeMeta", budget)
        elif number == 2 and wire == 2:
            raw = value
        elif number in (3, 4) and _empty(value):
            continue  # content encoding and type, unset: the raw bytes are protobuf
        else:
            raise Unsupported(f"protobuf: envelope field {number} is not read here")
    api_version, kind = type_meta.get("apiVersion", ""), type_meta.get("kind", "")
    if (api_version, kind) not in KINDS:
        readable = ", ".join(k for _, k in sorted(KINDS))
        raise Unsupported(f"protobuf bodies are read for {readable} only, not "
                          f"{api_version} {kind}; send it as JSON")
    obj = decode_message(raw, kind, budget)
    return {"apiVersion": api_version, "kind": kind, **obj}
