"""A pod's volumes on the node, and its containers' mounts of them.

Every pod with volumes gets a directory under the agent's root, `ROOT/pods/UID/volumes/
NAME` for each volume the node makes itself:

- emptyDir: an empty directory (mode 0777, as Kubernetes makes it, so that a container
  running as any user can write), shared by every container of the pod that mounts it.
  With `medium: Memory` that directory is a tmpfs the agent mounts itself (`mount(2)`,
  its size the volume's sizeLimit, capped by the pod's memory limit and the node's
  allocatable memory, as the kubelet sizes it): one per pod, so every container sees
  the same files, and they outlive container restarts. It is unmounted when the pod's
  directory is removed (`remove`, also for orphans found after a crash of the agent,
  and `mounts.unmount_under` for `rk down`). An agent that may not mount (not root) fails the
  volume with FailedMount, never falling back to disk: the pod asked for memory;
- configMap, secret, downwardAPI and projected: files written by `write_atomically`, the
  kubelet's AtomicWriter: the data lives in a timestamped directory, `..data` is a
  symlink to it, and each name the user sees is a symlink through `..data`. An update
  writes a new timestamped directory and swaps `..data` with one rename, so a container
  that has the volume mounted sees either the old files or the new ones, never a mix,
  and sees the new ones without a restart. These volumes are always mounted read-only;
- hostPath: the host's path itself, after the checks its `type` asks for
  (DirectoryOrCreate makes a directory, FileOrCreate an empty file, Directory, File,
  Socket, CharDevice and BlockDevice check what is there).

What the files hold is computed by the pure `payload()`; writing compares it with what
is on disk first, so calling `setup` on every sync of a pod costs reads and no writes
while nothing changed. A volume that cannot be set up (a ConfigMap that does not exist
and is not optional) is a `VolumeError`: the kubelet tells it as `FailedMount` and starts
nothing of the pod until it can. A volume that was set up before keeps its last files
when its source goes (the ConfigMap is deleted while the pod runs), as Kubernetes keeps
a mounted volume: the error is told (`SetUp.kept`) and the pod's containers still
restart. `remove(uid)` deletes the pod's directory once its containers are gone.
"""

from __future__ import annotations

import base64
import binascii
import errno
import logging
import math
import os
import posixpath
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from raftkube.agent import mounts as mnt
from raftkube.agent import podenv
from raftkube.agent import runtime as rt
from raftkube.api import quantity

log = logging.getLogger(__name__)

Obj = dict[str, Any]

DATA = "..data"
DATA_TMP = "..data_tmp"
DEFAULT_MODE = 0o644
API_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")  # always read-only


class VolumeError(Exception):
    """A volume that cannot be set up now; the message reads as Kubernetes' FailedMount
    event: `MountVolume.SetUp failed for volume "config" : configmap "x" not found`."""

    def __init__(self, volume: str, message: str) -> None:
        super().__init__(f'MountVolume.SetUp failed for volume "{volume}" : {message}')
        self.volume = volume


@dataclass(frozen=True)
class File:
    data: bytes
    mode: int


Payload = dict[str, File]


@dataclass(frozen=True)
class HostVolume:
    """A volume as it is on this node: a host path that containers bind-mount."""

    path: str
    read_only: bool = False  # mounted read-only whatever the volumeMount says


@dataclass(frozen=True)
class SetUp:
    """A pod's volumes on the host, and the errors of those that kept their last files
    because their source cannot be read now (told as FailedMount; the pod runs on)."""

    volumes: dict[str, HostVolume]
    kept: tuple[VolumeError, ...] = ()


# ---- what the files hold (pure) -------------------------------------------------------


