"""`rk master`: one store replica plus its API server, until SIGTERM or SIGINT, or until
its replica fails.

Exit codes: 0 after SIGTERM or SIGINT; 1 for a bad option (`rk`'s usual error);
`EXIT_DATA_DIR` when the data dir is refused at start (a file failed its check: the
message names it, the offset where that applies, and the way to recover);
`EXIT_DISK_FAILED` when a journal or meta write failed while running (a full disk);
`EXIT_TICK_FAILED` when the Raft tick kept failing. A failed member answers every request
with a 503 that says why for `FAILED_GRACE` seconds, then exits.
"""

from __future__ import annotations

import asyncio
import datetime
import errno
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from raftkube.apiserver import etcdauth, serving
from raftkube.apiserver.app import make_app
from raftkube.cli import certs, logfilter
from raftkube.cloud import context as cloud_context
from raftkube.cloud import manager as cloud_manager
from raftkube.cloud import provider as cloud_provider
from raftkube.controllers import base as controllers
from raftkube.controllers import manager
from raftkube.controllers.manager import LeaderLoops
from raftkube.store import recovery
from raftkube.store.replica import Replica, Timing

log = logging.getLogger("raftkube.master")
SWITCH_INTERVAL = 0.001  # seconds; Python's default is 0.005

EXIT_DATA_DIR = 3
EXIT_DISK_FAILED = 4
EXIT_TICK_FAILED = 5
FAILED_GRACE = 1.0  # seconds a failed member keeps answering with why, before it exits


def split_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what}: expected HOST:PORT, got {value!r}")
    return host, int(port)


def raft_listen(raft_addr: str, listen: str | None, peers: Sequence[str] = ()) -> str:
    """The address Raft listens on: `--raft-listen`, else the `--raft` address (the one
    the peers are told), which must then be one of this machine's, and not a loopback
    one while a peer is elsewhere (Debian's /etc/hosts maps the machine's own name to
    127.0.1.1). A master behind NAT advertises an address it does not have: binding it
    would fail for ever (pysyncobj retries every second and the master hangs without a
    word)."""
    split_hostport(raft_addr, "--raft")
    if listen is not None:
        _local_addresses(listen, "--raft-listen", "")
        return listen
    hint = ("give the address to listen on with --raft-listen, e.g. --raft-listen "
            f"0.0.0.0:{raft_addr.rpartition(':')[2]}")
    own = _local_addresses(raft_addr, "--raft", f" (behind NAT?): {hint}")
    if own and all(ipaddress.ip_address(a).is_loopback for a in own):
        host = split_hostport(raft_addr, "--raft")[0]
        for peer in peers:
            found = _resolve(split_hostport(peer, "--peer")[0])
            if found and not any(ipaddress.ip_address(a).is_loopback for a in found):
                what = "" if host.strip("[]") == own[0] else f" {own[0]},"
                raise ValueError(f"--raft: {host} is{what} a loopback address out of the "
                                 f"reach of peer {peer}: {hint}")
    return raft_addr


