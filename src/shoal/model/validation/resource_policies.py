"""ResourceQuota, LimitRange (core/v1) and PriorityClass (scheduling.k8s.io/v1),
as Kubernetes' ValidateResourceQuota, ValidateLimitRange and ValidatePriorityClass."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shoal.model.validation.causes import IMMUTABLE, _Errors
from shoal.model.validation.fields import _as_int, _c, _d, _dicts, _i, _k
from shoal.model.validation.pod_spec import _resource_list

QUOTA_SCOPES = ("Terminating", "NotTerminating", "BestEffort", "NotBestEffort",
                "PriorityClass", "CrossNamespacePodAffinity")
LIMIT_TYPES = ("Pod", "Container", "PersistentVolumeClaim")
PREEMPTION_POLICIES = ("PreemptLowerPriority", "Never")
HIGHEST_USER_PRIORITY = 1_000_000_000
SYSTEM_PRIORITY_PREFIX = "system-"


def _validate_resource_quota(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    _resource_list(e, spec.get("hard"), "spec.hard")
    scopes = spec.get("scopes")
    for i, scope in enumerate(scopes if isinstance(scopes, list) else []):
        if scope not in QUOTA_SCOPES:
            e.not_supported(_i("spec.scopes", i), scope, QUOTA_SCOPES)
    status = _d(obj.get("status"))
    _resource_list(e, status.get("hard"), "status.hard")
    _resource_list(e, status.get("used"), "status.used")


def _validate_limit_range(e: _Errors, obj: dict[str, Any]) -> None:
    for i, item in _dicts(_d(obj.get("spec")).get("limits")):
        path = _i("spec.limits", i)
        kind = item.get("type")
        if not kind:
            e.required(_c(path, "type"))
        elif kind not in LIMIT_TYPES:
            e.not_supported(_c(path, "type"), kind, LIMIT_TYPES)
        lists = {key: _resource_list(e, item.get(key), _c(path, key))
                 for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio")}
        if kind == "Pod":
            for key in ("default", "defaultRequest"):
                if lists[key]:
                    e.forbidden(_c(path, key), "may not be specified when `type` is 'Pod'")
        _limit_order(e, path, lists)


def _limit_order(e: _Errors, path: str, lists: dict[str, dict[str, tuple[Any, Decimal]]]) -> None:
    """min <= defaultRequest <= default <= max, and a ratio of at least 1 (ValidateLimitRange)."""
    low, high = lists["min"], lists["max"]
    default, request = lists["default"], lists["defaultRequest"]
    for name, (raw, q) in low.items():
        if name in high and q > high[name][1]:
            e.invalid(_k(_c(path, "min"), name), str(raw),
                      f"min value {raw} is greater than max value {high[name][0]}")
    for name, (raw, q) in request.items():
        if name in high and q > high[name][1]:
            e.invalid(_k(_c(path, "defaultRequest"), name), str(raw),
                      f"default request value {raw} is greater than max value {high[name][0]}")
        if name in low and q < low[name][1]:
            e.invalid(_k(_c(path, "defaultRequest"), name), str(raw),
                      f"min value {low[name][0]} is greater than default request value {raw}")
        if name in default and q > default[name][1]:
            e.invalid(_k(_c(path, "defaultRequest"), name), str(raw),
                      f"default request value {raw} is greater than default limit value "
                      f"{default[name][0]}")
    for name, (raw, q) in default.items():
        if name in high and q > high[name][1]:
            e.invalid(_k(_c(path, "default"), name), str(raw),
                      f"default value {raw} is greater than max value {high[name][0]}")
        if name in low and q < low[name][1]:
            e.invalid(_k(_c(path, "default"), name), str(raw),
                      f"min value {low[name][0]} is greater than default value {raw}")
    for name, (raw, q) in lists["maxLimitRequestRatio"].items():
        if q < 1:
            e.invalid(_k(_c(path, "maxLimitRequestRatio"), name), str(raw),
                      f"ratio {raw} is less than 1")


def _validate_priority_class(e: _Errors, obj: dict[str, Any]) -> None:
    name = str(_d(obj.get("metadata")).get("name", ""))
    value = _as_int(obj.get("value"))
    if value is None:
        e.required("value", "")
    elif name.startswith(SYSTEM_PRIORITY_PREFIX):
        if name not in SYSTEM_PRIORITY_CLASSES:
            e.forbidden("metadata.name",
                        f"priority class names with '{SYSTEM_PRIORITY_PREFIX}' prefix are reserved "
                        "for system use only")
    elif value > HIGHEST_USER_PRIORITY:
        e.forbidden("value", f"maximum allowed value of a user defined priority is "
                             f"{HIGHEST_USER_PRIORITY}")
    policy = obj.get("preemptionPolicy")
    if policy is not None and policy not in PREEMPTION_POLICIES:
        e.not_supported("preemptionPolicy", policy, PREEMPTION_POLICIES)


def _validate_priority_class_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    if obj.get("value") != old.get("value"):
        e.forbidden("value", "may not be changed in an update.")
    if obj.get("preemptionPolicy") != old.get("preemptionPolicy"):
        e.invalid("preemptionPolicy", obj.get("preemptionPolicy"), IMMUTABLE)


SYSTEM_PRIORITY_CLASSES: dict[str, int] = {
    "system-node-critical": 2_000_001_000,
    "system-cluster-critical": 2_000_000_000,
}
"""The built-in classes every cluster has (scheduling.SystemPriorityClasses)."""
