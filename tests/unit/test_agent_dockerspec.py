"""What the Docker runtime asks the engine for (dockerspec), the engine's times, the
host's facts (hostinfo), the Node status that carries them, and lifecycle hooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import pytest

from raftkube.agent import dockerspec as ds
from raftkube.agent import dockerstate as dst
from raftkube.agent import hooks, hostinfo, node
from raftkube.agent import runtime as rt
from tests.unit.agent_support import T0, pod

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def spec_of(p: Obj, c: Obj, request: rt.ContainerRequest | None = None) -> ds.Spec:
    return ds.container_spec(p, c, request or ds.request_from_spec(c), attempt=2,
                             sandbox_id="sb1", cluster="rk-1", node="n1")


def test_a_container_joins_its_sandbox_with_its_labels_command_and_env() -> None:
    p = pod()
    c = {"name": "c", "image": "busybox:1.36", "command": ["sh", "-c"], "args": ["echo $X"],
         "env": [{"name": "X", "value": "1"}, {"name": "Y", "valueFrom": {}}],
         "workingDir": "/w"}
    s = spec_of(p, c)
    assert s.name == "rk_c_p_ns_uid-p-0001_2"
    assert s.create["image"] == "busybox:1.36"
    assert (s.create["entrypoint"], s.create["command"]) == (["sh", "-c"], ["echo $X"])
    assert s.create["environment"] == ["X=1"]  # a valueFrom is the kubelet's to resolve
    assert s.create["working_dir"] == "/w"
    assert s.create["labels"] == {
        ds.CLUSTER: "rk-1", ds.NODE: "n1", ds.POD_UID: "uid-p-0001", ds.POD_NAMESPACE: "ns",
        ds.POD_NAME: "p", ds.KIND: ds.CONTAINER, ds.CONTAINER_NAME: "c", ds.ATTEMPT: "2",
        ds.IMAGE: "busybox:1.36"}
    assert s.host["network_mode"] == s.host["ipc_mode"] == "container:sb1"
    assert "pid_mode" not in s.host


def test_the_image_keeps_its_own_command_when_the_spec_names_none() -> None:
    s = spec_of(pod(), {"name": "c", "image": "busybox:1.36"})
    assert "entrypoint" not in s.create and "command" not in s.create


def test_a_resolved_request_wins_over_the_spec_with_its_mounts() -> None:
    req = rt.ContainerRequest(command=("a",), args=(), env=(("K", "v=1"),),
                              mounts=(rt.Mount("/data", "/host/d"),
                                      rt.Mount("/cfg", "/host/c", read_only=True)))
    s = spec_of(pod(), {"name": "c", "image": "i", "command": ["ignored"]}, req)
    assert (s.create["entrypoint"], s.create["command"]) == (["a"], [])
    assert s.create["environment"] == ["K=v=1"]
    assert s.host["binds"] == ["/host/d:/data:rw", "/host/c:/cfg:ro"]
    assert "tmpfs" not in s.host  # a memory emptyDir is the kubelet's mount, bound


def test_limits_and_security_context_reach_the_engine() -> None:
    p = pod()
    p["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000}
    p["spec"]["shareProcessNamespace"] = True
    c = {"name": "c", "image": "i",
         "resources": {"limits": {"cpu": "500m", "memory": "64Mi"},
                       "requests": {"cpu": "250m"}},
         "securityContext": {"runAsUser": 1001, "readOnlyRootFilesystem": True,
                             "privileged": True, "allowPrivilegeEscalation": False,
                             "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]}}}
    s = spec_of(p, c)
    assert s.create["user"] == "1001:2000"
    assert (s.host["nano_cpus"], s.host["mem_limit"], s.host["cpu_shares"]) == \
        (500_000_000, 64 * 2**20, 256)
    assert s.host["memswap_limit"] == s.host["mem_limit"]
    assert s.host["read_only"] and s.host["privileged"]
    assert s.host["group_add"] == ["3000"]
    assert (s.host["cap_add"], s.host["cap_drop"]) == (["NET_ADMIN"], ["ALL"])
    assert s.host["security_opt"] == ["no-new-privileges"]
    assert s.host["pid_mode"] == "container:sb1"


def test_a_bad_quantity_is_a_runtime_failure_naming_the_container() -> None:
    c = {"name": "c", "image": "i", "resources": {"limits": {"cpu": "lots"}}}
    with pytest.raises(rt.RuntimeFailure, match="container c: resources"):
        spec_of(pod(), c)


def test_the_prestop_hook_is_kept_in_a_label_with_its_named_port_resolved() -> None:
    c = {"name": "c", "image": "i", "ports": [{"name": "web", "containerPort": 8080}],
         "lifecycle": {"preStop": {"httpGet": {"port": "web", "path": "/quit"}}}}
    s = spec_of(pod(), c)
    assert json.loads(s.create["labels"][ds.PRE_STOP]) == {
        "httpGet": {"port": 8080, "path": "/quit"}}
    c["lifecycle"]["preStop"]["httpGet"]["port"] = "nope"
    with pytest.raises(rt.RuntimeFailure, match="no port named 'nope'"):
        spec_of(pod(), c)


def test_a_sandbox_publishes_host_ports_and_takes_dns_and_hostname() -> None:
    p = pod()
    p["spec"]["containers"][0]["ports"] = [
        {"containerPort": 80, "hostPort": 8080},
        {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "127.0.0.2"},
        {"containerPort": 9000}]
    config = ds.default_sandbox_config(p)
    assert config.hostname == "p"
    assert config.port_mappings == ((80, "TCP", "", 8080), (53, "UDP", "127.0.0.2", 5353))
    config = rt.SandboxConfig(hostname=config.hostname, port_mappings=config.port_mappings,
                              dns_servers=("10.96.0.10",), dns_searches=("ns.svc",),
                              dns_options=("ndots:5",))
    s = ds.sandbox_spec(p, config, cluster="rk-1", node="n1")
    assert s.name == "rk_POD_p_ns_uid-p-0001_0"
    assert s.create["image"] == ds.PAUSE_IMAGE and s.create["hostname"] == "p"
    assert s.create["labels"][ds.KIND] == ds.SANDBOX
    assert s.create["ports"] == [("80", "tcp"), ("53", "udp")]
    assert s.host["port_bindings"] == {"80/tcp": 8080, "53/udp": ("127.0.0.2", 5353)}
    assert (s.host["dns"], s.host["dns_search"], s.host["dns_opt"]) == (
        ["10.96.0.10"], ["ns.svc"], ["ndots:5"])
    assert s.host["network_mode"] == "bridge" and s.host["ipc_mode"] == "shareable"
    assert s.host["log_config"] == {"type": "none"}  # the pause container writes nothing


def test_a_host_network_sandbox_is_on_the_host() -> None:
    p = pod()
    p["spec"]["hostNetwork"] = True
    s = ds.sandbox_spec(p, ds.default_sandbox_config(p), cluster="rk-1", node="n1")
    assert s.host["network_mode"] == "host"
    assert "hostname" not in s.create and "ports" not in s.create
    assert s.create["labels"][ds.HOST_NETWORK] == "true"


@pytest.mark.parametrize(("image", "policy", "want"), [
    ("busybox", None, "Always"), ("busybox:latest", None, "Always"),
    ("busybox:1.36", None, "IfNotPresent"), ("busybox:1.36", "Never", "Never"),
    ("reg:5000/busybox", None, "Always")])
def test_pull_policy_defaults_as_kubernetes(image: str, policy: str | None,
                                            want: str) -> None:
    c = {"name": "c", "image": image}
    if policy:
        c["imagePullPolicy"] = policy
    assert ds.pull_policy(c) == want


@pytest.mark.parametrize(("text", "want"), [
    ("2026-12-02T12:07:58.123456789Z", 1796213278.123456789),
    ("2026-12-02T12:07:58Z", 1796213278.0),
    ("2026-12-02T13:07:58.5+01:00", 1796213278.5),
    ("0001-01-01T00:00:00Z", None), ("", None), (None, None), ("garbage", None)])
def test_engine_times(text: Any, want: float | None) -> None:
    got = dst.parse_engine_time(text)
    assert got == pytest.approx(want) if want is not None else got is None


def test_host_capacity_and_pressure(tmp_path: Any) -> None:
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       16384000 kB\nMemAvailable:      51200 kB\nHuge: 0\n")
    parsed = hostinfo.meminfo(str(info))
    assert parsed["MemTotal"] == 16384000 * 1024
    assert hostinfo.memory_pressure(parsed)  # 50 MiB < 100 MiB
    assert not hostinfo.memory_pressure({"MemAvailable": 200 * 2**20})
    assert not hostinfo.memory_pressure({})
    cap = hostinfo.capacity(cpu="3", pods=20)
    assert (cap["cpu"], cap["pods"]) == ("3", "20") and cap["memory"].endswith("Ki")
    assert hostinfo.disk_pressure(str(tmp_path)) in (True, False)
    assert not hostinfo.disk_pressure(str(tmp_path / "nowhere"))
    release = tmp_path / "os-release"
    release.write_text('NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n')
    assert hostinfo.os_image(str(release)) == "Debian GNU/Linux 12 (bookworm)"


def test_node_status_tells_the_images_and_the_pressure() -> None:
    config = node.NodeConfig(name="n1", address="192.0.2.1", pod_cidr="10.244.1.0/24",
                             runtime="docker://20.10", os_image="Debian 12")
    facts = node.NodeFacts(images=({"names": ["busybox:1.36"], "sizeBytes": 2},),
                           pressure=frozenset({"DiskPressure"}))
    status = node.node_status(None, config, T0, facts)
    assert status["images"] == [{"names": ["busybox:1.36"], "sizeBytes": 2}]
    assert status["nodeInfo"]["osImage"] == "Debian 12"
    assert status["nodeInfo"]["containerRuntimeVersion"] == "docker://20.10"
    by_type = {c["type"]: c for c in status["conditions"]}
    assert (by_type["DiskPressure"]["status"], by_type["DiskPressure"]["reason"]) == \
        ("True", "KubeletHasDiskPressure")
    assert by_type["MemoryPressure"]["status"] == "False"
    assert by_type["Ready"]["status"] == "True"
    plain = node.node_status(None, config, T0)
    assert "images" not in plain


async def test_hooks_exec_and_http_get() -> None:
    calls: list[Sequence[str]] = []

    async def exec_(command: Sequence[str], timeout: float) -> rt.ExecResult:
        calls.append(command)
        return rt.ExecResult(0 if command[0] == "true" else 2, b"oops\n")

    await hooks.run({"exec": {"command": ["true"]}}, exec_=exec_, pod_ip="", timeout=1)
    with pytest.raises(hooks.HookFailure, match="exited with 2: oops"):
        await hooks.run({"exec": {"command": ["false"]}}, exec_=exec_, pod_ip="", timeout=1)
    seen: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        seen.append(line)
        code = b"500" if b"/bad" in line else b"200"
        writer.write(b"HTTP/1.1 " + code + b" X\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await hooks.run({"httpGet": {"port": port, "path": "quit"}}, exec_=exec_,
                        pod_ip="127.0.0.1", timeout=5)
        with pytest.raises(hooks.HookFailure, match="HTTP 500"):
            await hooks.run({"httpGet": {"port": port, "path": "/bad"}}, exec_=exec_,
                            pod_ip="127.0.0.1", timeout=5)
    finally:
        server.close()
        await server.wait_closed()
    assert seen[0] == b"GET /quit HTTP/1.1\r\n"
    with pytest.raises(hooks.HookFailure):
        await hooks.run({"httpGet": {"port": port}}, exec_=exec_, pod_ip="127.0.0.1",
                        timeout=5)  # nobody listens any more
    with pytest.raises(hooks.HookFailure, match="did not finish within"):
        await hooks.run({"sleep": {"seconds": 5}}, exec_=exec_, pod_ip="", timeout=0.1)
    with pytest.raises(hooks.HookFailure, match="no exec, httpGet"):
        await hooks.run({}, exec_=exec_, pod_ip="", timeout=1)
