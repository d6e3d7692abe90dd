"""The JSON type of every field raftkube knows, and the walk that checks them.

Kubernetes decodes objects into Go structs, so a field of the wrong JSON type (`replicas:
"3"`, `labels: [a]`) never reaches its validators; it is refused as a type error. raftkube
keeps objects as plain dicts instead, so the types are checked here, once, by walking the
object against a schema: every mismatch becomes a `FieldValueTypeInvalid` cause, and the
semantic validators then read values through `as_map`/`as_int`/... which treat a
wrongly-typed value as absent, so no value is reported twice and no validator needs to
defend itself against a list where it expected a map.

Unknown fields are not type errors. `unknown_fields` lists them, for the API server's
`fieldValidation` (Strict refuses them, Warn, the default, warns, as Kubernetes does); a
field of Kubernetes' API that raftkube does not act on is still known here (as OBJECT or
ANY), so that a manifest written for Kubernetes passes Strict. `null` is accepted anywhere
and means "not set", as it does when Go decodes JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from raftkube.api import causes

STRING = "string"
INTEGER = "integer"
BOOLEAN = "boolean"
NUMBER = "number"
INT_OR_STRING = "integer or string"
QUANTITY = "quantity"
OBJECT = "object"  # any map, contents unchecked
ANY = "any"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Obj:
    """A map with known fields; others are allowed and unchecked."""

    fields: Mapping[str, Schema] = field(default_factory=dict)


@dataclass(frozen=True)
class Arr:
    items: Schema


@dataclass(frozen=True)
class MapOf:
    values: Schema


Schema = Union[str, Obj, Arr, MapOf]  # noqa: UP007 - a forward-referencing alias


def _leaf_ok(value: Any, leaf: str) -> bool:
    if leaf == ANY:
        return True
    if leaf == STRING:
        return isinstance(value, str)
    if leaf == BOOLEAN:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # every other leaf is numeric or textual, never boolean
    if leaf == INTEGER:  # Kubernetes' integers are int32 or int64: nothing beyond int64
        return isinstance(value, int) and INT64_MIN <= value <= INT64_MAX
    if leaf == NUMBER:
        return isinstance(value, int | float)
    if leaf == INT_OR_STRING:
        return isinstance(value, str) or isinstance(value, int) and INT64_MIN <= value <= INT64_MAX
    if leaf == QUANTITY:
        return isinstance(value, int | float | str)
    return isinstance(value, dict)  # OBJECT


def check(value: Any, schema: Schema, *, path: str, errs: causes.Causes) -> None:
    """Add a type cause for every field of `value` whose JSON type `schema` does not allow."""
    if value is None:
        return
    if isinstance(schema, str):
        if not _leaf_ok(value, schema):
            errs.type_invalid(path, value, schema)  # OBJECT is "object" already
        return
    if isinstance(schema, Arr):
        if not isinstance(value, list):
            errs.type_invalid(path, value, "array")
            return
        for i, item in enumerate(value):
            check(item, schema.items, path=causes.index(path, i), errs=errs)
        return
    if not isinstance(value, dict):
        errs.type_invalid(path, value, "object")
        return
    if isinstance(schema, MapOf):
        for k, v in value.items():
            if not isinstance(k, str):
                errs.type_invalid(causes.key(path, k), k, "string")
            else:
                check(v, schema.values, path=causes.key(path, k), errs=errs)
        return
    for name, sub in schema.fields.items():
        if name in value:
            check(value[name], sub, path=causes.child(path, name), errs=errs)


def _directive(name: Any, directives: bool) -> bool:
    """A strategic merge patch's `$patch`, `$setElementOrder/...`: not a field."""
    return directives and isinstance(name, str) and name.startswith("$")


