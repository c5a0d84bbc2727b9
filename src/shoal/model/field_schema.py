"""The shape of a kind's objects as server-side apply needs it (structured-merge-diff's
schema): which maps are structs (named fields), which are maps of any keys, and how each
list is merged: atomic (replaced whole), a set of primitives, or a map keyed by fields.

Built-in kinds read the ``kubernetes`` client's models (:mod:`shoal.model.schemas`) for
structs and maps, and :mod:`shoal.model.merge_keys` for their lists; custom resources
(and Shoal's own kinds) read their structural schema's ``properties``,
``additionalProperties``, ``x-kubernetes-list-type``, ``x-kubernetes-list-map-keys`` and
``x-kubernetes-map-type``. Anything else is *untyped*, as structured-merge-diff's deduced
schema: maps are granular, lists atomic.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from shoal.model import merge_keys, schemas
from shoal.model.kinds import Kind
from shoal.model.scope_schema import HAND_WRITTEN_SCHEMAS
from shoal.model.value_memo import ValueMemo

SCALAR = "scalar"
STRUCT = "struct"  # declared fields, each a named field
MAP = "map"  # any keys, one element type
LIST = "list"
UNTYPED = "untyped"  # deduced from the value: maps granular, lists atomic

ATOMIC = "atomic"
SET = "set"
ASSOCIATIVE = "map"

# Lists of the built-in kinds keyed by more than their patchMergeKey
# (x-kubernetes-list-map-keys in Kubernetes' OpenAPI), by the list's last field names.
_MULTI_KEYS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("containers", "ports"): ("containerPort", "protocol"),
    ("initContainers", "ports"): ("containerPort", "protocol"),
    ("ephemeralContainers", "ports"): ("containerPort", "protocol"),
    ("spec", "ports"): ("port", "protocol"),  # a Service's
    ("topologySpreadConstraints",): ("topologyKey", "whenUnsatisfiable"),
}
MEMO_LIMIT = 256
"""Children kept resolved per struct node."""
# Key fields that are optional in a keyed list's elements and defaulted by Kubernetes.
KEY_DEFAULTS: dict[str, Any] = {"protocol": "TCP"}


@dataclass(frozen=True)
class TypeNode:
    """One node of the schema. ``field`` and ``element`` give the children's types."""

    shape: str
    list_type: str = ATOMIC
    keys: tuple[str, ...] = ()
    atomic: bool = False  # a struct or map replaced whole (x-kubernetes-map-type: atomic)
    declared: bool = True  # False: a struct's field its schema does not name
    _children: Any = field(default=None, compare=False, hash=False)
    _memo: dict[str, TypeNode] = field(default_factory=dict, init=False, compare=False,
                                       hash=False, repr=False)
    """Children already resolved: every write walks its object's fields (issue 11)."""
    _spec_trees: ValueMemo[dict[str, Any]] | None = field(default=None, init=False,
                                                          compare=False, hash=False, repr=False)
    _object_trees: ValueMemo[dict[str, Any]] | None = field(default=None, init=False,
                                                            compare=False, hash=False,
                                                            repr=False)

    def spec_trees(self) -> ValueMemo[dict[str, Any]]:
        """On a kind's root: the FieldsV1 trees of the specs created under it, by the spec's
        bytes (``field_ownership.created_fields_v1``). Kept on the schema, so a CRD's new
        schema starts afresh; made on first use (a schema has thousands of nodes)."""
        if self._spec_trees is None:
            object.__setattr__(self, "_spec_trees", ValueMemo())  # (frozen: not its value)
        assert self._spec_trees is not None
        return self._spec_trees

    def object_trees(self) -> ValueMemo[dict[str, Any]]:
        """On a kind's root: the whole FieldsV1 trees of objects created under it, by the
        bytes of what a writer may own of them (all but the server's metadata): the pods a
        controller makes from one template differ only in that metadata."""
        if self._object_trees is None:
            object.__setattr__(self, "_object_trees", ValueMemo())
        assert self._object_trees is not None
        return self._object_trees

    def field(self, name: str) -> TypeNode:
        """The type of a field of a struct, or of any entry of a map."""
        memo = self._memo
        key = name if self.shape == STRUCT else ""  # a map's or list's children: one type
        node = memo.get(key)
        if node is not None:
            return node
        resolve = self._children
        if resolve is None:
            return UNTYPED_NODE
        node = resolve(name)
        assert isinstance(node, TypeNode)
        if len(memo) < MEMO_LIMIT:  # names a struct does not declare are the user's
            memo[key] = node
        return node

    def element(self) -> TypeNode:
        """The type of a list's elements."""
        return self.field("")

    def declares(self, name: str) -> bool:
        """Whether ``name`` is a named field of this struct."""
        return self.shape == STRUCT and self.field(name).declared


SCALAR_NODE = TypeNode(SCALAR)
UNTYPED_NODE = TypeNode(UNTYPED)
UNKNOWN_FIELD = TypeNode(UNTYPED, declared=False)
"""A field a struct does not declare nor allow: owned as a whole."""
PRESERVED_FIELD = TypeNode(UNTYPED, declared=False)
"""A field a struct keeps without declaring it (x-kubernetes-preserve-unknown-fields)."""


# -- built-in kinds: the client's models -------------------------------------------------


@functools.cache
def _model_fields(name: str) -> dict[str, str] | None:
    fields = schemas.model_fields(name)
    return None if fields is None else {f.json_name: f.type.strip() for f in fields}


