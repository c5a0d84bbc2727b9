"""Namespaces, Nodes, Events and Leases."""

from __future__ import annotations

from typing import Any

from shoal.model.selectors import is_label_value, is_qualified_name
from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _c, _d, _dicts, _i, _int_field, _l, _nonneg, _s
from shoal.model.validation.pod_spec import _TAINT_EFFECTS


def _validate_namespace(e: _Errors, obj: dict[str, Any]) -> None:
    for i, finalizer in enumerate(_l(_d(obj.get("spec")).get("finalizers"))):
        if isinstance(finalizer, str):
            e.each(_i("spec.finalizers", i), finalizer, is_qualified_name(finalizer))


def _validate_node(e: _Errors, obj: dict[str, Any]) -> None:
    seen: set[tuple[str, str]] = set()
    for i, taint in _dicts(_d(obj.get("spec")).get("taints")):
        p = _i("spec.taints", i)
        key = _s(taint.get("key"))
        if not key:
            e.required(_c(p, "key"))
        else:
            e.each(_c(p, "key"), key, is_qualified_name(key))
        e.each(_c(p, "value"), _s(taint.get("value")), is_label_value(_s(taint.get("value"))))
        effect = _s(taint.get("effect"))
        if not effect:
            e.required(_c(p, "effect"))
        elif effect not in _TAINT_EFFECTS:
            e.not_supported(_c(p, "effect"), effect, _TAINT_EFFECTS)
        if (key, effect) in seen:
            e.duplicate(p, taint)
        seen.add((key, effect))


def _validate_node_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    for key, path in (("podCIDR", "spec.podCIDRs"), ("providerID", "spec.providerID")):
        if old_spec.get(key) and spec.get(key) != old_spec.get(key):
            e.forbidden(path, f'node updates may not change {key} except from "" to valid')


def _validate_event(e: _Errors, obj: dict[str, Any]) -> None:
    # Legacy events: the event lives in its object's namespace (or "default" for
    # cluster-scoped objects, as old clients did).
    if obj.get("eventTime"):
        return
    namespace = _s(_d(obj.get("metadata")).get("namespace"))
    involved = _s(_d(obj.get("involvedObject")).get("namespace"))
    if (not involved and namespace not in ("", "default")) or (involved and involved != namespace):
        e.invalid("involvedObject.namespace", involved, "does not match event.namespace")


def _validate_lease(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    duration = _int_field(e, spec, "leaseDurationSeconds", "spec")
    if duration is not None and duration <= 0:
        e.invalid("spec.leaseDurationSeconds", duration, "must be greater than 0")
    _nonneg(e, spec, "leaseTransitions", "spec")
