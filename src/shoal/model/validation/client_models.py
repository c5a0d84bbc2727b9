"""Unknown fields of built-in kinds, found by walking the ``kubernetes`` client's models
(generated into :mod:`shoal.model.schemas`; the client itself is not imported)."""

from __future__ import annotations

import copy
import functools
from typing import Any

from shoal.model import schemas
from shoal.model.kinds import Kind
from shoal.model.scope_schema import HAND_WRITTEN_SCHEMAS
from shoal.model.validation.fields import _c, _d, _i, _l
from shoal.model.validation.pruning import prune_unknown
from shoal.model.validation.schema import _crd_schema
from shoal.model.value_memo import ValueMemo


@functools.cache
def _field_types(name: str) -> dict[str, str] | None:
    """JSON field name to the field's type, for a model of the client."""
    fields = schemas.model_fields(name)
    return None if fields is None else {f.json_name: f.type for f in fields}


@functools.cache
def _shape(type_name: str) -> tuple[str, str]:
    """A type name parsed: ("list", element), ("dict", value type) or ("model", name)."""
    t = type_name.strip()
    if t.startswith("List[") and t.endswith("]"):
        return "list", t[5:-1].strip()
    if t.startswith("Dict[") and t.endswith("]"):
        return "dict", t[5:-1].split(",", 1)[1].strip()
    return "model", t


def _any_unknown(type_name: str, value: Any) -> bool:
    """Whether :func:`_walk_model` would find an unknown field: the same walk without the
    paths, which nearly every write needs no more than this (issue 11)."""
    shape, inner = _shape(type_name)
    if shape == "list":
        if isinstance(value, list):
            for item in value:
                if _any_unknown(inner, item):
                    return True
        return False
    if shape == "dict":
        if isinstance(value, dict):
            for item in value.values():
                if _any_unknown(inner, item):
                    return True
        return False
    fields = _field_types(inner)
    if fields is None or not isinstance(value, dict):
        return False
    for key, item in value.items():
        t = fields.get(key)
        if t is None:
            return True
        if isinstance(item, (dict, list)) and _any_unknown(t, item):
            return True
    return False


_KNOWN_SPECS: dict[str, ValueMemo[bool]] = {}
"""Per model, specs with no unknown field, by their bytes: the pods of one template (issue 11)."""


def _has_unknown(name: str, obj: dict[str, Any]) -> bool:
    """``_any_unknown`` of a kind's object, its spec looked up first among those seen."""
    spec = obj.get("spec")
    key = ValueMemo.key(spec) if type(spec) is dict and spec else None
    if key is None:
        return _any_unknown(name, obj)
    memo = _KNOWN_SPECS.get(name)
    if memo is None:
        memo = _KNOWN_SPECS[name] = ValueMemo()
    if memo.get(key):
        return _any_unknown(name, {k: v for k, v in obj.items() if k != "spec"})
    if _any_unknown(name, obj):
        return True
    memo.put(key, True)  # (the spec's fields are checked against its own type alone)
    return False


def _walk_model(type_name: str, value: Any, path: str, out: list[str],
                drop: bool = False) -> None:
    type_name = type_name.strip()
    if type_name.startswith("List[") and type_name.endswith("]"):
        for i, item in enumerate(_l(value)):
            _walk_model(type_name[5:-1], item, _i(path, i), out, drop)
        return
    if type_name.startswith("Dict[") and type_name.endswith("]"):
        inner = type_name[5:-1].split(",", 1)[1]
        for key, item in _d(value).items():
            _walk_model(inner, item, _c(path, key), out, drop)
        return
    fields = _field_types(type_name)
    if fields is None or not isinstance(value, dict):
        return  # a primitive, a quantity, an IntOrString or free-form JSON
    for key in list(value) if drop else value:
        if key not in fields:
            out.append(_c(path, key))
            if drop:
                del value[key]
        else:
            _walk_model(fields[key], value[key], _c(path, key), out, drop)


def unknown_fields(kind: Kind, obj: dict[str, Any]) -> list[str]:
    """The paths of the fields ``fieldValidation=Strict`` rejects as ``unknown field "..."``.

    Built-in kinds are checked against the ``kubernetes`` client's models, as generated
    into :mod:`shoal.model.schemas` (every kind the client has a model for); custom
    resources against their schema, without changing ``obj``.
    """
    if kind.is_custom:
        schema = _crd_schema(kind)
        return prune_unknown(schema, copy.deepcopy(obj)) if schema is not None else []
    own = HAND_WRITTEN_SCHEMAS.get((kind.group, kind.kind))
    if own is not None:
        return prune_unknown(own, copy.deepcopy(obj))
    name = schemas.model_for_kind(kind.group, kind.version, kind.kind)
    if name is None:
        return []
    out: list[str] = []
    if _has_unknown(name, obj):
        _walk_model(name, obj, "", out)
    return out


def drop_unknown_fields(kind: Kind, obj: dict[str, Any]) -> list[str]:
    """Remove from ``obj`` the fields :func:`unknown_fields` finds, and return their paths.

    What the apiserver stores under ``fieldValidation=Ignore`` and ``Warn``: decoding a
    body into a built-in kind's Go type leaves its unknown fields behind, and a custom
    resource is pruned to its structural schema (``x-kubernetes-preserve-unknown-fields``
    keeps them). A write with none (nearly all of them) is walked once, without paths.
    """
    if kind.is_custom:
        schema = _crd_schema(kind)
        return prune_unknown(schema, obj) if schema is not None else []
    own = HAND_WRITTEN_SCHEMAS.get((kind.group, kind.kind))
    if own is not None:
        return prune_unknown(own, obj)
    name = schemas.model_for_kind(kind.group, kind.version, kind.kind)
    out: list[str] = []
    if name is not None and _has_unknown(name, obj):
        _walk_model(name, obj, "", out, drop=True)
    return out
