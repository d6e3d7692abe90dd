"""`rk master`'s option files and values: refused with the option and the line named,
before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from raftkube.cli import main as cli_main
from raftkube.cli import master
from raftkube.controllers import base as controllers

pytestmark = pytest.mark.unit


def test_node_tokens_are_token_comma_node_lines(tmp_path: Path) -> None:
    path = tmp_path / "nodes"
    path.write_text("# agents\n\n" + "a" * 24 + ",n1\n " + "b" * 24 + " , n2 \n")
    assert master.read_node_tokens(str(path)) == {"a" * 24: "n1", "b" * 24: "n2"}


@pytest.mark.parametrize(("text", "words"), [
    ("short,n1\n", ":1: expected `token,node-name` with a token of at least 16"),
    ("# ok\n" + "a" * 24 + "\n", ":2: expected `token,node-name`"),
    ("a" * 24 + ",\n", ":1: expected"),
])
def test_a_bad_node_token_line_is_named(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "nodes"
    path.write_text(text)
    with pytest.raises(ValueError, match="--node-token-file") as e:
        master.read_node_tokens(str(path))
    assert words in str(e.value)
    with pytest.raises(ValueError, match="cannot read"):
        master.read_node_tokens(str(tmp_path / "missing"))


@pytest.mark.parametrize(("cidr", "words"), [
    ("10.96.0.0/33", "--service-cluster-ip-range"),
    ("10.96.0.1/16", "has host bits set"),
    ("10.96.0.0/30", "the range is too small"),
    ("nonsense", "--service-cluster-ip-range"),
])
def test_a_bad_service_range_is_refused(cidr: str, words: str) -> None:
    with pytest.raises(ValueError, match="service-cluster-ip-range") as e:
        master.check_cidr(cidr)
    assert words in str(e.value)
    master.check_cidr("10.96.0.0/16")


def test_rk_master_refuses_a_bad_range_before_starting(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 24)
    result = CliRunner().invoke(cli_main.main, [
        "master", "--name", "m1", "--api", "127.0.0.1:1", "--raft", "127.0.0.1:2",
        "--data-dir", str(tmp_path / "d"), "--token-file", str(token),
        "--service-cluster-ip-range", "10.96.0.0/30"])
    assert result.exit_code != 0
    assert "--service-cluster-ip-range: the range is too small" in result.output + (
        result.stderr or "")
    assert not (tmp_path / "d").exists()


def test_rk_master_hands_the_node_lifecycle_flags_to_the_leader_loops(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 24)
    seen: dict[str, object] = {}
    monkeypatch.setattr(master, "run", lambda **kw: seen.update(kw))
    argv = ["master", "--name", "m1", "--api", "127.0.0.1:1", "--raft", "127.0.0.1:2",
            "--data-dir", str(tmp_path / "d"), "--token-file", str(token), "--insecure-http"]
    result = CliRunner().invoke(cli_main.main, argv + [
        "--node-monitor-grace-period", "3", "--default-unreachable-toleration-seconds", "5",
        "--node-eviction-rate", "1"])
    assert result.exit_code == 0, result.output
    options = seen["loop_options"]
    assert isinstance(options, controllers.Options)
    assert (options.node_grace, options.eviction_timeout, options.eviction_rate,
            options.not_ready_timeout) == (3.0, 5, 1.0, 30)
    result = CliRunner().invoke(cli_main.main, argv + ["--node-monitor-grace-period", "0"])
    assert result.exit_code != 0
    assert "--node-monitor-grace-period: must be greater than 0" in result.output + (
        result.stderr or "")
    with pytest.raises(ValueError, match="--unhealthy-zone-threshold"):
        master.loop_options(unhealthy_zone_threshold=1.5)
    with pytest.raises(ValueError, match="--node-eviction-rate: must not be negative"):
        master.loop_options(eviction_rate=-1)


def test_raft_listens_on_its_own_address_or_says_to_give_one() -> None:
    # A loopback cluster, and 0.0.0.0 given on purpose: listened on as they are.
    assert master.raft_listen("127.0.0.1:2380", None) == "127.0.0.1:2380"
    assert master.raft_listen("0.0.0.0:2380", None) == "0.0.0.0:2380"
    # A master behind NAT advertises an address this machine does not have: binding it
    # would fail (pysyncobj retries forever, and the master hangs without a word).
    with pytest.raises(ValueError, match="--raft: 192.0.2.10 is not an address of this "
                                         "machine") as e:
        master.raft_listen("192.0.2.10:2380", None)
    assert "--raft-listen 0.0.0.0:2380" in str(e.value)
    assert master.raft_listen("192.0.2.10:2380", "0.0.0.0:2380") == "0.0.0.0:2380"
    with pytest.raises(ValueError, match="--raft-listen: 192.0.2.10 is not an address"):
        master.raft_listen("127.0.0.1:2380", "192.0.2.10:2380")
    with pytest.raises(ValueError, match="--raft-listen: expected HOST:PORT"):
        master.raft_listen("127.0.0.1:2380", "2380")


def test_rk_master_behind_nat_is_refused_with_the_flag_named_or_listens_where_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("t" * 24)
    seen: dict[str, object] = {}
    monkeypatch.setattr(master, "run", lambda **kw: seen.update(kw))
    argv = ["master", "--name", "m1", "--api", "127.0.0.1:1", "--raft", "192.0.2.10:2",
            "--data-dir", str(tmp_path / "d"), "--token-file", str(token), "--insecure-http"]
    result = CliRunner().invoke(cli_main.main, argv)
    assert result.exit_code != 0
    assert "--raft: 192.0.2.10 is not an address of this machine" in result.output + (
        result.stderr or "")
    assert not seen
    result = CliRunner().invoke(cli_main.main, argv + ["--raft-listen", "0.0.0.0:2"])
    assert result.exit_code == 0, result.output
    assert (seen["raft_addr"], seen["raft_listen"]) == ("192.0.2.10:2", "0.0.0.0:2")


def test_raft_on_a_loopback_address_with_peers_elsewhere_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Debian's /etc/hosts maps the machine's own name to 127.0.1.1: `--raft $(hostname):
    # 2380` listened on every interface before, and would now listen where no peer
    # reaches it.
    import socket
    real = socket.getaddrinfo

    def fake(host: str, *a: object, **k: object) -> object:
        if host == "gone.example":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real("127.0.1.1" if host == "m1.example" else host, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with pytest.raises(ValueError, match="--raft: m1.example is 127.0.1.1, a loopback "
                                         "address out of the reach of peer 10.1.2.3:2380"):
        master.raft_listen("m1.example:2380", None, ["10.1.2.3:2380"])
    # Every member on loopback, or a listen address given on purpose: as asked.
    assert master.raft_listen("m1.example:2380", None, ["127.0.0.1:2381"]) == (
        "m1.example:2380")
    assert master.raft_listen("m1.example:2380", "0.0.0.0:2380", ["10.1.2.3:2380"]) == (
        "0.0.0.0:2380")
    assert master.raft_listen("127.0.0.1:2380", None, ["gone.example:2380"]) == (
        "127.0.0.1:2380")