@functools.cache
def _model_node(type_name: str, group: str, kind: str, path: tuple[str, ...]) -> TypeNode:
    if type_name.startswith("List[") and type_name.endswith("]"):
        inner = type_name[5:-1].strip()
        key = merge_keys.list_merge_key(group, kind, path)
        elem = functools.partial(_model_child, inner, group, kind, path)
        if key is not None:
            keys = next((v for suffix, v in _MULTI_KEYS.items()
                         if path[-len(suffix):] == suffix and key in v), (key,))
            return TypeNode(LIST, ASSOCIATIVE, keys, _children=elem)
        if merge_keys.is_merging_primitive_list(group, kind, path):
            return TypeNode(LIST, SET, _children=elem)
        return TypeNode(LIST, ATOMIC, _children=elem)
    if type_name.startswith("Dict[") and type_name.endswith("]"):
        inner = type_name[5:-1].split(",", 1)[1].strip()
        return TypeNode(MAP, _children=functools.partial(_model_child, inner, group, kind, path))
    if type_name == "object":
        return UNTYPED_NODE
    fields = _model_fields(type_name)
    if fields is None:
        return SCALAR_NODE  # str, int, bool, datetime, IntOrString, a quantity
    return TypeNode(STRUCT, _children=functools.partial(_struct_child, type_name, group, kind,
                                                        path))


def _model_child(inner: str, group: str, kind: str, path: tuple[str, ...],
                 _name: str) -> TypeNode:
    """The element type of a list or map (its path for merge keys is the container's)."""
    return _model_node(inner, group, kind, path)


def _struct_child(model: str, group: str, kind: str, path: tuple[str, ...],
                  name: str) -> TypeNode:
    fields = _model_fields(model) or {}
    t = fields.get(name)
    if t is None:
        return UNKNOWN_FIELD
    return _model_node(t, group, kind, (*path, name))


# -- custom resources: structural schemas ------------------------------------------------


def _openapi_node(schema: dict[str, Any]) -> TypeNode:
    if not isinstance(schema, dict):
        return UNTYPED_NODE
    t = schema.get("type")
    if t == "array":
        items = schema.get("items")
        elem = functools.partial(_openapi_child, items if isinstance(items, dict) else {})
        list_type = schema.get("x-kubernetes-list-type") or ATOMIC
        keys = tuple(schema.get("x-kubernetes-list-map-keys") or ())
        if list_type == ASSOCIATIVE and keys:
            return TypeNode(LIST, ASSOCIATIVE, keys, _children=elem)
        return TypeNode(LIST, SET if list_type == SET else ATOMIC, _children=elem)
    atomic = schema.get("x-kubernetes-map-type") == "atomic"
    props = schema.get("properties")
    if isinstance(props, dict) and props:
        return TypeNode(STRUCT, atomic=atomic,
                        _children=functools.partial(_openapi_field, props, schema))
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        return TypeNode(MAP, atomic=atomic, _children=functools.partial(_openapi_child, extra))
    if schema.get("x-kubernetes-int-or-string") or t not in (None, "object"):
        return SCALAR_NODE
    return TypeNode(UNTYPED, atomic=True) if atomic else UNTYPED_NODE


def _openapi_child(schema: dict[str, Any], _name: str) -> TypeNode:
    return _openapi_node(schema)


def _openapi_field(props: dict[str, Any], parent: dict[str, Any], name: str) -> TypeNode:
    sub = props.get(name)
    if isinstance(sub, dict):
        return _openapi_node(sub)
    extra = parent.get("additionalProperties")
    if isinstance(extra, dict):
        return replace(_openapi_node(extra), declared=False)
    return PRESERVED_FIELD if parent.get("x-kubernetes-preserve-unknown-fields") \
        else UNKNOWN_FIELD


def _resource_root(schema: dict[str, Any]) -> TypeNode:
    """A custom resource's root: metadata is always ObjectMeta, whatever the schema says."""
    body = _openapi_node({**schema, "type": "object"})
    # (any built-in kind's tables give ObjectMeta's lists: ownerReferences, finalizers)
    meta = _model_node("V1ObjectMeta", "", "ConfigMap", ("metadata",))

    def child(name: str) -> TypeNode:
        if name == "metadata":
            return meta
        if name in ("apiVersion", "kind"):
            return SCALAR_NODE
        return body.field(name) if body.shape == STRUCT else UNTYPED_NODE

    return TypeNode(STRUCT, _children=child)


# -- the root of a kind ------------------------------------------------------------------


def for_kind(kind: Kind) -> TypeNode:
    """The schema of ``kind``'s objects."""
    if kind.is_custom:
        schema = ((kind.crd_version or {}).get("schema") or {}).get("openAPIV3Schema")
        return _custom_root(_freeze(schema)) if isinstance(schema, dict) else _untyped_root()
    return _built_in_root(kind.group, kind.version, kind.kind)


@functools.cache
def _built_in_root(group: str, version: str, kind: str) -> TypeNode:
    """A built-in kind's root, made once (every write asks for it; issue 11)."""
    own = HAND_WRITTEN_SCHEMAS.get((group, kind))
    if own is not None:
        return _resource_root(own)
    model = schemas.model_for_kind(group, version, kind)
    if model is None:
        return _untyped_root()
    return _model_node(model, group, kind, ())


def _untyped_root() -> TypeNode:
    return _resource_root({"type": "object", "x-kubernetes-preserve-unknown-fields": True})


def _freeze(schema: dict[str, Any]) -> str:
    return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()


@functools.lru_cache(maxsize=256)
def _custom_root(frozen: str) -> TypeNode:
    schema: dict[str, Any] = orjson.loads(frozen)
    return _resource_root(schema)
