"""CustomResourceDefinitions (apiextensions.k8s.io/v1): structural schemas, versions, names."""

from __future__ import annotations

import re
from typing import Any

from shoal.model.validation.causes import _Errors
from shoal.model.validation.fields import _c, _d, _dicts, _i, _k, _l, _s
from shoal.model.validation.names import is_dns1035_label, is_dns1123_subdomain

# --- apiextensions.k8s.io/v1 ----------------------------------------------------------

_SCHEMA_TYPES = ("array", "boolean", "integer", "number", "object", "string")


def _structural(e: _Errors, schema: Any, path: str, what: str) -> None:
    """The structural-schema rule users hit first: every specified field has a type."""
    if not isinstance(schema, dict):
        e.type_invalid(path, schema, "must be an object")
        return
    t = schema.get("type")
    if t is None or t == "":
        if not (
            schema.get("x-kubernetes-int-or-string") is True
            or schema.get("x-kubernetes-preserve-unknown-fields") is True
        ):
            e.required(_c(path, "type"), f"must not be empty for specified {what}")
    elif t not in _SCHEMA_TYPES:
        e.not_supported(_c(path, "type"), t, _SCHEMA_TYPES)
    props = schema.get("properties")
    additional = schema.get("additionalProperties")
    if isinstance(props, dict):
        if isinstance(additional, dict) or additional is True:
            e.forbidden(
                _c(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            )
        for name, sub in props.items():
            _structural(e, sub, _k(_c(path, "properties"), name), "object fields")
    if isinstance(additional, dict):
        _structural(e, additional, _c(path, "additionalProperties"), "object fields")
    items = schema.get("items")
    if isinstance(items, dict):
        _structural(e, items, _c(path, "items"), "array items")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            e.invalid(_c(path, "pattern"), pattern, f"must be a valid regular expression: {exc}")


def _validate_crd(e: _Errors, obj: dict[str, Any]) -> None:
    spec = _d(obj.get("spec"))
    names = _d(spec.get("names"))
    group = _s(spec.get("group"))
    if not group:
        e.required("spec.group")
    else:
        e.each("spec.group", group, is_dns1123_subdomain(group))
        if "." not in group:
            e.invalid("spec.group", group, "should be a domain with at least one dot")
    plural = _s(names.get("plural"))
    name = _s(_d(obj.get("metadata")).get("name"))
    if name and plural and group and name != f"{plural}.{group}":
        e.invalid("metadata.name", name, 'must be spec.names.plural+"."+spec.group')
    for key in ("plural", "singular", "kind", "listKind"):
        value = names.get(key)
        p = _c("spec.names", key)
        if not value:
            e.required(p)
        elif isinstance(value, str):
            errs = is_dns1035_label(value.lower() if key in ("kind", "listKind") else value)
            if errs and key in ("kind", "listKind"):
                e.invalid(
                    p, value, "may have mixed case, but should otherwise match: " + ",".join(errs)
                )
            elif errs:
                e.invalid(p, value, ",".join(errs))
    for i, short in enumerate(_l(names.get("shortNames"))):
        e.each(_i("spec.names.shortNames", i), short, is_dns1035_label(_s(short)))
    if names.get("kind") and names.get("kind") == names.get("listKind"):
        e.invalid("spec.names.listKind", names["listKind"], "kind and listKind may not be the same")
    scope = spec.get("scope")
    if not scope:
        e.required("spec.scope")
    elif scope not in ("Cluster", "Namespaced"):
        e.not_supported("spec.scope", scope, ["Cluster", "Namespaced"])
    versions = _l(spec.get("versions"))
    if not versions:
        e.required("spec.versions", "must have at least one version")
    seen: set[str] = set()
    storage = 0
    for i, version in _dicts(versions):
        p = _i("spec.versions", i)
        version_name = _s(version.get("name"))
        if not version_name:
            e.required(_c(p, "name"))
        else:
            e.each(_c(p, "name"), version_name, is_dns1035_label(version_name))
            if version_name in seen:
                e.duplicate(_c(p, "name"), version_name)
            seen.add(version_name)
        if version.get("storage") is True:
            storage += 1
        schema = _d(version.get("schema")).get("openAPIV3Schema")
        sp = _c(p, "schema", "openAPIV3Schema")
        if schema is None:
            e.required(sp, "schemas are required")
        elif isinstance(schema, dict):
            root_type = schema.get("type")
            if not root_type:
                e.required(_c(sp, "type"), "must not be empty at the root")
            elif root_type != "object":
                e.invalid(_c(sp, "type"), root_type, "must be object at the root")
            _structural(e, {**schema, "type": "object"}, sp, "object fields")
        else:
            e.type_invalid(sp, schema, "must be an object")
    if versions and storage != 1:
        e.invalid(
            "spec.versions", versions, "must have exactly one version marked as storage version"
        )
    conversion = _d(spec.get("conversion"))
    strategy = conversion.get("strategy")
    if strategy not in (None, "", "None", "Webhook"):
        e.not_supported("spec.conversion.strategy", strategy, ["None", "Webhook"])
    if strategy == "Webhook" and not conversion.get("webhook"):
        e.required("spec.conversion.webhook", "required when strategy is set to Webhook")


def _validate_crd_update(e: _Errors, obj: dict[str, Any], old: dict[str, Any]) -> None:
    spec, old_spec = _d(obj.get("spec")), _d(old.get("spec"))
    for key in ("group", "scope"):
        if old_spec.get(key) and spec.get(key) != old_spec.get(key):
            e.immutable(_c("spec", key), spec.get(key))
