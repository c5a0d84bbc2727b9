"""PodDisruptionBudget (policy/v1), as Kubernetes' ValidatePodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _d
from shoal.model.validation.object_meta import _label_selector
from shoal.model.validation.workloads import _int_or_percent

_EVICTION_POLICIES = ("IfHealthyBudget", "AlwaysAllow")


def _validate_pod_disruption_budget(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    low, high = spec.get("minAvailable"), spec.get("maxUnavailable")
    if low is not None and high is not None:
        e.invalid_shown("spec", "{...}", "minAvailable and maxUnavailable cannot be both set")
    for key, value in (("minAvailable", low), ("maxUnavailable", high)):
        pct = _int_or_percent(e, value, f"spec.{key}")
        if isinstance(value, str) and pct is not None and pct > 100:
            e.invalid(f"spec.{key}", value, "must not be greater than 100%")
    if spec.get("selector") is not None:
        _label_selector(e, spec["selector"], "spec.selector")
    policy = spec.get("unhealthyPodEvictionPolicy")
    if policy is not None and policy not in _EVICTION_POLICIES:
        e.not_supported("spec.unhealthyPodEvictionPolicy", policy, _EVICTION_POLICIES)