def _mode(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _config_map_files(cm: Obj) -> dict[str, bytes]:
    files = {k: v.encode() for k, v in podenv.config_map_data(cm).items()}
    binary = cm.get("binaryData")
    if isinstance(binary, dict):
        for k, v in binary.items():
            try:
                files[str(k)] = base64.b64decode(str(v), validate=True)
            except (binascii.Error, ValueError):
                files[str(k)] = str(v).encode()
    return files


def _keyed(source: Obj, *, what: str, name: str, found: Obj | None,
           files: Callable[[Obj], dict[str, bytes]], default_mode: int,
           volume: str) -> Payload:
    """The files of a configMap or secret source: every key, or its `items`."""
    optional = source.get("optional") is True
    if found is None:
        if optional:
            return {}
        raise VolumeError(volume, f'{what} "{name}" not found')
    data = files(found)
    items = [i for i in source.get("items") or [] if isinstance(i, dict)]
    if not items:
        return {k: File(v, default_mode) for k, v in data.items()}
    out: Payload = {}
    for item in items:
        key, path = str(item.get("key") or ""), str(item.get("path") or "")
        if key not in data:
            if optional:
                continue
            noun = "config" if what == "configmap" else "secret"
            raise VolumeError(volume, f"{what} references non-existent {noun} key: {key}")
        out[path] = File(data[key], _mode(item.get("mode"), default_mode))
    return out


def _downward(pod: Obj, source: Obj, sources: podenv.Sources, *, default_mode: int,
              volume: str) -> Payload:
    containers = {c.get("name"): c for c in (pod.get("spec") or {}).get("containers") or []
                  if isinstance(c, dict)}
    out: Payload = {}
    for item in source.get("items") or []:
        if not isinstance(item, dict):
            continue
        path = posixpath.normpath(str(item.get("path") or ""))
        try:
            if isinstance(item.get("fieldRef"), dict):
                value = podenv.field_value(pod, str(item["fieldRef"].get("fieldPath") or ""),
                                           host_ip=sources.host_ip, pod_ips=sources.pod_ips)
            elif isinstance(item.get("resourceFieldRef"), dict):
                ref = item["resourceFieldRef"]
                container = containers.get(ref.get("containerName"))
                if container is None:
                    raise podenv.ConfigError(
                        f"container {ref.get('containerName')} not found")
                value = podenv.resource_value(ref, container, allocatable=sources.allocatable)
            else:
                continue
        except podenv.ConfigError as e:
            raise VolumeError(volume, str(e)) from None
        out[path] = File(value.encode(), _mode(item.get("mode"), default_mode))
    return out


def payload(pod: Obj, volume: Obj, sources: podenv.Sources) -> Payload | None:
    """The files of a configMap, secret, downwardAPI or projected volume (None for any
    other kind of volume); VolumeError if they cannot be made now."""
    name = str(volume.get("name") or "")
    if isinstance(volume.get("configMap"), dict):
        s = volume["configMap"]
        ref = str(s.get("name") or "")
        return _keyed(s, what="configmap", name=ref, found=sources.config_map(ref),
                      files=_config_map_files, volume=name,
                      default_mode=_mode(s.get("defaultMode"), DEFAULT_MODE))
    if isinstance(volume.get("secret"), dict):
        s = volume["secret"]
        ref = str(s.get("secretName") or "")
        return _keyed(s, what="secret", name=ref, found=sources.secret(ref),
                      files=podenv.secret_data, volume=name,
                      default_mode=_mode(s.get("defaultMode"), DEFAULT_MODE))
    if isinstance(volume.get("downwardAPI"), dict):
        s = volume["downwardAPI"]
        return _downward(pod, s, sources, volume=name,
                         default_mode=_mode(s.get("defaultMode"), DEFAULT_MODE))
    if isinstance(volume.get("projected"), dict):
        return _projected(pod, volume["projected"], sources, volume=name)
    return None


def _projected(pod: Obj, projected: Obj, sources: podenv.Sources, *, volume: str) -> Payload:
    default_mode = _mode(projected.get("defaultMode"), DEFAULT_MODE)
    out: Payload = {}
    for source in projected.get("sources") or []:
        if not isinstance(source, dict):
            continue
        if isinstance(source.get("configMap"), dict):
            s = source["configMap"]
            ref = str(s.get("name") or "")
            out.update(_keyed(s, what="configmap", name=ref, found=sources.config_map(ref),
                              files=_config_map_files, default_mode=default_mode,
                              volume=volume))
        elif isinstance(source.get("secret"), dict):
            s = source["secret"]
            ref = str(s.get("name") or "")
            out.update(_keyed(s, what="secret", name=ref, found=sources.secret(ref),
                              files=podenv.secret_data, default_mode=default_mode,
                              volume=volume))
        elif isinstance(source.get("downwardAPI"), dict):
            out.update(_downward(pod, source["downwardAPI"], sources,
                                 default_mode=default_mode, volume=volume))
        else:
            kinds = ", ".join(sorted(source)) or "an empty source"
            raise VolumeError(volume, f"projected source {kinds} is not supported")
    return out


def check_paths(files: Mapping[str, File]) -> str | None:
    """Why a payload's paths cannot be written (absolute, `..`, a name starting with
    `..`, which the writer keeps for itself), or None."""
    for path in files:
        if not path or path.startswith("/"):
            return f"invalid path {path!r}: must be a relative path"
        parts = path.split("/")
        if ".." in parts:
            return f"invalid path {path!r}: must not contain '..'"
        if parts[0].startswith(".."):
            return f"invalid path {path!r}: must not start with '..'"
    return None


# ---- the atomic writer ---------------------------------------------------------------


def _read_tree(top: str) -> Payload:
    out: Payload = {}
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            full = os.path.join(dirpath, f)
            with open(full, "rb") as fh:
                data = fh.read()
            out[os.path.relpath(full, top)] = File(data, stat.S_IMODE(os.lstat(full).st_mode))
    return out


def _top(path: str) -> str:
    return path.split("/", 1)[0]


def write_atomically(target: str, files: Mapping[str, File], *,
                     clock: Callable[[], float] = time.time) -> bool:
    """Make `target` hold exactly `files` (paths relative to it), swapping the whole set
    at once; False if it held them already. Kubernetes' AtomicWriter algorithm."""
    problem = check_paths(files)
    if problem is not None:
        raise ValueError(problem)
    files = {posixpath.normpath(p): f for p, f in files.items()}
    os.makedirs(target, mode=0o755, exist_ok=True)
    data_link = os.path.join(target, DATA)
    old_dir = os.readlink(data_link) if os.path.islink(data_link) else None
    old: Payload = {}
    if old_dir is not None and os.path.isdir(os.path.join(target, old_dir)):
        old = _read_tree(os.path.join(target, old_dir))
        if old == dict(files):
            _link_visible(target, files)  # a crash may have left a name unlinked
            return False
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime(clock()))
    new_dir = tempfile.mkdtemp(prefix=stamp, dir=target)
    os.chmod(new_dir, 0o755)
    for path, f in files.items():
        full = os.path.join(new_dir, path)
        os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
        fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f.data)
            os.fchmod(fd, f.mode)
        finally:
            os.close(fd)
    tmp_link = os.path.join(target, DATA_TMP)
    if os.path.lexists(tmp_link):
        os.unlink(tmp_link)
    os.symlink(os.path.basename(new_dir), tmp_link)
    os.rename(tmp_link, data_link)  # the atomic step: every file changes at once
    _link_visible(target, files)
    visible = {_top(p) for p in files}
    for name in {_top(p) for p in old} - visible:
        path = os.path.join(target, name)
        if os.path.islink(path):
            os.unlink(path)
    if old_dir is not None and old_dir.startswith(".."):
        shutil.rmtree(os.path.join(target, old_dir), ignore_errors=True)
    return True


