from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Cluster


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh 3-master cluster; every process it started is stopped, pass or fail."""
    c = Cluster(str(tmp_path_factory.mktemp("cluster")))
    try:
        c.up()
        yield c
    finally:
        c.down()
