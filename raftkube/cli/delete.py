"""`rk delete`: by manifest, by name, by label selector or all of a kind, as kubectl does.

- With several manifests, whatever can be deleted is deleted and every problem is
  reported (a document of an unknown kind, a missing object), exit 1: `manifests`'
  `read_manifests` hands back the readable objects beside the problems.
- kubectl's grace rules: `--now` is a grace period of 1 s; `--force` alone is 0; a
  bare `--grace-period=0` becomes 1 unless forced (kubectl's guard against accidental
  immediate deletion); a forced immediate deletion prints kubectl's warning.
- `--wait` (kubectl's default) returns once every deleted object is gone from the API:
  a pod ends its grace period, finalizers finish, foreground deletion takes its
  dependents first. Each object is read again every `progress.POLL` seconds; an object
  of the same name with another uid is a new one, and counts as gone.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import click

from raftkube.api import kinds, printers
from raftkube.cli import durations, manifests, progress, writes
from raftkube.cli.session import (
    OperationError,
    connect,
    each,
    fail,
    parse_targets,
    read_stdin,
    report,
    run,
)
from raftkube.client import errors, rest

PROPAGATION = {"background": "Background", "foreground": "Foreground", "orphan": "Orphan",
               "true": "Background", "false": "Orphan"}
FORCE_WARNING = ("Warning: Immediate deletion does not wait for confirmation that the "
                 "running resource has been terminated. The resource may continue to run "
                 "on the cluster indefinitely.")
A_WEEK = 168 * 3600.0  # kubectl's wait when --timeout is 0: as good as forever


@dataclass(frozen=True)
class Target:
    kind: kinds.Kind
    namespace: str
    name: str
    source: str  # the manifest's file, or "" for names given as arguments


@dataclass(frozen=True)
class Deleted:
    target: Target
    uid: str


def grace_of(*, grace_period: int, force: bool, now: bool) -> int | None:
    """The grace period to send (None: the object's own), by kubectl's rules."""
    if now:
        if grace_period != -1:
            raise errors.ClientError("--now and --grace-period cannot be specified together")
        return 1
    if force and grace_period < 0:
        return 0
    if grace_period == 0 and not force:
        return 1  # kubectl: an unforced 0 would skip the pod's shutdown by accident
    return grace_period if grace_period >= 0 else None


def warning_for(*, grace: int | None, force: bool) -> str:
    if force and grace == 0:
        return FORCE_WARNING
    if force:
        return "Warning: --force is ignored because --grace-period is not 0."
    return ""


def parse_bool(flag: str, value: str) -> bool:
    word = value.strip().lower()
    if word in ("true", "1", "yes", "t"):
        return True
    if word in ("false", "0", "no", "f"):
        return False
    raise click.BadParameter(f'invalid argument "{value}": expected true or false',
                             param_hint=f"'{flag}'")


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("delete")
    @click.argument("args", nargs=-1)
    @click.option("-f", "--filename", "filenames", multiple=True, metavar="FILE|DIR|URL|-",
                  help="Delete the objects of these manifest(s).")
    @click.option("-R", "--recursive", is_flag=True,
                  help="Read the directories given with -f recursively.")
    @click.option("-n", "--namespace", help="Namespace of the objects.")
    @click.option("-A", "--all-namespaces", is_flag=True,
                  help="With -l or --all: in every namespace.")
    @click.option("-l", "--selector", default="", help="Delete the objects with these labels.")
    @click.option("--all", "all_", is_flag=True, help="Delete every object of the kind.")
    @click.option("--cascade", default="background", show_default=True,
                  type=click.Choice(list(PROPAGATION), case_sensitive=False),
                  help="What happens to dependents: deleted in the background, before the "
                       "owner (foreground), or left behind (orphan).")
    @click.option("--ignore-not-found", default=None, is_flag=True,
                  help="An object that is gone is fine (the default with -l and --all).")
    @click.option("--grace-period", type=int, default=-1, show_default=True,
                  help="Seconds a pod gets to stop; -1: its own terminationGracePeriod.")
    @click.option("--force", is_flag=True,
                  help="With --grace-period=0: remove at once, without waiting for the "
                       "node to confirm.")
    @click.option("--now", is_flag=True, help="Signal pods to stop at once (grace 1 s).")
    @click.option("--wait", "wait_", default="true", show_default=True, metavar="BOOL",
                  is_flag=False, flag_value="true",
                  help="Return only once the objects are gone (--wait=false: at once).")
    @click.option("--timeout", default="0s", show_default=True,
                  help="How long --wait waits (0: a week, as kubectl).")
    @click.option("--dry-run", default="none", show_default=True,
                  type=click.Choice(["none", "client", "server"]),
                  help="client: send nothing that writes; server: the server checks, "
                       "deletes nothing.")
    def delete(args: tuple[str, ...], filenames: tuple[str, ...], recursive: bool,
               namespace: str | None, all_namespaces: bool, selector: str, all_: bool,
               cascade: str, ignore_not_found: bool | None, grace_period: int,
               force: bool, now: bool, wait_: str, timeout: str, dry_run: str) -> None:
        """Delete objects: `rk delete -f FILE`, `rk delete KIND NAME...`, `KIND/NAME...`."""
        propagation = PROPAGATION[cascade.lower()]
        wait = parse_bool("--wait", wait_)
        seconds = durations.option("--timeout", timeout) or A_WEEK
        if ignore_not_found is None:
            ignore_not_found = bool(selector or all_)
        plan: list[Target] = []
        targets: list[tuple[kinds.Kind, list[str]]] = []  # when given as arguments
        problems: list[str] = []
        try:
            if all_ and selector:
                raise errors.ClientError("cannot set --all and --selector at the same time")
            grace = grace_of(grace_period=grace_period, force=force, now=now)
            session = connect(namespace)
            if filenames:
                if args:
                    raise errors.ClientError("give either -f or resources as arguments, "
                                             "not both")
                found, problems = manifests.read_manifests(
                    list(filenames), read_stdin=read_stdin, namespace=session.namespace,
                    explicit_namespace=namespace is not None, recursive=recursive)
                if not found and not problems:
                    raise errors.ClientError("no objects passed to delete")
                plan += [Target(m.kind, m.namespace, m.name, m.source)
                         for m in manifests.select(found, selector)]
            elif not args:
                raise errors.ClientError("You must provide one or more resources by argument "
                                         "or filename (-f).")
            else:
                targets = parse_targets(args)
                for _kind, names in targets:
                    if names and (selector or all_):
                        raise errors.ClientError("name cannot be provided when a selector or "
                                                 "--all is specified")
                    if names and all_namespaces:
                        raise errors.ClientError("a resource cannot be retrieved by name "
                                                 "across all namespaces")
                    if not names and not (selector or all_):
                        raise errors.ClientError("resource(s) were provided, but no name was "
                                                 "specified")
        except errors.ClientError as e:
            fail(e)
        warning = warning_for(grace=grace, force=force)
        if warning:
            click.echo(warning, err=True)
        word = "force deleted" if grace == 0 else "deleted"
        suffix = writes.DRY_RUN_SUFFIX[dry_run]
        deleted: list[Deleted] = []

        async def delete_and_say(t: Target) -> None:
            ns = t.namespace if t.kind.namespaced else ""
            try:
                if dry_run == "client":
                    answer = await session.client.get(t.kind, ns, t.name)
                else:
                    answer = await session.client.delete(
                        t.kind, ns, t.name, propagation=propagation, grace=grace,
                        dry_run=dry_run == "server")
            except errors.ApiError as e:
                if e.code == 404 and ignore_not_found:
                    return
                context = f'error when deleting "{t.source}"' if t.source else ""
                raise OperationError(errors.format_error(e, context=context)) from None
            uid = str((answer.get("metadata") or {}).get("uid")
                       or (answer.get("details") or {}).get("uid") or "")
            deleted.append(Deleted(t, uid))
            click.echo(f'{printers.qualified(t.kind)} "{t.name}" {word}{suffix}')

        async def body() -> None:
            failed = False
            for problem in problems:
                report(f"{problem}")
                failed = True
            if not filenames:
                try:
                    for kind, names in targets:
                        if not names:
                            scope = None if all_namespaces else session.namespace
                            listed, _ = await session.client.list_all(
                                kind, scope, label_selector=selector)
                            plan.extend(Target(kind, str(o["metadata"].get("namespace") or ""),
                                               printers.name_of(o), "") for o in listed)
                        else:
                            plan.extend(Target(kind, session.namespace, n, "") for n in names)
                except errors.ClientError as e:
                    fail(e)
            if not plan and (selector or all_):
                click.echo("No resources found")  # kubectl: stdout (get: stderr)
            failed = await each(plan, delete_and_say) or failed
            if wait and dry_run == "none" and deleted:
                try:
                    left = await wait_gone(session.client, deleted, timeout=seconds)
                except errors.ClientError as e:
                    fail(e)
                for t in left:
                    report(f"timed out waiting for the condition on "
                           f"{t.kind.resource}/{t.name}")
                    failed = True
            if failed:
                sys.exit(1)

        run(body, session)

    return [delete]


async def wait_gone(client: rest.RestClient, deleted: list[Deleted], *, timeout: float,
                    clock: Callable[[], float] = time.monotonic) -> list[Target]:
    """Until every deleted object is gone (404, or a new object under its name); what
    is still there when `timeout` passes."""
    deadline = clock() + timeout
    left = list(deleted)
    while True:
        still = []
        for d in left:
            t = d.target
            try:
                obj = await client.get(t.kind, t.namespace if t.kind.namespaced else "",
                                       t.name)
            except errors.ApiError as e:
                if e.code == 404:
                    continue
                raise
            if d.uid and (obj.get("metadata") or {}).get("uid") != d.uid:
                continue
            still.append(d)
        left = still
        remaining = deadline - clock()
        if not left or remaining <= 0:
            return [d.target for d in left]
        await asyncio.sleep(min(progress.POLL, remaining))
