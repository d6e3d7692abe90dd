"""The masters' APIs over HTTPS, on real `rk master` processes brought up by `rk up`:
clients holding the cluster CA are served, clients without it are refused, and a
master that comes back at a new address gets a certificate that covers it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
import yaml

from raftkube.cli import local
from raftkube.client import transport
from raftkube.client.errors import ClientError, NoServer
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


def test_rk_up_refuses_to_switch_to_plain_http_while_masters_serve_https(
        cluster: Cluster) -> None:
    layout = os.path.join(cluster.state_dir, "cluster.yaml")
    with open(layout) as f:
        before = f.read()
    with pytest.raises(ClientError, match="m1, m2, m3 run with HTTPS, and this rk up asks "
                                          "for plain HTTP: `rk down"):
        local.up(state_dir=cluster.state_dir, masters=3, agents=0, insecure_http=True)
    with open(layout) as f:
        assert f.read() == before  # nothing was changed


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


async def test_a_master_with_open_watches_stops_promptly_on_sigterm(cluster: Cluster) -> None:
    """Watch streams never finish by themselves: a stopping master cancels them after a
    short grace (and does not wait out TLS close_notify); it held on for two minutes."""
    c = cluster
    name = c.names[0]
    async with c:
        assert c.session is not None
        watch = await c.session.get(c.url[name] + "/api/v1/namespaces/default/pods",
                                    params={"watch": "true"})
        assert watch.status == 200
        try:
            pid = c.pid(name)
            assert pid is not None
            started_at = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            while local._running(pid) and time.monotonic() - started_at < 20:
                await asyncio.sleep(0.05)
            assert not local._running(pid), "the master did not stop within 20 s"
            assert await watch.content.read() == b""  # the stream was ended, not cut off
        finally:
            watch.close()
    assert c.up() == [name]
