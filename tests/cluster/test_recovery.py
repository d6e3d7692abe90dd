"""Backup and disaster recovery with the real CLI: snapshot save/restore, forced cluster."""

from __future__ import annotations

import asyncio
import os
import shutil

import pytest

from tests.cluster.harness import Cluster, RequestFailed, rk, wait_for

pytestmark = pytest.mark.cluster


async def test_snapshot_save_and_restore_into_a_new_cluster(
        cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    async with cluster as c:
        await c.leader()
        for i in range(50):
            await c.put(c.names[i % 3], f"s/{i:03d}", f"v{i}")
        before = await c.get_prefix("m2", "s/")
    snap = str(tmp_path_factory.mktemp("snap") / "backup.db")
    out = rk(cluster, "snapshot", "save", snap, check=True)
    assert "Snapshot saved" in out.stdout
    cluster.down()

    restored = Cluster(str(tmp_path_factory.mktemp("restored")))
    try:
        # Lay out the new cluster (ports, token), restore every member, then start it.
        from raftkube.cli import local

        layout = local.load_layout(restored.state_dir, 3)
        for m in layout["masters"]:
            out = rk(None, "snapshot", "restore", snap, "--data-dir",
                     os.path.join(restored.state_dir, "data", m["name"]), check=True)
            assert "restored revision" in out.stdout
        bad = rk(None, "snapshot", "restore", snap, "--data-dir",
                 os.path.join(restored.state_dir, "data", "m1"))
        assert bad.returncode != 0 and "already holds" in bad.stderr
        restored.up()
        async with restored as r:
            await r.leader()
            for name in r.names:
                assert await r.get_prefix(name, "s/") == before
            rev = await r.put("m3", "s/after", "x")
            assert rev > max(mod for _v, mod in before.values())
    finally:
        restored.down()


async def test_snapshot_restore_refuses_a_corrupt_file(tmp_path: str) -> None:
    path = os.path.join(tmp_path, "bad.db")
    with open(path, "wb") as f:
        f.write(b"not a snapshot at all, just some bytes that are long enough")
    out = rk(None, "snapshot", "restore", path, "--data-dir", os.path.join(tmp_path, "d"))
    assert out.returncode != 0 and "checksum mismatch" in out.stderr
    assert not os.path.exists(os.path.join(tmp_path, "d", "dump"))


async def test_force_new_cluster_after_quorum_loss(cluster: Cluster) -> None:
    async with cluster as c:
        await c.leader()
        for i in range(30):
            await c.put(c.names[i % 3], f"q/{i:03d}", f"v{i}")
        before = await c.get_prefix("m1", "q/")
        # Lose two members for good: processes and data.
        for name in ("m2", "m3"):
            c.kill(name)
            shutil.rmtree(c.data_dir(name))
        with pytest.raises((RequestFailed, TimeoutError, OSError)):
            await c.put("m1", "q/no-quorum", "x", timeout=2.0)
        c.kill("m1")
        c.start("m1", ["--force-new-cluster"])
        await wait_for(lambda: _put_ok(c, "m1", "q/solo"), timeout=20,
                       what="the forced one-member cluster to take writes")
        assert (await c.get_prefix("m1", "q/")).keys() >= before.keys()
        # The lost members come back empty and rejoin through membership changes.
        for name in ("m2", "m3"):
            c.start(name, ["--initial-cluster-state", "existing"])
        for name in ("m2", "m3"):
            await wait_for(lambda name=name: _has_all(c, name, before.keys() | {"q/solo"}),
                           timeout=40, what=f"{name} to rejoin and catch up")
        # A real three-member cluster again: it survives losing the forced member.
        await c.put("m3", "q/three", "x")
        c.kill("m1")
        leader = await c.leader(among=["m2", "m3"])
        await c.put(leader, "q/after-m1", "x")
        assert "q/three" in await c.get_prefix("m2", "q/")


async def _put_ok(c: Cluster, name: str, key: str) -> bool:
    try:
        await c.put(name, key, "x", timeout=2.0)
        return True
    except Exception:
        return False


async def _has_all(c: Cluster, name: str, keys: object) -> bool:
    try:
        stored = await c.get_prefix(name, "q/", serializable=True)
    except Exception:
        await asyncio.sleep(0.2)
        return False
    return set(keys) <= set(stored)  # type: ignore[call-overload]
