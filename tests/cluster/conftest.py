from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster, started


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh 3-master cluster; every process it started is stopped, pass or fail."""
    yield from started(tmp_path_factory, "cluster")


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master cluster shared by the tests of a module that kill, pause or restart no
    member and need no empty store (each writes keys of its own): one start-up for all
    of them instead of one each. Stopped at the module's end, pass or fail."""
    yield from started(tmp_path_factory, "shared")