def unknown_fields(value: Any, schema: Schema, path: str = "", *,
                   directives: bool = False) -> list[str]:
    """The paths of the fields of `value` that `schema` does not know, in order.
    Statuses are written by raftkube itself and are not checked. `directives`: `value`
    is a strategic merge patch, whose `$` keys are the patch's, not fields."""
    if isinstance(schema, Arr) and isinstance(value, list):
        return [u for i, item in enumerate(value)
                for u in unknown_fields(item, schema.items, causes.index(path, i),
                                        directives=directives)]
    if isinstance(schema, MapOf) and isinstance(value, dict):
        return [u for k, v in value.items() if not _directive(k, directives)
                for u in unknown_fields(v, schema.values, causes.key(path, k),
                                        directives=directives)]
    if not isinstance(schema, Obj) or not isinstance(value, dict):
        return []
    out: list[str] = []
    for name, sub in value.items():
        at = causes.child(path, str(name))
        if _directive(name, directives):
            continue
        if name not in schema.fields:
            out.append(at)
        elif at != "status":
            out += unknown_fields(sub, schema.fields[name], at, directives=directives)
    return out


def drop_unknown(value: Any, schema: Schema, path: str = "", *,
                 directives: bool = False) -> Any:
    """`value` without the fields `schema` does not know, as Kubernetes' decoding drops
    them; a new value, `value` is not changed. Statuses are kept as they are; so are a
    strategic merge patch's `$` keys when `directives`."""
    if isinstance(schema, Arr) and isinstance(value, list):
        return [drop_unknown(item, schema.items, path, directives=directives)
                for item in value]
    if isinstance(schema, MapOf) and isinstance(value, dict):
        return {k: v if _directive(k, directives)
                else drop_unknown(v, schema.values, path, directives=directives)
                for k, v in value.items()}
    if not isinstance(schema, Obj) or not isinstance(value, dict):
        return value
    return {name: sub if causes.child(path, str(name)) == "status"
            or _directive(name, directives)
            else drop_unknown(sub, schema.fields[name], causes.child(path, str(name)),
                              directives=directives)
            for name, sub in value.items() if name in schema.fields
            or _directive(name, directives)}


# ---- reading values that may have the wrong type ---------------------------------------


