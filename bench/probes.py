"""What probing costs: the CPU of an agent probing N containers every second, exec vs http.

    python -m bench.probes --containers 20 --seconds 30 [--runtime docker|simulated]

For each handler (`exec`: `cat /tmp/healthy` through the runtime's exec_sync; `http`: GET
/healthz on the container's httpd; `tcp`: a connection to it) this starts N pods of one
busybox container running httpd, has the agent's `Prober` probe all of them every second
for `--seconds`, and prints the probes run per second, the agent's CPU (this process,
where the prober runs) and, with Docker, the engine's CPU (dockerd, containerd and the
shims, which run every exec), each as a percentage of one core. Containers are removed
at the end, even on failure.

With `--runtime simulated` no container runs: exec answers at once and http/tcp go to
one httpd on 127.0.0.1 (a child process), so the figures are the prober's own overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import prometheus_client as prom

from raftkube.agent import prober, probes, simulated
from raftkube.agent import runtime as rt
from raftkube.client import events as ev

Obj = dict[str, Any]
IMAGE = "busybox:1.36"
PORT = 8080
START = ("mkdir -p /www && echo ok > /www/healthz && touch /tmp/healthy && "
         f"exec httpd -f -p {PORT} -h /www")
ENGINE = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "runc",
          "docker-proxy")
HANDLERS: dict[str, Obj] = {
    "exec": {"exec": {"command": ["cat", "/tmp/healthy"]}},
    "http": {"httpGet": {"path": "/healthz", "port": PORT}},
    "tcp": {"tcpSocket": {"port": PORT}},
}


def engine_cpu() -> float:
    """CPU seconds used so far by the engine's processes (those alive now)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name in ENGINE or name.startswith("containerd-shim"):
            fields = stat[stat.rindex(")") + 2:].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def make_pod(i: int, handler: str, host: str) -> Obj:
    probe: Obj = {**copy.deepcopy(HANDLERS[handler]), "periodSeconds": 1,
                  "timeoutSeconds": 5, "failureThreshold": 1000}
    if host and handler != "exec":
        probe[next(iter(HANDLERS[handler]))]["host"] = host
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"probe-{handler}-{i}", "namespace": "bench",
                         "uid": str(uuid.uuid4())},
            "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "web", "image": IMAGE,
                                     "command": ["sh", "-c", START],
                                     "readinessProbe": probe}]}}


@contextlib.asynccontextmanager
async def runtime_for(kind: str) -> AsyncIterator[tuple[rt.ContainerRuntime, str]]:
    """The runtime, and the host http/tcp probes go to ("": the pod's IP)."""
    if kind == "docker":
        from raftkube.agent import docker  # the docker SDK only where it is used

        r = docker.DockerRuntime(node_name="bench-probes", cluster=f"bench-{os.getpid()}",
                                 host_ip="127.0.0.1")
        try:
            yield r, ""
        finally:
            docker.remove_cluster(r.cluster)
            r.close()
        return
    www = tempfile.mkdtemp(prefix="bench-probes-")
    with open(os.path.join(www, "healthz"), "w") as f:
        f.write("ok\n")
    httpd = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(PORT), "--bind", "127.0.0.1",
         "--directory", www], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await asyncio.sleep(1.0)
        yield simulated.SimulatedRuntime(pod_cidr="10.250.0.0/16", host_ip="127.0.0.1",
                                         clock=time.time), "127.0.0.1"
    finally:
        httpd.kill()
        httpd.wait()
        shutil.rmtree(www, ignore_errors=True)


async def measure(kind: str, handler: str, count: int, seconds: float) -> Obj:
    registry = prom.CollectorRegistry()
    async with runtime_for(kind) as (runtime, host):
        recorder = ev.EventRecorder(None, "bench", backlog=10)  # type: ignore[arg-type]
        p = prober.Prober(runtime=runtime, events=recorder,
                          metrics=prober.ProbeMetrics(registry))
        pods = [make_pod(i, handler, host) for i in range(count)]
        for pod in pods:
            await runtime.run_sandbox(pod)
            await runtime.start_container(pod, pod["spec"]["containers"][0], attempt=0)
        states = {s.sandbox.uid: s for s in await runtime.pods()}
        holder = asyncio.ensure_future(p.run())
        try:
            await asyncio.sleep(2.0)  # httpd up in every container
            for pod in pods:
                p.track(pod, states.get(pod["metadata"]["uid"]))
            await asyncio.sleep(2.0)  # past the first round
            label = probes.ProbeType.READINESS.value

            def ran(result: str) -> float:
                return registry.get_sample_value(
                    "raftkube_agent_probe_total",
                    {"probe_type": label, "result": result}) or 0.0

            ok0, failed0 = ran("successful"), ran("failed")
            cpu0, engine0, wall0 = time.process_time(), engine_cpu(), time.monotonic()
            await asyncio.sleep(seconds)
            wall = time.monotonic() - wall0
            cpu, engine = time.process_time() - cpu0, engine_cpu() - engine0
            ok, failed = ran("successful") - ok0, ran("failed") - failed0
        finally:
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await holder
            for pod in pods:
                with contextlib.suppress(rt.RuntimeFailure):
                    await runtime.remove_pod(pod["metadata"]["uid"], grace=0)
    return {"handler": handler, "containers": count, "probes_per_s": ok / wall,
            "failed_per_s": failed / wall, "agent_cpu_pct": 100 * cpu / wall,
            "engine_cpu_pct": 100 * engine / wall if kind == "docker" else None}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=("docker", "simulated"), default="docker")
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--handlers", default="exec,http,tcp")
    args = parser.parse_args()
    print(f"runtime={args.runtime} containers={args.containers} period=1s "
          f"window={args.seconds:g}s load={os.getloadavg()[0]:.1f}")
    print(f"{'handler':8} {'probes/s':>9} {'failed/s':>9} {'agent CPU':>10} {'engine CPU':>11}")
    for handler in args.handlers.split(","):
        r = await measure(args.runtime, handler, args.containers, args.seconds)
        engine = f"{r['engine_cpu_pct']:10.1f}%" if r["engine_cpu_pct"] is not None \
            else f"{'-':>11}"
        print(f"{handler:8} {r['probes_per_s']:9.1f} {r['failed_per_s']:9.1f} "
              f"{r['agent_cpu_pct']:9.1f}% {engine}", flush=True)
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
