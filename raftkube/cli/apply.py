"""`rk apply`: kubectl's client-side apply over the Kubernetes-style REST API.

- Manifests are read and checked by `manifests` before the first request; then every
  object goes through a server dry run, so a bad document anywhere makes an invocation
  change nothing.
- Apply is kubectl's client-side apply: the manifest is kept on the object in the
  `kubectl.kubernetes.io/last-applied-configuration` annotation, and a later apply sends
  the three-way merge patch between that, the new manifest and the live object, or
  nothing at all when the object already says what the manifest says. Fields the user
  dropped from the manifest are removed; fields set by others (a controller's status, a
  scaler's replicas not in the manifest) are left alone. Lists Kubernetes merges by key
  (containers, env, ports...) are merged by key here, and the patch carries the
  resourceVersion it was computed from, so a concurrent write is never overwritten.
  Why client-side apply and not server-side apply: server-side apply needs field
  ownership (`managedFields`) recorded in every object and kept by every writer, the
  controllers and agents included, and conflict rules on top; client-side apply needs one
  annotation, keeps the server's merge patch the only write path, and is the behaviour
  kubectl users already know (`created`/`configured`/`unchanged`).
"""

from __future__ import annotations

import base64
import copy
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import merge
from raftkube.cli import manifests
from raftkube.cli.session import OperationError, connect, each, fail, read_stdin, run, show_warnings
from raftkube.client import errors, rest

Obj = dict[str, Any]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
FIELD_VALIDATION = {"strict": "Strict", "true": "Strict", "warn": "Warn", "ignore": "Ignore",
                    "false": "Ignore"}



def compact(obj: Obj) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def without_last_applied(obj: Obj) -> Obj:
    """The manifest as recorded in its own annotation: without that annotation."""
    out = copy.deepcopy(obj)
    annotations = (out.get("metadata") or {}).get("annotations")
    if isinstance(annotations, dict):
        annotations.pop(LAST_APPLIED, None)
    return out


def with_last_applied(obj: Obj) -> Obj:
    """What apply creates: the manifest, carrying itself in the annotation."""
    out = without_last_applied(obj)
    record = compact(out)
    meta = out["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), LAST_APPLIED: record}
    return out


def last_applied_of(live: Obj) -> Obj | None:
    """The manifest the last apply recorded on a live object, if it recorded one."""
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str):
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def apply_patch(*, manifest: Obj, live: Obj) -> Obj:
    """The merge patch that makes `live` what `manifest` asks for; {} when it already is.

    Without a recorded manifest (an object made by create, or by hand) nothing is removed,
    only set, like kubectl with an object that lacks the annotation.
    """
    new = without_last_applied(manifest)
    last = last_applied_of(live)
    patch: Obj = copy.deepcopy(merge.three_way_patch(last_applied=last, new=new,
                                                     live=_as_written(live, new)))
    if last is None or not merge.same(last, new):
        meta = patch.get("metadata")
        if not isinstance(meta, dict):
            meta = patch["metadata"] = {}
        if "annotations" not in meta:
            annotations: Obj = {}  # the patch leaves them alone
        elif isinstance(meta["annotations"], dict):
            annotations = meta["annotations"]
        else:
            # The manifest dropped its annotations: remove the ones it had, only those.
            before = ((last or {}).get("metadata") or {}).get("annotations") or {}
            annotations = {k: None for k in before if k != LAST_APPLIED}
        meta["annotations"] = annotations
        annotations[LAST_APPLIED] = compact(new)
    return patch


def _as_written(live: Obj, new: Obj) -> Obj:
    """`live` in the manifest's terms where the server stores a field another way: a
    Secret's `stringData` is kept folded into base64 `data`, so it is read back out for
    the keys the manifest writes that way, and an unchanged Secret patches to nothing."""
    string_data = new.get("stringData")
    data = live.get("data")
    if new.get("kind") != "Secret" or not isinstance(string_data, dict) \
            or not isinstance(data, dict):
        return live
    shown: dict[str, str] = {}
    for key in string_data:
        try:
            shown[key] = base64.b64decode(data[key], validate=True).decode()
        except (KeyError, TypeError, ValueError):
            continue  # not there, or not text: the manifest's value is sent
    return {**live, "stringData": shown}


