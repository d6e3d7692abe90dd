"""Kubernetes' official Python client (`kubernetes` on PyPI), unchanged, against real
`rk master` processes: version, Tables, patches of every type, scale, delete answers
and watch, as its users call them: over HTTPS, verified against the cluster CA, with
the admin bearer token, configured both by hand and from the kubeconfig `rk up` wrote."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config, watch

from tests.cluster.harness import Cluster

pytestmark = pytest.mark.cluster
NS = "default"


@pytest.fixture(scope="module")
def cluster_apis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One 3-master cluster for the module, and an ApiClient per master."""
    c = Cluster(str(tmp_path_factory.mktemp("k8s-clients")))
    apis: dict[str, client.ApiClient] = {}
    try:
        c.up()
        for name, url in c.url.items():
            conf = client.Configuration(host=url)
            conf.api_key = {"authorization": c.token}
            conf.api_key_prefix = {"authorization": "Bearer"}
            conf.ssl_ca_cert = os.path.join(c.state_dir, "pki", "ca.crt")
            apis[name] = client.ApiClient(conf)
        apis["kubeconfig"] = config.new_client_from_config(config_file=c.kubeconfig)
        yield apis
    finally:
        for api in apis.values():
            api.close()
        c.down()


def apps(apis: dict[str, Any], name: str = "m1") -> client.AppsV1Api:
    return client.AppsV1Api(apis[name])


def core(apis: dict[str, Any], name: str = "m1") -> client.CoreV1Api:
    return client.CoreV1Api(apis[name])


def deployment(name: str, replicas: int = 1) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas, selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[
                    client.V1Container(name="app", image="app:1",
                                       env=[client.V1EnvVar(name="A", value="1")]),
                    client.V1Container(name="side", image="side:1")]))))


def test_version_from_every_master_without_a_token(cluster_apis: dict[str, Any]) -> None:
    for name in cluster_apis:
        info = client.VersionApi(cluster_apis[name]).get_code()
        assert info.git_version == "v1.30.0-raftkube" and info.major == "1"
        assert info.minor == "30" and info.platform
    conf = client.Configuration(host=cluster_apis["m2"].configuration.host)
    conf.ssl_ca_cert = cluster_apis["m2"].configuration.ssl_ca_cert
    anonymous = client.ApiClient(conf)
    try:
        assert client.VersionApi(anonymous).get_code().git_version == "v1.30.0-raftkube"
    finally:
        anonymous.close()


def table(api: client.ApiClient, path: str) -> dict[str, Any]:
    """A GET asking for a Table, as kubectl asks, sent by the client's own transport (its
    typed methods have no Table model)."""
    conf = api.configuration
    resp = api.call_api("GET", conf.host + path, header_params={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io",
        "Authorization": conf.get_api_key_with_prefix("BearerToken", alias="authorization")})
    resp.read()
    assert resp.status == 200, resp.data
    result: dict[str, Any] = json.loads(resp.data)
    return result


def test_tables_with_kubernetes_columns(cluster_apis: dict[str, Any]) -> None:
    apps(cluster_apis).create_namespaced_deployment(NS, deployment("tab", replicas=2))
    core(cluster_apis).create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="tab"), data={"a": "1", "b": "2"}))
    got = table(cluster_apis["m3"], "/apis/apps/v1/namespaces/default/deployments")
    assert [c["name"] for c in got["columnDefinitions"]] == [
        "Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
    (row,) = [r for r in got["rows"] if r["cells"][0] == "tab"]
    assert row["cells"][1].endswith("/2") and row["cells"][6] == "app:1,side:1"
    cms = table(cluster_apis["m2"], "/api/v1/namespaces/default/configmaps/tab")
    assert cms["rows"][0]["cells"][:2] == ["tab", "2"]
    assert cms["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_patches_strategic_json_and_merge(cluster_apis: dict[str, Any]) -> None:
    api = apps(cluster_apis)
    api.create_namespaced_deployment(NS, deployment("pat"))
    # A dict body: the client sends a strategic merge patch; containers merge by name,
    # env by name.
    patched = api.patch_namespaced_deployment("pat", NS, {"spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "app:2",
                        "env": [{"name": "B", "value": "2"}]}]}}}})
    by_name = {c.name: c for c in patched.spec.template.spec.containers}
    assert by_name["app"].image == "app:2" and by_name["side"].image == "side:1"
    assert [(e.name, e.value) for e in by_name["app"].env] == [("A", "1"), ("B", "2")]
    # A list body: a JSON patch; a failed test is a 422 and writes nothing.
    patched = apps(cluster_apis, "m2").patch_namespaced_deployment("pat", NS, [
        {"op": "test", "path": "/spec/template/spec/containers/0/image", "value": "app:2"},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image",
         "value": "side:2"}])
    assert patched.spec.template.spec.containers[1].image == "side:2"
    with pytest.raises(client.ApiException) as e:
        api.patch_namespaced_deployment("pat", NS, [
            {"op": "test", "path": "/spec/replicas", "value": 7},
            {"op": "replace", "path": "/spec/replicas", "value": 9}])
    assert e.value.status == 422
    assert api.read_namespaced_deployment("pat", NS).spec.replicas == 1


