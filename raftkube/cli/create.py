"""`rk create`: new objects from manifests, or from kubectl's generators.

- `create -f` POSTs each object and goes on past one that fails (AlreadyExists...), as
  kubectl does (no dry run of everything first, unlike apply: kubectl's create writes
  what it can).
- `create namespace|deployment|configmap|secret generic` make the object with kubectl's
  generators (`generators`, pure) first; a bad argument sends nothing.
`--dry-run=client` prints without sending (and needs no cluster for a generator),
`--dry-run=server` has the server check the object and store nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds
from raftkube.cli import generators, manifests, writes
from raftkube.cli.session import (
    OperationError,
    each,
    fail,
    read_stdin,
    run,
    show_warnings,
)
from raftkube.client import errors

Obj = dict[str, Any]
# kubectl's generators word a refusal each their own way (a namespace's is the Status).
FAILED_TO_CREATE = {"Deployment": "failed to create deployment: ",
                    "ConfigMap": "failed to create configmap: ",
                    "Secret": "failed to create secret "}
GROUP_FLAGS = "raftkube.cli.create.flags"  # in click's context: `create`'s own flags


class CreateGroup(click.Group):
    """`rk create`, whose unknown generator is kubectl's error rather than click's."""

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and not args[0].startswith("-") and self.get_command(ctx, args[0]) is None:
            fail(f"Unexpected args: [{' '.join(args)}]\nSee 'rk create -h' for help and "
                 "examples")
        return super().resolve_command(ctx, args)


def _create_generated(make: Callable[[], Obj], namespace: str | None, dry_run: str,
                      output: str | None) -> None:
    # `rk create --dry-run=client deployment ...`: flags given before the generator's
    # name count as well (kubectl takes them anywhere); the generator's own win.
    before = click.get_current_context().meta.get(GROUP_FLAGS) or {}
    namespace = namespace or before.get("namespace")
    dry_run = dry_run if dry_run != "none" else before.get("dry_run") or "none"
    output = output or before.get("output")
    try:
        obj = make()
    except errors.ClientError as e:
        fail(e)
    kind = kinds.by_kind(obj["apiVersion"], obj["kind"])
    assert kind is not None
    session = writes.session_for(namespace, dry_run)
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
        writes.announce(kind, result, "created", dry_run=dry_run, output=output)

    run(body, session)


def _generated_command(name: str, help_text: str) -> Callable[[Callable[..., Any]],
                                                              click.Command]:
    def wrap(f: Callable[..., Any]) -> click.Command:
        f = writes.output_option(writes.dry_run_option(click.option(
            "-n", "--namespace", help="Namespace of the new object.")(f)))
        return click.command(name, help=help_text)(f)
    return wrap


def create_group() -> click.Group:
    @click.group("create", cls=CreateGroup, invoke_without_command=True)
    @click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE|DIR|-",
                  help="Manifest(s) of the objects to create.")
    @click.option("-n", "--namespace", help="Namespace for objects that do not name one.")
    @writes.dry_run_option
    @writes.output_option
    @click.pass_context
    def create(ctx: click.Context, filenames: tuple[str, ...], namespace: str | None,
               dry_run: str, output: str | None) -> None:
        """Create objects from manifests, or with a generator: `rk create deployment ...`."""
        if ctx.invoked_subcommand is not None:
            if filenames:
                fail("give either -f or a generator (namespace, deployment, configmap, "
                     "secret), not both")
            ctx.meta[GROUP_FLAGS] = {"namespace": namespace, "dry_run": dry_run,
                                     "output": output}
            return
        if not filenames:
            fail("must specify one of -f and -k")
        session = writes.session_for(namespace, dry_run)
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
            writes.announce(m.kind, obj, "created", dry_run=dry_run, output=output)

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


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    return [create_group()]
