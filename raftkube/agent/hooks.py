"""Container lifecycle hooks: postStart after a container starts, preStop before it is
stopped, as Kubernetes runs them.

A hook is an `exec` (a command in the container, a non-zero exit is a failure), an
`httpGet` (to `host`, by default the pod's IP, on the container's port; an answer of
400 or more, or none, is a failure), a `tcpSocket` (a connection is enough) or a
`sleep`. The runtime decides what a failure means: a failed postStart kills the
container (the kubelet then restarts it as its policy says); a failed preStop is only
told, and the container is stopped all the same. Every hook is bounded by `timeout`.

The HTTP request is a few lines over asyncio streams: a hook needs a status code, no
client library.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from raftkube.agent import runtime as rt

Obj = dict[str, Any]
Exec = Callable[[Sequence[str], float], Awaitable[rt.ExecResult]]
USER_AGENT = "kube-lifecycle/1.30"


class HookFailure(Exception):
    """A hook did not succeed; the message says what it answered."""


async def run(hook: Obj, *, exec_: Exec, pod_ip: str, timeout: float) -> None:
    """Run `hook` (a `lifecycle.postStart` or `.preStop` value) to its end."""
    try:
        async with asyncio.timeout(max(timeout, 0.1)):
            await _run(hook, exec_=exec_, pod_ip=pod_ip, timeout=timeout)
    except TimeoutError:
        raise HookFailure(f"did not finish within {timeout:g}s") from None
    except (OSError, rt.RuntimeFailure) as e:
        raise HookFailure(str(e) or type(e).__name__) from None


async def _run(hook: Obj, *, exec_: Exec, pod_ip: str, timeout: float) -> None:
    if isinstance(hook.get("exec"), dict):
        command = [str(x) for x in hook["exec"].get("command") or []]
        if not command:
            raise HookFailure("exec: no command")
        result = await exec_(command, timeout)
        if result.exit_code != 0:
            out = result.output.decode(errors="replace").strip()[-512:]
            raise HookFailure(f"command {command!r} exited with {result.exit_code}: {out}")
    elif isinstance(hook.get("httpGet"), dict):
        await http_get(hook["httpGet"], pod_ip=pod_ip)
    elif isinstance(hook.get("tcpSocket"), dict):
        sock = hook["tcpSocket"]
        _, writer = await asyncio.open_connection(str(sock.get("host") or pod_ip),
                                                  int(sock["port"]))
        writer.close()
    elif isinstance(hook.get("sleep"), dict):
        await asyncio.sleep(float(hook["sleep"].get("seconds") or 0))
    else:
        raise HookFailure("no exec, httpGet, tcpSocket or sleep handler")


async def http_get(get: Obj, *, pod_ip: str) -> int:
    """GET the hook's URL; its status code, or HookFailure for 400 and more."""
    host = str(get.get("host") or pod_ip)
    port = int(get["port"])
    path = str(get.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    tls = str(get.get("scheme") or "HTTP").upper() == "HTTPS"
    context = None
    if tls:  # as the kubelet: TLS without checking the certificate
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        headers = {"Host": f"{host}:{port}", "User-Agent": USER_AGENT, "Accept": "*/*",
                   "Connection": "close"}
        for h in get.get("httpHeaders") or []:
            if isinstance(h, dict) and h.get("name"):
                headers[str(h["name"])] = str(h.get("value") or "")
        head = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in
                                                     headers.items()) + "\r\n"
        writer.write(head.encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
    parts = line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise HookFailure(f"GET {path} on {host}:{port}: no HTTP answer")
    code = int(parts[1])
    if code >= 400:
        raise HookFailure(f"GET {path} on {host}:{port}: HTTP {code}")
    return code
