"""The client's own side of `rk`: `rk config view` (the configuration it uses) and
`rk completion SHELL` (a completion script for bash, zsh or fish).

`config view` shows the configuration as `rk` reads it (RK_CONFIG, else
~/.raftkube/config.yaml): the token is `REDACTED` and the CA `DATA+OMITTED`, kubectl's
words, unless `--raw` asks for them, so that the output can be pasted into an issue.
Completion is click's: the script calls `rk` back with `_RK_COMPLETE` set.
"""

from __future__ import annotations

import json
from typing import Any

import click
from click import shell_completion

from raftkube.api import printers
from raftkube.cli.session import fail
from raftkube.client import config as cfg
from raftkube.client import errors

REDACTED = "REDACTED"
OMITTED = "DATA+OMITTED"
COMPLETE_VAR = "_RK_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def view(config: cfg.Config, *, raw: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"servers": list(config.servers),
                           "token": config.token if raw else REDACTED,
                           "namespace": config.namespace}
    if config.ca is not None:
        out["ca"] = config.ca if raw else OMITTED
    return out


def config_view_command() -> click.Command:
    @click.command("view")
    @click.option("--raw", is_flag=True, help="Show the token and the CA as they are.")
    @click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml",
                  show_default=True)
    def config_view(raw: bool, output: str) -> None:
        """Show the client configuration (RK_CONFIG), the token redacted."""
        try:
            config = cfg.load_config()
        except errors.ClientError as e:
            fail(e)
        doc = view(config, raw=raw)
        if output == "json":
            click.echo(json.dumps(doc, indent=2))
        else:
            click.echo(printers.to_yaml(doc), nl=False)

    return config_view


def completion_script(root: click.Command, shell: str) -> str:
    cls = shell_completion.get_completion_class(shell)
    if cls is None:  # only for a shell click does not know; the argument is checked
        raise click.BadParameter(f"unsupported shell {shell!r}", param_hint="SHELL")
    return cls(root, {}, "rk", COMPLETE_VAR).source()


def completion_command() -> click.Command:
    @click.command("completion")
    @click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
    def completion(shell: str) -> None:
        """A shell completion script: `source <(rk completion bash)`, or for zsh
        `source <(rk completion zsh)`, or `rk completion fish | source`."""
        root = click.get_current_context().find_root().command
        click.echo(completion_script(root, shell))

    return completion


def register(group: click.Group) -> None:
    """`completion` on `group`, and `view` in its `config` group (where `rk config
    kubeconfig` is)."""
    group.add_command(completion_command())
    config = group.commands.get("config")
    if not isinstance(config, click.Group):
        raise RuntimeError("rk has no `config` group to add `view` to")
    config.add_command(config_view_command())
