"""Kubernetes' WebSocket channel protocol for exec (`v5.channel.k8s.io`, `v4.channel.k8s.io`).

An exec stream is one WebSocket whose binary messages each start with a channel byte:
0 stdin, 1 stdout, 2 stderr, 3 error (at the end: a `Status` telling the exit code),
4 resize (JSON `{"Width": W, "Height": H}`). Version 5 adds channel 255, "close": a
message `[255, C]` says that channel C has ended (a client sends `[255, 0]` when its
stdin reaches EOF, which version 4 cannot say). The client offers the versions it
speaks as WebSocket subprotocols and the server picks the first it knows, in the
server's order of preference.

Every party of raftkube speaks it: `rk exec` (the client), the masters (which relay the
messages between the client and the agent, unread), and the agent (which runs the
command). kubectl speaks it too.
"""

from __future__ import annotations

import json
from typing import Any

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
PROTOCOLS = (V5, V4)  # ours, most preferred first

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5 only


def frame(channel: int, data: bytes = b"") -> bytes:
    return bytes([channel]) + data


def parse(message: bytes) -> tuple[int, bytes]:
    """(channel, data) of one binary message; ValueError for an empty one."""
    if not message:
        raise ValueError("an empty channel message")
    return message[0], message[1:]


def close_frame(channel: int) -> bytes:
    return bytes([CLOSE, channel])


def pick(offered: list[str]) -> str | None:
    """The subprotocol to answer with: ours, by our preference, among those offered."""
    for protocol in PROTOCOLS:
        if protocol in offered:
            return protocol
    return None


def exit_status(code: int) -> dict[str, Any]:
    """The error channel's final message for a command that exited with `code`."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: {code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def failure(message: str) -> dict[str, Any]:
    """The error channel's message for an exec that could not run at all."""
    return {"metadata": {}, "status": "Failure", "message": message,
            "reason": "InternalError"}


def exit_code(data: bytes) -> tuple[int, str]:
    """(exit code, message) from the error channel's Status; a Status that is no exit
    code at all (the command could not run) is (126, its message), as a shell says."""
    try:
        status = json.loads(data)
    except ValueError:
        return 126, data.decode(errors="replace")
    if not isinstance(status, dict):
        return 126, str(status)
    if status.get("status") == "Success":
        return 0, ""
    message = str(status.get("message") or "")
    for cause in ((status.get("details") or {}).get("causes") or []):
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", "")), message
            except ValueError:
                break
    return 126, message
