"""`rk cordon|uncordon NODE...` and `rk drain NODE`, as kubectl's.

Cordoning is `spec.unschedulable`. Draining cordons, then evicts every pod of the node
through `pods/NAME/eviction` (a PodDisruptionBudget may refuse with 429: kubectl retries,
so do we), waits until each is gone, and says `node/NAME drained`.

Which pods may go is kubectl's rule, in `plan()` (pure, tested from tables): mirror pods
are left alone; DaemonSet pods are left with --ignore-daemonsets (their controller would
put them straight back) and refuse the drain without it; a pod no controller owns would
be lost for good, so it needs --force; a pod with emptyDir data loses it, so it needs
--delete-emptydir-data. A pod that has finished loses nothing and always goes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds
from raftkube.cli import durations, wait
from raftkube.cli.session import Session, connect, fail, report, retry_conflicts, run
from raftkube.client import errors, rest

Obj = dict[str, Any]
MIRROR = "kubernetes.io/config.mirror"
EVICT_RETRY = 5.0  # seconds between evictions a disruption budget refused, as kubectl


# ---- which pods go ----------------------------------------------------------------------


def _key(pod: Obj) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def _controller(pod: Obj) -> Obj | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def _finished(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


@dataclass
class Plan:
    """What a drain does: the pods to evict, kubectl's warnings, and the problems that
    stop it (each `REASON: ns/pod, ns/pod`)."""

    evict: list[Obj] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


_DAEMONSET = ("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)",
              "ignoring DaemonSet-managed Pods")
_LOCAL = ("cannot delete Pods with local storage (use --delete-emptydir-data to override)",
          "deleting Pods with local storage")
_UNMANAGED = ("cannot delete Pods that declare no controller (use --force to override)",
              "deleting Pods that declare no controller")


def plan(pods: Sequence[Obj], *, ignore_daemonsets: bool, delete_emptydir_data: bool,
         force: bool) -> Plan:
    """kubectl drain's filters over the pods of a node, in its order."""
    problems: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}

    def flag(kind: tuple[str, str], allowed: bool, pod: Obj) -> None:
        (notes if allowed else problems).setdefault(kind[allowed], []).append(_key(pod))

    out = Plan()
    for pod in pods:
        meta = pod.get("metadata") or {}
        if MIRROR in (meta.get("annotations") or {}):
            continue
        owner = _controller(pod)
        if owner is not None and owner.get("kind") == "DaemonSet":
            flag(_DAEMONSET, ignore_daemonsets, pod)
            continue
        ok = True
        if not _finished(pod):
            if any(isinstance(v, dict) and "emptyDir" in v
                   for v in (pod.get("spec") or {}).get("volumes") or []):
                flag(_LOCAL, delete_emptydir_data, pod)
                ok = ok and delete_emptydir_data
            if owner is None:
                flag(_UNMANAGED, force, pod)
                ok = ok and force
        if ok:
            out.evict.append(pod)
    out.errors = [f"{reason}: {', '.join(keys)}" for reason, keys in problems.items()]
    out.warnings = [f"{reason}: {', '.join(keys)}" for reason, keys in notes.items()]
    return out


def drain_failure(node: str, problems: Sequence[str]) -> str:
    """kubectl's report of a drain that stopped (for stderr)."""
    joined = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
    # kubectl's spacing, `error:` and the list run together
    lines = [f'error: unable to drain node "{node}" due to error:{joined}, continuing '
             "command...", "There are pending nodes to be drained:", f" {node}", *problems]
    return "\n".join(lines)


# ---- the commands -----------------------------------------------------------------------


async def _cordon(client: rest.RestClient, node: str, on: bool) -> None:
    """Set spec.unschedulable and say so, as kubectl does (already so is no error). The
    patch carries the version read; a Node changed meanwhile is read again."""
    word = "cordoned" if on else "uncordoned"

    async def attempt() -> bool:
        obj = await client.get(kinds.NODE, "", node)
        if bool((obj.get("spec") or {}).get("unschedulable")) == on:
            return False
        version = (obj.get("metadata") or {}).get("resourceVersion", "")
        # null removes the field, as kubectl's patch does when uncordoning
        await client.patch(kinds.NODE, "", node, {
            "metadata": {"resourceVersion": version},
            "spec": {"unschedulable": True if on else None}})
        return True

    changed = await retry_conflicts(attempt)
    click.echo(f"node/{node} {word}" if changed else f"node/{node} already {word}")


