"""The network namespaces of a local cluster (`rk up --topology netns`): one bridge in
the root namespace, and one namespace per member (masters m1..mN, agents n1..nK), each
joined to the bridge by a veth pair, so that every member has an address of its own and
a partition between two members is a real one (iptables inside a member's namespace).

The address plan is a function of the cluster id, computed once and stored in
cluster.yaml (`netns:`), so that a cluster keeps its addresses from run to run:
- subnet: a /24 in 10.200.0.0-10.239.255.0 chosen by a hash of the cluster id, stepping
  past any /24 that overlaps a route or address this machine already has;
- the bridge `rkb<8 hex of the id>` holds the gateway .1 (the root namespace reaches
  every member through it); master mI is .(10+I), agent nI is .(100+I);
- namespace `rk-<6 hex>-NAME`, host-side veth `rkv<6 hex>NAME` (its peer is `eth0`
  inside the namespace); every name fits Linux's 15 characters.

Docker sets the root namespace's FORWARD policy to DROP, and br_netfilter hands bridged
frames to that chain: one `-i BR -o BR -j ACCEPT` rule (ours, removed with the bridge)
lets members reach each other.

`create` and `remove` are idempotent: `create` repairs a half-made member (a crash
between two steps), `remove` deletes whatever of the plan is left, plus any namespace or
veth carrying the cluster's prefix, and kills processes still inside those namespaces.
Everything here needs root (`require_root`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

TOPOLOGIES = ("loopback", "netns")
SUBNET_FIRST_OCTET2, SUBNET_OCTET2_SPAN = 200, 40  # 10.200.x.0/24 ... 10.239.x.0/24
MAX_AGENTS = 150  # nI is .(100+I): up to .250
MAX_MASTERS = 9
API_PORT = 6443  # each member has a namespace of its own: the same ports for all
RAFT_PORT = 2380

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess[str]]


class NetnsError(Exception):
    """A namespace, veth or bridge could not be made or removed (the message says
    which and why), or this process may not (not root)."""


@dataclass(frozen=True)
class Member:
    name: str
    namespace: str
    address: str
    veth: str


@dataclass(frozen=True)
class Plan:
    cluster_id: str
    subnet: str  # "10.2XX.YYY.0/24"
    bridge: str
    gateway: str
    members: dict[str, Member]

    def to_dict(self) -> dict[str, Any]:
        return {"subnet": self.subnet, "bridge": self.bridge, "gateway": self.gateway,
                "members": {n: {"namespace": m.namespace, "address": m.address,
                                "veth": m.veth} for n, m in self.members.items()}}


def short_id(cluster_id: str) -> str:
    """The hex of a cluster id (`rk-<12 hex>`); other ids are hashed to hex."""
    tail = cluster_id.removeprefix("rk-")
    if re.fullmatch(r"[0-9a-f]{8,}", tail):
        return tail
    return hashlib.sha256(cluster_id.encode()).hexdigest()


def bridge_name(cluster_id: str) -> str:
    return f"rkb{short_id(cluster_id)[:8]}"


def namespace_name(cluster_id: str, member: str) -> str:
    check_member(member)
    return f"rk-{short_id(cluster_id)[:6]}-{member}"


def veth_name(cluster_id: str, member: str) -> str:
    check_member(member)
    return f"rkv{short_id(cluster_id)[:6]}{member}"


def check_member(member: str) -> None:
    """A member name is mI (1..MAX_MASTERS) or nI (1..MAX_AGENTS)."""
    m = re.fullmatch(r"([mn])([1-9][0-9]{0,2})", member)
    top = MAX_MASTERS if m and m.group(1) == "m" else MAX_AGENTS
    if m is None or int(m.group(2)) > top:
        raise NetnsError(f"member {member!r}: a netns cluster's members are m1..m"
                         f"{MAX_MASTERS} and n1..n{MAX_AGENTS}")


def host_index(member: str) -> int:
    check_member(member)
    return (10 if member[0] == "m" else 100) + int(member[1:])


def member_address(subnet: str, member: str) -> str:
    net = ipaddress.ip_network(subnet)
    return str(net.network_address + host_index(member))


def candidate_subnets(cluster_id: str) -> list[ipaddress.IPv4Network]:
    """Every /24 of the range, the cluster id's own first, then the ones after it."""
    digest = hashlib.sha256(cluster_id.encode()).digest()
    start = (digest[0] % SUBNET_OCTET2_SPAN) * 256 + digest[1]
    total = SUBNET_OCTET2_SPAN * 256
    out = []
    for k in range(total):
        i = (start + k) % total
        out.append(ipaddress.IPv4Network(
            f"10.{SUBNET_FIRST_OCTET2 + i // 256}.{i % 256}.0/24"))
    return out


