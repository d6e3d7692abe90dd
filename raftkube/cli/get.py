"""`rk get`: objects as kubectl shows them (tables with its columns, yaml, json, names,
jsonpath, custom columns), once or as they change (`-w`).

The command reads its arguments as kubectl does (`KIND[,KIND] [NAME...]`, `KIND/NAME...`,
the `all` category), fetches, sorts (`--sort-by`) and prints. `-w` prints the current
objects, then a row (or an object) per change, through an informer: when the master it
watches through dies, the watch resumes on another from the last version it saw, and a
version the server no longer has is answered by listing again. Formats live in
`api/printers.py` (tables) and `cli/outputs.py` (`-o`, custom columns, sorting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, printers
from raftkube.cli import outputs, session
from raftkube.cli.session import Session, connect, fail, report, resolve_kind, run
from raftkube.client import errors, informer

Obj = dict[str, Any]
Targets = list[tuple[kinds.Kind, list[str]]]
SYNCED = "SYNCED"  # in a watch's queue: the informer has listed

NO_RESOURCE = (
    'You must specify the type of resource to get. Use "rk api-resources" for a complete '
    "list of supported resources.\n\n"
    "error: Required resource not specified.\n"
    'Use "rk explain <resource>" for a detailed description of that resource (e.g. rk '
    "explain pods).\nSee 'rk get -h' for help and examples")


def category(name: str) -> list[kinds.Kind]:
    """The kinds of a discovery category, in kubectl's order: the core group first, then
    the others, each group's kinds by plural."""
    groups = list(dict.fromkeys(k.group for k in kinds.KINDS))
    members = [k for k in kinds.KINDS if name in k.categories]
    return sorted(members, key=lambda k: (groups.index(k.group), k.plural))


def _kinds_of(word: str) -> list[kinds.Kind]:
    words = [w for w in word.split(",") if w]
    if not words:
        raise errors.ClientError(f'the server doesn\'t have a resource type "{word}"')
    found: list[kinds.Kind] = []
    for w in words:
        for kind in category(w.lower()) or [resolve_kind(w)]:
            if kind not in found:
                found.append(kind)
    return found


def parse_targets(args: Sequence[str]) -> tuple[Targets, bool]:
    """`KIND[,KIND] [NAME...]` or `KIND/NAME...` as (kind, names) in the order given, and
    whether several kinds are shown (names then carry their kind)."""
    if any("/" in a for a in args):
        groups = session.parse_targets(tuple(args))
        return groups, len(groups) > 1
    found = _kinds_of(args[0])
    several = len(found) > 1 or "all" in args[0].lower().split(",")
    return [(k, list(args[1:])) for k in found], several


