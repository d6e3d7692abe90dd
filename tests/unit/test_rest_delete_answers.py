"""What a DELETE answers, as Kubernetes does: a Status of Success naming the object when
it is gone at once, the object with its deletionTimestamp when deletion is deferred
(finalizers, a pod's grace period), and the object itself for pods and services."""

from __future__ import annotations

import pytest

from tests.unit.conftest import Served
from tests.unit.test_rest import call, ok
from tests.unit.test_rest_lifecycle import CMS, DEPLOY, PODS, cm, deployment, pod

pytestmark = pytest.mark.unit


async def test_gone_at_once_is_a_success_status(served: Served) -> None:
    made = await ok(served, "POST", DEPLOY, deployment("d"))
    answer = await ok(served, "DELETE", DEPLOY + "/d")
    assert answer == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                      "status": "Success",
                      "details": {"name": "d", "group": "apps", "kind": "deployments",
                                  "uid": made["metadata"]["uid"]}}
    assert (await call(served, "GET", DEPLOY + "/d"))[0] == 404


async def test_a_dry_run_answers_the_same_and_keeps_the_object(served: Served) -> None:
    await ok(served, "POST", CMS, cm("c"))
    answer = await ok(served, "DELETE", CMS + "/c?dryRun=All")
    assert answer["status"] == "Success" and answer["details"]["kind"] == "configmaps"
    assert (await call(served, "GET", CMS + "/c"))[0] == 200


async def test_deferred_is_the_object_with_its_deletion_timestamp(served: Served) -> None:
    await ok(served, "POST", CMS, {**cm("f"), "metadata": {"name": "f",
                                                          "finalizers": ["example.com/x"]}})
    answer = await ok(served, "DELETE", CMS + "/f")
    assert answer["kind"] == "ConfigMap" and answer["metadata"]["deletionTimestamp"]
    await ok(served, "POST", PODS, pod("running"))
    marked = await ok(served, "DELETE", PODS + "/running")  # bound: a 30 s grace period
    assert marked["kind"] == "Pod" and marked["metadata"]["deletionGracePeriodSeconds"] == 30


async def test_a_pod_gone_at_once_answers_the_pod(served: Served) -> None:
    await ok(served, "POST", PODS, pod("quick"))
    answer = await ok(served, "DELETE", PODS + "/quick?gracePeriodSeconds=0")
    assert answer["kind"] == "Pod" and answer["metadata"]["name"] == "quick"
    assert (await call(served, "GET", PODS + "/quick"))[0] == 404
