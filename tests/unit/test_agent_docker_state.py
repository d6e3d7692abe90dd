"""How the Docker runtime reads the engine: a pod's containers from their labels and
inspect answers (running, exited, OOMKilled, made but never started), its sandbox's IP,
the newest two instances kept and the older removed; over a fake low-level API."""

from __future__ import annotations

from typing import Any

import pytest

from raftkube.agent import docker as dr
from raftkube.agent import dockerspec as ds
from raftkube.agent import dockerstate as dst
from raftkube.agent import runtime as rt

pytestmark = pytest.mark.unit

Obj = dict[str, Any]
NEVER = "0001-01-01T00:00:00Z"


def labels(name: str, attempt: int = 0, *, kind: str = ds.CONTAINER, uid: str = "u1",
           **more: str) -> dict[str, str]:
    return {ds.CLUSTER: "rk-1", ds.NODE: "n1", ds.POD_UID: uid, ds.POD_NAMESPACE: "ns",
            ds.POD_NAME: "p", ds.KIND: kind, ds.CONTAINER_NAME: name,
            ds.ATTEMPT: str(attempt), ds.IMAGE: "busybox:1.36", **more}


def container(cid: str, lab: dict[str, str], status: str, *, code: int = 0,
              started: str = "2026-12-02T12:00:01.5Z", finished: str = NEVER,
              oom: bool = False, ip: str = "") -> Obj:
    return {"Id": cid, "Name": "/x-" + cid, "Image": "sha256:abc",
            "Created": "2026-12-02T12:00:00Z", "Config": {"Labels": lab},
            "State": {"Status": status, "ExitCode": code, "StartedAt": started,
                      "FinishedAt": finished, "OOMKilled": oom},
            "NetworkSettings": {"IPAddress": ip}}


class FakeAPI:
    def __init__(self, *infos: Obj) -> None:
        self.infos = {i["Id"]: i for i in infos}
        self.inspects = 0
        self.removed: list[str] = []
        self.removed_with_volumes: list[bool] = []
        self.stopped: list[str] = []
        self.killed: list[str] = []
        self.filters: list[Any] = []

    def version(self) -> Obj:
        return {"Version": "20.10.24"}

    def containers(self, all: bool, filters: Obj) -> list[Obj]:
        self.filters.append(filters)

        def selected(lab: dict[str, str]) -> bool:  # the engine ANDs its label filters
            for k, sep, v in (f.partition("=") for f in filters.get("label", [])):
                if (lab.get(k) != v) if sep else (k not in lab):
                    return False
            return True

        return [{"Id": i["Id"], "State": i["State"]["Status"],
                 "Labels": i["Config"]["Labels"]} for i in self.infos.values()
                if selected(i["Config"]["Labels"])]

    def inspect_container(self, cid: str) -> Obj:
        self.inspects += 1
        return self.infos[cid]

    def remove_container(self, cid: str, force: bool, v: bool = False) -> None:
        self.removed.append(cid)
        self.removed_with_volumes.append(v)
        self.infos.pop(cid, None)

    def close(self) -> None:
        pass

    def stop(self, cid: str, timeout: int) -> None:
        self.stopped.append(cid)
        self.infos[cid]["State"]["Status"] = "exited"

    def kill(self, cid: str) -> None:
        self.killed.append(cid)
        self.infos[cid]["State"]["Status"] = "exited"


def runtime(api: FakeAPI) -> dr.DockerRuntime:
    return dr.DockerRuntime(node_name="n1", cluster="rk-1", host_ip="192.0.2.1", client=api)


