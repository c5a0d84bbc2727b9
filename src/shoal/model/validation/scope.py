"""The Scope kind (shoal.dev): its namespaces, members and writers."""

from __future__ import annotations

from typing import Any

from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _c, _i
from shoal.model.validation.names import is_dns1123_label, is_dns1123_subdomain
from shoal.model.validation.object_meta import _label_selector, _NameCheck

# --- Scope (shoal.dev) ------------------------------------------------------------------

UNSCOPED_NAMESPACES = frozenset({"kube-system", "kube-node-lease"})
"""Namespaces no Scope takes: every peer needs the cluster's own objects there (cluster DNS,
the bus's Service), and node Leases are placed near their node by a rule of their own."""


def _scope_names(e: _Errors, value: Any, path: str,
                 check: _NameCheck = is_dns1123_subdomain) -> list[str]:
    """A list of DNS-1123 names (node names; namespace names are labels), each once."""
    if value is None:
        return []
    if not isinstance(value, list):
        return []  # the schema check reports the type
    seen: set[str] = set()
    out: list[str] = []
    for i, name in enumerate(value):
        if not isinstance(name, str):
            continue
        p = _i(path, i)
        if not name:
            e.required(p)
            continue
        e.each(p, name, check(name))
        if name in seen:
            e.duplicate(p, name)
        seen.add(name)
        out.append(name)
    return out


def _validate_scope(e: _Errors, obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return  # the schema check says spec is required or of the wrong type
    namespaces = _scope_names(e, spec.get("namespaces"), "spec.namespaces", is_dns1123_label)
    for i, ns in enumerate(namespaces):
        if ns in UNSCOPED_NAMESPACES:
            e.invalid(_i("spec.namespaces", i), ns, "the cluster's own namespace cannot be in "
                      "a scope: every peer needs its objects")
    ns_selector = spec.get("namespaceSelector")
    for key in ("namespaceSelector", "memberSelector"):
        if spec.get(key) is not None:
            _label_selector(e, spec[key], _c("spec", key))
    if not namespaces and ns_selector is None and isinstance(spec.get("namespaces"), list | None):
        e.required("spec.namespaces", "at least one of namespaces and namespaceSelector "
                   "is required")
    members = _scope_names(e, spec.get("members"), "spec.members")
    writers = _scope_names(e, spec.get("writers"), "spec.writers")
    if spec.get("writers") is not None and spec.get("memberSelector") is None:
        # With a selector, membership depends on Node labels, so it cannot be checked here.
        for i, w in enumerate(writers):
            if w not in members:
                e.invalid(_i("spec.writers", i), w, "must be one of spec.members")
