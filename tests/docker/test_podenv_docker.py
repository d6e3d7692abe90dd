"""What a real container gets from the API, on the real Docker engine: ConfigMap and
Secret values as env and as files, fieldRefs (the pod IP the sandbox got), `$(VAR)` in
the command, an emptyDir shared by two containers, a ConfigMap update seen inside the
running container without a restart, and a missing key that holds the container in
CreateContainerConfigError until it is added; downwardAPI, projected and subPath files,
and a label change seen in the downward API file of the running container."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Iterator
from typing import Any

import docker
import pytest

from raftkube.agent import dockerspec as ds
from raftkube.api import kinds
from raftkube.cli import local
from raftkube.client import rest
from tests.cluster.harness import Cluster, pod_where, rest_client, wait_for
from tests.docker import conftest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

Obj = dict[str, Any]
IMAGE = "busybox:1.36"


@pytest.fixture(scope="module")
def ecluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and one Docker agent that reads pods' ConfigMaps every 2 s."""
    conftest.engine().close()
    c = Cluster(str(tmp_path_factory.mktemp("podenv-docker")))
    try:
        conftest.start(c, 1, ["--config-refresh", "2"])
        yield c
    finally:
        conftest.stop(c)


@pytest.fixture
async def api(ecluster: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(ecluster) as client:
        yield client


def running(p: Obj) -> bool:
    statuses = (p.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def container(client: docker.DockerClient, c: Cluster, pod: str, name: str) -> Any:
    cid = local.cluster_id(c.state_dir)
    found = [x for x in client.containers.list(filters={"label": [
        f"{ds.CLUSTER}={cid}", f"{ds.POD_NAME}={pod}", f"{ds.CONTAINER_NAME}={name}"]})]
    assert len(found) == 1, found
    return found[0]


def run_in(client: docker.DockerClient, c: Cluster, pod: str, name: str,
           *command: str) -> str:
    code, out = container(client, c, pod, name).exec_run(list(command))
    assert code == 0, out
    text: str = out.decode()
    return text


async def test_configmaps_secrets_fields_and_shared_volumes_in_real_containers(
        ecluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.CONFIGMAP, "default", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
        "data": {"mode": "blue", "app.ini": "[x]\ny=1\n"}})
    await api.create(kinds.SECRET, "default", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "pw"},
        "data": {"password": base64.b64encode(b"hunter2").decode()}})
    writer = {
        "name": "writer", "image": IMAGE,
        "command": ["sh", "-c", "echo $(GREETING) from $(POD_NAME) > /shared/note; "
                                "exec sleep 3600"],
        "env": [{"name": "GREETING", "value": "hello"},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.name"}}},
                {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": "pw", "key": "password"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                    "resource": "limits.memory", "divisor": "1Mi"}}}],
        "envFrom": [{"configMapRef": {"name": "app"}, "prefix": "APP_"}],
        "resources": {"limits": {"memory": "64Mi"}},
        "volumeMounts": [{"name": "shared", "mountPath": "/shared"},
                         {"name": "conf", "mountPath": "/etc/app"},
                         {"name": "secret", "mountPath": "/etc/secret"}]}
    reader = {"name": "reader", "image": IMAGE, "command": ["sleep", "3600"],
              "volumeMounts": [{"name": "shared", "mountPath": "/data", "readOnly": True}]}
    await api.create(kinds.POD, "default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "envy"},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1,
                 "containers": [writer, reader],
                 "volumes": [{"name": "shared", "emptyDir": {}},
                             {"name": "conf", "configMap": {"name": "app"}},
                             {"name": "secret", "secret": {"secretName": "pw",
                                                           "defaultMode": 0o400}}]}})
    p = await pod_where(api, "envy", running, what="envy running")

    env = dict(line.split("=", 1) for line in
               run_in(dockerc, ecluster, "envy", "writer", "env").splitlines() if "=" in line)
    assert env["POD_NAME"] == "envy"
    assert env["POD_IP"] == p["status"]["podIP"]
    assert env["NODE"] == "n1"
    assert env["PASSWORD"] == "hunter2"
    assert env["APP_mode"] == "blue"
    assert env["MEM"] == "64"
    assert "APP_app.ini" in env  # a dotted name is a valid variable name in Kubernetes

    # The emptyDir is one directory for both containers.
    async def note() -> str | None:
        text = run_in(dockerc, ecluster, "envy", "reader", "cat", "/data/note")
        return text or None

    assert await wait_for(note, timeout=30, what="the note") == "hello from envy\n"
    code, _ = container(dockerc, ecluster, "envy", "reader").exec_run(
        ["touch", "/data/nope"])
    assert code != 0  # mounted read-only in this container

    assert run_in(dockerc, ecluster, "envy", "writer", "cat", "/etc/app/mode") == "blue"
    assert run_in(dockerc, ecluster, "envy", "writer", "cat", "/etc/secret/password") == \
        "hunter2"
    mode = run_in(dockerc, ecluster, "envy", "writer", "stat", "-L", "-c", "%a",
                  "/etc/secret/password").strip()
    assert mode == "400"
    code, _ = container(dockerc, ecluster, "envy", "writer").exec_run(
        ["sh", "-c", "echo x > /etc/app/mode"])
    assert code != 0  # ConfigMap volumes are read-only

    # An update of the ConfigMap reaches the running container's file, not its env.
    before = container(dockerc, ecluster, "envy", "writer").id
    cm = await api.get(kinds.CONFIGMAP, "default", "app")
    cm["data"]["mode"] = "green"
    await api.update(kinds.CONFIGMAP, cm)

    async def updated() -> bool:
        return run_in(dockerc, ecluster, "envy", "writer", "cat", "/etc/app/mode") == "green"

    await wait_for(updated, timeout=60, what="the file updated in the container")
    assert container(dockerc, ecluster, "envy", "writer").id == before
    assert "APP_mode=blue" in run_in(dockerc, ecluster, "envy", "writer", "env")
    await api.delete(kinds.POD, "default", "envy")


