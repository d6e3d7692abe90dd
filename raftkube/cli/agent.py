"""`rk agent`: one node agent (or `--count` simulated ones), until SIGTERM or SIGINT.

The token file holds either one token (for the node `--name`), or lines of
`token,node-name` as the masters' `--node-token-file` does, from which the agent takes
the lines of its nodes (`NAME-1` ... `NAME-N` with `--count N`).
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import logging
import os
import re
import signal
import ssl
import tempfile

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


PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\s.*?-----END CERTIFICATE-----", re.S)


def serving_tls(name: str, address: str, cert_file: str | None = None,
                key_file: str | None = None) -> tuple[ssl.SSLContext, str]:
    """The agent's API over TLS (the masters pin its certificate by the fingerprint its
    Nodes publish): the server context and the fingerprint. With `--tls-cert-file` and
    `--tls-private-key-file` (the kubelet's flags), that certificate; without, one
    made for this run, whose key never touches a disk beyond a private temporary file,
    removed at once, as the kubelet makes one when it is given none."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("--tls-cert-file and --tls-private-key-file go together")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None and key_file is not None:
        try:
            with open(cert_file) as f:
                text = f.read()
        except OSError as e:
            raise ValueError(f"--tls-cert-file: cannot read {cert_file}: {e.strerror}"
                             ) from None
        # The first certificate is the one served (a file may go on with its chain, or
        # begin with text, as openssl's "Bag Attributes").
        first = PEM_CERTIFICATE.search(text)
        if first is None:
            raise ValueError(f"--tls-cert-file: {cert_file} holds no PEM certificate")
        try:
            der = ssl.PEM_cert_to_DER_cert(first.group(0))
        except ValueError:
            raise ValueError(f"--tls-cert-file: {cert_file}: its first certificate is "
                             "not valid PEM") from None
        try:
            context.load_cert_chain(cert_file, key_file)
        except OSError as e:  # ssl.SSLError is one
            raise ValueError(f"--tls-private-key-file: {key_file} is not the key of "
                             f"{cert_file}, or cannot be read: {e}") from None
        return context, hashlib.sha256(der).hexdigest()
    # Imported here only: cryptography maps about 8 MB that an agent given its
    # certificate (as `rk up`'s are) does not need to carry for its whole life.
    from raftkube.cli import certs

    cert, key, fingerprint = certs.self_signed(f"{name}-agent", [address])
    with tempfile.TemporaryDirectory(prefix="rk-agent-tls-") as d:
        os.chmod(d, 0o700)
        cert_path, key_path = os.path.join(d, "agent.crt"), os.path.join(d, "agent.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(cert_path, key_path)
    return context, fingerprint


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


M_ARENA_MAX = -8  # glibc's malloc.h


def fewer_malloc_arenas() -> None:
    """Two malloc arenas for the agent's threads (as MALLOC_ARENA_MAX=2 would give):
    glibc makes one per thread that allocates, up to eight per core, and memory freed in
    one stays with it, so the engine's worker threads, which decode its JSON, left an
    agent's RSS a few MB higher after every burst of pod starts. Nothing where the C
    library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        pass


def run(*, names: list[str], token_file: str, options: ag.AgentOptions,
        tls_cert_file: str | None = None, tls_key_file: str | None = None) -> None:
    nodes = read_tokens(token_file, names)
    fewer_malloc_arenas()
    options.serving_tls, options.serving_fingerprint = serving_tls(
        names[0], options.address, tls_cert_file, tls_key_file)
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
