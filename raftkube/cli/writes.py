"""What the commands that write objects share: kubectl's `--dry-run` and `-o` flags and
what it prints after a write (`deployment.apps/front created (server dry run)`), and
the choice of objects by `KIND NAME...`, `KIND/NAME...`, `-l SELECTOR` or `--all`, each
object's failure reported while the others go on.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import click

from raftkube.api import kinds, printers
from raftkube.cli.session import (
    OperationError,
    Session,
    connect,
    each,
    fail,
    run,
    utcnow,
)
from raftkube.client import errors

Obj = dict[str, Any]
DRY_RUN_SUFFIX = {"none": "", "client": " (dry run)", "server": " (server dry run)"}
# What `rk apply` records on an object (kubectl's client-side apply); prune reads it.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
OUTPUTS = ["name", "yaml", "json"]
PRINTED = "raftkube.cli.writes.printed"  # in click's context: an object was printed


def dry_run_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--dry-run", type=click.Choice(list(DRY_RUN_SUFFIX)), default="none",
        is_flag=False, flag_value="client",
        help="client: only print what would be sent; server: the server checks it and "
             "stores nothing (write --dry-run=server).")(f)


def output_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("-o", "--output", type=click.Choice(OUTPUTS),
                        help="Print the object(s) (yaml, json) or their names.")(f)


def announce(kind: kinds.Kind, obj: Obj, verb: str, *, dry_run: str = "none",
             output: str | None = None) -> None:
    """What kubectl prints after a write: `deployment.apps/front created (dry run)`, or
    the object itself with -o."""
    if output == "name":
        click.echo(printers.object_ref(kind, obj))
    elif output in ("yaml", "json"):
        context = click.get_current_context(silent=True)
        if context is not None:  # several objects: YAML documents, kubectl's separator
            if output == "yaml" and context.meta.get(PRINTED):
                click.echo("---")
            context.meta[PRINTED] = True
        text = printers.render([(kind, [obj])], now=utcnow(),
                               options=printers.Options(output=output), single=True)
        click.echo(text, nl=False)
    else:
        click.echo(f"{printers.object_ref(kind, obj)} {verb}{DRY_RUN_SUFFIX[dry_run]}")


def session_for(namespace: str | None, dry_run: str) -> Session | None:
    """The configured session; a client-side dry run needs none (kubectl prints
    generated objects without a cluster), so a missing config is fine then."""
    try:
        return connect(namespace)
    except errors.ClientError as e:
        if dry_run == "client":
            return None
        fail(e)


def split_changes(args: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """`label`/`annotate`/`set image` arguments: the objects, then the changes (those
    with `=`, or ending in `-`)."""
    changes = [a for a in args if "=" in a or a.endswith("-")]
    objects = tuple(a for a in args if a not in changes)
    return objects, changes


def selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--all", "all_", is_flag=True,
                     help="Every object of the kind in the namespace.")(f)
    f = click.option("-l", "--selector", default="", help="Objects with these labels.")(f)
    return click.option("-n", "--namespace", help="Namespace of the objects.")(f)


def check_targets(targets: list[tuple[kinds.Kind, list[str]]], selector: str, all_: bool
                  ) -> None:
    for _kind, names_ in targets:
        if names_ and (selector or all_):
            raise errors.ClientError("name cannot be provided when a selector or --all is "
                                     "specified")
        if not names_ and not (selector or all_):
            raise errors.ClientError("resource(s) were provided, but no name was specified")


async def expand(session: Session, targets: list[tuple[kinds.Kind, list[str]]],
                 selector: str) -> list[tuple[kinds.Kind, str]]:
    """(kind, name) for every object meant, listing those a selector or --all means."""
    out: list[tuple[kinds.Kind, str]] = []
    for kind, names_ in targets:
        if not names_:
            listed, _ = await session.client.list_all(kind, session.namespace,
                                                      label_selector=selector)
            names_ = [printers.name_of(o) for o in listed]
        out += [(kind, n) for n in names_]
    return out


def namespace_of(session: Session, kind: kinds.Kind) -> str:
    return session.namespace if kind.namespaced else ""


def refused(e: errors.ApiError) -> OperationError:
    return OperationError(errors.format_error(e))


def each_object(session: Session, targets: list[tuple[kinds.Kind, list[str]]],
                selector: str, step: Callable[[tuple[kinds.Kind, str]], Awaitable[None]]
                ) -> None:
    async def body() -> None:
        try:
            items = await expand(session, targets, selector)
        except errors.ClientError as e:
            fail(e)
        if not items:
            command = click.get_current_context().command_path.split(" ", 1)[-1]
            click.echo(f"error: no objects passed to {command}", err=True)
            sys.exit(1)
        if await each(items, step):
            sys.exit(1)

    run(body, session)

