"""`rk`: the command line. Errors go to stderr and exit non-zero, as kubectl's do."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from raftkube.cli import client as cl
from raftkube.cli import kubectl, local


def fail(message: str) -> None:
    click.echo(f"error: {message}" if not message.startswith("Error") else message, err=True)
    sys.exit(1)


def make_client() -> cl.Client:
    return cl.Client(cl.load_config())


@click.group()
def main() -> None:
    """raftkube: Kubernetes' model on three Raft masters."""


@main.command()
@click.option("--name", required=True, help="Member name, e.g. m1.")
@click.option("--api", required=True, metavar="HOST:PORT", help="API server address.")
@click.option("--raft", "raft_addr", required=True, metavar="HOST:PORT",
              help="Raft address (bind it to the cluster network only).")
@click.option("--peer", "peers", multiple=True, metavar="HOST:PORT",
              help="Another member's Raft address; repeat for each.")
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
@click.option("--token-file", required=True, type=click.Path(dir_okay=False),
              help="Admin bearer token for the API.")
@click.option("--secret-file", type=click.Path(dir_okay=False),
              help="Cluster secret that authenticates and encrypts Raft traffic "
                   "(default: the token file).")
@click.option("--node-token-file", type=click.Path(dir_okay=False),
              help="Agent tokens, one `token,node-name` per line.")
@click.option("--service-cluster-ip-range", default="10.96.0.0/16", show_default=True,
              help="CIDR that Service ClusterIPs are allocated from.")
@click.option("--election-timeout", default="0.25-0.5", show_default=True,
              metavar="MIN-MAX", help="Raft election timeout range in seconds.")
@click.option("--heartbeat", default=0.05, show_default=True, type=float,
              help="Raft heartbeat interval in seconds.")
@click.option("--history-revisions", default=10_000, show_default=True, type=int,
              help="Revisions kept for reads of the past and watches (auto-compaction).")
@click.option("--force-new-cluster", is_flag=True,
              help="After quorum loss: start a one-member cluster from this member's data.")
@click.option("--log-compaction-entries", default=20_000, show_default=True, type=int,
              help="Raft log entries between snapshots of the state.")
@click.option("--unsafe-no-fsync", is_flag=True, hidden=True,
              help="Never flush the journal (only to measure what durability costs).")
@click.option("--initial-cluster-state", type=click.Choice(["new", "existing"]),
              default="new", show_default=True,
              help="'existing' when an empty member joins a running (forced) cluster.")
@click.option("--switch-interval", type=float, default=0.001, show_default=True, hidden=True,
              help="The interpreter's thread switch interval, in seconds (to measure).")
@click.option("--max-connections", type=click.IntRange(min=1),
              help="Cap on API client connections (default: what the descriptor limit "
                   "leaves after a reserve for the store and the peers).")
def master(name: str, api: str, raft_addr: str, peers: tuple[str, ...], data_dir: str,
           token_file: str, secret_file: str | None, node_token_file: str | None,
           service_cluster_ip_range: str, election_timeout: str, heartbeat: float,
           history_revisions: int, log_compaction_entries: int, force_new_cluster: bool,
           unsafe_no_fsync: bool, initial_cluster_state: str,
           max_connections: int | None, switch_interval: float) -> None:
    """Run one master: a store replica and its API server."""
    from raftkube.cli import master as m
    from raftkube.store.replica import Timing

    try:
        lo, _, hi = election_timeout.partition("-")
        timing = Timing(election_min=float(lo), election_max=float(hi), heartbeat=heartbeat)
        if not 0 < timing.heartbeat < timing.election_min < timing.election_max:
            raise ValueError("--election-timeout: need 0 < heartbeat < MIN < MAX")
        token = m.read_secret(token_file, "--token-file")
        secret = m.read_secret(secret_file, "--secret-file") if secret_file else token
        node_tokens = m.read_node_tokens(node_token_file) if node_token_file else {}
        m.check_cidr(service_cluster_ip_range)
        m.run(name=name, api=api, raft_addr=raft_addr, peers=list(peers),
              node_tokens=node_tokens, service_cidr=service_cluster_ip_range,
              data_dir=data_dir, token=token, secret=secret, timing=timing,
              history_revisions=history_revisions, force_new_cluster=force_new_cluster,
              log_compaction_entries=log_compaction_entries,
              join=initial_cluster_state == "existing", sync=not unsafe_no_fsync,
              max_connections=max_connections, switch_interval=switch_interval)
    except ValueError as e:
        fail(str(e))


