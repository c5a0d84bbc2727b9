"""HorizontalPodAutoscaler between autoscaling/v2 (stored) and autoscaling/v1 (also served).

As Kubernetes' autoscaling/v1 conversion: v1's ``targetCPUUtilizationPercentage`` is a
``Resource`` cpu metric with a ``Utilization`` target, ``currentCPUUtilizationPercentage``
that metric's current utilization. What v1 cannot say (other metrics, their current
values, the conditions, ``behavior``) rides in ``autoscaling.alpha.kubernetes.io/*``
annotations, in v1's (v2beta1-shaped) MetricSpec form, so a v1 client that reads and
writes the object back loses nothing.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

V1 = "autoscaling/v1"
V2 = "autoscaling/v2"
METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
CURRENT_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"
ROUND_TRIP_ANNOTATIONS = (METRICS_ANNOTATION, CURRENT_METRICS_ANNOTATION,
                          CONDITIONS_ANNOTATION, BEHAVIOR_ANNOTATION)
_SOURCE = {"Object": "object", "Pods": "pods", "Resource": "resource",
           "ContainerResource": "containerResource", "External": "external"}


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _some(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _is_cpu_utilization(metric: dict[str, Any], key: str, value: str) -> bool:
    source = _d(metric.get("resource"))
    return (metric.get("type") == "Resource" and source.get("name") == "cpu"
            and _d(source.get(key)).get(value) is not None)


# -- one metric, v2 <-> v1's annotation form -----------------------------------------
# ``side`` is "target" (a spec's metric) or "current" (a status's): v1 names the value
# fields after it (targetAverageValue, currentAverageValue), except an Object metric's
# averageValue.

def _value_names(kind: str, side: str) -> dict[str, str]:
    return {"value": f"{side}Value",
            "averageValue": "averageValue" if kind == "Object" else f"{side}AverageValue",
            "averageUtilization": f"{side}AverageUtilization"}


def _to_v1(m: dict[str, Any], side: str) -> dict[str, Any]:
    kind = str(m.get("type") or "")
    field = _SOURCE.get(kind, "external")
    s = _d(m.get(field))
    values = _d(s.get(side))
    metric = _d(s.get("metric"))
    body = {v1: values[v2] for v2, v1 in _value_names(kind, side).items() if v2 in values}
    if kind in ("Resource", "ContainerResource"):
        body.update(_some(name=s.get("name"), container=s.get("container")))
    elif kind == "External":
        body.update(_some(metricName=metric.get("name"), metricSelector=metric.get("selector")))
    else:
        body.update(_some(metricName=metric.get("name"), selector=metric.get("selector"),
                          target=s.get("describedObject")))
    return {"type": kind, field: body}


def _to_v2(m: dict[str, Any], side: str) -> dict[str, Any]:
    kind = str(m.get("type") or "")
    field = _SOURCE.get(kind, "external")
    s = _d(m.get(field))
    values = {v2: s[v1] for v2, v1 in _value_names(kind, side).items() if v1 in s}
    if side == "target":
        values["type"] = "Utilization" if "averageUtilization" in values \
            else "Value" if "value" in values else "AverageValue"
    if kind in ("Resource", "ContainerResource"):
        body = _some(name=s.get("name"), container=s.get("container"))
    else:
        selector = s.get("metricSelector" if kind == "External" else "selector")
        body = _some(describedObject=s.get("target"),
                     metric=_some(name=s.get("metricName"), selector=selector))
    body[side] = values
    return {"type": kind, field: body}


def _annotation_list(annotations: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """A round-trip annotation's list; one that does not decode is ignored, as Kubernetes."""
    raw = annotations.get(key)
    if not isinstance(raw, str):
        return []
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return []
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _encode(value: Any) -> str:
    return orjson.dumps(value).decode()


# -- whole objects -------------------------------------------------------------------

def to_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """The autoscaling/v1 form of a stored (v2) HorizontalPodAutoscaler."""
    if obj.get("apiVersion") != V2:
        return obj
    out = copy.deepcopy(obj)
    out["apiVersion"] = V1
    meta = out.setdefault("metadata", {})
    annotations = {k: v for k, v in _d(meta.get("annotations")).items()
                   if k not in ROUND_TRIP_ANNOTATIONS}
    spec = _d(out.get("spec"))
    metrics = [m for m in spec.pop("metrics", None) or [] if isinstance(m, dict)]
    cpu = next((m for m in metrics if _is_cpu_utilization(m, "target", "averageUtilization")),
               None)
    others = [_to_v1(m, "target") for m in metrics if m is not cpu]
    if cpu is not None:
        spec["targetCPUUtilizationPercentage"] = cpu["resource"]["target"]["averageUtilization"]
    if others:
        annotations[METRICS_ANNOTATION] = _encode(others)
    behavior = spec.pop("behavior", None)
    if behavior:
        annotations[BEHAVIOR_ANNOTATION] = _encode(behavior)
    if "status" in out:
        status = _d(out["status"])
        current = [m for m in status.pop("currentMetrics", None) or [] if isinstance(m, dict)]
        now = next((m for m in current
                    if _is_cpu_utilization(m, "current", "averageUtilization")), None)
        if now is not None:
            status["currentCPUUtilizationPercentage"] = \
                now["resource"]["current"]["averageUtilization"]
        rest = [_to_v1(m, "current") for m in current if m is not now]
        if rest:
            annotations[CURRENT_METRICS_ANNOTATION] = _encode(rest)
        conditions = status.pop("conditions", None)
        if conditions:
            annotations[CONDITIONS_ANNOTATION] = _encode(conditions)
        out["status"] = status
    out["spec"] = spec
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    return out


def to_v2(obj: dict[str, Any]) -> dict[str, Any]:
    """The stored (v2) form of an autoscaling/v1 HorizontalPodAutoscaler."""
    out = copy.deepcopy(obj)
    out["apiVersion"] = V2
    meta = out.setdefault("metadata", {})
    if not isinstance(meta, dict):
        return out  # the store refuses it with its own message
    annotations = _d(meta.get("annotations"))
    spec = _d(out.get("spec"))
    metrics = [_to_v2(m, "target") for m in _annotation_list(annotations, METRICS_ANNOTATION)]
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        metrics.append({"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}})
    if metrics:
        spec["metrics"] = metrics
    raw_behavior = annotations.get(BEHAVIOR_ANNOTATION)
    if isinstance(raw_behavior, str):
        try:
            behavior = orjson.loads(raw_behavior)
        except orjson.JSONDecodeError:
            behavior = None
        if isinstance(behavior, dict):
            spec["behavior"] = behavior
    out["spec"] = spec
    if isinstance(out.get("status"), dict):
        status = out["status"]
        current = [_to_v2(m, "current")
                   for m in _annotation_list(annotations, CURRENT_METRICS_ANNOTATION)]
        now = status.pop("currentCPUUtilizationPercentage", None)
        if now is not None:
            current.append({"type": "Resource", "resource": {
                "name": "cpu", "current": {"averageUtilization": now}}})
        if current:
            status["currentMetrics"] = current
        conditions = _annotation_list(annotations, CONDITIONS_ANNOTATION)
        if conditions:
            status["conditions"] = conditions
    kept = {k: v for k, v in annotations.items() if k not in ROUND_TRIP_ANNOTATIONS}
    if kept:
        meta["annotations"] = kept
    else:
        meta.pop("annotations", None)
    return out