def _resolve(host: str) -> list[str]:
    """The addresses of `host` (none if it does not resolve now)."""
    try:
        found = socket.getaddrinfo(host.strip("[]"), None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return [str(sockaddr[0]).partition("%")[0] for *_rest, sockaddr in found]


def _local_addresses(addr: str, what: str, hint: str) -> list[str]:
    """The addresses of `addr`'s host, refused if this machine has none of them
    (EADDRNOTAVAIL); a name that does not resolve now is left to pysyncobj's retries."""
    host, _port = split_hostport(addr, what)
    found = _resolve(host)
    for a in found:
        family = socket.AF_INET6 if ":" in a else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((a, 0))
                return found
            except OSError as e:
                if e.errno != errno.EADDRNOTAVAIL:
                    return found  # not a missing address: the real bind says what it is
    if found:
        raise ValueError(f"{what}: {host} is not an address of this machine{hint}")
    return found


def read_etcd_users(path: str) -> dict[str, str]:
    """`--etcd-users-file`: `name,password` per line (`etcdauth.read_users`)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"--etcd-users-file: cannot read {path}: {e.strerror}") from None
    return etcdauth.read_users(text, path)


def read_node_tokens(path: str) -> dict[str, str]:
    """`token,node-name` per line; blank lines and # comments are skipped."""
    tokens: dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ValueError(f"--node-token-file: cannot read {path}: {e.strerror}") from None
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        token, sep, node = line.partition(",")
        if not sep or len(token.strip()) < 16 or not node.strip():
            raise ValueError(f"--node-token-file: {path}:{n}: expected `token,node-name` "
                             "with a token of at least 16 characters")
        tokens[token.strip()] = node.strip()
    return tokens


@dataclass(frozen=True)
class Tls:
    """`--tls-cert-file` and `--tls-private-key-file`: the API is served over HTTPS."""

    cert_file: str
    key_file: str


def tls_options(cert_file: str | None, key_file: str | None, insecure_http: bool,
                api: str) -> Tls | None:
    """The flags checked together: a certificate and its key, or `--insecure-http`
    on a loopback --api address, never both nor neither."""
    if insecure_http:
        if cert_file or key_file:
            raise ValueError("--insecure-http: not with --tls-cert-file or "
                             "--tls-private-key-file")
        host, _ = split_hostport(api, "--api")
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise ValueError(f"--insecure-http: only for a loopback --api address (got "
                             f"{host}); serve {host} with --tls-cert-file and "
                             "--tls-private-key-file (`rk certs` makes them)")
        return None
    if not cert_file or not key_file:
        raise ValueError("--tls-cert-file and --tls-private-key-file are required (`rk "
                         "certs` makes them); --insecure-http serves plain HTTP on a "
                         "loopback address, for development")
    server_context(Tls(cert_file, key_file))  # readable and matching, or say which
    host = own_host(split_hostport(api, "--api")[0])
    try:
        named = certs.names(cert_file)
        left = certs.expires(cert_file) - datetime.datetime.now(datetime.UTC)
    except certs.CertError as e:
        raise ValueError(f"--tls-cert-file: {e}") from None
    if host.strip("[]") not in named:
        raise ValueError(f"--tls-cert-file: {cert_file} does not name {host} (it names "
                         f"{', '.join(sorted(named)) or 'nothing'}): this master's leader "
                         "loops reach its API there; `rk certs --san` adds an address")
    if left < certs.RENEW_BEFORE:
        log.warning("the API's certificate %s %s; `rk certs` issues a new one", cert_file,
                    "has expired" if left.total_seconds() <= 0
                    else f"expires in {left.days} days")
    return Tls(cert_file, key_file)


def own_host(api_host: str) -> str:
    """Where this master's leader loops reach its API: its --api host, or loopback when
    it listens on every address."""
    return "127.0.0.1" if api_host in ("0.0.0.0", "", "::", "[::]") else api_host


def server_context(tls: Tls) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for flag, path in (("--tls-cert-file", tls.cert_file),
                       ("--tls-private-key-file", tls.key_file)):
        if not os.access(path, os.R_OK):
            raise ValueError(f"{flag}: cannot read {path}")
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (ssl.SSLError, OSError) as e:
        raise ValueError(f"--tls-cert-file/--tls-private-key-file: {tls.cert_file} and "
                         f"{tls.key_file} are not a PEM certificate and its private "
                         f"key ({e})") from None
    return context


def check_cidr(cidr: str) -> None:
    try:
        net = ipaddress.ip_network(cidr)
    except ValueError as e:
        raise ValueError(f"--service-cluster-ip-range: {e}") from None
    if net.num_addresses < 8:
        raise ValueError("--service-cluster-ip-range: the range is too small")


def loop_options(**values: float) -> controllers.Options:
    """The leader loops' options from `rk master`'s flags, each checked and named."""
    flags = {"node_grace": "--node-monitor-grace-period",
             "node_monitor_period": "--node-monitor-period",
             "eviction_timeout": "--default-unreachable-toleration-seconds",
             "not_ready_timeout": "--default-not-ready-toleration-seconds",
             "eviction_rate": "--node-eviction-rate",
             "secondary_eviction_rate": "--secondary-node-eviction-rate",
             "unhealthy_zone_threshold": "--unhealthy-zone-threshold",
             "large_cluster_size": "--large-cluster-size-threshold"}
    positive = ("node_grace", "node_monitor_period")
    for name, value in values.items():
        if name in positive and not value > 0:
            raise ValueError(f"{flags[name]}: must be greater than 0, got {value}")
        if not value >= 0:
            raise ValueError(f"{flags[name]}: must not be negative, got {value}")
    if not 0 < values.get("unhealthy_zone_threshold", 0.55) <= 1:
        raise ValueError("--unhealthy-zone-threshold: must be in (0, 1]")
    return controllers.Options(**values)  # type: ignore[arg-type]


def make_leader_loops(provider: cloud_provider.Provider | None) -> manager.MakeLoops:
    """The leader's loops: the scheduler and controllers, and the cloud controller's
    loops with `provider` (none for `--cloud-provider none`). They are made here because
    `controllers` may not import `cloud` (DESIGN.md's layers): only `rk master` sees both."""
    if provider is None:
        return manager.default_loops

    def make(ctx: controllers.Context) -> list[manager.Loop]:
        cloud = cloud_context.Context(provider=provider, client=ctx.client,
                                      informers=ctx.informers, events=ctx.events,
                                      clock=ctx.clock)
        return [*manager.default_loops(ctx), *cloud_manager.loops(cloud)]
    return make


def read_secret(path: str, what: str) -> str:
    try:
        with open(path) as f:
            value = f.read().strip()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {path}: {e.strerror}") from None
    if len(value) < 16:
        raise ValueError(f"{what}: {path} must hold at least 16 characters")
    return value


async def serve(
    *,
    name: str,
    api: str,
    raft_addr: str,
    peers: list[str],
    data_dir: str,
    token: str,
    raft_listen: str | None = None,
    secret: str,
    timing: Timing,
    history_revisions: int,
    force_new_cluster: bool,
    join: bool,
    node_tokens: dict[str, str] | None = None,
    etcd_users: dict[str, str] | None = None,
    service_cidr: str = "10.96.0.0/16",
    log_compaction_entries: int = 20_000,
    sync: bool = True,
    loop_options: controllers.Options | None = None,
    max_connections: int | None = None,
    tls: Tls | None = None,
    cloud: cloud_provider.Provider | None = None,
) -> int:
    """Serve until stopped; return the process's exit code."""
    api_host, api_port = split_hostport(api, "--api")
    split_hostport(raft_addr, "--raft")
    for p in peers:
        split_hostport(p, "--peer")
    max_connections = serving.connection_budget(max_connections)
    if force_new_cluster:
        recovery.force_new_cluster(data_dir=data_dir)
        log.warning("forced a new one-member cluster from %s; peers rejoin with empty data",
                    data_dir)
    scheme = "https" if tls is not None else "http"
    replica = Replica(
        name=name, raft_addr=raft_addr, peers=peers, api_url=f"{scheme}://{api}",
        raft_listen=raft_listen,
        data_dir=data_dir, secret=secret, timing=timing, history_revisions=history_revisions,
        solo=force_new_cluster or recovery.is_solo(data_dir),
        join=join and not recovery.has_data(data_dir), sync=sync,
        log_compaction_entries=log_compaction_entries,
    )
    loop = asyncio.get_running_loop()
    replica.start(loop)
    app = make_app(replica, token=token, node_tokens=node_tokens, etcd_users=etcd_users,
                   service_cidr=service_cidr)
    runner = await serving.start(app, host=api_host, port=api_port,
                                 max_connections=max_connections,
                                 ssl_context=server_context(tls) if tls else None)
    log.info("master %s: api %s://%s raft %s peers %s", name, scheme, api, raft_addr, peers)
    # The leader's loops reach this master's API over loopback, as an outside client,
    # trusting exactly this master's certificate (it names 127.0.0.1, `rk certs`).
    own_cert = None
    if tls is not None:
        with open(tls.cert_file) as f:
            own_cert = f.read()
    leader_loops = LeaderLoops(api_url=f"{scheme}://{own_host(api_host)}:{api_port}",
                               token=token,
                               ca=own_cert,
                               member_id=str(replica.member_id),
                               options=loop_options or controllers.Options(),
                               make_loops=make_leader_loops(cloud))
    loops = loop.create_task(leader_loops.run())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(replica.wait_failed())
    await asyncio.wait([stopped, failed], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if failed.done():
        failure = failed.result()
        code = EXIT_DISK_FAILED if failure.kind == "disk" else EXIT_TICK_FAILED
        # The replica logged why (CRITICAL); clients get a 503 saying so meanwhile.
        await asyncio.wait([stopped], timeout=FAILED_GRACE)
        log.info("master %s exiting with code %d", name, code)
    else:
        log.info("master %s stopping", name)
    for task in (stopped, failed, loops):
        task.cancel()
    await asyncio.gather(stopped, failed, loops, return_exceptions=True)
    await runner.cleanup()
    await replica.stop()
    return code


def run(*, switch_interval: float = SWITCH_INTERVAL, **kwargs: object) -> int:
    # The Raft tick thread and the event loop share the GIL. The tick makes many short
    # system calls, and after each it must win the GIL back from a busy loop thread: by
    # default that takes up to the 5 ms switch interval every time, and under thousands
    # of watch streams a tick took hundreds of ms (docs/pysyncobj-findings.md, 18).
    sys.setswitchinterval(switch_interval)
    logging.basicConfig(
        level=os.environ.get("RK_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logfilter.install()
    code: int = asyncio.run(serve(**kwargs))  # type: ignore[arg-type]
    return code
