"""The netns topology without touching the kernel: names and the address plan
(raftkube.cli.netns), `rk up --topology` argument checks (raftkube.cli.local), and
chaos.netfaults' argument checks and the iptables rules it asks for (recorded by a fake
runner, never run)."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from chaos import netfaults
from raftkube.cli import local, netns
from raftkube.client.errors import ClientError

pytestmark = pytest.mark.unit

CID = "rk-0123456789ab"


# ---- names and addresses ------------------------------------------------------------------

@pytest.mark.parametrize("member", ["m1", "m9", "n1", "n150"])
def test_every_name_fits_linux_interface_and_namespace_limits(member: str) -> None:
    assert len(netns.bridge_name(CID)) <= 15
    assert len(netns.veth_name(CID, member)) <= 15
    assert len(netns.veth_name(CID, member) + "p") <= 15  # the peer before its rename
    assert netns.namespace_name(CID, member) == f"rk-012345-{member}"
    assert netns.bridge_name(CID) == "rkb01234567"


@pytest.mark.parametrize("member", ["m0", "m10", "n0", "n151", "x1", "m01", "", "n1 "])
def test_member_names_outside_the_plan_are_refused(member: str) -> None:
    with pytest.raises(netns.NetnsError, match="member"):
        netns.namespace_name(CID, member)


def test_a_plan_gives_masters_and_agents_distinct_addresses_in_one_24() -> None:
    plan = netns.make_plan(CID, ["m1", "m2", "m3", "n1", "n2"], "10.201.7.0/24")
    assert plan.gateway == "10.201.7.1"
    assert {n: m.address for n, m in plan.members.items()} == {
        "m1": "10.201.7.11", "m2": "10.201.7.12", "m3": "10.201.7.13",
        "n1": "10.201.7.101", "n2": "10.201.7.102"}
    assert netns.plan_from_layout({"cluster_id": CID, "netns": plan.to_dict()}) == plan
    assert netns.plan_from_layout({"cluster_id": CID}) is None
    grown = netns.grow(plan, ["n2", "n3"])
    assert list(grown.members) == ["m1", "m2", "m3", "n1", "n2", "n3"]
    assert grown.members["m1"] == plan.members["m1"]


def test_a_subnet_that_is_not_a_24_is_refused() -> None:
    with pytest.raises(netns.NetnsError, match="netns.subnet"):
        netns.make_plan(CID, ["m1"], "10.201.0.0/16")


def test_the_subnet_depends_on_the_cluster_id_and_avoids_routes_in_use() -> None:
    first = netns.choose_subnet(CID, [])
    net = ipaddress.ip_network(first)
    assert net.prefixlen == 24 and 200 <= int(first.split(".")[1]) < 240
    assert netns.choose_subnet(CID, []) == first  # stable
    assert netns.choose_subnet("rk-ffffffffffff", []) != first
    taken = [net, ipaddress.IPv4Network("10.0.0.0/8")]
    with pytest.raises(netns.NetnsError, match="no free /24"):
        netns.choose_subnet(CID, taken)
    second = netns.choose_subnet(CID, [net])
    assert second != first and not ipaddress.ip_network(second).overlaps(net)


def test_routes_in_use_reads_routes_and_addresses() -> None:
    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        out = ("default via 192.0.2.1 dev eth0\n10.213.5.0/24 dev rkb1 proto kernel\n"
               if "route" in argv else "2: eth0    inet 192.0.2.2/24 brd 192.0.2.255\n")
        return subprocess.CompletedProcess(list(argv), 0, out, "")

    found = netns.routes_in_use(run)
    assert ipaddress.IPv4Network("10.213.5.0/24") in found
    assert ipaddress.IPv4Network("192.0.2.0/24") in found
    assert all(n.prefixlen > 0 for n in found)


# ---- rk up --topology -------------------------------------------------------------------------

def _cluster(tmp_path: Path, name: str = "s", **layout: object) -> str:
    state = tmp_path / name
    state.mkdir()
    (state / "cluster.yaml").write_text(yaml.safe_dump({"cluster_id": CID, "masters": [],
                                                       **layout}))
    return str(state)


def test_a_cluster_keeps_its_topology(tmp_path: Path) -> None:
    state = _cluster(tmp_path)
    with pytest.raises(ClientError, match="--topology netns: .* made with --topology "
                                          "loopback"):
        local.check_topology(state, "netns", runtime="simulated", agents=0,
                             insecure_http=None)
    assert local.check_topology(state, None, runtime="docker", agents=2,
                                insecure_http=None) == "loopback"
    with pytest.raises(ClientError, match="--topology: 'ring'"):
        local.check_topology(state, "ring", runtime="simulated", agents=0,
                             insecure_http=None)


def test_netns_refuses_plain_http_and_docker_agents(tmp_path: Path) -> None:
    state = str(tmp_path / "new")
    with pytest.raises(ClientError, match="--insecure-http: .*loopback"):
        local.check_topology(state, "netns", runtime="simulated", agents=0,
                             insecure_http=True)
    with pytest.raises(ClientError, match="--runtime docker: not with --topology netns"):
        local.check_topology(state, "netns", runtime="docker", agents=1,
                             insecure_http=None)


def test_more_agents_than_a_netns_plan_holds_are_refused_by_name_before_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)  # the check comes before any ip
    state = tmp_path / "new"
    with pytest.raises(ClientError, match="--agents 151: a netns cluster has at most 150 "
                                          "agents"):
        local.up(state_dir=str(state), masters=1, agents=151, topology="netns",
                 runtime="simulated")
    assert not (state / "cluster.yaml").exists()


def test_netns_needs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    with pytest.raises(ClientError, match="needs root"):
        local.check_topology(str(tmp_path / "new"), "netns", runtime="simulated",
                             agents=0, insecure_http=None)


def test_members_of_a_netns_cluster_start_inside_their_namespace(tmp_path: Path) -> None:
    plan = netns.make_plan(CID, ["m1", "n1"], "10.201.7.0/24")
    state = _cluster(tmp_path, topology="netns", netns=plan.to_dict())
    assert local._in_namespace(state, "m1", ["python"]) == [
        "ip", "netns", "exec", "rk-012345-m1", "python"]
    assert local._in_namespace(state, "n2", ["python"]) == ["python"]  # not in the plan
    argv = local.agent_argv(state, "n1", 1, {}, ["https://10.201.7.11:6443"])
    assert argv[argv.index("--address") + 1] == "10.201.7.101"
    loopback = _cluster(tmp_path, "loop")
    assert local._in_namespace(loopback, "m1", ["python"]) == ["python"]


# ---- chaos.netfaults ---------------------------------------------------------------------------

class Recorder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        # `-L`/`-C` say "absent", so the chain and hooks are made; `-D` finds nothing.
        code = 1 if any(a in argv for a in ("-L", "-C", "-D")) else 0
        return subprocess.CompletedProcess(list(argv), code, "", "")


def _faults() -> tuple[netfaults.NetFaults, Recorder]:
    rec = Recorder()
    return netfaults.NetFaults({"m1": ("ns1", "10.9.9.11"), "m2": ("ns2", "10.9.9.12"),
                                "m3": ("ns3", "10.9.9.13")}, run=rec), rec


def test_isolate_drops_only_the_named_peers_in_the_members_namespace() -> None:
    f, rec = _faults()
    f.isolate("m1", from_=["m2"])
    appended = [c for c in rec.calls if "-A" in c]
    assert appended == [
        ["ip", "netns", "exec", "ns1", "iptables", "-w", "-t", "filter", "-A", "RK-FAULTS",
         "-s", "10.9.9.12", "-j", "DROP"],
        ["ip", "netns", "exec", "ns1", "iptables", "-w", "-t", "filter", "-A", "RK-FAULTS",
         "-d", "10.9.9.12", "-j", "DROP"]]
    hooks = [c[c.index("-I") + 1] for c in rec.calls if "-I" in c]
    assert hooks == ["INPUT", "OUTPUT"]


def test_partition_cuts_every_link_between_groups() -> None:
    f, rec = _faults()
    f.partition([["m1"], ["m2", "m3"]])
    drops = {(c[3], c[c.index("-s") + 1]) for c in rec.calls if "-A" in c and "-s" in c}
    assert drops == {("ns1", "10.9.9.12"), ("ns1", "10.9.9.13"), ("ns2", "10.9.9.11"),
                     ("ns3", "10.9.9.11")}


def test_flaky_uses_the_statistic_match_on_peer_traffic() -> None:
    f, rec = _faults()
    f.flaky("m2", 0.3)
    appended = [c for c in rec.calls if "-A" in c]
    assert len(appended) == 4 and all(c[3] == "ns2" for c in appended)
    assert all(c[-8:] == ["-m", "statistic", "--mode", "random", "--probability",
                          "0.3000", "-j", "DROP"] for c in appended)


@pytest.mark.parametrize(("call", "message"), [
    (lambda f: f.isolate("m9"), "name: 'm9' is not a member"),
    (lambda f: f.isolate("m1", from_=["m1"]), "from itself"),
    (lambda f: f.isolate("m1", from_="m2"), "from_: a list"),
    (lambda f: f.isolate("m1", from_=["x"]), "from_: 'x'"),
    (lambda f: f.partition([["m1", "m2"]]), "2 or more"),
    (lambda f: f.partition([["m1"], ["m1", "m2"]]), "m1 is in more than one group"),
    (lambda f: f.partition([["m1"], []]), "non-empty"),
    (lambda f: f.partition([["m1"], ["zz"]]), "'zz' is not a member"),
    (lambda f: f.flaky("m1", 0), "probability: 0"),
    (lambda f: f.flaky("m1", 1.5), "probability: 1.5"),
    (lambda f: f.slow("m1", 0), "delay_seconds: 0"),
    (lambda f: f.slow("m1", 60), "delay_seconds: 60"),
    (lambda f: f.heal("m7"), "name: 'm7'"),
])
def test_bad_arguments_are_refused_before_any_rule(call: object, message: str) -> None:
    f, rec = _faults()
    with pytest.raises(netfaults.NetFaultError, match=message):
        call(f)  # type: ignore[operator]
    assert rec.calls == []


def test_heal_removes_hooks_and_chains_in_every_namespace_even_with_nothing_made() -> None:
    f, rec = _faults()
    f.heal()
    f.heal()  # idempotent
    for ns in ("ns1", "ns2", "ns3"):
        mine = [c[4:] for c in rec.calls if c[3] == ns]
        for table, hook in (("filter", "INPUT"), ("filter", "OUTPUT"), ("nat", "PREROUTING"),
                            ("nat", "OUTPUT")):
            assert ["iptables", "-w", "-t", table, "-D", hook, "-j", "RK-FAULTS"] in mine
        for table in ("filter", "nat"):
            assert ["iptables", "-w", "-t", table, "-F", "RK-FAULTS"] in mine
            assert ["iptables", "-w", "-t", table, "-X", "RK-FAULTS"] in mine


def test_an_empty_layout_is_refused() -> None:
    with pytest.raises(netfaults.NetFaultError, match="members"):
        netfaults.NetFaults({})


# ---- create / remove, with the kernel faked ----------------------------------------------------

class FakeIp:
    """Just enough of `ip` and `iptables` over sets: namespaces, links (name -> netns or
    None for the root one), forward rules."""

    def __init__(self) -> None:
        self.spaces: set[str] = set()
        self.links: dict[str, str | None] = {}  # "NS/name" inside a namespace
        self.forward: list[str] = []
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        a = list(argv)
        self.calls.append(a)
        ok = subprocess.CompletedProcess(a, 0, "", "")
        no = subprocess.CompletedProcess(a, 1, "", "no")
        ns = None
        if a[:2] == ["ip", "-n"]:
            ns, a = a[2], ["ip", *a[3:]]
        if a[0] == "iptables":
            rule = " ".join(a[3:])
            if a[2] == "-C":
                return ok if rule in self.forward else no
            if a[2] == "-I":
                self.forward.append(" ".join([a[3], *a[5:]]))
            if a[2] == "-D":
                if rule not in self.forward:
                    return no
                self.forward.remove(rule)
            return ok
        if a[1:3] == ["netns", "list"]:
            return subprocess.CompletedProcess(a, 0, "".join(f"{s}\n" for s in self.spaces),
                                               "")
        if a[1:3] == ["netns", "add"]:
            self.spaces.add(a[3])
        if a[1:3] == ["netns", "delete"]:
            self.spaces.discard(a[3])
            for name, where in list(self.links.items()):
                if where == a[3]:
                    del self.links[name]
        if a[1:3] == ["netns", "pids"]:
            return ok
        if a[1:3] == ["link", "show"] and len(a) == 4:
            key = f"{ns}/{a[3]}" if ns else a[3]
            return ok if key in self.links else no
        if a[1:3] == ["-o", "link"]:
            names = [n for n in self.links if "/" not in n]
            return subprocess.CompletedProcess(
                a, 0, "".join(f"{i}: {n}: <UP>\n" for i, n in enumerate(names, 1)), "")
        if a[1:3] == ["link", "add"]:
            self.links[a[3]] = None
            if "peer" in a:
                self.links[f"{a[-1]}/{a[a.index('peer') + 2]}"] = a[-1]
        if a[1:3] == ["link", "set"] and "name" in a and ns:
            where = self.links.pop(f"{ns}/{a[3]}")
            self.links[f"{ns}/{a[-1]}"] = where
        if a[1:3] == ["link", "delete"]:
            self.links.pop(a[3], None)
            # A veth's peer goes with it: eth0 in the namespace of the same member.
            member = a[3].removeprefix("rkv012345")
            self.links.pop(f"rk-012345-{member}/eth0", None)
        return ok


def test_create_is_idempotent_and_remove_leaves_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 0)
    ip = FakeIp()
    plan = netns.make_plan(CID, ["m1", "n1"], "10.201.7.0/24")
    netns.create(plan, run=ip)
    assert ip.spaces == {"rk-012345-m1", "rk-012345-n1"}
    assert {"rkb01234567", "rkv012345m1", "rk-012345-m1/eth0"} <= set(ip.links)
    assert ip.forward == ["FORWARD -i rkb01234567 -o rkb01234567 -j ACCEPT"]
    made = len(ip.calls)
    netns.create(plan, run=ip)  # again: nothing new is added
    assert not [c for c in ip.calls[made:] if c[1:3] in (["netns", "add"], ["link", "add"])]
    assert len(ip.forward) == 1
    del ip.links["rk-012345-m1/eth0"]  # half made: a crash before the peer's rename
    again = len(ip.calls)
    netns.create(plan, run=ip)
    assert ["ip", "link", "delete", "rkv012345m1"] in ip.calls[again:]
    assert "rk-012345-m1/eth0" in ip.links
    ip.spaces.add("rk-012345-n9")  # a leftover of a crash, in no plan
    removed = netns.remove(CID, plan, run=ip)
    assert set(removed) >= {"rk-012345-m1", "rk-012345-n1", "rk-012345-n9", "rkb01234567"}
    assert netns.leftovers(CID, run=ip) == []
    assert netns.remove(CID, plan, run=ip) == []  # idempotent
