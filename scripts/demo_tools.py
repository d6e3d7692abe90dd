"""The demo's measuring instruments (scripts/demo.sh), kept out of the shell script.

Each subcommand does one bounded thing and exits non-zero when what it looks for does
not happen in time:

  leader STATE                  the leader's name, pid and term ("m2 4242 3")
  new-leader STATE OLD SECS     wait until a master other than OLD leads; its name and term
  app-urls STATE                the app's URLs, one per node: http://NODE_ADDRESS:NODEPORT/
  ask SECS URL...               ask each URL in turn until one answers (within SECS)
  poll OUT STOP URL...          in the background: ask the URLs round robin every 0.1 s
                                until the file STOP exists (at most 5 minutes), then
                                write a summary to OUT
  report OUT                    print that summary; exit 1 if a request failed

The leader is read from the masters' etcd-style status (`rk up`'s own code), so the
demo does not depend on how `rk cluster status` lays out its table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from raftkube.cli import local


def config(state: str) -> tuple[dict[str, Any], list[str], str, str | None]:
    layout = local.load_layout(state, 3)
    cfg = local.client_config(state, layout)
    return layout, cfg.servers, cfg.token, cfg.ca


def find_leader(state: str) -> tuple[str, str] | None:
    layout, servers, token, ca = config(state)
    for server in servers:
        found = local.status_of(server, token, ca)
        if found and found.get("leader") not in (None, "", "0"):
            name, term = local.leader_of(layout, servers, token, str(found["leader"]), ca=ca)
            if term != "?":
                return name, term
    return None


def leader(state: str) -> int:
    found = find_leader(state)
    if found is None:
        print("no master answers with a leader", file=sys.stderr)
        return 1
    name, term = found
    pid = local.pid_alive(os.path.join(state, "pids", f"{name}.pid"))
    print(name, pid or "-", term)
    return 0


def new_leader(state: str, old: str, seconds: float) -> int:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = find_leader(state)
        if found is not None and found[0] != old:
            print(*found)
            return 0
        time.sleep(0.2)
    print(f"no new leader within {seconds:g}s", file=sys.stderr)
    return 1


def rk_json(*args: str) -> Any:
    out = subprocess.run(["rk", *args, "-o", "json"], capture_output=True, text=True,
                         timeout=60, check=True)
    return json.loads(out.stdout)


def app_urls() -> int:
    svc = rk_json("get", "service", "hello-web")
    port = svc["spec"]["ports"][0]["nodePort"]
    nodes = rk_json("get", "nodes")["items"]
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        for addr in node["status"].get("addresses") or []:
            if addr["type"] == "InternalIP":
                print(f"http://{addr['address']}:{port}/")
    return 0


def fetch(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode().strip())


def ask(seconds: float, urls: list[str]) -> int:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        for url in urls:
            try:
                print(fetch(url))
                return 0
            except OSError as e:
                last = f"{url}: {e}"
        time.sleep(0.2)
    print(f"the app did not answer within {seconds:g}s ({last})", file=sys.stderr)
    return 1


def poll(out: str, stop: str, urls: list[str]) -> int:
    started = time.monotonic()
    deadline = started + 300
    ok = failed = 0
    last_ok = started
    longest = 0.0
    errors: list[str] = []
    pods: set[str] = set()
    i = 0
    while not os.path.exists(stop) and time.monotonic() < deadline:
        url = urls[i % len(urls)]
        i += 1
        try:
            pods.add(fetch(url))
            now = time.monotonic()
            longest = max(longest, now - last_ok)
            last_ok = now
            ok += 1
        except OSError as e:
            failed += 1
            if len(errors) < 5:
                errors.append(f"{time.monotonic() - started:.1f}s {url}: {e}")
        time.sleep(0.1)
    longest = max(longest, time.monotonic() - last_ok)
    with open(out + ".tmp", "w") as f:
        json.dump({"ok": ok, "failed": failed, "longest_gap": round(longest, 2),
                   "errors": errors, "pods": sorted(pods),
                   "seconds": round(time.monotonic() - started, 1),
                   "stopped": os.path.exists(stop)}, f)
    os.replace(out + ".tmp", out)
    return 0


def report(out: str) -> int:
    deadline = time.monotonic() + 10
    while not os.path.exists(out) and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(out) as f:
        r = json.load(f)
    print(f"app polled {r['ok'] + r['failed']} times over {r['seconds']}s while the leader "
          f"was killed: {r['ok']} answered, {r['failed']} failed; longest gap between "
          f"answers {r['longest_gap']}s; pods that answered: {', '.join(r['pods'])}")
    for line in r["errors"]:
        print(f"  failed at {line}")
    return 1 if r["failed"] or not r["ok"] else 0


def main(argv: list[str]) -> int:
    cmd, args = argv[0], argv[1:]
    if cmd == "leader":
        return leader(args[0])
    if cmd == "new-leader":
        return new_leader(args[0], args[1], float(args[2]))
    if cmd == "app-urls":
        return app_urls()
    if cmd == "ask":
        return ask(float(args[0]), args[1:])
    if cmd == "poll":
        return poll(args[0], args[1], args[2:])
    if cmd == "report":
        return report(args[0])
    print(f"unknown subcommand {cmd!r}; see {__file__}'s docstring", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