def _label_keys(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(k.strip() for v in values for k in v.split(",") if k.strip())


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("get")
    @click.argument("args", nargs=-1)
    @click.option("-n", "--namespace", help="Namespace to look in.")
    @click.option("-A", "--all-namespaces", is_flag=True, help="Look in every namespace.")
    @click.option("-l", "--selector", default="", help="Label selector, e.g. app=web,tier!=db.")
    @click.option("--field-selector", default="", help="Field selector, e.g. spec.nodeName=n1.")
    @click.option("-o", "--output", help="wide, yaml, json, name, jsonpath=..., "
                  "jsonpath-file=..., jsonpath-as-json=..., custom-columns=..., "
                  "custom-columns-file=... (default: a table).")
    @click.option("-w", "--watch", is_flag=True, help="After listing, print every change.")
    @click.option("--watch-only", is_flag=True, help="Print changes only, not the list.")
    @click.option("--output-watch-events", is_flag=True,
                  help="With -w: show each change's type (ADDED, MODIFIED, DELETED).")
    @click.option("--show-labels", is_flag=True, help="Add a LABELS column.")
    @click.option("--no-headers", is_flag=True, help="Print tables without their header.")
    @click.option("--sort-by", default="", help="Sort by a JSONPath, e.g. .metadata.name.")
    @click.option("-L", "--label-columns", multiple=True,
                  help="A column per label key (repeat, or comma-separated).")
    @click.option("--ignore-not-found", is_flag=True,
                  help="A named object that is not there is no error.")
    def get(args: tuple[str, ...], namespace: str | None, all_namespaces: bool,
            selector: str, field_selector: str, output: str | None, watch: bool,
            watch_only: bool, output_watch_events: bool, show_labels: bool,
            no_headers: bool, sort_by: str, label_columns: tuple[str, ...],
            ignore_not_found: bool) -> None:
        """Show objects: `rk get KIND[,KIND] [NAME...]`, `rk get KIND/NAME...`, `rk get all`."""
        if not args:
            click.echo(NO_RESOURCE, err=True)
            sys.exit(1)
        try:
            out = outputs.parse(output)
            targets, several = parse_targets(args)
            if (selector or field_selector) and any(names for _, names in targets):
                raise errors.ClientError("name cannot be provided when a selector is specified")
            if sort_by:
                outputs.sort_template(sort_by)
            if watch or watch_only:
                if len(targets) > 1:
                    raise errors.ClientError("you may only specify a single resource type")
                named = sum(len(names) for _, names in targets)
                if named > 1:
                    raise errors.ClientError(
                        "watch is only supported on individual resources and resource "
                        f"collections, but {named} resources were found")
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)
        options = printers.Options(output="wide" if out.format == "wide" else "table",
                                   all_namespaces=all_namespaces, with_kind=several,
                                   no_headers=no_headers, show_labels=show_labels,
                                   label_columns=_label_keys(label_columns))
        show = Shower(out, options, clock)
        show.events = output_watch_events
        if watch or watch_only:
            kind, names = targets[0]
            watcher = Watcher(session, kind, names[0] if names else "", show,
                              namespace=None if all_namespaces else session.namespace,
                              label_selector=selector, field_selector=field_selector,
                              only=watch_only)
            try:
                run(watcher.run, session)
            except KeyboardInterrupt:
                sys.exit(1)  # kubectl's interrupt handler exits 1 as well
            return
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
                                if not (ignore_not_found and e.code == 404):
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
        try:
            if sort_by and not named:
                found = [(k, outputs.sort_objects(objs, sort_by)) for k, objs in found]
            structured = out.format in ("yaml", "json", "jsonpath")
            if any(objs for _, objs in found) or (not named and structured):
                click.echo(show.all(found, single=named == 1 and len(targets) == 1), nl=False)
            elif not named and not ignore_not_found:
                namespaced = any(k.namespaced for k, _ in targets) and not all_namespaces
                # kubectl's words: a period only after the namespace.
                where = f" in {session.namespace} namespace." if namespaced else ""
                click.echo(f"No resources found{where}", err=True)
        except errors.ClientError as e:
            fail(e)
        if failed:
            sys.exit(1)

    return [get]


class Shower:
    """Prints objects in one output format: all at once, or one by one as a watch sees
    them (kubectl prints each watched object alone: a table row, a YAML document after
    `---`, a JSON object)."""

    def __init__(self, out: outputs.Output, options: printers.Options,
                 clock: Callable[[], datetime]) -> None:
        self.out = out
        self.options = options
        self.clock = clock
        self.printed = 0  # objects printed one by one so far
        self.events = False  # --output-watch-events

    def all(self, groups: Sequence[tuple[kinds.Kind, Sequence[Obj]]], *, single: bool) -> str:
        fmt = self.out.format
        now = self.clock()
        if fmt in ("yaml", "json", "name"):
            return printers.render(groups, now=now, options=printers.Options(output=fmt),
                                   single=single)
        if fmt == "jsonpath":
            typed = [printers.typed(o, k) for k, objs in groups for o in objs]
            doc = typed[0] if single and len(typed) == 1 else printers.as_list(typed)
            return outputs.render_jsonpath(self.out, doc)
        if fmt == "custom-columns":
            every = [o for _, group in groups for o in group]
            return printers.tabulate(outputs.custom_rows(
                self.out, every, headers=not self.options.no_headers))
        tables = []
        sticky = False
        for kind, objs in groups:
            if objs:
                options = dataclasses.replace(self.options, namespace_column=sticky)
                tables.append(printers.table(objs, kind, now=now, options=options))
            sticky = sticky or kind.namespaced
        return "\n".join(tables)

    def one(self, kind: kinds.Kind, obj: Obj, event: str = "ADDED") -> str:
        fmt = self.out.format
        first = self.printed == 0
        self.printed += 1
        typed: Obj = printers.typed(obj, kind)
        if self.events and fmt in ("yaml", "json", "jsonpath"):
            typed = {"type": event, "object": typed}  # kubectl's --output-watch-events
        if fmt == "yaml":
            return ("" if first else "---\n") + printers.to_yaml(typed)
        if fmt == "json":
            return printers.to_json(typed)
        if fmt == "name":
            return printers.object_ref(kind, obj) + "\n"
        if fmt == "jsonpath":
            return outputs.render_jsonpath(self.out, typed)
        if fmt == "custom-columns":
            headers = first and not self.options.no_headers
            return printers.tabulate(outputs.custom_rows(self.out, [obj], headers=headers))
        return printers.tabulate(self.rows(kind, [obj], [event], headers=first))

    def rows(self, kind: kinds.Kind, objs: Sequence[Obj], events: Sequence[str], *,
             headers: bool) -> list[list[str]]:
        """Table rows of a watch, with kubectl's EVENT column first when asked for."""
        rows = printers.table_rows(objs, kind, now=self.clock(), options=self.options,
                                   headers=headers)
        if not self.events:
            return rows
        titled = len(rows) > len(objs)
        return [["EVENT", *rows[0]]] * titled + [
            [event, *row] for event, row in zip(events, rows[titled:], strict=True)]

    def listed(self, kind: kinds.Kind, objs: Sequence[Obj]) -> str:
        """What a watch prints of the objects there when it starts: a table of them
        (aligned as one), or each object alone."""
        if self.out.format in ("table", "wide"):
            text = printers.tabulate(self.rows(kind, objs, ["ADDED"] * len(objs),
                                               headers=True))
            self.printed += len(objs)
            return text
        return "".join(self.one(kind, o) for o in objs)


