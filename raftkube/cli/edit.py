"""`rk replace` and `rk edit`: whole objects written as the user gives them.

- `replace -f` PUTs each object with the live resourceVersion (unless the manifest
  carries one: then that is the precondition), or with `--force` deletes it, waits until
  it is gone, and creates it again.
- `edit` opens the live object in the user's editor ($RK_EDITOR, $KUBE_EDITOR, $EDITOR,
  else vi) under kubectl's header, and sends the merge patch from what was read to what
  was saved, with the resourceVersion that was read as a precondition (a merge patch
  replaces lists whole, so a write that landed meanwhile must not be overwritten). A
  refusal or a file that is not YAML re-opens the editor with the problem as comments
  at the top; saving that again unchanged gives up and keeps a copy, as kubectl does.
  The text handling is pure (`buffer`, `strip_comments`, `parse_edited`, `reasons`).
"""

from __future__ import annotations

import asyncio
import copy
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, merge, printers, yamltext
from raftkube.cli import delete, manifests, writes
from raftkube.cli.session import (
    OperationError,
    connect,
    each,
    fail,
    parse_targets,
    read_stdin,
    run,
    show_warnings,
)
from raftkube.client import errors

Obj = dict[str, Any]
EDITORS = ("RK_EDITOR", "KUBE_EDITOR", "EDITOR")
HEADER = ("# Please edit the object below. Lines beginning with a '#' will be ignored,\n"
          "# and an empty file will abort the edit. If an error occurs while saving this "
          "file will be\n"
          "# reopened with the relevant failures.\n"
          "#\n")


# ---- replace --------------------------------------------------------------------------


def replace_command() -> click.Command:
    @click.command("replace")
    @click.option("-f", "--filename", "filenames", multiple=True, required=True,
                  metavar="FILE|DIR|-", help="Manifest(s) of the objects to replace.")
    @click.option("-n", "--namespace", help="Namespace for objects that do not name one.")
    @click.option("--force", is_flag=True, help="Delete each object, wait until it is gone, "
                                                "and create it again.")
    @click.option("--timeout", type=float, default=60.0, show_default=True,
                  help="Seconds --force waits for a deletion.")
    @writes.dry_run_option
    @writes.output_option
    def replace(filenames: tuple[str, ...], namespace: str | None, force: bool,
                timeout: float, dry_run: str, output: str | None) -> None:
        """Replace objects with the manifests' versions (a PUT of the whole object)."""
        if force and dry_run != "none":
            fail("--dry-run cannot be used with --force")
        try:
            session = connect(namespace)
            loaded = manifests.load_manifests(list(filenames), read_stdin=read_stdin,
                                              namespace=session.namespace,
                                              explicit_namespace=namespace is not None,
                                              verb="replace")
        except errors.ClientError as e:
            fail(e)
        client = session.client

        def refused(e: errors.ApiError, m: manifests.Manifest) -> OperationError:
            return OperationError(errors.format_error(
                e, context=f'error when replacing "{m.source}"'))

        async def replace_one(m: manifests.Manifest) -> None:
            obj = copy.deepcopy(m.obj)
            try:
                if force:
                    try:
                        answer = await client.delete(m.kind, m.namespace, m.name)
                    except errors.ApiError as e:
                        if e.code != 404:
                            raise
                    else:
                        click.echo(f'{printers.qualified(m.kind)} "{m.name}" deleted')
                        # Gone: not found, or another object under its name (uid).
                        uid = str((answer.get("metadata") or {}).get("uid")
                                  or (answer.get("details") or {}).get("uid") or "")
                        target = delete.Target(m.kind, m.namespace, m.name, m.source)
                        if await delete.wait_gone(client, [delete.Deleted(target, uid)],
                                                  timeout=timeout):
                            raise OperationError(
                                f'timed out waiting for {printers.qualified(m.kind)} '
                                f'"{m.name}" to be deleted')
                    obj["metadata"].pop("resourceVersion", None)
                    obj["metadata"].pop("uid", None)
                    obj = await client.create(m.kind, m.namespace, obj)
                else:
                    meta = obj["metadata"]
                    if not meta.get("resourceVersion"):
                        live = await client.get(m.kind, m.namespace, m.name)
                        meta["resourceVersion"] = (live.get("metadata") or {}).get(
                            "resourceVersion")
                    if dry_run != "client":
                        obj = await client.update(m.kind, obj, dry_run=dry_run == "server")
            except errors.ApiError as e:
                raise refused(e, m) from None
            show_warnings(client)
            writes.announce(m.kind, obj, "replaced", dry_run=dry_run, output=output)

        async def body() -> None:
            if await each(loaded, replace_one):
                sys.exit(1)

        run(body, session)

    return replace


# ---- edit -----------------------------------------------------------------------------


class EditError(errors.ClientError):
    """What is wrong with a saved file; shown as comments when the file re-opens."""


def editor_command(env: dict[str, str]) -> list[str]:
    for name in EDITORS:
        value = env.get(name, "").strip()
        if value:
            return shlex.split(value)
    return ["vi"]


def buffer(body: str, problems: list[str]) -> str:
    """The text the editor opens: kubectl's header, the problems as comments, the object."""
    comments = "".join(f"# {line}\n" for p in problems for line in p.splitlines())
    return HEADER + (comments + "#\n" if comments else "") + body


