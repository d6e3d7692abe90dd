"""`rk wait`: until objects meet a condition, are deleted, or a field has a value.

Watch-based, as kubectl's: each object is listed once (which gives a resourceVersion)
and then watched from there, so a change is seen when it happens, not at the next poll.
`states()` is that loop, shared with `rk rollout status` and `rk drain`: it yields the
objects it follows every time one changes, resumes a broken stream from the last
version it saw and relists after 410 Gone. The caller bounds it with a timeout.

What a `--for` means (`Wanted`, `met`) is pure and tested on its own.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import click

from raftkube.api import kinds, printers
from raftkube.cli import durations, jsonpath
from raftkube.cli.session import Session, connect, fail, parse_targets, run
from raftkube.client import errors, rest, transport

Obj = dict[str, Any]

RESUME_PAUSE = 0.5  # seconds before a broken watch is resumed


# ---- what --for asks ------------------------------------------------------------------


@dataclass(frozen=True)
class Wanted:
    """One `--for`: `delete`, `create`, `condition` (name, value) or `jsonpath` (path,
    value; value None means the field only has to exist)."""

    what: str
    name: str = ""
    value: str | None = None

    @property
    def verb(self) -> str:
        return "deleted" if self.what == "delete" else "condition met"


def parse_for(text: str) -> Wanted:
    """`delete`, `condition=NAME[=VALUE]`, `jsonpath={PATH}[=VALUE]`; a ClientError in
    kubectl's words otherwise."""
    if text.lower() in ("delete", "create"):
        return Wanted(text.lower())
    word, eq, rest_ = text.partition("=")
    if word.lower() == "condition" and eq:
        name, eq2, value = rest_.partition("=")
        if name and (not eq2 or value):
            return Wanted("condition", name, value if eq2 else "true")
    if word.lower() == "jsonpath" and eq:
        path, jvalue = _split_jsonpath(rest_)
        if path:
            _template(path)  # the syntax, checked now
            return Wanted("jsonpath", path, jvalue)
    raise errors.ClientError(f'unrecognized condition: "{text}" (--for takes delete, '
                             "create, condition=NAME[=VALUE] or jsonpath='{.FIELD}'[=VALUE])")


def _split_jsonpath(text: str) -> tuple[str, str | None]:
    if text.startswith("{"):
        end = text.find("}")
        if end < 0:
            return "", None
        path, tail = text[1:end], text[end + 1:]
        if tail and not tail.startswith("="):
            return "", None
        return path, (tail[1:] if tail else None)
    path, eq, value = text.partition("=")
    return path, (value if eq else None)


def _template(path: str) -> jsonpath.Template:
    """`.status.phase`, `{.status.conditions[?(@.type=="Ready")].status}`: kubectl's
    JSONPath (cli/jsonpath.py), one path."""
    try:
        return jsonpath.parse(jsonpath.relaxed(path))
    except jsonpath.JsonPathError as e:
        raise errors.ClientError(f'--for: jsonpath "{path}": {e}') from None


def field(obj: Any, path: str) -> tuple[bool, Any]:
    """(found, value) of a JSONPath in `obj`; several results are a list."""
    try:
        values = [v for action in _template(path).results(obj) for v in action]
    except jsonpath.JsonPathError:
        return False, None  # an index past the end: not there (yet)
    if not values:
        return False, None
    return True, values[0] if len(values) == 1 else values


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def met(wanted: Wanted, obj: Obj | None) -> bool:
    """Whether `obj` (None: it does not exist) is what `wanted` waits for."""
    if wanted.what == "delete":
        return obj is None
    if obj is None:
        return False
    if wanted.what == "create":
        return True
    if wanted.what == "condition":
        for c in (obj.get("status") or {}).get("conditions") or []:
            if isinstance(c, dict) and str(c.get("type", "")).lower() == wanted.name.lower():
                # a condition written for an older spec says nothing of this one (kubectl)
                seen = c.get("observedGeneration")
                generation = (obj.get("metadata") or {}).get("generation")
                if isinstance(seen, int) and isinstance(generation, int) and seen < generation:
                    return False
                return str(c.get("status", "")).lower() == (wanted.value or "").lower()
        return False
    found, value = field(obj, wanted.name)
    if wanted.value is None:
        return found
    return found and not isinstance(value, dict | list) and _text(value) == wanted.value


# ---- following objects ----------------------------------------------------------------


