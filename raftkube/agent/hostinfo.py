"""What a node tells about its host: capacity, OS, and whether it is under pressure.

Capacity is the machine's (cpu count, MemTotal; 110 pods, the kubelet's default), each
overridable by `rk agent`'s flags. Pressure follows the kubelet's default hard eviction
thresholds: MemoryPressure when memory.available (MemAvailable) is under 100 MiB,
DiskPressure when nodefs.available (free space on the filesystem of the runtime's
root, where images and containers live) is under 10 %. Linux only (`/proc/meminfo`);
elsewhere memory reads as unknown and never as pressure.
"""

from __future__ import annotations

import os

MAX_PODS = 110
MEMORY_AVAILABLE_MIN = 100 * 2**20  # memory.available<100Mi
NODEFS_AVAILABLE_MIN = 0.10  # nodefs.available<10%


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """The fields of /proc/meminfo in bytes; empty if it cannot be read."""
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                fields = rest.split()
                if fields and fields[0].isdigit():
                    factor = 1024 if len(fields) > 1 and fields[1] == "kB" else 1
                    out[key.strip()] = int(fields[0]) * factor
    except OSError:
        pass
    return out


def capacity(*, cpu: str | None = None, memory: str | None = None,
             pods: int | None = None) -> dict[str, str]:
    """The node's capacity: the host's, with any of the given values over it."""
    total = meminfo().get("MemTotal")
    return {"cpu": cpu or str(os.cpu_count() or 1),
            "memory": memory or (f"{total // 1024}Ki" if total else "1Gi"),
            "pods": str(pods or MAX_PODS)}


def os_image(path: str = "/etc/os-release") -> str:
    """The OS's PRETTY_NAME, as the kubelet reports it (`Debian GNU/Linux 12 (bookworm)`)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def memory_pressure(info: dict[str, int] | None = None) -> bool:
    available = (info if info is not None else meminfo()).get("MemAvailable")
    return available is not None and available < MEMORY_AVAILABLE_MIN


def disk_pressure(path: str) -> bool:
    """Whether the filesystem holding `path` has less than 10 % free (False if unknown)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_blocks > 0 and st.f_bavail / st.f_blocks < NODEFS_AVAILABLE_MIN
