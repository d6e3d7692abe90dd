"""`rk diff -f`: what `rk apply -f` would change, as a unified diff of live and merged.

The merged side is what the server makes of the apply, asked as a server dry run of the
request apply sends (`apply.apply_patch`, or the create), so defaults, validation and
the three-way merge are the server's and apply's own. As in kubectl's diff, the patch
does not update the last-applied annotation (it shows as the live object holds it), and a
Secret's values are masked as kubectl masks them. Both sides leave out what changes on
every write (resourceVersion, generation, managedFields), which kubectl would show.
Each object is a file named `GROUP.VERSION.KIND.NAMESPACE.NAME`; with $RK_EXTERNAL_DIFF
or $KUBECTL_EXTERNAL_DIFF the two directories go to that program, else Python's difflib
prints `diff -u -N`'s output.
Exit status as kubectl's: 0 no differences, 1 differences, more than 1 an error.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, printers
from raftkube.cli import apply, manifests
from raftkube.cli.session import OperationError, connect, describe, read_stdin, report, run
from raftkube.client import errors

Obj = dict[str, Any]
EXTERNAL = ("RK_EXTERNAL_DIFF", "KUBECTL_EXTERNAL_DIFF")
NOISE = ("resourceVersion", "generation", "managedFields")
ERROR_EXIT = 2
ARG = re.compile(r"^[a-zA-Z0-9=-]+$")


def file_name(kind: kinds.Kind, obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    parts = [kind.group, kind.version, kind.kind]
    if kind.namespaced:
        parts.append(str(meta.get("namespace") or ""))
    parts.append(str(meta.get("name") or ""))
    return ".".join(p for p in parts if p)


def clean(obj: Obj | None) -> Obj | None:
    """An object without the fields every write changes."""
    if obj is None:
        return None
    out = copy.deepcopy(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        for key in NOISE:
            meta.pop(key, None)
    return out


def mask_secrets(live: Obj | None, merged: Obj | None) -> tuple[Obj | None, Obj | None]:
    """kubectl's masking of a Secret's values: `***` where both sides agree, `*** (before)`
    and `*** (after)` where they differ."""
    if (live or merged or {}).get("kind") != "Secret":
        return live, merged
    before = dict((live or {}).get("data") or {})
    after = dict((merged or {}).get("data") or {})
    for key in set(before) | set(after):
        differ = before.get(key) != after.get(key)
        if key in before:
            before[key] = "*** (before)" if differ else "***"
        if key in after:
            after[key] = "*** (after)" if differ else "***"
    if live is not None and "data" in live:
        live = {**live, "data": before}
    if merged is not None and "data" in merged:
        merged = {**merged, "data": after}
    return live, merged


def text_of(obj: Obj | None) -> str:
    return "" if obj is None else printers.to_yaml(obj)


def unified(name: str, live: str, merged: str) -> str:
    """`diff -u -N LIVE/name MERGED/name`'s output; "" when the two are the same."""
    if live == merged:
        return ""
    a, b = f"LIVE/{name}", f"MERGED/{name}"
    lines = difflib.unified_diff(live.splitlines(keepends=True),
                                 merged.splitlines(keepends=True), fromfile=a, tofile=b)
    body = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return f"diff -u -N {a} {b}\n{body}"


def external_command(env: dict[str, str]) -> list[str] | None:
    """The external diff program and its arguments, as kubectl reads them (arguments
    only of letters, digits, `-` and `=`); None when none is set."""
    for name in EXTERNAL:
        words = env.get(name, "").split()
        if words:
            return [words[0], *(w for w in words[1:] if ARG.match(w))]
    return None


def without_record(patch: Obj) -> Obj:
    """Apply's patch without its update of the last-applied annotation: kubectl's diff
    leaves the annotation as the live object has it, so that only the manifest's own
    changes show."""
    meta = patch.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(annotations, dict):
        return patch
    annotations.pop(apply.LAST_APPLIED, None)
    if not annotations:
        del meta["annotations"]
    if not meta:
        del patch["metadata"]
    return patch