async def test_pods_read_from_labels_and_inspect() -> None:
    api = FakeAPI(
        container("sb", labels("POD", kind=ds.SANDBOX), "running", ip="172.17.0.9"),
        container("a0", labels("a"), "exited", code=1, finished="2026-12-02T12:00:03Z"),
        container("a1", labels("a", 1), "running"),
        container("b0", labels("b"), "exited", code=137, oom=True,
                  finished="2026-12-02T12:00:04Z"),
        container("c0", labels("c"), "created", code=127))
    r = runtime(api)
    (state,) = await r.pods()
    assert api.filters[0] == {"label": ["io.raftkube.cluster=rk-1", "io.raftkube.node=n1"]}
    assert (state.sandbox.uid, state.sandbox.name, state.sandbox.ip) == ("u1", "p",
                                                                          "172.17.0.9")
    a = state.latest("a")
    assert a is not None and (a.state, a.attempt, a.id) == (rt.RUNNING, 1, "docker://a1")
    assert a.started_at == pytest.approx(dst.parse_engine_time("2026-12-02T12:00:01.5Z"))
    assert a.image_id == "docker://sha256:abc" and a.image == "busybox:1.36"
    before = state.previous("a")
    assert before is not None and (before.exit_code, before.reason) == (1, "Error")
    b = state.latest("b")
    assert b is not None and (b.exit_code, b.reason) == (137, "OOMKilled")
    c = state.latest("c")
    assert c is not None and (c.state, c.exit_code, c.reason) == (rt.EXITED, 127,
                                                                  "StartError")
    assert api.inspects == 5
    await r.pods()
    assert api.inspects == 5  # nothing changed: nothing inspected again
    r.close()


async def test_only_the_newest_two_instances_are_kept() -> None:
    api = FakeAPI(container("sb", labels("POD", kind=ds.SANDBOX), "running", ip="1.2.3.4"),
                  *(container(f"a{i}", labels("a", i), "exited", code=1,
                              finished=f"2026-12-02T12:00:0{i}Z") for i in range(4)))
    r = runtime(api)
    (state,) = await r.pods()
    assert sorted(c.attempt for c in state.containers) == [2, 3]
    for task in list(r._tasks):
        await task
    assert sorted(api.removed) == ["a0", "a1"]
    r.close()


async def test_removed_containers_take_their_anonymous_volumes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An image that declares VOLUME gets an anonymous volume per container: removing
    the container without `v=True` leaves it on the engine for good."""
    api = FakeAPI(container("sb", labels("POD", kind=ds.SANDBOX), "running", ip="1.2.3.4"),
                  container("a0", labels("a"), "exited", code=0))
    r = runtime(api)
    await r.remove_pod("u1", grace=0)
    assert sorted(api.removed) == ["a0", "sb"] and all(api.removed_with_volumes)
    r.close()
    api = FakeAPI(container("sb", labels("POD", kind=ds.SANDBOX), "running", ip="1.2.3.4"),
                  container("a0", labels("a"), "running"))
    monkeypatch.setattr(dr, "connect", lambda base_url=None, pool=4: api)
    assert dr.remove_cluster("rk-1") == (2, [])
    assert api.removed_with_volumes == [True, True]


async def test_a_stopped_sandbox_of_an_ended_pod_is_not_a_dead_one() -> None:
    """stop_sandbox stops the pause container and keeps the exited containers; the
    sandbox then reads as not ready, and nothing of the pod is killed or restarted."""
    api = FakeAPI(container("sb", labels("POD", kind=ds.SANDBOX), "running", ip="1.2.3.4"),
                  container("a0", labels("a"), "exited", code=0,
                            finished="2026-12-02T12:00:03Z"))
    r = runtime(api)
    (state,) = await r.pods()
    assert state.sandbox.ready
    await r.stop_sandbox("u1")
    assert api.stopped == ["sb"] and api.removed == []
    api.infos["sb"]["NetworkSettings"]["IPAddress"] = ""
    api.infos["sb"]["State"]["FinishedAt"] = "2026-12-02T12:00:04Z"  # inspected afresh
    (state,) = await r.pods()
    assert not state.sandbox.ready and state.sandbox.ip == ""
    assert [c.name for c in state.containers] == ["a"]
    for task in list(r._tasks):
        await task
    assert api.killed == [] and api.stopped == ["sb"]
    r.close()


async def test_a_sandbox_that_died_under_running_containers_kills_them() -> None:
    api = FakeAPI(container("sb", labels("POD", kind=ds.SANDBOX), "exited", code=137),
                  container("a0", labels("a"), "running"))
    r = runtime(api)
    await r.pods()
    for task in list(r._tasks):
        await task
    assert api.killed == ["a0"]
    r.close()


async def test_a_host_network_pod_has_the_node_address_and_orphans_are_not_pods() -> None:
    api = FakeAPI(container("sb", labels("POD", kind=ds.SANDBOX, **{ds.HOST_NETWORK: "true"}),
                            "running"),
                  container("x0", labels("x", uid="gone"), "running"))
    r = runtime(api)
    (state,) = await r.pods()
    assert state.sandbox.ip == "192.0.2.1"
    assert state.containers == ()
    r.close()


class ImagesAPI(FakeAPI):
    """An engine that holds the images in `present` and whose pulls fail as a machine
    without a registry's do (`pulls` counts them)."""

    def __init__(self, present: set[str]) -> None:
        super().__init__()
        self.present = present
        self.pulls = 0

    def inspect_image(self, image: str) -> Obj:
        if image not in self.present:
            raise dr.docker.errors.ImageNotFound(f"No such image: {image}")
        return {"Id": "sha256:abc"}

    def pull(self, repository: str, tag: str, stream: bool, decode: bool) -> Any:
        self.pulls += 1
        raise dr.docker.errors.APIError("Get https://registry-1.docker.io/v2/: no such host",
                                        explanation="no such host")


