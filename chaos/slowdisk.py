"""A master whose disk can be made slow: its data dir moved onto a FaultFS mount.

`SlowDisk(cluster, name)`: `await mount()` stops the member (SIGTERM), moves its data dir
to `STATE/disk/NAME` and mounts FaultFS (chaos/faultfs.py) from there over the data dir's
path, then starts the member again on it; `set_fsync_delay(seconds)` makes every fsync
and fdatasync of that member take that much longer, at once, while it runs; `await
unmount()` stops the member, unmounts, moves the data back and starts it on the real
disk. A member stopped by SIGTERM has synced what it acknowledged; anything it wrote and
never synced is gone after the unmount, as after a power cut, which a member must
survive anyway (tests/cluster/test_power_cut.py).
"""

from __future__ import annotations

import asyncio
import os
import signal

from chaos.cluster import Cluster
from chaos.faultfs import FaultFS
from raftkube.cli import local


class SlowDisk:
    def __init__(self, cluster: Cluster, name: str) -> None:
        self.cluster = cluster
        self.name = name
        self.path = cluster.data_dir(name)
        self.backing = os.path.join(cluster.state_dir, "disk", name)
        self.fs: FaultFS | None = None

    async def _in_thread(self, fn: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, fn)  # type: ignore[arg-type]

    async def _stop(self) -> None:
        if self.cluster.pid(self.name) is not None:
            await self.cluster.kill(self.name, sig=signal.SIGTERM)

    def _start(self) -> None:
        local.start_member(self.cluster.state_dir, self.name, self.cluster.master_args)

    async def mount(self) -> None:
        """The member restarted on FaultFS (no delay yet)."""
        await self._stop()

        def move_and_mount() -> None:
            os.makedirs(os.path.dirname(self.backing), exist_ok=True)
            if os.path.exists(self.path) and not os.path.exists(self.backing):
                os.rename(self.path, self.backing)
            fs = FaultFS(self.backing, self.path)
            try:
                fs.mount()
            except BaseException:  # back where it was, so that the member starts as before
                if not os.path.ismount(self.path) and os.path.isdir(self.backing):
                    os.rmdir(self.path)
                    os.rename(self.backing, self.path)
                self._start()
                raise
            self.fs = fs
            self._start()

        await self._in_thread(move_and_mount)

    async def set_fsync_delay(self, seconds: float) -> None:
        if self.fs is None:
            raise RuntimeError(f"{self.name}'s data dir is not on FaultFS: mount() first")
        fs = self.fs
        await self._in_thread(lambda: fs.set_fsync_delay(seconds))

    async def unmount(self) -> None:
        """The member restarted on the real disk, with its data."""
        if self.fs is None:
            return
        await self._stop()
        fs, self.fs = self.fs, None

        def unmount_and_move() -> None:
            fs.unmount()
            os.rmdir(self.path)  # the empty mountpoint
            os.rename(self.backing, self.path)
            self._start()

        await self._in_thread(unmount_and_move)