def as_map(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def as_list(value: Any) -> list[Any] | None:
    return value if isinstance(value, list) else None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def get_map(parent: Any, name: str) -> dict[str, Any] | None:
    return as_map(parent.get(name)) if isinstance(parent, dict) else None


def get_list(parent: Any, name: str) -> list[Any] | None:
    return as_list(parent.get(name)) if isinstance(parent, dict) else None


def get_str(parent: Any, name: str) -> str | None:
    return as_str(parent.get(name)) if isinstance(parent, dict) else None


def get_int(parent: Any, name: str) -> int | None:
    return as_int(parent.get(name)) if isinstance(parent, dict) else None


def get_bool(parent: Any, name: str) -> bool | None:
    return as_bool(parent.get(name)) if isinstance(parent, dict) else None


def str_map(value: Any) -> dict[str, str]:
    """The string-to-string entries of a map (labels, selectors, data); others dropped."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def maps(value: Any) -> list[tuple[int, dict[str, Any]]]:
    """(index, item) for the items of a list that are maps; `null` items count as `{}`."""
    out: list[tuple[int, dict[str, Any]]] = []
    for i, item in enumerate(as_list(value) or []):
        if item is None:
            out.append((i, {}))
        elif isinstance(item, dict):
            out.append((i, item))
    return out


# ---- the schemas ----------------------------------------------------------------------

S, INT, B, IOS, Q = STRING, INTEGER, BOOLEAN, INT_OR_STRING, QUANTITY

OWNER_REFERENCE = Obj({"apiVersion": S, "kind": S, "name": S, "uid": S, "controller": B,
                       "blockOwnerDeletion": B})
METADATA = Obj({
    "name": S, "generateName": S, "namespace": S, "uid": S, "resourceVersion": S,
    "generation": INT, "creationTimestamp": S, "deletionTimestamp": S,
    "deletionGracePeriodSeconds": INT, "labels": MapOf(S), "annotations": MapOf(S),
    "finalizers": Arr(S), "ownerReferences": Arr(OWNER_REFERENCE), "managedFields": Arr(OBJECT),
    "selfLink": S,
})
LABEL_SELECTOR = Obj({"matchLabels": MapOf(S),
                      "matchExpressions": Arr(Obj({"key": S, "operator": S, "values": Arr(S)}))})
KEY_TO_PATH = Obj({"key": S, "path": S, "mode": INT})
PROBE = Obj({
    "exec": Obj({"command": Arr(S)}),
    "httpGet": Obj({"path": S, "port": IOS, "host": S, "scheme": S,
                    "httpHeaders": Arr(Obj({"name": S, "value": S}))}),
    "tcpSocket": Obj({"port": IOS, "host": S}),
    "grpc": Obj({"port": INT, "service": S}),
    "initialDelaySeconds": INT, "timeoutSeconds": INT, "periodSeconds": INT,
    "successThreshold": INT, "failureThreshold": INT, "terminationGracePeriodSeconds": INT,
})
KEY_SELECTOR = Obj({"name": S, "key": S, "optional": B})
CONTAINER = Obj({
    "name": S, "image": S, "command": Arr(S), "args": Arr(S), "workingDir": S,
    "imagePullPolicy": S,
    "ports": Arr(Obj({"name": S, "containerPort": INT, "hostPort": INT, "protocol": S,
                      "hostIP": S})),
    "env": Arr(Obj({"name": S, "value": S, "valueFrom": Obj({
        "fieldRef": Obj({"apiVersion": S, "fieldPath": S}),
        "resourceFieldRef": Obj({"containerName": S, "resource": S, "divisor": Q}),
        "configMapKeyRef": KEY_SELECTOR, "secretKeyRef": KEY_SELECTOR})})),
    "envFrom": Arr(Obj({"prefix": S, "configMapRef": Obj({"name": S, "optional": B}),
                        "secretRef": Obj({"name": S, "optional": B})})),
    "resources": Obj({"limits": MapOf(Q), "requests": MapOf(Q), "claims": Arr(OBJECT)}),
    "volumeMounts": Arr(Obj({"name": S, "mountPath": S, "subPath": S, "readOnly": B,
                             "mountPropagation": S, "subPathExpr": S,
                             "recursiveReadOnly": S})),
    "livenessProbe": PROBE, "readinessProbe": PROBE, "startupProbe": PROBE,
    "lifecycle": OBJECT, "terminationMessagePath": S, "terminationMessagePolicy": S,
    "securityContext": OBJECT, "stdin": B, "stdinOnce": B, "tty": B,
    "volumeDevices": Arr(OBJECT), "resizePolicy": Arr(OBJECT), "restartPolicy": S,
})
VOLUME = Obj({
    "name": S,
    "emptyDir": Obj({"medium": S, "sizeLimit": Q}),
    "hostPath": Obj({"path": S, "type": S}),
    "configMap": Obj({"name": S, "items": Arr(KEY_TO_PATH), "defaultMode": INT, "optional": B}),
    "secret": Obj({"secretName": S, "items": Arr(KEY_TO_PATH), "defaultMode": INT,
                   "optional": B}),
    "persistentVolumeClaim": Obj({"claimName": S, "readOnly": B}),
    "projected": OBJECT, "downwardAPI": OBJECT,
    **{source: OBJECT for source in (
        "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi",
        "ephemeral", "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo",
        "glusterfs", "image", "iscsi", "nfs", "photonPersistentDisk", "portworxVolume",
        "quobyte", "rbd", "scaleIO", "storageos", "vsphereVolume")},
})
NODE_SELECTOR_TERM = Obj({
    "matchExpressions": Arr(Obj({"key": S, "operator": S, "values": Arr(S)})),
    "matchFields": Arr(Obj({"key": S, "operator": S, "values": Arr(S)})),
})
AFFINITY = Obj({
    "nodeAffinity": Obj({
        "requiredDuringSchedulingIgnoredDuringExecution": Obj({
            "nodeSelectorTerms": Arr(NODE_SELECTOR_TERM)}),
        "preferredDuringSchedulingIgnoredDuringExecution": Arr(Obj({
            "weight": INT, "preference": NODE_SELECTOR_TERM})),
    }),
    "podAffinity": OBJECT, "podAntiAffinity": OBJECT,
})
TOLERATION = Obj({"key": S, "operator": S, "value": S, "effect": S, "tolerationSeconds": INT})
POD_SPEC = Obj({
    "containers": Arr(CONTAINER), "initContainers": Arr(CONTAINER), "volumes": Arr(VOLUME),
    "restartPolicy": S, "terminationGracePeriodSeconds": INT, "activeDeadlineSeconds": INT,
    "dnsPolicy": S, "nodeSelector": MapOf(S), "serviceAccountName": S, "serviceAccount": S,
    "automountServiceAccountToken": B, "nodeName": S, "hostNetwork": B, "hostPID": B,
    "hostIPC": B, "securityContext": OBJECT, "imagePullSecrets": Arr(Obj({"name": S})),
    "hostname": S, "subdomain": S, "affinity": AFFINITY, "schedulerName": S,
    "tolerations": Arr(TOLERATION), "priorityClassName": S, "priority": INT,
    "enableServiceLinks": B, "ephemeralContainers": Arr(OBJECT), "shareProcessNamespace": B,
    "hostUsers": B, "dnsConfig": OBJECT, "readinessGates": Arr(OBJECT),
    "runtimeClassName": S, "overhead": MapOf(Q), "topologySpreadConstraints": Arr(OBJECT),
    "setHostnameAsFQDN": B, "os": OBJECT, "schedulingGates": Arr(OBJECT),
    "resourceClaims": Arr(OBJECT), "preemptionPolicy": S, "hostAliases": Arr(OBJECT),
    "resources": OBJECT,
})
POD_TEMPLATE = Obj({"metadata": METADATA, "spec": POD_SPEC})
CONDITIONS = Arr(Obj({"type": S, "status": S, "reason": S, "message": S,
                      "lastTransitionTime": S, "lastUpdateTime": S, "lastProbeTime": S,
                      "lastHeartbeatTime": S}))
CONTAINER_STATUS = Obj({"name": S, "ready": B, "restartCount": INT, "image": S, "imageID": S,
                        "containerID": S, "state": OBJECT, "lastState": OBJECT, "started": B})
INT_OR_STRING_ROLLOUT = Obj({"maxSurge": IOS, "maxUnavailable": IOS})

SPECS: dict[str, Obj] = {
    "Pod": Obj({"spec": POD_SPEC, "status": Obj({
        "phase": S, "conditions": CONDITIONS, "hostIP": S, "podIP": S,
        "podIPs": Arr(Obj({"ip": S})), "startTime": S,
        "containerStatuses": Arr(CONTAINER_STATUS),
        "initContainerStatuses": Arr(CONTAINER_STATUS), "message": S, "reason": S,
        "qosClass": S})}),
    "Deployment": Obj({"spec": Obj({
        "replicas": INT, "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
        "strategy": Obj({"type": S, "rollingUpdate": INT_OR_STRING_ROLLOUT}),
        "minReadySeconds": INT, "revisionHistoryLimit": INT, "paused": B,
        "progressDeadlineSeconds": INT}),
        "status": Obj({"observedGeneration": INT, "replicas": INT, "updatedReplicas": INT,
                       "readyReplicas": INT, "availableReplicas": INT, "unavailableReplicas": INT,
                       "conditions": CONDITIONS, "collisionCount": INT})}),
    "ReplicaSet": Obj({"spec": Obj({
        "replicas": INT, "minReadySeconds": INT, "selector": LABEL_SELECTOR,
        "template": POD_TEMPLATE}),
        "status": Obj({"replicas": INT, "fullyLabeledReplicas": INT, "readyReplicas": INT,
                       "availableReplicas": INT, "observedGeneration": INT,
                       "conditions": CONDITIONS})}),
    "DaemonSet": Obj({"spec": Obj({
        "selector": LABEL_SELECTOR, "template": POD_TEMPLATE,
        "updateStrategy": Obj({"type": S, "rollingUpdate": INT_OR_STRING_ROLLOUT}),
        "minReadySeconds": INT, "revisionHistoryLimit": INT}),
        "status": Obj({"currentNumberScheduled": INT, "numberMisscheduled": INT,
                       "desiredNumberScheduled": INT, "numberReady": INT,
                       "observedGeneration": INT, "updatedNumberScheduled": INT,
                       "numberAvailable": INT, "numberUnavailable": INT,
                       "conditions": CONDITIONS})}),
    "Job": Obj({"spec": Obj({
        "parallelism": INT, "completions": INT, "activeDeadlineSeconds": INT, "backoffLimit": INT,
        "selector": LABEL_SELECTOR, "manualSelector": B, "template": POD_TEMPLATE,
        "ttlSecondsAfterFinished": INT, "completionMode": S, "suspend": B,
        "podFailurePolicy": OBJECT, "backoffLimitPerIndex": INT, "maxFailedIndexes": INT,
        "podReplacementPolicy": S, "successPolicy": OBJECT, "managedBy": S}),
        "status": Obj({"startTime": S, "completionTime": S, "active": INT, "succeeded": INT,
                       "failed": INT, "ready": INT, "conditions": CONDITIONS})}),
    "Service": Obj({"spec": Obj({
        "type": S, "selector": MapOf(S),
        "ports": Arr(Obj({"name": S, "protocol": S, "port": INT, "targetPort": IOS,
                          "nodePort": INT, "appProtocol": S})),
        "clusterIP": S, "clusterIPs": Arr(S), "externalIPs": Arr(S), "sessionAffinity": S,
        "externalTrafficPolicy": S, "internalTrafficPolicy": S, "ipFamilies": Arr(S),
        "ipFamilyPolicy": S, "loadBalancerIP": S, "publishNotReadyAddresses": B,
        "loadBalancerSourceRanges": Arr(S), "externalName": S, "healthCheckNodePort": INT,
        "sessionAffinityConfig": OBJECT, "allocateLoadBalancerNodePorts": B,
        "loadBalancerClass": S, "trafficDistribution": S}),
        "status": Obj({"loadBalancer": Obj({"ingress": Arr(Obj({"ip": S,
                                                               "hostname": S}))})})}),
    "ConfigMap": Obj({"data": MapOf(S), "binaryData": MapOf(S), "immutable": B}),
    "Secret": Obj({"data": MapOf(S), "stringData": MapOf(S), "type": S, "immutable": B}),
    "Namespace": Obj({"spec": Obj({"finalizers": Arr(S)}),
                      "status": Obj({"phase": S, "conditions": CONDITIONS})}),
    "Node": Obj({"spec": Obj({
        "podCIDR": S, "podCIDRs": Arr(S), "unschedulable": B, "providerID": S,
        "configSource": OBJECT, "externalID": S,
        "taints": Arr(Obj({"key": S, "value": S, "effect": S, "timeAdded": S}))}),
        "status": Obj({"capacity": MapOf(Q), "allocatable": MapOf(Q), "conditions": CONDITIONS,
                       "addresses": Arr(Obj({"type": S, "address": S})),
                       "nodeInfo": OBJECT, "phase": S})}),
    "Event": Obj({
        "involvedObject": Obj({"kind": S, "namespace": S, "name": S, "uid": S,
                               "apiVersion": S, "resourceVersion": S, "fieldPath": S}),
        "reason": S, "message": S, "source": Obj({"component": S, "host": S}),
        "firstTimestamp": S, "lastTimestamp": S, "count": INT, "type": S, "eventTime": S,
        "reportingComponent": S, "reportingInstance": S, "action": S, "series": OBJECT,
        "related": OBJECT}),
    "EndpointSlice": Obj({
        "addressType": S,
        "endpoints": Arr(Obj({
            "addresses": Arr(S), "hostname": S, "nodeName": S, "zone": S,
            "conditions": Obj({"ready": B, "serving": B, "terminating": B}),
            "targetRef": Obj({"kind": S, "namespace": S, "name": S, "uid": S,
                              "apiVersion": S, "resourceVersion": S, "fieldPath": S}),
            "deprecatedTopology": MapOf(S), "hints": OBJECT})),
        "ports": Arr(Obj({"name": S, "protocol": S, "port": INT, "appProtocol": S}))}),
    "Lease": Obj({"spec": Obj({"holderIdentity": S, "leaseDurationSeconds": INT,
                               "acquireTime": S, "renewTime": S, "leaseTransitions": INT,
                               "preferredHolder": S, "strategy": S})}),
}


def object_schema(kind: str) -> Obj:
    """The schema of a whole object of `kind`; unknown kinds get only the common fields."""
    body = SPECS.get(kind, Obj())
    return Obj({"apiVersion": S, "kind": S, "metadata": METADATA, **body.fields})
