"""Pod volumes on the host: what configMap, secret, downwardAPI and projected volumes
hold (pure tables), the atomic writer against a temporary directory (the `..data` swap,
modes, items, updates), hostPath checks, the size of a memory emptyDir and what happens
when it cannot be mounted (the mount itself is a fake here; tests/docker mounts real
ones), the last files kept when a source goes, and the mounts of a container."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from raftkube.agent import mounts, podenv, volumes
from raftkube.agent import runtime as rt
from raftkube.agent.volumes import File, VolumeError
from raftkube.api import references
from tests.unit.test_agent_podenv import b64, cm, secret

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
CM = references.CONFIGMAPS
SECRET = references.SECRETS


def pod(*vols: Obj, mounts: list[Obj] | None = None, uid: str = "u-1") -> Obj:
    return {"metadata": {"name": "web-1", "namespace": "shop", "uid": uid,
                         "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "volumes": list(vols),
                     "containers": [{"name": "c", "image": "busybox",
                                     "volumeMounts": mounts or [],
                                     "resources": {"limits": {"memory": "64Mi"}}}]}}


def srcs(**objs: Obj | None) -> podenv.Sources:
    found: dict[tuple[str, str], Obj | None] = {}
    for key, obj in objs.items():
        plural, _, name = key.partition("__")
        found[({"cm": CM, "secret": SECRET}[plural], name)] = obj
    return podenv.Sources(objects=found, host_ip="192.0.2.10", pod_ips=("10.244.1.7",),
                          allocatable={"cpu": "4", "memory": "8Gi"})


def files(p: Payload) -> dict[str, tuple[str, str]]:
    return {k: (f.data.decode(), oct(f.mode)) for k, f in p.items()}


Payload = volumes.Payload


# ---- payloads ------------------------------------------------------------------------


def test_a_configmap_volume_holds_every_key_with_the_default_mode() -> None:
    c = {**cm("cfg", a="1", b="2"), "binaryData": {"bin": b64("\x00\x01")}}
    got = volumes.payload(pod(), {"name": "v", "configMap": {"name": "cfg",
                                                              "defaultMode": 0o440}},
                          srcs(cm__cfg=c))
    assert got is not None
    assert files(got) == {"a": ("1", "0o440"), "b": ("2", "0o440"), "bin": ("\x00\x01", "0o440")}


def test_items_pick_keys_paths_and_modes() -> None:
    vol = {"name": "v", "configMap": {"name": "cfg", "items": [
        {"key": "a", "path": "conf/a.ini", "mode": 0o600}, {"key": "b", "path": "b.txt"}]}}
    got = volumes.payload(pod(), vol, srcs(cm__cfg=cm("cfg", a="1", b="2", c="3")))
    assert got is not None
    assert files(got) == {"conf/a.ini": ("1", "0o600"), "b.txt": ("2", "0o644")}


@pytest.mark.parametrize(("vol", "s", "message"), [
    ({"name": "v", "configMap": {"name": "cfg"}}, srcs(cm__cfg=None),
     'MountVolume.SetUp failed for volume "v" : configmap "cfg" not found'),
    ({"name": "v", "secret": {"secretName": "pw"}}, srcs(secret__pw=None),
     'MountVolume.SetUp failed for volume "v" : secret "pw" not found'),
    ({"name": "v", "configMap": {"name": "cfg", "items": [{"key": "zz", "path": "z"}]}},
     srcs(cm__cfg=cm("cfg", a="1")),
     'MountVolume.SetUp failed for volume "v" : configmap references non-existent config '
     'key: zz'),
    ({"name": "v", "secret": {"secretName": "pw", "items": [{"key": "zz", "path": "z"}]}},
     srcs(secret__pw=secret("pw", a="1")),
     'MountVolume.SetUp failed for volume "v" : secret references non-existent secret '
     'key: zz'),
])
def test_missing_objects_and_keys_fail_the_mount(vol: Obj, s: podenv.Sources,
                                                 message: str) -> None:
    with pytest.raises(VolumeError) as e:
        volumes.payload(pod(), vol, s)
    assert str(e.value) == message


def test_optional_missing_objects_and_keys_give_what_there_is() -> None:
    assert volumes.payload(pod(), {"name": "v", "configMap": {"name": "cfg",
                                                               "optional": True}},
                           srcs(cm__cfg=None)) == {}
    vol = {"name": "v", "secret": {"secretName": "pw", "optional": True,
                                   "items": [{"key": "zz", "path": "z"},
                                             {"key": "a", "path": "a"}]}}
    got = volumes.payload(pod(), vol, srcs(secret__pw=secret("pw", a="x")))
    assert got is not None and files(got) == {"a": ("x", "0o644")}


def test_downward_api_files() -> None:
    vol = {"name": "v", "downwardAPI": {"defaultMode": 0o400, "items": [
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}, "mode": 0o444},
        {"path": "mem", "resourceFieldRef": {"containerName": "c",
                                              "resource": "limits.memory", "divisor": "1Mi"}}]}}
    got = volumes.payload(pod(), vol, srcs())
    assert got is not None
    assert files(got) == {"name": ("web-1", "0o400"), "labels": ('app="web"', "0o444"),
                          "mem": ("64", "0o400")}


def test_projected_sources_share_one_directory() -> None:
    vol = {"name": "v", "projected": {"defaultMode": 0o440, "sources": [
        {"configMap": {"name": "cfg", "items": [{"key": "a", "path": "cfg/a"}]}},
        {"secret": {"name": "pw"}},
        {"downwardAPI": {"items": [{"path": "ns",
                                    "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}
    got = volumes.payload(pod(), vol, srcs(cm__cfg=cm("cfg", a="1"),
                                           secret__pw=secret("pw", token="t")))
    assert got is not None
    assert files(got) == {"cfg/a": ("1", "0o440"), "token": ("t", "0o440"),
                          "ns": ("shop", "0o440")}


def test_other_volumes_have_no_payload() -> None:
    assert volumes.payload(pod(), {"name": "v", "emptyDir": {}}, srcs()) is None


# ---- the atomic writer ---------------------------------------------------------------


def test_the_writer_swaps_a_timestamped_directory_behind_symlinks(tmp_path: Path) -> None:
    target = str(tmp_path / "v")
    assert volumes.write_atomically(target, {"a": File(b"1", 0o644),
                                             "dir/b": File(b"2", 0o600)}, clock=lambda: 0.0)
    assert os.readlink(os.path.join(target, "a")) == "..data/a"
    assert os.readlink(os.path.join(target, "dir")) == "..data/dir"
    data = os.readlink(os.path.join(target, "..data"))
    assert data.startswith("..1970_01_01_00_00_00.")
    assert Path(os.path.join(target, "a")).read_text() == "1"
    assert Path(os.path.join(target, "dir", "b")).read_text() == "2"
    assert stat.S_IMODE(os.stat(os.path.join(target, "dir", "b")).st_mode) == 0o600
    # The same payload again: nothing is written.
    assert not volumes.write_atomically(target, {"a": File(b"1", 0o644),
                                                 "dir/b": File(b"2", 0o600)})
    assert os.readlink(os.path.join(target, "..data")) == data


def test_an_update_swaps_everything_at_once_and_removes_what_went(tmp_path: Path) -> None:
    target = str(tmp_path / "v")
    volumes.write_atomically(target, {"a": File(b"1", 0o644), "gone": File(b"x", 0o644)})
    first = os.readlink(os.path.join(target, "..data"))
    # A process that opened the directory before keeps seeing it through the old name.
    held = os.open(target, os.O_RDONLY)
    try:
        assert volumes.write_atomically(target, {"a": File(b"2", 0o644),
                                                 "new": File(b"n", 0o644)})
    finally:
        os.close(held)
    second = os.readlink(os.path.join(target, "..data"))
    assert second != first
    assert not os.path.exists(os.path.join(target, first))  # the old data went
    assert sorted(os.listdir(target)) == sorted(["..data", second, "a", "new"])
    assert Path(os.path.join(target, "a")).read_text() == "2"
    # A mode change alone is an update too.
    assert volumes.write_atomically(target, {"a": File(b"2", 0o600), "new": File(b"n", 0o644)})
    assert stat.S_IMODE(os.stat(os.path.join(target, "a")).st_mode) == 0o600


@pytest.mark.parametrize("path", ["/abs", "../up", "a/../b", "..hidden", ""])
def test_unsafe_paths_are_refused(tmp_path: Path, path: str) -> None:
    with pytest.raises(ValueError):
        volumes.write_atomically(str(tmp_path / "v"), {path: File(b"x", 0o644)})


# ---- the manager ---------------------------------------------------------------------


class FakeMount:
    """Records the tmpfs mounts asked for; `refuse` makes them fail as the kernel would
    for an agent that is not root."""

    def __init__(self, refuse: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.refuse = refuse

    def __call__(self, path: str, size: int) -> None:
        if self.refuse is not None:
            raise OSError(self.refuse, os.strerror(self.refuse))
        self.calls.append((path, size))


def manager(root: Path, mount: FakeMount | None = None) -> volumes.VolumeManager:
    return volumes.VolumeManager(str(root), mount=mount or FakeMount())


def set_up(m: volumes.VolumeManager, p: Obj, s: podenv.Sources) -> dict[str, Any]:
    got = m.setup(p, s)
    assert got.kept == ()
    return dict(got.volumes)


def test_setup_makes_each_kind_of_volume(tmp_path: Path) -> None:
    mount = FakeMount()
    m = manager(tmp_path / "root", mount)
    host_dir = tmp_path / "made"
    p = pod({"name": "scratch", "emptyDir": {}},
            {"name": "mem", "emptyDir": {"medium": "Memory"}},
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "host", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}})
    got = set_up(m, p, srcs(cm__cfg=cm("cfg", k="v")))
    scratch = str(tmp_path / "root" / "pods" / "u-1" / "volumes" / "scratch")
    assert got["scratch"] == volumes.HostVolume(scratch)
    assert stat.S_IMODE(os.stat(scratch).st_mode) == 0o777
    # One tmpfs for the pod, on its directory; sized by the pod's memory limit (64Mi).
    mem = m.volume_dir("u-1", "mem")
    assert got["mem"] == volumes.HostVolume(mem) and os.path.isdir(mem)
    assert mount.calls == [(mem, 64 * 2**20)]
    assert got["cfg"].read_only and Path(str(got["cfg"].path), "k").read_text() == "v"
    assert got["host"] == volumes.HostVolume(str(host_dir)) and host_dir.is_dir()
    # A second setup keeps the emptyDir's contents and updates the ConfigMap's files.
    Path(scratch, "keep").write_text("x")
    set_up(m, p, srcs(cm__cfg=cm("cfg", k="w")))
    assert Path(scratch, "keep").read_text() == "x"
    assert Path(str(got["cfg"].path), "k").read_text() == "w"
    assert m.pod_uids() == ["u-1"]
    m.remove("u-1")
    assert m.pod_uids() == [] and host_dir.is_dir()  # a hostPath is the host's


def test_one_failing_volume_does_not_stop_the_others(tmp_path: Path) -> None:
    m = manager(tmp_path)
    p = pod({"name": "bad", "configMap": {"name": "nope"}}, {"name": "ok", "emptyDir": {}})
    with pytest.raises(VolumeError, match='volume "bad"'):
        m.setup(p, srcs(cm__nope=None))
    assert os.path.isdir(m.volume_dir("u-1", "ok"))


@pytest.mark.parametrize(("kind", "make", "message"), [
    ("Directory", None, "hostPath type check failed: {p} is not a directory"),
    ("Directory", "file", "hostPath type check failed: {p} is not a directory"),
    ("File", "dir", "hostPath type check failed: {p} is not a file"),
    ("Socket", "file", "hostPath type check failed: {p} is not a socket file"),
    ("CharDevice", "file", "hostPath type check failed: {p} is not a character device"),
    ("BlockDevice", "file", "hostPath type check failed: {p} is not a block device"),
    ("Bogus", "file", "Bogus is an invalid volume type"),
])
def test_host_path_types_are_checked(tmp_path: Path, kind: str, make: str | None,
                                     message: str) -> None:
    p = tmp_path / "thing"
    if make == "file":
        p.write_text("")
    elif make == "dir":
        p.mkdir()
    with pytest.raises(ValueError) as e:
        volumes.check_host_path(str(p), kind)
    assert str(e.value) == message.format(p=p)


def test_host_paths_that_are_what_they_should_be_pass(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    volumes.check_host_path(str(tmp_path / "f"), "File")
    volumes.check_host_path(str(tmp_path), "Directory")
    volumes.check_host_path("/dev/null", "CharDevice")
    volumes.check_host_path(str(tmp_path / "nothing"), "")
    volumes.check_host_path(str(tmp_path / "new"), "FileOrCreate")
    assert (tmp_path / "new").is_file()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tmp_path / "sock"))
        volumes.check_host_path(str(tmp_path / "sock"), "Socket")


# ---- mounts --------------------------------------------------------------------------


def test_mounts_resolve_to_host_paths_with_read_only_and_sub_paths(tmp_path: Path) -> None:
    m = manager(tmp_path)
    mounts = [{"name": "scratch", "mountPath": "/data"},
              {"name": "scratch", "mountPath": "/logs", "subPath": "logs", "readOnly": True},
              {"name": "scratch", "mountPath": "/mine", "subPathExpr": "by/$(POD)"},
              {"name": "cfg", "mountPath": "/etc/app"},
              {"name": "cfg", "mountPath": "/etc/app.ini", "subPath": "app.ini"},
              {"name": "mem", "mountPath": "/cache"},
              {"name": "mem", "mountPath": "/tmp/mine", "subPath": "mine"}]
    p = pod({"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}},
            {"name": "mem", "emptyDir": {"medium": "Memory"}}, mounts=mounts)
    vols = set_up(m, p, srcs(cm__c=cm("c", **{"app.ini": "x=1"})))
    got = volumes.mounts(p, p["spec"]["containers"][0], vols, {"POD": "web-1"})
    scratch = m.volume_dir("u-1", "scratch")
    cfg = m.volume_dir("u-1", "cfg")
    data = os.readlink(os.path.join(cfg, "..data"))
    assert got == (
        rt.Mount("/data", scratch),
        rt.Mount("/logs", os.path.join(scratch, "logs"), read_only=True),
        rt.Mount("/mine", os.path.join(scratch, "by", "web-1")),
        rt.Mount("/etc/app", cfg, read_only=True),
        # A subPath of a ConfigMap volume is the file itself (as in Kubernetes, it is not
        # updated when the ConfigMap changes).
        rt.Mount("/etc/app.ini", os.path.join(cfg, data, "app.ini"), read_only=True),
        # A memory emptyDir is the pod's tmpfs, bound like any directory (subPath too).
        rt.Mount("/cache", m.volume_dir("u-1", "mem")),
        rt.Mount("/tmp/mine", os.path.join(m.volume_dir("u-1", "mem"), "mine")))
    assert os.path.isdir(os.path.join(scratch, "logs"))  # made, as Kubernetes does


def test_sub_paths_that_leave_the_volume_are_refused(tmp_path: Path) -> None:
    m = manager(tmp_path)
    p = pod({"name": "v", "emptyDir": {}},
            mounts=[{"name": "v", "mountPath": "/x", "subPath": "link"}])
    vols = set_up(m, p, srcs())
    os.symlink("/etc", os.path.join(m.volume_dir("u-1", "v"), "link"))
    with pytest.raises(podenv.ConfigError) as e:
        volumes.mounts(p, p["spec"]["containers"][0], vols, {})
    assert str(e.value) == 'failed to prepare subPath for volumeMount "v" of container "c"'


def test_a_sub_path_expr_with_an_unset_variable_is_refused(tmp_path: Path) -> None:
    m = manager(tmp_path)
    p = pod({"name": "v", "emptyDir": {}},
            mounts=[{"name": "v", "mountPath": "/x", "subPathExpr": "$(A)/$(B)"}])
    with pytest.raises(podenv.ConfigError, match="missing value for A, B"):
        volumes.mounts(p, p["spec"]["containers"][0], set_up(m, p, srcs()), {"A": ""})


def test_a_mount_of_a_volume_that_is_not_there_is_refused() -> None:
    p = pod(mounts=[{"name": "nope", "mountPath": "/x"}])
    with pytest.raises(podenv.ConfigError) as e:
        volumes.mounts(p, p["spec"]["containers"][0], {}, {})
    assert str(e.value) == 'cannot find volume "nope" to mount into container "c"'


def test_an_unchanged_volume_is_not_read_back_but_a_lost_one_is_rewritten(
        tmp_path: Path) -> None:
    m = manager(tmp_path)
    p = pod({"name": "cfg", "configMap": {"name": "c"}})
    s = srcs(cm__c=cm("c", k="v"))
    target = set_up(m, p, s)["cfg"].path
    data = os.readlink(os.path.join(target, "..data"))
    set_up(m, p, s)
    assert os.readlink(os.path.join(target, "..data")) == data  # nothing written
    # Its directory went behind the manager's back (a cleanup, a crash): written again.
    shutil.rmtree(target)
    set_up(m, p, s)
    assert Path(target, "k").read_text() == "v"


# ---- memory-backed emptyDir ------------------------------------------------------------


def mem_pod(size_limit: str | None, *limits: str | None) -> tuple[Obj, Obj]:
    volume: Obj = {"name": "mem", "emptyDir": {"medium": "Memory"}}
    if size_limit is not None:
        volume["emptyDir"]["sizeLimit"] = size_limit
    containers = [{"name": f"c{i}", "image": "busybox",
                   "resources": {"limits": {"memory": x}} if x else {}}
                  for i, x in enumerate(limits)]
    return {"metadata": {"uid": "u"}, "spec": {"volumes": [volume],
                                               "containers": containers}}, volume


@pytest.mark.parametrize(("size_limit", "limits", "node", "want"), [
    ("16Mi", ["64Mi"], "8Gi", 16 * 2**20),            # sizeLimit under everything
    ("1Gi", ["64Mi", "32Mi"], "8Gi", 96 * 2**20),     # the pod's limit, all containers'
    (None, ["64Mi", None], "8Gi", 8 * 2**30),         # one unlimited: the node's
    (None, [None], "512Mi", 512 * 2**20),             # no sizeLimit: the node's
    ("100M", [None], "8Gi", 100_000_000),
])
def test_a_memory_empty_dir_is_sized_as_the_kubelet_sizes_it(
        size_limit: str | None, limits: list[str | None], node: str, want: int) -> None:
    p, v = mem_pod(size_limit, *limits)
    assert volumes.memory_size(p, v, {"memory": node}) == want


def test_without_a_node_memory_the_host_memory_is_the_cap() -> None:
    p, v = mem_pod(None, None)
    host = volumes.host_memory()
    assert host is not None and volumes.memory_size(p, v, {}) == host


def test_a_bad_size_limit_is_a_failed_mount_naming_the_field(tmp_path: Path) -> None:
    p, _ = mem_pod("lots", None)
    with pytest.raises(VolumeError) as e:
        manager(tmp_path).setup(p, srcs())
    assert str(e.value) == ('MountVolume.SetUp failed for volume "mem" : '
                            "volumes[mem].emptyDir.sizeLimit: 'lots' is not a quantity")


def test_an_agent_that_may_not_mount_fails_the_volume_and_does_not_fall_back(
        tmp_path: Path) -> None:
    p, _ = mem_pod("1Mi", None)
    with pytest.raises(VolumeError) as e:
        manager(tmp_path, FakeMount(refuse=errno.EPERM)).setup(p, srcs())
    message = str(e.value)
    assert message.startswith('MountVolume.SetUp failed for volume "mem" : mounting a '
                              "tmpfs of 1048576 bytes on ")
    assert "Operation not permitted" in message and "root or CAP_SYS_ADMIN" in message


def test_the_simulated_runtime_gets_a_plain_directory(tmp_path: Path) -> None:
    mount = FakeMount()
    m = volumes.VolumeManager(str(tmp_path), memory=False, mount=mount)
    p, _ = mem_pod("1Mi", None)
    assert set_up(m, p, srcs())["mem"].path == m.volume_dir("u", "mem")
    assert mount.calls == []


def test_mount_points_are_read_from_the_mount_table_deepest_first(tmp_path: Path) -> None:
    top = tmp_path / "agents"
    table = tmp_path / "mounts"
    table.write_text(
        f"raftkube-emptydir {top}/pods/u/volumes/a tmpfs rw 0 0\n"
        f"raftkube-emptydir {top}/pods/u/volumes/a/deeper tmpfs rw 0 0\n"
        f"raftkube-emptydir {top}/pods/u/volumes/with\\040space tmpfs rw 0 0\n"
        f"tmpfs {top}-other tmpfs rw 0 0\n"
        "proc /proc proc rw 0 0\n")
    assert mounts.mounts_under(str(top), table=str(table)) == [
        f"{top}/pods/u/volumes/a/deeper", f"{top}/pods/u/volumes/a",
        f"{top}/pods/u/volumes/with space"]


# ---- a source that goes --------------------------------------------------------------


def test_a_volume_keeps_its_last_files_when_its_source_goes(tmp_path: Path) -> None:
    m = manager(tmp_path)
    p = pod({"name": "cfg", "configMap": {"name": "c"}}, {"name": "s", "emptyDir": {}})
    target = set_up(m, p, srcs(cm__c=cm("c", k="v")))["cfg"].path
    got = m.setup(p, srcs(cm__c=None))  # deleted while the pod runs
    assert got.volumes["cfg"] == volumes.HostVolume(target, read_only=True)
    assert [str(e) for e in got.kept] == [
        'MountVolume.SetUp failed for volume "cfg" : configmap "c" not found']
    assert Path(target, "k").read_text() == "v"
    # It comes back: its files follow it, and nothing is kept any more.
    assert Path(set_up(m, p, srcs(cm__c=cm("c", k="w")))["cfg"].path, "k").read_text() == "w"


def test_a_new_pod_whose_source_is_missing_waits(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.setup(pod({"name": "cfg", "configMap": {"name": "c"}}, uid="old"),
            srcs(cm__c=cm("c", k="v")))
    with pytest.raises(VolumeError, match='configmap "c" not found'):
        m.setup(pod({"name": "cfg", "configMap": {"name": "c"}}, uid="new"),
                srcs(cm__c=None))


def test_the_kernel_refusing_the_mount_is_a_clear_failed_mount() -> None:
    # The real mount(2), in a child process that is not root (uid nobody, when the test
    # runs as root): the kernel's EPERM comes out as the volume's FailedMount.
    top = tempfile.mkdtemp(prefix="rk-nomount-", dir="/tmp")  # reachable by nobody
    os.chmod(top, 0o777)
    script = (
        "import sys, os\n"
        "from raftkube.agent import podenv, volumes\n"
        "if os.geteuid() == 0: os.setgid(65534); os.setgroups([]); os.setuid(65534)\n"
        "p = {'metadata': {'uid': 'u'}, 'spec': {'containers': [], 'volumes': [\n"
        "    {'name': 'mem', 'emptyDir': {'medium': 'Memory', 'sizeLimit': '1Mi'}}]}}\n"
        "try:\n"
        "    volumes.VolumeManager(sys.argv[1]).setup(p, podenv.Sources(objects={}))\n"
        "except volumes.VolumeError as e:\n"
        "    print(e)\n")
    try:
        out = subprocess.run([sys.executable, "-c", script, os.path.join(top, "root")],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith('MountVolume.SetUp failed for volume "mem" : mounting '
                                     "a tmpfs of 1048576 bytes on "), out.stdout
        assert "Operation not permitted (the agent runs as uid" in out.stdout
        assert not mounts.mounts_under(top)
    finally:
        mounts.unmount_under(top)
        shutil.rmtree(top, ignore_errors=True)
