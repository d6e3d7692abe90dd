"""`rk`: the command line. Errors go to stderr and exit non-zero, as kubectl's do."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import click

from raftkube.cli import durations
from raftkube.cli.lazy import LazyGroup
from raftkube.client import config as cfg
from raftkube.client import errors, etcd, transport

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}" if not message.startswith("Error") else message, err=True)
    sys.exit(1)


def with_store(call: Callable[[etcd.EtcdClient], Awaitable[T]]) -> T:
    """Run `call` with a client of the configured cluster's store API; a ClientError
    ends the command with its message."""
    from raftkube.cli import session

    async def body() -> T:
        config = cfg.load_config()
        async with transport.Transport(config.servers, config.token, ca=config.ca,
                                       wait=session.DEFAULT_WAIT) as tp:
            return await call(etcd.EtcdClient(tp))

    try:
        return asyncio.run(body())
    except errors.ClientError as e:
        fail(session.describe(e))


def parse_duration(value: str) -> float:
    """`30s`, `2m`, `1m30s` or plain seconds, as kubectl's --request-timeout."""
    try:
        seconds = float(value)  # kubectl takes bare seconds here
    except ValueError:
        pass
    else:
        return _positive(seconds)
    try:
        seconds = durations.parse(value)
    except ValueError:
        raise click.BadParameter(f"expected a duration such as 30s or 2m, got {value!r}"
                                 ) from None
    return _positive(seconds)


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise click.BadParameter("must be more than zero")
    return seconds


# The commands that live in other modules, loaded when asked for (cli/lazy.py).
LAZY = {
    "raftkube.cli.kubectl": ("annotate", "api-resources", "apply", "cordon", "create",
                             "delete", "describe", "diff", "drain", "edit", "explain",
                             "get", "label", "patch", "replace", "rollout", "scale", "set",
                             "uncordon", "version", "wait"),
    "raftkube.cli.podio": ("logs", "exec", "top"),
    "raftkube.cli.cluster": ("cluster", "members"),
    "raftkube.cli.shellconfig": ("completion", "config"),  # and `rk config view`
    "raftkube.cli.localcmds": ("up", "down"),
}


@click.group(cls=LazyGroup, lazy=LAZY)
@click.option("--request-timeout", default="20s", show_default=True,
              callback=lambda _c, _p, v: parse_duration(v),
              help="How long a request waits for a master to answer (elections, restarts).")
def main(request_timeout: float) -> None:
    """raftkube: Kubernetes' model on three Raft masters."""


@main.command()
@click.option("--name", required=True, help="Member name, e.g. m1.")
@click.option("--api", required=True, metavar="HOST:PORT", help="API server address.")
@click.option("--raft", "raft_addr", required=True, metavar="HOST:PORT",
              help="Raft address: the one the peers reach (their --peer), listened on "
                   "unless --raft-listen says otherwise; on the cluster network only.")
@click.option("--raft-listen", metavar="HOST:PORT",
              help="The address Raft listens on when --raft is not one of this machine's "
                   "(a master behind NAT), e.g. 0.0.0.0:2380. Default: --raft.")
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
@click.option("--etcd-users-file", type=click.Path(dir_okay=False),
              help="Users of etcd's password login on /v3 (/v3/auth/authenticate), one "
                   "`name,password` per line.")
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
@click.option("--node-monitor-grace-period", default=10.0, show_default=True, type=float,
              help="Seconds without a lease renewal before a node is Ready=Unknown.")
@click.option("--node-monitor-period", default=1.0, show_default=True, type=float,
              help="Seconds between looks at every zone's health.")
@click.option("--default-unreachable-toleration-seconds", default=30, show_default=True,
              type=int, help="How long a pod without its own toleration stays on an "
                             "unreachable node before it is evicted.")
@click.option("--default-not-ready-toleration-seconds", default=30, show_default=True,
              type=int, help="The same for a node whose agent says it is not ready.")
@click.option("--node-eviction-rate", default=0.1, show_default=True, type=float,
              help="Nodes a second (per zone) tainted NoExecute, i.e. evicted.")
@click.option("--secondary-node-eviction-rate", default=0.01, show_default=True, type=float,
              help="The same in a zone mostly not ready (if it is large).")
@click.option("--unhealthy-zone-threshold", default=0.55, show_default=True, type=float,
              help="Share of a zone's nodes not ready (of more than 2) that makes it "
                   "disrupted.")
@click.option("--large-cluster-size-threshold", default=50, show_default=True, type=int,
              help="A disrupted zone this small or smaller stops evicting altogether.")
