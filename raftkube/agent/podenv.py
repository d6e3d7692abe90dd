"""A container's environment, command and args, resolved as the kubelet resolves them.

Pure: everything read from the API comes in a `Sources` (the pod's ConfigMaps and
Secrets by name, the Services the pod may see, the node's and the pod's addresses), and
the answer is the environment in order, or a `ConfigError` with Kubernetes' own words
(`configmap "x" not found`, `couldn't find key k in ConfigMap ns/x`), which the kubelet
reports as the container's `CreateContainerConfigError` and retries.

The order follows the kubelet's `makeEnvironmentVariables`:

1. `envFrom`, source after source (a ConfigMap's `data`, a Secret's decoded `data`),
   each key with the source's `prefix`; a key that is no valid variable name is
   skipped and told (the `InvalidEnvironmentVariableNames` warning);
2. `env` in order: a `value` has its `$(VAR)` references expanded against what came
   before and the service variables (`$$` writes a `$`, an unknown reference is left as
   written); a `valueFrom` is a ConfigMap or Secret key, a pod field or a resource;
   a later variable of the same name replaces the earlier one in its place;
3. the service variables that no variable above set: `{NAME}_SERVICE_HOST`,
   `{NAME}_SERVICE_PORT`, one per named port, and the docker-link ones, for every
   Service of the pod's namespace with a ClusterIP (unless `enableServiceLinks: false`)
   and for `default/kubernetes` in every namespace.

The command and args are expanded last, against the whole environment.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from raftkube.api import names, quantity, references

Obj = dict[str, Any]
Mapper = Callable[[str], str]

CONFIG_ERROR = "CreateContainerConfigError"
MASTER_SERVICES = ("kubernetes",)  # told to every namespace, links or not
_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.*)'\]")


class ConfigError(Exception):
    """What stops a container from being created from its spec: a missing ConfigMap,
    Secret or key that is not optional, a field that cannot be read. The message is
    Kubernetes' own, as the container's waiting message and the `Failed` event show it."""


@dataclass(frozen=True)
class Sources:
    """What the kubelet read from the API for one pod.

    `objects` holds every ConfigMap and Secret the pod refers to, keyed by
    (`configmaps` or `secrets`, name), None for one that does not exist; `services` the
    Services the pod may be told about (those of its namespace and `default/kubernetes`;
    `service_env` picks). `allocatable` is the node's: a resource limit left out is read
    as the node's allocatable amount, as Kubernetes does for the downward API."""

    objects: Mapping[tuple[str, str], Obj | None] = field(default_factory=dict)
    services: Sequence[Obj] = ()
    host_ip: str = ""
    pod_ips: Sequence[str] = ()
    allocatable: Mapping[str, str] = field(default_factory=dict)

    def config_map(self, name: str) -> Obj | None:
        return self.objects.get((references.CONFIGMAPS, name))

    def secret(self, name: str) -> Obj | None:
        return self.objects.get((references.SECRETS, name))


@dataclass(frozen=True)
class Environment:
    env: tuple[tuple[str, str], ...]
    warnings: tuple[str, ...] = ()  # messages for `InvalidEnvironmentVariableNames`

    def as_dict(self) -> dict[str, str]:
        return dict(self.env)


# ---- $(VAR) expansion ---------------------------------------------------------------------