def _link_visible(target: str, files: Mapping[str, File]) -> None:
    """`name -> ..data/name` for each top-level name of the payload."""
    for name in {_top(p) for p in files}:
        path = os.path.join(target, name)
        want = os.path.join(DATA, name)
        if os.path.islink(path) and os.readlink(path) == want:
            continue
        tmp = os.path.join(target, f"..{name}.tmp")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(want, tmp)
        os.rename(tmp, path)


# ---- hostPath ----------------------------------------------------------------------------


def check_host_path(path: str, kind: str) -> None:
    """Kubernetes' hostPath type checks; ValueError with its message."""
    if kind == "":
        return
    exists = os.path.exists(path)
    if kind == "DirectoryOrCreate" and not exists:
        os.makedirs(path, mode=0o755, exist_ok=True)
        return
    if kind == "FileOrCreate" and not exists:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        except OSError as e:
            raise ValueError(f"hostPath type check failed: cannot create {path}: "
                             f"{e.strerror}") from None
        return
    checks = {"DirectoryOrCreate": (stat.S_ISDIR, "a directory"),
              "Directory": (stat.S_ISDIR, "a directory"),
              "FileOrCreate": (stat.S_ISREG, "a file"), "File": (stat.S_ISREG, "a file"),
              "Socket": (stat.S_ISSOCK, "a socket file"),
              "CharDevice": (stat.S_ISCHR, "a character device"),
              "BlockDevice": (stat.S_ISBLK, "a block device")}
    if kind not in checks:
        raise ValueError(f"{kind} is an invalid volume type")
    test, what = checks[kind]
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if not test(mode):
        raise ValueError(f"hostPath type check failed: {path} is not {what}")