def strip_comments(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True)
                   if not line.lstrip().startswith("#"))


def parse_edited(text: str) -> Obj:
    """The one object of a saved file; EditError says why it is not one."""
    try:
        docs = [d for d in yamltext.load_all(text) if d is not None]
    except yamltext.YAMLError as e:
        raise EditError(f"The edited file had a syntax error: {yamltext.problem(e)}"
                        ) from None
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise EditError("The edited file must hold exactly one object (a mapping)")
    obj: Obj = docs[0]
    return obj


def identity(obj: Obj) -> tuple[Any, ...]:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return obj.get("apiVersion"), obj.get("kind"), meta.get("name"), meta.get("namespace")


def reasons(kind: kinds.Kind, name: str, error: errors.ApiError) -> list[str]:
    """The server's refusal as kubectl shows it at the top of the re-opened file."""
    causes = error.details.get("causes")
    if error.reason == "Invalid" and isinstance(causes, list) and causes:
        lines = [f'{kind.resource} "{name}" was not valid:']
        for c in causes:
            if isinstance(c, dict):
                field = c.get("field") or ""
                lines.append(f"* {field + ': ' if field else ''}{c.get('message', '')}")
        return lines
    return [str(error)]


def render(obj: Obj, output: str) -> str:
    return printers.to_json(obj) if output == "json" else printers.to_yaml(obj)


def edit_command() -> click.Command:
    @click.command("edit")
    @click.argument("args", nargs=-1, required=True)
    @click.option("-n", "--namespace", help="Namespace of the object.")
    @click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml",
                  show_default=True, help="The format to edit in.")
    def edit(args: tuple[str, ...], namespace: str | None, output: str) -> None:
        """Edit an object in $RK_EDITOR/$KUBE_EDITOR/$EDITOR: `rk edit KIND/NAME`."""
        try:
            targets = parse_targets(args)
            if len(targets) != 1 or len(targets[0][1]) != 1:
                raise errors.ClientError("edit takes exactly one object: KIND NAME or "
                                         "KIND/NAME")
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)
        kind, (name,) = targets[0]
        ns = session.namespace if kind.namespaced else ""
        editor = editor_command(dict(os.environ))
        ref = f"{kind.resource} \"{name}\""

        async def launch(text: str, path: str) -> str:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            try:
                code = await asyncio.to_thread(subprocess.call, [*editor, path])
            except OSError as e:
                raise errors.ClientError(f'unable to launch the editor "{" ".join(editor)}": '
                                         f"{e.strerror or e}") from None
            if code != 0:
                raise errors.ClientError(f'there was a problem with the editor '
                                         f'"{" ".join(editor)}"')
            try:
                with open(path, encoding="utf-8") as f:
                    return f.read()
            except UnicodeDecodeError as e:
                raise errors.ClientError(f"the edited file is not UTF-8 text (byte {e.start})"
                                         ) from None

        def keep(path: str, message: str) -> None:
            click.echo(f'A copy of your changes has been stored to "{path}"', err=True)
            fail(message)

        async def body() -> None:
            try:
                live = await session.client.get(kind, ns, name)
            except errors.ClientError as e:
                fail(e)
            fd, path = tempfile.mkstemp(prefix="rk-edit-", suffix=f".{output}")
            os.close(fd)
            original = render(live, output)
            text = buffer(original, [])
            failed_edit: str | None = None  # the last saved text that was refused
            while True:
                try:
                    saved = strip_comments(await launch(text, path))
                except errors.ClientError as e:
                    keep(path, str(e))
                if failed_edit is not None and saved == failed_edit:
                    keep(path, "Edit cancelled, no valid changes were saved.")
                if not saved.strip():
                    os.remove(path)
                    click.echo("Edit cancelled, saved file was empty.", err=True)
                    return
                try:
                    edited = parse_edited(saved)
                    patch = merge.create_merge_patch(live, edited)
                    if patch and identity(edited) != identity(live):
                        keep(path, "At least one of apiVersion, kind and name was changed")
                except EditError as e:
                    click.echo(f"error: {e}", err=True)
                    text, failed_edit = buffer(saved, [str(e)]), saved
                    continue
                if not patch:
                    os.remove(path)
                    click.echo("Edit cancelled, no changes made.", err=True)
                    return
                patch.setdefault("metadata", {})["resourceVersion"] = \
                    (live.get("metadata") or {}).get("resourceVersion")
                try:
                    await session.client.patch(kind, ns, name, patch)
                except errors.ApiError as e:
                    if e.code in (404, 409):  # gone, or changed since it was read
                        click.echo(str(e), err=True)
                        keep(path, f"{ref} could not be edited")
                    click.echo(f"error: {ref} is invalid" if e.reason == "Invalid"
                               else str(e), err=True)
                    text, failed_edit = buffer(saved, reasons(kind, name, e)), saved
                    continue
                except errors.ClientError as e:
                    keep(path, str(e))
                os.remove(path)
                show_warnings(session.client)
                click.echo(f"{printers.object_ref(kind, live)} edited")
                return

        run(body, session)

    return edit


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    return [replace_command(), edit_command()]