async def _evict(client: rest.RestClient, pod: Obj, *, grace: int, disable_eviction: bool
                 ) -> None:
    meta = pod["metadata"]
    ns, name = meta.get("namespace", ""), meta["name"]
    if disable_eviction:
        try:
            await client.delete(kinds.POD, ns, name, grace=None if grace < 0 else grace,
                                uid=meta.get("uid", ""))
        except errors.ApiError as e:
            # gone already (404), or replaced by a new pod of its name: the uid
            # precondition fails (409); either way the pod listed is gone, as kubectl sees it
            if e.code not in (404, 409):
                raise
        return
    body: Obj = {"apiVersion": "policy/v1", "kind": "Eviction",
                 "metadata": {"name": name, "namespace": ns}}
    if grace >= 0:
        body["deleteOptions"] = {"gracePeriodSeconds": grace}
    click.echo(f"evicting pod {ns}/{name}")
    while True:
        try:
            await client.request("POST", rest.path_of(kinds.POD, ns, name, "eviction"),
                                 body=body)
            return
        except errors.ApiError as e:
            if e.code == 404:
                return  # gone already
            if e.code != 429:
                raise
            click.echo(f'error when evicting pods/"{name}" -n "{ns}" (will retry after '
                       f"{EVICT_RETRY:g}s): {e.message}", err=True)
            await asyncio.sleep(EVICT_RETRY)


async def _gone(client: rest.RestClient, pod: Obj) -> None:
    """Until the pod is gone (or replaced by another of its name: another uid)."""
    meta = pod["metadata"]
    uid = meta.get("uid")
    await wait.until(client, kinds.POD, meta.get("namespace", ""), meta["name"],
                     lambda o: o is None or (o.get("metadata") or {}).get("uid") != uid)


async def _drain(session: Session, node: str, *, ignore_daemonsets: bool,
                 delete_emptydir_data: bool, force: bool, grace: int,
                 disable_eviction: bool) -> bool:
    """Drain `node`; whether it worked (a failure has been reported)."""
    client = session.client
    await _cordon(client, node, True)
    pods, _ = await client.list_all(kinds.POD, None, field_selector=f"spec.nodeName={node}")
    todo = plan(pods, ignore_daemonsets=ignore_daemonsets,
                delete_emptydir_data=delete_emptydir_data, force=force)
    if todo.errors:
        click.echo(drain_failure(node, todo.errors), err=True)
        return False
    if todo.warnings:
        click.echo(f"Warning: {'; '.join(todo.warnings)}", err=True)

    async def move(pod: Obj) -> None:
        await _evict(client, pod, grace=grace, disable_eviction=disable_eviction)
        await _gone(client, pod)
        verb = "deleted" if disable_eviction else "evicted"
        click.echo(f"pod/{pod['metadata']['name']} {verb}")

    await asyncio.gather(*(move(p) for p in todo.evict))
    click.echo(f"node/{node} drained")
    return True


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    def cordoner(name: str, on: bool, doc: str) -> click.Command:
        @click.command(name, help=doc)
        @click.argument("nodes", nargs=-1, required=True)
        def command(nodes: tuple[str, ...]) -> None:
            try:
                session = connect(None)
            except errors.ClientError as e:
                fail(e)
            failed = False

            async def body() -> None:
                nonlocal failed
                for node in nodes:
                    try:
                        await _cordon(session.client, node, on)
                    except errors.ApiError as e:
                        report(e)
                        failed = True
                    except errors.ClientError as e:
                        fail(e)

            run(body, session)
            if failed:
                sys.exit(1)

        return command

    @click.command("drain")
    @click.argument("node")
    @click.option("--ignore-daemonsets", is_flag=True,
                  help="Leave DaemonSet-managed pods (their controller keeps them anyway).")
    @click.option("--delete-emptydir-data", is_flag=True,
                  help="Evict pods with emptyDir volumes; their data is lost.")
    @click.option("--force", is_flag=True,
                  help="Also delete pods that no controller owns; they are not recreated.")
    @click.option("--grace-period", default=-1, show_default=True, type=int,
                  help="Seconds each pod gets to stop (-1: the pod's own).")
    @click.option("--timeout", default="0s", show_default=True,
                  help="How long the drain may take (0: no limit).")
    @click.option("--disable-eviction", is_flag=True,
                  help="Delete pods instead of evicting them (bypasses disruption budgets).")
    def drain(node: str, ignore_daemonsets: bool, delete_emptydir_data: bool, force: bool,
              grace_period: int, timeout: str, disable_eviction: bool) -> None:
        """Cordon a node, then evict its pods, for maintenance."""
        try:
            seconds = durations.argument("--timeout", timeout)
            session = connect(None)
        except errors.ClientError as e:
            fail(e)
        ok = True

        async def body() -> None:
            nonlocal ok
            job = _drain(session, node, ignore_daemonsets=ignore_daemonsets,
                         delete_emptydir_data=delete_emptydir_data, force=force,
                         grace=grace_period, disable_eviction=disable_eviction)
            try:
                if seconds > 0:
                    async with asyncio.timeout(seconds):
                        ok = await job
                else:
                    ok = await job
            except TimeoutError:
                click.echo(drain_failure(node, [f"global timeout reached: {timeout}"]),
                           err=True)
                ok = False
            except errors.ClientError as e:
                fail(e)

        run(body, session)
        if not ok:
            sys.exit(1)

    return [cordoner("cordon", True, "Mark nodes unschedulable: no new pods go there."),
            cordoner("uncordon", False, "Mark nodes schedulable again."), drain]
