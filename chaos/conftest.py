from tests.cluster.conftest import cluster

__all__ = ["cluster"]