# ---- memory-backed emptyDir -----------------------------------------------------------------


def _memory(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return math.ceil(quantity.parse_quantity(value))
    except (ValueError, TypeError, ArithmeticError):
        raise ValueError(f"{what}: {value!r} is not a quantity") from None


def host_memory() -> int | None:
    """The host's memory (MemTotal), or None if /proc/meminfo cannot be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_size(pod: Obj, volume: Obj, allocatable: Mapping[str, str]) -> int:
    """The size of a `medium: Memory` emptyDir's tmpfs, in bytes, as the kubelet sizes
    it: the least of its sizeLimit, the pod's memory limit (when every container has
    one: otherwise the pod may use the node's all) and the node's allocatable memory
    (the host's when the node does not say), those above zero (Kubernetes ignores a
    zero sizeLimit). ValueError naming a bad quantity."""
    name = str(volume.get("name") or "")
    candidates = []
    limit = _memory((volume.get("emptyDir") or {}).get("sizeLimit"),
                    f"volumes[{name}].emptyDir.sizeLimit")
    if limit is not None:
        candidates.append(limit)
    spec = pod.get("spec") or {}
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    limits = [_memory(((c.get("resources") or {}).get("limits") or {}).get("memory"),
                      f"containers[{c.get('name')}].resources.limits.memory")
              for c in containers]
    if containers and all(x is not None for x in limits):
        candidates.append(sum(x for x in limits if x is not None))
    node = _memory(allocatable.get("memory"), "the node's allocatable memory")
    node = node if node is not None else host_memory()
    if node is not None:
        candidates.append(node)
    candidates = [c for c in candidates if c > 0]  # a zero or negative limit: none
    size = min(candidates) if candidates else 0
    if size <= 0:
        raise ValueError(f"volumes[{name}].emptyDir: a tmpfs of {size} bytes cannot be "
                         "mounted")
    return size


# ---- the manager --------------------------------------------------------------------------


class VolumeManager:
    """The volumes of the pods of one node, under `root` (made when first needed).

    `memory` says how a `medium: Memory` emptyDir is made: True mounts a tmpfs with
    `mount` (the real one, `mount_tmpfs`, unless a test gives another); False makes it
    a plain directory, for the simulated runtime, whose pods run no process that could
    tell the difference and whose hundreds of hollow pods should not each mount one."""

    def __init__(self, root: str, *, clock: Callable[[], float] = time.time,
                 memory: bool = True,
                 mount: Callable[[str, int], None] = mnt.mount_tmpfs) -> None:
        self.root = root
        self.clock = clock
        self.memory = memory
        self.mount = mount
        # volume dir -> (its `..data` target, the files written there): a sync that
        # brings the same files costs one readlink instead of reading them all back.
        self._written: dict[str, tuple[str, Payload]] = {}

    def pod_dir(self, uid: str) -> str:
        if not uid or "/" in uid or uid.startswith("."):
            raise ValueError(f"metadata.uid: {uid!r} cannot name a directory")
        return os.path.join(self.root, "pods", uid)

    def volume_dir(self, uid: str, name: str) -> str:
        return os.path.join(self.pod_dir(uid), "volumes", name)

    def setup(self, pod: Obj, sources: podenv.Sources) -> SetUp:
        """Every volume of the pod, made or brought up to date on the host; the first
        VolumeError after trying all of them. A configMap, secret, downwardAPI or
        projected volume made before whose files cannot be made now keeps its last
        files: its error is in `kept`."""
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        out: dict[str, HostVolume] = {}
        kept: list[VolumeError] = []
        first: VolumeError | None = None
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            if not isinstance(volume, dict) or not volume.get("name"):
                continue
            try:
                out[volume["name"]] = self._one(pod, uid, volume, sources)
            except VolumeError as e:
                last = self._last_files(uid, volume)
                if last is not None:
                    out[volume["name"]] = last
                    kept.append(e)
                else:
                    first = first or e
        if first is not None:
            raise first
        return SetUp(out, tuple(kept))

    def _last_files(self, uid: str, volume: Obj) -> HostVolume | None:
        """The files an API volume was last set up with, if there are any."""
        if not any(isinstance(volume.get(k), dict) for k in API_VOLUMES):
            return None
        target = self.volume_dir(uid, str(volume["name"]))
        if not os.path.isdir(os.path.join(target, DATA)):
            return None
        return HostVolume(target, read_only=True)

    def _one(self, pod: Obj, uid: str, volume: Obj, sources: podenv.Sources) -> HostVolume:
        name = str(volume["name"])
        files = payload(pod, volume, sources)
        if files is not None:
            problem = check_paths(files)
            if problem is not None:
                raise VolumeError(name, problem)
            target = self.volume_dir(uid, name)
            try:
                if not self._unchanged(target, files):
                    self._ensure_root()
                    write_atomically(target, files, clock=self.clock)
                    self._written[target] = (os.readlink(os.path.join(target, DATA)), files)
            except OSError as e:
                raise VolumeError(name, f"writing its files failed: {e}") from None
            return HostVolume(target, read_only=True)
        if isinstance(volume.get("emptyDir"), dict):
            path = self.volume_dir(uid, name)
            memory = self.memory and volume["emptyDir"].get("medium") == "Memory"
            if memory and os.path.ismount(path):
                return HostVolume(path)  # mounted before (a restarted agent finds it so)
            try:
                if not os.path.isdir(path):
                    self._ensure_root()
                    os.makedirs(path, exist_ok=True)
                    os.chmod(path, 0o777)
            except OSError as e:
                raise VolumeError(name, f"making its directory failed: {e}") from None
            if memory:
                self._mount_memory(pod, volume, path, sources)
            return HostVolume(path)
        if isinstance(volume.get("hostPath"), dict):
            host = volume["hostPath"]
            path = str(host.get("path") or "")
            try:
                check_host_path(path, str(host.get("type") or ""))
            except (ValueError, OSError) as e:
                raise VolumeError(name, str(e)) from None
            return HostVolume(path)
        kinds = ", ".join(k for k in volume if k != "name") or "none"
        raise VolumeError(name, f"volume type {kinds} is not supported on this node")

    def _mount_memory(self, pod: Obj, volume: Obj, path: str,
                      sources: podenv.Sources) -> None:
        name = str(volume["name"])
        try:
            size = memory_size(pod, volume, sources.allocatable)
        except ValueError as e:
            raise VolumeError(name, str(e)) from None
        try:
            self.mount(path, size)
        except OSError as e:
            why = e.strerror or str(e)
            if e.errno in (errno.EPERM, errno.EACCES):
                why += (f" (the agent runs as uid {os.geteuid()}: a medium: Memory emptyDir "
                        "needs an agent that may mount, root or CAP_SYS_ADMIN)")
            raise VolumeError(name, f"mounting a tmpfs of {size} bytes on {path} failed: "
                                    f"{why}") from None

    def _unchanged(self, target: str, files: Payload) -> bool:
        known = self._written.get(target)
        if known is None or known[1] != files:
            return False
        try:
            return os.readlink(os.path.join(target, DATA)) == known[0]
        except OSError:
            return False

    def _ensure_root(self) -> None:
        if not os.path.isdir(self.root):
            os.makedirs(self.root, mode=0o700, exist_ok=True)

    def remove(self, uid: str) -> None:
        """The pod's directory and everything in it, its tmpfs unmounted first (its
        containers are gone). A mount that stays (the agent may not unmount it) keeps
        the directory: removing the files under it would empty a mount not ours to
        empty."""
        top = self.pod_dir(uid)
        left = mnt.unmount_under(top)
        if left:
            log.warning("pod %s: %s still mounted; its directory stays", uid,
                        ", ".join(left))
            return
        shutil.rmtree(top, ignore_errors=True)
        for target in [t for t in self._written if t.startswith(top + os.sep)]:
            del self._written[target]

    def pod_uids(self) -> list[str]:
        try:
            return sorted(os.listdir(os.path.join(self.root, "pods")))
        except OSError:
            return []


def mounts(pod: Obj, container: Obj, volumes: Mapping[str, HostVolume],
           env: Mapping[str, str]) -> tuple[rt.Mount, ...]:
    """The container's volumeMounts resolved to host paths; ConfigError (the container's
    CreateContainerConfigError) for one that cannot be: a volume that is not there, a
    subPath that leaves its volume, a subPathExpr naming a variable that is not set."""
    cname = str(container.get("name") or "")
    out: list[rt.Mount] = []
    for m in container.get("volumeMounts") or []:
        if not isinstance(m, dict):
            continue
        name, target = str(m.get("name") or ""), str(m.get("mountPath") or "")
        volume = volumes.get(name)
        if volume is None:
            raise podenv.ConfigError(
                f'cannot find volume "{name}" to mount into container "{cname}"')
        read_only = m.get("readOnly") is True or volume.read_only
        sub = str(m.get("subPath") or "")
        if not sub and m.get("subPathExpr"):
            sub = _sub_path_expr(str(m["subPathExpr"]), env)
        source = volume.path
        if sub:
            source = _sub_path(volume.path, sub, name=name, container=cname)
        out.append(rt.Mount(target, source, read_only))
    return tuple(out)


def _sub_path_expr(expr: str, env: Mapping[str, str]) -> str:
    missing: set[str] = set()

    def look(key: str) -> str:
        value = env.get(key, "")
        if not value:
            missing.add(key)
        return value

    expanded = podenv.expand(expr, look)
    if missing:
        raise podenv.ConfigError(f"missing value for {', '.join(sorted(missing))}")
    return expanded


def _sub_path(volume: str, sub: str, *, name: str, container: str) -> str:
    """The host path of `sub` inside `volume`, made a directory if it does not exist,
    and refused if it (through symlinks) leaves the volume."""
    failed = podenv.ConfigError(
        f'failed to prepare subPath for volumeMount "{name}" of container "{container}"')
    if sub.startswith("/") or ".." in sub.split("/"):
        raise failed
    path = os.path.join(volume, sub)
    try:
        if not os.path.lexists(path):
            os.makedirs(path, mode=stat.S_IMODE(os.stat(volume).st_mode), exist_ok=True)
        real, top = os.path.realpath(path), os.path.realpath(volume)
    except OSError:
        raise failed from None
    if real != top and not real.startswith(top.rstrip("/") + "/"):
        raise failed
    return real
