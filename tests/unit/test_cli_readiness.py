"""`readiness.status`: kubectl's rollout status words for each kind, from tables."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.cli import readiness

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def obj(name: str = "front", *, generation: int = 2, spec: Obj | None = None,
        status: Obj | None = None) -> Obj:
    return {"metadata": {"name": name, "generation": generation},
            "spec": spec or {}, "status": status or {}}


def deploy(wanted: int = 3, **status: Any) -> Obj:
    return obj(spec={"replicas": wanted}, status={"observedGeneration": 2, **status})


WAIT = 'Waiting for deployment "front" rollout to finish: '


@pytest.mark.parametrize(("d", "done", "message"), [
    (obj(status={"observedGeneration": 1}), False,
     "Waiting for deployment spec update to be observed..."),
    (deploy(updatedReplicas=1, replicas=3), False,
     WAIT + "1 out of 3 new replicas have been updated..."),
    (deploy(updatedReplicas=3, replicas=5, availableReplicas=3), False,
     WAIT + "2 old replicas are pending termination..."),
    (deploy(updatedReplicas=3, replicas=3, availableReplicas=1), False,
     WAIT + "1 of 3 updated replicas are available..."),
    (deploy(updatedReplicas=3, replicas=3, availableReplicas=3), True,
     'deployment "front" successfully rolled out'),
    # replicas unset means 1, as the API defaults it
    (obj(spec={}, status={"observedGeneration": 2, "updatedReplicas": 1, "replicas": 1,
                          "availableReplicas": 1}), True,
     'deployment "front" successfully rolled out'),
    (deploy(0), True, 'deployment "front" successfully rolled out'),
])
def test_deployment(d: Obj, done: bool, message: str) -> None:
    assert readiness.status(kinds.DEPLOYMENT, d) == readiness.Progress(done, message)


def test_deployment_past_its_deadline_is_an_error() -> None:
    d = deploy(updatedReplicas=1, replicas=3, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}])
    with pytest.raises(readiness.RolloutError,
                       match='^deployment "front" exceeded its progress deadline$'):
        readiness.status(kinds.DEPLOYMENT, d)
    # not yet observed: the deadline belongs to the previous spec
    d["metadata"]["generation"] = 3
    assert not readiness.status(kinds.DEPLOYMENT, d).done


DS_WAIT = 'Waiting for daemon set "front" rollout to finish: '


@pytest.mark.parametrize(("status", "done", "message"), [
    ({"observedGeneration": 1}, False, "Waiting for daemon set spec update to be observed..."),
    ({"observedGeneration": 2, "desiredNumberScheduled": 2, "updatedNumberScheduled": 1},
     False, DS_WAIT + "1 out of 2 new pods have been updated..."),
    ({"observedGeneration": 2, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
      "numberAvailable": 0}, False, DS_WAIT + "0 of 2 updated pods are available..."),
    ({"observedGeneration": 2, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2,
      "numberAvailable": 2}, True, 'daemon set "front" successfully rolled out'),
])
def test_daemonset(status: Obj, done: bool, message: str) -> None:
    ds = obj(status=status)
    assert readiness.status(kinds.DAEMONSET, ds) == readiness.Progress(done, message)


def test_daemonset_on_delete_is_an_error() -> None:
    ds = obj(spec={"updateStrategy": {"type": "OnDelete"}}, status={"observedGeneration": 2})
    with pytest.raises(readiness.RolloutError, match="only available for RollingUpdate"):
        readiness.status(kinds.DAEMONSET, ds)


STS = kinds.Kind("apps", "v1", "StatefulSet", "statefulsets", True, ("sts",))


@pytest.mark.parametrize(("spec", "status", "done", "message"), [
    ({"replicas": 3}, {}, False, "Waiting for statefulset spec update to be observed..."),
    ({"replicas": 3}, {"observedGeneration": 2, "readyReplicas": 1}, False,
     "Waiting for 2 pods to be ready..."),
    ({"replicas": 3, "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"partition": 1}}},
     {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1}, False,
     "Waiting for partitioned roll out to finish: 1 out of 2 new pods have been updated..."),
    ({"replicas": 3, "updateStrategy": {"type": "RollingUpdate",
                                        "rollingUpdate": {"partition": 1}}},
     {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 2}, True,
     "partitioned roll out complete: 2 new pods have been updated..."),
    ({"replicas": 3}, {"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1,
                       "currentRevision": "a-1", "updateRevision": "a-2"}, False,
     "waiting for statefulset rolling update to complete 1 pods at revision a-2..."),
    ({"replicas": 3}, {"observedGeneration": 2, "readyReplicas": 3, "currentReplicas": 3,
                       "currentRevision": "a-2", "updateRevision": "a-2"}, True,
     "statefulset rolling update complete 3 pods at revision a-2..."),
])
def test_statefulset(spec: Obj, status: Obj, done: bool, message: str) -> None:
    sts = obj(spec=spec, status=status)
    assert readiness.status(STS, sts) == readiness.Progress(done, message)


def test_replicaset() -> None:
    rs = obj("front-abc", spec={"replicas": 2},
             status={"observedGeneration": 2, "availableReplicas": 1})
    assert readiness.status(kinds.REPLICASET, rs) == readiness.Progress(
        False, 'Waiting for replica set "front-abc" to be available: 1 of 2 replicas are '
               "available...")
    rs["status"]["availableReplicas"] = 2
    assert readiness.status(kinds.REPLICASET, rs).done


def pod(phase: str = "Running", ready: bool = False, **status: Any) -> Obj:
    cond = [{"type": "Ready", "status": "True" if ready else "False"}]
    return obj("web-1", status={"phase": phase, "conditions": cond, **status})


@pytest.mark.parametrize(("p", "done", "message"), [
    (pod("Pending"), False, 'Waiting for pod "web-1" to be ready: it is Pending...'),
    (pod("Running"), False, 'Waiting for pod "web-1" to be ready: it is Running...'),
    (pod("Running", ready=True), True, 'pod "web-1" is ready'),
    (pod("Succeeded"), True, 'pod "web-1" completed'),
    ({"metadata": {"name": "web-1"}}, False,
     'Waiting for pod "web-1" to be ready: it is Pending...'),
])
def test_pod(p: Obj, done: bool, message: str) -> None:
    assert readiness.status(kinds.POD, p) == readiness.Progress(done, message)


def test_failed_pod_is_an_error() -> None:
    with pytest.raises(readiness.RolloutError, match='^pod "web-1" failed: Evicted$'):
        readiness.status(kinds.POD, pod("Failed", reason="Evicted"))


def test_job() -> None:
    j = obj("batch", spec={"completions": 3}, status={"succeeded": 1})
    assert readiness.status(kinds.JOB, j) == readiness.Progress(
        False, 'Waiting for job "batch" to complete: 1 of 3 completions succeeded...')
    j["status"]["conditions"] = [{"type": "Complete", "status": "True"}]
    assert readiness.status(kinds.JOB, j) == readiness.Progress(True, 'job "batch" completed')
    j["status"]["conditions"] = [{"type": "Failed", "status": "True",
                                  "reason": "BackoffLimitExceeded",
                                  "message": "Job has reached the specified backoff limit"}]
    with pytest.raises(readiness.RolloutError, match='^job "batch" failed: '
                       "BackoffLimitExceeded: Job has reached the specified backoff limit$"):
        readiness.status(kinds.JOB, j)


@pytest.mark.parametrize("kind", [kinds.SERVICE, kinds.CONFIGMAP, kinds.NAMESPACE,
                                  kinds.NODE])
def test_other_kinds_are_done_once_they_exist(kind: kinds.Kind) -> None:
    assert readiness.status(kind, obj("x")) == readiness.Progress(
        True, f'{kind.kind.lower()} "x" exists')


def test_children_name_a_stuck_pod() -> None:
    d = deploy(updatedReplicas=3, replicas=3, availableReplicas=1)
    fine = pod("Running", containerStatuses=[{"state": {"running": {}}}])
    bad = pod("Pending", containerStatuses=[
        {"state": {"waiting": {"reason": "ImagePullBackOff"}}}])
    assert readiness.status(kinds.DEPLOYMENT, d, children=[fine]).blocked == ""
    got = readiness.status(kinds.DEPLOYMENT, d, children=[fine, bad])
    assert got == readiness.Progress(False, WAIT + "1 of 3 updated replicas are available...",
                                     "pod/web-1: ImagePullBackOff")
    # a done object is done whatever its pods say
    d["status"]["availableReplicas"] = 3
    assert readiness.status(kinds.DEPLOYMENT, d, children=[bad]).blocked == ""


@pytest.mark.parametrize("junk", [
    {}, {"metadata": None, "spec": None, "status": None},
    {"metadata": {"name": "x", "generation": "2"}, "spec": {"replicas": "3"},
     "status": {"updatedReplicas": True, "conditions": ["nope", None]}},
])
@pytest.mark.parametrize("kind", [kinds.DEPLOYMENT, kinds.DAEMONSET, kinds.REPLICASET,
                                  kinds.POD, kinds.JOB, STS])
def test_malformed_objects_do_not_crash(kind: kinds.Kind, junk: Obj) -> None:
    assert isinstance(readiness.status(kind, junk), readiness.Progress)