async def test_a_missing_key_waits_in_create_container_config_error(
        ecluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.CONFIGMAP, "default", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later"},
        "data": {"other": "1"}})
    await api.create(kinds.POD, "default", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "patient"},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": IMAGE, "command": ["sh", "-c", "echo $WANTED; sleep 3600"],
            "env": [{"name": "WANTED", "valueFrom": {"configMapKeyRef": {
                "name": "later", "key": "wanted"}}}]}]}})

    def config_error(p: Obj) -> bool:
        statuses = (p.get("status") or {}).get("containerStatuses") or [{}]
        waiting = (statuses[0].get("state") or {}).get("waiting") or {}
        return bool(waiting.get("reason") == "CreateContainerConfigError")

    p = await pod_where(api, "patient", config_error, what="CreateContainerConfigError")
    assert p["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == \
        "couldn't find key wanted in ConfigMap default/later"
    cid = local.cluster_id(ecluster.state_dir)
    made = dockerc.containers.list(all=True, filters={"label": [
        f"{ds.CLUSTER}={cid}", f"{ds.POD_NAME}=patient", f"{ds.KIND}={ds.CONTAINER}"]})
    assert made == []  # nothing was created for it

    cm = await api.get(kinds.CONFIGMAP, "default", "later")
    cm["data"]["wanted"] = "at last"
    await api.update(kinds.CONFIGMAP, cm)
    await pod_where(api, "patient", running, what="patient running once the key exists")

    async def logged() -> str | None:
        text: str = container(dockerc, ecluster, "patient", "c").logs().decode()
        return text or None

    assert await wait_for(logged, timeout=30, what="its output") == "at last\n"
    await api.delete(kinds.POD, "default", "patient")


async def test_downward_api_projected_and_sub_path_files(
        ecluster: Cluster, api: rest.RestClient, dockerc: docker.DockerClient) -> None:
    await api.create(kinds.CONFIGMAP, "default", {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"},
        "data": {"index.html": "<h1>hi</h1>\n", "site.conf": "port=80\n"}})
    await api.create(kinds.SECRET, "default", {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls"},
        "data": {"key": base64.b64encode(b"k3y").decode()}})
    await api.create(kinds.POD, "default", {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "told", "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": IMAGE, "command": ["sleep", "3600"],
            "resources": {"limits": {"cpu": "250m"}},
            "volumeMounts": [
                {"name": "info", "mountPath": "/etc/podinfo"},
                {"name": "all", "mountPath": "/etc/all"},
                {"name": "site", "mountPath": "/etc/site.conf", "subPath": "site.conf"}]}],
            "volumes": [
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                    {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                    {"path": "cpu", "resourceFieldRef": {
                        "containerName": "c", "resource": "limits.cpu", "divisor": "1m"}}]}},
                {"name": "all", "projected": {"sources": [
                    {"configMap": {"name": "web", "items": [
                        {"key": "index.html", "path": "html/index.html"}]}},
                    {"secret": {"name": "tls"}}]}},
                {"name": "site", "configMap": {"name": "web"}}]}})
    await pod_where(api, "told", running, what="told running")

    def cat(path: str) -> str:
        return run_in(dockerc, ecluster, "told", "c", "cat", path)

    assert cat("/etc/podinfo/labels") == 'app="web"\ntier="front"'
    assert cat("/etc/podinfo/name") == "told"
    assert cat("/etc/podinfo/cpu") == "250"
    assert cat("/etc/all/html/index.html") == "<h1>hi</h1>\n"
    assert cat("/etc/all/key") == "k3y"
    assert cat("/etc/site.conf") == "port=80\n"  # a file, mounted by itself

    # A label change reaches the downward API file of the running container.
    await api.patch(kinds.POD, "default", "told", {"metadata": {"labels": {"tier": "back"}}})

    async def relabelled() -> bool:
        return cat("/etc/podinfo/labels") == 'app="web"\ntier="back"'

    await wait_for(relabelled, timeout=60, what="the labels file updated")
    await api.delete(kinds.POD, "default", "told")