@main.command()
@click.option("--masters", default=3, show_default=True, type=int)
@click.option("--agents", default=0, show_default=True, type=int)
@click.option("--state-dir", required=True, type=click.Path(file_okay=False))
@click.option("--master-arg", "master_args", multiple=True, metavar="ARG",
              help="Extra argument for every `rk master` (kept for later `rk up` runs).")
def up(masters: int, agents: int, state_dir: str, master_args: tuple[str, ...]) -> None:
    """Start a local HA cluster (or the members of it that are not running)."""
    try:
        started = local.up(state_dir=state_dir, masters=masters, agents=agents,
                           master_args=list(master_args) or None)
    except cl.ClientError as e:
        fail(str(e))
    for name in started:
        click.echo(f"started {name}")
    click.echo(f"cluster is up; export RK_CONFIG={os.path.abspath(state_dir)}/config.yaml")


@main.command()
@click.option("--state-dir", required=True, type=click.Path(file_okay=False))
def down(state_dir: str) -> None:
    """Stop everything `rk up` started."""
    for name in local.down(state_dir=state_dir):
        click.echo(f"stopped {name}")


@main.group()
def snapshot() -> None:
    """Back up and restore the store."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False))
def snapshot_save(file: str) -> None:
    """Save a consistent snapshot, taken through the API from any master."""
    try:
        data = make_client().call("/v3/maintenance/snapshot", raw=True)
    except cl.ClientError as e:
        fail(str(e))
    from raftkube.store import recovery

    try:
        recovery.split_snapshot(data)
    except recovery.RecoveryError as e:
        fail(str(e))
    tmp = file + ".part"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)
    click.echo(f"Snapshot saved at {file} ({len(data)} bytes)")


@snapshot.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--data-dir", required=True, type=click.Path(file_okay=False))
def snapshot_restore(file: str, data_dir: str) -> None:
    """Make a fresh data dir from a snapshot (do it for every member)."""
    from raftkube.store import recovery

    with open(file, "rb") as f:
        data = f.read()
    try:
        state = recovery.restore_snapshot(snapshot=data, data_dir=data_dir)
    except (recovery.RecoveryError, ValueError) as e:
        fail(str(e))
    click.echo(f"restored revision {state.revision} ({len(state.kvs)} keys) into {data_dir}")


@main.group()
def kv() -> None:
    """Read and write raw store keys (like etcdctl)."""


@kv.command("put")
@click.argument("key")
@click.argument("value")
def kv_put(key: str, value: str) -> None:
    try:
        resp = make_client().put(key.encode(), value.encode())
    except cl.ClientError as e:
        fail(str(e))
    click.echo(f"OK (revision {resp['header']['revision']})")


@kv.command("get")
@click.argument("key")
@click.option("--prefix", is_flag=True)
def kv_get(key: str, prefix: bool) -> None:
    from raftkube.store.state import prefix_end

    try:
        kvs = make_client().range(key.encode(), prefix_end(key.encode()) if prefix else b"")
    except cl.ClientError as e:
        fail(str(e))
    for k, v in kvs:
        click.echo(k.decode(errors="replace"))
        click.echo(v.decode(errors="replace"))


@main.command()
def members() -> None:
    """List the masters, their addresses, and which one leads."""
    client = make_client()
    try:
        ms = client.members()
        rows: list[tuple[str, ...]] = []
        for m in ms:
            url = (m.get("clientURLs") or [""])[0]
            st: dict[str, Any] | None
            try:
                st = client.status(url) if url else None
            except cl.ClientError:
                st = None
            role = "unreachable"
            if st is not None:
                role = "leader" if st.get("leader") == m["ID"] else "follower"
                term = st["header"]["raft_term"]
                role += f" (term {term}, revision {st['header']['revision']})"
            rows.append((m.get("name", ""), url, m["peerURLs"][0], role))
    except cl.ClientError as e:
        fail(str(e))
    click.echo(f"{'NAME':6} {'API':24} {'RAFT':26} ROLE")
    for name, url, peer, role in rows:
        click.echo(f"{name:6} {url:24} {peer:26} {role}")


kubectl.register(main)
