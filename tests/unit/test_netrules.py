"""The agent's iptables chains: the rules text (pure), and sync/remove in a network
namespace of the test's own (the kernel's real nat table, touching nothing else)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from raftkube.agent import netrules as nr

pytestmark = pytest.mark.unit

WEB = nr.Redirect("10.96.0.10", 80, "tcp", "172.17.0.1", 41000, "default/web:http")
DNS_UDP = nr.Redirect("169.254.20.10", 53, "udp", "172.17.0.1", 41001, "cluster dns")


def test_rules_name_the_agents_own_chains_only() -> None:
    svc, pod = nr.chains("n1", "127.0.0.2")
    assert svc.startswith("RKSVC-") and pod.startswith("RKPOD-") and len(svc) <= 28
    assert nr.chains("n1", "127.0.0.3") != (svc, pod)  # another cluster's n1
    text = nr.rules(node="n1", address="127.0.0.2", pod_ips=["172.17.0.5", "172.17.0.4"],
                    redirects=[WEB, DNS_UDP])
    assert text.splitlines() == [
        "*nat", f":{svc} - [0:0]", f":{pod} - [0:0]",
        f'-A {pod} -s 172.17.0.4/32 -m comment --comment "pod of n1" -j {svc}',
        f'-A {pod} -s 172.17.0.5/32 -m comment --comment "pod of n1" -j {svc}',
        f'-A {svc} -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -m comment --comment '
        f'"default/web:http" -j DNAT --to-destination 172.17.0.1:41000',
        f'-A {svc} -d 169.254.20.10/32 -p udp -m udp --dport 53 -m comment --comment '
        f'"cluster dns" -j DNAT --to-destination 172.17.0.1:41001',
        "COMMIT"]


@pytest.fixture
def netns() -> Iterator[list[str]]:
    name = f"rk-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield ["ip", "netns", "exec", name]
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_sync_is_idempotent_and_remove_leaves_nothing(netns: list[str]) -> None:
    rules = nr.NetRules(node="n1", address="127.0.0.2", prefix=netns)
    assert rules.sync(pod_ips=["172.17.0.4"], redirects=[WEB])
    assert not rules.sync(pod_ips=["172.17.0.4"], redirects=[WEB])  # nothing to write
    svc, pod = nr.chains("n1", "127.0.0.2")
    got = nr.present("n1", "127.0.0.2", prefix=netns)
    assert any("--to-destination 172.17.0.1:41000" in r for r in got[svc])
    assert any("-s 172.17.0.4/32" in r for r in got[pod])
    assert nr.hooked("n1", "127.0.0.2", prefix=netns)
    # another agent's chains beside ours are left alone by our sync and removal
    other = nr.NetRules(node="n2", address="127.0.0.3", prefix=netns)
    other.sync(pod_ips=["172.17.0.9"], redirects=[DNS_UDP])
    assert rules.sync(pod_ips=[], redirects=[WEB, DNS_UDP])
    got = nr.present("n1", "127.0.0.2", prefix=netns)
    assert not any("-s " in r for r in got[pod]) and len(got[svc]) == 3  # -N and 2 rules
    # a fresh process (the agent restarted) rewrites the chains and does not hook twice
    again = nr.NetRules(node="n1", address="127.0.0.2", prefix=netns)
    assert again.sync(pod_ips=[], redirects=[WEB])
    hooks = subprocess.run([*netns, "iptables", "-t", "nat", "-S", "PREROUTING"],
                           capture_output=True, text=True, check=True).stdout
    assert hooks.count(f"-j {pod}") == 1
    again.remove()
    again.remove()  # twice is fine
    assert nr.present("n1", "127.0.0.2", prefix=netns) == {}
    assert not nr.hooked("n1", "127.0.0.2", prefix=netns)
    assert set(nr.present("n2", "127.0.0.3", prefix=netns)) == set(nr.chains("n2", "127.0.0.3"))
    other.remove()


def test_a_removed_jump_is_put_back_at_the_next_check(netns: list[str]) -> None:
    now = [0.0]
    rules = nr.NetRules(node="n1", address="127.0.0.2", prefix=netns, verify_every=30,
                        clock=lambda: now[0])
    assert rules.sync(pod_ips=["172.17.0.4"], redirects=[WEB])
    _, pod = nr.chains("n1", "127.0.0.2")
    subprocess.run([*netns, "iptables", "-t", "nat", "-F", "PREROUTING"], check=True)
    now[0] += 10
    assert not rules.sync(pod_ips=["172.17.0.4"], redirects=[WEB])  # not checked yet
    now[0] += 30
    assert rules.sync(pod_ips=["172.17.0.4"], redirects=[WEB])
    assert nr.hooked("n1", "127.0.0.2", prefix=netns)
    rules.remove()
