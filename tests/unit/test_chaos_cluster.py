"""chaos.cluster's process handling: what happens when a step is interrupted."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from chaos import cluster as cl

pytestmark = pytest.mark.unit


async def test_down_waits_for_an_interrupted_up(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: str) -> None:
    """A run cancelled (SIGTERM, a scenario's error) while `up` starts masters in a
    thread: the thread goes on starting them; `down` must come after it, not before,
    or the masters it starts afterwards outlive the run."""
    order: list[str] = []
    started, release = threading.Event(), threading.Event()

    def fake_up(**_: Any) -> None:
        order.append("up begins")
        started.set()
        release.wait(5)
        order.append("up starts the last master")

    def fake_down(**_: Any) -> None:
        order.append("down")

    monkeypatch.setattr(cl.local, "up", fake_up)
    monkeypatch.setattr(cl.local, "down", fake_down)
    monkeypatch.setattr(cl.local, "used_docker", lambda _state: False)
    c = cl.Cluster(str(tmp_path))
    task = asyncio.create_task(c.up())
    await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    threading.Timer(0.2, release.set).start()
    await c.down()
    assert order == ["up begins", "up starts the last master", "down"]


async def test_a_member_that_ignores_sigterm_is_killed_not_left_running(
        monkeypatch: pytest.MonkeyPatch, tmp_path: str) -> None:
    """A graceful stop (slow-disk, clock-jump restarts) that does not end in time: the
    member must not run on beside the copy started next on its data dir (whose pid
    file then hides it from `down`)."""
    import os
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c",
                             "import signal, time  # raftkube master stand-in\n"
                             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                             "print('ready', flush=True)\n"
                             "time.sleep(60)\n"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        os.makedirs(os.path.join(tmp_path, "pids"))
        with open(os.path.join(tmp_path, "pids", "m1.pid"), "w") as f:
            f.write(str(proc.pid))
        c = cl.Cluster(str(tmp_path))
        monkeypatch.setattr(cl.Cluster, "STOP_SECONDS", 0.5)
        await c.kill("m1", sig=signal.SIGTERM)
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
