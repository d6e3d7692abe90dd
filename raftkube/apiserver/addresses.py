"""Service addresses: ClusterIPs from the configured range, NodePorts from 30000-32767.

Each address a Service holds is a key of its own (`/registry/ranges/nodeports/30080`,
`/registry/ranges/clusterips/10.96.0.10`, valued `namespace/name`). `Objects` creates
and deletes those keys in the same transaction as the Service, with a compare that the
key does not exist yet, so two Services can never hold one address, and a Service never
outlives its addresses or the other way round. This module chooses addresses, checks
requested ones, and works out which keys a Service holds; it writes nothing itself.
"""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any

from raftkube.api import validation
from raftkube.apiserver import status as stt
from raftkube.store import state as st
from raftkube.store.replica import Replica

NODEPORTS = b"/registry/ranges/nodeports/"
CLUSTERIPS = b"/registry/ranges/clusterips/"
NODEPORT_RANGE = (30000, 32767)


class Addresses:
    def __init__(self, replica: Replica, service_cidr: str, rng: random.Random) -> None:
        self.replica = replica
        self.service_cidr = service_cidr
        self.rng = rng

    async def allocate(self, svc: dict[str, Any], *, old: dict[str, Any] | None
                        ) -> list[bytes]:
        """Fill in the ClusterIP and NodePorts a Service needs; return the allocation keys
        it takes that `old` did not hold. The caller's transaction checks they are free."""
        spec = svc.setdefault("spec", {})
        old_keys = set(allocation_keys(old)) if old else set()
        wanted: list[bytes] = []
        if spec.get("clusterIP") in (None, ""):
            spec["clusterIP"] = await self.free_cluster_ip()
        elif spec["clusterIP"] != "None" and CLUSTERIPS + str(spec["clusterIP"]).encode() \
                not in old_keys:
            await self.check_requested_ip(svc, str(spec["clusterIP"]))
        if spec.get("clusterIP") not in ("None", ""):
            wanted.append(CLUSTERIPS + str(spec["clusterIP"]).encode())
        spec["clusterIPs"] = [spec["clusterIP"]]  # single-stack: validated to agree
        if spec.get("type") in ("NodePort", "LoadBalancer"):
            taken = await self.taken(NODEPORTS)
            for port in spec.get("ports") or []:
                if not isinstance(port, dict):
                    continue
                if port.get("nodePort") in (None, 0):
                    port["nodePort"] = self.free_port(taken)
                key = NODEPORTS + str(port["nodePort"]).encode()
                if key in taken and key not in old_keys:
                    raise stt.invalid("Service", "", svc["metadata"].get("name", ""), [
                        validation.Cause(
                            f"spec.ports[{spec['ports'].index(port)}].nodePort",
                            "FieldValueInvalid",
                            f"Invalid value: {port['nodePort']}: provided port is already "
                            "allocated")])
                taken.add(key)
                wanted.append(key)
        return [k for k in wanted if k not in old_keys]

    async def check_requested_ip(self, svc: dict[str, Any], ip: str) -> None:
        def refuse(detail: str) -> stt.ApiError:
            return stt.invalid("Service", "", svc["metadata"].get("name", ""), [
                validation.Cause("spec.clusterIP", "FieldValueInvalid",
                                 f"Invalid value: {json.dumps(ip)}: {detail}")])

        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise refuse("must be a valid IP address") from None
        net = ipaddress.ip_network(self.service_cidr)
        if address not in net or address in (net.network_address, net.broadcast_address):
            raise refuse(f"provided IP is not in the valid range. The range of valid IPs is "
                         f"{self.service_cidr}")
        held = await self.replica.range({"key": CLUSTERIPS + ip.encode(), "count_only": True})
        if held.get("count"):
            raise refuse("provided IP is already allocated")

    async def taken(self, prefix: bytes) -> set[bytes]:
        result = await self.replica.range({"key": prefix, "range_end": st.prefix_end(prefix),
                                           "keys_only": True})
        return {kv["key"] for kv in result.get("kvs") or []}

    def free_port(self, taken: set[bytes]) -> int:
        lo, hi = NODEPORT_RANGE
        for _ in range(64):
            port = self.rng.randint(lo, hi)
            if NODEPORTS + str(port).encode() not in taken:
                return port
        for port in range(lo, hi + 1):
            if NODEPORTS + str(port).encode() not in taken:
                return port
        raise stt.ApiError(500, "InternalError", "no NodePort is free in 30000-32767")

    async def free_cluster_ip(self) -> str:
        net = ipaddress.ip_network(self.service_cidr)
        taken = await self.taken(CLUSTERIPS)
        first, last = int(net.network_address) + 2, int(net.broadcast_address) - 1
        for _ in range(128 if first <= last else 0):
            ip = str(ipaddress.ip_address(self.rng.randint(first, last)))
            if CLUSTERIPS + ip.encode() not in taken:
                return ip
        for n in range(first, last + 1):  # nearly full: look at every address
            ip = str(ipaddress.ip_address(n))
            if CLUSTERIPS + ip.encode() not in taken:
                return ip
        raise stt.ApiError(500, "InternalError", f"no ClusterIP is free in {self.service_cidr}")


def allocation_keys(svc: dict[str, Any] | None) -> list[bytes]:
    if not svc or svc.get("kind") != "Service":
        return []
    spec = svc.get("spec") or {}
    out = []
    ip = spec.get("clusterIP")
    if ip and ip != "None":
        out.append(CLUSTERIPS + str(ip).encode())
    if spec.get("type") in ("NodePort", "LoadBalancer"):
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and port.get("nodePort"):
                out.append(NODEPORTS + str(port["nodePort"]).encode())
    return out


def keep_on_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A Service written without its addresses keeps the ones it was given. Runs before
    validation: values of the wrong type are left for it to report."""
    spec, old_spec = new.setdefault("spec", {}), old.get("spec") or {}
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return
    if spec.get("clusterIP") in (None, "") and old_spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
    if spec.get("clusterIPs") in (None, []) and old_spec.get("clusterIPs"):
        spec["clusterIPs"] = old_spec["clusterIPs"]
    ports = spec.get("ports")
    if not isinstance(ports, list):
        return
    old_ports = [p for p in old_spec.get("ports") or [] if isinstance(p, dict)]
    held_types = ("NodePort", "LoadBalancer")
    if spec.get("type") in (None, "ClusterIP") and old_spec.get("type") in held_types:
        held = {p.get("nodePort") for p in old_ports if type(p.get("nodePort")) is int}
        for p in ports:  # as Kubernetes drops them with the type that needs them
            if isinstance(p, dict) and type(p.get("nodePort")) is int and p["nodePort"] in held:
                p.pop("nodePort")
    if spec.get("type") == old_spec.get("type"):
        # A port keeps its nodePort when it keeps its name (or, unnamed, its number).
        by_name = {p["name"]: p.get("nodePort") for p in old_ports
                   if isinstance(p.get("name"), str) and p["name"]}
        by_number = {(p["port"], str(p.get("protocol", "TCP"))): p.get("nodePort")
                     for p in old_ports if type(p.get("port")) is int}
        for p in ports:
            if not isinstance(p, dict) or p.get("nodePort"):
                continue
            name, number = p.get("name"), p.get("port")
            if isinstance(name, str) and name:
                kept = by_name.get(name)
            elif type(number) is int:
                kept = by_number.get((number, str(p.get("protocol", "TCP"))))
            else:
                kept = None
            if kept:
                p["nodePort"] = kept