@click.option("--switch-interval", type=float, default=0.001, show_default=True, hidden=True,
              help="The interpreter's thread switch interval, in seconds (to measure).")
@click.option("--max-connections", type=click.IntRange(min=1),
              help="Cap on API client connections (default: what the descriptor limit "
                   "leaves after a reserve for the store and the peers).")
@click.option("--tls-cert-file", type=click.Path(dir_okay=False),
              help="The API's serving certificate (PEM), made by `rk certs`.")
@click.option("--tls-private-key-file", type=click.Path(dir_okay=False),
              help="Its private key (PEM).")
@click.option("--insecure-http", is_flag=True,
              help="Serve the API over plain HTTP, on a loopback --api address only "
                   "(development; kubectl sends no token over HTTP).")
@click.option("--cloud-provider", default="local", show_default=True,
              help="The machine provider of the cloud controller: local, vagrant, one "
                   "registered in the entry point group raftkube.cloud_providers, or none "
                   "(docs/cloud.md).")
def master(name: str, api: str, raft_addr: str, raft_listen: str | None,
           peers: tuple[str, ...], data_dir: str,
           token_file: str, secret_file: str | None, node_token_file: str | None,
           etcd_users_file: str | None, service_cluster_ip_range: str,
           election_timeout: str, heartbeat: float,
           history_revisions: int, log_compaction_entries: int, force_new_cluster: bool,
           unsafe_no_fsync: bool, initial_cluster_state: str,
           node_monitor_grace_period: float, node_monitor_period: float,
           default_unreachable_toleration_seconds: int,
           default_not_ready_toleration_seconds: int, node_eviction_rate: float,
           secondary_node_eviction_rate: float, unhealthy_zone_threshold: float,
           large_cluster_size_threshold: int,
           max_connections: int | None, switch_interval: float,
           tls_cert_file: str | None, tls_private_key_file: str | None,
           insecure_http: bool, cloud_provider: str) -> None:
    """Run one master: a store replica and its API server."""
    from raftkube.cli import master as m
    from raftkube.cloud import provider as cloud
    from raftkube.store.journal import DataDirError
    from raftkube.store.replica import Timing

    try:
        lo, _, hi = election_timeout.partition("-")
        timing = Timing(election_min=float(lo), election_max=float(hi), heartbeat=heartbeat)
        if not 0 < timing.heartbeat < timing.election_min < timing.election_max:
            raise ValueError("--election-timeout: need 0 < heartbeat < MIN < MAX")
        token = m.read_secret(token_file, "--token-file")
        secret = m.read_secret(secret_file, "--secret-file") if secret_file else token
        node_tokens = m.read_node_tokens(node_token_file) if node_token_file else {}
        etcd_users = m.read_etcd_users(etcd_users_file) if etcd_users_file else {}
        m.check_cidr(service_cluster_ip_range)
        listen = m.raft_listen(raft_addr, raft_listen, peers)
        tls = m.tls_options(tls_cert_file, tls_private_key_file, insecure_http, api)
        provider = cloud.load(cloud_provider)
        loop_options = m.loop_options(
            node_grace=node_monitor_grace_period, node_monitor_period=node_monitor_period,
            eviction_timeout=default_unreachable_toleration_seconds,
            not_ready_timeout=default_not_ready_toleration_seconds,
            eviction_rate=node_eviction_rate,
            secondary_eviction_rate=secondary_node_eviction_rate,
            unhealthy_zone_threshold=unhealthy_zone_threshold,
            large_cluster_size=large_cluster_size_threshold)
        code = m.run(loop_options=loop_options,
                     name=name, api=api, raft_addr=raft_addr, raft_listen=listen,
                     peers=list(peers),
                     node_tokens=node_tokens, etcd_users=etcd_users,
                     service_cidr=service_cluster_ip_range,
                     data_dir=data_dir, token=token, secret=secret, timing=timing,
                     history_revisions=history_revisions,
                     force_new_cluster=force_new_cluster,
                     log_compaction_entries=log_compaction_entries,
                     join=initial_cluster_state == "existing", sync=not unsafe_no_fsync,
                     max_connections=max_connections, switch_interval=switch_interval,
                     tls=tls, cloud=provider)
    except ValueError as e:
        fail(str(e))
    except DataDirError as e:
        # One line, no traceback: the file, what is wrong with it, how to recover.
        click.echo(f"error: member {name} refuses to start: {e}", err=True)
        sys.exit(m.EXIT_DATA_DIR)
    sys.exit(code)


