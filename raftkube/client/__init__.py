"""The one client of raftkube's HTTP APIs, for everything that is not the API server.

The scheduler, the controllers, the node agents and `rk` all reach the cluster through
this package and nothing else: `transport` (servers in turn, failover, unknown outcomes),
`rest` (the Kubernetes-style REST API), `etcd` (the `/v3` store API), `informer` (list +
watch + cache + indexes), `workqueue` (keys with back-off) and `config` (where the
servers are and how to authenticate).
"""