class Watcher:
    """`rk get -w`: the current objects, then every change, until interrupted."""

    def __init__(self, session: Session, kind: kinds.Kind, name: str, show: Shower, *,
                 namespace: str | None, label_selector: str, field_selector: str,
                 only: bool) -> None:
        self.session = session
        self.kind = kind
        self.name = name
        self.show = show
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = ",".join(
            s for s in (field_selector, f"metadata.name={name}" if name else "") if s)
        self.only = only
        self.shown: dict[str, Obj] = {}  # key -> the object as last printed (or listed)

    async def run(self) -> None:
        client = self.session.client
        try:
            if self.name:
                current = [await client.get(self.kind, self.session.namespace, self.name)]
            else:
                current, _ = await client.list_all(
                    self.kind, self.namespace, label_selector=self.label_selector,
                    field_selector=self.field_selector)
        except errors.ClientError as e:
            fail(e)
        for obj in current:
            self.shown[informer.key_of(obj)] = obj
        if not self.only and current:
            click.echo(self.show.listed(self.kind, current), nl=False)
        events: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        watch = informer.Informer(client, self.kind, namespace=self.namespace,
                                  label_selector=self.label_selector,
                                  field_selector=self.field_selector)
        watch.add_handler(informer.Handler(
            add=lambda o: events.put_nowait(("ADDED", o)),
            update=lambda old, new: events.put_nowait(("MODIFIED", new)),
            delete=lambda o: events.put_nowait(("DELETED", o))))
        async def mark_synced() -> None:  # queued after the informer's first list
            await watch.synced.wait()
            events.put_nowait((SYNCED, {}))

        tasks = [asyncio.create_task(watch.run()), asyncio.create_task(mark_synced())]
        try:
            while True:
                what, obj = await events.get()
                if what == SYNCED:
                    # Listed here but not in the informer's own list: deleted between
                    # the two, and no watch event will say so.
                    for key in sorted(set(self.shown) - set(watch.cache.keys())):
                        self.print(self.shown.pop(key), "DELETED")
                    continue
                if self.name and printers.name_of(obj) != self.name:
                    continue
                key, version = informer.key_of(obj), informer.resource_version(obj)
                before = self.shown.get(key)
                if what == "DELETED":
                    if self.shown.pop(key, None) is None:
                        continue  # told when the informer listed
                elif before is not None and informer.resource_version(before) == version:
                    continue  # the informer's first list: printed already
                else:
                    if what == "ADDED" and before is not None:
                        what = "MODIFIED"  # changed since it was listed here
                    self.shown[key] = obj
                self.print(obj, what)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def print(self, obj: Obj, event: str) -> None:
        try:
            click.echo(self.show.one(self.kind, obj, event), nl=False)
        except errors.ClientError as e:
            fail(e)
