"""The `vagrant` provider: the machines are the VMs of a Vagrantfile.

It reads `vagrant status --machine-readable` (run where the masters run, in the current
directory or the one `VAGRANT_CWD` names, as vagrant itself looks for its Vagrantfile),
whose lines are `timestamp,target,type,data...` with commas in data written
`%!(VAGRANT_COMMA)` and newlines `\\n` (vagrant's machine-readable format). A VM is a
machine unless its state is `not_created` (never made, or destroyed), and only such a
VM is reported gone: a Node whose name is no VM of the Vagrantfile is not this
provider's. Its Node is left to the node lifecycle controller (which sees its agent
silent), as is that of a VM that is halted, suspended or aborted (it still exists) or
removed from the Vagrantfile. The Node of a VM carries the VM's name (the
agent's `--name` is the name the Vagrantfile gives the machine); its providerID is
`vagrant://PROVIDER/NAME` and its instance type the vagrant provider (`virtualbox`,
`libvirt`, ...).

Load balancers are served by the agents in the VMs (nodelb.py), as with `local`.

`parse_status` is pure and tested on a recorded output; the command runs as an asyncio
subprocess with a timeout, so a slow vagrant blocks no other loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raftkube.cloud import nodelb
from raftkube.cloud import provider as pv

Obj = dict[str, Any]
COMMAND = ("vagrant", "status", "--machine-readable")
GONE = "not_created"


@dataclass(frozen=True)
class Vm:
    name: str
    state: str  # running, poweroff, saved, aborted, shutoff, not_created, ...
    provider: str = ""  # virtualbox, libvirt, ...


def unescape(text: str) -> str:
    return text.replace("%!(VAGRANT_COMMA)", ",").replace("\\n", "\n").replace("\\r", "\r")


def parse_status(output: str) -> list[Vm]:
    """The VMs of `vagrant status --machine-readable`'s output, in its order; lines that
    are not machine-readable (a plugin's chatter) are skipped."""
    states: dict[str, dict[str, str]] = {}
    for line in output.splitlines():
        parts = line.strip().split(",", 3)
        if len(parts) < 4 or not parts[0].isdigit() or not parts[1]:
            continue
        _, target, type_, data = parts
        found = states.setdefault(target, {})
        if type_ == "state":
            found["state"] = unescape(data)
        elif type_ == "provider-name":
            found["provider"] = unescape(data)
        elif type_ == "metadata" and data.startswith("provider,"):
            found.setdefault("provider", unescape(data.partition(",")[2]))
    return [Vm(name=name, state=s.get("state", ""), provider=s.get("provider", ""))
            for name, s in states.items() if "state" in s]


def machine_name(node: Obj) -> str:
    """The VM a Node runs on: from its providerID if it has one, else its name."""
    provider_id = str((node.get("spec") or {}).get("providerID") or "")
    if provider_id.startswith("vagrant://"):
        return provider_id.rsplit("/", 1)[-1]
    return str(node["metadata"]["name"])


class VagrantProvider:
    name = "vagrant"

    def __init__(self, *, command: Sequence[str] = COMMAND, timeout: float = 60.0) -> None:
        if shutil.which(command[0]) is None:
            raise pv.ProviderError(f"{command[0]} is not installed where this master runs "
                                   "(the vagrant provider runs `vagrant status` there)")
        self.command = tuple(command)
        self.timeout = timeout

    async def status(self) -> list[Vm]:
        proc = await asyncio.create_subprocess_exec(
            *self.command, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            said = err.decode(errors="replace").strip().splitlines()
            raise pv.ProviderError(f"{' '.join(self.command)} exited with "
                                   f"{proc.returncode}: {said[-1] if said else 'no message'}")
        return parse_status(out.decode(errors="replace"))

    async def machines(self, view: pv.View) -> list[pv.Machine]:
        addresses = {n["metadata"]["name"]: nodelb.internal_ip(n) for n in view.nodes}
        return [pv.Machine(name=vm.name, provider_id=f"vagrant://{vm.provider}/{vm.name}",
                           addresses=(addresses[vm.name],) if addresses.get(vm.name) else (),
                           instance_type=vm.provider)
                for vm in await self.status() if vm.state != GONE]

    async def exists(self, node: Obj, view: pv.View) -> bool:
        """False only for a VM of this Vagrantfile that is `not_created` (destroyed); a
        Node that is no VM of it (another provider's, an agent elsewhere, a status read
        in the wrong directory) is not this provider's to call gone."""
        provider_id = str((node.get("spec") or {}).get("providerID") or "")
        if provider_id and not provider_id.startswith("vagrant://"):
            return True
        name = machine_name(node)
        vm = next((vm for vm in await self.status() if vm.name == name), None)
        return vm is None or vm.state != GONE

    async def ensure_load_balancer(self, service: Obj, view: pv.View) -> list[str]:
        return nodelb.addresses(service, view)

    async def delete_load_balancer(self, service: Obj, view: pv.View) -> None:
        return None
