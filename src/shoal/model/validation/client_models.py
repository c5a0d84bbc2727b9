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


@functools.cache
def _field_types(name: str) -> dict[str, str] | None:
    """JSON field name to the field's type, for a model of the client."""
    fields = schemas.model_fields(name)
    return None if fields is None else {f.json_name: f.type for f in fields}


def _walk_model(type_name: str, value: Any, path: str, out: list[str]) -> None:
    type_name = type_name.strip()
    if type_name.startswith("List[") and type_name.endswith("]"):
        for i, item in enumerate(_l(value)):
            _walk_model(type_name[5:-1], item, _i(path, i), out)
        return
    if type_name.startswith("Dict[") and type_name.endswith("]"):
        inner = type_name[5:-1].split(",", 1)[1]
        for key, item in _d(value).items():
            _walk_model(inner, item, _c(path, key), out)
        return
    fields = _field_types(type_name)
    if fields is None or not isinstance(value, dict):
        return  # a primitive, a quantity, an IntOrString or free-form JSON
    for key, item in value.items():
        if key not in fields:
            out.append(_c(path, key))
        else:
            _walk_model(fields[key], item, _c(path, key), out)


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
    _walk_model(name, obj, "", out)
    return out
