"""A master whose wall clock can be made to jump: an offset injected into its Python.

`FakeClock(cluster, name)` restarts member `name` with a `sitecustomize` module on its
`PYTHONPATH` that shifts the process's wall clock by the number of seconds in a file of
its own (re-read at most every 50 ms): `time.time`, `time.time_ns`, and `time.gmtime`,
`time.localtime`, `time.ctime` and `time.strftime` when asked about "now". `jump(seconds)`
rewrites the file, so the running member sees its wall clock leap, as an NTP step or a
VM restored from a snapshot makes it. The monotonic clock is left alone, as a real step
leaves it: it is the clock that Raft timers and lease countdowns must use. Everything
that raftkube's masters take the time of day from goes through those functions (the
controllers' and proposers' `clock=time.time`); `datetime.now()` (certificate expiry
warnings, `rk get`'s ages) and OpenSSL's certificate checks still see the real clock.

Why not Debian's libfaketime (LD_PRELOAD, `FAKETIME_TIMESTAMP_FILE`,
`FAKETIME_DONT_FAKE_MONOTONIC=1`), which would fake every clock of the process? Its
0.9.10 (Debian 12) breaks Python 3.11 twice when the monotonic clock is not faked:
`time.sleep` fails with EINVAL (its `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)` is
wrong: libfaketime issue #426), and its `pthread_cond_timedwait` mistimes condition
variables on the monotonic clock (fixed upstream in 2025, PR #503), which is how the
GIL asks a busy thread to let go: the jumped master's Raft thread then waited seconds
for the interpreter (ticks of 4-8 s, elections lost), which no real clock step does.
Faking the monotonic clock too would make Raft and lease timers jump, again unlike a
real step. An offset in Python avoids both and changes only what it should.

`restore()` restarts the member on the real clock.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal

from chaos.cluster import Cluster
from raftkube.cli import local

SHIM = '''"""The wall clock of this process, shifted by the seconds in $RK_CLOCK_OFFSET_FILE
(chaos/clock.py): injected before anything else is imported. The replacements are
`functools.partial` objects, which, like the built-ins they replace, do not bind as
methods (logging keeps `time.localtime` as a class attribute and calls it on self)."""
import functools
import os
import time

_path = os.environ["RK_CLOCK_OFFSET_FILE"]
_monotonic = time.monotonic
_real = {"time": time.time, "time_ns": time.time_ns, "gmtime": time.gmtime,
         "localtime": time.localtime, "ctime": time.ctime, "strftime": time.strftime}
_cache = [0.0, -1.0]  # offset, when it was read (monotonic)


def _offset():
    now = _monotonic()
    if now - _cache[1] >= 0.05:
        try:
            with open(_path) as f:
                _cache[0] = float(f.read().strip() or 0)
        except (OSError, ValueError):
            pass
        _cache[1] = now
    return _cache[0]


def _time():
    return _real["time"]() + _offset()


def _time_ns():
    return _real["time_ns"]() + int(_offset() * 1e9)


def _now_or(fn, seconds=None):
    return _real[fn](_time() if seconds is None else seconds)


def _strftime(fmt, t=None):
    return _real["strftime"](fmt, _real["localtime"](_time()) if t is None else t)


time.time = functools.partial(_time)
time.time_ns = functools.partial(_time_ns)
time.strftime = functools.partial(_strftime)
time.gmtime = functools.partial(_now_or, "gmtime")
time.localtime = functools.partial(_now_or, "localtime")
time.ctime = functools.partial(_now_or, "ctime")
'''


def write_offset(path: str, seconds: float) -> None:
    """The offset in seconds, replaced atomically: the process never reads half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{seconds:+.0f}\n")
    os.replace(tmp, path)


class FakeClock:
    """Member `name` of `cluster` on a wall clock that `jump()` moves."""

    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.dir = os.path.join(cluster.state_dir, "clock", name)
        self.offset_file = os.path.join(self.dir, "offset")
        self.offset = 0.0

    def environment(self) -> dict[str, str]:
        shim = os.path.join(self.dir, "python")
        path = os.environ.get("PYTHONPATH")
        return {"RK_CLOCK_OFFSET_FILE": self.offset_file,
                "PYTHONPATH": shim + (os.pathsep + path if path else "")}

    def _prepare(self) -> dict[str, str]:
        os.makedirs(os.path.join(self.dir, "python"), exist_ok=True)
        with open(os.path.join(self.dir, "python", "sitecustomize.py"), "w") as f:
            f.write(SHIM)
        self.offset = 0.0
        write_offset(self.offset_file, 0)
        return self.environment()

    async def _restart(self, env: dict[str, str] | None) -> None:
        c = self.cluster
        if c.pid(self.name) is not None:
            await c.kill(self.name, sig=signal.SIGTERM)

        def start() -> None:
            def preexec() -> None:  # in the child, before exec: its environment only
                os.environ.update(env or {})
            local.start_member(c.state_dir, self.name, c.master_args,
                               preexec=preexec if env else None)

        await asyncio.get_running_loop().run_in_executor(None, start)

    async def start(self) -> None:
        """Restart the member with the clock shim, its clock still right (offset 0)."""
        await self._restart(self._prepare())

    def jump(self, seconds: float) -> None:
        """Move the member's wall clock by `seconds` more, now."""
        self.offset += seconds
        write_offset(self.offset_file, self.offset)

    async def restore(self) -> None:
        """Restart the member on the real clock, without the shim."""
        await self._restart(None)
        shutil.rmtree(self.dir, ignore_errors=True)
