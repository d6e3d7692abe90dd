"""TLS on the API: the cluster CA and serving certificates (`rk certs`), `rk master`'s
flags, the server (a handshake within the cap), the client's verification, the
kubeconfig and config.yaml's `ca`."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from click.testing import CliRunner
from cryptography import x509

from raftkube.apiserver import serving
from raftkube.cli import certs, kubeconfig, master
from raftkube.cli import main as cli_main
from raftkube.client import config as cfg
from raftkube.client import transport
from raftkube.client.errors import ClientError, NoServer

pytestmark = pytest.mark.unit


def sans(path: str) -> set[str]:
    cert = x509.load_pem_x509_certificate(Path(path).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(n.value) for n in names}


# ---- certificates -----------------------------------------------------------------------

def test_the_ca_is_made_once_and_a_serving_certificate_covers_its_addresses(
        tmp_path: Path) -> None:
    pki = str(tmp_path / "pki")
    ca = certs.ensure_ca(pki)
    ca_bytes = Path(ca).read_bytes()
    assert certs.ensure_ca(pki) == ca and Path(ca).read_bytes() == ca_bytes
    assert os.stat(os.path.join(pki, certs.CA_KEY)).st_mode & 0o077 == 0
    first = certs.ensure_serving(pki, "m1", ["10.0.0.11", "m1.example"])
    assert first.issued
    assert sans(first.cert) == {"10.0.0.11", "m1.example", "127.0.0.1", "localhost"}
    assert os.stat(first.key).st_mode & 0o077 == 0
    # The same addresses: kept, byte for byte (clients that pinned it still work).
    pem = Path(first.cert).read_bytes()
    again = certs.ensure_serving(pki, "m1", ["10.0.0.11"])
    assert not again.issued and Path(again.cert).read_bytes() == pem
    # A re-addressed master: issued again, covering the new address.
    moved = certs.ensure_serving(pki, "m1", ["10.0.0.12"])
    assert moved.issued and "10.0.0.12" in sans(moved.cert)
    # A new CA (the old one deleted): issued again by it.
    os.remove(ca)
    os.remove(os.path.join(pki, certs.CA_KEY))
    certs.ensure_ca(pki)
    assert certs.ensure_serving(pki, "m1", ["10.0.0.12"]).issued


def test_half_a_ca_is_never_replaced(tmp_path: Path) -> None:
    pki = str(tmp_path)
    ca = certs.ensure_ca(pki)
    kept = Path(ca).read_bytes()
    os.remove(os.path.join(pki, certs.CA_KEY))  # ca.crt copied in alone, say
    with pytest.raises(certs.CertError, match="ca.key is missing"):
        certs.ensure_serving(pki, "m1", [])
    assert Path(ca).read_bytes() == kept


@pytest.mark.parametrize("host, words", [
    ("bad host!", "'bad host!' is neither an IP address nor a DNS name"),
    ("a..b", "neither an IP address nor a DNS name"),
    ("bücher.example", "neither an IP address nor a DNS name"),
    ("-bad-.x", "neither an IP address nor a DNS name"),
])
def test_a_bad_san_is_named(tmp_path: Path, host: str, words: str) -> None:
    with pytest.raises(certs.CertError, match="--san: .*" + words.split("'")[-1].strip()):
        certs.ensure_serving(str(tmp_path), "m1", [host])
    assert not (tmp_path / "m1.crt").exists()


def test_rk_certs_issues_then_keeps(tmp_path: Path) -> None:
    argv = ["certs", "--dir", str(tmp_path), "--name", "m1", "--san", "192.0.2.7"]
    first = CliRunner().invoke(cli_main.main, argv)
    assert first.exit_code == 0, first.output
    assert first.output.startswith("issued ")
    second = CliRunner().invoke(cli_main.main, argv)
    assert second.output.startswith("kept ")
    bad = CliRunner().invoke(cli_main.main, ["certs", "--dir", str(tmp_path), "--name", "m1",
                                             "--san", "no way"])
    assert bad.exit_code == 1 and "--san: 'no way'" in bad.output
    assert "192.0.2.7" in sans(str(tmp_path / "m1.crt"))  # the bad call changed nothing


# ---- rk master's flags ------------------------------------------------------------------

def test_master_needs_a_certificate_or_insecure_http_on_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--tls-cert-file and --tls-private-key-file are"):
        master.tls_options(None, None, False, "127.0.0.1:1")
    with pytest.raises(ValueError, match="--insecure-http: only for a loopback --api"):
        master.tls_options(None, None, True, "10.0.0.1:6443")
    with pytest.raises(ValueError, match="--insecure-http: not with --tls-cert-file"):
        master.tls_options("c", "k", True, "127.0.0.1:1")
    assert master.tls_options(None, None, True, "127.0.0.5:1") is None
    assert master.tls_options(None, None, True, "localhost:1") is None
    with pytest.raises(ValueError, match="--tls-cert-file: cannot read .*nothing.crt"):
        master.tls_options(str(tmp_path / "nothing.crt"), str(tmp_path / "k"), False, "h:1")
    serving_pair = certs.ensure_serving(str(tmp_path), "m1", [])
    other = certs.ensure_serving(str(tmp_path), "m2", [])
    with pytest.raises(ValueError, match="are not a PEM certificate and its private key"):
        master.tls_options(serving_pair.cert, other.key, False, "127.0.0.1:1")
    tls = master.tls_options(serving_pair.cert, serving_pair.key, False, "127.0.0.1:1")
    assert tls == master.Tls(serving_pair.cert, serving_pair.key)
    # The leader's loops reach the master at its --api host (loopback for 0.0.0.0):
    # a certificate that does not name it is refused before anything starts.
    with pytest.raises(ValueError, match="--tls-cert-file: .* does not name 10.0.0.9"):
        master.tls_options(serving_pair.cert, serving_pair.key, False, "10.0.0.9:6443")
    assert master.tls_options(serving_pair.cert, serving_pair.key, False, "0.0.0.0:6443")


def test_rk_master_without_tls_flags_says_which_to_give(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 24)
    result = CliRunner().invoke(cli_main.main, [
        "master", "--name", "m1", "--api", "127.0.0.1:1", "--raft", "127.0.0.1:2",
        "--data-dir", str(tmp_path / "d"), "--token-file", str(token)])
    assert result.exit_code == 1
    assert "--tls-cert-file and --tls-private-key-file are required" in result.output
    assert not (tmp_path / "d").exists()


# ---- the server and the client ----------------------------------------------------------

async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[str, str, serving.Runner]]:
    """An HTTPS server through serving.start, capped at 2 connections: (url, CA PEM)."""
    pki = str(tmp_path / "pki")
    pair = certs.ensure_serving(pki, "m1", [])
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    runner = await serving.start(app, host="127.0.0.1", port=port, max_connections=2,
                                 ssl_context=master.server_context(master.Tls(pair.cert,
                                                                              pair.key)))
    try:
        yield f"https://127.0.0.1:{port}", certs.ca_pem(pki), runner
    finally:
        await runner.cleanup()


async def test_a_client_with_the_ca_is_served_and_one_without_is_refused(
        https: tuple[str, str, serving.Runner], tmp_path: Path) -> None:
    url, ca, _ = https
    async with transport.Transport([url], "t" * 24, ca=ca, wait=0) as tp:
        answer = await tp.request("GET", "/healthz")
        assert (answer.status, answer.body) == (200, b"ok")
    async with transport.Transport([url], "t" * 24, wait=0) as tp:
        with pytest.raises(NoServer, match="certificate verify failed"):
            await tp.request("GET", "/healthz")
    # Another cluster's CA does not do either.
    other = Path(certs.ensure_ca(str(tmp_path / "other"))).read_text()
    async with transport.Transport([url], "t" * 24, ca=other, wait=0) as tp:
        with pytest.raises(NoServer, match="certificate verify failed"):
            await tp.request("GET", "/healthz")


async def test_connections_over_the_cap_are_refused_before_any_handshake(
        https: tuple[str, str, serving.Runner]) -> None:
    """Two idle connections (no handshake yet) fill a cap of 2: the third is answered a
    plain 503 and closed at once, so idle TLS clients cannot hold descriptors beyond it."""
    url, ca, runner = https
    host, port = url.removeprefix("https://").rsplit(":", 1)
    loop = asyncio.get_running_loop()
    idle = []
    for _ in range(2):
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, (host, int(port)))
        idle.append(s)
    server = runner.server
    assert isinstance(server, serving.CappedServer)
    for _ in range(100):
        if server.accepted >= 2:
            break
        await asyncio.sleep(0.01)
    extra = socket.socket()
    extra.setblocking(False)
    try:
        await loop.sock_connect(extra, (host, int(port)))
        got = await asyncio.wait_for(loop.sock_recv(extra, 4096), 5)
        assert got.startswith(b"HTTP/1.1 503 ")
        assert server.refused == 1
    finally:
        extra.close()
        for s in idle:
            s.close()
    # Once they are gone, a TLS client gets in again.
    context = ssl.create_default_context(cadata=ca)
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
            break
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.05)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200 ")
    writer.close()


# ---- client configs ---------------------------------------------------------------------

def test_config_yaml_carries_the_ca_and_bad_values_are_named(tmp_path: Path) -> None:
    pem = certs.ca_pem(os.path.dirname(certs.ensure_ca(str(tmp_path / "pki"))))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"servers": ["https://127.0.0.1:1"], "token": "t",
                                    "ca": pem}))
    assert cfg.load_config(str(path)).ca == pem
    path.write_text(yaml.safe_dump({"servers": ["https://127.0.0.1:1"], "token": "t",
                                    "ca": "not a certificate"}))
    with pytest.raises(ClientError, match="config .*: ca: expected a PEM certificate"):
        cfg.load_config(str(path))
    broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    path.write_text(yaml.safe_dump({"servers": ["https://127.0.0.1:1"], "token": "t",
                                    "ca": broken}))
    with pytest.raises(ClientError, match="config .*: ca: not a PEM certificate"):
        cfg.load_config(str(path))
    path.write_text(yaml.safe_dump({"servers": ["127.0.0.1:1"], "token": "t"}))
    with pytest.raises(ClientError, match="servers: '127.0.0.1:1' is not an http"):
        cfg.load_config(str(path))
    # Plain HTTP only to loopback: the token would go in clear to whatever answers.
    path.write_text(yaml.safe_dump({"servers": ["http://10.0.0.1:2379"], "token": "t"}))
    with pytest.raises(ClientError, match="plain HTTP is for loopback addresses only"):
        cfg.load_config(str(path))
    path.write_text(yaml.safe_dump({"servers": ["http://127.0.0.1:1", "http://localhost:2"],
                                    "token": "t"}))
    assert cfg.load_config(str(path)).servers == ["http://127.0.0.1:1", "http://localhost:2"]


def test_the_kubeconfig_has_a_context_per_master_and_a_default(tmp_path: Path) -> None:
    ca = Path(certs.ensure_ca(str(tmp_path / "pki"))).read_text()
    config = cfg.Config(["https://10.0.0.11:6443", "https://10.0.0.12:6443"], "tok", ca=ca)
    doc = kubeconfig.build(config)
    assert doc["current-context"] == "raftkube"
    clusters = {c["name"]: c["cluster"] for c in doc["clusters"]}
    assert clusters["raftkube"]["server"] == "https://10.0.0.11:6443"
    assert clusters["raftkube-m2"]["server"] == "https://10.0.0.12:6443"
    assert base64.b64decode(clusters["raftkube-m1"]["certificate-authority-data"]).decode() \
        == config.ca
    assert {c["name"] for c in doc["contexts"]} == {"raftkube", "raftkube-m1", "raftkube-m2"}
    assert doc["users"] == [{"name": kubeconfig.USER, "user": {"token": "tok"}}]
    # `rk config kubeconfig` prints the same for the configured cluster.
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"servers": config.servers, "token": "tok",
                                    "ca": config.ca}))
    printed = CliRunner().invoke(cli_main.main, ["config", "kubeconfig"],
                                 env={"RK_CONFIG": str(path)})
    assert printed.exit_code == 0, printed.output
    assert yaml.safe_load(printed.output) == doc
