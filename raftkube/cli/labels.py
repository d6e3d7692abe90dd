"""`rk label` and `rk annotate`: set (`k=v`) and remove (`k-`) entries of an object's
labels or annotations.

The change is a merge patch of `metadata.labels`/`annotations` carrying the
resourceVersion that was read, so that `--overwrite`'s check and the write see the same
object (read again on a Conflict). Without `--overwrite` a key that has another value is
refused in kubectl's words, and nothing of that object changes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, merge, names
from raftkube.cli import writes
from raftkube.cli.session import (
    OperationError,
    connect,
    fail,
    parse_targets,
    show_warnings,
)
from raftkube.client import errors

Obj = dict[str, Any]
RETRIES = 5


def parse_map_changes(changes: list[str], *, what: str) -> tuple[dict[str, str], list[str]]:
    """`k=v` and `k-`: what to set and what to remove; kubectl's words for bad ones.
    `what` is "label" (values checked as label values) or "annotation"."""
    adds: dict[str, str] = {}
    removes: list[str] = []
    for change in changes:
        if "=" in change:
            key, _, value = change.partition("=")
            problems = names.qualified_name_errors(key) if key else ["key must be non-empty"]
            if problems:
                raise errors.ClientError(f'invalid {what} spec: {change}: '
                                         f'{"; ".join(problems)}')
            if what == "label":
                problems = names.label_value_errors(value)
                if problems:
                    raise errors.ClientError(f'invalid label value: "{change}": '
                                             f'{"; ".join(problems)}')
            adds[key] = value
        else:
            key = change[:-1]
            problems = names.qualified_name_errors(key) if key else ["key must be non-empty"]
            if problems:
                raise errors.ClientError(f'invalid {what} spec: {change}: '
                                         f'{"; ".join(problems)}')
            removes.append(key)
    if set(adds) & set(removes):
        article = "a label" if what == "label" else "an annotation"
        raise errors.ClientError(f"can not both modify and remove {article} in the same "
                                 "command")
    if not adds and not removes:
        raise errors.ClientError(f"at least one {what} update is required")
    return adds, removes


def overwrite_problems(current: dict[str, str], adds: dict[str, str], *, what: str
                       ) -> str | None:
    """kubectl's refusal to change a value without --overwrite; None when nothing would."""
    clashes = [f"'{k}' already has a value ({current[k]})" for k, v in adds.items()
               if k in current and current[k] != v]
    if not clashes:
        return None
    if what == "label":
        return "\n".join(f"error: {c}, and --overwrite is false" for c in clashes)
    return ("error: --overwrite is false but found the following declared annotation(s): "
            + "; ".join(clashes))


def metadata_map_command(what: str) -> click.Command:
    """`label` or `annotate`: set (`k=v`) and remove (`k-`) entries of a metadata map."""
    field = "labels" if what == "label" else "annotations"
    verb = "labeled" if what == "label" else "annotated"

    @click.command("label" if what == "label" else "annotate")
    @click.argument("args", nargs=-1, required=True)
    @click.option("--overwrite", is_flag=True, help=f"Change {field} that have a value.")
    @writes.selection_options
    @writes.dry_run_option
    @writes.output_option
    def command(args: tuple[str, ...], overwrite: bool, namespace: str | None,
                selector: str, all_: bool, dry_run: str, output: str | None) -> None:
        try:
            objects, changes = writes.split_changes(args)
            if not objects:
                raise errors.ClientError("one or more resources must be specified as "
                                         "<resource> <name> or <resource>/<name>")
            adds, removes = parse_map_changes(changes, what=what)
            targets = parse_targets(objects)
            writes.check_targets(targets, selector, all_)
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)

        async def change_one(item: tuple[kinds.Kind, str]) -> None:
            kind, name = item
            ns = writes.namespace_of(session, kind)
            for attempt in range(RETRIES):
                try:
                    live = await session.client.get(kind, ns, name)
                except errors.ApiError as e:
                    raise writes.refused(e) from None
                meta = live.get("metadata") or {}
                current = dict(meta.get(field) or {})
                if not overwrite:
                    problem = overwrite_problems(current, adds, what=what)
                    if problem:
                        raise OperationError(problem)
                if what == "label":
                    for key in removes:
                        if key not in current:
                            click.echo(f'label "{key}" not found.', err=True)
                wanted = {**current, **adds}
                for key in removes:
                    wanted.pop(key, None)
                if wanted == current:
                    word = "not labeled" if what == "label" else verb
                    writes.announce(kind, live, word, dry_run=dry_run, output=output)
                    return
                change: Obj = {**adds, **{k: None for k in removes if k in current}}
                body = {"metadata": {field: change,
                                     "resourceVersion": meta.get("resourceVersion")}}
                result = live
                try:
                    if dry_run == "client":
                        result = merge.merge_patch(live, body)
                    else:
                        result = await session.client.patch(kind, ns, name, body,
                                                            dry_run=dry_run == "server")
                except errors.ApiError as e:
                    if e.reason == "Conflict" and attempt < RETRIES - 1:
                        continue  # changed since it was read: check again
                    raise writes.refused(e) from None
                show_warnings(session.client)
                word = "unlabeled" if what == "label" and not adds else verb
                writes.announce(kind, result, word, dry_run=dry_run, output=output)
                return

        writes.each_object(session, targets, selector, change_one)

    command.help = (f"Update the {field} of objects: `rk {command.name} KIND NAME "
                    f"key=value key2-` (KIND/NAME, -l SEL or --all).")
    return command


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    return [metadata_map_command("label"), metadata_map_command("annotate")]
