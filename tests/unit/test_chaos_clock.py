"""The clock shim that chaos/clock.py injects into a master (as its sitecustomize), run
here against a stub `time` module: the wall clock moves by the offset file's seconds,
the monotonic clock does not, and the replacements do not bind as methods."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from chaos import clock

pytestmark = pytest.mark.unit


def shimmed(monkeypatch: pytest.MonkeyPatch, offset_file: Path) -> Any:
    now = {"wall": 1_000_000.0, "mono": 50.0}
    stub = types.SimpleNamespace(
        time=lambda: now["wall"], time_ns=lambda: int(now["wall"] * 1e9),
        monotonic=lambda: now["mono"],
        gmtime=lambda s=None: ("gm", s), localtime=lambda s=None: ("local", s),
        ctime=lambda s=None: ("ctime", s), strftime=lambda fmt, t=None: (fmt, t))
    monkeypatch.setitem(sys.modules, "time", stub)
    monkeypatch.setenv("RK_CLOCK_OFFSET_FILE", str(offset_file))
    exec(compile(clock.SHIM, "sitecustomize", "exec"), {})
    stub.now = now
    return stub


def test_the_wall_clock_jumps_by_the_offset_and_the_monotonic_clock_does_not(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    offset = tmp_path / "offset"
    clock.write_offset(str(offset), 0)
    t = shimmed(monkeypatch, offset)
    assert t.time() == 1_000_000.0 and t.monotonic() == 50.0
    clock.write_offset(str(offset), 3600)
    assert offset.read_text() == "+3600\n"
    assert t.time() == 1_000_000.0  # read at most every 50 ms (of the monotonic clock)
    t.now["mono"] += 0.1
    assert t.time() == 1_003_600.0 and t.time_ns() == 1_003_600 * 10**9
    assert t.monotonic() == 50.1
    assert t.gmtime() == ("gm", 1_003_600.0) and t.gmtime(5) == ("gm", 5)
    assert t.localtime() == ("local", 1_003_600.0) and t.ctime() == ("ctime", 1_003_600.0)
    assert t.strftime("%H") == ("%H", ("local", 1_003_600.0))


def test_the_replacements_do_not_bind_as_methods(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    """logging.Formatter keeps `converter = time.localtime` and calls self.converter(t)."""
    offset = tmp_path / "offset"
    clock.write_offset(str(offset), -60)
    t = shimmed(monkeypatch, offset)

    class Formatter:
        converter = t.localtime
        now = t.time

    assert Formatter().converter(7) == ("local", 7)
    assert Formatter().now() == 1_000_000.0 - 60


def test_a_missing_or_torn_offset_file_keeps_the_last_offset(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    offset = tmp_path / "offset"
    clock.write_offset(str(offset), 10)
    t = shimmed(monkeypatch, offset)
    assert t.time() == 1_000_010.0
    offset.write_text("garbage")
    t.now["mono"] += 1
    assert t.time() == 1_000_010.0
    offset.unlink()
    t.now["mono"] += 1
    assert t.time() == 1_000_010.0
