"""`rk describe`: an object in words, with what explains it (its Events, its pods, its
ReplicaSets, a Service's endpoints, a node's pods), as kubectl describes it.

This module reads: the objects named (`KIND NAME`, `KIND/NAME`, a name prefix, or a
selector) and, per object, what its describer shows beside it (`describers.Related`).
The text itself is `describers`' job. A name that matches no object exactly stands for
every object whose name starts with it, as in kubectl.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds
from raftkube.cli import describers
from raftkube.cli.describetext import get, selector_text
from raftkube.cli.session import Session, connect, fail, parse_targets, report, run
from raftkube.client import errors

Obj = dict[str, Any]
# What each kind's pods are counted by (its own pods: selected and controlled by it).
POD_OWNERS = frozenset({"ReplicaSet", "DaemonSet", "Job"})


async def related(session: Session, kind: kinds.Kind, obj: Obj) -> describers.Related:
    """What the describer of `obj` shows beside it; Events it may not read are left out."""
    client = session.client
    meta = obj.get("metadata") or {}
    name, ns, uid = meta.get("name", ""), meta.get("namespace") or "", meta.get("uid", "")
    rel = describers.Related()
    fields = [f"involvedObject.name={name}", f"involvedObject.kind={kind.kind}"]
    if ns:
        fields.append(f"involvedObject.namespace={ns}")
    try:
        found, _ = await client.list_all(kinds.EVENT, ns or None,
                                         field_selector=",".join(fields))
        # A node's own events name it by its name (the agent's habit and kubelet's);
        # events of an older object of the same name are not this one's.
        rel.events = [e for e in found
                      if get(e, "involvedObject", "uid") in ("", None, uid, name)]
    except errors.ApiError as e:
        if e.code not in (401, 403):
            raise
    selector = selector_text(get(obj, "spec", "selector"))
    if kind.kind in POD_OWNERS and selector:
        pods, _ = await client.list_all(kinds.POD, ns, label_selector=selector)
        rel.pods = [p for p in pods if _controlled_by(p, uid)]
    elif kind.kind == "Deployment" and selector:
        sets, _ = await client.list_all(kinds.REPLICASET, ns, label_selector=selector)
        rel.replicasets = [rs for rs in sets if _controlled_by(rs, uid)]
    elif kind.kind == "Service":
        rel.slices, _ = await client.list_all(
            kinds.ENDPOINTSLICE, ns, label_selector=f"kubernetes.io/service-name={name}")
    elif kind.kind == "Node":
        rel.pods, _ = await client.list_all(kinds.POD, None,
                                            field_selector=f"spec.nodeName={name}")
    return rel


def _controlled_by(obj: Obj, uid: str) -> bool:
    return any(isinstance(r, dict) and r.get("controller") and r.get("uid") == uid
               for r in get(obj, "metadata", "ownerReferences") or [])


async def _named(session: Session, kind: kinds.Kind, name: str) -> list[Obj]:
    """The object called `name`, or else those whose names start with it (kubectl's
    prefix match); NotFound when there are none."""
    try:
        return [await session.client.get(kind, session.namespace, name)]
    except errors.ApiError as e:
        if e.code != 404:
            raise
        objs, _ = await session.client.list_all(kind, session.namespace)
        found = [o for o in objs if str(get(o, "metadata", "name")).startswith(name)]
        if not found:
            raise
        return found


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    @click.command("describe")
    @click.argument("args", nargs=-1)
    @click.option("-n", "--namespace", help="Namespace to look in.")
    @click.option("-A", "--all-namespaces", is_flag=True, help="Look in every namespace.")
    @click.option("-l", "--selector", default="", help="Label selector, e.g. app=web.")
    @click.option("--show-events/--no-show-events", default=True, show_default=True,
                  help="Show the Events about each object.")
    def describe(args: tuple[str, ...], namespace: str | None, all_namespaces: bool,
                 selector: str, show_events: bool) -> None:
        """Show an object in detail: `rk describe KIND NAME`, `rk describe KIND/NAME`, or
        `rk describe KIND [-l SELECTOR]` for every one (a NAME also matches the names it
        begins)."""
        if not args:
            fail('You must specify the type of resource to describe. Use "rk api-resources" '
                 "for a complete list of supported resources.")
        try:
            targets = parse_targets(args)
            if selector and any(names for _, names in targets):
                raise errors.ClientError("name cannot be provided when a selector is specified")
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)
        texts: list[str] = []
        failed = False

        async def body() -> None:
            nonlocal failed
            for kind, names in targets:
                objs: list[Obj] = []
                try:
                    if names:
                        for name in names:
                            try:
                                objs += await _named(session, kind, name)
                            except errors.ApiError as e:
                                report(e)
                                failed = True
                    else:
                        ns = None if all_namespaces else session.namespace
                        objs, _ = await session.client.list_all(kind, ns,
                                                                label_selector=selector)
                    for obj in objs:
                        rel = await related(session, kind, obj)
                        if not show_events:
                            rel.events = None
                        texts.append(describers.describe(kind.kind, obj, rel, clock()))
                except errors.ClientError as e:
                    fail(e)
            if not texts and not failed:
                where = f" in {session.namespace} namespace." if any(
                    k.namespaced for k, _ in targets) and not all_namespaces else ""
                click.echo(f"No resources found{where}", err=True)

        run(body, session)
        click.echo("\n\n".join(texts), nl=False)
        if failed:
            sys.exit(1)

    return [describe]
