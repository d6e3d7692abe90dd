"""`rk cluster status` (and its old name, `rk members`): every master as it sees itself,
and how many more may fail before the cluster stops taking writes.

The member list comes from any master that answers (`/v3/cluster/member/list`); then
each master is asked on its own, at once and briefly, for its status
(`/v3/maintenance/status`: term, leader, commit and applied index, revision) and its
readiness (`/readyz`). A master that does not answer is shown as unreachable and the
others are still shown. Nothing is written and the server is unchanged: these are the
answers it already gives.

Exit codes (documented in `rk cluster status --help`):
  0  a quorum of masters answers and they know a leader: the cluster takes writes;
  1  the command could not run: no configuration, or no master answered at all;
  2  some masters answered, but not a quorum of them, or they know no leader.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import asdict, dataclass
from typing import Any

import click

from raftkube.api import printers
from raftkube.cli.session import DEFAULT_WAIT, fail
from raftkube.client import config as cfg
from raftkube.client import errors, etcd, transport

EXIT_OK, EXIT_ERROR, EXIT_NO_QUORUM = 0, 1, 2
ASK_TIMEOUT = 3.0  # seconds one master has to answer for itself


@dataclass
class Master:
    name: str
    api: str
    raft: str
    id: str
    role: str = "unreachable"  # leader, follower, no leader, unreachable
    term: int | None = None
    revision: int | None = None
    commit: int | None = None
    applied: int | None = None
    health: str = "unreachable"
    leader: str = ""  # the ID of the leader it knows, "" for none

    @property
    def answered(self) -> bool:
        return self.term is not None


@dataclass(frozen=True)
class Summary:
    masters: int
    answering: int
    quorum: int
    margin: int  # how many more may fail while a quorum stays; negative: short of one
    leader: str  # the name of the leader the answering masters know, "" for none

    @property
    def code(self) -> int:
        return EXIT_OK if self.margin >= 0 and self.leader else EXIT_NO_QUORUM


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def from_answers(member: dict[str, Any], status: dict[str, Any] | None,
                 health: str | None) -> Master:
    """One row from a member-list entry, its own status (None: no answer) and its
    readiness (`ok`, `not ready: REASON`, or None)."""
    raft = str((member.get("peerURLs") or [""])[0]).removeprefix("http://")
    m = Master(name=str(member.get("name") or ""), api=str((member.get("clientURLs") or
                                                            ["<unknown>"])[0]),
               raft=raft, id=str(member.get("ID", "")))
    if status is None:
        return m
    header = status.get("header") or {}
    m.term = _int(status.get("raftTerm") or header.get("raft_term"))
    m.revision = _int(header.get("revision"))
    m.commit = _int(status.get("raftIndex"))
    m.applied = _int(status.get("raftAppliedIndex"))
    leader = str(status.get("leader") or "")
    m.leader = "" if leader in ("", "0") else leader
    m.role = "leader" if m.leader == m.id else "follower" if m.leader else "no leader"
    m.health = health or "unknown"
    return m


def summarize(masters: list[Master]) -> Summary:
    """The quorum, the margin, and the leader that the answering masters of the newest
    term name, if it answers too: for an election timeout after a leader dies, the
    others still name it, and it takes no writes."""
    quorum = len(masters) // 2 + 1
    answering = [m for m in masters if m.answered]
    leader = ""
    if answering:
        newest = max(m.term or 0 for m in answering)
        alive = {m.id for m in answering}
        named = [m.leader for m in answering
                 if m.term == newest and m.leader and m.leader in alive]
        if named:
            chosen = max(set(named), key=named.count)
            leader = next((m.name or m.id for m in masters if m.id == chosen), chosen)
    return Summary(masters=len(masters), answering=len(answering), quorum=quorum,
                   margin=len(answering) - quorum, leader=leader)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def render(masters: list[Master], summary: Summary) -> str:
    def cell(value: int | None) -> str:
        return "-" if value is None else str(value)

    rows = [["NAME", "API", "RAFT", "ROLE", "TERM", "REVISION", "COMMIT", "APPLIED",
             "HEALTH"]]
    rows += [[m.name or "<unnamed>", m.api, m.raft, m.role, cell(m.term), cell(m.revision),
              cell(m.commit), cell(m.applied), m.health] for m in masters]
    text = printers.tabulate(rows) + "\n"
    answered = (f"{summary.answering} of {_plural(summary.masters, 'master')} answer; "
                f"a quorum is {summary.quorum}: ")
    if summary.margin >= 0:
        text += answered + f"{_plural(summary.margin, 'more master')} may fail.\n"
    else:
        text += answered + ("no writes until " +
                            _plural(-summary.margin, "more master") + " answers.\n")
    if summary.margin >= 0 and not summary.leader:
        text += "No master knows a leader: no writes until one is elected.\n"
    return text


def warnings(summary: Summary) -> list[str]:
    if summary.masters % 2 == 0:
        return [f"{summary.masters} masters tolerate no more failures than "
                f"{summary.masters - 1} do: an even count adds a member to every quorum "
                "and no safety"]
    return []


async def _readiness(tp: transport.Transport) -> str:
    """`ok`, or the master's own reason (`not ready: no leader known`)."""
    try:
        answer = await tp.request("GET", "/readyz")
    except errors.ClientError as e:
        # The transport takes a 503 for "ask another master"; its reason is kept.
        found = re.search(r"unavailable \((.*)\)", str(e))
        return found.group(1).strip() if found else "unknown"
    return "ok" if answer.status < 300 else f"HTTP {answer.status}"


