"""The kinds raftkube serves, and every name a client may use for one.

This module owns the one table that ties a kind (`Deployment`) to its API group and version
(`apps/v1`), its REST collection (`deployments`), its scope (namespaced or cluster-wide)
and kubectl's short names (`deploy`). The REST server routes URLs through `by_plural`, the
store keys objects by `Kind.resource`, manifests are matched through `by_kind` and the CLI
reads users' words through `resolve`; keeping all of them on one frozen table means the
four can never disagree about what a kind is called.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """One kind of object, as Kubernetes' discovery documents describe it."""

    group: str  # "" for the core group
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    # Discovery's categories: `kubectl get all` lists every kind in category `all`.
    categories: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        """`apps/v1` for a named group, `v1` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """kubectl's RESOURCE.GROUP: `deployments.apps`, or `pods` in the core group."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


ALL = ("all",)
KINDS: tuple[Kind, ...] = (
    Kind("", "v1", "Namespace", "namespaces", False, ("ns",)),
    Kind("", "v1", "Pod", "pods", True, ("po",), ALL),
    Kind("", "v1", "Service", "services", True, ("svc",), ALL),
    Kind("", "v1", "ConfigMap", "configmaps", True, ("cm",)),
    Kind("", "v1", "Secret", "secrets", True),
    Kind("", "v1", "Node", "nodes", False, ("no",)),
    Kind("", "v1", "Event", "events", True, ("ev",)),
    Kind("apps", "v1", "Deployment", "deployments", True, ("deploy",), ALL),
    Kind("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ALL),
    Kind("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ALL),
    Kind("batch", "v1", "Job", "jobs", True, (), ALL),
    Kind("coordination.k8s.io", "v1", "Lease", "leases", True),
    Kind("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
)


def _words(kind: Kind) -> set[str]:
    """Every lower-case word that names `kind`, with and without its group."""
    bare = {kind.kind.lower(), kind.plural, *kind.short_names}
    words = set(bare)
    if kind.group:
        for word in bare:
            words.add(f"{word}.{kind.group}")
            words.add(f"{word}.{kind.version}.{kind.group}")
    return words


_BY_KIND = {(k.api_version, k.kind): k for k in KINDS}
_BY_PLURAL = {(k.group, k.version, k.plural): k for k in KINDS}
_BY_WORD = {word: k for k in KINDS for word in _words(k)}


def by_kind(api_version: str, kind: str) -> Kind | None:
    """The kind a manifest names with `apiVersion` and `kind` (case as Kubernetes spells it)."""
    return _BY_KIND.get((api_version, kind))


def by_plural(group: str, version: str, plural: str) -> Kind | None:
    """The kind a REST path names: `/apis/{group}/{version}/.../{plural}`."""
    return _BY_PLURAL.get((group, version, plural))


def resolve(name: str) -> Kind | None:
    """The kind a CLI word names: `deploy`, `Deployment`, `deployments.apps`, `po`, ...

    Case does not matter, as with kubectl.
    """
    return _BY_WORD.get(name.strip().lower())


def known(api_version: str, kind: str) -> Kind:
    """A kind this module lists, for code that names it (a KeyError otherwise)."""
    return _BY_KIND[(api_version, kind)]


NAMESPACE = known("v1", "Namespace")
POD = known("v1", "Pod")
SERVICE = known("v1", "Service")
CONFIGMAP = known("v1", "ConfigMap")
SECRET = known("v1", "Secret")
NODE = known("v1", "Node")
EVENT = known("v1", "Event")
DEPLOYMENT = known("apps/v1", "Deployment")
REPLICASET = known("apps/v1", "ReplicaSet")
DAEMONSET = known("apps/v1", "DaemonSet")
JOB = known("batch/v1", "Job")
LEASE = known("coordination.k8s.io/v1", "Lease")
ENDPOINTSLICE = known("discovery.k8s.io/v1", "EndpointSlice")