async def test_pull_policies() -> None:
    api = ImagesAPI({"busybox:latest", "busybox:1.36"})
    clock = [1000.0]
    r = dr.DockerRuntime(node_name="n1", cluster="rk-1", host_ip="h", client=api,
                         clock=lambda: clock[0])
    await r.ensure_image("busybox:1.36", "IfNotPresent")
    await r.ensure_image("busybox:1.36", "Never")
    assert api.pulls == 0  # present: nothing pulled
    with pytest.raises(rt.ImagePullFailure) as never:
        await r.ensure_image("gone:1", "Never")
    assert never.value.reason == rt.ERR_IMAGE_NEVER_PULL
    assert never.value.message == 'Container image "gone:1" is not present with pull ' \
                                  'policy of Never'
    with pytest.raises(rt.ImagePullFailure) as missing:
        await r.ensure_image("gone:1", "IfNotPresent")
    assert missing.value.reason == rt.ERR_IMAGE_PULL
    assert missing.value.message == 'Failed to pull image "gone:1": no such host'
    with pytest.raises(rt.ImagePullFailure):
        await r.ensure_image("gone:2", "Always")
    pulls = api.pulls
    # Always with a present image: a failed pull falls back to it, and is not tried
    # again for a minute.
    await r.ensure_image("busybox:latest", "Always")
    await r.ensure_image("busybox:latest", "Always")
    assert api.pulls == pulls + 1
    clock[0] += dr.PULL_RETRY + 1
    await r.ensure_image("busybox:latest", "Always")
    assert api.pulls == pulls + 2
    r.close()


async def test_one_pods_containers_are_listed_by_its_labels_and_inspected_once() -> None:
    other = {**labels("app", uid="u2"), ds.POD_NAME: "q"}
    api = FakeAPI(container("s1", labels("POD", kind=ds.SANDBOX), "running", ip="10.0.0.5"),
                  container("c1", labels("app"), "running"),
                  container("s2", {**other, ds.KIND: ds.SANDBOX}, "running", ip="10.0.0.6"),
                  container("c2", other, "running"))
    r = runtime(api)
    states = await r.pods(namespace="ns", name="p")
    assert [s.sandbox.uid for s in states] == ["u1"]
    assert f"{ds.POD_NAMESPACE}=ns" in api.filters[-1]["label"]
    assert f"{ds.POD_NAME}=p" in api.filters[-1]["label"]
    assert api.inspects == 2  # that pod's two containers, not the node's four
    assert {s.sandbox.uid for s in await r.pods()} == {"u1", "u2"}
    assert api.inspects == 4  # what was inspected stays cached while its state is the same
    await r.pods(namespace="ns", name="q")  # a one-pod list drops nobody else's cache
    await r.pods()
    assert api.inspects == 4
    api.infos["c1"]["State"]["Status"] = "exited"
    await r.pods()
    assert api.inspects == 5  # a changed state is inspected again