async def states(client: rest.RestClient, kind: kinds.Kind, namespace: str, *,
                 name: str = "", selector: str = "") -> AsyncIterator[dict[str, Obj]]:
    """The objects of `kind` named `name` (or matching `selector`), by name: once as
    listed and again after every change. Runs until the caller stops (a timeout)."""
    fields = f"metadata.name={name}" if name else ""
    ns = namespace if kind.namespaced else ""
    while True:
        items, version = await client.list_all(kind, ns, label_selector=selector,
                                               field_selector=fields)
        current = {printers.name_of(o): o for o in items}
        yield current
        while True:
            try:
                async for event in client.watch(kind, ns, resource_version=version,
                                                label_selector=selector,
                                                field_selector=fields):
                    version = event.resource_version or version
                    if event.type == "BOOKMARK":
                        continue
                    key = printers.name_of(event.object)
                    if event.type == "DELETED":
                        current.pop(key, None)
                    else:
                        current[key] = event.object
                    yield current
            except errors.ApiError as e:
                if e.code == 410:
                    break  # too old: list again
                raise
            except (transport.StreamBroken, aiohttp.ClientError, TimeoutError,
                    ConnectionError):
                # the transport reports a dropped stream (a master killed, a read that
                # timed out) as StreamBroken: resume from the last version seen
                await asyncio.sleep(RESUME_PAUSE)


async def until(client: rest.RestClient, kind: kinds.Kind, namespace: str, name: str,
                test: Callable[[Obj | None], bool]) -> Obj | None:
    """The object `name` (None once gone) as soon as `test` holds of it."""
    async for current in states(client, kind, namespace, name=name):
        obj = current.get(name)
        if test(obj):
            return obj
    raise AssertionError("unreachable: states() never ends")  # pragma: no cover


async def current(session: Session, kind: kinds.Kind, name: str) -> Obj | None:
    """The object as it is now; None if there is none."""
    try:
        return await session.client.get(kind, session.namespace, name)
    except errors.ApiError as e:
        if e.code == 404:
            return None
        raise


# ---- the command ----------------------------------------------------------------------


async def _targets(session: Session, args: tuple[str, ...], selector: str, all_: bool,
                   wanted: Wanted) -> list[tuple[kinds.Kind, str]]:
    out: list[tuple[kinds.Kind, str]] = []
    for kind, names in parse_targets(args):
        if names and (selector or all_):
            raise errors.ClientError("name cannot be provided when a selector or --all is "
                                     "specified")
        if names:
            out.extend((kind, n) for n in names)
            continue
        if not (selector or all_):
            raise errors.ClientError("resource(s) were provided, but no name was specified")
        listed, _ = await session.client.list_all(kind, session.namespace,
                                                  label_selector=selector)
        out.extend((kind, printers.name_of(o)) for o in listed)
    if not out and wanted.what not in ("delete", "create"):
        raise errors.ClientError("no matching resources found")
    return out


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("wait")
    @click.argument("args", nargs=-1)
    @click.option("--for", "for_", required=True, metavar="CONDITION",
                  help="delete, create, condition=NAME[=VALUE] (VALUE defaults to "
                       "true), or jsonpath='{.FIELD}'=VALUE.")
    @click.option("-n", "--namespace", help="Namespace of the objects.")
    @click.option("-l", "--selector", default="", help="Wait for the objects with these labels.")
    @click.option("--all", "all_", is_flag=True, help="Wait for every object of the kind.")
    @click.option("--timeout", default="30s", show_default=True,
                  help="How long to wait (0: look once; negative: a week).")
    def wait(args: tuple[str, ...], for_: str, namespace: str | None, selector: str,
             all_: bool, timeout: str) -> None:
        """Wait until objects meet a condition: `rk wait --for=condition=Ready pod/web-1`."""
        try:
            wanted = parse_for(for_)
            seconds = durations.argument("--timeout", timeout)
            if not args:
                raise errors.ClientError("You must provide one or more resources by argument.")
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)
        if seconds < 0:
            seconds = 7 * 24 * 3600.0
        problems: list[tuple[int, str]] = []  # in the order of the targets, as kubectl's

        async def one(index: int, kind: kinds.Kind, name: str) -> None:
            where = f"{kind.resource}/{name}"
            try:
                if seconds == 0:  # look once
                    if not met(wanted, await current(session, kind, name)):
                        problems.append((index, f"condition not met for {where}"))
                        return
                else:
                    async with asyncio.timeout(seconds):
                        await until(session.client, kind, session.namespace, name,
                                    lambda obj: met(wanted, obj))
            except TimeoutError:
                problems.append((index, f"timed out waiting for the condition on {where}"))
                return
            except errors.ClientError as e:
                problems.append((index, str(e)))
                return
            click.echo(f"{printers.qualified(kind)}/{name} {wanted.verb}")

        async def body() -> None:
            try:
                targets = await _targets(session, args, selector, all_, wanted)
                present = []
                for kind, name in targets:
                    # a missing object: kubectl's NotFound, or nothing to wait for
                    if wanted.what == "condition" or wanted.what == "jsonpath":
                        await session.client.get(kind, session.namespace, name)
                    elif wanted.what == "delete" and await current(session, kind,
                                                                   name) is None:
                        continue
                    present.append((kind, name))
            except errors.ClientError as e:
                fail(e)
            await asyncio.gather(*(one(i, kind, name) for i, (kind, name) in enumerate(present)))

        run(body, session)
        # kubectl's words: one error says `error:`, several are listed bare
        if len(problems) == 1:
            fail(problems[0][1])
        for _, problem in sorted(problems):
            click.echo(problem, err=True)
        if problems:
            sys.exit(1)

    return [wait]
