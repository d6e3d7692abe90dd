"""`rk get`: objects as kubectl shows them (tables with its columns, yaml, json, names)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, printers
from raftkube.cli.session import connect, fail, parse_targets, report, run
from raftkube.client import errors

Obj = dict[str, Any]


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("get")
    @click.argument("args", nargs=-1)
    @click.option("-n", "--namespace", help="Namespace to look in.")
    @click.option("-A", "--all-namespaces", is_flag=True, help="Look in every namespace.")
    @click.option("-l", "--selector", default="", help="Label selector, e.g. app=web,tier!=db.")
    @click.option("--field-selector", default="", help="Field selector, e.g. spec.nodeName=n1.")
    @click.option("-o", "--output", type=click.Choice(["wide", "yaml", "json", "name"]),
                  help="Output format (default: a table).")
    def get(args: tuple[str, ...], namespace: str | None, all_namespaces: bool,
            selector: str, field_selector: str, output: str | None) -> None:
        """Show objects: `rk get KIND [NAME...]` or `rk get KIND/NAME...`."""
        if not args:
            fail("You must specify the type of resource to get, e.g. `rk get pods`")
        try:
            targets = parse_targets(args)
            if (selector or field_selector) and any(names for _, names in targets):
                raise errors.ClientError("name cannot be provided when a selector is specified")
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)
        found: list[tuple[kinds.Kind, list[Obj]]] = []
        failed = False
        named = 0

        async def fetch() -> None:
            nonlocal failed, named
            for kind, names in targets:
                objs: list[Obj] = []
                try:
                    if names:
                        named += len(names)
                        for name in names:
                            try:
                                objs.append(await session.client.get(kind, session.namespace,
                                                                     name))
                            except errors.ApiError as e:
                                report(e)
                                failed = True
                    else:
                        ns = None if all_namespaces else session.namespace
                        objs, _ = await session.client.list_all(
                            kind, ns, label_selector=selector, field_selector=field_selector)
                except errors.ClientError as e:
                    fail(e)
                found.append((kind, objs))

        run(fetch, session)
        options = printers.Options(output=output or "table", all_namespaces=all_namespaces,
                                   with_kind=len(targets) > 1)
        if any(objs for _, objs in found) or (not named and output in ("yaml", "json")):
            text = printers.render(found, now=clock(), options=options,
                                   single=named == 1 and len(targets) == 1)
            click.echo(text, nl=False)
        elif not named:
            namespaced = any(k.namespaced for k, _ in targets) and not all_namespaces
            # kubectl's words: a period only after the namespace.
            where = f" in {session.namespace} namespace." if namespaced else ""
            click.echo(f"No resources found{where}", err=True)
        if failed:
            sys.exit(1)

    return [get]