def choose_subnet(cluster_id: str, taken: Iterable[ipaddress.IPv4Network]) -> str:
    """The first candidate /24 of `cluster_id` that overlaps none of `taken`."""
    used = list(taken)
    for net in candidate_subnets(cluster_id):
        if not any(net.overlaps(t) for t in used):
            return str(net)
    raise NetnsError("no free /24 left in 10.200.0.0-10.239.255.0 for the cluster's "
                     "namespaces: remove some routes or `rk down` other netns clusters")


def make_plan(cluster_id: str, members: Sequence[str], subnet: str) -> Plan:
    net = ipaddress.ip_network(subnet)
    if net.prefixlen != 24 or net.version != 4:
        raise NetnsError(f"netns.subnet: {subnet} is not an IPv4 /24")
    return Plan(cluster_id=cluster_id, subnet=str(net), bridge=bridge_name(cluster_id),
                gateway=str(net.network_address + 1),
                members={m: Member(m, namespace_name(cluster_id, m),
                                   member_address(subnet, m), veth_name(cluster_id, m))
                         for m in members})


def plan_from_layout(layout: dict[str, Any]) -> Plan | None:
    """The plan stored in a cluster.yaml layout (None for a loopback cluster)."""
    raw = layout.get("netns")
    if not isinstance(raw, dict) or not raw.get("subnet"):
        return None
    members = raw.get("members") or {}
    return make_plan(str(layout["cluster_id"]), list(members), str(raw["subnet"]))


def grow(plan: Plan, members: Sequence[str]) -> Plan:
    """The plan with `members` added (kept addresses for the others)."""
    names = list(plan.members) + [m for m in members if m not in plan.members]
    return make_plan(plan.cluster_id, names, plan.subnet)


def require_root() -> None:
    if os.geteuid() != 0:
        raise NetnsError("--topology netns: making or removing network namespaces, veths "
                         "and a bridge needs root (run rk up / rk down as root; a new "
                         "cluster can use --topology loopback instead)")


def exec_prefix(namespace: str) -> list[str]:
    """What runs a command inside `namespace` (`ip netns exec` execs: the pid stays)."""
    return ["ip", "netns", "exec", namespace]


def _run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise NetnsError(f"{argv[0]} is not installed (Debian: apt-get install iproute2 "
                         "iptables)") from None


def _must(run: Runner, *argv: str) -> None:
    done = run(argv)
    if done.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed: {done.stderr.strip()}")


