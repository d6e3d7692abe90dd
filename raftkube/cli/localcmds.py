"""`rk up` and `rk down`: a local HA cluster's life, over cli/local.py (which starts,
waits for and stops its members)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from raftkube.cli import local
from raftkube.cli.main import fail, parse_duration
from raftkube.client import errors


def register(group: click.Group) -> None:
    for command in (up, down):
        group.add_command(command)


def state_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--state-dir", default=local.DEFAULT_STATE_DIR, show_default=True,
        envvar="RK_STATE_DIR", type=click.Path(file_okay=False),
        callback=lambda _c, _p, v: os.path.expanduser(v),
        help="The cluster's directory: data, logs, pids, config.yaml (env RK_STATE_DIR).")(f)


@click.command()
@click.option("--masters", default=None, type=int,
              help="1, 3 or 5 (default: 3, or what the state dir's cluster has).")
@click.option("--agents", default=2, show_default=True, type=int,
              help="Agents (nodes) n1 ... nN.")
@state_dir_option
@click.option("--master-arg", "master_args", multiple=True, metavar="ARG",
              help="Extra argument for every `rk master` (kept for later `rk up` runs).")
@click.option("--runtime", type=click.Choice(["docker", "simulated"]), default="docker",
              show_default=True, help="The agents' container runtime.")
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1),
              help="Simulated nodes per agent (nI-1 ... nI-C).")
@click.option("--agent-arg", "agent_args", multiple=True, metavar="ARG",
              help="Extra argument for every `rk agent` this run starts.")
@click.option("--insecure-http/--tls", default=None,
              help="Serve the masters' APIs over plain HTTP on loopback (development), or "
                   "over HTTPS (the default); kept for later `rk up` runs.")
@click.option("--topology", type=click.Choice(["loopback", "netns"]), default=None,
              help="loopback: every member on 127.0.0.1 (the default); netns: each "
                   "master and agent in a network namespace of its own, with its own "
                   "address on a bridge (root only; simulated agents). Kept by the cluster.")
def up(masters: int | None, agents: int, state_dir: str, master_args: tuple[str, ...],
       runtime: str, count: int, agent_args: tuple[str, ...],
       insecure_http: bool | None, topology: str | None) -> None:
    """Start a local HA cluster (or the members of it that are not running), and wait
    until a leader is elected and every node is Ready. Run again, it starts whatever is
    not running and keeps the data. Without RK_CONFIG, ~/.raftkube/config.yaml is made
    a link to the cluster's config.yaml unless it is a file of your own (kept)."""
    from raftkube.cli import liveline

    where = os.path.abspath(state_dir)
    lines = liveline.LiveLines()
    try:
        started = local.up(state_dir=where, masters=masters or local.masters_in(where) or 3,
                           agents=agents, master_args=list(master_args) or None,
                           runtime=runtime, count=count, agent_args=list(agent_args),
                           insecure_http=insecure_http, topology=topology,
                           progress=lines.show)
    except errors.ClientError as e:
        lines.close()
        fail(str(e))
    lines.close()
    click.echo(f"cluster is up{' (started ' + ', '.join(started) + ')' if started else ''}")
    config = os.path.join(where, "config.yaml")
    if os.environ.get("RK_CONFIG"):
        if os.path.abspath(os.environ["RK_CONFIG"]) != config:
            click.echo(f"RK_CONFIG names another file; for this cluster: "
                       f"export RK_CONFIG={config}")
    else:
        try:
            click.echo(local.link_home_config(where))
        except OSError as e:
            click.echo(f"could not link {local.HOME_CONFIG} ({e.strerror}); "
                       f"export RK_CONFIG={config}")
    click.echo(f"kubectl: export KUBECONFIG={where}/kubeconfig")


@click.command()
@state_dir_option
@click.option("--timeout", default="10s", show_default=True,
              callback=lambda _c, _p, v: parse_duration(v),
              help="How long a member has to exit after SIGTERM before SIGKILL.")
def down(state_dir: str, timeout: float) -> None:
    """Stop everything `rk up` started and remove the cluster's containers, networks and
    volumes; return once every process has exited (SIGTERM, then SIGKILL after
    --timeout). Data, tokens and certificates are kept for the next `rk up`."""
    where = os.path.abspath(state_dir)
    if not os.path.exists(os.path.join(where, "cluster.yaml")):
        click.echo(f"no cluster in {where}: nothing to stop")
        return
    try:
        local.down(state_dir=where, timeout=timeout,
                   report=lambda name, how: click.echo(f"stopped {name}: {how}"))
    except errors.ClientError as e:
        fail(str(e))
    problem = local.docker_problem()
    if problem is not None:
        if local.used_docker(where):
            fail(f"the processes are stopped, but the cluster's containers could not be "
                 f"removed: {problem.removeprefix('--runtime docker: ')}; then run "
                 "`rk down` again")
        return
    removed, dirs = local.remove_containers(state_dir=where)
    networks, volumes = local.remove_networks_volumes(state_dir=where)
    if removed or dirs or networks or volumes:
        click.echo(f"removed {removed} container(s), {networks} network(s), {volumes} "
                   f"volume(s) and {len(dirs)} pod volume dir(s)")


