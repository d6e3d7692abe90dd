from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster, started


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh 3-master cluster; every process it started is stopped, pass or fail."""
    yield from started(tmp_path_factory, "cluster")
