"""`rk up --topology netns` and chaos.netfaults on a real cluster: three masters and a
simulated agent, each in a network namespace of its own, faults made with iptables
inside the namespaces, and `rk down` leaving no namespace, veth, bridge or rule.

One cluster for the whole story (its start-up is the expensive part); the fixture stops
it, heals every fault and removes the namespaces even when the test fails.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from chaos import netfaults
from raftkube.cli import local, netns
from raftkube.store.replica import member_id

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None
                       or shutil.which("iptables") is None,
                       reason="network namespaces need root, ip and iptables"),
]


@dataclass
class NetnsCluster:
    state_dir: str
    env: dict[str, str]
    layout: dict[str, Any]
    urls: dict[str, str]  # master -> https URL
    token: str
    ca: str
    faults: netfaults.NetFaults

    def rk(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "raftkube.cli", *args],
                              capture_output=True, text=True, timeout=timeout, env=self.env)

    def call(self, name: str, path: str, body: dict[str, Any], *,
             timeout: float = 3.0) -> dict[str, Any] | None:
        """One etcd-JSON request to master `name`; None unless it answered 200."""
        status, found = self.ask(name, path, body, timeout=timeout)
        return found if status == 200 else None

    def ask(self, name: str, path: str, body: dict[str, Any], *,
            timeout: float) -> tuple[int | None, dict[str, Any] | None]:
        """(HTTP status or None without an answer, JSON body) of one request."""
        req = urllib.request.Request(
            self.urls[name] + path, data=json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout,
                                        context=local.tls_context(self.ca)) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            try:
                return e.code, json.loads(e.read())
            except ValueError:
                return e.code, None
        except (OSError, ValueError):
            return None, None

    def put(self, name: str, key: str, value: str, *, timeout: float = 3.0) -> bool:
        return self.call(name, "/v3/kv/put", {"key": b64(key), "value": b64(value)},
                         timeout=timeout) is not None

    def get(self, name: str, key: str, *, serializable: bool = False) -> str | None:
        found = self.call(name, "/v3/kv/range", {"key": b64(key),
                                                 "serializable": serializable})
        kvs = (found or {}).get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def leaders(self, names: list[str]) -> dict[str, str | None]:
        """master -> the master it names as leader (None: silent, or no leader)."""
        by_id = {str(member_id(m["raft"])): m["name"] for m in self.layout["masters"]}
        out: dict[str, str | None] = {}
        for n in names:
            status = self.call(n, "/v3/maintenance/status", {}, timeout=1.0) or {}
            out[n] = by_id.get(str(status.get("leader")))
        return out

    def agreed_leader(self, names: list[str], *, timeout: float = 20.0,
                      not_: str | None = None) -> str:
        return wait_for(lambda: _one(self.leaders(names), not_), timeout,
                        f"{names} agreeing on a leader (not {not_})")


def _one(leaders: dict[str, str | None], not_: str | None) -> str | None:
    found = set(leaders.values())
    if len(found) == 1 and None not in found and not_ not in found:
        return found.pop()
    return None


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what}")


@pytest.fixture
def cluster(tmp_path: Any) -> Iterator[NetnsCluster]:
    state = str(tmp_path / "state")
    env = {**os.environ, "RK_CONFIG": os.path.join(state, "config.yaml"),
           "HOME": str(tmp_path)}
    up = subprocess.run([sys.executable, "-m", "raftkube.cli", "up", "--topology", "netns",
                         "--agents", "1", "--runtime", "simulated", "--state-dir", state],
                        capture_output=True, text=True, timeout=120, env=env)
    faults = None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        with open(os.path.join(state, "cluster.yaml")) as f:
            layout = yaml.safe_load(f)
        with open(os.path.join(state, "config.yaml")) as f:
            config = yaml.safe_load(f)
        faults = netfaults.NetFaults.from_state_dir(state)
        yield NetnsCluster(state, env, layout, dict(zip(
            [m["name"] for m in layout["masters"]], config["servers"], strict=True)),
            config["token"], config["ca"], faults)
    finally:
        if faults is not None:
            faults.heal()
        subprocess.run([sys.executable, "-m", "raftkube.cli", "down", "--state-dir", state],
                       capture_output=True, timeout=60, env=env)
        cid = local.cluster_id(state)
        if cid is not None:
            netns.remove(cid, local.netns_plan(state))


@pytest.mark.timeout(150)
def test_a_netns_cluster_survives_real_partitions_and_leaves_nothing_behind(
        cluster: NetnsCluster) -> None:
    c = cluster
    masters = [m["name"] for m in c.layout["masters"]]
    plan = netns.plan_from_layout(c.layout)
    assert plan is not None and set(plan.members) == {"m1", "m2", "m3", "n1"}

    # Each master serves its API and Raft on its namespace's address, and the client
    # config lists those addresses (reached from here through the bridge).
    for m in c.layout["masters"]:
        member = plan.members[m["name"]]
        assert m["api"] == f"{member.address}:{netns.API_PORT}"
        assert c.urls[m["name"]] == f"https://{member.address}:{netns.API_PORT}"
        listening = subprocess.run(["ip", "netns", "exec", member.namespace, "ss", "-ltnH"],
                                   capture_output=True, text=True, check=True).stdout
        assert f"{member.address}:{netns.API_PORT}" in listening
        assert f"{member.address}:{netns.RAFT_PORT}" in listening
    with open(os.path.join(c.state_dir, "pids", "m1.pid")) as f:
        pid = int(f.read())
    with open(f"/proc/{pid}/cmdline", "rb") as g:  # the pid is the master's own
        assert b"raftkube.cli\0master" in g.read()
    got = c.rk("get", "nodes")
    assert got.returncode == 0 and "n1" in got.stdout and "Ready" in got.stdout, got.stderr

    # The leader, isolated from the other masters: they elect another; the old one
    # acknowledges no write (the client here still reaches it, and hears it refuse);
    # after healing it rejoins and all three agree.
    old = c.agreed_leader(masters)
    c.faults.isolate(old, from_=[m for m in masters if m != old])
    rest = [m for m in masters if m != old]
    new = c.agreed_leader(rest, not_=old)
    assert wait_for(lambda: c.put(new, "during-isolation", "1"), 10, "a write via " + new)
    # It refuses a write (etcd's "request timed out", 503, after its proposal timeout)
    # rather than acknowledge one it cannot commit.
    status, answer = c.ask(old, "/v3/kv/put", {"key": b64("to-the-isolated"),
                                               "value": b64("x")}, timeout=20.0)
    assert status == 503, (status, answer)
    c.faults.heal()
    assert c.faults.rules(old) == {}
    c.agreed_leader(masters)
    assert wait_for(lambda: c.get(old, "during-isolation", serializable=True) == "1", 10,
                    "the old leader catching up")
    # (The refused write's outcome is unknown to its client, as a timed-out etcd write
    # is: the old member may still hand it to the new leader once healed.)

    # A lossy link (30% of the leader's packets to and from its peers): writes still go
    # through, retried where one timed out.
    leader = c.agreed_leader(masters)
    c.faults.flaky(leader, 0.3)
    for i in range(5):
        assert wait_for(lambda i=i: any(c.put(m, f"flaky-{i}", "v") for m in masters), 20,
                        f"write flaky-{i}")
    c.faults.heal()

    # A slow link (0.1 s each way) to one follower: it sees writes later than the other
    # follower does, and the cluster keeps working.
    leader = c.agreed_leader(masters)
    slow, fast = [m for m in masters if m != leader]
    c.faults.slow(slow, 0.1)
    leader = c.agreed_leader(masters)
    if leader == slow:  # the reconnection moved the leadership: slow the other one
        c.faults.heal()
        slow, fast = fast, slow
        c.faults.slow(slow, 0.1)
        leader = c.agreed_leader(masters)
    lags: dict[str, list[float]] = {slow: [], fast: []}
    for i in range(5):
        key = f"slow-{i}"
        assert wait_for(lambda key=key: c.put(leader, key, "v"), 10, f"write {key}")
        acked = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - acked < 5:
            for m in (slow, fast):
                if m not in seen and c.get(m, key, serializable=True) == "v":
                    seen[m] = time.monotonic() - acked
        assert len(seen) == 2, f"{key} reached {seen} only"
        for m, lag in seen.items():
            lags[m].append(lag)
    assert c.faults.proxied(slow) > 0
    assert statistics.median(lags[slow]) >= 0.05, lags
    assert statistics.median(lags[slow]) > statistics.median(lags[fast]), lags
    c.faults.heal()
    for m in masters:
        assert c.faults.rules(m) == {}

    # rk down: no process, namespace, veth, bridge or forward rule is left.
    down = c.rk("down", "--state-dir", c.state_dir)
    assert down.returncode == 0, down.stderr
    assert netns.leftovers(str(c.layout["cluster_id"])) == []
    bridge = netns.bridge_name(str(c.layout["cluster_id"]))
    assert bridge not in subprocess.run(["iptables", "-S"], capture_output=True,
                                        text=True).stdout
