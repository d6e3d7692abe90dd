"""The docker tier: real `rk master` and `rk agent --runtime docker` processes, and real
containers on the local engine (scripts/docker-setup.sh starts it and builds the images).

Every cluster a test brings up has its own cluster id, and every container its agents
make carries it; the fixtures remove those containers when the test (or the module)
ends, pass or fail, and a sweep at the end of the session removes any container of any
cluster this run made, in case a fixture itself was cut short.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import docker
import pytest

from raftkube.agent import dockerspec as ds
from raftkube.cli import local
from raftkube.client import rest
from tests.cluster.harness import Cluster, rest_client

AGENT_ARGS = ["--crash-backoff-base", "1"]
_clusters: set[str] = set()  # the cluster ids this test run made


def engine() -> docker.DockerClient:
    """The local engine; a clear failure (not a skip) if it does not answer."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        pytest.fail(f"the Docker engine does not answer ({e}); run scripts/docker-setup.sh")
    return client


def remove_cluster_containers(cluster_id: str) -> None:
    client = engine()
    try:
        for c in client.containers.list(all=True,
                                        filters={"label": f"{ds.CLUSTER}={cluster_id}"}):
            try:
                c.remove(force=True)
            except docker.errors.NotFound:
                pass
    finally:
        client.close()


def start(c: Cluster, agents: int, extra: list[str] | None = None) -> None:
    """Bring up 3 masters and `agents` Docker agents (AGENT_ARGS, then `extra` agent
    flags); its cluster id is swept at the end."""
    _clusters.add(str(local.load_layout(c.state_dir, 3)["cluster_id"]))
    c.up(agents=agents, runtime="docker", agent_args=AGENT_ARGS + (extra or []))


def stop(c: Cluster) -> None:
    try:
        c.down()
    finally:
        cid = local.cluster_id(c.state_dir)
        if cid:
            remove_cluster_containers(cid)


@pytest.fixture(scope="session", autouse=True)
def _sweep() -> Iterator[None]:
    yield
    for cid in sorted(_clusters):
        remove_cluster_containers(cid)


@pytest.fixture(scope="module")
def dcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """3 masters and agents n1, n2 on the Docker runtime (crash back-off from 1 s),
    shared by a module's tests; its processes and containers go at the end."""
    engine().close()
    c = Cluster(str(tmp_path_factory.mktemp("docker")))
    try:
        start(c, 2)
        yield c
    finally:
        stop(c)


@pytest.fixture
async def api(dcluster: Cluster) -> AsyncIterator[rest.RestClient]:
    async with rest_client(dcluster) as client:
        yield client


@pytest.fixture
def dockerc() -> Iterator[docker.DockerClient]:
    client = engine()
    try:
        yield client
    finally:
        client.close()
