"""Object metadata (names, labels, annotations, owner references) and label selectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shoal.model.kinds import Kind
from shoal.model.selectors import LabelSelector, SelectorError, is_label_value, is_qualified_name
from shoal.model.validation.causes import TOTAL_ANNOTATION_SIZE, _Errors
from shoal.model.validation.fields import _c, _d, _dicts, _i, _l, _nonneg, _s
from shoal.model.validation.names import (
    _mask_trailing_dash,
    is_dns1035_label,
    is_dns1123_label,
    is_dns1123_subdomain,
    is_path_segment_name,
)

# --- metadata -------------------------------------------------------------------------

_NameCheck = Callable[[str], list[str]]

_NAME_CHECKS: dict[tuple[str, str], _NameCheck] = {
    ("", "Namespace"): is_dns1123_label,
    ("", "Service"): is_dns1035_label,
    # Core/v1 events keep their legacy, unchecked names (beyond the URL rules).
    ("", "Event"): lambda _name: [],
    # --- authz: RBAC names are path segments only (ValidateRBACName), e.g. "system:node" ---
    ("rbac.authorization.k8s.io", "Role"): lambda _name: [],
    ("rbac.authorization.k8s.io", "ClusterRole"): lambda _name: [],
    ("rbac.authorization.k8s.io", "RoleBinding"): lambda _name: [],
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): lambda _name: [],
    # --- end authz ---
}


def _name_check(kind: Kind) -> _NameCheck:
    return _NAME_CHECKS.get((kind.group, kind.kind), is_dns1123_subdomain)


def _labels(e: _Errors, labels: Any, path: str) -> None:
    if labels is None:
        return
    if not isinstance(labels, dict):
        e.type_invalid(path, labels, "must be an object of strings")
        return
    for key, value in labels.items():
        e.each(path, key, is_qualified_name(key))
        if not isinstance(value, str):
            e.type_invalid(path, value, "must be a string")
        else:
            e.each(path, value, is_label_value(value))


def _annotations(e: _Errors, annotations: Any, path: str) -> None:
    if annotations is None:
        return
    if not isinstance(annotations, dict):
        e.type_invalid(path, annotations, "must be an object of strings")
        return
    total = 0
    for key, value in annotations.items():
        e.each(path, key, is_qualified_name(key.lower()))
        if not isinstance(value, str):
            e.type_invalid(path, value, "must be a string")
            continue
        total += len(key.encode()) + len(value.encode())
    if total > TOTAL_ANNOTATION_SIZE:
        e.too_long(path, TOTAL_ANNOTATION_SIZE)


def _owner_references(e: _Errors, refs: Any, path: str) -> None:
    controllers: list[str] = []
    for _, ref in _dicts(refs):
        api_version = _s(ref.get("apiVersion"))
        if not api_version.rpartition("/")[2]:
            e.invalid(_c(path, "apiVersion"), api_version, "version must not be empty")
        if not ref.get("kind"):
            e.invalid(_c(path, "kind"), _s(ref.get("kind")), "kind must not be empty")
        if not ref.get("name"):
            e.invalid(_c(path, "name"), _s(ref.get("name")), "name must not be empty")
        if not ref.get("uid"):
            e.invalid(_c(path, "uid"), _s(ref.get("uid")), "uid must not be empty")
        if ref.get("controller") is True:
            controllers.append(f"{ref.get('kind')}/{ref.get('name')}")
    if len(controllers) > 1:
        e.invalid(
            path,
            refs,
            'Only one reference can have Controller set to true. Found "true" in references for '
            + " and ".join(controllers),
        )


def _object_meta(
    e: _Errors, meta: Any, namespaced: bool, check: _NameCheck, path: str = "metadata"
) -> None:
    if not isinstance(meta, dict):
        e.required(_c(path, "name"), "name or generateName is required")
        return
    generate_name = meta.get("generateName")
    if isinstance(generate_name, str) and generate_name:
        e.each(_c(path, "generateName"), generate_name, check(_mask_trailing_dash(generate_name)))
    name = meta.get("name")
    if not name:
        e.required(_c(path, "name"), "name or generateName is required")
    elif not isinstance(name, str):
        e.type_invalid(_c(path, "name"), name, "must be a string")
    else:
        e.each(_c(path, "name"), name, check(name))
        e.each(_c(path, "name"), name, is_path_segment_name(name))
    namespace = meta.get("namespace")
    if namespaced:
        if not namespace:
            e.required(_c(path, "namespace"))
        elif isinstance(namespace, str):
            e.each(_c(path, "namespace"), namespace, is_dns1123_label(namespace))
    elif namespace:
        e.forbidden(_c(path, "namespace"), "not allowed on this type")
    _nonneg(e, meta, "generation", path)
    _labels(e, meta.get("labels"), _c(path, "labels"))
    _annotations(e, meta.get("annotations"), _c(path, "annotations"))
    _owner_references(e, meta.get("ownerReferences"), _c(path, "ownerReferences"))
    for i, finalizer in enumerate(_l(meta.get("finalizers"))):
        if isinstance(finalizer, str):
            e.each(_i(_c(path, "finalizers"), i), finalizer, is_qualified_name(finalizer))


def _object_meta_update(e: _Errors, meta: Any, old_meta: Any) -> None:
    new, old = _d(meta), _d(old_meta)
    for key in ("name", "namespace"):
        if old.get(key) and new.get(key) != old.get(key):
            e.immutable(_c("metadata", key), new.get(key))


def _template_meta(e: _Errors, template: dict[str, Any], path: str) -> None:
    meta = _d(template.get("metadata"))
    _labels(e, meta.get("labels"), _c(path, "metadata", "labels"))
    _annotations(e, meta.get("annotations"), _c(path, "metadata", "annotations"))


# --- label selectors ------------------------------------------------------------------


def _label_selector(e: _Errors, sel: Any, path: str) -> None:
    if not isinstance(sel, dict):
        e.type_invalid(path, sel, "must be an object")
        return
    for i, expr in _dicts(sel.get("matchExpressions")):
        p = _i(_c(path, "matchExpressions"), i)
        op = expr.get("operator")
        values = _l(expr.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                e.required(_c(p, "values"), "must be specified when `operator` is 'In' or 'NotIn'")
        elif op in ("Exists", "DoesNotExist"):
            if values:
                e.forbidden(
                    _c(p, "values"),
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                )
        else:
            e.invalid(_c(p, "operator"), op, "not a valid selector operator")
        e.each(_c(p, "key"), _s(expr.get("key")), is_qualified_name(_s(expr.get("key"))))
        for j, value in enumerate(values):
            if isinstance(value, str):
                e.each(_i(_c(p, "values"), j), value, is_label_value(value))
    _labels(e, sel.get("matchLabels"), _c(path, "matchLabels"))


def _selector_is_empty(sel: dict[str, Any]) -> bool:
    return not sel.get("matchLabels") and not sel.get("matchExpressions")


def _selector_matches(sel: dict[str, Any], labels: Any) -> bool | None:
    """Whether the selector matches the labels; None when it cannot be evaluated."""
    try:
        selector = LabelSelector.from_api(sel)
    except (SelectorError, AttributeError, TypeError):
        return None  # the selector's own errors are reported by _label_selector
    return selector.matches(labels if isinstance(labels, dict) else {})
