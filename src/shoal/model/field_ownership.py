"""The field ownership every write but an apply records (structured-merge-diff's
``Update``): the writer owns the fields it added or changed, taken from every other manager
without a conflict; a removed field is owned by no one. A create owns all it holds
(:func:`created_fields_v1`, the fast way to the same tree). Server-side apply itself is
``shoal.api.server_side_apply``; this is below the API so that the controllers, which
create and update objects through the store, record their writes as the API does.

The server's own metadata (``metadata.name``, ``uid``, ``resourceVersion``...) is owned by
no one; on the main resource of a kind with a status subresource, ``status`` is not
recorded, and through ``/status`` only ``status`` is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from shoal.model.field_schema import ASSOCIATIVE, MAP, STRUCT, UNKNOWN_FIELD, UNTYPED, TypeNode
from shoal.model.field_sets import (
    EMPTY,
    MEMBER_MARK,
    FieldSet,
    Member,
    Path,
    list_elements,
    members,
)
from shoal.model.managed_fields import (
    FIELDS_TYPE,
    UPDATE,
    ManagerKey,
    Managers,
    Ownership,
    cap_updates,
    encode,
)
from shoal.model.value_memo import ValueMemo

_META_FIELDS = ("name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName",
                "generation", "managedFields", "resourceVersion")
SERVER_OWNED: FieldSet = frozenset({(), ("f:apiVersion",), ("f:kind",), ("f:metadata",),
                                    *(("f:metadata", "f:" + f) for f in _META_FIELDS)})
"""Paths no manager owns (Kubernetes' stripMeta); the others below them still count."""
_STATUS = "f:status"


@dataclass(frozen=True)
class Write:
    """Who writes, through which subresource, and what that write may own."""

    manager: str
    api_version: str
    now: str
    subresource: str = ""
    status_is_separate: bool = False  # the kind has a status subresource

    def key(self, operation: str) -> ManagerKey:
        return ManagerKey.of(self.manager, operation, self.api_version, self.subresource)

    def covers(self, path: Path) -> bool:
        """Whether this write may own ``path`` (Kubernetes' reset fields)."""
        in_status = bool(path) and path[0] == _STATUS
        if self.subresource == "status":
            return in_status
        return not (self.status_is_separate and in_status)

    def recordable(self, fields: FieldSet) -> FieldSet:
        return frozenset(p for p in fields if p not in SERVER_OWNED and self.covers(p))


def granular_map(value: Any, node: TypeNode) -> bool:
    return isinstance(value, dict) and node.shape in (STRUCT, MAP, UNTYPED) and not node.atomic


@dataclass(frozen=True)
class Comparison:
    """What a write did to an object's fields."""

    changed: FieldSet  # added, or a leaf whose value changed
    removed: FieldSet


def compare(old: Any, new: Any, node: TypeNode) -> Comparison:
    after = members(new, node)
    if not old:  # a create: everything is new
        return Comparison(frozenset(after), EMPTY)
    before = members(old, node)
    changed = {p for p, m in after.items() if _differs(before.get(p), m)}
    return Comparison(frozenset(changed), frozenset(before.keys() - after.keys()))


def _differs(old: Member | None, new: Member) -> bool:
    if old is None:
        return True
    if not (old.leaf or new.leaf):
        return False
    return old.leaf != new.leaf or type(old.value) is not type(new.value) \
        or old.value != new.value


# -- the two operations ---------------------------------------------------------------------


def update(old: dict[str, Any] | None, new: dict[str, Any], managers: Managers,
           root: TypeNode, write: Write) -> Managers:
    """Who owns what after a write that is not an apply: the writer owns what it added or
    changed, taken from whoever owned it (no conflicts for updates)."""
    key = write.key(UPDATE)
    diff = compare(old or {}, new, root)
    changed = write.recordable(diff.changed)
    removed = write.recordable(diff.removed)
    out: Managers = {}
    for k, own in managers.items():
        kept = own.fields - changed - removed
        if kept:
            out[k] = replace(own, fields=kept) if kept != own.fields else own
    previous = managers.get(key)
    mine = ((previous.fields - removed) if previous else EMPTY) | changed
    if mine:
        when = write.now if changed or previous is None else previous.time
        out[key] = Ownership(mine, write.api_version, when)
    return out


_ROOT_DROPPED = frozenset({"apiVersion", "kind", "metadata"})
_NOTHING: frozenset[str] = frozenset()
_META_DROPPED = frozenset(_META_FIELDS)


def created_fields_v1(new: dict[str, Any], root: TypeNode, write: Write) -> dict[str, Any]:
    """The FieldsV1 tree of what a create's writer owns, built straight from the object: the
    same tree as ``update(None, new, {}, root, write)`` encodes (every member of ``new``
    that the write may record), without the set of paths between (issue 11: a pod's walk
    into paths, the set and its tree were most of a create's managed-fields time). Only for
    a write on the main resource (``write.subresource`` empty)."""
    assert not write.subresource
    if not granular_map(new, root):
        return {}  # (every kind's root is a struct)
    if write.status_is_separate and "status" in new:
        # Not the main resource's to own, nor anything below it.
        new = {k: v for k, v in new.items() if k != "status"}
    # The whole tree depends only on what a writer may own: the objects of one template
    # (a ReplicaSet's pods) share it, as the specs' trees below are shared. Only for objects
    # with a spec: a ConfigMap's or Secret's data would fill the memo (and memory) with
    # values that never repeat.
    meta, spec = new.get("metadata"), new.get("spec")
    key = ValueMemo.key(({k: v for k, v in meta.items() if k not in _META_DROPPED},
                         {k: v for k, v in new.items() if k not in _ROOT_DROPPED})) \
        if type(meta) is dict and type(spec) is dict and spec else None
    if key is None:
        return _spec_shared_fields_v1(new, root)
    memo = root.object_trees()
    known = memo.get(key)
    if known is None:
        known = _spec_shared_fields_v1(new, root)
        memo.put(key, known)
    return known


def _spec_shared_fields_v1(new: dict[str, Any], root: TypeNode) -> dict[str, Any]:
    spec = new.get("spec")
    key = ValueMemo.key(spec) if type(spec) is dict and spec else None
    if key is None:
        return _map_fields_v1(new, root, _ROOT_DROPPED, _META_DROPPED)
    # The spec's part depends on the spec and its schema alone: remembered on the schema's
    # node by the spec's bytes (the pods of one template share it; issue 11).
    memo = root.spec_trees()
    known = memo.get(key)
    if known is None:
        tree = _map_fields_v1(new, root, _ROOT_DROPPED, _META_DROPPED)
        if "f:spec" in tree:
            memo.put(key, tree["f:spec"])
        return tree
    tree = _map_fields_v1({k: v for k, v in new.items() if k != "spec"}, root,
                          _ROOT_DROPPED, _META_DROPPED)
    # One tree for every object of the spec, not a copy (a copy of a tree of empty maps
    # cost as much as the walk): stored objects are read-only (docs/performance.md).
    tree["f:spec"] = known
    return dict(sorted(tree.items()))



_GRANULAR = frozenset({STRUCT, MAP, UNTYPED})


def _map_fields_v1(value: dict[str, Any], node: TypeNode, dropped: frozenset[str] = _NOTHING,
                   metadata: frozenset[str] = _NOTHING) -> dict[str, Any]:
    """The FieldsV1 children of a granular map under ``node``, as ``field_sets._walk`` makes
    its members: ``dropped`` are its fields no manager owns, ``metadata`` those of its
    ``metadata`` field (the root's: the server's own)."""
    tree: dict[str, Any] = {}
    field = node.field
    struct = node.shape == STRUCT
    for k in sorted(value):
        v = value[k]
        if not isinstance(v, (dict, list)):  # a scalar: a leaf
            if k not in dropped:
                tree["f:" + k] = {}
            continue
        child = field(k)
        if child is UNKNOWN_FIELD:
            if k not in dropped:
                tree["f:" + k] = {}
            continue
        if isinstance(v, dict):
            if child.shape in _GRANULAR and not child.atomic:
                sub = _map_fields_v1(v, child, metadata if k == "metadata" else _NOTHING)
                member = not v or not struct or not child.declared
            else:
                sub, member = _NO_CHILDREN, True
        else:
            sub, member = _list_fields_v1(v, child)
            if not member:
                member = not struct or not child.declared
        if member and k not in dropped:
            tree["f:" + k] = {MEMBER_MARK: {}, **sub} if sub else {}
        elif sub:
            tree["f:" + k] = sub
    return tree


_NO_CHILDREN: dict[str, Any] = {}


def _list_fields_v1(value: list[Any], node: TypeNode) -> tuple[dict[str, Any], bool]:
    """The FieldsV1 children of a list, and whether the list is a member by itself (owned
    whole: atomic, or its elements' keys missing or repeated)."""
    elements = list_elements(value, node)
    if elements is None:
        return _NO_CHILDREN, True
    tree: dict[str, Any] = {}
    if node.list_type == ASSOCIATIVE:
        elem = node.element()
        granular = elem.shape in _GRANULAR and not elem.atomic
        for e, item in sorted(zip(elements, value, strict=True), key=_first):
            sub = _map_fields_v1(item, elem) if granular else _NO_CHILDREN
            tree[e] = {MEMBER_MARK: {}, **sub} if sub else {}
    else:
        for e in sorted(elements):
            tree[e] = {}
    return tree, False


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]


def created_entries(new: dict[str, Any], root: TypeNode, write: Write) -> list[dict[str, Any]]:
    """A create's managedFields, owning all it holds, straight from the object: what
    ``update`` then ``managed_fields.encode`` give, without the diff."""
    tree = created_fields_v1(new, root, write)
    if not tree:
        return []
    return [{"manager": write.manager, "operation": UPDATE,
             "apiVersion": write.api_version, "time": write.now,
             "fieldsType": FIELDS_TYPE, "fieldsV1": tree}]


def updated_entries(old: dict[str, Any] | None, new: dict[str, Any], managers: Managers,
                    root: TypeNode, write: Write) -> list[dict[str, Any]]:
    """The managedFields after a write that is not an apply, from the managers before it:
    ``update``, then at most MAX_UPDATE_MANAGERS Update entries, encoded."""
    return encode(cap_updates(update(old, new, managers, root, write), write.now))
