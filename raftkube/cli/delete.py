"""`rk delete`: by manifest, by name, by label selector or all of a kind."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime

import click

from raftkube.api import kinds, printers
from raftkube.cli import manifests
from raftkube.cli.session import OperationError, connect, each, fail, parse_targets, read_stdin, run
from raftkube.client import errors

PROPAGATION = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
               "true": "Background", "false": "Orphan"}


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("delete")
    @click.argument("args", nargs=-1)
    @click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE|DIR|-",
                  help="Delete the objects of these manifest(s).")
    @click.option("-n", "--namespace", help="Namespace of the objects.")
    @click.option("-l", "--selector", default="", help="Delete the objects with these labels.")
    @click.option("--all", "all_", is_flag=True, help="Delete every object of the kind.")
    @click.option("--cascade", default="background", show_default=True,
                  type=click.Choice(list(PROPAGATION), case_sensitive=False),
                  help="What happens to dependents: deleted in the background, before the "
                       "owner (foreground), or left behind (orphan).")
    @click.option("--ignore-not-found", is_flag=True, help="An object that is gone is fine.")
    def delete(args: tuple[str, ...], filenames: tuple[str, ...], namespace: str | None,
               selector: str, all_: bool, cascade: str, ignore_not_found: bool) -> None:
        """Delete objects: `rk delete -f FILE`, `rk delete KIND NAME...`, `KIND/NAME...`."""
        propagation = PROPAGATION[cascade.lower()]
        plan: list[tuple[kinds.Kind, str, str, str]] = []  # kind, namespace, name, source
        targets: list[tuple[kinds.Kind, list[str]]] = []  # when given as arguments
        try:
            session = connect(namespace)
            if filenames:
                if args:
                    raise errors.ClientError("give either -f or resources as arguments, "
                                             "not both")
                for m in manifests.load_manifests(list(filenames), read_stdin=read_stdin,
                                                  namespace=session.namespace,
                                                  explicit_namespace=namespace is not None,
                                                  verb="delete"):
                    plan.append((m.kind, m.namespace, m.name, m.source))
            elif not args:
                raise errors.ClientError("You must provide one or more resources by argument "
                                         "or filename (-f).")
            else:
                targets = parse_targets(args)
                for _kind, names in targets:
                    if names and (selector or all_):
                        raise errors.ClientError("name cannot be provided when a selector or "
                                                 "--all is specified")
                    if not names and not (selector or all_):
                        raise errors.ClientError("resource(s) were provided, but no name was "
                                                 "specified")
        except errors.ClientError as e:
            fail(e)

        async def delete_and_say(item: tuple[kinds.Kind, str, str, str]) -> None:
            kind, ns, name, source = item
            try:
                await session.client.delete(kind, ns if kind.namespaced else "", name,
                                            propagation=propagation)
            except errors.ApiError as e:
                if e.code == 404 and ignore_not_found:
                    return
                context = f'error when deleting "{source}"' if source else ""
                raise OperationError(errors.format_error(e, context=context)) from None
            click.echo(f'{printers.qualified(kind)} "{name}" deleted')

        async def body() -> None:
            if not filenames:
                try:
                    for kind, names in targets:
                        if not names:
                            listed, _ = await session.client.list_all(
                                kind, session.namespace, label_selector=selector)
                            names = [printers.name_of(o) for o in listed]
                        plan.extend((kind, session.namespace, n, "") for n in names)
                except errors.ClientError as e:
                    fail(e)
            if not plan and (selector or all_):
                click.echo("No resources found", err=True)
            if await each(plan, delete_and_say):
                sys.exit(1)

        run(body, session)

    return [delete]