async def _attempt(what: str, source: str, call: Awaitable[Obj]) -> Obj:
    try:
        return await call
    except errors.ApiError as e:
        raise OperationError(errors.format_error(e, context=f'error when {what} "{source}"')
                             ) from None


async def apply_one(client: rest.RestClient, m: manifests.Manifest, *,
                    dry_run: bool = False) -> str:
    """Create or patch one object; the word kubectl prints for what happened.

    The patch carries the live object's resourceVersion: it replaces keyed lists whole
    (merged by key here), so a write that landed since the read must not be overwritten.
    On a Conflict the object is read again and the patch computed again."""
    for attempt in range(5):
        try:
            live = await client.get(m.kind, m.namespace, m.name)
        except errors.ApiError as e:
            if e.code != 404:
                raise OperationError(errors.format_error(
                    e, context=f'error when retrieving current configuration of {m.ref} '
                               f'from "{m.source}"')) from None
            body = with_last_applied(m.obj)
            await _attempt("creating", m.source,
                           client.create(m.kind, m.namespace, body, dry_run=dry_run))
            return "created"
        patch = apply_patch(manifest=m.obj, live=live)
        if not patch:
            return "unchanged"
        patch.setdefault("metadata", {})["resourceVersion"] = \
            (live.get("metadata") or {}).get("resourceVersion")
        try:
            await client.patch(m.kind, m.namespace, m.name, patch, dry_run=dry_run)
        except errors.ApiError as e:
            if e.code == 409 and e.reason == "Conflict" and attempt < 4:
                continue  # changed since we read it: read again
            raise OperationError(errors.format_error(
                e, context=f'error when patching "{m.source}"')) from None
        return "configured"
    raise AssertionError("unreachable")


async def check(client: rest.RestClient, objects: list[manifests.Manifest]) -> bool:
    """Every object through the server's checks first (`dryRun=All`), so that one bad
    object anywhere makes the whole apply change nothing, with every problem reported;
    whether any failed. Objects in a namespace this apply creates cannot be checked
    before it exists; they are checked when they are applied."""
    new_namespaces: set[str] = set()

    async def dry_run(m: manifests.Manifest) -> None:
        if m.kind.namespaced and m.namespace in new_namespaces:
            return
        if await apply_one(client, m, dry_run=True) == "created" and \
                m.kind.kind == "Namespace":
            new_namespaces.add(m.name)

    return await each(objects, dry_run)


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("apply")
    @click.option("-f", "--filename", "filenames", multiple=True, required=True,
                  metavar="FILE|DIR|-", help="Manifest(s) to apply; repeat for more.")
    @click.option("-n", "--namespace", help="Namespace for objects that do not name one.")
    @click.option("--validate", default="strict", show_default=True,
                  type=click.Choice(["strict", "warn", "ignore", "true", "false"]),
                  help="Fields the API does not have: refuse (strict), warn, or ignore.")
    def apply(filenames: tuple[str, ...], namespace: str | None, validate: str) -> None:
        """Create or update objects from manifests (kubectl's client-side apply)."""
        try:
            session = connect(namespace)
            session.client.field_validation = FIELD_VALIDATION[validate]
            loaded = manifests.load_manifests(list(filenames), read_stdin=read_stdin,
                                              namespace=session.namespace,
                                              explicit_namespace=namespace is not None)
        except errors.ClientError as e:
            fail(e)
        ordered = manifests.apply_order(loaded)

        async def apply_and_say(m: manifests.Manifest) -> None:
            outcome = await apply_one(session.client, m)
            show_warnings(session.client)
            click.echo(f"{m.ref} {outcome}")

        async def body() -> None:
            if await check(session.client, ordered):
                sys.exit(1)
            session.client.warnings.clear()  # the dry run's: the real requests repeat them
            if await each(ordered, apply_and_say):
                sys.exit(1)

        run(body, session)

    return [apply]
