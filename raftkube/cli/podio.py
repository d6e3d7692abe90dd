"""`rk logs`, `rk exec` and `rk top`: what a pod's node answers, through any master.

They read like kubectl's: `rk logs [-f] [--tail N] [-p] [-c C] POD`, `rk exec [-i] [-t]
[-c C] POD -- COMMAND...` (whose exit code is the command's), `rk top nodes|pods`. Where a
pod is asked for, `KIND/NAME` of a Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or
Service stands for one of its pods, chosen as kubectl chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from typing import Any

import aiohttp
import click

from raftkube.api import channels, kinds, printers, selectors
from raftkube.api.quantity import parse_quantity
from raftkube.cli import durations
from raftkube.cli.session import Session, connect, fail, resolve_kind, run
from raftkube.client import errors, rest

Obj = dict[str, Any]


POD_OWNERS = ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "Service",
              "ReplicationController")


def pod_selector(obj: Obj) -> selectors.LabelSelector:
    """The pods a workload or a Service selects: `spec.selector`, a LabelSelector object
    for workloads, a plain map for Services (and ReplicationControllers)."""
    sel = (obj.get("spec") or {}).get("selector")
    if obj.get("kind") in ("Service", "ReplicationController"):
        if not isinstance(sel, dict) or not sel:
            raise errors.ClientError(f"{obj.get('kind', '').lower()} "
                                     f"\"{printers.name_of(obj)}\" has no selector")
        return selectors.selector_from_object({"matchLabels": sel})
    if obj.get("kind") == "Job" and isinstance(sel, dict):
        return selectors.selector_from_object(sel)
    if not isinstance(sel, dict) or not sel:
        raise errors.ClientError(f"{obj.get('kind', '').lower()} "
                                 f"\"{printers.name_of(obj)}\" has no selector")
    return selectors.selector_from_object(sel)


def _logging_order(pod: Obj) -> tuple[bool, bool, bool, int, str]:
    """kubectl's preference when one pod stands for many: scheduled, running, ready,
    most restarted, then oldest."""
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    restarts = sum(int(c.get("restartCount") or 0)
                   for c in status.get("containerStatuses") or [])
    return (not (pod.get("spec") or {}).get("nodeName"), status.get("phase") != "Running",
            not ready, -restarts, str((pod.get("metadata") or {}).get("creationTimestamp")))


async def resolve_pod(client: rest.RestClient, namespace: str, arg: str) -> str:
    """The pod `arg` names: `NAME`, `pod/NAME`, or `KIND/NAME` of a workload or Service,
    which stands for one of its pods, chosen as kubectl does (and said on stderr when
    there were several)."""
    word, slash, name = arg.partition("/")
    if not slash:
        return arg
    if not name:
        raise errors.ClientError(f"arguments in resource/name form must have a single "
                                 f"resource and name: {arg!r}")
    kind = resolve_kind(word)
    if kind.kind == "Pod":
        return name
    if kind.kind not in POD_OWNERS:
        raise errors.ClientError(f"cannot attach to {printers.qualified(kind)}: it has no "
                                 f"pods (use a pod, or one of: "
                                 f"{', '.join(k.lower() for k in POD_OWNERS)})")
    owner = await client.get(kind, namespace, name)
    wanted = pod_selector(owner)
    listed, _ = await client.list_all(kinds.known("v1", "Pod"), namespace)
    pods = sorted((p for p in listed
                   if wanted.matches((p.get("metadata") or {}).get("labels") or {})),
                  key=_logging_order)
    if not pods:
        raise errors.ClientError(f"no pods found for {printers.qualified(kind)} {name!r}")
    chosen = printers.name_of(pods[0])
    if len(pods) > 1:
        click.echo(f"Found {len(pods)} pods, using pod/{chosen}", err=True)
    return chosen


def _connect(namespace: str | None) -> Session:
    """The session, or the config's problem said as every command says it (no traceback)."""
    try:
        return connect(namespace)
    except errors.ClientError as e:
        fail(e)


def register(group: click.Group) -> None:
    for command in (logs, exec_, top):
        group.add_command(command)


@click.command("logs")
@click.argument("pod", metavar="POD|KIND/NAME")
@click.option("-c", "--container", default="", help="The container (if the pod has more).")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the container writes.")
@click.option("--tail", type=click.IntRange(min=-1), default=-1,
              help="Lines from the end to show (-1: all).")
@click.option("-p", "--previous", is_flag=True,
              help="The previous instance of the container (before its last restart).")
@click.option("--timestamps", is_flag=True, help="Prefix each line with its time.")
@click.option("--since", default="", help="Only lines newer than this (5s, 2m, 3h).")
@click.option("--limit-bytes", type=click.IntRange(min=1), default=None,
              help="At most this many bytes.")
