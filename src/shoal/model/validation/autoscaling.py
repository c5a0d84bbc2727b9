"""HorizontalPodAutoscaler (autoscaling/v2), as Kubernetes' ValidateHorizontalPodAutoscaler."""

from __future__ import annotations

from typing import Any

from shoal.model.quantity import QuantityError, parse_quantity
from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _as_int, _c, _d, _dicts, _i

METRIC_TYPES = ("Object", "Pods", "Resource", "ContainerResource", "External")
TARGET_TYPES = ("Utilization", "Value", "AverageValue")
POLICY_TYPES = ("Pods", "Percent")
SELECT_POLICIES = ("Max", "Min", "Disabled")
MAX_STABILIZATION_SECONDS = 3600


def _validate_horizontal_pod_autoscaler(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    ref = _d(spec.get("scaleTargetRef"))
    for key in ("kind", "name"):
        if not ref.get(key):
            e.required(_c("spec.scaleTargetRef", key))
    low = _as_int(spec.get("minReplicas"))
    if spec.get("minReplicas") is not None and (low is None or low < 1):
        e.invalid("spec.minReplicas", spec["minReplicas"], "must be greater than or equal to 1")
    high = _as_int(spec.get("maxReplicas"))
    if high is None:
        e.required("spec.maxReplicas")
    elif high < 1:
        e.invalid("spec.maxReplicas", high, "must be greater than 0")
    elif low is not None and high < low:
        e.invalid("spec.maxReplicas", high, "must be greater than or equal to `minReplicas`")
    for i, metric in _dicts(spec.get("metrics")):
        _metric(e, metric, _i("spec.metrics", i))
    behavior = _d(spec.get("behavior"))
    for key in ("scaleUp", "scaleDown"):
        if isinstance(behavior.get(key), dict):
            _rules(e, behavior[key], _c("spec.behavior", key))


def _metric(e: _Errors, metric: dict[str, Any], path: str) -> None:
    kind = metric.get("type")
    if not kind:
        e.required(_c(path, "type"), "must specify a metric source type")
        return
    if kind not in METRIC_TYPES:
        e.not_supported(_c(path, "type"), kind, METRIC_TYPES)
        return
    field = kind[0].lower() + kind[1:]
    source = metric.get(field)
    if not isinstance(source, dict):
        e.required(_c(path, field), f"must populate information for the given metric source "
                                    f"(only allowed when type is {kind})")
        return
    if kind in ("Resource", "ContainerResource") and not source.get("name"):
        e.required(_c(path, field, "name"), "must specify a resource name")
    target = _d(source.get("target"))
    target_type = target.get("type")
    if target_type not in TARGET_TYPES:
        e.not_supported(_c(path, field, "target", "type"), target_type, TARGET_TYPES)
    utilization = target.get("averageUtilization")
    if utilization is not None and (_as_int(utilization) or 0) < 1:
        e.invalid(_c(path, field, "target", "averageUtilization"), utilization,
                  "must be greater than 0")
    if kind in ("Pods", "Object", "External"):
        _custom_source(e, kind, source, target, _c(path, field))


def _custom_source(e: _Errors, kind: str, source: dict[str, Any], target: dict[str, Any],
                   path: str) -> None:
    """A Pods, Object or External metric (validatePodsSource, validateObjectSource,
    validateExternalSource): a metric name, and the target values each allows."""
    if not _d(source.get("metric")).get("name"):
        e.required(_c(path, "metric", "name"), "must specify a metric name")
    for key in ("value", "averageValue"):
        if target.get(key) is not None and not _positive(target[key]):
            e.invalid(_c(path, "target", key), target[key], "must be positive")
    value, average = target.get("value"), target.get("averageValue")
    if kind == "Pods" and average is None:
        e.required(_c(path, "target", "averageValue"), "must specify a positive target "
                                                       "averageValue")
    elif kind == "Object":
        described = _d(source.get("describedObject"))
        for key in ("kind", "name"):
            if not described.get(key):
                e.required(_c(path, "describedObject", key))
        if value is None and average is None:
            e.required(_c(path, "target", "averageValue"),
                       "must set either a target value or averageValue")
    elif kind == "External":
        if value is None and average is None:
            e.required(_c(path, "target", "averageValue"),
                       "must set either a target value for metric or a per-pod target")
        elif value is not None and average is not None:
            e.invalid(_c(path, "target", "value"), value,
                      "may not set both a target value for metric and a per-pod target")


def _positive(raw: Any) -> bool:
    try:
        return parse_quantity(raw) > 0
    except (QuantityError, TypeError, ValueError):
        return False


def _rules(e: _Errors, rules: dict[str, Any], path: str) -> None:
    window = rules.get("stabilizationWindowSeconds")
    seconds = _as_int(window)
    if window is not None and (seconds is None or not 0 <= seconds <= MAX_STABILIZATION_SECONDS):
        e.invalid(_c(path, "stabilizationWindowSeconds"), window,
                  f"must be less than or equal to {MAX_STABILIZATION_SECONDS}")
    select = rules.get("selectPolicy")
    if select is not None and select not in SELECT_POLICIES:
        e.not_supported(_c(path, "selectPolicy"), select, SELECT_POLICIES)
    for i, policy in _dicts(rules.get("policies")):
        p = _i(_c(path, "policies"), i)
        if policy.get("type") not in POLICY_TYPES:
            e.not_supported(_c(p, "type"), policy.get("type"), POLICY_TYPES)
        for key in ("value", "periodSeconds"):
            v = policy.get(key)
            if (_as_int(v) or 0) <= 0:
                e.invalid(_c(p, key), v, "must be greater than zero")
