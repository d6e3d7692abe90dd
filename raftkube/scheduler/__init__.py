"""raftkube.scheduler: where pods go.

`core.schedule(snapshot, pod, rng=...)` is the decision, a pure function with
Kubernetes' filters, reasons and a least-allocated score. The leader-only loop that
watches pending pods and binds them through the store comes with the controllers.
"""