def mapping_for(*contexts: Mapping[str, str]) -> Mapper:
    """A lookup through `contexts` in turn; an unknown name stays `$(NAME)`."""
    def look(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return f"$({name})"
    return look


def expand(text: str, mapping: Mapper) -> str:
    """`$(VAR)` replaced through `mapping`, `$$` as `$`, anything else kept as written
    (a lone `$`, `$x`, an unclosed `$(`), as Kubernetes' `expansion.Expand` does."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            nxt = text[cursor + 1]
            advance = 1
            if nxt == "$":
                out.append("$")
            elif nxt == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                else:
                    out.append(mapping(text[cursor + 2:close]))
                    advance = close - cursor
            else:
                out.append("$" + nxt)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


# ---- objects ------------------------------------------------------------------------------


def config_map_data(cm: Obj) -> dict[str, str]:
    data = cm.get("data")
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def secret_data(secret: Obj) -> dict[str, bytes]:
    """A Secret's `data`, decoded from base64 (a value that is not base64 is taken as
    written: the API server refuses those, so only a hand-made object has one)."""
    out: dict[str, bytes] = {}
    data = secret.get("data")
    if isinstance(data, dict):
        for k, v in data.items():
            try:
                out[str(k)] = base64.b64decode(str(v), validate=True)
            except (binascii.Error, ValueError):
                out[str(k)] = str(v).encode()
    return out


def text_of(value: bytes) -> str:
    """A Secret's bytes as an environment value (bytes that are not UTF-8 are replaced:
    an environment is text)."""
    return value.decode("utf-8", "replace")


def _config_map(sources: Sources, name: str) -> Obj:
    found = sources.config_map(name)
    if found is None:
        raise ConfigError(f'configmap "{name}" not found')
    return found


def _secret(sources: Sources, name: str) -> Obj:
    found = sources.secret(name)
    if found is None:
        raise ConfigError(f'secret "{name}" not found')
    return found


# ---- fields and resources -----------------------------------------------------------------


def format_map(values: Mapping[str, str]) -> str:
    """Labels or annotations as the downward API writes them: `key="value"` lines, sorted."""
    return "\n".join(f"{k}={json.dumps(str(values[k]), ensure_ascii=False)}"
                     for k in sorted(values))


def field_value(pod: Obj, path: str, *, host_ip: str, pod_ips: Sequence[str]) -> str:
    """A pod field as the downward API gives it (env `fieldRef`, downwardAPI files)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    subscript = _SUBSCRIPT.fullmatch(path)
    if subscript:
        values = meta.get(subscript.group(1)) or {}
        return str(values.get(subscript.group(2), ""))
    simple: dict[str, Callable[[], str]] = {
        "metadata.name": lambda: str(meta.get("name") or ""),
        "metadata.namespace": lambda: str(meta.get("namespace") or ""),
        "metadata.uid": lambda: str(meta.get("uid") or ""),
        "metadata.labels": lambda: format_map(meta.get("labels") or {}),
        "metadata.annotations": lambda: format_map(meta.get("annotations") or {}),
        "spec.nodeName": lambda: str(spec.get("nodeName") or ""),
        "spec.serviceAccountName": lambda: str(spec.get("serviceAccountName") or ""),
        "status.hostIP": lambda: host_ip,
        "status.hostIPs": lambda: host_ip,
        "status.podIP": lambda: pod_ips[0] if pod_ips else "",
        "status.podIPs": lambda: ",".join(pod_ips),
    }
    if path not in simple:
        raise ConfigError(f'unsupported fieldPath: "{path}"')
    return simple[path]()


def _amount(raw: Any) -> Fraction | None:
    if raw is None:
        return None
    try:
        return quantity.parse_quantity(raw)
    except quantity.QuantityError:
        return None


def resource_value(ref: Obj, container: Obj, *, allocatable: Mapping[str, str]) -> str:
    """A container's request or limit, in units of `divisor` rounded up (Kubernetes'
    `ExtractContainerResourceValue`): a limit left out is the node's allocatable amount,
    a request left out is its limit if it has one (API defaulting), else 0."""
    resource = str(ref.get("resource") or "")
    part, _, name = resource.partition(".")
    if part not in ("limits", "requests") or not name:
        raise ConfigError(f"unsupported container resource : {resource}")
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    limit = _amount(limits.get(name))
    if limit is None:
        limit = _amount(allocatable.get(name))
    if part == "limits":
        amount = limit
    else:
        amount = _amount(requests.get(name))
        if amount is None:
            amount = _amount(limits.get(name))
    amount = amount if amount is not None else Fraction(0)
    divisor = _amount(ref.get("divisor")) or Fraction(1)
    if name == "cpu":  # counted in millicores, as MilliValue() does
        value = math.ceil(math.ceil(amount * 1000) / math.ceil(divisor * 1000))
    else:
        value = math.ceil(math.ceil(amount) / math.ceil(divisor))
    return str(value)


# ---- services ----------------------------------------------------------------------------


def _env_name(service_name: str) -> str:
    return service_name.upper().replace("-", "_")


def _has_cluster_ip(service: Obj) -> bool:
    spec = service.get("spec") or {}
    return spec.get("clusterIP") not in (None, "", "None") and bool(spec.get("ports"))


