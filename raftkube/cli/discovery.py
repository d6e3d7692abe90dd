"""What the server says about itself: `rk api-resources` (its discovery documents),
`rk explain` (its OpenAPI v3 schema, the one it validates with) and `rk version`.

Everything here is read from the server, as kubectl reads it, so that `rk` describes
the server it talks to rather than the one it was built with. The text is kubectl's:
api-resources' columns, explain's KIND/VERSION/FIELD/DESCRIPTION/FIELDS layout with
`<type>` names taken from the schema's `$ref`s, and version's `Client Version:` lines.
"""

from __future__ import annotations

import json
import textwrap
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from raftkube.api import kinds, printers
from raftkube.apiserver import version as ver
from raftkube.cli.session import Session, connect, fail, resolve_kind, run
from raftkube.client import errors

Obj = dict[str, Any]
WIDTH = 80  # explain's descriptions are wrapped to this


# ---- api-resources ---------------------------------------------------------------------

async def resource_lists(session: Session) -> list[Obj]:
    """Every group version's APIResourceList: the core group first, then each group's
    preferred version, in the server's order."""
    client = session.client
    lists = [await client.request("GET", f"/api/{v}")
             for v in (await client.request("GET", "/api")).get("versions") or []]
    for group in (await client.request("GET", "/apis")).get("groups") or []:
        preferred = (group.get("preferredVersion") or {}).get("groupVersion")
        if preferred:
            lists.append(await client.request("GET", f"/apis/{preferred}"))
    return lists


def resource_rows(lists: list[Obj], *, output: str | None, namespaced: bool | None,
                  api_group: str | None, headers: bool = True) -> list[list[str]]:
    """kubectl's table (NAME SHORTNAMES APIVERSION NAMESPACED KIND [VERBS CATEGORIES])
    or its names (`-o name`: `deployments.apps`); subresources are left out."""
    rows: list[list[str]] = []
    for rl in lists:
        gv = str(rl.get("groupVersion") or "")
        group = gv.rpartition("/")[0]
        if api_group is not None and group != api_group:
            continue
        for r in rl.get("resources") or []:
            name = str(r.get("name") or "")
            if "/" in name or (namespaced is not None
                               and bool(r.get("namespaced")) != namespaced):
                continue
            if output == "name":
                rows.append([f"{name}.{group}" if group else name])
                continue
            row = [name, ",".join(r.get("shortNames") or []), gv,
                   "true" if r.get("namespaced") else "false", str(r.get("kind") or "")]
            if output == "wide":
                row += [f"[{' '.join(r.get('verbs') or [])}]",
                        ",".join(r.get("categories") or [])]
            rows.append(row)
    if output != "name" and headers:
        head = ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
        rows.insert(0, head + (["VERBS", "CATEGORIES"] if output == "wide" else []))
    return rows


# ---- explain ---------------------------------------------------------------------------

def _ref_name(prop: Obj) -> str | None:
    refs = [s.get("$ref") for s in prop.get("allOf") or [] if isinstance(s, dict)]
    ref = prop.get("$ref") or (refs[0] if refs else None)
    return str(ref).rsplit("/", 1)[-1] if ref else None


