"""The schema of Shoal's own kind, ``Scope`` (``shoal.dev/v1alpha1``).

Built-in Kubernetes kinds take their schemas from the ``kubernetes`` client's models;
Shoal's own kind has none there, so its structural OpenAPI v3 schema is written here.
The API documents it (``kubectl explain scope.spec``), and validation checks types and
unknown fields against it before the Scope rules of :mod:`shoal.model.validation`.
"""

from __future__ import annotations

from typing import Any

from shoal.model.device_schema import DEVICE_SCHEMAS

GROUP = "shoal.dev"
VERSION = "v1alpha1"
KIND = "Scope"

_NAMES_DOC = "DNS-1123 names."

_SELECTOR: dict[str, Any] = {
    "type": "object",
    "description": "A label selector is a label query over a set of resources. The result "
    "of matchLabels and matchExpressions are ANDed. An empty label selector matches no "
    "objects here (unlike Kubernetes' workloads, where it matches every object).",
    "properties": {
        "matchLabels": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "matchLabels is a map of {key,value} pairs.",
        },
        "matchExpressions": {
            "type": "array",
            "description": "matchExpressions is a list of label selector requirements. "
            "The requirements are ANDed.",
            "items": {
                "type": "object",
                "required": ["key", "operator"],
                "properties": {
                    "key": {"type": "string",
                            "description": "key is the label key that the selector applies to."},
                    "operator": {"type": "string",
                                 "description": "operator is one of In, NotIn, Exists and "
                                 "DoesNotExist."},
                    "values": {"type": "array", "items": {"type": "string"},
                               "description": "values is an array of string values."},
                },
            },
        },
    },
}


def _names(what: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": f"{what} {_NAMES_DOC}"}


SCOPE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Scope names a set of namespaces and the peers that may hold them. The "
    "objects in those namespaces are replicated only to the scope's members, and only its "
    "writers accept user writes for them. Everything not in a Scope is in the cluster "
    "scope, which every full peer holds. A namespace named by several Scopes belongs to "
    "the one whose name sorts first.",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "description": "Which namespaces the scope holds and which peers hold it. At "
            "least one of namespaces and namespaceSelector is required.",
            "properties": {
                "namespaces": _names("The namespaces in the scope."),
                "namespaceSelector": {
                    **_SELECTOR,
                    "description": "Namespaces whose labels match are in the scope too.",
                },
                "members": _names("The peers (node names) that hold the scope."),
                "memberSelector": {
                    **_SELECTOR,
                    "description": "Peers whose Node labels match are members too.",
                },
                "writers": _names(
                    "The members that accept user writes for the scope; every member when "
                    "omitted. When members is a list and there is no memberSelector, every "
                    "writer must be a member."),
            },
        },
    },
}

HAND_WRITTEN_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {(GROUP, KIND): SCOPE_SCHEMA,
                                                                **DEVICE_SCHEMAS}
"""(group, kind) -> the structural schema of the kinds the client's models do not know."""