async def merged_of(client: Any, m: manifests.Manifest) -> tuple[Obj | None, Obj]:
    """The live object (None when there is none) and what applying `m` would make it."""
    try:
        live: Obj | None = await client.get(m.kind, m.namespace, m.name)
    except errors.ApiError as e:
        if e.code != 404:
            raise OperationError(errors.format_error(
                e, context=f"error when retrieving current configuration of {m.ref} from "
                           f'"{m.source}"')) from None
        live = None
    try:
        if live is None:
            merged: Obj = await client.create(m.kind, m.namespace, m.obj, dry_run=True)
            return None, merged
        patch = without_record(apply.apply_patch(manifest=m.obj, live=live))
        if not patch:
            return live, live
        patch.setdefault("metadata", {})["resourceVersion"] = \
            (live.get("metadata") or {}).get("resourceVersion")
        merged = await client.patch(m.kind, m.namespace, m.name, patch, dry_run=True)
        return live, merged
    except errors.ApiError as e:
        raise OperationError(errors.format_error(
            e, context=f'error when computing the merged object of "{m.source}"')) from None


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("diff")
    @click.option("-f", "--filename", "filenames", multiple=True, required=True,
                  metavar="FILE|DIR|-", help="Manifest(s) to compare with the cluster.")
    @click.option("-n", "--namespace", help="Namespace for objects that do not name one.")
    def diff(filenames: tuple[str, ...], namespace: str | None) -> None:
        """Show what `rk apply -f` would change. Exit 0: nothing; 1: differences; >1: an
        error."""
        try:
            session = connect(namespace)
            loaded = manifests.load_manifests(list(filenames), read_stdin=read_stdin,
                                              namespace=session.namespace,
                                              explicit_namespace=namespace is not None,
                                              verb="diff")
        except errors.ClientError as e:
            report(e)
            sys.exit(ERROR_EXIT)
        pairs: list[tuple[str, str, str]] = []  # file name, live text, merged text
        failed = False

        async def body() -> None:
            nonlocal failed
            for m in manifests.apply_order(loaded):
                try:
                    live, merged = await merged_of(session.client, m)
                except OperationError as e:
                    report(e)
                    failed = True
                    continue
                except errors.ClientError as e:
                    click.echo(f"error: {describe(e)}", err=True)
                    sys.exit(ERROR_EXIT)
                shown = mask_secrets(clean(live), clean(merged))
                pairs.append((file_name(m.kind, m.obj), text_of(shown[0]),
                              text_of(shown[1])))

        run(body, session)
        program = external_command(dict(os.environ))
        if program is None:
            out = "".join(unified(*p) for p in pairs)
            click.echo(out, nl=False)
            code = 1 if out else 0
        else:
            code = run_external(program, pairs)
        sys.exit(ERROR_EXIT if failed else code)

    return [diff]


def run_external(program: list[str], pairs: list[tuple[str, str, str]]) -> int:
    """The two sides as directories of files, compared by `program`: its exit status."""
    with tempfile.TemporaryDirectory(prefix="rk-diff-") as top:
        live_dir, merged_dir = os.path.join(top, "LIVE"), os.path.join(top, "MERGED")
        os.mkdir(live_dir)
        os.mkdir(merged_dir)
        for name, live, merged in pairs:
            for directory, text in ((live_dir, live), (merged_dir, merged)):
                if text:
                    with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
                        f.write(text)
        sys.stdout.flush()
        try:
            done = subprocess.run([*program, live_dir, merged_dir], capture_output=True,
                                  text=True)
        except OSError as e:
            click.echo(f'error: failed to run "{program[0]}": {e.strerror or e}', err=True)
            return ERROR_EXIT
    click.echo(done.stdout, nl=False)
    click.echo(done.stderr, nl=False, err=True)
    return done.returncode
