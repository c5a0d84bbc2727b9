"""The schema engine: a value checked against an OpenAPI v3 schema, as the apiserver checks a custom resource."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from shoal.model.kinds import Kind
from shoal.model.validation.causes import Cause, _Errors, _go, _q
from shoal.model.validation.fields import _as_int, _c, _d, _i, _is_int, _l

# --- custom resources: structural schemas ---------------------------------------------


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _has_type(value: Any, t: str) -> bool:
    actual = _json_type(value)
    if t == "integer":
        return _is_int(value)
    if t == "number":
        return actual in ("integer", "number")
    return actual == t


def _json_key(value: Any) -> str:
    # Equality as JSON sees it: true is not 1, and 1 equals 1.0.
    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        if isinstance(v, list):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True)


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _body(path: str) -> str:
    return f"{path} in body" if path else "body"


def _schema_string(e: _Errors, schema: dict[str, Any], value: str, path: str) -> None:
    min_length = _as_int(schema.get("minLength"))
    if min_length is not None and len(value) < min_length:
        e.invalid(path, value, f"{_body(path)} should be at least {min_length} chars long")
    max_length = _as_int(schema.get("maxLength"))
    if max_length is not None and len(value) > max_length:
        e.too_long_length(path, max_length)
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True  # the CRD's own validation reports a bad pattern
        if not matched:
            e.invalid(path, value, f"{_body(path)} should match '{pattern}'")


def _schema_number(e: _Errors, schema: dict[str, Any], value: float, path: str) -> None:
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float) and not isinstance(minimum, bool):
        if schema.get("exclusiveMinimum") is True and value <= minimum:
            e.invalid(path, value, f"{_body(path)} should be greater than {_num(minimum)}")
        elif value < minimum:
            e.invalid(
                path, value, f"{_body(path)} should be greater than or equal to {_num(minimum)}"
            )
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float) and not isinstance(maximum, bool):
        if schema.get("exclusiveMaximum") is True and value >= maximum:
            e.invalid(path, value, f"{_body(path)} should be less than {_num(maximum)}")
        elif value > maximum:
            e.invalid(path, value, f"{_body(path)} should be less than or equal to {_num(maximum)}")
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and not isinstance(multiple, bool) and multiple > 0:
        quotient = Decimal(str(value)) / Decimal(str(multiple))
        if quotient != quotient.to_integral_value():
            e.invalid(path, value, f"{_body(path)} should be a multiple of {_num(multiple)}")


def _schema_array(e: _Errors, schema: dict[str, Any], value: list[Any], path: str) -> None:
    min_items = _as_int(schema.get("minItems"))
    if min_items is not None and len(value) < min_items:
        e.invalid(path, value, f"{_body(path)} should have at least {min_items} items")
    max_items = _as_int(schema.get("maxItems"))
    if max_items is not None and len(value) > max_items:
        e.too_many(path, len(value), max_items)
    list_type = schema.get("x-kubernetes-list-type")
    if schema.get("uniqueItems") is True or list_type == "set":
        seen: set[str] = set()
        for i, item in enumerate(value):
            key = _json_key(item)
            if key in seen:
                e.duplicate(_i(path, i), item)
            seen.add(key)
    elif list_type == "map":
        map_keys = [k for k in _l(schema.get("x-kubernetes-list-map-keys")) if isinstance(k, str)]
        seen_keys: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            key_values = {k: item.get(k) for k in map_keys}
            key = _json_key(key_values)
            if key in seen_keys:
                shown = ", ".join(f"{_q(k)}:{_go(v)}" for k, v in key_values.items())
                e.duplicate_shown(_i(path, i), f"map[string]interface {{}}{{{shown}}}")
            seen_keys.add(key)
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _schema_value(e, items, item, _i(path, i))


def _schema_object(e: _Errors, schema: dict[str, Any], value: dict[str, Any], path: str) -> None:
    for key in _l(schema.get("required")):
        if isinstance(key, str) and key not in value:
            e.required(_c(path, key))
    min_props = _as_int(schema.get("minProperties"))
    if min_props is not None and len(value) < min_props:
        e.invalid(path, value, f"{_body(path)} should have at least {min_props} properties")
    max_props = _as_int(schema.get("maxProperties"))
    if max_props is not None and len(value) > max_props:
        e.invalid(path, value, f"{_body(path)} should have at most {max_props} properties")
    props = _d(schema.get("properties"))
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        sub = props.get(key)
        if isinstance(sub, dict):
            _schema_value(e, sub, item, _c(path, key))
        elif isinstance(additional, dict):
            _schema_value(e, additional, item, _c(path, key))


def _schema_junctors(e: _Errors, schema: dict[str, Any], value: Any, path: str) -> None:
    def passes(sub: Any) -> bool:
        if not isinstance(sub, dict):
            return True
        probe = _Errors()
        _schema_value(probe, sub, value, path)
        return not probe.causes

    for sub in _l(schema.get("allOf")):
        if isinstance(sub, dict):
            _schema_value(e, sub, value, path)
    any_of = _l(schema.get("anyOf"))
    if any_of and not any(passes(s) for s in any_of):
        e.invalid(path, value, f"{_body(path)} must validate at least one schema (anyOf)")
    one_of = _l(schema.get("oneOf"))
    if one_of and sum(passes(s) for s in one_of) != 1:
        e.invalid(path, value, f"{_body(path)} must validate one and only one schema (oneOf)")
    not_schema = schema.get("not")
    if isinstance(not_schema, dict) and passes(not_schema):
        e.invalid(path, value, f"{_body(path)} must not validate the schema (not)")


def _schema_value(e: _Errors, schema: dict[str, Any], value: Any, path: str) -> None:
    t = schema.get("type")
    if value is None:
        if not schema.get("nullable") and t:
            e.type_invalid(path, "null", f'{_body(path)} must be of type {t}: "null"')
        return
    if schema.get("x-kubernetes-int-or-string") is True:
        if not (isinstance(value, str) or _is_int(value)):
            actual = _json_type(value)
            e.type_invalid(
                path, actual, f'{_body(path)} must be of type integer,string: "{actual}"'
            )
            return
    elif isinstance(t, str) and t and not _has_type(value, t):
        actual = _json_type(value)
        e.type_invalid(path, actual, f'{_body(path)} must be of type {t}: "{actual}"')
        return
    enum = schema.get("enum")
    if isinstance(enum, list) and _json_key(value) not in {_json_key(v) for v in enum}:
        e.not_supported(path, value, [v if isinstance(v, str) else _go(v) for v in enum])
    if isinstance(value, str):
        _schema_string(e, schema, value, path)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        _schema_number(e, schema, value, path)
    elif isinstance(value, list):
        _schema_array(e, schema, value, path)
    elif isinstance(value, dict):
        _schema_object(e, schema, value, path)
    _schema_junctors(e, schema, value, path)


_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def validate_schema(schema: dict[str, Any], obj: dict[str, Any]) -> list[Cause]:
    """Check a custom resource against its ``openAPIV3Schema`` (not its metadata)."""
    e = _Errors()
    root = {k: v for k, v in schema.items() if k not in ("properties", "required")}
    root["properties"] = {
        k: v for k, v in _d(schema.get("properties")).items() if k not in _ROOT_FIELDS
    }
    root["required"] = [k for k in _l(schema.get("required")) if k not in _ROOT_FIELDS]
    body = {k: v for k, v in obj.items() if k not in _ROOT_FIELDS}
    _schema_value(e, root, body, "")
    return e.causes


def _crd_schema(kind: Kind) -> dict[str, Any] | None:
    schema = _d(_d(kind.crd_version).get("schema")).get("openAPIV3Schema")
    return schema if isinstance(schema, dict) else None
