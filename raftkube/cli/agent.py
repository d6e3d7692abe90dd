"""`rk agent`: one node agent (or `--count` simulated ones), until SIGTERM or SIGINT.

The token file holds either one token (for the node `--name`), or lines of
`token,node-name` as the masters' `--node-token-file` does, from which the agent takes
the lines of its nodes (`NAME-1` ... `NAME-N` with `--count N`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from raftkube.agent import agent as ag
from raftkube.api import quantity
from raftkube.client import config as cfg


def read_tokens(path: str, names: list[str]) -> list[tuple[str, str]]:
    """(node name, token) for each of `names`, from the token file."""
    try:
        with open(path) as f:
            lines = [ln.strip() for ln in f.read().splitlines()]
    except OSError as e:
        raise ValueError(f"--token-file: cannot read {path}: {e.strerror}") from None
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    by_node: dict[str, str] = {}
    bare = []
    for ln in lines:
        token, sep, node = ln.partition(",")
        if sep:
            by_node[node.strip()] = token.strip()
        else:
            bare.append(token.strip())
    if bare and not by_node and len(bare) == 1 and len(names) == 1:
        by_node[names[0]] = bare[0]
    missing = [n for n in names if len(by_node.get(n, "")) < 16]
    if missing:
        raise ValueError(f"--token-file: {path} has no token of at least 16 characters for "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                         "(one token, or `token,node-name` lines)")
    return [(n, by_node[n]) for n in names]


def read_ca(path: str) -> str:
    """`--ca-file`: the PEM text of the cluster's CA."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"--ca-file: cannot read {path}: {e.strerror}") from None
    problem = cfg.ca_problem(text)
    if problem:
        raise ValueError(f"--ca-file: {path}: {problem}")
    return text


def check_capacity(cpu: str, memory: str, pods: int) -> dict[str, str]:
    for flag, value in (("--cpu", cpu), ("--memory", memory)):
        try:
            if quantity.parse_quantity(value) <= 0:
                raise ValueError("must be more than zero")
        except ValueError as e:
            raise ValueError(f"{flag}: {e}") from None
    if pods <= 0:
        raise ValueError("--max-pods: must be more than zero")
    return {"cpu": cpu, "memory": memory, "pods": str(pods)}


def run(*, names: list[str], token_file: str, options: ag.AgentOptions) -> None:
    nodes = read_tokens(token_file, names)
    logging.basicConfig(
        level=os.environ.get("RK_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(nodes, options))


async def _serve(nodes: list[tuple[str, str]], options: ag.AgentOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("raftkube.agent").info(
        "agent: %d node(s) %s..., runtime %s, servers %s", len(nodes), nodes[0][0],
        options.runtime, ", ".join(options.servers))
    await ag.run(nodes=nodes, options=options, stop=stop)
