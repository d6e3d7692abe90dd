"""`rk agent`'s token file, and how `rk up` makes node tokens and agents' arguments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftkube.cli import agent as cli_agent
from raftkube.cli import local
from raftkube.cli.main import main

pytestmark = pytest.mark.unit

TOKEN = "a" * 20


def test_one_bare_token_is_the_single_nodes(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text(f"{TOKEN}\n")
    assert cli_agent.read_tokens(str(f), ["n1"]) == [("n1", TOKEN)]
    with pytest.raises(ValueError, match="h-1, h-2"):
        cli_agent.read_tokens(str(f), ["h-1", "h-2"])


def test_token_lines_give_each_node_its_own(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text(f"# nodes\n{'b' * 20},h-2\n{TOKEN},h-1\n{'c' * 20},other\n")
    assert cli_agent.read_tokens(str(f), ["h-1", "h-2"]) == [("h-1", TOKEN),
                                                              ("h-2", "b" * 20)]
    f.write_text("short,h-1\n")
    with pytest.raises(ValueError, match="at least 16"):
        cli_agent.read_tokens(str(f), ["h-1"])


def test_bad_flags_are_refused_with_what_was_wrong(tmp_path: Path) -> None:
    f = tmp_path / "t"
    f.write_text(f"{TOKEN}\n")
    base = ["agent", "--name", "n1", "--server", "http://127.0.0.1:1", "--token-file", str(f)]
    for extra, words in ((["--cpu", "lots"], "--cpu"), (["--label", "nolabel"], "--label"),
                         (["--max-pods", "0"], "--max-pods"), (["--address", "x"], "--address"),
                         (["--pod-cidr", "10.0.0.1/24"], "--pod-cidr"),
                         (["--lease-interval", "0"], "--lease-interval: must be"),
                         (["--relist-period", "-1"], "--relist-period: must be"),
                         (["--config-refresh", "nan"], "--config-refresh: must be"),
                         (["--crash-backoff-cap", "5"], "--crash-backoff-cap: 5.0 is less"),
                         (["--cluster-dns", "dns"], "--cluster-dns"),
                         (["--proxy-address", "gw"], "--proxy-address"),
                         (["--dns-upstream", "10.0.0.1:99999"], "--dns-upstream"),
                         (["--dns-upstream", "resolver"], "--dns-upstream"),
                         (["--cluster-domain", "."], "--cluster-domain")):
        result = CliRunner().invoke(main, base + extra)
        assert result.exit_code != 0 and words in result.output, (extra, result.output)


def test_node_tokens_are_made_once_and_kept(tmp_path: Path) -> None:
    state = str(tmp_path)
    local.ensure_node_tokens(state, ["n1", "n2"], masters_running=False)
    first = local.read_node_tokens(state)
    assert sorted(first) == ["n1", "n2"] and all(len(t) >= 16 for t in first.values())
    assert os.stat(tmp_path / local.NODE_TOKENS).st_mode & 0o077 == 0
    local.ensure_node_tokens(state, ["n1"], masters_running=True)  # nothing new: fine
    with pytest.raises(Exception, match="rk down"):
        local.ensure_node_tokens(state, ["n3"], masters_running=True)
    local.ensure_node_tokens(state, ["n1", "n2", "n3"], masters_running=False)
    again = local.read_node_tokens(state)
    assert {n: again[n] for n in first} == first and "n3" in again


@pytest.mark.parametrize(("index", "count", "cidr"), [
    (1, 1, "10.244.1.0/24"), (2, 1, "10.244.2.0/24"), (2, 50, "10.244.51.0/24"),
    (6, 100, "10.245.245.0/24")])
def test_agents_get_pod_ranges_that_never_overlap(index: int, count: int, cidr: str) -> None:
    argv = local.agent_argv("/s", f"n{index}", index, {"count": count}, ["http://a"])
    assert argv[argv.index("--pod-cidr") + 1] == cidr
    assert ("--count" in argv) == (count > 1)


def test_local_node_addresses_are_per_state_dir_and_per_agent(tmp_path: Path) -> None:
    from raftkube.agent import network

    a = [network.local_node_address(str(tmp_path / "a"), k) for k in (1, 2, 3)]
    b = network.local_node_address(str(tmp_path / "b"), 1)
    assert len(set(a)) == 3 and b not in a
    assert all(x.startswith("127.") and not x.startswith("127.0.") for x in a + [b])
    assert a[0] == network.local_node_address(str(tmp_path / "a"), 1)  # kept across runs
    assert network.is_local(a[0]) and not network.is_local("192.0.2.200")
    argv = local.agent_argv(str(tmp_path / "a"), "n2", 2, {}, ["http://127.0.0.1:1"])
    assert argv[argv.index("--address") + 1] == a[1]


def test_an_agent_given_its_certificate_serves_it_and_publishes_its_fingerprint(
        tmp_path: Path) -> None:
    import hashlib
    import ssl

    from raftkube.cli import certs

    pki = str(tmp_path / "pki")
    served = certs.ensure_serving(pki, "n1-agent", ["127.0.0.9"])
    context, fingerprint = cli_agent.serving_tls("n1", "127.0.0.9", served.cert,
                                                 served.key)
    with open(served.cert) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    assert fingerprint == hashlib.sha256(der).hexdigest()
    assert isinstance(context, ssl.SSLContext)
    # Without them, one made for the run, with a fingerprint of its own.
    _, own = cli_agent.serving_tls("n1", "127.0.0.9")
    assert len(own) == 64 and own != fingerprint


def test_bad_agent_certificate_flags_are_refused_by_name(tmp_path: Path) -> None:
    from raftkube.cli import certs

    pki = str(tmp_path / "pki")
    one = certs.ensure_serving(pki, "n1-agent", ["127.0.0.9"])
    two = certs.ensure_serving(pki, "n2-agent", ["127.0.0.9"])
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    for cert, key, flag in [(one.cert, None, "--tls-cert-file and --tls-private-key-file"),
                            (str(tmp_path / "nope.crt"), one.key, "--tls-cert-file: cannot"),
                            (str(junk), one.key, "--tls-cert-file: .* holds no PEM"),
                            (one.cert, two.key, "--tls-private-key-file: .* is not the key")]:
        with pytest.raises(ValueError, match=flag):
            cli_agent.serving_tls("n1", "127.0.0.9", cert, key)


def test_rk_up_gives_each_agent_a_certificate_of_the_clusters_ca(tmp_path: Path) -> None:
    from raftkube.cli import certs

    state = str(tmp_path)
    certs.ensure_ca(local.pki_dir(state))
    cert, key = local.agent_cert_files(state, "n1")
    assert local.CA_CERT == certs.CA_CERT
    argv = local.agent_argv(state, "n1", 1, {}, ["https://127.0.0.1:1"])
    assert "--tls-cert-file" not in argv  # none issued yet: the agent would make its own
    certs.ensure_serving(local.pki_dir(state), "n1-agent", ["127.0.0.9"])
    argv = local.agent_argv(state, "n1", 1, {}, ["https://127.0.0.1:1"])
    assert argv[argv.index("--tls-cert-file") + 1] == cert
    assert argv[argv.index("--tls-private-key-file") + 1] == key
    assert argv[argv.index("--ca-file") + 1] == os.path.join(local.pki_dir(state), "ca.crt")


def test_the_agent_command_does_not_load_cryptography() -> None:
    import subprocess
    import sys

    code = ("import sys; import raftkube.cli.main, raftkube.cli.agent, "
            "raftkube.agent.agent; print(sorted(m for m in sys.modules "
            "if m.startswith('cryptography')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_the_fingerprint_is_the_served_certificates_in_a_chain_file(tmp_path: Path) -> None:
    import hashlib
    import ssl

    from raftkube.cli import certs

    pki = str(tmp_path / "pki")
    served = certs.ensure_serving(pki, "n1-agent", ["127.0.0.9"])
    with open(served.cert) as f:
        leaf = f.read()
    with open(os.path.join(pki, "ca.crt")) as f:
        ca = f.read()
    chain = tmp_path / "chain.pem"  # text before it, then the leaf, then its CA
    chain.write_text("Bag Attributes\n    friendlyName: n1\n" + leaf + ca)
    _, fingerprint = cli_agent.serving_tls("n1", "127.0.0.9", str(chain), served.key)
    assert fingerprint == hashlib.sha256(ssl.PEM_cert_to_DER_cert(leaf)).hexdigest()
