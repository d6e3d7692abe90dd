"""The objects `rk create namespace|deployment|configmap|secret generic` make, as kubectl's
generators make them: pure functions from the command's arguments to one object.

Files are read through a `read` callable (path -> bytes) so that tests give contents
without a disk, and so that every problem (a literal without `=`, a key given twice, an
unreadable file) is found before anything is sent. Errors are kubectl's words.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from typing import Any

from raftkube.api import names
from raftkube.client import errors

Obj = dict[str, Any]
Reader = Callable[[str], bytes]


class GeneratorError(errors.ClientError):
    """The command's arguments cannot make the object; nothing was sent."""


def read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def list_dir(path: str) -> list[str] | None:
    """The regular files of a directory, sorted; None when `path` is not a directory."""
    if not os.path.isdir(path):
        return None
    return sorted(os.path.join(path, f) for f in os.listdir(path)
                  if os.path.isfile(os.path.join(path, f)))


def check_name(name: str, what: str) -> None:
    problems = names.dns1123_subdomain_errors(name)
    if problems:
        raise GeneratorError(f'invalid {what} name "{name}": {"; ".join(problems)}')


def namespace(name: str) -> Obj:
    problems = names.dns1123_label_errors(name)
    if problems:
        raise GeneratorError(f'invalid namespace name "{name}": {"; ".join(problems)}')
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def container_name(image: str) -> str:
    """kubectl's container name for an image: its last path part, without tag or digest,
    with anything that is not a DNS label character made a `-`."""
    base = image.split("@")[0].rsplit("/", 1)[-1].split(":")[0].lower()
    cleaned = "".join(c if c.isalnum() or c == "-" else "-" for c in base).strip("-")
    return cleaned[:63] or "container"


def deployment(name: str, *, images: Sequence[str], replicas: int = 1,
               port: int | None = None) -> Obj:
    check_name(name, "deployment")
    if not images:
        raise GeneratorError('required flag(s) "image" not set')
    if replicas < 0:
        raise GeneratorError(f"--replicas: must be greater than or equal to 0, got {replicas}")
    containers: list[Obj] = []
    for image in images:
        if not image:
            raise GeneratorError("--image: must not be empty")
        containers.append({"name": container_name(image), "image": image})
    if port is not None:
        if not 1 <= port <= 65535:
            raise GeneratorError(f"--port: must be between 1 and 65535, got {port}")
        containers[0]["ports"] = [{"containerPort": port}]
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "labels": dict(labels)},
            "spec": {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels)},
                                  "spec": {"containers": containers}}}}


def literal(source: str) -> tuple[str, str]:
    """`--from-literal=key=value`: the key and the value (which may hold `=`)."""
    key, eq, value = source.partition("=")
    if not eq or not key:
        raise GeneratorError(f"invalid literal source {source}, expected key=value")
    return key, value


def file_sources(source: str, *, listdir: Callable[[str], list[str] | None] = list_dir
                 ) -> list[tuple[str, str]]:
    """`--from-file=[key=]path`: (key, path) pairs; a directory gives each of its files
    under its own name."""
    key, eq, path = source.partition("=")
    if not eq:
        key, path = "", source
    elif not key or not path:
        raise GeneratorError(f"key names or file paths cannot be empty: {source}")
    files = listdir(path)
    if files is not None:
        if key:
            raise GeneratorError(f"cannot give a key name for a directory path: {source}")
        return [(os.path.basename(f), f) for f in files]
    return [(key or os.path.basename(path), path)]


def _entries(literals: Sequence[str], files: Sequence[str], *, kind: str, name: str,
             read: Reader, listdir: Callable[[str], list[str] | None]
             ) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    # (key, a file's path or None, a literal's value): files are read once all is checked
    pairs: list[tuple[str, str | None, str]] = []
    for source in files:
        pairs += [(key, path, "") for key, path in file_sources(source, listdir=listdir)]
    for source in literals:
        key, value = literal(source)
        pairs.append((key, None, value))
    seen: set[str] = set()
    for key, _, _ in pairs:
        problems = names.config_key_errors(key)
        if problems:
            raise GeneratorError(f'"{key}" is not a valid key name for a {kind}: '
                                 f'{"; ".join(problems)}')
        if key in seen:
            raise GeneratorError(f'cannot add key "{key}", another key by that name already '
                                 f'exists in Data for {kind} "{name}"')
        seen.add(key)
    for key, path, value in sorted(pairs):  # sorted, as kubectl prints a Go map
        out.append((key, value.encode() if path is None else _read(read, path)))
    return out


def _read(read: Reader, path: str) -> bytes:
    try:
        return read(path)
    except OSError as e:
        raise GeneratorError(f"error reading {path}: {(e.strerror or str(e)).lower()}"
                             ) from None


def configmap(name: str, *, literals: Sequence[str] = (), files: Sequence[str] = (),
              read: Reader = read_file,
              listdir: Callable[[str], list[str] | None] = list_dir) -> Obj:
    """Text values go to `data`, others (not UTF-8) to `binaryData` in base64."""
    check_name(name, "configmap")
    obj: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    for key, value in _entries(literals, files, kind="ConfigMap", name=name, read=read,
                               listdir=listdir):
        try:
            obj.setdefault("data", {})[key] = value.decode()
        except UnicodeDecodeError:
            obj.setdefault("binaryData", {})[key] = base64.b64encode(value).decode()
    return obj


def secret(name: str, *, literals: Sequence[str] = (), files: Sequence[str] = (),
           secret_type: str = "", read: Reader = read_file,
           listdir: Callable[[str], list[str] | None] = list_dir) -> Obj:
    """`create secret generic`: every value base64 in `data`."""
    check_name(name, "secret")
    obj: Obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
    for key, value in _entries(literals, files, kind="Secret", name=name, read=read,
                               listdir=listdir):
        obj.setdefault("data", {})[key] = base64.b64encode(value).decode()
    if secret_type:
        obj["type"] = secret_type
    return obj
