"""raftkube.cloud: the cloud controller (machine providers, LoadBalancer Services, the
Nodes of vanished machines). It imports only `api` and `client`; `rk master` adds its
loops to the leader's (docs/cloud.md)."""
