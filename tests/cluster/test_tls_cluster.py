"""The masters' APIs over HTTPS, on real `rk master` processes brought up by `rk up`:
clients holding the cluster CA are served, clients without it are refused, and a
master that comes back at a new address gets a certificate that covers it."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from raftkube.cli import local
from raftkube.client import transport
from raftkube.client.errors import NoServer
from tests.cluster.harness import RK, Cluster, started

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    yield from started(tmp_path_factory, "tls")


def rk_with(config: dict[str, object], path: str, *args: str) -> subprocess.CompletedProcess[str]:
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return subprocess.run([RK, "--request-timeout", "5", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "RK_CONFIG": path})


async def test_every_api_is_https_and_a_client_without_the_ca_is_refused(
        cluster: Cluster, tmp_path: pytest.TempPathFactory) -> None:
    c = cluster
    assert all(url.startswith("https://") for url in c.url.values())
    for name, url in c.url.items():
        async with transport.Transport([url], c.token, ca=c.ca, wait=0) as tp:
            assert (await tp.request("GET", "/readyz")).status == 200, name
        async with transport.Transport([url], c.token, wait=0) as tp:
            with pytest.raises(NoServer, match="certificate verify failed"):
                await tp.request("GET", "/readyz")
    with open(os.path.join(c.state_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    ok = rk_with(config, str(tmp_path / "ok.yaml"), "get", "namespaces")
    assert ok.returncode == 0 and "kube-system" in ok.stdout, ok.stderr
    without = {k: v for k, v in config.items() if k != "ca"}
    refused = rk_with(without, str(tmp_path / "no-ca.yaml"), "get", "namespaces")
    assert refused.returncode == 1 and "certificate verify failed" in refused.stderr
    # Plain HTTP to an HTTPS master gets nothing (the connection is closed).
    plain = {**config, "servers": [u.replace("https://", "http://") for u in c.url.values()]}
    refused = rk_with(plain, str(tmp_path / "plain.yaml"), "get", "namespaces")
    assert refused.returncode == 1


async def test_a_master_back_at_a_new_address_gets_a_certificate_for_it(
        cluster: Cluster) -> None:
    c = cluster
    name = "m3"
    pki = os.path.join(c.state_dir, "pki")
    with open(os.path.join(pki, "m1.crt"), "rb") as f:
        m1_cert = f.read()
    c.kill(name, sig=signal.SIGTERM)
    layout = local.load_layout(c.state_dir, 3)
    member = next(m for m in layout["masters"] if m["name"] == name)
    port = member["api"].rpartition(":")[2]
    member["api"] = f"127.0.0.3:{port}"  # another loopback address, the same port
    local._write(os.path.join(c.state_dir, "cluster.yaml"), yaml.safe_dump(layout))
    assert c.up() == [name]  # rk up starts it, and rewrites config.yaml and kubeconfig
    new_url = f"https://127.0.0.3:{port}"
    assert c.url[name] == new_url
    async with transport.Transport([new_url], c.token, ca=c.ca, wait=10) as tp:
        assert (await tp.request("GET", "/readyz")).status == 200
    with open(c.kubeconfig) as f:
        kubeconfig = yaml.safe_load(f)
    servers = {x["name"]: x["cluster"]["server"] for x in kubeconfig["clusters"]}
    assert servers[f"raftkube-{name}"] == new_url
    # The others kept their certificates: only what no longer covers is issued again.
    with open(os.path.join(pki, "m1.crt"), "rb") as f:
        assert f.read() == m1_cert
