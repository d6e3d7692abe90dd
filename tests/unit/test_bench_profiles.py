"""The scheduler benchmark stops the py-spy processes it started, however the run ends."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench import scheduler

pytestmark = pytest.mark.unit

# A profiler stand-in: it writes on SIGINT and exits, as py-spy does.
WRITES_ON_SIGINT = ("import signal, sys, time\n"
                    "signal.signal(signal.SIGINT, lambda *_: sys.exit(3))\n"
                    "print('ready', flush=True)\n"
                    "time.sleep(60)\n")
# One that ignores SIGINT: killed after the grace period.
DEAF = ("import signal, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")


def test_stopping_the_profiles_ends_every_one() -> None:
    spies = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
             for code in (WRITES_ON_SIGINT, DEAF)]
    try:
        for spy in spies:
            assert spy.stdout is not None and spy.stdout.readline() == b"ready\n"
        scheduler.stop_profiles(spies, grace=2.0)
        assert spies[0].returncode == 3  # it had its SIGINT: its profile is written
        assert spies[1].returncode is not None  # killed
    finally:
        for spy in spies:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
            assert spy.stdout is not None
            spy.stdout.close()