class Schemas:
    """One group version's OpenAPI v3 components, with `$ref`s followed."""

    def __init__(self, doc: Obj) -> None:
        self.components: Obj = (doc.get("components") or {}).get("schemas") or {}

    def resolve(self, prop: Obj) -> Obj:
        """The schema `prop` stands for: its `$ref`'s target (with the field's own
        description first), or itself."""
        name = _ref_name(prop)
        if name is None:
            return prop
        return self.components.get(name) or {}

    def type_name(self, prop: Obj) -> str:
        """kubectl's `<type>`: `string`, `[]Container`, `map[string]string`, `Object`."""
        name = _ref_name(prop)
        if name is not None:
            return name.rsplit(".", 1)[-1]
        if prop.get("type") == "array":
            return "[]" + self.type_name(prop.get("items") or {})
        if isinstance(prop.get("additionalProperties"), dict):
            return "map[string]" + self.type_name(prop["additionalProperties"])
        if prop.get("type") == "object" or prop.get("x-kubernetes-preserve-unknown-fields"):
            return "Object"
        if prop.get("x-kubernetes-int-or-string"):
            return "IntOrString"
        return str(prop.get("type") or "Object")

    def fields_of(self, prop: Obj) -> Obj:
        """The properties under `prop`, looking through arrays and maps."""
        s = self.resolve(prop)
        while True:
            if s.get("type") == "array" and isinstance(s.get("items"), dict):
                s = self.resolve(s["items"])
            elif isinstance(s.get("additionalProperties"), dict):
                s = self.resolve(s["additionalProperties"])
            else:
                break
        props = s.get("properties")
        return props if isinstance(props, dict) else {}


def find_kind_schema(doc: Obj, kind: kinds.Kind) -> Obj | None:
    for s in ((doc.get("components") or {}).get("schemas") or {}).values():
        for gvk in s.get("x-kubernetes-group-version-kind") or []:
            if (gvk.get("group") or "", gvk.get("version"), gvk.get("kind")) == \
                    (kind.group, kind.version, kind.kind):
                return dict(s)
    return None


