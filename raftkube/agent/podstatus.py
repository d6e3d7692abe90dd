"""A pod's status as the kubelet reports it, computed from what the runtime says.

`pod_status(pod, state, ...)` is pure: the pod as the API has it, its runtime state,
which containers are ready (the prober's answer), which wait and why (the plan's
back-offs), and the time. It keeps what must not move when nothing changed (startTime,
the conditions' lastTransitionTime, the scheduler's PodScheduled), so computing it again
gives the same status and the kubelet writes only when something did change.

The phase follows Kubernetes' `getPhase`: Pending while a container waits to be created
or an init container has not succeeded; Running while a container runs, or all have
exited and the restart policy will run them again; Succeeded when all exited 0 for good;
Failed when they exited for good and one did not exit 0. Conditions as Kubernetes
words them: Initialized (a sidecar counts once it has started: it runs and its startup
probe passed), ContainersReady and Ready (False with ContainersNotReady and the unready
containers' names, sidecars included, or PodCompleted once the pod ended), and
PodScheduled.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Mapping
from typing import Any

from raftkube.agent import actions
from raftkube.agent import runtime as rt
from raftkube.api import conditions
from raftkube.api.timestamps import rfc3339

Obj = dict[str, Any]

TERMINAL = ("Succeeded", "Failed")


def terminated(c: rt.Container) -> Obj:
    return {"exitCode": c.exit_code if c.exit_code is not None else 0,
            "reason": c.reason or ("Completed" if c.exit_code == 0 else "Error"),
            "startedAt": rfc3339(c.started_at),
            "finishedAt": rfc3339(c.finished_at if c.finished_at is not None
                                  else c.started_at),
            "containerID": c.id}


def container_status(c: Obj, state: rt.PodState | None, *, ready: bool,
                     waiting: tuple[str, str] | None, pending: str,
                     started: bool = True) -> Obj:
    """One entry of containerStatuses; `pending` is the reason of a container that has
    not run yet (ContainerCreating, PodInitializing); `started` is False for a running
    container whose startup probe has not passed yet."""
    latest = state.latest(c["name"]) if state is not None else None
    out: Obj = {"name": c["name"], "image": str(c.get("image") or ""), "imageID": "",
                "ready": False, "restartCount": 0, "started": False,
                "state": {"waiting": {"reason": pending}}, "lastState": {}}
    if latest is None:
        if waiting is not None:  # not created: no image, or CreateContainerConfigError
            out["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        return out
    previous = state.previous(c["name"]) if state is not None else None
    out.update(imageID=latest.image_id, containerID=latest.id, restartCount=latest.attempt)
    if waiting is not None and latest.state == rt.EXITED:
        out["state"] = {"waiting": {"reason": waiting[0], "message": waiting[1]}}
        out["lastState"] = {"terminated": terminated(latest)}
        return out
    if previous is not None and previous.state == rt.EXITED:
        out["lastState"] = {"terminated": terminated(previous)}
    if latest.state == rt.RUNNING:
        out.update(ready=ready, started=started,
                   state={"running": {"startedAt": rfc3339(latest.started_at)}})
    else:
        out["state"] = {"terminated": terminated(latest)}
    return out


def _init_done(s: Obj) -> bool:
    t = (s.get("state") or {}).get("terminated")
    return isinstance(t, dict) and t.get("exitCode") == 0


def _sidecar_up(s: Obj) -> bool:
    """A sidecar has started: it runs, and its startup probe (if any) passed."""
    return "running" in (s.get("state") or {}) and s.get("started") is not False


def phase(policy: str, init: list[Obj], main: list[Obj], *, init_failed: bool,
          sidecars: Collection[str] = ()) -> str:
    """The pod's phase; `sidecars` are the names of the init containers that are
    sidecars (running counts as done for them, and they never make the pod end)."""
    if init_failed:
        return "Failed"
    if not _initialized(init, sidecars, app_ran=any(_ran(s) for s in main)):
        return "Pending"
    running = stopped = succeeded = waiting = 0
    for s in main:
        state = s.get("state") or {}
        if "running" in state:
            running += 1
        elif isinstance(state.get("terminated"), dict):
            stopped += 1
            succeeded += state["terminated"].get("exitCode") == 0
        elif (s.get("lastState") or {}).get("terminated"):
            stopped += 1  # waiting to restart
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"
    return "Pending"


def _initialized(init: list[Obj], sidecars: Collection[str], *, app_ran: bool) -> bool:
    """Every init container ended well and every sidecar has started; a sidecar
    restarting after the app containers have run does not undo it."""
    return all(_init_done(s) for s in init if s.get("name") not in sidecars) and (
        app_ran or all(_sidecar_up(s) for s in init if s.get("name") in sidecars))


def _ran(s: Obj) -> bool:
    state = s.get("state") or {}
    return "running" in state or "terminated" in state or bool(s.get("lastState"))


def _unready(names: list[str]) -> str:
    return f"containers with unready status: [{' '.join(names)}]"


def pod_status(pod: Obj, state: rt.PodState | None, *, now: float, host_ip: str,
               ready: Mapping[str, bool], plan: actions.Plan,
               started: Mapping[str, bool] | None = None) -> Obj:
    """`ready` and `started` are the probes' verdicts on the running containers, app
    containers and sidecars (a container `started` does not name has started once it
    runs; a sidecar `ready` does not name is ready once it has started)."""
    spec = pod.get("spec") or {}
    status: Obj = copy.deepcopy(pod.get("status") or {})
    init_specs = actions.named(spec.get("initContainers"))
    main_specs = actions.named(spec.get("containers"))
    sidecars = {c["name"] for c in init_specs if actions.is_sidecar(c)}
    init = [container_status(c, state, ready=False, waiting=plan.waiting.get(c["name"]),
                             started=(started or {}).get(c["name"], True),
                             pending="PodInitializing") for c in init_specs]
    for s in init:  # an init container that succeeded counts as ready; a sidecar that
        # has started as its readiness probe says (Kubernetes' prober manager)
        name = str(s.get("name"))
        s["ready"] = _sidecar_up(s) and ready.get(name, True) if name in sidecars \
            else _init_done(s)
    # Initialized once every init container has ended well (a sidecar: once it has
    # started), or once an app container has run (a sidecar that restarts later does
    # not undo it).
    initialized = _initialized(init, sidecars, app_ran=any(
        state is not None and state.latest(c["name"]) is not None for c in main_specs))
    main = [container_status(c, state, ready=ready.get(c["name"], False),
                             started=(started or {}).get(c["name"], True),
                             waiting=plan.waiting.get(c["name"]),
                             pending="ContainerCreating" if initialized else "PodInitializing")
            for c in main_specs]
    status["phase"] = phase(actions.restart_policy(pod), init, main,
                            init_failed=plan.init_failed, sidecars=sidecars)
    status.setdefault("startTime", rfc3339(now))
    status["hostIP"] = host_ip
    if state is not None:
        status["podIP"] = state.sandbox.ip
        status["podIPs"] = [{"ip": state.sandbox.ip}]
    if init:
        status["initContainerStatuses"] = init
    status["containerStatuses"] = main
    ended = status["phase"] in TERMINAL
    if initialized:
        conditions.put(status, {"type": "Initialized", "status": "True"}, now)
    else:
        left = [s["name"] for s in init if not _init_done(s)]
        conditions.put(status, {"type": "Initialized", "status": "False",
                                "reason": "ContainersNotInitialized",
                                "message": f"containers with incomplete status: "
                                           f"[{' '.join(left)}]"}, now)
    # ContainersReady covers the sidecars too (first, as Kubernetes lists them).
    unready = [s["name"] for s in init if s.get("name") in sidecars and not s["ready"]] + \
        [s["name"] for s in main if not s["ready"]]
    for kind in ("Ready", "ContainersReady"):
        if ended:
            cond = {"type": kind, "status": "False", "reason": "PodCompleted"}
        elif unready:
            cond = {"type": kind, "status": "False", "reason": "ContainersNotReady",
                    "message": _unready(unready)}
        else:
            cond = {"type": kind, "status": "True"}
        conditions.put(status, cond, now)
    if conditions.get({"status": status}, "PodScheduled") is None:
        conditions.put(status, {"type": "PodScheduled", "status": "True"}, now)
    return _tidy(status)


def _tidy(status: Obj) -> Obj:
    """A condition that turned True keeps no reason or message from when it was not."""
    for c in status.get("conditions") or []:
        if c.get("status") == "True" and c.get("type") != "PodScheduled":
            c.pop("reason", None)
            c.pop("message", None)
        elif c.get("reason") == "PodCompleted":
            c.pop("message", None)
    return status
