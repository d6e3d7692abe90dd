"""`rk rollout status|history|undo|restart|pause|resume KIND/NAME`, as kubectl's.

- status follows the object by watch (wait.states) and prints readiness.status's line
  whenever it changes, until done; exit 1 on a timeout or a state that waiting cannot
  fix (a progress deadline exceeded).
- history and undo read a Deployment's ReplicaSets through api/rollout.py, which the
  Deployment controller shares, so both agree on what a revision is. undo sends the
  merge patch api/rollout.undo() computes, precondition included (its docstring says
  why); a Conflict means the Deployment changed meanwhile, so it is read and computed
  again.
- restart, pause and resume are merge patches of the template's restartedAt annotation
  and of spec.paused.

DaemonSets have status and restart; their history lives in ControllerRevisions, which
raftkube does not keep, so history and undo say so. What is pure (the history table,
a template's description) is tested without a cluster.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import click

from raftkube.api import kinds, printers
from raftkube.api import rollout as revisions
from raftkube.cli import durations, readiness, wait
from raftkube.cli.session import (
    OperationError,
    Session,
    connect,
    each,
    fail,
    parse_targets,
    retry_conflicts,
    run,
)
from raftkube.client import errors

Obj = dict[str, Any]
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
UNDO_ATTEMPTS = 3  # a Deployment that keeps changing under an undo is reported, not chased
STATUS_KINDS = (kinds.DEPLOYMENT, kinds.DAEMONSET)


# ---- pure parts -------------------------------------------------------------------------


def history_table(kind: kinds.Kind, name: str, history: Iterable[tuple[int, Obj]]) -> str:
    """kubectl's `rollout history`: the object, then REVISION and CHANGE-CAUSE."""
    rows = [(str(v), ((rs.get("metadata") or {}).get("annotations") or {}).get(
        revisions.CHANGE_CAUSE) or "<none>") for v, rs in history]
    width = max([len("REVISION"), *(len(v) for v, _ in rows)]) + 2
    lines = [f"{printers.qualified(kind)}/{name} ", f"{'REVISION':<{width}}CHANGE-CAUSE"]
    lines += [f"{v:<{width}}{cause}" for v, cause in rows]
    return "\n".join(lines) + "\n\n"


def _probe(probe: Obj) -> str:
    """kubectl's one-line probe: `exec [true] delay=1s timeout=1s period=10s ...`."""
    if isinstance(probe.get("exec"), dict):
        what = f"exec [{' '.join(str(c) for c in probe['exec'].get('command') or [])}]"
    elif isinstance(probe.get("httpGet"), dict):
        h = probe["httpGet"]
        what = (f"http-get {str(h.get('scheme', 'HTTP')).lower()}://{h.get('host', '')}:"
                f"{h.get('port', '')}{h.get('path', '')}")
    elif isinstance(probe.get("tcpSocket"), dict):
        what = f"tcp-socket {probe['tcpSocket'].get('host', '')}:{probe['tcpSocket'].get('port')}"
    else:
        what = "unknown"
    return (f"{what} delay={probe.get('initialDelaySeconds', 0)}s "
            f"timeout={probe.get('timeoutSeconds', 1)}s period={probe.get('periodSeconds', 10)}s "
            f"#success={probe.get('successThreshold', 1)} "
            f"#failure={probe.get('failureThreshold', 3)}")


