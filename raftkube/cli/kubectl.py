"""`rk apply`, `rk get`, `rk delete`: kubectl's core over the Kubernetes-style REST API.

Three parts, in the order a command runs them:

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
- Output goes through `printers`; errors read like kubectl's, go to stderr, exit 1.

`register(group)` adds the commands to a click group (`rk`'s `main`). The clock is an
argument of `register` so that tests see fixed AGE columns.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from raftkube.api import kinds, merge, printers
from raftkube.cli import manifests
from raftkube.client import config as cfg
from raftkube.client import errors, rest, transport

Obj = dict[str, Any]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
T = TypeVar("T")
PROPAGATION = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
               "true": "Background", "false": "Orphan"}


class OperationError(errors.ClientError):
    """One object's request failed; the command goes on with the others and exits 1."""


# ---- apply -------------------------------------------------------------------------------


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


FIELD_VALIDATION = {"strict": "Strict", "true": "Strict", "warn": "Warn", "ignore": "Ignore",
                    "false": "Ignore"}


def show_warnings(client: rest.RestClient) -> None:
    for text in client.warnings:
        click.echo(f"Warning: {text}", err=True)
    client.warnings.clear()


async def each(items: Iterable[T], step: Callable[[T], Awaitable[None]]) -> bool:
    """`step` for every item: a failed one (OperationError) is reported and the others go
    on; any other ClientError ends the command. Whether any failed."""
    failed = False
    for item in items:
        try:
            await step(item)
        except OperationError as e:
            report(e)
            failed = True
        except errors.ClientError as e:
            fail(e)
    return failed


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


# ---- the commands --------------------------------------------------------------------------


@dataclass
class Session:
    client: rest.RestClient
    namespace: str  # the default: -n, else the config's `namespace:`, else "default"


DEFAULT_WAIT = 20.0  # seconds an unanswered request is retried (an election, a restart)


def connect(namespace: str | None) -> Session:
    """A session on the configured cluster; `rk --request-timeout` bounds how long a
    request waits for a master to answer."""
    config = cfg.load_config()
    wait = DEFAULT_WAIT
    context = click.get_current_context(silent=True)
    if context is not None:
        wait = context.find_root().params.get("request_timeout") or DEFAULT_WAIT
    tp = transport.Transport(config.servers, config.token, ca=config.ca,
                             timeout=min(15.0, wait), wait=wait)
    return Session(rest.RestClient(tp), namespace or config.namespace)


def run(body: Callable[[], Coroutine[Any, Any, None]], session: Session | None = None
        ) -> None:
    """Run a command's body on an event loop; its session's connections are closed."""

    async def main() -> None:
        try:
            await body()
        finally:
            if session is not None:
                await session.client.transport.close()

    asyncio.run(main())


def fail(error: str | errors.ClientError) -> NoReturn:
    report(error)
    sys.exit(1)


def report(error: str | errors.ClientError) -> None:
    if isinstance(error, manifests.ManifestError):
        for problem in error.problems:
            click.echo(f"error: {problem}", err=True)
        return
    text = describe(error)
    if isinstance(error, errors.ApiError | OperationError):
        click.echo(text, err=True)
    else:
        click.echo(f"error: {text}", err=True)


def describe(error: str | errors.ClientError) -> str:
    """What to tell the user. A write whose outcome is unknown says so first: it may have
    been applied, so the user looks (`rk get`) before doing it again."""
    if isinstance(error, errors.UnknownOutcome):
        return f"the outcome is unknown: {error}"
    return str(error)


def resolve_kind(word: str) -> kinds.Kind:
    kind = kinds.resolve(word)
    if kind is None:
        raise errors.ClientError(f'the server doesn\'t have a resource type "{word}"')
    return kind


def parse_targets(args: tuple[str, ...]) -> list[tuple[kinds.Kind, list[str]]]:
    """`KIND[,KIND] [NAME...]` or `KIND/NAME...` as (kind, names) in the order given."""
    if any("/" in a for a in args):
        groups: dict[kinds.Kind, list[str]] = {}
        for arg in args:
            word, slash, name = arg.partition("/")
            if not slash or not name:
                raise errors.ClientError(
                    "there is no need to specify a resource type as a separate argument when "
                    "passing arguments in resource/name form (e.g. 'rk get resource/<name>' "
                    "instead of 'rk get resource resource/<name>')")
            groups.setdefault(resolve_kind(word), []).append(name)
        return list(groups.items())
    words = [w for w in args[0].split(",") if w]
    if not words:
        raise errors.ClientError(f'the server doesn\'t have a resource type "{args[0]}"')
    return [(resolve_kind(w), list(args[1:])) for w in dict.fromkeys(words)]


