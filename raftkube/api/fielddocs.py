"""What the kinds and their fields mean, in a sentence each: the text `kubectl explain`
shows, served in the OpenAPI documents (`apiserver.openapi`).

`schema` says what type each field has; this module says what it is for. Descriptions
are keyed by the structure a field belongs to: a shared structure by its Kubernetes name
(`ObjectMeta`, `PodSpec`, `Container`...), a kind's own parts by their path under the kind
(`Deployment.spec`, `Service.spec.ports`). A field without a sentence here is served
without a description. Words are raftkube's own, and say what raftkube does with a
field where it differs from Kubernetes (a field kept but not acted on says so).
"""

from __future__ import annotations

from collections.abc import Mapping

KINDS: Mapping[str, str] = {
    "Namespace": "A Namespace is a named scope for namespaced objects; deleting it deletes "
                 "everything in it.",
    "Pod": "A Pod is one or more containers that run together on one node and share its "
           "network and volumes. Controllers create most pods from a template.",
    "Service": "A Service gives a set of pods, chosen by a label selector, one stable "
               "virtual IP and DNS name, and spreads connections over the pods that are "
               "ready.",
    "ConfigMap": "A ConfigMap holds non-secret configuration as keys and values, which pods "
                 "read as environment variables or files.",
    "Secret": "A Secret holds a small amount of sensitive data (passwords, keys, tokens), "
              "which pods read as environment variables or files.",
    "Node": "A Node is a machine that runs pods; its agent registers it and reports its "
            "capacity and health.",
    "Event": "An Event reports something that happened to an object (scheduled, pulled, "
             "started, failed...); events expire after a while.",
    "Deployment": "A Deployment keeps a number of identical pods running from one template, "
                  "and rolls out a changed template by scaling a new ReplicaSet up and the "
                  "old ones down.",
    "ReplicaSet": "A ReplicaSet keeps a number of pods matching its selector running. "
                  "Deployments manage ReplicaSets; use a Deployment instead of one directly.",
    "DaemonSet": "A DaemonSet runs one copy of a pod on every node (or every node its "
                 "template's node selector and tolerations admit).",
    "Job": "A Job runs pods until a number of them have succeeded, retrying failed ones up "
           "to a limit.",
    "Lease": "A Lease is a lock with an expiry: nodes renew theirs to say they are alive.",
    "EndpointSlice": "An EndpointSlice lists addresses and ports of the pods behind a "
                     "Service; the endpoints controller writes them, proxies and DNS read "
                     "them.",
}

# The fields every object has at its top level.
OBJECT: Mapping[str, str] = {
    "apiVersion": "The versioned schema of this object, such as `v1` or `apps/v1`.",
    "kind": "The kind of this object, such as `Pod`; in CamelCase.",
    "metadata": "Standard object metadata: name, namespace, labels, annotations, and what "
                "the server keeps about the object.",
    "spec": "The desired state of the object, as its writer wants it.",
    "status": "The observed state of the object, as the system last saw it; read-only for "
              "users, written by controllers and agents.",
}

_SELECTOR = ("A label query over pods: those it matches are this object's. It must match "
             "the template's labels and cannot change after creation.")
_TEMPLATE = "The pod template: the pods this object creates are made from it."
_MIN_READY = ("Seconds a new pod must be ready, with no container crashing, before it "
              "counts as available. Default 0.")
_HISTORY = "How many old revisions to keep for rollback. Default 10."