@main.command()
@click.option("--name", required=True, help="Node name (with --count, the names' stem).")
@click.option("--server", "servers", required=True, multiple=True, metavar="URL",
              help="A master's API URL; repeat for each.")
@click.option("--token-file", required=True, type=click.Path(dir_okay=False),
              help="The node token, or `token,node-name` lines (one per node).")
@click.option("--ca-file", type=click.Path(dir_okay=False),
              help="The cluster CA (PEM) that https masters are verified against "
                   "[default: the system's trust store].")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="The node's address (its InternalIP and its pods' hostIP).")
@click.option("--tls-cert-file", type=click.Path(dir_okay=False),
              help="The certificate (PEM) of the agent's API for the masters "
                   "[default: a self-signed one made at start].")
@click.option("--tls-private-key-file", type=click.Path(dir_okay=False),
              help="The key (PEM) of --tls-cert-file.")
@click.option("--runtime", type=click.Choice(["docker", "simulated"]), default="docker",
              show_default=True, help="What runs the containers.")
@click.option("--cluster-id", default="default", show_default=True,
              help="Labels this cluster's containers on a shared Docker engine.")
@click.option("--pause-image", default="raftkube/pause:1", show_default=True,
              help="The image of the pods' sandboxes (Docker runtime).")
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1),
              help="Simulated nodes in this process: NAME-1 ... NAME-N.")
@click.option("--cpu", default=None,
              help="The node's cpu capacity [default: the host's; 4 when simulated].")
@click.option("--memory", default=None,
              help="The node's memory [default: the host's; 8Gi when simulated].")
