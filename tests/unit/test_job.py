"""The Job controller over seeded caches: one reconcile, the actions it takes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkube.api import kinds
from raftkube.api.timestamps import rfc3339
from raftkube.client import workqueue
from raftkube.controllers import base, jobplan
from raftkube.controllers.job import JobController
from tests.unit.controller_fixture import T0, Fixture, conflict

pytestmark = pytest.mark.unit

Obj = dict[str, Any]


def job(name: str = "pi", *, status: Obj | None = None, **spec: Any) -> Obj:
    """A Job as the server stores it: defaults and the selector it sets."""
    uid = f"u-{name}"
    template_spec = {"containers": [{"name": "c", "image": "perl:5.34"}],
                     "restartPolicy": "Never"}
    template_spec.update(spec.pop("pod", {}))
    body: Obj = {"apiVersion": "batch/v1", "kind": "Job",
                 "metadata": {"name": name, "namespace": "ns", "uid": uid,
                              "generation": 1, "resourceVersion": "9"},
                 "spec": {"parallelism": 1, "backoffLimit": 6,
                          "completionMode": "NonIndexed", "suspend": False,
                          "selector": {"matchLabels": {"controller-uid": uid}},
                          "template": {"metadata": {"labels": {"controller-uid": uid,
                                                               "job-name": name}},
                                       "spec": template_spec}}}
    if "completions" not in spec and "parallelism" not in spec:
        body["spec"]["completions"] = 1
    body["spec"].update(spec)
    if status is not None:
        body["status"] = status
    return body


def pod_of(j: Obj, name: str, *, phase: str = "Running", index: int | None = None,
           finished: float | None = None, ready: bool = False, restarts: int = 0,
           **meta: Any) -> Obj:
    pod = jobplan.job_pod(j, index)
    pod["metadata"].update(name=name, uid=f"u-{name}", resourceVersion="4",
                           creationTimestamp=rfc3339(T0 - 100), **meta)
    pod["spec"]["nodeName"] = "n1"
    status: Obj = {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False",
         "lastTransitionTime": rfc3339(finished if finished is not None else T0 - 50)}]}
    status["containerStatuses"] = [{"name": "c", "restartCount": restarts, "state": (
        {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                        "finishedAt": rfc3339(finished if finished is not None else T0 - 50)}}
        if phase in ("Succeeded", "Failed") else {"running": {}})}]
    pod["status"] = status
    return pod


def setup(j: Obj, *pods: Obj, options: base.Options | None = None,
          now: float = T0) -> tuple[Fixture, JobController]:
    f = Fixture(now=now, options=options)
    f.seed(kinds.JOB, j)
    f.seed(kinds.POD, *pods)
    c = JobController(f.ctx)
    c.queue = workqueue.WorkQueue()  # what seeding queued: the tests reconcile by hand
    return f, c


def writes(actions: list[Any]) -> list[tuple[str, str]]:
    return [(a.verb, a.name) for a in actions if a.verb != "update_status"]


def status_of(actions: list[Any]) -> Obj:
    [update] = [a for a in actions if a.verb == "update_status"]
    status: Obj = update.body["status"]
    return status


def condition(status: Obj, type_: str) -> Obj:
    [found] = [c for c in status.get("conditions") or [] if c["type"] == type_]
    return found


def requeued_in(c: JobController, key: str = "ns/pi") -> float:
    at, _ = c.queue._waiting[key]
    return float(at - asyncio.get_running_loop().time())


async def test_a_new_job_starts_parallelism_pods_and_its_clock() -> None:
    f, c = setup(job(completions=5, parallelism=2))
    actions = await f.run(c, "ns/pi")
    made = [a.body for a in actions if a.verb == "create"]
    assert len(made) == 2
    pod = made[0]
    assert pod["metadata"]["generateName"] == "pi-"
    assert pod["metadata"]["labels"] == {"controller-uid": "u-pi", "job-name": "pi"}
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert status_of(actions) == {"startTime": rfc3339(T0), "active": 2, "ready": 0,
                                  "succeeded": 0, "failed": 0}
    assert sorted(f.recorded_events()) == sorted(
        ("Normal", "SuccessfulCreate", f"Created pod: {p['metadata']['name']}") for p in made)
    # Until the cache shows those two, nothing more is made.
    assert writes(await f.run(c, "ns/pi")) == []


@pytest.mark.parametrize(("completions", "succeeded", "active", "creates"), [
    (5, 0, 0, 2), (5, 3, 1, 1), (5, 4, 0, 1), (5, 4, 1, 0), (3, 2, 1, 0)])
async def test_never_more_active_than_the_completions_left(
        completions: int, succeeded: int, active: int, creates: int) -> None:
    j = job(completions=completions, parallelism=2)
    pods = [pod_of(j, f"s{i}", phase="Succeeded") for i in range(succeeded)]
    pods += [pod_of(j, f"a{i}") for i in range(active)]
    f, c = setup(j, *pods)
    actions = await f.run(c, "ns/pi")
    assert sum(1 for a in actions if a.verb == "create") == creates
    assert status_of(actions)["active"] == active + creates


async def test_too_many_active_pods_are_deleted_pending_first() -> None:
    j = job(completions=2, parallelism=1)
    pending = pod_of(j, "pending", phase="Pending")
    del pending["spec"]["nodeName"]
    f, c = setup(j, pod_of(j, "running", ready=True), pending)
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == [("delete", "pending")]
    assert status_of(actions)["active"] == 1


async def test_a_job_completes_when_its_completions_succeeded() -> None:
    j = job(completions=2, parallelism=2, status={"startTime": rfc3339(T0 - 60)})
    f, c = setup(j, pod_of(j, "a", phase="Succeeded"), pod_of(j, "b", phase="Succeeded"))
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == []
    status = status_of(actions)
    assert (status["succeeded"], status["active"], status["completionTime"]) == \
        (2, 0, rfc3339(T0))
    done = condition(status, "Complete")
    assert (done["status"], done["reason"], done["message"]) == \
        ("True", "CompletionsReached", "Reached expected number of succeeded pods")
    assert f.recorded_events() == [("Normal", "Completed", "Job completed")]
    # A finished Job is left alone.
    j["status"] = status
    f.seed(kinds.JOB, j)
    assert await f.run(c, "ns/pi") == []


async def test_without_completions_one_success_ends_it_once_the_rest_finish() -> None:
    j = job(parallelism=3)
    assert "completions" not in j["spec"]
    f, c = setup(j, pod_of(j, "won", phase="Succeeded"), pod_of(j, "still"))
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == []  # nothing new starts, nothing is killed
    assert "conditions" not in status_of(actions)
    f2, c2 = setup(j, pod_of(j, "won", phase="Succeeded"), pod_of(j, "lost", phase="Failed"))
    assert condition(status_of(await f2.run(c2, "ns/pi")), "Complete")["status"] == "True"
    # Not while a pod it has just made is missing from the cache: that one may be running.
    f3, c3 = setup(j, pod_of(j, "first"))
    made = [a.body for a in await f3.run(c3, "ns/pi") if a.verb == "create"]
    assert len(made) == 2
    f3.seed(kinds.POD, pod_of(j, "first", phase="Succeeded"))
    assert "conditions" not in status_of(await f3.run(c3, "ns/pi"))
    f3.seed(kinds.POD, *made)
    assert "conditions" not in status_of(await f3.run(c3, "ns/pi"))  # they run on


async def test_failed_pods_are_replaced_after_a_doubling_back_off() -> None:
    options = base.Options(job_backoff=10.0, job_backoff_cap=360.0)
    j = job(completions=1, backoffLimit=6)
    one = pod_of(j, "f1", phase="Failed", finished=T0 - 4)
    f, c = setup(j, one, options=options)
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == []
    assert 5.5 < requeued_in(c) <= 6.0
    assert status_of(actions)["failed"] == 1
    f, c = setup(j, one, options=options, now=T0 + 7)
    assert [a.verb for a in await f.run(c, "ns/pi")].count("create") == 1
    two = [pod_of(j, "f1", phase="Failed", finished=T0 - 30),
           pod_of(j, "f2", phase="Failed", finished=T0 - 15)]
    f, c = setup(j, *two, options=options)
    await f.run(c, "ns/pi")
    assert 4.5 < requeued_in(c) <= 5.0  # 20 s after the second failure
    # A success since resets it.
    j2 = job(completions=2, backoffLimit=6)
    f, c = setup(j2, pod_of(j2, "f1", phase="Failed", finished=T0 - 30),
                 pod_of(j2, "f2", phase="Failed", finished=T0 - 15),
                 pod_of(j2, "s", phase="Succeeded", finished=T0 - 10), options=options)
    assert [a.verb for a in await f.run(c, "ns/pi")].count("create") == 1


@pytest.mark.parametrize(("base_", "cap", "failures", "expected"), [
    (10, 360, 1, 10), (10, 360, 2, 20), (10, 360, 6, 320), (10, 360, 7, 360),
    (10, 360, 40, 360), (0.1, 1, 3, 0.4)])
def test_back_off_arithmetic(base_: float, cap: float, failures: int,
                             expected: float) -> None:
    j = job()
    pods = [pod_of(j, f"f{i}", phase="Failed", finished=T0 - 100 + i) for i in range(failures)]
    last = T0 - 100 + failures - 1
    assert jobplan.backoff_remaining(pods, last, base=base_, cap=cap) == pytest.approx(expected)


async def test_past_the_backoff_limit_the_job_fails_and_stops_its_pods() -> None:
    j = job(completions=3, parallelism=1, backoffLimit=1,
            status={"startTime": rfc3339(T0 - 60), "failed": 1})
    f, c = setup(j, pod_of(j, "f1", phase="Failed"), pod_of(j, "f2", phase="Failed"),
                 pod_of(j, "running"))
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == [("delete", "running")]
    status = status_of(actions)
    assert (status["failed"], status["active"]) == (3, 0)  # the running one counts failed
    failed = condition(status, "Failed")
    assert (failed["reason"], failed["message"]) == \
        ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert "completionTime" not in status
    assert ("Warning", "BackoffLimitExceeded", "Job has reached the specified backoff limit") \
        in f.recorded_events()


async def test_restarts_count_against_the_limit_with_restart_on_failure() -> None:
    j = job(backoffLimit=2, pod={"restartPolicy": "OnFailure"})
    f, c = setup(j, pod_of(j, "flappy", restarts=2))
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == [("delete", "flappy")]
    assert condition(status_of(actions), "Failed")["reason"] == "BackoffLimitExceeded"
    f, c = setup(j, pod_of(j, "flappy", restarts=1))
    assert writes(await f.run(c, "ns/pi")) == []


async def test_active_deadline() -> None:
    j = job(activeDeadlineSeconds=30, status={"startTime": rfc3339(T0 - 20)})
    f, c = setup(j, pod_of(j, "slow"))
    assert writes(await f.run(c, "ns/pi")) == []
    assert 9.5 < requeued_in(c) <= 10.0  # looked at again when the deadline comes
    f, c = setup(j, pod_of(j, "slow"), now=T0 + 10)
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == [("delete", "slow")]
    failed = condition(status_of(actions), "Failed")
    assert (failed["reason"], failed["message"]) == \
        ("DeadlineExceeded", "Job was active longer than specified deadline")
    assert ("Warning", "DeadlineExceeded", "Job was active longer than specified deadline") \
        in f.recorded_events()


async def test_a_job_fails_only_once_the_pods_it_made_are_seen() -> None:
    j = job(completions=2, parallelism=2, activeDeadlineSeconds=5)
    f, c = setup(j)
    await f.run(c, "ns/pi")  # makes two pods the cache does not show yet
    f.now += 10
    j["status"] = {"startTime": rfc3339(T0)}
    f.seed(kinds.JOB, j)
    actions = await f.run(c, "ns/pi")
    assert "conditions" not in status_of(actions)  # they would keep running
    assert f.recorded_events()[-1][1] != "DeadlineExceeded"


async def test_an_indexed_job_runs_each_index_once() -> None:
    j = job(completions=4, parallelism=2, completionMode="Indexed")
    f, c = setup(j)
    made = [a.body for a in await f.run(c, "ns/pi") if a.verb == "create"]
    assert [p["metadata"]["annotations"][jobplan.INDEX_KEY] for p in made] == ["0", "1"]
    pod = made[1]
    assert pod["metadata"]["labels"][jobplan.INDEX_KEY] == "1"
    assert pod["metadata"]["generateName"] == "pi-1-"
    assert pod["spec"]["hostname"] == "pi-1"
    assert pod["spec"]["containers"][0]["env"] == [{
        "name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
            "apiVersion": "v1",
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    # 0 and 2 done (2 only in the status now), 1 running twice, 3 pending.
    j["status"] = {"startTime": rfc3339(T0), "completedIndexes": "2", "succeeded": 1}
    f, c = setup(j, pod_of(j, "zero", phase="Succeeded", index=0),
                 pod_of(j, "one-a", index=1, ready=True), pod_of(j, "one-b", index=1))
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == [("delete", "one-b")]  # the duplicate, not ready, goes
    status = status_of(actions)
    assert (status["completedIndexes"], status["succeeded"]) == ("0,2", 2)
    f, c = setup(j, pod_of(j, "zero", phase="Succeeded", index=0),
                 pod_of(j, "one-a", index=1, ready=True))
    made = [a.body for a in await f.run(c, "ns/pi") if a.verb == "create"]
    assert [p["metadata"]["annotations"][jobplan.INDEX_KEY] for p in made] == ["3"]


@pytest.mark.parametrize(("indexes", "text"), [
    ([], ""), ([0], "0"), ([0, 1], "0,1"), ([0, 1, 2], "0-2"), ([1, 3, 4, 5, 7], "1,3-5,7"),
    ([9, 8, 7, 1], "1,7-9")])
def test_completed_indexes_text(indexes: list[int], text: str) -> None:
    assert jobplan.format_indexes(indexes) == text
    assert jobplan.parse_indexes(text, 100) == set(indexes)
    assert jobplan.parse_indexes(text, 5) == {i for i in indexes if i < 5}


async def test_a_finished_job_is_deleted_once_its_ttl_has_passed() -> None:
    done = {"conditions": [{"type": "Complete", "status": "True",
                            "lastTransitionTime": rfc3339(T0 - 10)}]}
    f, c = setup(job(ttlSecondsAfterFinished=30, status=done))
    assert await f.run(c, "ns/pi") == []
    assert 19.5 < requeued_in(c) <= 20
    f, c = setup(job(ttlSecondsAfterFinished=30, status=done), now=T0 + 21)
    actions = await f.run(c, "ns/pi")
    assert writes(actions) == [("delete", "pi")]
    assert actions[0].kind == "jobs"
    assert actions[0].body == {"propagation": "Foreground", "grace": None, "uid": "u-pi",
                               "resourceVersion": "9"}
    f, c = setup(job(status=done), now=T0 + 1000)  # no TTL: kept
    assert await f.run(c, "ns/pi") == []


async def test_a_suspended_job_runs_nothing_and_says_so() -> None:
    j = job(completions=3, parallelism=3, suspend=True, status={"startTime": rfc3339(T0)})
    f, c = setup(j, pod_of(j, "a"), pod_of(j, "b"))
    actions = await f.run(c, "ns/pi")
    assert sorted(writes(actions)) == [("delete", "a"), ("delete", "b")]
    status = status_of(actions)
    suspended = condition(status, "Suspended")
    assert (suspended["status"], suspended["reason"]) == ("True", "JobSuspended")
    assert ("Normal", "Suspended", "Job suspended") in f.recorded_events()
    j["spec"]["suspend"] = False
    j["status"] = status
    f, c = setup(j, now=T0 + 100)
    actions = await f.run(c, "ns/pi")
    status = status_of(actions)
    assert condition(status, "Suspended")["status"] == "False"
    assert status["startTime"] == rfc3339(T0 + 100)  # its deadline counts from now
    assert sum(1 for a in actions if a.verb == "create") == 3
    assert ("Normal", "Resumed", "Job resumed") in f.recorded_events()


async def test_a_lost_status_race_records_no_finish_event() -> None:
    j = job()
    f, c = setup(j, pod_of(j, "a", phase="Succeeded"))
    f.client.fail[("update_status", "pi")] = conflict("pi")
    await f.run(c, "ns/pi")
    assert f.recorded_events() == []  # the newer Job's reconcile decides and tells


async def test_orphans_it_selects_are_adopted() -> None:
    j = job(completions=2, parallelism=2)
    orphan = pod_of(j, "orphan")
    del orphan["metadata"]["ownerReferences"]
    f, c = setup(j, orphan)
    actions = await f.run(c, "ns/pi")
    assert [a.verb for a in actions].count("patch") == 1
    assert [a.verb for a in actions].count("create") == 1  # the orphan is one of the two


async def test_counts_never_go_down_when_finished_pods_are_deleted() -> None:
    """Without the job-tracking finalizer (see jobplan), the status is the record of what
    finished: a count is the larger of it and what the pods show."""
    j = job(completions=3, parallelism=1, backoffLimit=2,
            status={"startTime": rfc3339(T0 - 60), "succeeded": 2, "failed": 3})
    f, c = setup(j, pod_of(j, "f3", phase="Failed"))  # the others were deleted
    actions = await f.run(c, "ns/pi")
    status = status_of(actions)
    assert (status["succeeded"], status["failed"]) == (2, 3)
    assert condition(status, "Failed")["reason"] == "BackoffLimitExceeded"
