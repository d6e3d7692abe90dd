"""The agent's packet rules: a pod's packets for a ClusterIP (or for the cluster DNS
address) are sent to this agent's proxy listener (or DNS server), with iptables' nat
table, as kube-proxy's userspace mode did.

Several agents share one kernel on a development machine, so every agent owns its own
chains and touches nothing else:

- `RKSVC-TAG`: one DNAT rule per ClusterIP port (and two for DNS, UDP and TCP), to the
  agent's own listener on the proxy address;
- `RKPOD-TAG`: one rule per pod of this agent, `-s POD_IP -j RKSVC-TAG`, so that a pod's
  packets meet its own agent's rules, never another agent's (whose listeners may be
  gone: a `kill -9`ed agent leaves its rules behind until it or `rk down` cleans up,
  and then only its own pods are cut off, as they are from everything else it does);
- one jump `PREROUTING -j RKPOD-TAG`, with a comment naming the agent.

TAG is a hash of the node's name and address (`tag()`), so two clusters on one machine
(both with a node `n1`) never share chains. A sync writes both chains whole with one
`iptables-restore --noflush` (atomic: declaring a chain in the input flushes it, and
other chains are left alone), so it is idempotent and never shows a half-written table;
the jump is added only if `-C` does not find it. `remove()` deletes the jump and the
chains, and succeeds when they are already gone. `rules()` is the pure part.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

TABLE = "nat"
HOOK = "PREROUTING"


class RulesError(Exception):
    """iptables is missing or refused the rules (the message says which and why)."""


def tag(node: str, address: str) -> str:
    return hashlib.sha256(f"{node}\0{address}".encode()).hexdigest()[:10]


def chains(node: str, address: str) -> tuple[str, str]:
    """(the service chain, the pod chain) of an agent."""
    t = tag(node, address)
    return f"RKSVC-{t}", f"RKPOD-{t}"


@dataclass(frozen=True)
class Redirect:
    """Packets for `ip:port/protocol` go to `to_ip:to_port` instead."""

    ip: str
    port: int
    protocol: str  # tcp, udp
    to_ip: str
    to_port: int
    comment: str = ""


def _comment(text: str) -> list[str]:
    safe = "".join(c for c in text if c.isalnum() or c in "-_./: ")[:200]
    return ["-m", "comment", "--comment", f'"{safe}"'] if safe else []


def rules(*, node: str, address: str, pod_ips: Iterable[str],
          redirects: Iterable[Redirect]) -> str:
    """The iptables-restore input that makes both chains of the agent what they should
    be (and nothing else)."""
    svc, pod = chains(node, address)
    lines = ["*nat", f":{svc} - [0:0]", f":{pod} - [0:0]"]
    for ip in sorted(set(pod_ips)):
        lines.append(" ".join([f"-A {pod} -s {ip}/32", *_comment(f"pod of {node}"),
                               f"-j {svc}"]))
    for r in sorted(set(redirects), key=lambda r: (r.ip, r.port, r.protocol)):
        lines.append(" ".join([f"-A {svc} -d {r.ip}/32 -p {r.protocol} -m {r.protocol}",
                               f"--dport {r.port}", *_comment(r.comment),
                               f"-j DNAT --to-destination {r.to_ip}:{r.to_port}"]))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True,
         prefix: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise RulesError(f"{argv[0]} is not installed (the ClusterIP proxy needs it; "
                         "install the iptables package, or run the agent with --no-iptables)")
    try:
        done = subprocess.run([*prefix, *argv], input=stdin, capture_output=True, text=True,
                              timeout=30)
    except subprocess.TimeoutExpired as e:
        raise RulesError(f"{' '.join(argv)}: no answer in 30 s") from e
    if check and done.returncode != 0:
        raise RulesError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done


def _iptables(*args: str, prefix: Sequence[str], check: bool = True
              ) -> subprocess.CompletedProcess[str]:
    return _run(["iptables", "-w", "-t", TABLE, *args], check=check, prefix=prefix)


def _hook_args(node: str, address: str) -> list[str]:
    _, pod = chains(node, address)
    comment = [a.strip('"') for a in _comment(f"raftkube agent {node} {address}")]
    return [HOOK, *comment, "-j", pod]


class NetRules:
    """One agent's chains in the kernel."""

    def __init__(self, *, node: str, address: str, prefix: Sequence[str] = (),
                 verify_every: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.node = node
        self.address = address
        self.prefix = tuple(prefix)  # e.g. `ip netns exec NS`: the rules of another netns
        # Unchanged rules are checked against the kernel (someone may have removed the
        # jump) this often, not at every sync: each check is an iptables process.
        self.verify_every = verify_every
        self.clock = clock
        self._last: str | None = None
        self._verified = 0.0

    def sync(self, *, pod_ips: Iterable[str], redirects: Iterable[Redirect]) -> bool:
        """Make the chains what they should be; True if anything was written."""
        text = rules(node=self.node, address=self.address, pod_ips=pod_ips,
                     redirects=redirects)
        if text == self._last:
            if self.clock() - self._verified < self.verify_every:
                return False
            self._verified = self.clock()
            if hooked(self.node, self.address, prefix=self.prefix):
                return False
        _run(["iptables-restore", "-w", "--noflush"], stdin=text, prefix=self.prefix)
        if not hooked(self.node, self.address, prefix=self.prefix):
            _iptables("-I", *_hook_args(self.node, self.address), prefix=self.prefix)
        self._last = text
        self._verified = self.clock()
        return True

    def remove(self) -> None:
        remove(self.node, self.address, prefix=self.prefix)
        self._last = None


def remove(node: str, address: str, *, prefix: Sequence[str] = ()) -> None:
    """Delete an agent's jump and chains (what is already gone is fine)."""
    while hooked(node, address, prefix=prefix):
        _iptables("-D", *_hook_args(node, address), prefix=prefix)
    existing = [c for c in chains(node, address)
                if _iptables("-L", c, "-n", prefix=prefix, check=False).returncode == 0]
    for chain in existing:  # emptied first: the pod chain jumps to the service chain
        _iptables("-F", chain, prefix=prefix)
    for chain in existing:
        _iptables("-X", chain, prefix=prefix)


def present(node: str, address: str, *, prefix: Sequence[str] = ()
            ) -> Mapping[str, list[str]]:
    """chain -> its rules as `iptables -S` prints them, for the agent's chains that
    exist (tests read it)."""
    out: dict[str, list[str]] = {}
    for chain in chains(node, address):
        done = _iptables("-S", chain, prefix=prefix, check=False)
        if done.returncode == 0:
            out[chain] = done.stdout.splitlines()
    return out


def hooked(node: str, address: str, *, prefix: Sequence[str] = ()) -> bool:
    """Whether the agent's jump is in PREROUTING."""
    return _iptables("-C", *_hook_args(node, address), prefix=prefix,
                     check=False).returncode == 0
