"""Logs, exec and usage of real containers, through the masters and the agent's API:
`rk logs` (tail, previous instance after a restart, follow), `rk exec` with stdin and
exit codes, and `rk top` from the engine's stats."""

from __future__ import annotations

import asyncio

import pytest

from raftkube.api import kinds
from raftkube.client import rest
from tests.cluster.harness import Cluster, pod_where, rk
from tests.docker.test_docker_pods import pod, sh

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


def running(p: dict) -> bool:  # type: ignore[type-arg]
    return (p.get("status") or {}).get("phase") == "Running"


async def test_logs_exec_and_top_of_real_containers(dcluster: Cluster,
                                                    api: rest.RestClient) -> None:
    # The engine copies stdout and stderr apart: only a pause between them orders them.
    script = 'echo "to stderr" >&2; sleep 1; ' \
             'i=0; while [ $i -lt 3 ]; do echo "line $i"; i=$((i+1)); done; exec sleep 3600'
    await api.create(kinds.POD, "default", pod("talk", [sh("c", script)]))
    await pod_where(api, "talk", running, what="pod talk Running")

    async def logged() -> str:
        for _ in range(100):
            out = rk(dcluster, "logs", "talk")
            if "line 2" in out.stdout:
                return out.stdout
            await asyncio.sleep(0.2)
        raise AssertionError(f"no log: {out.stdout!r} {out.stderr!r}")

    assert (await logged()).splitlines() == ["to stderr", "line 0", "line 1", "line 2"]
    tail = rk(dcluster, "logs", "talk", "--tail", "2")
    assert tail.stdout.splitlines() == ["line 1", "line 2"], tail.stderr
    limited = rk(dcluster, "logs", "talk", "--limit-bytes", "5")
    assert limited.stdout == "to st"

    echo = rk(dcluster, "exec", "talk", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (echo.returncode, echo.stdout, echo.stderr) == (7, "out\n", "err\n")
    cat = rk(dcluster, "exec", "-i", "talk", "--", "sh", "-c", "tr a-z A-Z",
             stdin="piped through\n")
    assert (cat.returncode, cat.stdout) == (0, "PIPED THROUGH\n"), cat.stderr
    host = rk(dcluster, "exec", "talk", "--", "hostname")
    assert host.returncode == 0 and host.stdout.strip() == "talk", host.stderr
    missing = rk(dcluster, "exec", "talk", "--", "/no/such/binary")
    assert missing.returncode != 0

    # The previous instance's log after a restart, as `kubectl logs -p` shows it.
    crash = sh("c", 'echo "run at $(date +%s%N)"; sleep 1; exit 1')
    await api.create(kinds.POD, "default", pod("again", [crash]))
    await pod_where(api, "again", lambda p: any(
        s.get("restartCount", 0) >= 1 for s in (p.get("status") or {}).get(
            "containerStatuses") or []), what="pod again restarted")
    previous = rk(dcluster, "logs", "again", "-p")
    assert previous.returncode == 0 and previous.stdout.startswith("run at "), previous

    # A follower sees what is written after it started.
    await api.create(kinds.POD, "default", pod("tick", [sh(
        "c", 'i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.3; done')]))
    await pod_where(api, "tick", running, what="pod tick Running")
    seen: list[bytes] = []

    async def follow() -> None:
        async for chunk in api.logs("default", "tick", follow=True):
            seen.append(chunk)
            if b"tick 5" in b"".join(seen):
                return

    await asyncio.wait_for(follow(), timeout=30)

    top = None
    for _ in range(30):
        top = rk(dcluster, "top", "pods")
        if top.returncode == 0 and "talk" in top.stdout:
            break
        await asyncio.sleep(1)
    assert top is not None and top.returncode == 0 and "talk" in top.stdout, top
    row = next(line.split() for line in top.stdout.splitlines() if line.startswith("talk"))
    assert row[1].endswith("m") and row[2].endswith("Mi")
    for name in ("talk", "again", "tick"):
        await api.delete(kinds.POD, "default", name, grace=0)
