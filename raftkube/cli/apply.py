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
- Around it, kubectl's options: `-R` and URLs (read by `manifests`), `-l` (only the
  manifests it selects are applied), `--dry-run=client` (reads, never writes: the
  outcome is computed here) and `=server` (every request with `dryRun=All`), `-o`
  (the resulting objects instead of the words), `--prune` (module `prune`) and `--wait`
  (module `progress`, judged by `readiness`).
"""

from __future__ import annotations

import base64
import copy
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, merge, printers
from raftkube.cli import durations, manifests, progress, prune, readiness, writes
from raftkube.cli.session import (
    OperationError,
    connect,
    each,
    fail,
    read_stdin,
    report,
    run,
    show_warnings,
)
from raftkube.client import errors, rest

Obj = dict[str, Any]
LAST_APPLIED = writes.LAST_APPLIED
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


@dataclass(frozen=True)
class Outcome:
    """What applying one object did: kubectl's word and the object as it now is (or, in
    a dry run, would be)."""

    manifest: manifests.Manifest
    word: str  # created, configured, unchanged
    obj: Obj


async def apply_object(client: rest.RestClient, m: manifests.Manifest, *,
                       dry_run: bool = False, local: bool = False) -> Outcome:
    """Create or patch one object. `dry_run`: the server checks and answers without
    storing (dryRun=All); `local`: nothing is sent but reads, the outcome is computed
    here (kubectl's --dry-run=client).

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
            if local:
                return Outcome(m, "created", body)
            made = await _attempt("creating", m.source,
                                  client.create(m.kind, m.namespace, body, dry_run=dry_run))
            return Outcome(m, "created", made)
        patch = apply_patch(manifest=m.obj, live=live)
        if not patch:
            return Outcome(m, "unchanged", live)
        if local:
            return Outcome(m, "configured", merge.merge_patch(live, patch))
        patch.setdefault("metadata", {})["resourceVersion"] = \
            (live.get("metadata") or {}).get("resourceVersion")
        try:
            patched = await client.patch(m.kind, m.namespace, m.name, patch, dry_run=dry_run)
        except errors.ApiError as e:
            if e.code == 409 and e.reason == "Conflict" and attempt < 4:
                continue  # changed since we read it: read again
            raise OperationError(errors.format_error(
                e, context=f'error when patching "{m.source}"')) from None
        return Outcome(m, "configured", patched)
    raise AssertionError("unreachable")


async def apply_one(client: rest.RestClient, m: manifests.Manifest, *,
                    dry_run: bool = False) -> str:
    """Create or patch one object; the word kubectl prints for what happened."""
    return (await apply_object(client, m, dry_run=dry_run)).word


async def check(client: rest.RestClient, objects: list[manifests.Manifest], *,
                on_outcome: Callable[[Outcome], None] | None = None) -> bool:
    """Every object through the server's checks first (`dryRun=All`), so that one bad
    object anywhere makes the whole apply change nothing, with every problem reported;
    whether any failed. Objects in a namespace this apply creates cannot be checked
    before it exists; they are checked when they are applied (or, for a server dry run
    that has no later, judged here without the server). `on_outcome` hears each."""
    new_namespaces: set[str] = set()

    async def dry_run(m: manifests.Manifest) -> None:
        unchecked = m.kind.namespaced and m.namespace in new_namespaces
        outcome = await apply_object(client, m, dry_run=True, local=unchecked)
        if outcome.word == "created" and m.kind.kind == "Namespace":
            new_namespaces.add(m.name)
        if on_outcome is not None:
            on_outcome(outcome)

    return await each(objects, dry_run)


def validate(*, prune_: bool, all_: bool, selector: str, allowlist: tuple[str, ...],
             dry_run: str, wait: bool) -> None:
    """kubectl's refusals of flag combinations, before anything is read or sent."""
    if all_ and selector:
        raise errors.ClientError("cannot set --all and --selector at the same time")
    if prune_ and not all_ and not selector:
        raise errors.ClientError(
            "all resources selected for prune without explicitly passing --all. To prune "
            "all resources, pass the --all flag. If you did not mean to prune all "
            "resources, specify a label selector")
    if allowlist and not prune_:
        raise errors.ClientError("--prune-allowlist must be used with --prune")
    if wait and dry_run != "none":
        raise errors.ClientError("--wait cannot be used with --dry-run: nothing is applied "
                                 "to wait for")


def print_objects(outcomes: list[Outcome], output: str) -> None:
    """-o yaml|json: the one object, or several in a `List`, as kubectl prints them."""
    objs = [o.obj for o in outcomes]
    if not objs:
        return
    doc = objs[0] if len(objs) == 1 else printers.as_list(objs)
    click.echo(printers.to_yaml(doc) if output == "yaml" else printers.to_json(doc), nl=False)


def readiness_check(kind: kinds.Kind, obj: Obj) -> tuple[bool, str]:
    """Whether one object is rolled out / ready, in kubectl's words (`readiness`); a
    state waiting cannot fix (a failed Job, a missed progress deadline) ends the wait."""
    try:
        found = readiness.status(kind, obj)
    except readiness.RolloutError as e:
        raise progress.WaitFailed(str(e)) from None
    return found.done, found.message


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("apply")
    @click.option("-f", "--filename", "filenames", multiple=True, required=True,
                  metavar="FILE|DIR|URL|-", help="Manifest(s) to apply; repeat for more.")
    @click.option("-R", "--recursive", is_flag=True,
                  help="Read the directories given with -f recursively.")
    @click.option("-n", "--namespace", help="Namespace for objects that do not name one.")
    @click.option("--validate", "validation", default="strict", show_default=True,
                  type=click.Choice(["strict", "warn", "ignore", "true", "false"]),
                  help="Fields the API does not have: refuse (strict), warn, or ignore.")
    @click.option("-l", "--selector", default="",
                  help="Apply (and prune) only objects with these labels.")
    @click.option("--prune", "prune_", is_flag=True,
                  help="Delete objects applied before that this apply no longer has.")
    @click.option("--all", "all_", is_flag=True, help="With --prune: prune without -l.")
    @click.option("--prune-allowlist", "allowlist", multiple=True,
                  metavar="group/version/Kind",
                  help="Kinds --prune may delete (default: kubectl's list).")
    @click.option("--dry-run", default="none", show_default=True,
                  type=click.Choice(["none", "client", "server"]),
                  help="client: send nothing that writes; server: the server checks, "
                       "stores nothing.")
    @click.option("-o", "--output", type=click.Choice(["name", "yaml", "json"]),
                  help="Print the objects (or their names) instead of what happened.")
    @click.option("--wait", is_flag=True,
                  help="Then wait, with progress, until every object is rolled out/ready.")
    @click.option("--timeout", default="5m", show_default=True,
                  help="How long --wait waits (30s, 5m, 1h).")
    def apply(filenames: tuple[str, ...], recursive: bool, namespace: str | None,
              validation: str, selector: str, prune_: bool, all_: bool,
              allowlist: tuple[str, ...], dry_run: str, output: str | None, wait: bool,
              timeout: str) -> None:
        """Create or update objects from manifests (kubectl's client-side apply)."""
        seconds = durations.option("--timeout", timeout)
        try:
            validate(prune_=prune_, all_=all_, selector=selector, allowlist=allowlist,
                     dry_run=dry_run, wait=wait)
            prune_kinds = prune.allowlist(allowlist) if prune_ else []
            session = connect(namespace)
            session.client.field_validation = FIELD_VALIDATION[validation]
            loaded = manifests.load_manifests(list(filenames), read_stdin=read_stdin,
                                              namespace=session.namespace,
                                              explicit_namespace=namespace is not None,
                                              recursive=recursive)
            ordered = manifests.apply_order(manifests.select(loaded, selector))
            if not ordered:
                raise errors.ClientError("no objects passed to apply")
        except errors.ClientError as e:
            fail(e)
        suffix = writes.DRY_RUN_SUFFIX[dry_run]
        outcomes: list[Outcome] = []

        def say(outcome: Outcome) -> None:
            show_warnings(session.client)
            outcomes.append(outcome)
            if output == "name":
                click.echo(outcome.manifest.ref)
            elif output is None:
                click.echo(f"{outcome.manifest.ref} {outcome.word}{suffix}")

        async def apply_and_say(m: manifests.Manifest) -> None:
            say(await apply_object(session.client, m, local=dry_run == "client"))

        async def body() -> None:
            if dry_run == "server":
                failed = await check(session.client, ordered, on_outcome=say)
            elif dry_run == "client":
                failed = await each(ordered, apply_and_say)
            else:
                if await check(session.client, ordered):
                    sys.exit(1)
                session.client.warnings.clear()  # the dry run's: the real requests repeat
                failed = await each(ordered, apply_and_say)
            if output in ("yaml", "json"):
                print_objects(outcomes, output)
            if failed:
                sys.exit(1)
            try:
                if prune_:
                    await prune_after(session.client, ordered, kinds_=prune_kinds,
                                      selector=selector, dry_run=dry_run,
                                      namespace=namespace)
                if wait:
                    # with -o, stdout is the objects (for jq, for a file): progress aside
                    await wait_for(session.client, ordered, timeout=seconds,
                                   err=output is not None)
            except errors.ClientError as e:
                fail(e)

        run(body, session)

    return [apply]


async def prune_after(client: rest.RestClient, applied: list[manifests.Manifest], *,
                      kinds_: list[kinds.Kind], selector: str, dry_run: str,
                      namespace: str | None) -> None:
    """--prune, after every object applied: kubectl's namespaces are those applied to,
    and -n's when given."""
    visited = {m.namespace for m in applied if m.kind.namespaced}
    if namespace is not None:
        visited.add(namespace)
    plan = prune.Plan(kinds=kinds_, selector=selector, namespaces=visited,
                      applied={(m.kind.resource, m.namespace, m.name) for m in applied})
    await prune.prune(client, plan, dry_run=dry_run, propagation="Background",
                      say=click.echo)


def progress_targets(applied: list[manifests.Manifest]) -> list[progress.Target]:
    """One target per object (one applied twice is followed once). Refs leave out the
    namespace, as apply's own lines do, except where one ref stands for objects of
    several namespaces: there each line says which it follows."""
    unique = list({(m.kind, m.namespace, m.name): m for m in applied}.values())
    spaces: dict[str, set[str]] = {}
    for m in unique:
        spaces.setdefault(m.ref, set()).add(m.namespace)
    return [progress.Target(m.kind, m.namespace, m.name,
                            m.ref if len(spaces[m.ref]) == 1
                            else f"{m.ref} (namespace {m.namespace})")
            for m in unique]


async def wait_for(client: rest.RestClient, applied: list[manifests.Manifest], *,
                   timeout: float, err: bool = False) -> None:
    """--wait: progress (on stderr with `err`) until every applied object is ready; exit
    1 naming what was not when `timeout` passes."""
    targets = progress_targets(applied)
    tty = (sys.stderr if err else sys.stdout).isatty()
    left = await progress.wait_ready(client, targets, timeout=timeout, check=readiness_check,
                                     write=lambda text: click.echo(text, nl=False, err=err),
                                     tty=tty)
    if left:
        for line in left:
            report(f"timed out waiting for the condition on {line.ref}: {line.message}")
        sys.exit(1)
