"""Unknown fields of custom resources and schema-described kinds: pruned, with their paths."""

from __future__ import annotations

from typing import Any

from shoal.model.validation.fields import _c, _d, _i
from shoal.model.validation.schema import _ROOT_FIELDS

# --- pruning and unknown fields -------------------------------------------------------

# The fields of ObjectMeta that a client may send; anything else in metadata is unknown.
_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)


def _prune_meta(meta: Any, path: str, out: list[str]) -> None:
    if isinstance(meta, dict):
        for key in [k for k in meta if k not in _OBJECT_META_FIELDS]:
            del meta[key]
            out.append(_c(path, key))


def _prune(schema: dict[str, Any], value: Any, path: str, out: list[str]) -> None:
    if isinstance(value, dict):
        props = _d(schema.get("properties"))
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = schema.get("x-kubernetes-embedded-resource") is True
        for key in list(value):
            sub = props.get(key)
            child = _c(path, key)
            if isinstance(sub, dict):
                _prune(sub, value[key], child, out)
            elif isinstance(additional, dict):
                _prune(additional, value[key], child, out)
            elif embedded and key in _ROOT_FIELDS:
                if key == "metadata":
                    _prune_meta(value[key], child, out)
            elif not preserve and additional is not True:
                del value[key]
                out.append(child)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _prune(items, item, _i(path, i), out)


def prune_unknown(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """Drop the fields of a custom resource its schema does not know; return their paths.

    ``apiVersion`` and ``kind`` are kept; ``metadata`` is pruned to ObjectMeta's
    fields. ``x-kubernetes-preserve-unknown-fields`` keeps a node's unknown fields
    (while still pruning inside the fields it specifies), as Kubernetes does.
    """
    out: list[str] = []
    root = {k: v for k, v in schema.items() if k != "properties"}
    root["properties"] = {
        k: v for k, v in _d(schema.get("properties")).items() if k not in _ROOT_FIELDS
    }
    for key in list(obj):
        if key in ("apiVersion", "kind"):
            continue
        if key == "metadata":
            _prune_meta(obj[key], "metadata", out)
            continue
        sub = root["properties"].get(key)
        if isinstance(sub, dict):
            _prune(sub, obj[key], key, out)
        elif root.get("x-kubernetes-preserve-unknown-fields") is not True:
            del obj[key]
            out.append(key)
    return out
