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
