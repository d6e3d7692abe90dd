"""Manifests: what `rk apply` and `rk delete -f` read, checked before any request.

Files, directories (their .yaml/.yml/.json files, sorted; with `recursive` their
subdirectories' too, as kubectl's -R), http(s) URLs and stdin are read, split into YAML or
JSON documents, `kind: List`s are unpacked, and every object is checked (apiVersion, kind,
name, a known kind, its namespace) before the first request. Every problem is reported,
each with its source and document number, as kubectl reports them.

`load_manifests` refuses the whole input on any problem, so a bad document anywhere makes
an apply change nothing; `read_manifests` hands back what could be read beside the
problems, for `rk delete -f`, which deletes what it can and reports the rest.

A URL is fetched once, with a time limit and a size bound, so a slow or endless server
cannot hang the command or fill its memory.
"""

from __future__ import annotations

import copy
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raftkube.api import causes, kinds, nesting, printers, selectors, yamltext
from raftkube.client import errors

Obj = dict[str, Any]
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
STDIN = "STDIN"
URL_SCHEMES = ("http://", "https://")
URL_TIMEOUT = 30.0  # seconds for the whole fetch of one URL
URL_MAX_BYTES = 16 * 1024 * 1024  # far above any manifest; a bound, not a quota


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


def is_url(path: str) -> bool:
    return path.startswith(URL_SCHEMES)


def expand_paths(paths: list[str], *, recursive: bool = False) -> list[str]:
    """Sources to read: a directory stands for its manifest files, sorted by name, and
    with `recursive` for those of its subdirectories too; URLs and `-` stand as given."""
    files = []
    for path in paths:
        if path == "-" or is_url(path):
            files.append(path)
        elif os.path.isdir(path):
            files += _directory(path, recursive)
        elif os.path.exists(path):
            files.append(path)
        else:
            raise ManifestError([f'the path "{path}" does not exist'])
    return files


def _directory(path: str, recursive: bool) -> list[str]:
    found = []
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if os.path.isdir(full):
            # as kubectl's -R (Go's filepath.Walk): a link to a directory is not followed,
            # so a link back up cannot read the same manifests again and again
            if recursive and not os.path.islink(full):
                found += _directory(full, recursive)
        elif entry.endswith(MANIFEST_SUFFIXES) and os.path.isfile(full):
            found.append(full)
    return found


def fetch_url(url: str, *, timeout: float = URL_TIMEOUT,
              max_bytes: int = URL_MAX_BYTES) -> str:
    """The text at `url`; ManifestError naming the URL and what went wrong (the HTTP
    status, a refused connection, a timeout, a body over `max_bytes`)."""
    # urlopen's timeout bounds each wait for the socket, not the fetch: a server that
    # sends a byte now and then would hold the command for as long as it likes
    deadline = time.monotonic() + timeout
    body = bytearray()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            read = getattr(response, "read1", response.read)
            while len(body) <= max_bytes:
                if time.monotonic() > deadline:
                    raise ManifestError([f'unable to read URL "{url}": no answer within '
                                         f"{timeout:g}s"])
                chunk = read(min(64 * 1024, max_bytes + 1 - len(body)))
                if not chunk:
                    break
                body += chunk
    except urllib.error.HTTPError as e:
        e.close()  # it holds the answer's connection
        raise ManifestError([f'unable to read URL "{url}", server reported {e.code} '
                             f"{e.reason}, status code={e.code}"]) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        reason = getattr(reason, "strerror", None) or reason
        raise ManifestError([f'unable to read URL "{url}": {reason}']) from None
    if len(body) > max_bytes:
        raise ManifestError([f'unable to read URL "{url}": the document is larger than '
                             f"{max_bytes} bytes"])
    try:
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise ManifestError([f'unable to read URL "{url}": the document is not UTF-8 '
                             "text"]) from None


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
                   explicit_namespace: bool, verb: str = "apply",
                   recursive: bool = False) -> list[Manifest]:
    """Every object of every source, checked; ManifestError lists all that is wrong.

    `namespace` fills in a namespaced object's missing namespace; when the user gave it
    with -n (`explicit_namespace`) an object in another namespace is an error, as in
    kubectl, rather than something silently sent elsewhere.
    """
    out, problems = read_manifests(paths, read_stdin=read_stdin, namespace=namespace,
                                   explicit_namespace=explicit_namespace,
                                   recursive=recursive)
    if problems:
        raise ManifestError(problems)
    if not out:
        raise ManifestError([f"no objects passed to {verb}"])
    return out


def read_manifests(paths: list[str], *, read_stdin: Callable[[], str], namespace: str,
                   explicit_namespace: bool, recursive: bool = False
                   ) -> tuple[list[Manifest], list[str]]:
    """The objects that could be read and checked, and a problem for each document (or
    source) that could not: one bad document does not hide the others."""
    problems: list[str] = []
    out: list[Manifest] = []
    try:
        sources = expand_paths(paths, recursive=recursive)
    except ManifestError as e:
        return [], e.problems
    for path in sources:
        source = STDIN if path == "-" else path
        try:
            if path == "-":
                text = read_stdin()
            elif is_url(path):
                text = fetch_url(path)
            else:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
        except ManifestError as e:
            problems += e.problems
            continue
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
    return out, problems


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


def select(loaded: list[Manifest], selector: str) -> list[Manifest]:
    """The manifests whose labels match a `-l` selector, as kubectl's apply and delete -f
    keep only those; a selector that does not parse is an error naming it."""
    if not selector:
        return loaded
    try:
        parsed = selectors.parse_label_selector(selector)
    except selectors.SelectorError as e:
        raise errors.ClientError(f'invalid label selector "{selector}": {e}') from None
    return [m for m in loaded
            if parsed.matches((m.obj.get("metadata") or {}).get("labels") or {})]


def apply_order(manifests: list[Manifest]) -> list[Manifest]:
    """The order given, but Namespaces first, so that objects can be created in them."""
    return sorted(manifests, key=lambda m: m.kind.kind != "Namespace")
