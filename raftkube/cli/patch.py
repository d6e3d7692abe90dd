"""`rk patch`, `rk scale` and `rk set image`: partial writes of existing objects.

Each reads the live object, works out the change, and sends only that, as kubectl does:
- `patch` sends the user's patch as it is (strategic merge by default, as kubectl; merge
  or JSON patch with --type) and says `patched`, or `patched (no change)` when the object
  came back as it was.
- `scale` writes the `scale` subresource; `--current-replicas` is checked against the
  Scale it read, whose resourceVersion the write then carries.
- `set image` sends a strategic merge patch of the named containers (merged by name,
  so nothing else in the pod template is touched).
A client-side dry run applies the change locally with the server's own patch code
(`api.merge`, `api.strategic`, `api.jsonpatch`) and sends nothing. (`label` and
`annotate` are in `labels`.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import jsonpatch, kinds, merge, printers, strategic, yamltext
from raftkube.cli import writes
from raftkube.cli.session import (
    OperationError,
    connect,
    fail,
    parse_targets,
    show_warnings,
)
from raftkube.client import errors, rest

Obj = dict[str, Any]
STRATEGIC = "application/strategic-merge-patch+json"
CONTENT_TYPES = {"strategic": STRATEGIC, "merge": rest.MERGE_PATCH, "json": rest.JSON_PATCH}
SCALABLE = ("Deployment", "ReplicaSet", "StatefulSet")
WITH_TEMPLATE = ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet", "Job")


# ---- pure parts -------------------------------------------------------------------------


class PatchError(errors.ClientError):
    """The change cannot be made on this object (a client-side patch that does not apply,
    a container that is not there): that object's failure; nothing was sent for it."""


def parse_patch(text: str) -> Any:
    """The patch given with -p or --patch-file: JSON or YAML, one document."""
    try:
        docs = list(yamltext.load_all(text))
    except yamltext.YAMLError as e:
        raise errors.ClientError(f'unable to parse "{text}": {yamltext.problem(e)}'
                                 ) from None
    if len(docs) != 1 or docs[0] is None:
        raise errors.ClientError(f'unable to parse "{text}": expected one JSON or YAML '
                                 "document")
    return docs[0]


def apply_locally(obj: Obj, patch: Any, patch_type: str, kind: kinds.Kind) -> Any:
    """What the server would make of `obj` with `patch` (a client-side dry run)."""
    try:
        if patch_type == "json":
            return jsonpatch.apply(obj, patch)
        if not isinstance(patch, dict):
            raise PatchError(f"a {patch_type} merge patch must be a JSON object")
        if patch_type == "strategic":
            return strategic.apply(obj, patch, kind.kind)
        return merge.merge_patch(obj, patch)
    except jsonpatch.PatchError as e:
        raise PatchError(f"unable to apply the patch: {e.message}") from None


def unchanged(before: Obj, after: Obj) -> bool:
    """Whether a write left the object as it was (its version aside)."""
    def bare(obj: Obj) -> Obj:
        out = copy.deepcopy(obj)
        meta = out.get("metadata")
        if isinstance(meta, dict):
            for key in ("resourceVersion", "managedFields"):
                meta.pop(key, None)
        return out
    return merge.same(bare(before), bare(after))


def image_patch(kind: kinds.Kind, obj: Obj, images: dict[str, str]) -> Obj | None:
    """The strategic merge patch that sets containers' images (`*` is every container);
    None when they already are; PatchError naming a container that is not there."""
    spec = obj.get("spec") or {}
    prefix: list[str] = []
    if kind.kind in WITH_TEMPLATE:
        spec = (spec.get("template") or {}).get("spec") or {}
        prefix = ["template", "spec"]
    elif kind.kind != "Pod":
        raise PatchError(f"{printers.qualified(kind)}/{printers.name_of(obj)} has "
                                 "no containers whose image could be set")
    patch: Obj = {}
    for name, image in images.items():
        found = False
        for field in ("initContainers", "containers"):
            for c in spec.get(field) or []:
                if isinstance(c, dict) and (name == "*" or c.get("name") == name):
                    found = True
                    if c.get("image") != image:
                        patch.setdefault(field, []).append({"name": c["name"],
                                                            "image": image})
        if not found and name != "*":
            raise PatchError(f'unable to find container named "{name}"')
    if not patch:
        return None
    out: Obj = patch
    for key in reversed(prefix):
        out = {key: out}
    return {"spec": out}


# ---- patch ----------------------------------------------------------------------------


def patch_command() -> click.Command:
    @click.command("patch")
    @click.argument("args", nargs=-1, required=True)
    @click.option("-p", "--patch", "patch_text", help="The patch, JSON or YAML.")
    @click.option("--patch-file", type=click.Path(dir_okay=False),
                  help="A file holding the patch.")
    @click.option("--type", "patch_type", type=click.Choice(list(CONTENT_TYPES)),
                  default="strategic", show_default=True, help="The kind of patch.")
    @click.option("-n", "--namespace", help="Namespace of the object.")
    @writes.dry_run_option
    @writes.output_option
    def patch(args: tuple[str, ...], patch_text: str | None, patch_file: str | None,
              patch_type: str, namespace: str | None, dry_run: str,
              output: str | None) -> None:
        """Patch objects: `rk patch KIND NAME -p '{"spec":{"replicas":2}}'`."""
        try:
            if patch_text is not None and patch_file:
                raise errors.ClientError("cannot specify --patch and --patch-file together")
            if patch_file:
                try:
                    with open(patch_file, encoding="utf-8") as f:
                        patch_text = f.read()
                except (OSError, UnicodeDecodeError) as e:
                    raise errors.ClientError(f"unable to read patch file: "
                                             f"{getattr(e, 'strerror', None) or e}") from None
            if not patch_text:
                raise errors.ClientError("must specify --patch or --patch-file containing "
                                         "the contents of the patch")
            body = parse_patch(patch_text)
            targets = parse_targets(args)
            writes.check_targets(targets, "", False)
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)

        async def patch_one(item: tuple[kinds.Kind, str]) -> None:
            kind, name = item
            ns = writes.namespace_of(session, kind)
            try:
                live = await session.client.get(kind, ns, name)
                if dry_run == "client":
                    patched = apply_locally(live, body, patch_type, kind)
                else:
                    patched = await session.client.patch(
                        kind, ns, name, body, content_type=CONTENT_TYPES[patch_type],
                        dry_run=dry_run == "server")
            except errors.ApiError as e:
                raise writes.refused(e) from None
            except PatchError as e:
                raise OperationError(f"error: {e}") from None
            show_warnings(session.client)
            same = isinstance(patched, dict) and unchanged(live, patched)
            writes.announce(kind, patched if isinstance(patched, dict) else live,
                          "patched (no change)" if same else "patched", dry_run=dry_run,
                          output=output)

        writes.each_object(session, targets, "", patch_one)

    return patch


