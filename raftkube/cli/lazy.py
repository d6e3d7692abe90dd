"""A click group whose commands come from modules imported only when one of their
commands is asked for (click's "lazily loading subcommands"), so that the daemons
`rk master` and `rk agent`, which run for months, do not carry the code of forty
kubectl-like commands (about 3 MB of an agent's RSS).

Each module named has `register(group)`, which adds the commands listed beside it;
tests/unit/test_cli_lazy.py checks that the lists and the modules agree.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

import click


class LazyGroup(click.Group):
    def __init__(self, *args: object, lazy: Mapping[str, tuple[str, ...]] | None = None,
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = dict(lazy or {})  # module -> the commands its register() adds or changes
        self._loaded: set[str] = set()

    def load(self, module: str) -> None:
        if module not in self._loaded:
            self._loaded.add(module)
            importlib.import_module(module).register(self)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for module, names in self.lazy.items():
            if cmd_name in names:
                self.load(module)
        found = super().get_command(ctx, cmd_name)
        if found is None:  # a typo: click's "Did you mean" looks at every command
            self.list_commands(ctx)
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        for module in self.lazy:
            self.load(module)
        return super().list_commands(ctx)
