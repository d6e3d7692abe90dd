"""Node addresses: which address a node has, which addresses are this machine's, and
the address pods reach their node at.

`rk up --agents N` runs N agents on one machine; each gets its own loopback address so
that its NodePorts, relay and other listeners never clash with another agent's:
`local_node_address(state_dir, k)` is 127.A.B.(k+1), with A.B a hash of the state dir,
so that two local clusters on one machine (two test runs) do not share addresses
either, and a cluster keeps its addresses from run to run. The Node reports it as its
InternalIP. The whole 127.0.0.0/8 is the loopback interface's on Linux, so these
addresses need no set-up.

The proxy address is where pods reach this node's proxy and DNS server: the Docker
bridge's gateway (`docker0`'s IPv4 address), read with the SIOCGIFADDR ioctl.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import ipaddress
import os
import socket
import struct

SIOCGIFADDR = 0x8915
DOCKER_BRIDGE = "docker0"


def local_node_address(state_dir: str, index: int) -> str:
    """The address of the `index`-th (from 1) agent of the local cluster in `state_dir`."""
    if not 1 <= index <= 254:
        raise ValueError(f"agent index {index}: a local cluster has agents 1 to 254")
    digest = hashlib.sha256(os.path.abspath(state_dir).encode()).digest()
    a = 1 + digest[0] % 254  # never 127.0.x.x, where masters and other programs are
    return f"127.{a}.{digest[1]}.{index + 1}"


def interface_ipv4(name: str) -> str | None:
    """The IPv4 address of network interface `name`, or None if it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR,
                                 struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


@functools.lru_cache(maxsize=256)
def is_local(address: str) -> bool:
    """Whether `address` is one of this machine's (a socket can be bound to it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return True