@click.option("-n", "--namespace", help="The pod's namespace.")
def logs(pod: str, container: str, follow: bool, tail: int, previous: bool,
         timestamps: bool, since: str, limit_bytes: int | None, namespace: str | None
         ) -> None:
    """Print a container's output."""
    try:
        since_seconds = max(1, int(durations.argument("--since", since))) if since else None
    except errors.ClientError as e:
        fail(e)
    session = _connect(namespace)

    async def body() -> None:
        out = sys.stdout.buffer
        name = await resolve_pod(session.client, session.namespace, pod)
        async for chunk in session.client.logs(
                session.namespace, name, container=container, follow=follow,
                tail=None if tail < 0 else tail, previous=previous, timestamps=timestamps,
                since_seconds=since_seconds, limit_bytes=limit_bytes):
            out.write(chunk)
            out.flush()

    try:
        run(body, session)
    except errors.ClientError as e:
        fail(e)


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod", metavar="POD|KIND/NAME")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-c", "--container", default="", help="The container (if the pod has more).")
@click.option("-i", "--stdin", "stdin", is_flag=True, help="Pass standard input on.")
@click.option("-t", "--tty", is_flag=True, help="Give the command a terminal.")
@click.option("-n", "--namespace", help="The pod's namespace.")
def exec_(pod: str, command: tuple[str, ...], container: str, stdin: bool, tty: bool,
          namespace: str | None) -> None:
    """Run a command in a pod's container: `rk exec POD -- COMMAND [ARGS...]`."""
    session = _connect(namespace)
    code: list[int] = []

    async def body() -> None:
        name = await resolve_pod(session.client, session.namespace, pod)
        async with session.client.exec(session.namespace, name, list(command),
                                       container=container, stdin=stdin, tty=tty) as ws:
            code.append(await _session(ws, stdin=stdin))

    try:
        with _raw_terminal(tty and stdin):
            run(body, session)
    except errors.ClientError as e:
        fail(e)
    sys.exit(code[0] if code else 1)


async def _session(ws: aiohttp.ClientWebSocketResponse, *, stdin: bool) -> int:
    """Relay the channels to this terminal; the command's exit code."""
    feeder = asyncio.ensure_future(_feed(ws, ws.protocol == channels.V5)) if stdin else None
    code: int | None = None
    message = ""
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            try:
                channel, data = channels.parse(msg.data)
            except ValueError:
                continue
            if channel == channels.STDOUT:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            elif channel == channels.STDERR:
                sys.stderr.buffer.write(data)
                sys.stderr.buffer.flush()
            elif channel == channels.ERROR:
                code, message = channels.exit_code(data)
                break
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await feeder
    if code is None:
        raise errors.ClientError("the exec stream ended without the command's exit status "
                                 "(the connection to the master was lost)")
    if code == 126 and message:
        raise errors.ClientError(message)
    return code


async def _feed(ws: aiohttp.ClientWebSocketResponse, v5: bool) -> None:
    """This terminal's input to the command, until EOF. Read without blocking the loop
    (a pipe or a terminal through the loop's reader; a file by a daemon thread), so
    that the end of the command ends `rk exec` without waiting for another key."""
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        chunks.put_nowait(data)
        if not data:
            loop.remove_reader(fd)

    def read_file() -> None:
        while data := os.read(fd, 65536):
            loop.call_soon_threadsafe(chunks.put_nowait, data)
        loop.call_soon_threadsafe(chunks.put_nowait, b"")

    blocking = os.get_blocking(fd)
    try:
        os.set_blocking(fd, False)
        loop.add_reader(fd, readable)
        watched = True
    except (OSError, ValueError):  # a regular file cannot be watched
        os.set_blocking(fd, blocking)
        watched = False
        threading.Thread(target=read_file, name="stdin", daemon=True).start()
    try:
        while data := await chunks.get():
            await ws.send_bytes(channels.frame(channels.STDIN, data))
        if v5:
            await ws.send_bytes(channels.close_frame(channels.STDIN))
    finally:
        if watched:
            loop.remove_reader(fd)
            os.set_blocking(fd, blocking)


@contextlib.contextmanager
def _raw_terminal(on: bool) -> Any:
    if not on or not sys.stdin.isatty():
        yield
        return
    import termios
    import tty as ttymod
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        ttymod.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _cores(quantity: str) -> str:
    return f"{int(parse_quantity(quantity) * 1000)}m"


def _mebibytes(quantity: str) -> str:
    return f"{int(parse_quantity(quantity) / (1024 * 1024))}Mi"


@click.command("top")
@click.argument("what", type=click.Choice(["nodes", "node", "pods", "pod"]))
@click.argument("name", required=False, default="")
@click.option("-n", "--namespace", help="The pods' namespace.")
@click.option("-A", "--all-namespaces", is_flag=True, help="Pods of every namespace.")
def top(what: str, name: str, namespace: str | None, all_namespaces: bool) -> None:
    """CPU and memory in use, per node or per pod (from the agents, now)."""
    session = _connect(namespace)
    base = "/apis/metrics.k8s.io/v1beta1"

    async def body() -> None:
        if what.startswith("node"):
            path = f"{base}/nodes" + (f"/{name}" if name else "")
            answer = await session.client.request("GET", path)
            items = [answer] if name else answer.get("items") or []
            rows = [("NAME", "CPU(cores)", "MEMORY(bytes)")] + [
                (i["metadata"]["name"], _cores(i["usage"]["cpu"]),
                 _mebibytes(i["usage"]["memory"])) for i in items]
        else:
            path = f"{base}/pods" if all_namespaces else \
                f"{base}/namespaces/{session.namespace}/pods" + (f"/{name}" if name else "")
            answer = await session.client.request("GET", path)
            items = [answer] if name else answer.get("items") or []
            head = ("NAMESPACE",) if all_namespaces else ()
            rows = [(*head, "NAME", "CPU(cores)", "MEMORY(bytes)")]
            for i in items:
                cpu = sum(parse_quantity(c["usage"]["cpu"]) for c in i["containers"])
                memory = sum(parse_quantity(c["usage"]["memory"]) for c in i["containers"])
                ns = (i["metadata"]["namespace"],) if all_namespaces else ()
                rows.append((*ns, i["metadata"]["name"], f"{int(cpu * 1000)}m",
                             f"{int(memory / (1024 * 1024))}Mi"))
        if len(rows) == 1:
            click.echo("error: Metrics not available yet" if not name else
                       f"error: metrics not available for {name}", err=True)
            sys.exit(1)
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            click.echo("   ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True))
                       .rstrip())

    try:
        run(body, session)
    except errors.ClientError as e:
        fail(e)


