"""Validation of the workload kinds: Deployment, ReplicaSet, DaemonSet and Job.

What they share, and what this module guards most carefully, is ownership: a workload
owns the pods its `spec.selector` matches, and creates pods from `spec.template`. A
selector that does not match the template's own labels would make a controller create
pods forever without ever counting them, so that, an empty selector (which matches every
pod in the namespace) and malformed selector expressions are refused here, with the
selector parsed by `raftkube.api.selectors`, the same code the controllers use.
"""

from __future__ import annotations

from typing import Any

from raftkube.api import causes, metadata, names, podspec, schema, selectors

SELECTOR_OPERATORS = ("DoesNotExist", "Exists", "In", "NotIn")
DEPLOYMENT_STRATEGIES = ("Recreate", "RollingUpdate")
DAEMONSET_STRATEGIES = ("OnDelete", "RollingUpdate")
COMPLETION_MODES = ("Indexed", "NonIndexed")


def validate_deployment(spec: dict[str, Any], *, errs: causes.Causes) -> None:
    _owner(spec, kind="deployment", errs=errs, restart_policies=("Always",))
    for field in ("replicas", "minReadySeconds", "revisionHistoryLimit",
                  "progressDeadlineSeconds"):
        errs.non_negative(f"spec.{field}", schema.get_int(spec, field))
    deadline = schema.get_int(spec, "progressDeadlineSeconds")
    ready = schema.get_int(spec, "minReadySeconds") or 0
    if deadline is not None and deadline <= ready:
        errs.invalid("spec.progressDeadlineSeconds", deadline,
                     "must be greater than minReadySeconds")
    strategy = schema.get_map(spec, "strategy")
    if strategy is None:
        return
    kind = schema.get_str(strategy, "type")
    if kind is not None and kind not in DEPLOYMENT_STRATEGIES:
        errs.not_supported("spec.strategy.type", kind, DEPLOYMENT_STRATEGIES)
    if kind == "Recreate" and strategy.get("rollingUpdate") is not None:
        errs.forbidden("spec.strategy.rollingUpdate",
                       "may not be specified when strategy `type` is 'Recreate'")
    rolling = schema.get_map(strategy, "rollingUpdate")
    if rolling is not None and kind != "Recreate":
        _rolling_update(rolling, path="spec.strategy.rollingUpdate", errs=errs,
                        both_zero="may not be 0 when `maxSurge` is 0")


def validate_replicaset(spec: dict[str, Any], *, errs: causes.Causes) -> None:
    _owner(spec, kind="replicaset", errs=errs, restart_policies=("Always",))
    for field in ("replicas", "minReadySeconds"):
        errs.non_negative(f"spec.{field}", schema.get_int(spec, field))


def validate_daemonset(spec: dict[str, Any], *, errs: causes.Causes) -> None:
    _owner(spec, kind="daemonset", errs=errs, restart_policies=("Always",))
    for field in ("minReadySeconds", "revisionHistoryLimit"):
        errs.non_negative(f"spec.{field}", schema.get_int(spec, field))
    strategy = schema.get_map(spec, "updateStrategy")
    if strategy is None:
        return
    kind = schema.get_str(strategy, "type")
    if kind is not None and kind not in DAEMONSET_STRATEGIES:
        errs.not_supported("spec.updateStrategy.type", kind, DAEMONSET_STRATEGIES)
    rolling = schema.get_map(strategy, "rollingUpdate")
    if rolling is not None:
        _rolling_update(rolling, path="spec.updateStrategy.rollingUpdate", errs=errs,
                        both_zero="cannot be 0 when maxSurge is 0")


def validate_job(spec: dict[str, Any], *, errs: causes.Causes) -> None:
    manual = bool(schema.get_bool(spec, "manualSelector"))
    _owner(spec, kind="job", errs=errs, restart_policies=("OnFailure", "Never"),
           selector_required=manual)
    for field in ("parallelism", "completions", "backoffLimit", "ttlSecondsAfterFinished"):
        errs.non_negative(f"spec.{field}", schema.get_int(spec, field))
    errs.positive("spec.activeDeadlineSeconds", schema.get_int(spec, "activeDeadlineSeconds"))
    mode = schema.get_str(spec, "completionMode")
    if mode is not None and mode not in COMPLETION_MODES:
        errs.not_supported("spec.completionMode", mode, COMPLETION_MODES)
    if mode == "Indexed" and spec.get("completions") is None:
        errs.required("spec.completions", "when completion mode is Indexed")