async def gather(store: etcd.EtcdClient) -> list[Master]:
    members = await store.members()

    async def ask(member: dict[str, Any]) -> Master:
        url = (member.get("clientURLs") or [""])[0]
        if not url:
            return from_answers(member, None, None)
        tp = transport.Transport([url], store.transport.token, ca=store.transport.ca,
                                 pinned=store.transport.pinned, timeout=ASK_TIMEOUT,
                                 wait=0, connect_timeout=min(2.0, ASK_TIMEOUT))
        try:
            status = await etcd.EtcdClient(tp).call("/v3/maintenance/status")
            health = await _readiness(tp)
            return from_answers(member, status, health)
        except errors.ClientError:
            return from_answers(member, None, None)
        finally:
            await tp.close()

    found = await asyncio.gather(*(ask(m) for m in members))
    return sorted(found, key=lambda m: (m.name or "~", m.raft))


def _status(output: str | None) -> None:
    context = click.get_current_context(silent=True)
    wait = (context.find_root().params.get("request_timeout") if context else None) \
        or DEFAULT_WAIT  # how long the member list may wait for any master (`rk --request-timeout`)

    async def body() -> list[Master]:
        config = cfg.load_config()
        async with transport.Transport(config.servers, config.token, ca=config.ca,
                                       wait=wait) as tp:
            return await gather(etcd.EtcdClient(tp))

    try:
        masters = asyncio.run(body())
    except errors.ClientError as e:
        fail(e)
    summary = summarize(masters)
    for text in warnings(summary):
        click.echo(f"Warning: {text}", err=True)
    if output == "json":
        click.echo(json.dumps({"masters": [asdict(m) for m in masters],
                               "summary": {**asdict(summary), "code": summary.code}},
                              indent=2))
    elif output == "yaml":
        click.echo(printers.to_yaml({"masters": [asdict(m) for m in masters],
                                     "summary": {**asdict(summary), "code": summary.code}}),
                   nl=False)
    else:
        click.echo(render(masters, summary), nl=False)
    sys.exit(summary.code)


HELP = """Every master: its addresses, role, term, revision, commit and applied index and
readiness, and how many more masters may fail before writes stop.

\b
Exit codes:
  0  a quorum of masters answers and knows a leader (the cluster takes writes)
  1  the command could not run (no configuration; no master answered at all)
  2  masters answered, but fewer than a quorum, or none knows a leader"""


OUTPUT = click.option("-o", "--output", type=click.Choice(["yaml", "json"]),
                      help="The same as yaml or json.")


@click.group("cluster")
def cluster() -> None:
    """The masters that make up the cluster."""


@cluster.command("status", help=HELP)
@OUTPUT
def status(output: str | None) -> None:
    _status(output)


@click.command("members", help="The same as `rk cluster status`.\n\n" + HELP)
@OUTPUT
def members(output: str | None) -> None:
    _status(output)


def register(group: click.Group) -> None:
    group.add_command(cluster)
    group.add_command(members)