def _wrap(text: str, indent: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    for paragraph in text.split("\n"):
        lines = textwrap.wrap(paragraph, width=WIDTH - indent) or [""]
        out += [(pad + line).rstrip() for line in lines]
    return out


def explain_text(doc: Obj, kind: kinds.Kind, path: list[str], *,
                 recursive: bool = False) -> str:
    """kubectl explain's plain text for `kind` and a field path under it; ClientError
    naming the field that does not exist."""
    schemas = Schemas(doc)
    top = find_kind_schema(doc, kind)
    if top is None:
        raise errors.ClientError(f"couldn't find resource for \"{kind.api_version}, "
                                 f"Kind={kind.kind}\"")
    prop: Obj = top
    for i, name in enumerate(path):
        fields = schemas.fields_of(prop)
        if name not in fields:
            where = ".".join([kind.kind.lower(), *path[:i]])
            raise errors.ClientError(f'field "{name}" does not exist in {where}')
        prop = fields[name]
    lines = [f"KIND:       {kind.kind}", f"VERSION:    {kind.api_version}", ""]
    if path:
        lines += [f"FIELD: {path[-1]} <{schemas.type_name(prop)}>", ""]
    lines.append("DESCRIPTION:")
    descriptions = [str(prop.get("description") or "")]
    target = schemas.resolve(prop)
    if target is not prop and target.get("description"):
        descriptions.append(str(target["description"]))
    text = "\n\n".join(d for d in descriptions if d) or "<empty>"
    lines += _wrap(text, 4)
    lines.append("")
    fields = schemas.fields_of(prop)
    if fields:
        lines.append("FIELDS:")
        lines += _fields(schemas, fields, level=1, recursive=recursive, seen=())
    return "\n".join(lines).rstrip("\n") + "\n"


def _fields(schemas: Schemas, fields: Obj, *, level: int, recursive: bool,
            seen: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for name, prop in sorted(fields.items()):
        out.append(f"{'  ' * level}{name}\t<{schemas.type_name(prop)}>")
        if recursive:
            ref = _ref_name(prop) or ""
            if ref in seen:  # a structure that holds itself is shown once
                continue
            out += _fields(schemas, schemas.fields_of(prop), level=level + 1,
                           recursive=True, seen=(*seen, ref) if ref else seen)
        else:
            desc = str(prop.get("description") or "")
            out += _wrap(desc, 2 * level + 2) if desc else []
            out.append("")
    return out


async def openapi_document(session: Session, kind: kinds.Kind) -> Obj:
    """The server's OpenAPI v3 document of `kind`'s group version."""
    index = await session.client.request("GET", "/openapi/v3")
    gv = f"apis/{kind.group}/{kind.version}" if kind.group else f"api/{kind.version}"
    entry = (index.get("paths") or {}).get(gv)
    if not isinstance(entry, dict) or not entry.get("serverRelativeURL"):
        raise errors.ClientError(f"the server has no OpenAPI document for {gv}")
    url = urllib.parse.urlsplit(str(entry["serverRelativeURL"]))
    query = dict(urllib.parse.parse_qsl(url.query))
    doc: Obj = await session.client.request("GET", url.path, query=query or None)
    return doc


# ---- version ---------------------------------------------------------------------------

def client_version() -> Obj:
    """This `rk`'s version.Info: the API level it follows and the checkout it runs from."""
    return ver.info(*ver.source_commit(Path(__file__).resolve().parent))


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("api-resources")
    @click.option("-o", "--output", type=click.Choice(["wide", "name"]),
                  help="wide: also VERBS and CATEGORIES; name: RESOURCE.GROUP only.")
    @click.option("--namespaced", type=click.Choice(["true", "false"]),
                  help="Only namespaced (true) or only cluster-wide (false) resources.")
    @click.option("--api-group", default=None,
                  help="Only this API group's resources ('' for the core group).")
    @click.option("--no-headers", is_flag=True, help="Leave out the header line.")
    def api_resources(output: str | None, namespaced: str | None, api_group: str | None,
                      no_headers: bool) -> None:
        """The kinds of object the server serves, from its discovery documents."""
        try:
            session = connect(None)
        except errors.ClientError as e:
            fail(e)
        lists: list[Obj] = []

        async def body() -> None:
            try:
                lists.extend(await resource_lists(session))
            except errors.ClientError as e:
                fail(e)

        run(body, session)
        rows = resource_rows(lists, output=output, api_group=api_group,
                             namespaced=None if namespaced is None else namespaced == "true",
                             headers=not no_headers)
        if output == "name":
            click.echo("".join(row[0] + "\n" for row in rows), nl=False)
        else:
            click.echo(printers.tabulate(rows), nl=False)

    @click.command("explain")
    @click.argument("target", metavar="KIND[.FIELD...]")
    @click.option("--recursive", is_flag=True, help="Every field below, names and types only.")
    def explain(target: str, recursive: bool) -> None:
        """What a kind and its fields are, from the server's OpenAPI schema:
        `rk explain pods`, `rk explain deploy.spec.template.spec.containers`."""
        word, *path = target.split(".")
        try:
            kind = resolve_kind(word)
            session = connect(None)
        except errors.ClientError as e:
            fail(e)
        out: list[str] = []

        async def body() -> None:
            try:
                doc = await openapi_document(session, kind)
                out.append(explain_text(doc, kind, path, recursive=recursive))
            except errors.ClientError as e:
                fail(e)

        run(body, session)
        click.echo(out[0], nl=False)

    @click.command("version")
    @click.option("-o", "--output", type=click.Choice(["yaml", "json"]),
                  help="The whole version objects, as yaml or json.")
    @click.option("--client", "client_only", is_flag=True,
                  help="Only the client's version (no server is asked).")
    def version(output: str | None, client_only: bool) -> None:
        """The client's version and the server's (`/version`)."""
        doc: Obj = {"clientVersion": client_version()}
        problem: errors.ClientError | None = None
        if not client_only:
            try:
                session = connect(None)
            except errors.ClientError as e:
                fail(e)

            async def body() -> None:
                nonlocal problem
                try:
                    doc["serverVersion"] = await session.client.request("GET", "/version")
                except errors.ClientError as e:
                    problem = e

            run(body, session)
        if output == "json":
            click.echo(json.dumps(doc, indent=2))
        elif output == "yaml":
            click.echo(printers.to_yaml(doc), nl=False)
        else:
            click.echo(f"Client Version: {doc['clientVersion']['gitVersion']}")
            if "serverVersion" in doc:
                click.echo(f"Server Version: {doc['serverVersion'].get('gitVersion', '')}")
        if problem is not None:
            fail(problem)

    return [api_resources, explain, version]
