"""raftkube: a small container orchestrator with Kubernetes' model on three Raft masters."""