def read_stdin() -> str:
    # sys.stdin rather than click.get_text_stream: click's stubs for the latter differ
    # between releases, and CliRunner swaps sys.stdin as well.
    return sys.stdin.read()


def utcnow() -> datetime:
    return datetime.now(UTC)


def register(group: click.Group, *, clock: Callable[[], datetime] = utcnow) -> None:
    """Add `apply`, `get` and `delete` to `group`; `clock` is what AGE is measured from."""
    for command in make_commands(clock):
        group.add_command(command)


def make_commands(clock: Callable[[], datetime]) -> list[click.Command]:
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

    @click.command("delete")
    @click.argument("args", nargs=-1)
    @click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE|DIR|-",
                  help="Delete the objects of these manifest(s).")
    @click.option("-n", "--namespace", help="Namespace of the objects.")
    @click.option("-l", "--selector", default="", help="Delete the objects with these labels.")
    @click.option("--all", "all_", is_flag=True, help="Delete every object of the kind.")
    @click.option("--cascade", default="background", show_default=True,
                  type=click.Choice(list(PROPAGATION), case_sensitive=False),
                  help="What happens to dependents: deleted in the background, before the "
                       "owner (foreground), or left behind (orphan).")
    @click.option("--ignore-not-found", is_flag=True, help="An object that is gone is fine.")
    def delete(args: tuple[str, ...], filenames: tuple[str, ...], namespace: str | None,
               selector: str, all_: bool, cascade: str, ignore_not_found: bool) -> None:
        """Delete objects: `rk delete -f FILE`, `rk delete KIND NAME...`, `KIND/NAME...`."""
        propagation = PROPAGATION[cascade.lower()]
        plan: list[tuple[kinds.Kind, str, str, str]] = []  # kind, namespace, name, source
        targets: list[tuple[kinds.Kind, list[str]]] = []  # when given as arguments
        try:
            session = connect(namespace)
            if filenames:
                if args:
                    raise errors.ClientError("give either -f or resources as arguments, "
                                             "not both")
                for m in manifests.load_manifests(list(filenames), read_stdin=read_stdin,
                                                  namespace=session.namespace,
                                                  explicit_namespace=namespace is not None,
                                                  verb="delete"):
                    plan.append((m.kind, m.namespace, m.name, m.source))
            elif not args:
                raise errors.ClientError("You must provide one or more resources by argument "
                                         "or filename (-f).")
            else:
                targets = parse_targets(args)
                for _kind, names in targets:
                    if names and (selector or all_):
                        raise errors.ClientError("name cannot be provided when a selector or "
                                                 "--all is specified")
                    if not names and not (selector or all_):
                        raise errors.ClientError("resource(s) were provided, but no name was "
                                                 "specified")
        except errors.ClientError as e:
            fail(e)

        async def delete_and_say(item: tuple[kinds.Kind, str, str, str]) -> None:
            kind, ns, name, source = item
            try:
                await session.client.delete(kind, ns if kind.namespaced else "", name,
                                            propagation=propagation)
            except errors.ApiError as e:
                if e.code == 404 and ignore_not_found:
                    return
                context = f'error when deleting "{source}"' if source else ""
                raise OperationError(errors.format_error(e, context=context)) from None
            click.echo(f'{printers.qualified(kind)} "{name}" deleted')

        async def body() -> None:
            if not filenames:
                try:
                    for kind, names in targets:
                        if not names:
                            listed, _ = await session.client.list_all(
                                kind, session.namespace, label_selector=selector)
                            names = [printers.name_of(o) for o in listed]
                        plan.extend((kind, session.namespace, n, "") for n in names)
                except errors.ClientError as e:
                    fail(e)
            if not plan and (selector or all_):
                click.echo("No resources found", err=True)
            if await each(plan, delete_and_say):
                sys.exit(1)

        run(body, session)

    return [apply, get, delete]