def _owner(spec: dict[str, Any], *, kind: str, errs: causes.Causes,
           restart_policies: tuple[str, ...], selector_required: bool = True) -> None:
    """Selector, template, and the rule that binds them: the selector picks the template."""
    raw_selector = spec.get("selector")
    selector: selectors.LabelSelector | None = None
    if raw_selector is None:
        if selector_required:
            errs.required("spec.selector")
    elif isinstance(raw_selector, dict):
        selector = validate_label_selector(raw_selector, path="spec.selector", errs=errs)
        if selector is not None and selector.empty and kind != "job":
            errs.invalid("spec.selector", raw_selector,
                         f"empty selector is invalid for {kind}")
            selector = None
    template = spec.get("template")
    if template is None:
        errs.required("spec.template")
        return
    if not isinstance(template, dict):
        return  # a type error, reported by the schema walk
    meta = schema.get_map(template, "metadata") or {}
    metadata.validate_labels(meta.get("labels"), path="spec.template.metadata.labels",
                             errs=errs)
    labels = schema.str_map(meta.get("labels"))
    if selector is not None and not selector.matches(labels):
        errs.invalid("spec.template.metadata.labels", labels,
                     "`selector` does not match template `labels`")
    podspec.validate_pod_spec(template.get("spec"), path="spec.template.spec", errs=errs,
                              restart_policies=restart_policies)


def validate_label_selector(sel: dict[str, Any], *, path: str,
                            errs: causes.Causes) -> selectors.LabelSelector | None:
    """Check `matchLabels`/`matchExpressions`; the parsed selector if there was no problem."""
    before = len(errs.items)
    metadata.validate_labels(sel.get("matchLabels"), path=causes.child(path, "matchLabels"),
                             errs=errs)
    for i, expr in schema.maps(sel.get("matchExpressions")):
        at = causes.index(causes.child(path, "matchExpressions"), i)
        key = errs.require(expr, "key", at)
        if isinstance(key, str):
            errs.invalid_each(causes.child(at, "key"), key, names.label_key_errors(key))
        operator = expr.get("operator")
        values = schema.get_list(expr, "values") or []
        if operator is None or operator == "":
            errs.required(causes.child(at, "operator"))
        elif isinstance(operator, str) and operator not in SELECTOR_OPERATORS:
            errs.not_supported(causes.child(at, "operator"), operator, SELECTOR_OPERATORS)
        elif operator in ("In", "NotIn") and not values:
            errs.required(causes.child(at, "values"),
                          "must be specified when `operator` is 'In' or 'NotIn'")
        elif operator in ("Exists", "DoesNotExist") and values:
            errs.forbidden(causes.child(at, "values"),
                           "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")
        for j, value in enumerate(values):
            if isinstance(value, str):
                errs.invalid_each(causes.index(causes.child(at, "values"), j), value,
                                  names.label_value_errors(value))
    if len(errs.items) > before:
        return None
    try:
        return selectors.selector_from_object(sel)
    except selectors.SelectorError:
        return None  # only wrong types get here, and the schema walk reported them


def _rolling_update(rolling: dict[str, Any], *, path: str, errs: causes.Causes,
                    both_zero: str) -> None:
    surge = _int_or_percent(rolling.get("maxSurge"), path=causes.child(path, "maxSurge"),
                            errs=errs)
    unavailable_path = causes.child(path, "maxUnavailable")
    unavailable = _int_or_percent(rolling.get("maxUnavailable"), path=unavailable_path,
                                  errs=errs)
    raw = rolling.get("maxUnavailable")
    if isinstance(raw, str) and unavailable is not None and unavailable > 100:
        errs.invalid(unavailable_path, raw, "must not be greater than 100%")
    if surge == 0 and unavailable == 0:
        errs.invalid(unavailable_path, raw, both_zero)


def _int_or_percent(value: Any, *, path: str, errs: causes.Causes) -> int | None:
    """The number in `3` or `"25%"`, after checking it; None if absent or invalid."""
    if isinstance(value, str):
        problems = names.percent_errors(value)
        errs.invalid_each(path, value, problems)
        return None if problems else int(value[:-1])
    number = schema.as_int(value)
    if number is not None and number < 0:
        errs.invalid(path, number, "must be greater than or equal to 0")
        return None
    return number
