"""Mounts the agent makes itself, and finds again: tmpfs emptyDirs through mount(2) and
umount2(2) (ctypes; the agent runs as root), and the mount points under a directory
from /proc/self/mounts. Used by the volume manager, by the Docker runtime when it
removes a cluster's pod directories, and by `rk down`.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

TMPFS_SOURCE = "raftkube-emptydir"  # the device name of our tmpfs mounts in /proc/mounts
_MS_NOSUID, _MS_NODEV = 2, 4
_MNT_DETACH = 2
_libc: Any = None


def _syscall(name: str, *args: Any) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if getattr(_libc, name)(*args) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def mount_tmpfs(path: str, size: int) -> None:
    """Mount a tmpfs of `size` bytes (mode 0777, nosuid, nodev) on the directory
    `path`; OSError (EPERM without CAP_SYS_ADMIN) if the kernel refuses."""
    _syscall("mount", TMPFS_SOURCE.encode(), os.fsencode(path), b"tmpfs",
             ctypes.c_ulong(_MS_NOSUID | _MS_NODEV), f"size={size},mode=0777".encode())


def unmount(path: str) -> None:
    """Detach the mount on `path` (lazily: a process still inside it keeps it until it
    leaves, and nothing new can reach it); nothing if it is not a mount point."""
    try:
        _syscall("umount2", os.fsencode(path), ctypes.c_int(_MNT_DETACH))
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOENT):
            raise


def _unescape(field: str) -> str:
    """A path as /proc/mounts writes it (space, tab, newline, backslash as octal)."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def mounts_under(top: str, *, table: str = "/proc/self/mounts") -> list[str]:
    """The mount points at or under `top` (symlinks resolved), deepest first."""
    real = os.path.realpath(top).rstrip("/") or "/"
    try:
        with open(table) as f:
            points = [_unescape(line.split()[1]) for line in f if len(line.split()) > 1]
    except OSError:
        return []
    found = {p for p in points if p == real or p.startswith(real + "/")}
    return sorted(found, key=lambda p: (-p.count("/"), p))


def unmount_under(top: str) -> list[str]:
    """Unmount everything mounted at or under `top` (a pod's tmpfs emptyDirs); the
    mount points that are still there after (the agent may not unmount)."""
    for point in mounts_under(top):
        try:
            unmount(point)
        except OSError as e:
            log.warning("unmounting %s: %s", point, e.strerror)
    return mounts_under(top)
