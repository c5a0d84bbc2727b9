"""Unknown fields of built-in kinds, found by walking the ``kubernetes`` client's models."""

from __future__ import annotations

import copy
import functools
from types import ModuleType
from typing import Any

from shoal.model.kinds import Kind
from shoal.model.scope_schema import HAND_WRITTEN_SCHEMAS
from shoal.model.validation.fields import _c, _d, _i, _l
from shoal.model.validation.pruning import prune_unknown
from shoal.model.validation.schema import _crd_schema

_CLIENT_MODELS: dict[tuple[str, str], str] = {
    ("", "Namespace"): "V1Namespace",
    ("", "Pod"): "V1Pod",
    ("", "Node"): "V1Node",
    ("", "Service"): "V1Service",
    ("", "Endpoints"): "V1Endpoints",
    ("", "ConfigMap"): "V1ConfigMap",
    ("", "Secret"): "V1Secret",
    ("", "Event"): "CoreV1Event",
    ("", "ServiceAccount"): "V1ServiceAccount",
    ("apps", "Deployment"): "V1Deployment",
    ("apps", "ReplicaSet"): "V1ReplicaSet",
    ("apps", "DaemonSet"): "V1DaemonSet",
    ("apps", "StatefulSet"): "V1StatefulSet",
    ("batch", "Job"): "V1Job",
    ("coordination.k8s.io", "Lease"): "V1Lease",
    ("discovery.k8s.io", "EndpointSlice"): "V1EndpointSlice",
    ("apiextensions.k8s.io", "CustomResourceDefinition"): "V1CustomResourceDefinition",
}


@functools.cache
def _client_models() -> ModuleType | None:
    # Imported on first use: the models module is large and only Strict needs it.
    try:
        import kubernetes.client.models as models
    except ImportError:  # pragma: no cover - kubernetes is a dependency
        return None
    return models


@functools.cache
def _model_fields(models: ModuleType, name: str) -> dict[str, str] | None:
    """JSON field name to the field's type name, for a client model class."""
    cls = getattr(models, name, None)
    attribute_map = getattr(cls, "attribute_map", None)
    openapi_types = getattr(cls, "openapi_types", None)
    if not isinstance(attribute_map, dict) or not isinstance(openapi_types, dict):
        return None
    return {json_name: openapi_types[attr] for attr, json_name in attribute_map.items()}


def _walk_model(models: ModuleType, type_name: str, value: Any, path: str, out: list[str]) -> None:
    type_name = type_name.strip()
    if type_name.startswith("List[") and type_name.endswith("]"):
        for i, item in enumerate(_l(value)):
            _walk_model(models, type_name[5:-1], item, _i(path, i), out)
        return
    if type_name.startswith("Dict[") and type_name.endswith("]"):
        inner = type_name[5:-1].split(",", 1)[1]
        for key, item in _d(value).items():
            _walk_model(models, inner, item, _c(path, key), out)
        return
    fields = _model_fields(models, type_name)
    if fields is None or not isinstance(value, dict):
        return  # a primitive, a quantity, an IntOrString or free-form JSON
    for key, item in value.items():
        if key not in fields:
            out.append(_c(path, key))
        else:
            _walk_model(models, fields[key], item, _c(path, key), out)


def unknown_fields(kind: Kind, obj: dict[str, Any]) -> list[str]:
    """The paths of the fields ``fieldValidation=Strict`` rejects as ``unknown field "..."``.

    Built-in kinds are checked against the ``kubernetes`` client's models (so fields
    newer than the client are reported too); custom resources against their schema,
    without changing ``obj``.
    """
    if kind.is_custom:
        schema = _crd_schema(kind)
        return prune_unknown(schema, copy.deepcopy(obj)) if schema is not None else []
    own = HAND_WRITTEN_SCHEMAS.get((kind.group, kind.kind))
    if own is not None:
        return prune_unknown(own, copy.deepcopy(obj))
    name = _CLIENT_MODELS.get((kind.group, kind.kind))
    models = _client_models()
    if name is None or models is None:
        return []
    out: list[str] = []
    _walk_model(models, name, obj, "", out)
    return out