def test_scale_subresource(cluster_apis: dict[str, Any]) -> None:
    api = apps(cluster_apis)
    api.create_namespaced_deployment(NS, deployment("sc"))
    scale = api.read_namespaced_deployment_scale("sc", NS)
    assert scale.kind == "Scale" and scale.spec.replicas == 1
    assert scale.status.selector == "app=sc"
    api.patch_namespaced_deployment_scale("sc", NS, {"spec": {"replicas": 3}})
    assert apps(cluster_apis, "m3").read_namespaced_deployment("sc", NS).spec.replicas == 3
    scale = api.read_namespaced_deployment_scale("sc", NS)
    scale.metadata.resource_version = None  # the controller writes status meanwhile
    scale.spec.replicas = 2
    assert api.replace_namespaced_deployment_scale("sc", NS, scale).spec.replicas == 2
    with pytest.raises(client.ApiException) as e:
        api.patch_namespaced_deployment_scale("sc", NS, {"spec": {"replicas": -1}})
    assert e.value.status == 422 and "spec.replicas" in e.value.body
    assert api.read_namespaced_deployment("sc", NS).spec.replicas == 2


def test_delete_answers_a_status_or_the_deferred_object(cluster_apis: dict[str, Any]) -> None:
    v1 = core(cluster_apis)
    made = v1.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="gone")))
    # This client reads a delete's answer as a plain object: a Status, or the object.
    status = v1.delete_namespaced_config_map("gone", NS)
    assert status["kind"] == "Status" and status["status"] == "Success"
    assert status["details"] == {"name": "gone", "group": "", "kind": "configmaps",
                                 "uid": made.metadata.uid}
    v1.create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="held", finalizers=["example.com/hold"])))
    held = v1.delete_namespaced_config_map("held", NS)
    assert held["kind"] == "ConfigMap" and held["metadata"]["deletionTimestamp"]
    v1.patch_namespaced_config_map("held", NS, {"metadata": {"finalizers": None}})


def test_watch_from_another_master(cluster_apis: dict[str, Any]) -> None:
    v1 = core(cluster_apis, "m2")
    seen: list[tuple[str, str]] = []
    started = threading.Event()

    def follow() -> None:
        w = watch.Watch()
        for ev in w.stream(v1.list_namespaced_config_map, NS, label_selector="w=1",
                           timeout_seconds=60):
            started.set()
            seen.append((ev["type"], ev["object"].metadata.name))
            if ("DELETED", "w2") in seen:
                w.stop()

    core(cluster_apis).create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="w1", labels={"w": "1"})))
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    assert started.wait(30), "the watch sent nothing"
    core(cluster_apis, "m3").create_namespaced_config_map(NS, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="w2", labels={"w": "1"})))
    core(cluster_apis).delete_namespaced_config_map("w2", NS)
    t.join(60)
    assert not t.is_alive()
    assert seen == [("ADDED", "w1"), ("ADDED", "w2"), ("DELETED", "w2")]


def test_openapi_v3_from_every_master_with_the_same_etag(cluster_apis: dict[str, Any]) -> None:
    etags = set()
    for api in cluster_apis.values():
        conf = api.configuration
        resp = api.call_api("GET", conf.host + "/openapi/v3/apis/apps/v1", header_params={
            "Authorization": conf.get_api_key_with_prefix("BearerToken", alias="authorization")})
        resp.read()
        assert resp.status == 200
        doc = json.loads(resp.data)
        assert "io.k8s.api.apps.v1.Deployment" in doc["components"]["schemas"]
        etags.add(resp.getheader("ETag"))
    assert len(etags) == 1 and None not in etags
