"""A container's environment, command and args, as the kubelet resolves them: tables of
specs against Kubernetes' answers."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from raftkube.agent import podenv
from raftkube.agent.podenv import ConfigError, Sources
from raftkube.api import references

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def pod(*, env: list[Obj] | None = None, env_from: list[Obj] | None = None,
        links: bool | None = None, resources: Obj | None = None, **container: Any) -> Obj:
    c: Obj = {"name": "c", "image": "busybox", "env": env or [], "envFrom": env_from or [],
              "resources": resources or {}, **container}
    spec: Obj = {"nodeName": "n1", "serviceAccountName": "robot", "containers": [c]}
    if links is not None:
        spec["enableServiceLinks"] = links
    return {"metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web", "tier": "front"},
                         "annotations": {"note": 'say "hi"'}},
            "spec": spec}


def cm(name: str, **data: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": "5"},
            "data": data}


def secret(name: str, **data: str) -> Obj:
    return {"metadata": {"name": name, "namespace": "shop", "resourceVersion": "6"},
            "data": {k: b64(v) for k, v in data.items()}}


def service(name: str, ip: str, *ports: Obj, namespace: str = "shop") -> Obj:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": ip, "ports": list(ports)}}


def sources(*objs: tuple[str, Obj | None] | tuple[str, str, None],
            services: tuple[Obj, ...] = ()) -> Sources:
    found: dict[tuple[str, str], Obj | None] = {}
    for item in objs:
        if len(item) == 3:  # (plural, name, None): refers to one that does not exist
            found[(item[0], item[1])] = None  # type: ignore[misc]
        else:
            plural, obj = item  # type: ignore[misc]
            found[(plural, obj["metadata"]["name"])] = obj
    return Sources(objects=found, services=services, host_ip="192.0.2.10",
                   pod_ips=("10.244.1.7",), allocatable={"cpu": "4", "memory": "8Gi"})


CM = references.CONFIGMAPS
SECRET = references.SECRETS


def env_of(p: Obj, s: Sources | None = None) -> dict[str, str]:
    return podenv.environment(p, p["spec"]["containers"][0], s or sources()).as_dict()


@pytest.mark.parametrize(("text", "context", "want"), [
    ("$(A)", {"A": "1"}, "1"),
    ("x-$(A)-$(B)", {"A": "1", "B": "2"}, "x-1-2"),
    ("$(MISSING)", {}, "$(MISSING)"),
    ("$$(A)", {"A": "1"}, "$(A)"),
    ("$$", {}, "$"),
    ("$$$(A)", {"A": "1"}, "$1"),
    ("$", {}, "$"),
    ("a$", {}, "a$"),
    ("$x", {}, "$x"),
    ("$(A", {"A": "1"}, "$(A"),
    ("$()", {}, "$()"),
    ("$(A)$(A)", {"A": "z"}, "zz"),
    ("100$", {}, "100$"),
])
def test_expansion_is_kubernetes(text: str, context: dict[str, str], want: str) -> None:
    assert podenv.expand(text, podenv.mapping_for(context)) == want


def test_env_in_order_with_references_to_what_came_before() -> None:
    p = pod(env=[{"name": "A", "value": "a"}, {"name": "B", "value": "$(A)-b"},
                 {"name": "C", "value": "$(D)"}, {"name": "D", "value": "d"},
                 {"name": "E", "value": ""}])
    got = podenv.environment(p, p["spec"]["containers"][0], sources()).env
    assert got == (("A", "a"), ("B", "a-b"), ("C", "$(D)"), ("D", "d"), ("E", ""))


def test_env_from_then_env_which_overrides_in_place() -> None:
    p = pod(env_from=[{"configMapRef": {"name": "cfg"}},
                      {"secretRef": {"name": "pw"}, "prefix": "S_"}],
            env=[{"name": "MODE", "value": "fast"}, {"name": "URL", "value": "$(HOST):1"}])
    s = sources((CM, cm("cfg", MODE="slow", HOST="db")), (SECRET, secret("pw", PASS="x")))
    got = podenv.environment(p, p["spec"]["containers"][0], s).env
    assert got == (("MODE", "fast"), ("HOST", "db"), ("S_PASS", "x"), ("URL", "db:1"))


def test_invalid_keys_from_env_from_are_skipped_and_told() -> None:
    p = pod(env_from=[{"configMapRef": {"name": "cfg"}}])
    out = podenv.environment(p, p["spec"]["containers"][0],
                             sources((CM, cm("cfg", GOOD="1", **{"1bad": "x", "a b": "y"}))))
    assert out.as_dict() == {"GOOD": "1"}
    assert out.warnings == ("Keys [1bad, a b] from the EnvFrom configMap shop/cfg were "
                            "skipped since they are considered invalid environment "
                            "variable names.",)


@pytest.mark.parametrize(("p", "s", "message"), [
    (pod(env_from=[{"configMapRef": {"name": "cfg"}}]), sources((CM, "cfg", None)),
     'configmap "cfg" not found'),
    (pod(env_from=[{"secretRef": {"name": "pw"}}]), sources((SECRET, "pw", None)),
     'secret "pw" not found'),
    (pod(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]),
     sources((CM, "cfg", None)), 'configmap "cfg" not found'),
    (pod(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]),
     sources((CM, cm("cfg", other="1"))), "couldn't find key k in ConfigMap shop/cfg"),
    (pod(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "k"}}}]),
     sources((SECRET, secret("pw"))), "couldn't find key k in Secret shop/pw"),
    (pod(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "k"}}}]),
     sources(), 'secret "pw" not found'),
])
def test_a_missing_object_or_key_is_a_config_error(p: Obj, s: Sources, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        env_of(p, s)
    assert str(e.value) == message


def test_optional_references_that_are_missing_give_no_variable() -> None:
    p = pod(env_from=[{"configMapRef": {"name": "gone", "optional": True}}],
            env=[{"name": "A", "valueFrom": {"configMapKeyRef": {
                     "name": "cfg", "key": "nokey", "optional": True}}},
                 {"name": "B", "valueFrom": {"secretKeyRef": {
                     "name": "gone2", "key": "k", "optional": True}}},
                 {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}])
    s = sources((CM, "gone", None), (CM, cm("cfg", k="v")), (SECRET, "gone2", None))
    assert env_of(p, s) == {"C": "v"}


@pytest.mark.parametrize(("path", "want"), [
    ("metadata.name", "web-1"),
    ("metadata.namespace", "shop"),
    ("metadata.uid", "u-1"),
    ("metadata.labels['app']", "web"),
    ("metadata.labels['absent']", ""),
    ("metadata.annotations['note']", 'say "hi"'),
    ("metadata.labels", 'app="web"\ntier="front"'),
    ("metadata.annotations", 'note="say \\"hi\\""'),
    ("spec.nodeName", "n1"),
    ("spec.serviceAccountName", "robot"),
    ("status.podIP", "10.244.1.7"),
    ("status.podIPs", "10.244.1.7"),
    ("status.hostIP", "192.0.2.10"),
])
def test_field_refs(path: str, want: str) -> None:
    p = pod(env=[{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": path}}}])
    assert env_of(p)["F"] == want


def test_an_unknown_field_is_a_config_error() -> None:
    p = pod(env=[{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}])
    with pytest.raises(ConfigError, match="spec.bogus"):
        env_of(p)


@pytest.mark.parametrize(("resource", "divisor", "resources", "want"), [
    ("limits.cpu", None, {"limits": {"cpu": "500m"}}, "1"),
    ("limits.cpu", "1m", {"limits": {"cpu": "500m"}}, "500"),
    ("limits.cpu", None, {}, "4"),  # no limit: the node's allocatable
    ("limits.memory", None, {"limits": {"memory": "128Mi"}}, "134217728"),
    ("limits.memory", "1Mi", {"limits": {"memory": "128Mi"}}, "128"),
    ("limits.memory", "1Gi", {"limits": {"memory": "1.5Gi"}}, "2"),  # rounded up
    ("limits.memory", "1Mi", {}, "8192"),
    ("requests.cpu", "1m", {"requests": {"cpu": "250m"}}, "250"),
    ("requests.cpu", "1m", {"limits": {"cpu": "2"}}, "2000"),  # a request defaults to its limit
    ("requests.cpu", None, {}, "0"),
    ("requests.memory", "1k", {"requests": {"memory": "1500"}}, "2"),
])
def test_resource_field_refs(resource: str, divisor: str | None, resources: Obj,
                             want: str) -> None:
    ref: Obj = {"resource": resource}
    if divisor is not None:
        ref["divisor"] = divisor
    p = pod(env=[{"name": "R", "valueFrom": {"resourceFieldRef": ref}}], resources=resources)
    assert env_of(p)["R"] == want


def test_service_variables_of_the_namespace_and_the_master_service() -> None:
    svcs = (service("redis-primary", "10.96.0.11", {"port": 6379, "protocol": "TCP"}),
            service("web", "10.96.0.12", {"name": "http", "port": 80},
                    {"name": "dns-udp", "port": 53, "protocol": "UDP"}),
            service("headless", "None", {"port": 1}),
            service("pending", "", {"port": 2}),
            service("elsewhere", "10.96.0.13", {"port": 3}, namespace="other"),
            service("kubernetes", "10.96.0.1", {"name": "https", "port": 443},
                    namespace="default"))
    got = env_of(pod(), sources(services=svcs))
    assert got == {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        "KUBERNETES_PORT": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
        "KUBERNETES_PORT_443_TCP_PORT": "443",
        "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1",
        "REDIS_PRIMARY_SERVICE_HOST": "10.96.0.11",
        "REDIS_PRIMARY_SERVICE_PORT": "6379",
        "REDIS_PRIMARY_PORT": "tcp://10.96.0.11:6379",
        "REDIS_PRIMARY_PORT_6379_TCP": "tcp://10.96.0.11:6379",
        "REDIS_PRIMARY_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_PRIMARY_PORT_6379_TCP_PORT": "6379",
        "REDIS_PRIMARY_PORT_6379_TCP_ADDR": "10.96.0.11",
        "WEB_SERVICE_HOST": "10.96.0.12",
        "WEB_SERVICE_PORT": "80",
        "WEB_SERVICE_PORT_HTTP": "80",
        "WEB_SERVICE_PORT_DNS_UDP": "53",
        "WEB_PORT": "tcp://10.96.0.12:80",
        "WEB_PORT_80_TCP": "tcp://10.96.0.12:80",
        "WEB_PORT_80_TCP_PROTO": "tcp",
        "WEB_PORT_80_TCP_PORT": "80",
        "WEB_PORT_80_TCP_ADDR": "10.96.0.12",
        "WEB_PORT_53_UDP": "udp://10.96.0.12:53",
        "WEB_PORT_53_UDP_PROTO": "udp",
        "WEB_PORT_53_UDP_PORT": "53",
        "WEB_PORT_53_UDP_ADDR": "10.96.0.12",
    }


def test_service_links_off_leaves_only_the_master_service() -> None:
    svcs = (service("web", "10.96.0.12", {"port": 80}),
            service("kubernetes", "10.96.0.1", {"port": 443}, namespace="default"))
    got = env_of(pod(links=False), sources(services=svcs))
    assert sorted(k for k in got if k.endswith("_SERVICE_HOST")) == ["KUBERNETES_SERVICE_HOST"]


def test_the_containers_own_variables_win_over_service_ones_and_can_use_them() -> None:
    svcs = (service("web", "10.96.0.12", {"port": 80}),)
    p = pod(env=[{"name": "WEB_SERVICE_PORT", "value": "8080"},
                 {"name": "URL", "value": "http://$(WEB_SERVICE_HOST):$(WEB_SERVICE_PORT)"}])
    got = env_of(p, sources(services=svcs))
    assert got["WEB_SERVICE_PORT"] == "8080"
    assert got["URL"] == "http://10.96.0.12:8080"
    names = [k for k, _ in podenv.environment(p, p["spec"]["containers"][0],
                                              sources(services=svcs)).env]
    assert names[:2] == ["WEB_SERVICE_PORT", "URL"]  # declared ones first, in order


def test_command_and_args_are_expanded_against_the_whole_environment() -> None:
    p = pod(env=[{"name": "GREETING", "value": "hello"}],
            command=["sh", "-c", "echo $(GREETING) $(NOPE) $$(GREETING)"], args=["$(GREETING)"])
    env = env_of(p)
    assert podenv.command_and_args(p["spec"]["containers"][0], env) == (
        ("sh", "-c", "echo hello $(NOPE) $(GREETING)"), ("hello",))
    assert podenv.command_and_args({"name": "c"}, env) == (None, None)


def test_secret_values_are_decoded() -> None:
    p = pod(env=[{"name": "P", "valueFrom": {"secretKeyRef": {"name": "pw", "key": "pass"}}}])
    assert env_of(p, sources((SECRET, secret("pw", **{"pass": "s3cr3t\n"}))))["P"] == "s3cr3t\n"


def test_references_list_every_configmap_and_secret_a_pod_names() -> None:
    spec = {"containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "a"}},
                                                     {"secretRef": {"name": "b"}}],
                            "env": [{"name": "X", "valueFrom": {
                                "configMapKeyRef": {"name": "c", "key": "k"}}}]}],
            "initContainers": [{"name": "i", "env": [{"name": "Y", "valueFrom": {
                "secretKeyRef": {"name": "d", "key": "k"}}}]}],
            "volumes": [{"name": "v1", "configMap": {"name": "e"}},
                        {"name": "v2", "secret": {"secretName": "f"}},
                        {"name": "v3", "projected": {"sources": [
                            {"configMap": {"name": "g"}}, {"secret": {"name": "h"}},
                            {"downwardAPI": {"items": []}}]}}],
            "imagePullSecrets": [{"name": "i"}]}
    assert references.pod_references(spec) == {
        (CM, "a"), (SECRET, "b"), (CM, "c"), (SECRET, "d"), (CM, "e"), (SECRET, "f"),
        (CM, "g"), (SECRET, "h"), (SECRET, "i")}
