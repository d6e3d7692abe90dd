"""FaultFS mounted for real: what survives a power cut is exactly what was synced.

These tests mount FUSE (so they sit in the `cluster` tier, which runs processes), and
each one unmounts in teardown whatever happens.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos import faultfs

pytestmark = pytest.mark.cluster


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[faultfs.FaultFS]:
    with faultfs.FaultFS(str(tmp_path / "backing"), str(tmp_path / "mnt")) as mounted:
        yield mounted
    assert not os.path.ismount(tmp_path / "mnt")


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_only_synced_data_survives_a_cut(fs: faultfs.FaultFS) -> None:
    m = fs.mountpoint
    with open(f"{m}/synced", "wb", buffering=0) as f:
        f.write(b"one")
        os.fsync(f.fileno())
        f.write(b" two")  # after the sync: lost
        assert read(f"{m}/synced") == b"one two"  # but readable until the cut
    fd = os.open(f"{m}/pwritten", os.O_RDWR | os.O_CREAT, 0o644)
    os.pwrite(fd, b"x" * 10_000, 0)
    os.fdatasync(fd)
    os.pwrite(fd, b"y" * 10, 5_000)  # overwrite in the middle, not synced
    os.ftruncate(fd, 8_000)  # shrink, not synced
    os.close(fd)
    with open(f"{m}/appended", "wb", buffering=0) as f:
        f.write(b"head")
        os.fsync(f.fileno())
    with open(f"{m}/appended", "ab", buffering=0) as f:
        f.write(b"tail")
    assert read(f"{m}/appended") == b"headtail"
    with open(f"{m}/truncated", "wb", buffering=0) as f:
        f.write(b"0123456789")
        os.fsync(f.fileno())
    os.truncate(f"{m}/truncated", 3)
    fd = os.open(f"{m}/truncated", os.O_RDONLY)  # a read-only descriptor syncs too
    os.fsync(fd)
    os.close(fd)
    os.mkdir(f"{m}/dir")
    with open(f"{m}/dir/new", "wb", buffering=0) as f:
        f.write(b"never synced")
    with open(f"{m}/doomed", "wb", buffering=0) as f:
        f.write(b"x")
        os.fsync(f.fileno())
    os.unlink(f"{m}/doomed")
    dfd = os.open(m, os.O_RDONLY)
    os.fsync(dfd)  # a directory fsync is accepted
    os.close(dfd)

    at_cut = fs.cut_power()

    assert at_cut["dropped_files"] >= 4 and at_cut["dropped_bytes"] > 0
    assert read(f"{m}/synced") == b"one"
    assert read(f"{m}/pwritten") == b"x" * 10_000
    assert read(f"{m}/appended") == b"head"
    assert read(f"{m}/truncated") == b"012"
    assert read(f"{m}/dir/new") == b""  # the name is durable at once, the data is not
    assert not os.path.exists(f"{m}/doomed")
    assert sorted(os.listdir(m)) == ["appended", "dir", "pwritten", "synced", "truncated"]
    assert fs.stats()["cuts"] == 0, "a cut remounts: the new mount starts clean"


def test_a_file_renamed_into_place_without_fsync_is_empty_after_a_cut(
        fs: faultfs.FaultFS) -> None:
    """The replace-by-rename pattern needs an fsync of the new file before the rename."""
    m = fs.mountpoint
    with open(f"{m}/meta", "wb", buffering=0) as f:
        f.write(b"old")
        os.fsync(f.fileno())
    with open(f"{m}/meta.tmp", "wb", buffering=0) as f:
        f.write(b"new")
    os.rename(f"{m}/meta.tmp", f"{m}/meta")
    with open(f"{m}/good.tmp", "wb", buffering=0) as f:
        f.write(b"new")
        os.fsync(f.fileno())
    os.rename(f"{m}/good.tmp", f"{m}/good")
    fs.cut_power()
    assert read(f"{m}/meta") == b""
    assert read(f"{m}/good") == b"new"


def test_writes_through_mmap_reach_the_fs_on_fdatasync_and_are_lost_without(
        fs: faultfs.FaultFS) -> None:
    """pysyncobj's journal is an mmap'd file grown with mmap.resize (ftruncate)."""
    m = fs.mountpoint
    with open(f"{m}/journal", "wb", buffering=0) as f:
        f.write(b"H" * 16)
    f = open(f"{m}/journal", "r+b")
    mm = mmap.mmap(f.fileno(), 0)
    try:
        mm.resize(3 * mmap.PAGESIZE)
        mm[100:105] = b"first"
        os.fdatasync(f.fileno())
        assert read(fs.backing + "/journal")[100:105] == b"first"  # through to the backing
        mm.resize(6 * mmap.PAGESIZE)
        mm[5 * mmap.PAGESIZE:5 * mmap.PAGESIZE + 6] = b"second"
    finally:
        mm.close()
        f.close()
    assert read(f"{m}/journal")[5 * mmap.PAGESIZE:5 * mmap.PAGESIZE + 6] == b"second"
    fs.cut_power()
    data = read(f"{m}/journal")
    assert len(data) == 3 * mmap.PAGESIZE
    assert data[:16] == b"H" * 16 and data[100:105] == b"first"


def test_fsync_delay_slows_every_sync(fs: faultfs.FaultFS) -> None:
    fs.set_fsync_delay(0.3)
    with open(f"{fs.mountpoint}/slow", "wb", buffering=0) as f:
        f.write(b"x")
        started = time.monotonic()
        os.fsync(f.fileno())
        assert time.monotonic() - started >= 0.3
    assert fs.stats()["fsync_delay"] == 0.3
    fs.set_fsync_delay(0)


def test_unmounts_when_busy_and_after_the_daemon_died(tmp_path: Path) -> None:
    mnt = str(tmp_path / "mnt")
    fs = faultfs.FaultFS(str(tmp_path / "backing"), mnt)
    fs.mount()
    try:
        held = open(f"{mnt}/held", "wb", buffering=0)  # a busy mount unmounts lazily,
        fs.unmount()  # and whoever held it finds it dead
        with pytest.raises(OSError):
            held.write(b"x")
        with contextlib.suppress(OSError):
            held.close()
        assert not os.path.ismount(mnt)
        fs.mount()
        assert fs.proc is not None
        os.kill(fs.proc.pid, signal.SIGKILL)  # leaves "transport endpoint not connected"
        fs.proc.wait(10)
        with pytest.raises(OSError):
            os.listdir(mnt)
        fs.unmount()
        assert not os.path.ismount(mnt) and os.listdir(mnt) == []
        fs.mount()  # and the same mountpoint mounts again
        assert os.path.ismount(mnt)
    finally:
        fs.unmount()
    assert not os.path.ismount(mnt)
