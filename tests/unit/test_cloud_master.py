"""`rk master --cloud-provider`: the provider is loaded before anything starts (an
unknown one refused, naming the flag), and its loops join the leader's."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from raftkube.cli import main as cli_main
from raftkube.cli import master
from raftkube.cloud import local
from raftkube.controllers import manager
from tests.unit.controller_fixture import Fixture

pytestmark = pytest.mark.unit


def argv(tmp_path: Path) -> list[str]:
    token = tmp_path / "token"
    token.write_text("t" * 24)
    return ["master", "--name", "m1", "--api", "127.0.0.1:1", "--raft", "127.0.0.1:2",
            "--data-dir", str(tmp_path / "d"), "--token-file", str(token), "--insecure-http"]


def test_the_provider_is_loaded_before_the_master_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    monkeypatch.setattr(master, "run", lambda **kw: seen.update(kw))
    result = CliRunner().invoke(cli_main.main, argv(tmp_path))
    assert result.exit_code == 0, result.output
    assert isinstance(seen["cloud"], local.LocalProvider)  # the default
    result = CliRunner().invoke(cli_main.main, argv(tmp_path) + ["--cloud-provider", "none"])
    assert result.exit_code == 0 and seen["cloud"] is None
    seen.clear()
    result = CliRunner().invoke(cli_main.main, argv(tmp_path) + ["--cloud-provider", "aws"])
    assert result.exit_code != 0 and not seen
    assert "--cloud-provider: no provider named 'aws'" in result.output + (result.stderr or "")
    assert not (tmp_path / "d").exists()


def test_the_cloud_loops_join_the_leaders_loops() -> None:
    assert master.make_leader_loops(None) is manager.default_loops
    f = Fixture()
    names = [loop.name for loop in master.make_leader_loops(local.LocalProvider())(f.ctx)]
    default = [loop.name for loop in manager.default_loops(Fixture().ctx)]
    assert names == [*default, "cloud-service-controller", "cloud-node-controller"]
