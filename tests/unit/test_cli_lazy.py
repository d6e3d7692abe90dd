"""`rk`'s commands that live in other modules are loaded when asked for (cli/lazy.py):
the table in cli/main.py must name what each module registers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from raftkube.cli import main as cli_main

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("module", sorted(cli_main.LAZY))
def test_each_lazy_module_registers_what_the_table_says(module: str) -> None:
    group = click.Group()
    config = click.Group("config")
    group.add_command(config)
    importlib.import_module(module).register(group)
    added = set(group.commands) - {"config"}
    listed = set(cli_main.LAZY[module])
    if "view" in config.commands:  # shellconfig adds `rk config view`
        added.add("config")
    assert added == listed


def test_every_command_is_listed_and_runs_its_help() -> None:
    runner = CliRunner()
    out = runner.invoke(cli_main.main, ["--help"])
    assert out.exit_code == 0
    for names in cli_main.LAZY.values():
        for name in names:
            assert f"  {name} " in out.output
            assert runner.invoke(cli_main.main, [name, "--help"]).exit_code == 0
    assert runner.invoke(cli_main.main, ["config", "view", "--help"]).exit_code == 0


def test_the_daemons_load_no_kubectl_command() -> None:
    code = ("import sys; from raftkube.cli.main import main\n"
            "try:\n    main(['agent', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith(('raftkube.cli.get', "
            "'raftkube.cli.apply', 'raftkube.cli.local', 'raftkube.api.printers', "
            "'cryptography'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_mistyped_command_is_answered_with_the_commands_it_is_near() -> None:
    out = CliRunner().invoke(cli_main.main, ["gett"])
    assert out.exit_code == 2 and "'get'" in out.output
    out = CliRunner().invoke(cli_main.main, ["dwn"])
    assert "'down'" in out.output
