"""FaultFS: a FUSE filesystem that loses what was not synced when the power is cut.

It is the technique of Jepsen's LazyFS, for one directory: mount FaultFS over a backing
directory, run a program on the mount, kill the program, cut the power, and look at what
a real disk would have kept. The model:

- **File data** (what `write`, `pwrite`, writes through a shared `mmap` and `truncate` /
  `ftruncate` do to a file's bytes and size) written since that file's last `fsync` or
  `fdatasync` lives only in this process's memory, page by page. Reads see it. `fsync`
  or `fdatasync` on any descriptor of the file (even a read-only one) writes the file's
  pages and size to the backing directory. `msync` and the kernel's own write-back of
  dirty `mmap` pages reach FaultFS as ordinary writes, so they too stay in memory until
  a sync: the page cache of a real machine, which the power cut takes with it.
- **Metadata** (create, mkdir, rename, unlink, rmdir, symlink, chmod) is durable at once:
  it goes straight to the backing directory. So a file created and renamed into place
  without an fsync of its data survives a power cut *empty*, which POSIX allows and
  ext4 and XFS have done; directory fsync is accepted and changes nothing.
- **Power cut** (`FaultFS.cut_power()`): every unsynced byte is dropped, writes that
  still arrive (the kernel writing back dirty pages of killed processes) are dropped
  too, and the filesystem is unmounted and mounted again, which empties the kernel's
  page cache for it, as a reboot would. The mount then shows exactly what was synced.
  Kill the processes using the mount first: a process that still holds it open keeps a
  dead mount (its calls fail) while the new one is mounted on top.
- **Slow disk**: `FaultFS.set_fsync_delay(seconds)` makes every fsync and fdatasync
  take that much longer (for chaos runs that want a slow disk rather than a dead one).

Not modelled: torn or reordered writes within a sync, hard links, extended attributes,
the backing directory's own durability (a sync writes to it with `pwrite`, not `fsync`:
the host does not lose power, only the model does).

FaultFS runs as a separate process per mount (`python faultfs.py BACKING MOUNTPOINT`),
so that a test process that dies cannot take a half-served mount with it: the daemon
asks for SIGTERM when its parent dies, and libfuse unmounts on SIGTERM. The parent
drives it with one JSON line per command on its stdin (`cut`, `fsync_delay`, `stats`)
and reads one JSON line per answer from its stdout.

The binding is mfusepy: ctypes over libfuse3's high-level API (Debian's `fuse3`), so it
installs from PyPI without a compiler or headers, and its path-based, thread-per-request
calls fit a model that is a dict of pages under one lock.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

PAGE = 4096


class Unsynced:
    """The unsynced part of one file: its size and the pages written since its last sync.

    Bytes of the backing file at or beyond `floor` were truncated away and read as zeros
    (until a sync cuts the backing file there too)."""

    __slots__ = ("size", "pages", "floor")

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, bytearray] = {}
        self.floor: int | None = None


class Model:
    """What FaultFS keeps in memory, and what reads, writes, truncates, syncs and a cut do.

    Files are keyed by their backing inode, so data follows a file through renames. Each
    method takes a descriptor of the backing file (read and write) to read the synced
    bytes from and, on sync, to write to. Not thread-safe: the caller holds one lock.
    """

    def __init__(self) -> None:
        self.files: dict[int, Unsynced] = {}
        self.dead = False
        self.counts = {"writes": 0, "syncs": 0, "cuts": 0, "dropped_bytes": 0,
                       "dropped_files": 0, "writes_after_cut": 0}

    def _unsynced(self, key: int, fd: int) -> Unsynced:
        u = self.files.get(key)
        if u is None:
            u = self.files[key] = Unsynced(os.fstat(fd).st_size)
        return u

    @staticmethod
    def _synced_page(fd: int, u: Unsynced, index: int) -> bytearray:
        """Page `index` as the backing file holds it, zero past the file's logical end."""
        start = index * PAGE
        limit = u.size if u.floor is None else min(u.size, u.floor)
        data = bytearray(os.pread(fd, PAGE, start)) if start < limit else bytearray()
        del data[max(0, limit - start):]
        data.extend(bytes(PAGE - len(data)))
        return data

    def size(self, key: int) -> int | None:
        u = self.files.get(key)
        return None if u is None else u.size

    def read(self, key: int, fd: int, size: int, offset: int) -> bytes:
        u = self.files.get(key)
        if u is None:
            return os.pread(fd, size, offset)
        end = min(offset + size, u.size)
        out = bytearray()
        pos = offset
        while pos < end:
            index, within = divmod(pos, PAGE)
            page = u.pages.get(index)
            if page is None:
                page = self._synced_page(fd, u, index)
            n = min(PAGE - within, end - pos)
            out += page[within:within + n]
            pos += n
        return bytes(out)

    def write(self, key: int, fd: int, data: bytes, offset: int) -> int:
        if self.dead:
            self.counts["writes_after_cut"] += 1
            return len(data)
        self.counts["writes"] += 1
        u = self._unsynced(key, fd)
        end = offset + len(data)
        pos = offset
        while pos < end:
            index, within = divmod(pos, PAGE)
            page = u.pages.get(index)
            if page is None:
                page = u.pages[index] = self._synced_page(fd, u, index)
            n = min(PAGE - within, end - pos)
            page[within:within + n] = data[pos - offset:pos - offset + n]
            pos += n
        u.size = max(u.size, end)
        return len(data)

    def truncate(self, key: int, fd: int, length: int) -> None:
        if self.dead:
            return
        u = self._unsynced(key, fd)
        if length < u.size:
            for index in [i for i in u.pages if i * PAGE >= length]:
                del u.pages[index]
            index, within = divmod(length, PAGE)
            if index in u.pages:
                u.pages[index][within:] = bytes(PAGE - within)
            u.floor = length if u.floor is None else min(u.floor, length)
        u.size = length

    def sync(self, key: int, fd: int) -> None:
        """Make the file's unsynced pages and size durable (write them to the backing)."""
        if self.dead:
            return
        self.counts["syncs"] += 1
        u = self.files.pop(key, None)
        if u is None:
            return
        if u.floor is not None:
            os.ftruncate(fd, u.floor)
        for index, page in sorted(u.pages.items()):
            n = min(PAGE, u.size - index * PAGE)
            if n > 0:
                os.pwrite(fd, bytes(page[:n]), index * PAGE)
        os.ftruncate(fd, u.size)

    def forget(self, key: int) -> None:
        """The file is gone (unlinked, or replaced by a rename): nothing to sync any more."""
        self.files.pop(key, None)

    def cut(self) -> None:
        """The power cut: drop every unsynced byte, and every write from now on."""
        self.counts["cuts"] += 1
        self.counts["dropped_files"] += len(self.files)
        self.counts["dropped_bytes"] += sum(len(u.pages) * PAGE for u in self.files.values())
        self.files.clear()
        self.dead = True

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "dead": self.dead, "unsynced_files": len(self.files),
                "unsynced_bytes": sum(len(u.pages) * PAGE for u in self.files.values())}