def _host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def service_env(services: Sequence[Obj], *, namespace: str, links: bool) -> dict[str, str]:
    """The service variables of the Services a pod in `namespace` sees: those of its
    namespace when `links` (enableServiceLinks), and `default/kubernetes` always."""
    chosen: dict[str, Obj] = {}
    for service in services:
        meta = service.get("metadata") or {}
        name, ns = str(meta.get("name") or ""), meta.get("namespace")
        if not name or not _has_cluster_ip(service):
            continue
        if ns == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif ns == namespace and links:
            chosen[name] = service
    out: dict[str, str] = {}
    for name in sorted(chosen):
        spec = chosen[name]["spec"]
        ip = str(spec["clusterIP"])
        prefix = _env_name(name)
        ports = [p for p in spec["ports"] if isinstance(p, dict)]
        out[f"{prefix}_SERVICE_HOST"] = ip
        out[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        for p in ports:
            if p.get("name"):
                out[f"{prefix}_SERVICE_PORT_{_env_name(str(p['name']))}"] = str(p.get("port"))
        for i, p in enumerate(ports):
            proto = str(p.get("protocol") or "TCP")
            url = f"{proto.lower()}://{_host_port(ip, int(p.get('port') or 0))}"
            if i == 0:
                out[f"{prefix}_PORT"] = url
            at = f"{prefix}_PORT_{p.get('port')}_{proto.upper()}"
            out[at] = url
            out[f"{at}_PROTO"] = proto.lower()
            out[f"{at}_PORT"] = str(p.get("port"))
            out[f"{at}_ADDR"] = ip
    return out


# ---- the environment ----------------------------------------------------------------------


def _optional(ref: Obj) -> bool:
    return ref.get("optional") is True


def environment(pod: Obj, container: Obj, sources: Sources) -> Environment:
    """The container's environment in order; ConfigError if it cannot be built."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = str(meta.get("namespace") or "")
    services = service_env(sources.services, namespace=namespace,
                           links=spec.get("enableServiceLinks") is not False)
    env: dict[str, str] = {}
    warnings: list[str] = []
    for source in container.get("envFrom") or []:
        if not isinstance(source, dict):
            continue
        prefix = str(source.get("prefix") or "")
        values: dict[str, str]
        if isinstance(source.get("configMapRef"), dict):
            ref, what = source["configMapRef"], "configMap"
            name = str(ref.get("name") or "")
            if sources.config_map(name) is None and _optional(ref):
                continue
            values = config_map_data(_config_map(sources, name))
        elif isinstance(source.get("secretRef"), dict):
            ref, what = source["secretRef"], "secret"
            name = str(ref.get("name") or "")
            if sources.secret(name) is None and _optional(ref):
                continue
            values = {k: text_of(v)
                      for k, v in secret_data(_secret(sources, name)).items()}
        else:
            continue
        invalid = []
        for key, value in values.items():
            key = prefix + key
            if names.env_var_name_errors(key):
                invalid.append(key)
                continue
            env[key] = value
        if invalid:
            warnings.append(f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {what} "
                            f"{namespace}/{name} were skipped since they are considered "
                            "invalid environment variable names.")
    mapping = mapping_for(env, services)
    for var in container.get("env") or []:
        if not isinstance(var, dict) or not var.get("name"):
            continue
        value = str(var.get("value") or "")
        source = var.get("valueFrom")
        if value:
            value = expand(value, mapping)
        elif isinstance(source, dict):
            found = _value_from(pod, container, source, sources, namespace)
            if found is None:
                continue  # an optional reference that is not there: no variable
            value = found
        env[str(var["name"])] = value
    for key, value in services.items():
        env.setdefault(key, value)
    return Environment(tuple(env.items()), tuple(warnings))


def _value_from(pod: Obj, container: Obj, source: Obj, sources: Sources,
                namespace: str) -> str | None:
    if isinstance(source.get("fieldRef"), dict):
        return field_value(pod, str(source["fieldRef"].get("fieldPath") or ""),
                           host_ip=sources.host_ip, pod_ips=sources.pod_ips)
    if isinstance(source.get("resourceFieldRef"), dict):
        return resource_value(source["resourceFieldRef"], container,
                              allocatable=sources.allocatable)
    if isinstance(source.get("configMapKeyRef"), dict):
        value = _key_value(source["configMapKeyRef"], "ConfigMap", sources.config_map,
                           lambda name: config_map_data(_config_map(sources, name)),
                           namespace)
        return None if value is None else str(value)
    if isinstance(source.get("secretKeyRef"), dict):
        value = _key_value(source["secretKeyRef"], "Secret", sources.secret,
                           lambda name: secret_data(_secret(sources, name)), namespace)
        return None if value is None else text_of(value)
    return None


def _key_value(ref: Obj, kind: str, find: Callable[[str], Any],
               data_of: Callable[[str], Mapping[str, Any]], namespace: str) -> Any:
    """One key of a ConfigMap or Secret (`kind`) for an env var: None when the object
    or the key is missing and the reference is optional, else ConfigError."""
    name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
    if find(name) is None and _optional(ref):
        return None
    data = data_of(name)
    if key not in data:
        if _optional(ref):
            return None
        raise ConfigError(f"couldn't find key {key} in {kind} {namespace}/{name}")
    return data[key]


def command_and_args(container: Obj, env: Mapping[str, str]
                     ) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
    """The container's command and args with `$(VAR)` expanded against its whole
    environment; None for one the spec leaves to the image."""
    mapping = mapping_for(env)

    def one(value: Any) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not value:
            return None
        return tuple(expand(str(v), mapping) for v in value)

    return one(container.get("command")), one(container.get("args"))
