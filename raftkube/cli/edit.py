"""`rk create`, `rk replace` and `rk edit`: whole objects written as the user gives them.

- `create -f` POSTs each object and goes on past one that fails (AlreadyExists...), as
  kubectl does; `create namespace|deployment|configmap|secret generic` make the object
  with kubectl's generators (`generators`) first. `--dry-run=client` prints without
  sending, `--dry-run=server` has the server check it and store nothing.
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
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, merge, printers, yamltext
from raftkube.cli import generators, manifests
from raftkube.cli.session import (
    OperationError,
    Session,
    connect,
    each,
    fail,
    parse_targets,
    read_stdin,
    run,
    show_warnings,
    utcnow,
)
from raftkube.client import errors

Obj = dict[str, Any]
DRY_RUN_SUFFIX = {"none": "", "client": " (dry run)", "server": " (server dry run)"}
OUTPUTS = ["name", "yaml", "json"]
EDITORS = ("RK_EDITOR", "KUBE_EDITOR", "EDITOR")
# kubectl's generators word a refusal each their own way (a namespace's is the Status).
FAILED_TO_CREATE = {"Deployment": "failed to create deployment: ",
                    "ConfigMap": "failed to create configmap: ",
                    "Secret": "failed to create secret "}
HEADER = ("# Please edit the object below. Lines beginning with a '#' will be ignored,\n"
          "# and an empty file will abort the edit. If an error occurs while saving this "
          "file will be\n"
          "# reopened with the relevant failures.\n"
          "#\n")


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


# ---- create ---------------------------------------------------------------------------


def _create_generated(make: Callable[[], Obj], namespace: str | None, dry_run: str,
                      output: str | None) -> None:
    try:
        obj = make()
    except errors.ClientError as e:
        fail(e)
    kind = kinds.by_kind(obj["apiVersion"], obj["kind"])
    assert kind is not None
    session = session_for(namespace, dry_run)
    if kind.namespaced and namespace:  # else the session's, on the URL (portable output)
        obj["metadata"]["namespace"] = namespace

    async def body() -> None:
        result = obj
        if dry_run != "client" and session is not None:
            ns = session.namespace if kind.namespaced else ""
            try:
                result = await session.client.create(kind, ns, obj,
                                                     dry_run=dry_run == "server")
            except errors.ApiError as e:
                prefix = FAILED_TO_CREATE.get(kind.kind)
                fail(e if prefix is None else f"{prefix}{e.message}")
            except errors.ClientError as e:
                fail(e)
            show_warnings(session.client)
        announce(kind, result, "created", dry_run=dry_run, output=output)

    run(body, session)


def _generated_command(name: str, help_text: str) -> Callable[[Callable[..., Any]],
                                                              click.Command]:
    def wrap(f: Callable[..., Any]) -> click.Command:
        f = output_option(dry_run_option(click.option(
            "-n", "--namespace", help="Namespace of the new object.")(f)))
        return click.command(name, help=help_text)(f)
    return wrap


def create_group() -> click.Group:
    @click.group("create", invoke_without_command=True)
    @click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE|DIR|-",
                  help="Manifest(s) of the objects to create.")
    @click.option("-n", "--namespace", help="Namespace for objects that do not name one.")
    @dry_run_option
    @output_option
    @click.pass_context
    def create(ctx: click.Context, filenames: tuple[str, ...], namespace: str | None,
               dry_run: str, output: str | None) -> None:
        """Create objects from manifests, or with a generator: `rk create deployment ...`."""
        if ctx.invoked_subcommand is not None:
            if filenames:
                fail("give either -f or a generator (namespace, deployment, configmap, "
                     "secret), not both")
            return
        if not filenames:
            fail("must specify one of -f and -k")
        session = session_for(namespace, dry_run)
        try:
            loaded = manifests.load_manifests(
                list(filenames), read_stdin=read_stdin,
                namespace=session.namespace if session else namespace or "default",
                explicit_namespace=namespace is not None, verb="create")
        except errors.ClientError as e:
            fail(e)

        async def create_one(m: manifests.Manifest) -> None:
            obj = m.obj
            if dry_run != "client" and session is not None:
                try:
                    obj = await session.client.create(m.kind, m.namespace, m.obj,
                                                      dry_run=dry_run == "server")
                except errors.ApiError as e:
                    raise OperationError(errors.format_error(
                        e, context=f'error when creating "{m.source}"')) from None
                show_warnings(session.client)
            announce(m.kind, obj, "created", dry_run=dry_run, output=output)

        async def body() -> None:
            if await each(manifests.apply_order(loaded), create_one):
                sys.exit(1)

        run(body, session)

    @_generated_command("namespace", "Create a namespace: `rk create namespace NAME`.")
    @click.argument("name")
    def namespace_(name: str, namespace: str | None, dry_run: str,
                   output: str | None) -> None:
        _create_generated(lambda: generators.namespace(name), None, dry_run, output)

    @_generated_command("deployment", "Create a deployment: `rk create deployment NAME "
                                      "--image=IMAGE [--replicas N] [--port P]`.")
    @click.argument("name")
    @click.option("--image", "images", multiple=True, help="Image of a container; repeat "
                                                           "for more containers.")
    @click.option("-r", "--replicas", type=int, default=1, show_default=True)
    @click.option("--port", type=int, help="The port the (first) container exposes.")
    def deployment(name: str, images: tuple[str, ...], replicas: int, port: int | None,
                   namespace: str | None, dry_run: str, output: str | None) -> None:
        _create_generated(lambda: generators.deployment(name, images=images,
                                                        replicas=replicas, port=port),
                          namespace, dry_run, output)

    @_generated_command("configmap", "Create a configmap from literals and files: `rk "
                                     "create configmap NAME --from-literal=k=v "
                                     "--from-file=[key=]PATH`.")
    @click.argument("name")
    @click.option("--from-literal", "literals", multiple=True, metavar="KEY=VALUE")
    @click.option("--from-file", "files", multiple=True, metavar="[KEY=]PATH",
                  help="A file (its name is the key), or a directory (each of its files).")
    def configmap(name: str, literals: tuple[str, ...], files: tuple[str, ...],
                  namespace: str | None, dry_run: str, output: str | None) -> None:
        _create_generated(lambda: generators.configmap(name, literals=literals, files=files),
                          namespace, dry_run, output)

    @click.group("secret")
    def secret() -> None:
        """Create a secret: `rk create secret generic NAME --from-literal=k=v ...`."""

    @_generated_command("generic", "Create a secret from literals and files (values "
                                   "base64-encoded).")
    @click.argument("name")
    @click.option("--from-literal", "literals", multiple=True, metavar="KEY=VALUE")
    @click.option("--from-file", "files", multiple=True, metavar="[KEY=]PATH")
    @click.option("--type", "secret_type", default="", help="The secret's type (Opaque).")
    def generic(name: str, literals: tuple[str, ...], files: tuple[str, ...],
                secret_type: str, namespace: str | None, dry_run: str,
                output: str | None) -> None:
        _create_generated(lambda: generators.secret(name, literals=literals, files=files,
                                                    secret_type=secret_type),
                          namespace, dry_run, output)

    secret.add_command(generic)
    for command in (namespace_, deployment, configmap, secret):
        create.add_command(command)
    return create


# ---- replace --------------------------------------------------------------------------


async def wait_gone(session: Session, kind: kinds.Kind, namespace: str, name: str, *,
                    timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await session.client.get(kind, namespace, name)
        except errors.ApiError as e:
            if e.code == 404:
                return
            raise
        if time.monotonic() > deadline:
            raise OperationError(f'timed out waiting for {printers.qualified(kind)} '
                                 f'"{name}" to be deleted')
        await asyncio.sleep(0.2)


def replace_command() -> click.Command:
    @click.command("replace")
    @click.option("-f", "--filename", "filenames", multiple=True, required=True,
                  metavar="FILE|DIR|-", help="Manifest(s) of the objects to replace.")
    @click.option("-n", "--namespace", help="Namespace for objects that do not name one.")
    @click.option("--force", is_flag=True, help="Delete each object, wait until it is gone, "
                                                "and create it again.")
    @click.option("--timeout", type=float, default=60.0, show_default=True,
                  help="Seconds --force waits for a deletion.")
    @dry_run_option
    @output_option
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
                        await client.delete(m.kind, m.namespace, m.name)
                        click.echo(f'{printers.qualified(m.kind)} "{m.name}" deleted')
                        await wait_gone(session, m.kind, m.namespace, m.name,
                                        timeout=timeout)
                    except errors.ApiError as e:
                        if e.code != 404:
                            raise
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
            announce(m.kind, obj, "replaced", dry_run=dry_run, output=output)

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
            with open(path, encoding="utf-8") as f:
                return f.read()

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
    return [create_group(), replace_command(), edit_command()]
