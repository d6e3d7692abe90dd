"""kubectl's durations (`--timeout`, `--since`; `--request-timeout` also takes bare
seconds): Go's `time.ParseDuration` syntax (`90s`, `5m`, `1m30s`, `1.5h`, `500ms`); a bare
number other than `0` has no unit and is refused, as Go refuses it. Kept apart so every
command that takes a duration reads it the same way and names the flag when it cannot."""

from __future__ import annotations

import re

import click

from raftkube.client import errors

UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse(text: str) -> float:
    """Seconds; ValueError for anything that is not a Go duration."""
    value = text.strip()
    if value in ("0", "+0", "-0"):
        return 0.0
    sign = -1.0 if value.startswith("-") else 1.0
    body = value.lstrip("+-")
    pos, total = 0, 0.0
    while pos < len(body):
        match = _PART.match(body, pos)
        if match is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * UNITS[match.group(2)]
        pos = match.end()
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def option(flag: str, value: str) -> float:
    """A flag's duration, or click's usage error naming the flag."""
    try:
        seconds = parse(value)
    except ValueError as e:
        raise click.BadParameter(f"{e} (expected e.g. 30s, 5m, 1m30s)",
                                 param_hint=f"'{flag}'") from None
    if seconds < 0:
        raise click.BadParameter("must not be negative", param_hint=f"'{flag}'")
    return seconds


def argument(flag: str, value: str) -> float:
    """A flag's duration, or kubectl's error for it as a ClientError: `invalid argument
    "x" for "--timeout" flag: time: invalid duration "x"`."""
    try:
        return parse(value)
    except ValueError as e:
        raise errors.ClientError(f'invalid argument "{value}" for "{flag}" flag: {e}'
                                 ) from None
