"""Manifests: what `rk apply` and `rk delete -f` read, checked before any request.

Files, directories (their .yaml/.yml/.json files, sorted) and stdin are read, split into
YAML or JSON documents, `kind: List`s are unpacked, and every object is checked
(apiVersion, kind, name, a known kind, its namespace) before the first request, so a bad
document anywhere makes an invocation change nothing. Every problem is reported, each
with its file and document number, as kubectl reports them.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkube.api import causes, kinds, nesting, printers, yamltext
from raftkube.client import errors

Obj = dict[str, Any]
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "STDIN"


class ManifestError(errors.ClientError):
    """Manifests that cannot be applied as given; every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems




@dataclass(frozen=True)
class Manifest:
    """One object from a manifest, checked, with its kind and namespace resolved."""

    source: str  # the file as named on the command line (under its directory), or STDIN
    document: int  # 1-based, counting every `---`-separated document of the source
    item: int | None  # 1-based position inside a `kind: List`
    obj: Obj  # with metadata.namespace filled in for namespaced kinds
    kind: kinds.Kind
    namespace: str  # "" for cluster-scoped kinds

    @property
    def name(self) -> str:
        return printers.name_of(self.obj)

    @property
    def ref(self) -> str:
        return printers.object_ref(self.kind, self.obj)


def _where(source: str, document: int, item: int | None = None) -> str:
    inside = f", item {item}" if item is not None else ""
    return f'"{source}" (document {document}{inside})'


def expand_paths(paths: list[str]) -> list[str]:
    """Files to read: a directory stands for its manifest files, sorted by name."""
    files = []
    for path in paths:
        if path == "-":
            files.append(path)
        elif os.path.isdir(path):
            files += sorted(os.path.join(path, f) for f in os.listdir(path)
                            if f.endswith(MANIFEST_SUFFIXES)
                            and os.path.isfile(os.path.join(path, f)))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise ManifestError([f'the path "{path}" does not exist'])
    return files


def parse_documents(source: str, text: str) -> list[Any]:
    """The documents of one source: concatenated JSON values, or multi-document YAML."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return _json_stream(source, text)
        except ValueError:
            pass  # JSON-flow YAML (comments, unquoted keys): let YAML read it
    docs: list[Any] = []
    try:
        for doc in yamltext.load_all(text):
            docs.append(doc)
    except yamltext.YAMLError as e:
        raise ManifestError([f"error parsing {_where(source, len(docs) + 1)}: "
                             f"{yamltext.problem(e)}"]) from None
    return docs


def _json_stream(source: str, text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return docs
        try:
            doc, pos = decoder.raw_decode(text, pos)
            too_deep = nesting.depth(doc) > nesting.MAX_DEPTH
        except RecursionError:
            too_deep = True
        if too_deep:
            raise ManifestError([f"error parsing {_where(source, len(docs) + 1)}: the "
                                 f"document nests deeper than {nesting.MAX_DEPTH} levels"])
        docs.append(doc)


def check_object(obj: Any, where: str) -> list[str]:
    """What keeps one document from being an object we can send; [] when nothing."""
    if not isinstance(obj, dict):
        return [f"error validating {where}: expected an object with apiVersion, kind and "
                f"metadata, got {causes.json_type(obj)}"]
    missing = []

    def text(value: Any, field: str) -> None:
        if value is None or value == "":
            missing.append(f"{field} not set")
        elif not isinstance(value, str):
            missing.append(f"{field} must be a string, got {causes.json_type(value)}")

    text(obj.get("apiVersion"), "apiVersion")
    text(obj.get("kind"), "kind")
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        missing.append("metadata must be a mapping")
    else:
        text((meta or {}).get("name"), "metadata.name")
        if not isinstance((meta or {}).get("namespace", ""), str):
            missing.append("metadata.namespace must be a string")
    if missing:
        return [f"error validating {where}: error validating data: [{', '.join(missing)}]"]
    return []


def _is_list(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("kind"), str) \
        and doc["kind"].endswith("List") and isinstance(doc.get("items"), list)


def load_manifests(paths: list[str], *, read_stdin: Callable[[], str], namespace: str,
                   explicit_namespace: bool, verb: str = "apply") -> list[Manifest]:
    """Every object of every source, checked; ManifestError lists all that is wrong.

    `namespace` fills in a namespaced object's missing namespace; when the user gave it
    with -n (`explicit_namespace`) an object in another namespace is an error, as in
    kubectl, rather than something silently sent elsewhere.
    """
    problems: list[str] = []
    out: list[Manifest] = []
    for path in expand_paths(paths):
        source = STDIN if path == "-" else path
        try:
            if path == "-":
                text = read_stdin()
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            problems.append(f'cannot read "{source}": {getattr(e, "strerror", None) or e}')
            continue
        try:
            docs = parse_documents(source, text)
        except ManifestError as e:
            problems += e.problems
            continue
        for index, doc in enumerate(docs, start=1):
            if doc is None:
                continue  # an empty document, e.g. after a trailing `---`
            entries: list[tuple[int | None, Any]]
            if _is_list(doc):
                entries = [(i, item) for i, item in enumerate(doc["items"], start=1)]
            else:
                entries = [(None, doc)]
            for item, obj in entries:
                where = _where(source, index, item)
                found = check_object(obj, where)
                if found:
                    problems += found
                    continue
                manifest, problem = _resolve(obj, source=source, document=index, item=item,
                                             namespace=namespace,
                                             explicit_namespace=explicit_namespace)
                if problem:
                    problems.append(problem)
                elif manifest is not None:
                    out.append(manifest)
    if problems:
        raise ManifestError(problems)
    if not out:
        raise ManifestError([f"no objects passed to {verb}"])
    return out


def _resolve(obj: Obj, *, source: str, document: int, item: int | None, namespace: str,
             explicit_namespace: bool) -> tuple[Manifest | None, str]:
    meta = obj["metadata"]
    kind = kinds.by_kind(obj["apiVersion"], obj["kind"])
    if kind is None:
        return None, (f'resource mapping not found for name: "{meta["name"]}" namespace: '
                      f'"{meta.get("namespace", "")}" from {_where(source, document, item)}: '
                      f'no matches for kind "{obj["kind"]}" in version "{obj["apiVersion"]}"')
    ns = ""
    obj = copy.deepcopy(obj)
    if kind.namespaced:
        ns = meta.get("namespace") or namespace
        if explicit_namespace and ns != namespace:
            return None, (f'the namespace from the provided object "{ns}" does not match the '
                          f'namespace "{namespace}" in {_where(source, document, item)}. '
                          f"You must pass '--namespace={ns}' to perform this operation.")
        obj["metadata"]["namespace"] = ns
    return Manifest(source, document, item, obj, kind, ns), ""


def apply_order(manifests: list[Manifest]) -> list[Manifest]:
    """The order given, but Namespaces first, so that objects can be created in them."""
    return sorted(manifests, key=lambda m: m.kind.kind != "Namespace")
