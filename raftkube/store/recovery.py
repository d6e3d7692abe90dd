"""Backups and disaster recovery of a data dir, the way etcdctl and k3s do them.

- `snapshot restore` turns a snapshot file (state + SHA-256) into a fresh data dir. Every
  member of the new cluster is restored from the same file, so all start from one state.
- `force_new_cluster` rebuilds a data dir from what one surviving member has (its dump
  plus every command in its journal, committed or not, as etcd's --force-new-cluster
  does) and marks it *solo*: the member runs as a one-member cluster and takes back its
  configured peers one at a time as they come up (with empty data dirs and
  `--initial-cluster-state existing`), through Raft membership changes.

A restored or forced state forgets the old cluster's fencing term and member table: the
new cluster counts its terms from 1 again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time

from raftkube.store import disk
from raftkube.store import state as st

SOLO_MARKER = "solo"
HASH_LEN = 32


class RecoveryError(Exception):
    pass


def split_snapshot(data: bytes) -> bytes:
    """The state blob of a snapshot file, after checking its SHA-256 trailer."""
    blob, digest = data[:-HASH_LEN], data[-HASH_LEN:]
    if len(data) <= HASH_LEN or hashlib.sha256(blob).digest() != digest:
        raise RecoveryError("snapshot: checksum mismatch (file truncated or not a snapshot)")
    return blob


def has_data(data_dir: str) -> bool:
    return any(os.path.exists(os.path.join(data_dir, n)) for n in ("journal", "dump"))


def _write_fresh(data_dir: str, state: st.State) -> None:
    state.max_term = 0
    state.members = {}
    os.makedirs(data_dir, exist_ok=True)
    disk.replace_dump_file(data_dir, state.dump(), disk.fresh_raft_entries())


def restore_snapshot(*, snapshot: bytes, data_dir: str) -> st.State:
    if has_data(data_dir):
        raise RecoveryError(f"snapshot restore: {data_dir} already holds a member's data; "
                            "restore into an empty directory")
    state = st.State.load(split_snapshot(snapshot))
    _write_fresh(data_dir, state)
    return state


def local_state(data_dir: str) -> st.State:
    """Everything this member has: its last dump, then every command in its journal."""
    state = st.State()
    applied = 0
    dump = os.path.join(data_dir, "dump")
    if os.path.exists(dump):
        blob, raft_data = disk.read_dump_file(dump)
        state = st.State.load(blob)
        applied = int(raft_data[0][1])  # the last entry the dump covers
    journal = os.path.join(data_dir, "journal")
    if os.path.exists(journal):
        for data, term in disk.journal_commands(journal, after_index=applied):
            state.apply(st.decode_command(data), entry_term=term)
    return state


def force_new_cluster(*, data_dir: str) -> st.State:
    if not has_data(data_dir):
        raise RecoveryError(f"--force-new-cluster: {data_dir} holds no member data")
    state = local_state(data_dir)
    backup = os.path.join(data_dir, f"before-force-{int(time.time())}")
    os.makedirs(backup)
    for name in os.listdir(data_dir):
        if name.startswith(("journal", "dump")):
            shutil.move(os.path.join(data_dir, name), os.path.join(backup, name))
    _write_fresh(data_dir, state)
    with open(os.path.join(data_dir, SOLO_MARKER), "w") as f:
        f.write("forced new cluster; peers rejoin through membership changes\n")
    return state


def is_solo(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, SOLO_MARKER))


def end_solo(data_dir: str) -> None:
    try:
        os.unlink(os.path.join(data_dir, SOLO_MARKER))
    except FileNotFoundError:
        pass