@click.option("--max-pods", default=110, show_default=True, type=int,
              help="How many pods the node takes.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="A label for the Node; repeat for each.")
@click.option("--pod-cidr", default="10.244.0.0/24", show_default=True,
              help="The node's pod address range (with --count, the first of N).")
@click.option("--lease-interval", default=2.0, show_default=True, type=float,
              help="Seconds between renewals of the node's Lease.")
@click.option("--node-status-update-frequency", default=10.0, show_default=True, type=float,
              help="Seconds between checks of the Node's status.")
@click.option("--crash-backoff-base", default=10.0, show_default=True, type=float,
              help="The first crash-loop back-off in seconds (doubles up to the cap).")
@click.option("--crash-backoff-cap", default=300.0, show_default=True, type=float,
              help="The longest crash-loop back-off in seconds.")
@click.option("--relist-period", default=1.0, show_default=True, type=float,
              help="Seconds between listings of the runtime's containers while its "
                   "events are not arriving (with them: every 10 s, as a safety net).")
@click.option("--root-dir", default=None, metavar="DIR",
              help="Where pods' volumes live (DIR/pods/UID/volumes/NAME; DIR/NODE/... for "
                   "each of --count nodes). [default: /var/lib/raftkube/agent/NAME]")
@click.option("--config-refresh", default=10.0, show_default=True, type=float,
              help="Seconds between reads of the ConfigMaps and Secrets that pods use "
                   "(an update reaches their volumes within that).")
@click.option("--agent-port", default=10250, show_default=True,
              type=click.IntRange(min=0, max=65535),
              help="The agent's API for the masters (logs, exec), on --address; 0 takes "
                   "any free port (the Node advertises the one taken).")
@click.option("--service-proxy/--no-service-proxy", default=True, show_default=True,
              help="Proxy Services (NodePort, ClusterIP) and serve cluster DNS.")
@click.option("--proxy-address", default=None,
              help="Where pods reach this node's ClusterIP proxy and DNS server "
                   "[default: the Docker bridge's gateway for real pods; '' for none].")
@click.option("--iptables/--no-iptables", default=None,
              help="Lead pods' ClusterIP and DNS packets to this node's listeners with "
                   "iptables [default: with real pods and a proxy address].")
@click.option("--cluster-domain", default="cluster.local", show_default=True,
              help="The DNS domain of Services (NAME.NAMESPACE.svc.DOMAIN).")
@click.option("--cluster-dns", default="169.254.20.10", show_default=True,
              help="The DNS server address in pods' resolv.conf.")
@click.option("--dns-port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="The DNS server's port on the proxy address (0: any free one).")
@click.option("--dns-upstream", "dns_upstreams", multiple=True, metavar="IP[:PORT]",
              help="Where names outside the cluster domain are forwarded; repeat for each; "
                   "`none` refuses them [default: the host's resolv.conf].")
@click.option("--relay-port", default=None, type=click.IntRange(0, 65535),
              help="The port of this node's pod relay on --address, for nodes on other "
                   "machines [default: 10263 for real pods; 0: none].")
def agent(name: str, servers: tuple[str, ...], token_file: str, ca_file: str | None,
          address: str, tls_cert_file: str | None, tls_private_key_file: str | None,
          runtime: str,
          cluster_id: str, pause_image: str, count: int, cpu: str | None,
          memory: str | None, max_pods: int, labels: tuple[str, ...], pod_cidr: str,
          lease_interval: float, node_status_update_frequency: float,
          crash_backoff_base: float, crash_backoff_cap: float, relist_period: float,
          agent_port: int, root_dir: str | None,
          config_refresh: float, service_proxy: bool,
          proxy_address: str | None, iptables: bool | None, cluster_domain: str,
          cluster_dns: str, dns_port: int, dns_upstreams: tuple[str, ...],
          relay_port: int | None) -> None:
    """Run a node agent: register the node, heartbeat, run the pods bound to it."""
    import ipaddress

    from raftkube.agent import agent as ag
    from raftkube.agent import dns, hostinfo
    from raftkube.agent import runtime as rt
    from raftkube.cli import agent as a

    try:
        if runtime == "simulated":
            base = ag.SIMULATED_CAPACITY
        else:
            base = hostinfo.capacity()
        capacity = a.check_capacity(cpu or base["cpu"], memory or base["memory"], max_pods)
        checks: list[tuple[str, Any, str]] = [
            ("--address", ipaddress.ip_address, address),
            ("--pod-cidr", ipaddress.ip_network, pod_cidr),
            ("--cluster-dns", ipaddress.ip_address, cluster_dns)]
        if proxy_address:
            checks.append(("--proxy-address", ipaddress.ip_address, proxy_address))
        upstreams = None if not dns_upstreams else \
            [] if dns_upstreams == ("none",) else list(dns_upstreams)
        for up in upstreams or []:
            checks.append(("--dns-upstream", dns.check_upstream, up))
        for flag, check, value in checks:
            try:
                check(value)
            except ValueError as e:
                raise ValueError(f"{flag}: {e}") from None
        if not cluster_domain.strip(".") or " " in cluster_domain:
            raise ValueError(f"--cluster-domain: {cluster_domain!r} is not a domain name")
        label_map = {}
        for text in labels:
            key, sep, value = text.partition("=")
            if not sep or not key:
                raise ValueError(f"--label: expected KEY=VALUE, got {text!r}")
            label_map[key] = value
        for flag, seconds in (("--lease-interval", lease_interval),
                              ("--node-status-update-frequency",
                               node_status_update_frequency),
                              ("--crash-backoff-base", crash_backoff_base),
                              ("--crash-backoff-cap", crash_backoff_cap),
                              ("--relist-period", relist_period),
                              ("--config-refresh", config_refresh)):
            if not seconds > 0 or seconds == math.inf:
                raise ValueError(f"{flag}: must be a number of seconds more than zero, "
                                 f"got {seconds}")
        if crash_backoff_cap < crash_backoff_base:
            raise ValueError(f"--crash-backoff-cap: {crash_backoff_cap} is less than "
                             f"--crash-backoff-base {crash_backoff_base}")
        for server in servers:
            problem = cfg.server_problem(server)
            if problem:
                raise ValueError(f"--server: {problem}")
        options = ag.AgentOptions(
            servers=list(servers), ca=a.read_ca(ca_file) if ca_file else None,
            address=address, runtime=runtime, pod_cidr=pod_cidr,
            capacity=capacity, labels=label_map, lease_interval=lease_interval,
            status_interval=node_status_update_frequency,
            crash_backoff_base=crash_backoff_base, crash_backoff_cap=crash_backoff_cap,
            relist_period=relist_period, cluster=cluster_id,
            pause_image=pause_image, agent_port=agent_port,
            root_dir=os.path.abspath(root_dir) if root_dir else None,
            config_refresh=config_refresh, service_network=service_proxy,
            agent_name=name, proxy_address=proxy_address, iptables=iptables,
            cluster_domain=cluster_domain.strip("."), cluster_dns=cluster_dns,
            dns_port=dns_port, dns_upstreams=upstreams, relay_port=relay_port)
        a.run(names=ag.node_names(name, count), token_file=token_file, options=options,
              tls_cert_file=tls_cert_file, tls_key_file=tls_private_key_file)
    except (ValueError, rt.RuntimeFailure, ag.AgentError) as e:
        fail(str(e))


@main.command()
@click.option("--dir", "pki_dir", required=True, type=click.Path(file_okay=False),
              help="Where the CA (ca.crt, ca.key) is, or is made on the first run.")
@click.option("--name", required=True, help="The master's name: NAME.crt and NAME.key.")
@click.option("--san", "sans", multiple=True, metavar="IP|DNS",
              help="An address the master is reached at; repeat for each (localhost "
                   "and 127.0.0.1 are always added).")
def certs(pki_dir: str, name: str, sans: tuple[str, ...]) -> None:
    """Make the cluster CA once, and a serving certificate for one master, issued again
    only when it no longer covers every --san (or expires within 30 days)."""
    from raftkube.cli import certs as pki

    try:
        serving = pki.ensure_serving(pki_dir, name, list(sans))
    except pki.CertError as e:
        fail(str(e))
    click.echo(f"{'issued' if serving.issued else 'kept'} {serving.cert} and {serving.key} "
               f"(CA {os.path.join(pki_dir, pki.CA_CERT)})")


@main.group("config")
def config_group() -> None:
    """Client configuration."""


@config_group.command("kubeconfig")
@click.option("--name", default="raftkube", show_default=True,
              help="The default context's name (and the stem of one per master).")
def config_kubeconfig(name: str) -> None:
    """Print a kubeconfig for the configured cluster (RK_CONFIG), for kubectl."""
    from raftkube.cli import kubeconfig

    try:
        config = cfg.load_config()
    except errors.ClientError as e:
        fail(str(e))
    click.echo(kubeconfig.render(config, name=name), nl=False)


@main.group()
def snapshot() -> None:
    """Back up and restore the store."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False))
def snapshot_save(file: str) -> None:
    """Save a consistent snapshot, taken through the API from any master."""
    data = with_store(lambda store: store.snapshot())
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
    resp = with_store(lambda store: store.put(key.encode(), value.encode()))
    click.echo(f"OK (revision {resp['header']['revision']})")


@kv.command("get")
@click.argument("key")
@click.option("--prefix", is_flag=True)
def kv_get(key: str, prefix: bool) -> None:
    from raftkube.store.state import prefix_end

    kvs = with_store(lambda store: store.range(
        key.encode(), prefix_end(key.encode()) if prefix else b""))
    for k, v in kvs:
        click.echo(k.decode(errors="replace"))
        click.echo(v.decode(errors="replace"))


@main.group()
def member() -> None:
    """Change the cluster's membership (etcdctl member add/remove): to replace a member
    whose data dir is refused, remove it, wipe its data dir, add it back, and start it
    with --initial-cluster-state existing."""


@member.command("remove")
@click.argument("member_ref", metavar="NAME|ID")
def member_remove(member_ref: str) -> None:
    """Remove a stopped member from the cluster (asked of another member)."""

    async def remove(store: etcd.EtcdClient) -> tuple[dict[str, Any], dict[str, Any]]:
        ms = await store.members()
        found = [m for m in ms if member_ref in (m.get("name"), str(m["ID"]))]
        if not found:
            raise errors.ClientError(f"no member named or numbered {member_ref!r}; members: "
                                     + ", ".join(f"{m.get('name') or '?'} ({m['ID']})"
                                                 for m in ms))
        target = found[0]
        own = set(target.get("clientURLs") or [])
        others = [s for s in store.transport.servers if s not in own]
        if not others:
            raise errors.ClientError("no other member to ask: a member cannot remove itself")
        # Asked of another member: the one removed may be the one that answers first.
        async with transport.Transport(others, store.transport.token,
                                       ca=store.transport.ca,
                                       wait=store.transport.wait) as tp:
            resp = await etcd.EtcdClient(tp).call("/v3/cluster/member/remove",
                                                  {"ID": str(target["ID"])})
        return target, resp

    target, resp = with_store(remove)
    left = ", ".join(m.get("name") or m["peerURLs"][0] for m in resp.get("members", []))
    click.echo(f"removed member {target.get('name') or target['ID']} ({target['ID']}); "
               f"members now: {left}")


@member.command("add")
@click.option("--raft", "raft_addr", required=True, metavar="HOST:PORT",
              help="The new member's Raft address (its --raft flag).")
def member_add(raft_addr: str) -> None:
    """Add a member; then start it with an empty data dir and
    --initial-cluster-state existing."""
    resp = with_store(lambda store: store.call("/v3/cluster/member/add",
                                               {"peerURLs": [f"http://{raft_addr}"]}))
    click.echo(f"added member {resp['member']['ID']} ({raft_addr}); start it with an empty "
               "data dir and --initial-cluster-state existing")