def routes_in_use(run: Runner = _run) -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations of the root namespace's routes and its addresses' subnets."""
    out = []
    for argv in (["ip", "-4", "-o", "route", "show", "table", "all"],
                 ["ip", "-4", "-o", "addr", "show"]):
        done = run(argv)
        for word in done.stdout.split():
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if isinstance(net, ipaddress.IPv4Network) and not net.is_loopback and (
                    net.prefixlen > 0):
                out.append(net)
    return out


def namespaces(run: Runner = _run) -> list[str]:
    done = run(["ip", "netns", "list"])
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _link_exists(run: Runner, name: str, namespace: str | None = None) -> bool:
    argv = ["ip"] + (["-n", namespace] if namespace else []) + ["link", "show", name]
    return run(argv).returncode == 0


def _forward_rule(bridge: str) -> list[str]:
    return ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]


def create(plan: Plan, *, run: Runner = _run) -> None:
    """Make the bridge, the forward rule and every member's namespace and veth; what
    exists already is kept, a half-made member is made whole."""
    require_root()
    if not _link_exists(run, plan.bridge):
        _must(run, "ip", "link", "add", plan.bridge, "type", "bridge")
    _must(run, "ip", "addr", "replace", f"{plan.gateway}/24", "dev", plan.bridge)
    _must(run, "ip", "link", "set", plan.bridge, "up")
    if run(["iptables", "-w", "-C", *_forward_rule(plan.bridge)]).returncode != 0:
        _must(run, "iptables", "-w", "-I", *_forward_rule(plan.bridge)[:1], "1",
              *_forward_rule(plan.bridge)[1:])
    present = set(namespaces(run))
    for m in plan.members.values():
        if m.namespace not in present:
            _must(run, "ip", "netns", "add", m.namespace)
        if _link_exists(run, m.veth) and not _link_exists(run, "eth0", m.namespace):
            _must(run, "ip", "link", "delete", m.veth)  # a crash before the rename
        if not _link_exists(run, m.veth):
            _must(run, "ip", "link", "add", m.veth, "type", "veth", "peer", "name",
                  m.veth + "p", "netns", m.namespace)
            _must(run, "ip", "-n", m.namespace, "link", "set", m.veth + "p", "name", "eth0")
        _must(run, "ip", "link", "set", m.veth, "master", plan.bridge, "up")
        _must(run, "ip", "-n", m.namespace, "addr", "replace", f"{m.address}/24", "dev",
              "eth0")
        _must(run, "ip", "-n", m.namespace, "link", "set", "eth0", "up")
        _must(run, "ip", "-n", m.namespace, "link", "set", "lo", "up")
        _must(run, "ip", "-n", m.namespace, "route", "replace", "default", "via",
              plan.gateway)


def remove(cluster_id: str, plan: Plan | None = None, *, run: Runner = _run) -> list[str]:
    """Remove every namespace and veth of the cluster (those of `plan`, and any other
    with the cluster's prefix, a crash's leftovers), killing what still runs inside,
    then the bridge and its forward rule. Idempotent; returns what it removed."""
    require_root()
    prefix = f"rk-{short_id(cluster_id)[:6]}-"
    spaces = {ns for ns in namespaces(run) if ns.startswith(prefix)}
    if plan is not None:
        spaces |= {m.namespace for m in plan.members.values()} & set(namespaces(run))
    removed = []
    for ns in sorted(spaces):
        for pid in run(["ip", "netns", "pids", ns]).stdout.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        done = run(["ip", "netns", "delete", ns])
        if done.returncode != 0 and ns in namespaces(run):
            raise NetnsError(f"namespace {ns} could not be removed: {done.stderr.strip()}")
        removed.append(ns)
    veth_prefix = f"rkv{short_id(cluster_id)[:6]}"
    links = run(["ip", "-o", "link", "show"]).stdout
    for name in re.findall(r"^\d+: ([^:@\s]+)", links, flags=re.M):
        if name.startswith(veth_prefix):
            run(["ip", "link", "delete", name])
            removed.append(name)
    bridge = bridge_name(cluster_id)
    while run(["iptables", "-w", "-D", *_forward_rule(bridge)]).returncode == 0:
        pass
    if _link_exists(run, bridge):
        _must(run, "ip", "link", "delete", bridge)
        removed.append(bridge)
    return removed


def leftovers(cluster_id: str, *, run: Runner = _run) -> list[str]:
    """What of the cluster's namespaces, links and forward rule exists (for checks)."""
    sid = short_id(cluster_id)
    out = [ns for ns in namespaces(run) if ns.startswith(f"rk-{sid[:6]}-")]
    links = run(["ip", "-o", "link", "show"]).stdout
    out += [n for n in re.findall(r"^\d+: ([^:@\s]+)", links, flags=re.M)
            if n.startswith(f"rkv{sid[:6]}") or n == bridge_name(cluster_id)]
    if run(["iptables", "-w", "-C", *_forward_rule(bridge_name(cluster_id))]).returncode == 0:
        out.append(f"iptables {' '.join(_forward_rule(bridge_name(cluster_id)))}")
    return out
