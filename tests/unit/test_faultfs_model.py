"""FaultFS's durability model without FUSE: reads see every write, a sync makes the file
exactly what was read, a cut leaves exactly what was last synced."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from chaos.faultfs import PAGE, Model

pytestmark = pytest.mark.unit

OPS = hs.lists(hs.one_of(
    hs.tuples(hs.just("write"), hs.integers(0, 5 * PAGE), hs.binary(min_size=1,
                                                                      max_size=2 * PAGE)),
    hs.tuples(hs.just("truncate"), hs.integers(0, 6 * PAGE), hs.just(b"")),
    hs.tuples(hs.just("sync"), hs.just(0), hs.just(b"")),
), max_size=25)


def apply(reference: bytearray, op: str, offset: int, data: bytes) -> None:
    if op == "write":
        if offset > len(reference):
            reference.extend(bytes(offset - len(reference)))
        reference[offset:offset + len(data)] = data
    elif op == "truncate":
        del reference[offset:]
        reference.extend(bytes(offset - len(reference)))


@settings(max_examples=150, deadline=None)
@given(initial=hs.binary(min_size=1, max_size=3 * PAGE), ops=OPS)
def test_reads_see_writes_and_a_cut_leaves_the_last_synced_content(
        tmp_path_factory: pytest.TempPathFactory, initial: bytes,
        ops: list[tuple[str, int, bytes]]) -> None:
    path = tmp_path_factory.mktemp("model") / "f"
    path.write_bytes(initial)
    fd = os.open(path, os.O_RDWR)
    try:
        model, key = Model(), os.fstat(fd).st_ino
        live, synced = bytearray(initial), bytes(initial)
        for op, offset, data in ops:
            if op == "sync":
                model.sync(key, fd)
                synced = bytes(live)
                assert path.read_bytes() == synced
            elif op == "write":
                model.write(key, fd, data, offset)
            else:
                model.truncate(key, fd, offset)
            apply(live, op, offset, data)
            assert model.read(key, fd, len(live) + PAGE, 0) == bytes(live)
            assert model.size(key) in (None, len(live))
        model.cut()
        assert path.read_bytes() == synced
        assert model.read(key, fd, len(synced) + 1, 0) == synced
    finally:
        os.close(fd)


def test_a_truncated_tail_reads_as_zeros_when_the_file_grows_again(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * 3 * PAGE)
    fd = os.open(path, os.O_RDWR)
    try:
        model, key = Model(), os.fstat(fd).st_ino
        model.truncate(key, fd, 10)
        model.write(key, fd, b"z", 3 * PAGE)
        expected = b"a" * 10 + bytes(3 * PAGE - 10) + b"z"
        assert model.read(key, fd, 4 * PAGE, 0) == expected
        model.sync(key, fd)
        assert path.read_bytes() == expected
    finally:
        os.close(fd)


def test_reads_at_an_offset_and_past_the_end(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"a" * PAGE)
    fd = os.open(path, os.O_RDWR)
    try:
        model, key = Model(), os.fstat(fd).st_ino
        model.write(key, fd, b"b" * 10, PAGE - 5)
        assert model.read(key, fd, 20, PAGE - 10) == b"a" * 5 + b"b" * 10
        assert model.read(key, fd, 100, PAGE + 5) == b""
    finally:
        os.close(fd)


def test_after_a_cut_writes_and_syncs_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"synced")
    fd = os.open(path, os.O_RDWR)
    try:
        model, key = Model(), os.fstat(fd).st_ino
        model.write(key, fd, b"lost", 0)
        model.cut()
        model.write(key, fd, b"late", 0)  # the kernel writing back a killed process's pages
        model.truncate(key, fd, 0)
        model.sync(key, fd)
        assert path.read_bytes() == b"synced"
        stats = model.stats()
        assert stats["cuts"] == 1 and stats["writes_after_cut"] == 1
        assert stats["dropped_files"] == 1 and stats["dropped_bytes"] == PAGE
    finally:
        os.close(fd)
