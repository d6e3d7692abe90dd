"""Hold many watch streams on one master from a separate process, cheaply.

Used by `bench/watch_fanout.py` and `tests/cluster/test_watch_fanout.py`: the cost being
measured is the master's fan-out, so the holder must not compete for the CPU. Streams are
raw non-blocking sockets speaking HTTP/1.0 (no chunked encoding to undo); a few "sample"
streams are read as soon as they are readable and parsed, every event timed on arrival
(CLOCK_MONOTONIC, comparable across processes); the rest are drained and discarded once
every `--sweep` seconds.

Protocol with the parent: it prints `ready OPENED` once every stream has its response
headers, then `progress N` whenever the sample stream that has received the fewest
events has N, until a line arrives on stdin; it then prints one JSON line of results and
exits.

Run: ``python -m bench.watch_holder --url http://127.0.0.1:PORT --token T --kind rest|v3
--watchers N --resource-version RV [--sample K] [--batch B]``.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import resource
import selectors
import socket
import sys
import threading
import time
from typing import Any

NAMESPACE = "default"
V3_PREFIX = b"/registry/core/configmaps/default/"


def request(kind: str, host: str, token: str, rv: int) -> bytes:
    if kind == "rest":
        path = (f"/api/v1/namespaces/{NAMESPACE}/configmaps?watch=true&resourceVersion={rv}"
                "&allowWatchBookmarks=true")
        return (f"GET {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                "\r\n").encode()
    end = V3_PREFIX[:-1] + bytes([V3_PREFIX[-1] + 1])
    body = json.dumps({"create_request": {
        "key": base64.b64encode(V3_PREFIX).decode(),
        "range_end": base64.b64encode(end).decode(), "start_revision": str(rv + 1)}}).encode()
    return (f"POST /v3/watch HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


class Stream:
    def __init__(self, sock: socket.socket, sample: bool) -> None:
        self.sock = sock
        self.sample = sample
        self.buf = b""
        self.status = 0
        self.closed = False
        self.events: list[list[Any]] = []  # [name, resourceVersion, type, arrival]

    def feed(self, data: bytes, kind: str) -> None:
        if not self.status:
            self.buf += data
            head, sep, rest = self.buf.partition(b"\r\n\r\n")
            if not sep:
                return
            self.status = int(head.split(b" ", 2)[1])
            self.buf = b""
            data = rest
        if not self.sample:
            return
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        now = time.monotonic()
        for line in lines:
            if line.strip():
                self.events.extend(parse(line, kind, now))


def parse(line: bytes, kind: str, now: float) -> list[list[Any]]:
    msg = json.loads(line)
    if kind == "rest":
        meta = (msg.get("object") or {}).get("metadata") or {}
        return [[meta.get("name", ""), int(meta.get("resourceVersion", 0)), msg["type"], now]]
    out = []
    for ev in (msg.get("result") or {}).get("events", []):
        key = base64.b64decode(ev["kv"]["key"]).decode()
        out.append([key.rsplit("/", 1)[-1], int(ev["kv"]["mod_revision"]),
                    ev.get("type", "PUT"), now])
    return out


def drain(st: Stream, kind: str) -> None:
    while not st.closed:
        try:
            data = st.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                data = b""
            else:
                raise
        if not data:
            st.closed = True
            return
        st.feed(data, kind)


def open_streams(args: argparse.Namespace, sel: selectors.BaseSelector) -> list[Stream]:
    host, _, port = args.url.removeprefix("http://").rpartition(":")
    req = request(args.kind, f"{host}:{port}", args.token, args.resource_version)
    streams: list[Stream] = []
    while len(streams) < args.watchers:
        # In batches, each once the last has its headers: a burst beyond the listen
        # backlog leaves connections the server never saw (SYN cookies).
        batch = []
        for _ in range(min(args.batch, args.watchers - len(streams))):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.settimeout(30)
            s.connect((host, int(port)))
            s.sendall(req)
            s.setblocking(False)
            st = Stream(s, sample=len(streams) < args.sample)
            streams.append(st)
            batch.append(st)
        deadline = time.monotonic() + 60
        while any(not st.status and not st.closed for st in batch):
            if time.monotonic() > deadline:
                raise SystemExit("no response headers within 60 s")
            for st in batch:
                drain(st, args.kind)
            time.sleep(0.005)
    for st in streams:
        if st.sample:
            sel.register(st.sock, selectors.EVENT_READ, st)
    return streams


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--kind", choices=["rest", "v3"], default="rest")
    p.add_argument("--watchers", type=int, required=True)
    p.add_argument("--resource-version", type=int, required=True)
    p.add_argument("--sample", type=int, default=20)
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--sweep", type=float, default=0.5)
    args = p.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sel = selectors.DefaultSelector()
    streams = open_streams(args, sel)
    ok = sum(st.status == 200 for st in streams)
    print(f"ready {ok}", flush=True)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    next_sweep = time.monotonic()
    samples = [st for st in streams if st.sample]
    shown = -1
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            st = key.data
            drain(st, args.kind)
            if st.closed:
                sel.unregister(st.sock)
        fewest = min((len(st.events) for st in samples), default=0)
        if fewest != shown:
            shown = fewest
            print(f"progress {fewest}", flush=True)
        if time.monotonic() >= next_sweep:
            next_sweep = time.monotonic() + args.sweep
            for st in streams:
                if not st.sample:
                    drain(st, args.kind)
    result = {
        "opened": len(streams), "ok": ok,
        "closed_early": sum(st.closed for st in streams),
        "samples": [st.events for st in streams if st.sample],
    }
    print(json.dumps(result), flush=True)
    for st in streams:
        st.sock.close()


if __name__ == "__main__":
    main()