# ---- scale ----------------------------------------------------------------------------


def scale_command() -> click.Command:
    @click.command("scale")
    @click.argument("args", nargs=-1, required=True)
    @click.option("--replicas", type=int, help="The number of replicas wanted.")
    @click.option("--current-replicas", type=int,
                  help="Only if the number of replicas is this now.")
    @click.option("--resource-version", default="",
                  help="Only if the object's resourceVersion is this now.")
    @writes.selection_options
    @writes.dry_run_option
    def scale(args: tuple[str, ...], replicas: int | None, current_replicas: int | None,
              resource_version: str, namespace: str | None, selector: str, all_: bool,
              dry_run: str) -> None:
        """Set the replicas of deployments and replicasets: `rk scale KIND/NAME --replicas N`."""
        try:
            if replicas is None or replicas < 0:
                raise errors.ClientError("The --replicas=COUNT flag is required, and COUNT "
                                         "must be greater than or equal to 0")
            targets = parse_targets(args)
            writes.check_targets(targets, selector, all_)
            for kind, _ in targets:
                if kind.kind not in SCALABLE:
                    raise errors.ClientError(
                        f"cannot scale {kind.resource}: only deployments and replicasets "
                        "have a scale subresource")
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)

        async def scale_one(item: tuple[kinds.Kind, str]) -> None:
            kind, name = item
            ns = writes.namespace_of(session, kind)
            path = rest.path_of(kind, ns, name, "scale")
            try:
                precondition = resource_version
                if current_replicas is not None or dry_run == "client":
                    current = await session.client.request("GET", path)
                    actual = (current.get("spec") or {}).get("replicas")
                    if current_replicas is not None and actual != current_replicas:
                        raise OperationError(f"error: Expected replicas to be "
                                             f"{current_replicas}, was {actual}")
                    precondition = precondition or (current.get("metadata") or {}).get(
                        "resourceVersion", "")
                body: Obj = {"spec": {"replicas": replicas}}
                if precondition:
                    body["metadata"] = {"resourceVersion": precondition}
                if dry_run != "client":
                    await session.client.patch(kind, ns, name, body, subresource="scale",
                                               dry_run=dry_run == "server")
            except errors.ApiError as e:
                raise writes.refused(e) from None
            show_warnings(session.client)
            suffix = writes.DRY_RUN_SUFFIX[dry_run]
            click.echo(f"{printers.qualified(kind)}/{name} scaled{suffix}")

        writes.each_object(session, targets, selector, scale_one)

    return scale


# ---- set image ------------------------------------------------------------------------


def set_group() -> click.Group:
    @click.group("set")
    def set_() -> None:
        """Change one aspect of objects: `rk set image ...`."""

    @set_.command("image")
    @click.argument("args", nargs=-1, required=True)
    @writes.selection_options
    @writes.dry_run_option
    @writes.output_option
    def image(args: tuple[str, ...], namespace: str | None, selector: str, all_: bool,
              dry_run: str, output: str | None) -> None:
        """Set containers' images: `rk set image deployment/NAME CONTAINER=IMAGE ...`
        (`*=IMAGE`: every container)."""
        try:
            objects, changes = writes.split_changes(args)
            images: dict[str, str] = {}
            for change in changes:
                container, _, img = change.partition("=")
                if not container or not img:
                    raise errors.ClientError(f"invalid image update {change!r}: expected "
                                             "CONTAINER=IMAGE")
                images[container] = img
            if not images:
                raise errors.ClientError("at least one image update is required")
            if not objects:
                raise errors.ClientError("one or more resources must be specified as "
                                         "<resource> <name> or <resource>/<name>")
            targets = parse_targets(objects)
            writes.check_targets(targets, selector, all_)
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)

        async def set_one(item: tuple[kinds.Kind, str]) -> None:
            kind, name = item
            ns = writes.namespace_of(session, kind)
            try:
                live = await session.client.get(kind, ns, name)
                body = image_patch(kind, live, images)
                if body is None:
                    return  # kubectl says nothing of an object already so
                result = live
                if dry_run == "client":
                    result = strategic.apply(live, body, kind.kind)
                else:
                    result = await session.client.patch(kind, ns, name, body,
                                                        content_type=STRATEGIC,
                                                        dry_run=dry_run == "server")
            except errors.ApiError as e:
                raise writes.refused(e) from None
            except PatchError as e:
                raise OperationError(f"error: {e}") from None
            show_warnings(session.client)
            writes.announce(kind, result, "image updated", dry_run=dry_run, output=output)

        writes.each_object(session, targets, selector, set_one)

    return set_


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    return [patch_command(), scale_command(), set_group()]