# ---- the FUSE side (in the daemon process) ---------------------------------------------


def _use_libfuse3() -> None:
    """Make mfusepy load libfuse3: left alone it asks for `fuse` first, which is libfuse2
    wherever something (Debian's vagrant, through guestmount) has installed that, and
    libfuse2 refuses the options FaultFS mounts with."""
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")


def _operations_class() -> type:
    _use_libfuse3()
    import mfusepy

    class Operations(mfusepy.Operations):  # type: ignore[misc]
        """The FUSE calls, path-based over the backing directory, data through `Model`."""

        use_ns = True

        def __init__(self, backing: str, on_ready: Any) -> None:
            self.backing = os.path.realpath(backing)
            self.model = Model()
            self.mutex = threading.Lock()
            self.fsync_delay = 0.0
            self.on_ready = on_ready
            self.handles: dict[int, tuple[int, int]] = {}  # fh -> (backing fd, inode)
            self.open_count: dict[int, int] = {}

        def _path(self, path: str) -> str:
            return os.path.join(self.backing, path.lstrip("/"))

        def _key(self, path: str) -> int | None:
            try:
                return os.lstat(self._path(path)).st_ino
            except FileNotFoundError:
                return None

        def _forget_unless_open(self, key: int | None) -> None:
            if key is not None and not self.open_count.get(key):
                self.model.forget(key)

        def init(self, path: str) -> None:
            self.on_ready()

        # -- metadata: straight to the backing directory ----------------------------------

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            with self.mutex:
                if fh is not None and fh in self.handles:
                    st = os.fstat(self.handles[fh][0])
                else:
                    st = os.lstat(self._path(path))
                attrs = {k: getattr(st, k) for k in (
                    "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino",
                    "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
                for k in ("st_atime", "st_mtime", "st_ctime"):
                    attrs[k] = attrs.pop(k + "_ns")
                size = self.model.size(st.st_ino)
                if size is not None:
                    attrs["st_size"] = size
                return attrs

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._path(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._path(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._path(path))

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._path(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._path(path))
            return 0

        def symlink(self, target: str, source: str) -> int:
            os.symlink(source, self._path(target))
            return 0

        def unlink(self, path: str) -> int:
            with self.mutex:
                key = self._key(path)
                os.unlink(self._path(path))
                self._forget_unless_open(key)
            return 0

        def rename(self, old: str, new: str) -> int:
            with self.mutex:
                replaced = self._key(new)
                if replaced == self._key(old):
                    replaced = None
                os.rename(self._path(old), self._path(new))
                self._forget_unless_open(replaced)
            return 0

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._path(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.lchown(self._path(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            if times is None:
                os.utime(self._path(path))
            else:
                os.utime(self._path(path), ns=times)
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            sv = os.statvfs(self._path(path))
            return {k: getattr(sv, k) for k in (
                "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree",
                "f_files", "f_flag", "f_frsize", "f_namemax")}

        def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
            self._delay()
            return 0  # metadata is durable at once

        # -- file data: through the model -------------------------------------------------

        def _open(self, path: str, flags: int, mode: int | None) -> int:
            create = os.O_CREAT | (flags & os.O_EXCL) if mode is not None else 0
            fd = os.open(self._path(path), os.O_RDWR | create, mode or 0o644)
            with self.mutex:
                key = os.fstat(fd).st_ino
                self.handles[fd] = (fd, key)
                self.open_count[key] = self.open_count.get(key, 0) + 1
                if flags & os.O_TRUNC:
                    self.model.truncate(key, fd, 0)
            return fd

        def create(self, path: str, mode: int, flags: int = 0) -> int:
            return self._open(path, flags | os.O_CREAT, mode)

        def open(self, path: str, flags: int) -> int:
            return self._open(path, flags, None)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            with self.mutex:
                fd, key = self.handles[fh]
                return self.model.read(key, fd, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            with self.mutex:
                fd, key = self.handles[fh]
                return self.model.write(key, fd, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            with self.mutex:
                if fh is not None and fh in self.handles:
                    fd, key = self.handles[fh]
                    self.model.truncate(key, fd, length)
                    return 0
            fd = os.open(self._path(path), os.O_RDWR)
            try:
                with self.mutex:
                    self.model.truncate(os.fstat(fd).st_ino, fd, length)
            finally:
                os.close(fd)
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            self._delay()
            with self.mutex:
                fd, key = self.handles[fh]
                self.model.sync(key, fd)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def release(self, path: str, fh: int) -> int:
            with self.mutex:
                fd, key = self.handles.pop(fh)
                self.open_count[key] -= 1
                if not self.open_count[key]:
                    del self.open_count[key]
                    if os.fstat(fd).st_nlink == 0:
                        self.model.forget(key)
                os.close(fd)
            return 0

        def _delay(self) -> None:
            if self.fsync_delay > 0:
                time.sleep(self.fsync_delay)

        # -- control ----------------------------------------------------------------------

        def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
            with self.mutex:
                if cmd["op"] == "cut":
                    self.model.cut()
                elif cmd["op"] == "fsync_delay":
                    self.fsync_delay = float(cmd["seconds"])
                elif cmd["op"] != "stats":
                    return {"error": f"unknown op {cmd['op']!r}"}
                return {**self.model.stats(), "fsync_delay": self.fsync_delay}

    return Operations


def serve(backing: str, mountpoint: str) -> None:
    """The daemon: mount, answer commands on stdin, exit when unmounted."""
    import ctypes

    _use_libfuse3()
    import mfusepy

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: the test process died -> unmount
    if os.getppid() == 1:
        return
    out = sys.stdout
    write_lock = threading.Lock()

    def answer(obj: dict[str, Any]) -> None:
        with write_lock:
            out.write(json.dumps(obj) + "\n")
            out.flush()

    ops = _operations_class()(backing, lambda: answer({"ready": True}))

    def control() -> None:
        for line in sys.stdin:
            try:
                answer(ops.command(json.loads(line)))
            except Exception as e:  # noqa: BLE001 - report it to the controller
                answer({"error": repr(e)})

    threading.Thread(target=control, name="faultfs-control", daemon=True).start()
    # The page cache is what mmap needs (no direct_io). The kernel caches attributes
    # for a second; every change passes through this mount, so they stay right.
    mfusepy.FUSE(ops, mountpoint, foreground=True, nothreads=False, fsname="faultfs",
                 subtype="faultfs", max_threads=16)


# ---- the controller (in the test process) ----------------------------------------------


class FaultFSError(Exception):
    """The filesystem could not be mounted, driven or unmounted."""


def unmount(mountpoint: str) -> bool:
    """Unmount whatever is mounted at `mountpoint`, lazily if it is busy or dead.
    True if a process may still be using the detached mount."""
    if not os.path.ismount(mountpoint) and not _stale(mountpoint):
        return False
    if subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True).returncode == 0:
        return False
    if subprocess.run(["fusermount3", "-u", "-z", mountpoint],
                      capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", mountpoint], capture_output=True)
    return True


def _stale(mountpoint: str) -> bool:
    try:
        os.stat(mountpoint)
    except OSError as e:
        return e.errno == errno.ENOTCONN
    return False


class FaultFS:
    """A FaultFS mount of `backing` at `mountpoint`, served by a daemon process.

        with FaultFS(backing, mountpoint) as fs:
            ...  # run something on mountpoint, then kill it
            fs.cut_power()  # mountpoint now shows only what was synced
    """

    def __init__(self, backing: str, mountpoint: str, *, timeout: float = 20.0) -> None:
        self.backing = os.path.abspath(backing)
        self.mountpoint = os.path.abspath(mountpoint)
        self.timeout = timeout
        self.proc: subprocess.Popen[str] | None = None
        self.cuts: list[dict[str, Any]] = []
        self._fsync_delay = 0.0

    def __enter__(self) -> FaultFS:
        self.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmount()

    def mount(self) -> None:
        if shutil.which("fusermount3") is None or not os.path.exists("/dev/fuse"):
            raise FaultFSError("FUSE 3 is not available (install Debian's fuse3)")
        os.makedirs(self.backing, exist_ok=True)
        unmount(self.mountpoint)  # a stale mount left by a killed run
        os.makedirs(self.mountpoint, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), self.backing, self.mountpoint],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        try:
            ready = self._read_answer()
            if not ready.get("ready"):
                raise FaultFSError(f"faultfs did not mount {self.mountpoint}: {ready}")
            if self._fsync_delay:
                self.set_fsync_delay(self._fsync_delay)
        except BaseException:
            self.unmount()
            raise

    def _read_answer(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        reader.start()
        reader.join(self.timeout)
        if not result or not result[0]:
            raise FaultFSError(f"faultfs at {self.mountpoint} did not answer "
                               f"(exit status {self.proc.poll()})")
        answer: dict[str, Any] = json.loads(result[0])
        if "error" in answer:
            raise FaultFSError(answer["error"])
        return answer

    def _command(self, **cmd: Any) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            raise FaultFSError(f"faultfs at {self.mountpoint} is not running")
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read_answer()

    def stats(self) -> dict[str, Any]:
        """Counts of writes, syncs, cuts and dropped bytes, and what is unsynced now."""
        return self._command(op="stats")

    def set_fsync_delay(self, seconds: float) -> None:
        """Every fsync/fdatasync (files and directories) takes `seconds` longer."""
        self._fsync_delay = seconds
        self._command(op="fsync_delay", seconds=seconds)

    def cut_power(self) -> dict[str, Any]:
        """Drop every unsynced byte, then unmount and mount again (the reboot). Returns
        the model's counts at the cut (`dropped_bytes`, `dropped_files`, ...)."""
        at_cut = self._command(op="cut")
        self.cuts.append(at_cut)
        self.unmount()
        self.mount()
        return at_cut

    def unmount(self) -> None:
        """Unmount and stop the daemon; safe to call twice, and after the daemon died."""
        busy = unmount(self.mountpoint)
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if busy:  # someone still holds the detached mount: the power is off for them too
            proc.kill()
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            unmount(self.mountpoint)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
