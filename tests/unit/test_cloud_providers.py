"""The providers: loading by name through the entry point group, `vagrant status
--machine-readable` parsed from a recorded output, the local provider's machines, and
the agent-served load balancer's addresses (ready nodes, the exclusion label, Local
traffic policy, a port another LoadBalancer Service holds)."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

from raftkube.cloud import local, nodelb, vagrant
from raftkube.cloud import provider as pv
from tests.unit.cloud_support import endpoint_slice, node, service
from tests.unit.controller_fixture import T0

pytestmark = pytest.mark.unit

# `vagrant status --machine-readable` of a three-VM Vagrantfile (vagrant 2.x, libvirt and
# virtualbox) with n3 destroyed and n2 halted; a plugin's line and a blank line mixed in.
RECORDED = """\
1733180401,n1,metadata,provider,virtualbox
1733180401,n2,metadata,provider,virtualbox
1733180401,n3,metadata,provider,virtualbox
Vagrant-libvirt plugin removed box only from your LOCAL ~/.vagrant/boxes directory

1733180402,n1,provider-name,virtualbox
1733180402,n1,state,running
1733180402,n1,state-human-short,running
1733180402,n1,state-human-long,The VM is running. To stop this VM%!(VAGRANT_COMMA) you \
can run `vagrant halt` to\\nshut it down forcefully%!(VAGRANT_COMMA) or you can run \
`vagrant suspend` to simply\\nsuspend the virtual machine.
1733180402,n2,provider-name,virtualbox
1733180402,n2,state,poweroff
1733180402,n2,state-human-short,poweroff
1733180402,n2,state-human-long,The VM is powered off. To restart the VM%!(VAGRANT_COMMA) \
simply run `vagrant up`
1733180402,n3,provider-name,virtualbox
1733180402,n3,state,not_created
1733180402,n3,state-human-short,not created
1733180402,n3,state-human-long,The environment has not yet been created. Run `vagrant up` \
to\\ncreate the environment.
1733180402,,ui,info,Current machine states:\\n\\nn1                        running \
(virtualbox)\\nn2                        poweroff (virtualbox)\\nn3                        \
not created (virtualbox)\\n\\nThis environment represents multiple VMs.
"""


def test_the_vagrant_status_is_parsed() -> None:
    assert vagrant.parse_status(RECORDED) == [
        vagrant.Vm("n1", "running", "virtualbox"), vagrant.Vm("n2", "poweroff", "virtualbox"),
        vagrant.Vm("n3", "not_created", "virtualbox")]
    assert vagrant.parse_status("") == []
    assert vagrant.parse_status("garbage\n1,,ui,info,x\n") == []
    assert vagrant.unescape("a%!(VAGRANT_COMMA) b\\nc") == "a, b\nc"


async def test_the_vagrant_provider_reads_the_status_command(tmp_path: object) -> None:
    recorded = f"{tmp_path}/status.txt"
    with open(recorded, "w") as f:
        f.write(RECORDED)
    p = vagrant.VagrantProvider(command=("cat", recorded))
    view = pv.View(nodes=[node("n1", ip="192.168.56.11"), node("n2", "Unknown")])
    machines = await p.machines(view)
    assert [(m.name, m.provider_id, m.addresses, m.instance_type) for m in machines] == [
        ("n1", "vagrant://virtualbox/n1", ("192.168.56.11",), "virtualbox"),
        ("n2", "vagrant://virtualbox/n2", (), "virtualbox")]
    assert await p.exists(node("n2"), view) is True  # halted is not gone
    assert await p.exists(node("n3"), view) is False
    assert await p.exists(node("x", provider_id="vagrant://virtualbox/n3"), view) is False
    failing = vagrant.VagrantProvider(command=("sh", "-c", "echo 'A Vagrant environment or "
                                                           "target machine is required' >&2;"
                                                           " exit 1"))
    with pytest.raises(pv.ProviderError, match="exited with 1: A Vagrant environment"):
        await failing.status()


def test_a_missing_vagrant_is_a_clear_error() -> None:
    with pytest.raises(pv.ProviderError, match="no-such-vagrant is not installed"):
        vagrant.VagrantProvider(command=("no-such-vagrant", "status"))


def test_the_built_in_providers_are_registered_in_the_entry_point_group() -> None:
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=pv.GROUP)}
    assert eps.get("local") == "raftkube.cloud.local:LocalProvider"
    assert eps.get("vagrant") == "raftkube.cloud.vagrant:VagrantProvider"
    assert isinstance(pv.load("local"), local.LocalProvider)
    assert pv.load("none") is None
    assert {"local", "none", "vagrant"} <= set(pv.names())


def test_an_unknown_provider_names_the_flag_and_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"--cloud-provider: no provider named 'aws' "
                                         r"\(known: .*local.*vagrant"):
        pv.load("aws")


def test_a_plugin_registered_in_the_group_is_loaded(tmp_path: object,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    dist = f"{tmp_path}/rk_fake_cloud-1.0.dist-info"
    import os

    os.makedirs(dist)
    with open(f"{dist}/METADATA", "w") as f:
        f.write("Metadata-Version: 2.1\nName: rk-fake-cloud\nVersion: 1.0\n")
    with open(f"{dist}/entry_points.txt", "w") as f:
        f.write("[raftkube.cloud_providers]\nfake = raftkube.cloud.local:LocalProvider\n"
                "broken = raftkube.cloud.nope:Nothing\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert "fake" in pv.names()
    assert isinstance(pv.load("fake"), local.LocalProvider)
    with pytest.raises(ValueError, match="provider 'broken' cannot be loaded"):
        pv.load("broken")


async def test_the_local_provider_machines_are_the_nodes() -> None:
    p = local.LocalProvider()
    view = pv.View(nodes=[node("n1", ip="127.9.9.2"), node("n2", "Unknown")])
    assert await p.machines(view) == [
        pv.Machine("n1", "local://n1", ("127.9.9.2",), "local"),
        pv.Machine("n2", "local://n2", (), "local")]
    assert await p.exists(node("n2", "Unknown"), view) is True
    assert isinstance(p, pv.Provider)


def test_the_agents_load_balancer_is_every_ready_node_that_may_serve() -> None:
    nodes = [node("n1", ip="192.0.2.1"), node("n2", "Unknown", ip="192.0.2.2"),
             node("n3", ip="192.0.2.3", labels={nodelb.EXCLUDE: ""}),
             node("n4", ip="192.0.2.4", unschedulable=True), node("n5", ip="192.0.2.10"),
             node("n6")]
    web = service("web")
    assert nodelb.addresses(web, pv.View(nodes=nodes, services=[web])) == [
        "192.0.2.1", "192.0.2.10"]


def test_with_local_traffic_policy_only_nodes_with_a_ready_endpoint() -> None:
    nodes = [node("n1", ip="192.0.2.1"), node("n2", ip="192.0.2.2"), node("n3", ip="192.0.2.3")]
    web = service("web", externalTrafficPolicy="Local")
    slices = [endpoint_slice("web", ("10.0.0.1", "n2", True), ("10.0.0.2", "n3", False)),
              endpoint_slice("other", ("10.0.0.3", "n1", True))]
    assert nodelb.addresses(web, pv.View(nodes=nodes, services=[web], slices=slices)) == [
        "192.0.2.2"]


def test_a_port_another_load_balancer_holds_is_an_error_naming_it() -> None:
    first = service("first", created=T0 - 60)
    second = service("second", created=T0)
    other_port = service("third", port=81, created=T0 - 120)
    gone = service("old", type_="ClusterIP", created=T0 - 500)
    view = pv.View(nodes=[node("n1", ip="192.0.2.1")],
                   services=[second, other_port, first, gone])
    assert nodelb.addresses(first, view) == ["192.0.2.1"]
    with pytest.raises(pv.ProviderError, match="port 80/TCP is already served on every node "
                                               "by the load balancer of Service "
                                               "default/first"):
        nodelb.addresses(second, view)


async def test_the_vagrant_provider_says_gone_only_of_its_own_destroyed_vms(
        tmp_path: object) -> None:
    """A Node that is not one of the Vagrantfile's VMs (an agent on another machine,
    or `vagrant status` run in the wrong directory) is not reported gone: the node
    controller would delete it, and its pods with it, at its first NotReady."""
    recorded = f"{tmp_path}/status.txt"
    with open(recorded, "w") as f:
        f.write(RECORDED)
    p = vagrant.VagrantProvider(command=("cat", recorded))
    view = pv.View(nodes=[node("laptop", "Unknown")])
    assert await p.exists(node("laptop", "Unknown"), view) is True
    assert await p.exists(node("n3", "Unknown", provider_id="local://n3"), view) is True
    assert await p.exists(node("n3", "Unknown"), view) is False  # destroyed: gone


def _needs_a_token() -> object:
    raise KeyError("EXAMPLE_CLOUD_TOKEN")


def test_a_plugin_that_fails_to_start_is_a_clear_error_naming_the_flag(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A plugin's constructor may fail in any way (a missing credential, an SDK's own
    error): `rk master` says which provider and why, not a traceback."""
    entry = importlib.metadata.EntryPoint(
        "example", "tests.unit.test_cloud_providers:_needs_a_token", pv.GROUP)
    monkeypatch.setattr(pv, "_entry_points", lambda: {"example": entry})
    with pytest.raises(ValueError, match="--cloud-provider: provider 'example' cannot be "
                                         "made: KeyError: 'EXAMPLE_CLOUD_TOKEN'"):
        pv.load("example")