FIELDS: Mapping[str, Mapping[str, str]] = {
    "ObjectMeta": {
        "name": "The name of the object, unique within its namespace and kind; cannot be "
                "changed.",
        "generateName": "A prefix from which the server makes a unique name, when `name` is "
                        "not given.",
        "namespace": "The namespace the object is in; empty for cluster-wide kinds. Cannot "
                     "be changed.",
        "uid": "A unique id the server gives the object when it is created; read-only.",
        "resourceVersion": "An opaque version of the object, changed by every write; an "
                           "update that names it fails with a conflict if the object changed "
                           "since.",
        "generation": "A number the server increases each time the desired state (spec) "
                      "changes; read-only.",
        "creationTimestamp": "When the object was created, in RFC 3339 UTC; read-only.",
        "deletionTimestamp": "When the object is to be gone; set by the server when deletion "
                             "was asked for and the object waits on finalizers or a grace "
                             "period.",
        "deletionGracePeriodSeconds": "Seconds the object may take to go once deletion was "
                                      "asked for; read-only.",
        "labels": "Key and value pairs by which selectors choose objects.",
        "annotations": "Key and value pairs that tools store on the object; not used to "
                       "select it.",
        "finalizers": "Names that must all be removed before a deleted object goes.",
        "ownerReferences": "The objects this one depends on: when all of them are gone, the "
                           "garbage collector deletes this one.",
        "managedFields": "Which manager set which fields; kept as written.",
        "selfLink": "Deprecated; not set.",
    },
    "OwnerReference": {
        "apiVersion": "The API version of the owner.",
        "kind": "The kind of the owner.",
        "name": "The name of the owner.",
        "uid": "The uid of the owner.",
        "controller": "True on the one owner that manages this object.",
        "blockOwnerDeletion": "With foreground deletion, the owner waits until this object "
                              "is gone.",
    },
    "LabelSelector": {
        "matchLabels": "Labels an object must have, each with this value.",
        "matchExpressions": "Requirements on labels (`In`, `NotIn`, `Exists`, "
                            "`DoesNotExist`); all must hold.",
    },
    "PodTemplateSpec": {
        "metadata": "Metadata of the pods made from the template; their labels must match "
                    "the selector.",
        "spec": "The spec of the pods made from the template.",
    },
    "PodSpec": {
        "containers": "The containers of the pod; at least one. Each has a unique name.",
        "initContainers": "Containers run one after another, each to success, before the "
                          "containers start. One with `restartPolicy: Always` is a sidecar: "
                          "it starts before the containers and runs beside them.",
        "volumes": "Volumes the pod's containers can mount.",
        "restartPolicy": "What is restarted when a container ends: `Always` (the default), "
                         "`OnFailure` or `Never`.",
        "terminationGracePeriodSeconds": "Seconds the containers get between the stop "
                                         "signal and being killed. Default 30.",
        "activeDeadlineSeconds": "Seconds the pod may run before the system fails it.",
        "dnsPolicy": "How the pod's DNS is set up. Default `ClusterFirst`.",
        "nodeSelector": "Labels a node must have for the pod to be scheduled on it.",
        "serviceAccountName": "The service account the pod runs as.",
        "serviceAccount": "Deprecated alias of serviceAccountName.",
        "nodeName": "The node the pod is bound to. Set by the scheduler; set it yourself to "
                    "skip scheduling.",
        "hostNetwork": "Run the pod in the node's network namespace.",
        "hostname": "The pod's hostname; default its name.",
        "subdomain": "With `hostname`, gives the pod the DNS name "
                     "HOSTNAME.SUBDOMAIN.NAMESPACE.svc.",
        "affinity": "Scheduling constraints: the nodes the pod must or should run on.",
        "schedulerName": "The scheduler that places the pod. Default `default-scheduler`.",
        "tolerations": "Taints of nodes that the pod tolerates.",
        "priorityClassName": "The priority class of the pod.",
        "priority": "The pod's priority; higher goes first.",
        "imagePullSecrets": "Secrets holding registry credentials for the pod's images.",
        "securityContext": "Security settings for every container of the pod; kept as "
                           "written.",
    },
    "Container": {
        "name": "The name of the container, unique within the pod (a DNS label).",
        "image": "The container image to run, such as `nginx:1.27`.",
        "command": "The entrypoint, replacing the image's; not run in a shell.",
        "args": "Arguments to the entrypoint, replacing the image's CMD.",
        "workingDir": "The container's working directory; default the image's.",
        "imagePullPolicy": "When to pull the image: `Always`, `IfNotPresent` or `Never`. "
                           "Default `Always` for `:latest` or no tag, else `IfNotPresent`.",
        "ports": "Ports the container listens on; informational, except for hostPort.",
        "env": "Environment variables to set in the container.",
        "envFrom": "Sources (ConfigMaps, Secrets) whose keys all become environment "
                   "variables.",
        "resources": "The compute resources the container asks for (requests) and may use "
                     "(limits).",
        "volumeMounts": "Volumes of the pod to mount into the container's filesystem.",
        "livenessProbe": "A check of the container's health: it is restarted when the probe "
                         "fails.",
        "readinessProbe": "A check that the container can serve: Services send it traffic "
                          "only while the probe passes.",
        "startupProbe": "A check that the container has started: the other probes wait "
                        "until it passes.",
        "lifecycle": "Actions run after the container starts and before it stops.",
        "restartPolicy": "`Always` on an init container makes it a sidecar.",
        "stdin": "Keep a stdin open for the container.",
        "tty": "Give the container a terminal.",
        "securityContext": "Security settings for the container; kept as written.",
    },
    "Probe": {
        "exec": "Run a command in the container; exit status 0 passes.",
        "httpGet": "An HTTP GET to the container; a status from 200 to 399 passes.",
        "tcpSocket": "Open a TCP connection to the container; connecting passes.",
        "grpc": "A gRPC health check of the container.",
        "initialDelaySeconds": "Seconds after the container starts before the first check.",
        "timeoutSeconds": "Seconds a check may take. Default 1.",
        "periodSeconds": "Seconds between checks. Default 10.",
        "successThreshold": "Passes in a row after a failure to count as passing. Default 1.",
        "failureThreshold": "Failures in a row to count as failing. Default 3.",
    },
    "Volume": {
        "name": "The name of the volume, which volumeMounts refer to.",
        "emptyDir": "A directory that starts empty and lives as long as the pod.",
        "hostPath": "A file or directory of the node, mounted into the pod.",
        "configMap": "The keys of a ConfigMap, as files.",
        "secret": "The keys of a Secret, as files.",
        "persistentVolumeClaim": "A claim to a persistent volume; kept as written.",
    },
    "Toleration": {
        "key": "The taint key tolerated; empty with `Exists` tolerates every taint.",
        "operator": "`Equal` (the default) or `Exists`.",
        "value": "The taint value tolerated, with `Equal`.",
        "effect": "The taint effect tolerated: `NoSchedule`, `PreferNoSchedule` or "
                  "`NoExecute`; empty for all.",
        "tolerationSeconds": "With `NoExecute`: seconds the pod stays on a node after the "
                             "taint appears.",
    },
    "Pod.status": {
        "phase": "Where the pod is in its life: `Pending`, `Running`, `Succeeded`, "
                 "`Failed` or `Unknown`.",
        "conditions": "The pod's conditions: PodScheduled, Initialized, ContainersReady, "
                      "Ready.",
        "podIP": "The IP address of the pod.",
        "hostIP": "The IP address of the node the pod runs on.",
        "startTime": "When the node accepted the pod.",
        "containerStatuses": "The state of each container.",
        "qosClass": "The pod's quality of service class: `Guaranteed`, `Burstable` or "
                    "`BestEffort`.",
    },
    "Deployment.spec": {
        "replicas": "The number of pods wanted. Default 1.",
        "selector": _SELECTOR,
        "template": _TEMPLATE,
        "strategy": "How pods of an old template are replaced by new ones.",
        "minReadySeconds": _MIN_READY,
        "revisionHistoryLimit": _HISTORY,
        "paused": "While true, changes of the template are not rolled out.",
        "progressDeadlineSeconds": "Seconds a rollout may go without progress before the "
                                   "Deployment reports it failed (condition Progressing, "
                                   "reason ProgressDeadlineExceeded). Default 600.",
    },
    "Deployment.spec.strategy": {
        "type": "`RollingUpdate` (the default) replaces pods a few at a time; `Recreate` "
                "removes all old pods before it creates new ones.",
        "rollingUpdate": "Bounds of a rolling update.",
    },
    "Deployment.spec.strategy.rollingUpdate": {
        "maxSurge": "How many pods, or what percentage, may exist above the wanted number "
                    "during the update. Default 25%.",
        "maxUnavailable": "How many pods, or what percentage, may be unavailable during the "
                          "update. Default 25%.",
    },
    "Deployment.status": {
        "replicas": "Pods of every template.",
        "updatedReplicas": "Pods of the current template.",
        "readyReplicas": "Pods that are ready.",
        "availableReplicas": "Pods ready for at least minReadySeconds.",
        "unavailableReplicas": "Pods wanted that are not available.",
        "observedGeneration": "The generation the controller last acted on.",
        "conditions": "Available and Progressing.",
    },
    "ReplicaSet.spec": {
        "replicas": "The number of pods wanted. Default 1.",
        "selector": _SELECTOR,
        "template": _TEMPLATE,
        "minReadySeconds": _MIN_READY,
    },
    "DaemonSet.spec": {
        "selector": _SELECTOR,
        "template": _TEMPLATE,
        "updateStrategy": "How pods of an old template are replaced: `RollingUpdate` (the "
                          "default) or `OnDelete`.",
        "minReadySeconds": _MIN_READY,
        "revisionHistoryLimit": _HISTORY,
    },
    "Job.spec": {
        "parallelism": "At most this many pods run at once. Default 1.",
        "completions": "Pods that must succeed for the Job to complete. Default 1.",
        "activeDeadlineSeconds": "Seconds the Job may run before it is failed.",
        "backoffLimit": "Pod failures after which the Job is failed. Default 6.",
        "selector": "A label query over pods; made by the server unless manualSelector is "
                    "true.",
        "manualSelector": "Take `selector` as written instead of making one.",
        "template": _TEMPLATE + " Its restartPolicy must be `Never` or `OnFailure`.",
        "ttlSecondsAfterFinished": "Seconds after the Job finishes before it is deleted.",
        "completionMode": "`NonIndexed` (the default) or `Indexed`.",
        "suspend": "While true, the Job creates no pods and its running pods are stopped.",
    },
    "Service.spec": {
        "type": "How the Service is exposed: `ClusterIP` (the default), `NodePort`, "
                "`LoadBalancer` or `ExternalName`.",
        "selector": "Pods with these labels are the Service's endpoints.",
        "ports": "The ports the Service exposes.",
        "clusterIP": "The Service's virtual IP; allocated unless given. `None` makes a "
                     "headless Service. Cannot be changed.",
        "externalName": "The DNS name an `ExternalName` Service aliases.",
        "sessionAffinity": "`ClientIP` keeps a client on one pod; default `None`.",
        "externalTrafficPolicy": "For NodePort and LoadBalancer: `Cluster` (the default) "
                                 "or `Local`.",
        "internalTrafficPolicy": "`Cluster` (the default) or `Local`.",
        "publishNotReadyAddresses": "List pods as endpoints before they are ready.",
    },
    "Service.spec.ports": {
        "name": "The name of the port; required when there are several.",
        "protocol": "`TCP` (the default), `UDP` or `SCTP`.",
        "port": "The port the Service listens on.",
        "targetPort": "The pods' port: a number, or the name of a container port. Default "
                      "the value of `port`.",
        "nodePort": "The port on every node, for NodePort and LoadBalancer; allocated unless "
                    "given.",
        "appProtocol": "The application protocol of the port; informational.",
    },
    "ConfigMap": {
        "data": "The configuration: UTF-8 values by key.",
        "binaryData": "Binary values by key, base64-encoded.",
        "immutable": "When true, data cannot change; delete and recreate to change it.",
    },
    "Secret": {
        "data": "The secret values by key, base64-encoded.",
        "stringData": "Values by key as plain text, written into `data` by the server; never "
                      "read back.",
        "type": "What the secret holds, such as `Opaque` (the default) or "
                "`kubernetes.io/tls`.",
        "immutable": "When true, data cannot change; delete and recreate to change it.",
    },
    "Node.spec": {
        "unschedulable": "When true, no new pod is scheduled on the node (`kubectl cordon`).",
        "taints": "Taints repel pods that do not tolerate them.",
        "podCIDR": "The range pods of this node get IP addresses from.",
    },
    "Event": {
        "involvedObject": "The object the event is about.",
        "reason": "A short CamelCase reason, such as `Scheduled`.",
        "message": "What happened, for people.",
        "source": "The component that reported the event.",
        "type": "`Normal` or `Warning`.",
        "count": "How many times it happened.",
        "firstTimestamp": "When it first happened.",
        "lastTimestamp": "When it last happened.",
    },
    "Lease.spec": {
        "holderIdentity": "Who holds the lease.",
        "leaseDurationSeconds": "Seconds the lease lasts after its renewal.",
        "renewTime": "When the holder last renewed the lease.",
    },
}


def kind(name: str) -> str:
    """The description of the kind `name`, or ""."""
    return KINDS.get(name, "")


def field(structure: str, name: str) -> str:
    """The description of field `name` of `structure` (`Container`, `Deployment.spec`),
    or ""; the top-level fields of a kind (`Pod`, `apiVersion`) fall back to every
    object's."""
    found = FIELDS.get(structure, {}).get(name)
    if found is None and structure in KINDS:
        found = OBJECT.get(name)
    return found or ""
