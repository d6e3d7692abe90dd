"""`/version`: what the server is, in both of the shapes its clients ask for.

Kubernetes' clients (`kubectl version`, the client libraries' VersionApi, version checks
in tools) read `major`, `minor` and `gitVersion`; etcd's clients (etcd3gw's probe) read
`etcdserver` and `etcdcluster` from the same path. One object carries both. The
Kubernetes version is the API level this server follows (1.30), marked `-raftkube` so
that nobody mistakes it for Kubernetes itself; the etcd version is the /v3 API level the
gateway serves. Kubernetes serves `/version` to anyone, authenticated or not, and so do
we: it names no object and no secret.

`gitCommit` and `buildDate` come from the source checkout when there is one (read once,
as the server starts); otherwise they say so rather than make something up.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

KUBERNETES_MAJOR, KUBERNETES_MINOR = "1", "30"
GIT_VERSION = f"v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0-raftkube"
ETCD_VERSION = "3.4.0"  # the /v3 gateway's API level (etcd3gw picks its paths by it)
UNKNOWN_COMMIT = "unknown"
UNKNOWN_DATE = "1970-01-01T00:00:00Z"  # Kubernetes' value for a build without a date
# Go's names for the machines Python calls by their kernel's names.
ARCHES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


def source_commit(root: Path) -> tuple[str, str]:
    """(commit, commit date in RFC 3339 UTC) of the checkout at `root`, or the unknown
    values when it is not a git checkout or git is missing."""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%H %cd",
             "--date=format-local:%Y-%m-%dT%H:%M:%SZ"],
            capture_output=True, text=True, timeout=5, check=True,
            env={"TZ": "UTC", "PATH": "/usr/bin:/bin:/usr/local/bin"})
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_COMMIT, UNKNOWN_DATE
    parts = out.stdout.split()
    if len(parts) != 2:
        return UNKNOWN_COMMIT, UNKNOWN_DATE
    return parts[0], parts[1]


def info(commit: str = UNKNOWN_COMMIT, date: str = UNKNOWN_DATE) -> dict[str, Any]:
    """The `/version` object: Kubernetes' version.Info keys, then etcd's."""
    machine = platform.machine().lower()
    return {
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": GIT_VERSION,
        "gitCommit": commit,
        "gitTreeState": "clean" if commit != UNKNOWN_COMMIT else "",
        "buildDate": date,
        # Kubernetes names its toolchain here; ours is the interpreter.
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{platform.system().lower()}/{ARCHES.get(machine, machine)}",
        "etcdserver": ETCD_VERSION,
        "etcdcluster": ETCD_VERSION,
    }