def _container(c: Obj) -> list[str]:
    lines = [f"   {c.get('name', '')}:", f"    Image:\t{c.get('image', '')}"]
    ports = [p for p in c.get("ports") or [] if isinstance(p, dict)]
    plural = "s" if len(ports) > 1 else ""
    lines.append(f"    Port{plural}:\t" + (", ".join(
        f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"))
    lines.append(f"    Host Port{plural}:\t" + (", ".join(
        f"{p.get('hostPort', 0)}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"))
    for key, title in (("command", "Command"), ("args", "Args")):
        if c.get(key):
            lines.append(f"    {title}:")
            lines += [f"      {x}" for x in c[key]]
    for key, title in (("limits", "Limits"), ("requests", "Requests")):
        amounts = ((c.get("resources") or {}).get(key)) or {}
        if amounts:
            lines.append(f"    {title}:")
            lines += [f"      {k}:\t{v}" for k, v in sorted(amounts.items())]
    for key, title in (("livenessProbe", "Liveness"), ("readinessProbe", "Readiness"),
                       ("startupProbe", "Startup")):
        if isinstance(c.get(key), dict):
            lines.append(f"    {title}:\t{_probe(c[key])}")
    env = [e for e in c.get("env") or [] if isinstance(e, dict)]
    if env:
        lines.append("    Environment:")
        lines += [f"      {e.get('name')}:\t{e.get('value', '')}" for e in env]
    else:
        lines.append("    Environment:\t<none>")
    mounts = [m for m in c.get("volumeMounts") or [] if isinstance(m, dict)]
    if mounts:
        lines.append("    Mounts:")
        lines += [f"      {m.get('mountPath')} from {m.get('name')} "
                  f"({'ro' if m.get('readOnly') else 'rw'})" for m in mounts]
    else:
        lines.append("    Mounts:\t<none>")
    return lines


def _listed(title: str, items: list[str]) -> list[str]:
    """`  Title:\tfirst` and `\tnext`..., or `<none>`."""
    if not items:
        return [f"  {title}:\t<none>"]
    return [f"  {title}:\t{items[0]}", *(f"\t{x}" for x in items[1:])]


def describe_template(template: Obj) -> str:
    """A pod template as kubectl's `rollout history --revision` shows it (`Pod Template:`)."""
    meta = template.get("metadata") or {}
    spec = template.get("spec") or {}
    lines = ["Pod Template:"]
    lines += _listed("Labels", [f"{k}={v}" for k, v in sorted((meta.get("labels")
                                                                 or {}).items())])
    annotations = sorted((meta.get("annotations") or {}).items())
    if annotations:
        lines += _listed("Annotations", [f"{k}: {v}" for k, v in annotations])
    if spec.get("serviceAccountName"):
        lines.append(f"  Service Account:\t{spec['serviceAccountName']}")
    for group, title in (("initContainers", "Init Containers"), ("containers", "Containers")):
        containers = [c for c in spec.get(group) or [] if isinstance(c, dict)]
        if containers:
            lines.append(f"  {title}:")
            for c in containers:
                lines += _container(c)
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
    if volumes:
        lines.append("  Volumes:")
        for v in volumes:
            source = next((k for k in v if k != "name"), "")
            lines += [f"   {v.get('name')}:", f"    Type:\t{source[:1].upper()}{source[1:]}"]
    else:
        lines.append("  Volumes:\t<none>")
    lines += _listed("Node-Selectors", [f"{k}={v}" for k, v in sorted(
        (spec.get("nodeSelector") or {}).items())])
    lines += _listed("Tolerations", [_toleration(t) for t in spec.get("tolerations") or []
                                     if isinstance(t, dict)])
    return "\n".join(lines) + "\n"


def _toleration(t: Obj) -> str:
    text = str(t.get("key", ""))
    if t.get("value"):
        text += f"={t['value']}"
    if t.get("effect"):
        text += f":{t['effect']}"
    if t.get("operator") == "Exists" and not t.get("key"):
        text = "op=Exists" + (f":{t['effect']}" if t.get("effect") else "")
    if t.get("tolerationSeconds") is not None:
        text += f" for {t['tolerationSeconds']}s"
    return text


def _ref(kind: kinds.Kind, name: str) -> str:
    return f"{printers.qualified(kind)}/{name}"


def _quoted(kind: kinds.Kind, name: str) -> str:
    return f'{kind.resource} "{name}"'


# ---- the commands -----------------------------------------------------------------------


def _one_target(args: tuple[str, ...]) -> tuple[kinds.Kind, str]:
    if not args:
        raise errors.ClientError("required resource not specified")
    targets = [(k, n) for k, names in parse_targets(args) for n in names]
    if not targets:
        raise errors.ClientError("required resource not specified")
    if len(targets) > 1:
        raise errors.ClientError("rollout status is only supported on individual "
                                 f"resources, but {len(targets)} were given")
    return targets[0]


def _targets(args: tuple[str, ...]) -> list[tuple[kinds.Kind, str]]:
    if not args:
        raise errors.ClientError("You must provide one or more resources by argument.")
    targets = [(k, n) for k, names in parse_targets(args) for n in names]
    if not targets:
        raise errors.ClientError("resource(s) were provided, but no name was specified")
    return targets


async def _get(session: Session, kind: kinds.Kind, name: str) -> Obj:
    try:
        return await session.client.get(kind, session.namespace, name)
    except errors.ApiError as e:
        raise OperationError(str(e)) from None


async def _patch(session: Session, kind: kinds.Kind, name: str, patch: Obj) -> Obj:
    try:
        return await session.client.patch(kind, session.namespace, name, patch)
    except errors.ApiError as e:
        raise OperationError(str(e)) from None


def _status(namespace: str | None, args: tuple[str, ...], timeout: str, watch: bool,
            revision: int) -> None:
    try:
        seconds = durations.argument("--timeout", timeout)
        kind, name = _one_target(args)
        if kind not in STATUS_KINDS:
            raise errors.ClientError(f"no status viewer has been implemented for {kind.kind}")
        if revision < 0:
            raise errors.ClientError("--revision: must be 0 (the newest) or more")
        if revision and kind != kinds.DEPLOYMENT:
            raise errors.ClientError("--revision is only supported for deployments")
        session = connect(namespace)
    except errors.ClientError as e:
        fail(e)

    def progress(obj: Obj) -> readiness.Progress:
        if revision:
            running = revisions.revision_of(obj)
            if running != revision:
                raise readiness.RolloutError(f"desired revision ({revision}) is different "
                                             f"from the running revision ({running})")
        return readiness.status(kind, obj)

    async def follow() -> None:
        shown = ""
        async for current in wait.states(session.client, kind, session.namespace, name=name):
            obj = current.get(name)
            if obj is None:
                raise readiness.RolloutError(f"object has been deleted: {_quoted(kind, name)}")
            now = progress(obj)
            if now.message != shown:
                click.echo(now.message)
                shown = now.message
            if now.done:
                return

    async def body() -> None:
        try:
            obj = await session.client.get(kind, session.namespace, name)
            if not watch:
                click.echo(progress(obj).message)
                return
            if seconds > 0:
                async with asyncio.timeout(seconds):
                    await follow()
            else:
                await follow()
        except TimeoutError:
            fail("timed out waiting for the condition")
        except readiness.RolloutError as e:
            fail(str(e))
        except errors.ClientError as e:
            fail(e)

    run(body, session)


async def _history(session: Session, kind: kinds.Kind, name: str, revision: int) -> None:
    d = await _get(session, kind, name)
    listed, _ = await session.client.list_all(kinds.REPLICASET, session.namespace)
    history = revisions.history(d, listed)
    if not revision:
        click.echo(history_table(kind, name, history), nl=False)
        return
    rs = next((rs for v, rs in history if v == revision), None)
    if rs is None:
        raise OperationError("error: unable to find the specified revision")
    # the template as the ReplicaSet has it, hash label included, as kubectl shows it
    template = (rs.get("spec") or {}).get("template") or {}
    click.echo(f"{_ref(kind, name)} with revision #{revision}")
    click.echo(describe_template(template))


async def _undo(session: Session, kind: kinds.Kind, name: str, to_revision: int) -> None:
    for _ in range(UNDO_ATTEMPTS):
        d = await _get(session, kind, name)
        listed, _ = await session.client.list_all(kinds.REPLICASET, session.namespace)
        try:
            plan = revisions.undo(d, listed, to_revision=to_revision)
        except revisions.RollbackError as e:
            raise OperationError(f"error: {e}") from None
        if plan.patch is None:
            click.echo(f"{_ref(kind, name)} {plan.message}")
            return
        try:
            await session.client.patch(kind, session.namespace, name, plan.patch)
        except errors.ApiError as e:
            if e.code == 409:
                continue  # changed since it was read: read it again
            raise OperationError(str(e)) from None
        click.echo(f"{_ref(kind, name)} {plan.message}")
        return
    raise OperationError(f"error: {_quoted(kind, name)} kept changing during the rollback; "
                         "try again")


async def _pause(session: Session, kind: kinds.Kind, name: str, *, paused: bool) -> None:
    """Set spec.paused with the version read; a Deployment changed meanwhile (its status,
    mid-rollout) is read again rather than reported as a Conflict."""

    async def attempt() -> None:
        obj = await _get(session, kind, name)
        if bool((obj.get("spec") or {}).get("paused")) == paused:
            state = "already paused" if paused else "not paused"
            raise OperationError(f"error: {_quoted(kind, name)} is {state}")
        version = (obj.get("metadata") or {}).get("resourceVersion", "")
        await session.client.patch(kind, session.namespace, name, {
            "metadata": {"resourceVersion": version}, "spec": {"paused": paused}})

    try:
        await retry_conflicts(attempt)
    except errors.ApiError as e:
        raise OperationError(str(e)) from None
    click.echo(f"{_ref(kind, name)} {'paused' if paused else 'resumed'}")


def commands(clock: Callable[[], datetime]) -> list[click.Command]:
    namespace_option = click.option("-n", "--namespace", help="Namespace of the object.")

    @click.group("rollout")
    def rollout() -> None:
        """Manage the rollout of Deployments (and DaemonSets): status, history, undo,
        restart, pause, resume."""

    @rollout.command("status")
    @click.argument("args", nargs=-1)
    @namespace_option
    @click.option("--timeout", default="0s", show_default=True,
                  help="How long to watch (0: until done).")
    @click.option("-w", "--watch", type=click.BOOL, default=True, show_default=True,
                  help="Watch until the rollout is done (false: show the status once).")
    @click.option("--revision", default=0, type=int,
                  help="Fail unless the newest revision is this one (deployments).")
    def status(args: tuple[str, ...], namespace: str | None, timeout: str, watch: bool,
               revision: int) -> None:
        """Show a rollout's status, by default until it is done."""
        _status(namespace, args, timeout, watch, revision)

    def each_target(args: tuple[str, ...], namespace: str | None, allowed: tuple[kinds.Kind,
                    ...], refuse: Callable[[kinds.Kind, str], str],
                    step: Callable[[Session, kinds.Kind, str], Any]) -> None:
        try:
            targets = _targets(args)
            session = connect(namespace)
        except errors.ClientError as e:
            fail(e)

        async def one(target: tuple[kinds.Kind, str]) -> None:
            kind, name = target
            if kind not in allowed:
                raise OperationError(f"error: {refuse(kind, name)}")
            await step(session, kind, name)

        async def body() -> None:
            if await each(targets, one):
                sys.exit(1)

        run(body, session)

    @rollout.command("history")
    @click.argument("args", nargs=-1)
    @namespace_option
    @click.option("--revision", default=0, type=int, help="Show this revision's template.")
    def history(args: tuple[str, ...], namespace: str | None, revision: int) -> None:
        """List a Deployment's revisions, or show one revision's pod template."""
        if revision < 0:
            fail("--revision: must be 0 (every revision) or more")
        each_target(args, namespace, (kinds.DEPLOYMENT,), _no_history,
                    lambda s, k, n: _history(s, k, n, revision))

    @rollout.command("undo")
    @click.argument("args", nargs=-1)
    @namespace_option
    @click.option("--to-revision", default=0, type=int,
                  help="The revision to go back to (0: the one before the newest).")
    def undo(args: tuple[str, ...], namespace: str | None, to_revision: int) -> None:
        """Roll a Deployment back to an earlier revision."""
        if to_revision < 0:
            fail("--to-revision: must be 0 (the previous revision) or more")
        each_target(args, namespace, (kinds.DEPLOYMENT,), _no_history,
                    lambda s, k, n: _undo(s, k, n, to_revision))

    @rollout.command("restart")
    @click.argument("args", nargs=-1)
    @namespace_option
    def restart(args: tuple[str, ...], namespace: str | None) -> None:
        """Restart every pod of a Deployment or DaemonSet, by a rollout."""
        async def step(session: Session, kind: kinds.Kind, name: str) -> None:
            obj = await _get(session, kind, name)
            if (obj.get("spec") or {}).get("paused"):
                raise OperationError(f"error: {_quoted(kind, name)} can't restart paused "
                                     "deployment (run rollout resume first)")
            stamp = clock().strftime("%Y-%m-%dT%H:%M:%SZ")
            await _patch(session, kind, name, {"spec": {"template": {"metadata": {
                "annotations": {RESTARTED_AT: stamp}}}}})
            click.echo(f"{_ref(kind, name)} restarted")

        each_target(args, namespace, STATUS_KINDS,
                    lambda k, n: f"{_quoted(k, n)} restarting is not supported", step)

    def pauser(verb: str, paused: bool) -> click.Command:
        def command(args: tuple[str, ...], namespace: str | None) -> None:
            each_target(args, namespace, (kinds.DEPLOYMENT,),
                        lambda k, n: f"{_quoted(k, n)} {verb[:-2]}ing is not supported",
                        lambda s, k, n: _pause(s, k, n, paused=paused))

        command.__doc__ = ("Pause a Deployment: template changes wait until it is resumed."
                           if paused else "Resume a paused Deployment.")
        return rollout.command(verb[:-1])(
            namespace_option(click.argument("args", nargs=-1)(command)))

    pauser("paused", True)
    pauser("resumed", False)
    return [rollout]


def _no_history(kind: kinds.Kind, name: str) -> str:
    if kind == kinds.DAEMONSET:
        return (f"{_quoted(kind, name)}: rollout history needs ControllerRevisions, which "
                "raftkube does not keep for daemon sets")
    return f'no history viewer has been implemented for "{kind.kind}"'
