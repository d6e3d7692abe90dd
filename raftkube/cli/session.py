"""What every kubectl-like command of `rk` shares: a session on the configured cluster,
running a command's body, and kubectl's way of reporting errors.

Errors read like kubectl's, go to stderr, and exit 1. `each` runs a step per object and
goes on past one object's failure (OperationError), as kubectl does with several files.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from raftkube.api import kinds
from raftkube.cli import manifests
from raftkube.client import config as cfg
from raftkube.client import errors, rest, transport

T = TypeVar("T")


class OperationError(errors.ClientError):
    """One object's request failed; the command goes on with the others and exits 1."""


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



CONFLICT_TRIES = 5  # a read-then-write that keeps meeting newer objects is reported


async def retry_conflicts(attempt: Callable[[], Awaitable[T]], *,
                          tries: int = CONFLICT_TRIES) -> T:
    """`attempt()`, a read then a write carrying the resourceVersion it read, again while
    the write answers Conflict: the object changed in between (a controller's status
    update), so it is read, and the write decided, again. The last Conflict is raised."""
    for _ in range(tries - 1):
        try:
            return await attempt()
        except errors.ApiError as e:
            if not (e.code == 409 and e.reason == "Conflict"):
                raise
    return await attempt()


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
    """`KIND[,KIND] [NAME...]` or `KIND/NAME...` as (kind, names) in the order given.
    (`rk get` reads the first form with categories as well, the second with this.)"""
    if any("/" in a for a in args):
        groups: dict[kinds.Kind, list[str]] = {}
        for arg in args:
            word, slash, name = arg.partition("/")
            if not slash:
                raise errors.ClientError(
                    "there is no need to specify a resource type as a separate argument when "
                    "passing arguments in resource/name form (e.g. 'rk get resource/"
                    "<resource_name>' instead of 'rk get resource resource/<resource_name>'")
            if not word or not name or "/" in name:
                raise errors.ClientError("arguments in resource/name form must have a single "
                                         "resource and name")
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

