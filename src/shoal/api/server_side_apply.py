"""Server-side apply, and the field ownership every other write records.

The semantics are structured-merge-diff's (Kubernetes' ``Updater``), over the field sets
of :mod:`shoal.api.field_sets`:

- **Apply** merges the applied configuration into the live object; the applier then owns
  exactly the fields of its configuration. A field it applied before and no longer
  applies is removed, unless another manager owns it. A field whose value the apply
  changes and another manager owns is a conflict (409), unless ``force``, which takes it.
- **Update** (create, PUT, every other patch) owns the fields it added or changed, and
  takes them from every other manager without a conflict. A removed field is owned by
  no one.

The server's own metadata (``metadata.name``, ``uid``, ``resourceVersion``...) is owned by
no one; on the main resource of a kind with a status subresource, ``status`` is not
recorded, and through ``/status`` only ``status`` is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import orjson

from shoal.api.field_schema import ASSOCIATIVE, MAP, STRUCT, UNKNOWN_FIELD, UNTYPED, TypeNode
from shoal.api.field_sets import (
    EMPTY,
    MEMBER_MARK,
    FieldSet,
    Member,
    Path,
    ancestors,
    field_set,
    list_elements,
    members,
    path_string,
    with_named_fields,
)
from shoal.api.managed_fields import APPLY, UPDATE, ManagerKey, Managers, Ownership
from shoal.model.value_memo import ValueMemo

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
KUBECTL_APPLIER = "kubectl"
"""The manager name ``kubectl apply --server-side`` uses: it keeps the client-side apply
annotation in step, and may take over what client-side apply set (as Kubernetes)."""

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


@dataclass(frozen=True)
class FieldConflict:
    manager: ManagerKey
    path: Path


class ApplyConflict(Exception):
    """An apply would change fields other managers own: Kubernetes' 409 and its causes."""

    def __init__(self, conflicts: list[FieldConflict]) -> None:
        self.conflicts = sorted(conflicts, key=lambda c: (c.manager.label(),
                                                          path_string(c.path)))
        super().__init__(self.message)

    @property
    def message(self) -> str:
        cs = self.conflicts
        if len(cs) == 1:
            return (f"Apply failed with 1 conflict: conflict with {cs[0].manager.label()}: "
                    f"{path_string(cs[0].path)}")
        lines: list[str] = []
        for label in sorted({c.manager.label() for c in cs}):
            lines.append(f"conflicts with {label}:")
            lines += [f"- {path_string(c.path)}" for c in cs if c.manager.label() == label]
        return f"Apply failed with {len(cs)} conflicts: " + "\n".join(lines)

    @property
    def causes(self) -> list[dict[str, str]]:
        return [{"reason": "FieldManagerConflict", "message": f"conflict with {c.manager.label()}",
                 "field": path_string(c.path)} for c in self.conflicts]


# -- object operations ----------------------------------------------------------------------


def _granular_map(value: Any, node: TypeNode) -> bool:
    return isinstance(value, dict) and node.shape in (STRUCT, MAP, UNTYPED) and not node.atomic


def merge(live: Any, config: Any, node: TypeNode) -> Any:
    """The applied configuration merged into the live value under the schema: maps field
    by field, keyed lists and sets element by element, anything atomic replaced."""
    if _granular_map(config, node) and _granular_map(live, node):
        out = dict(live)
        for k, v in config.items():
            out[k] = merge(live[k], v, node.field(k)) if k in live else copy.deepcopy(v)
        return out
    if isinstance(config, list) and isinstance(live, list):
        mine, theirs = list_elements(config, node), list_elements(live, node)
        if mine is not None and theirs is not None:
            applied = dict(zip(mine, config, strict=True))
            elem = node.element()
            merged = [merge(item, applied[e], elem) if e in applied and
                      node.list_type == ASSOCIATIVE else item
                      for e, item in zip(theirs, live, strict=True)]
            known = set(theirs)
            merged += [copy.deepcopy(item) for e, item in zip(mine, config, strict=True)
                       if e not in known]
            return merged
    return copy.deepcopy(config)


def remove_fields(obj: Any, paths: FieldSet, node: TypeNode) -> Any:
    """``obj`` without the members ``paths`` names (each with everything below it)."""
    if not paths:
        return obj
    return _remove(obj, node, (), paths, ancestors(paths))


def _remove(value: Any, node: TypeNode, path: Path, paths: FieldSet,
            on_the_way: frozenset[Path]) -> Any:
    if _granular_map(value, node):
        out = {}
        for k, v in value.items():
            p = (*path, "f:" + k)
            if p in paths:
                continue
            out[k] = _remove(v, node.field(k), p, paths, on_the_way) if p in on_the_way else v
        return out
    if isinstance(value, list):
        elements = list_elements(value, node)
        if elements is None:
            return value
        items = []
        for e, item in zip(elements, value, strict=True):
            p = (*path, e)
            if p in paths:
                continue
            items.append(_remove(item, node.element(), p, paths, on_the_way)
                         if p in on_the_way else item)
        return items
    return value


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


def apply(live: dict[str, Any] | None, config: dict[str, Any], managers: Managers,
          root: TypeNode, write: Write, force: bool = False) -> tuple[dict[str, Any], Managers]:
    """The object after applying ``config`` and who owns what then (ApplyConflict when the
    apply changes fields other managers own and ``force`` is not given). The object is new
    down to its metadata; below, what the apply did not touch is shared with ``live``."""
    before = live or {}
    key = write.key(APPLY)
    applied = frozenset(p for p in field_set(config, root) if write.covers(p))
    previous = managers.get(key)
    out = dict(managers)
    out[key] = Ownership(write.recordable(applied), write.api_version,
                         previous.time if previous else None)
    merged = merge(before, config, root)
    if previous is not None and previous.fields:
        # What this manager applied before and now does not, unless someone else owns it.
        owned = applied.union(*(o.fields for k, o in out.items() if k != key))
        gone = with_named_fields(previous.fields, root) - with_named_fields(owned, root)
        merged = remove_fields(merged, gone - SERVER_OWNED, root)
    merged = {**merged, "metadata": dict(merged.get("metadata") or {})}
    out = _take_over(before, merged, out, key, root, write, force)
    if key in out and (previous is None or merged != before):  # (an empty applier is dropped)
        out[key] = replace(out[key], time=write.now)
    return merged, out


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
    if not _granular_map(new, root):
        return {}  # (every kind's root is a struct)
    if write.status_is_separate and "status" in new:
        # Not the main resource's to own, nor anything below it.
        new = {k: v for k, v in new.items() if k != "status"}
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


def _take_over(old: dict[str, Any], new: dict[str, Any], managers: Managers,
               writer: ManagerKey, root: TypeNode, write: Write, force: bool) -> Managers:
    diff = compare(old, new, root)
    changed = frozenset(p for p in diff.changed if write.covers(p))
    removed = frozenset(p for p in diff.removed if write.covers(p))
    conflicts = [FieldConflict(k, p) for k, own in managers.items() if k != writer
                 for p in own.fields & changed]
    if conflicts and not force:
        raise ApplyConflict(conflicts)
    out: Managers = {}
    for k, own in managers.items():
        kept = own.fields if k == writer else own.fields - changed - removed
        if kept:
            out[k] = replace(own, fields=kept) if kept != own.fields else own
    return out


# -- kubectl's client-side apply ------------------------------------------------------------


def conflicts_allowed_by_last_applied(live: dict[str, Any], root: TypeNode,
                                      conflict: ApplyConflict) -> bool:
    """Whether every conflicting field is in the object's client-side apply annotation: then
    ``kubectl apply --server-side`` takes them over, so that moving from client-side apply
    to server-side apply does not conflict with what kubectl itself applied before."""
    raw = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str):
        return False
    try:
        last = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    allowed = field_set(last, root)
    return all(c.path in allowed for c in conflict.conflicts)


def keep_last_applied_in_step(obj: dict[str, Any], config: dict[str, Any]) -> None:
    """After ``kubectl apply --server-side``, an object that still has the client-side apply
    annotation gets the applied configuration in it (so a later client-side apply diffs
    against what was applied last). ``obj`` is changed, not the maps it shares."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict) or LAST_APPLIED not in annotations:
        return
    applied = copy.deepcopy(config)
    applied_annotations = (applied.get("metadata") or {}).get("annotations")
    if isinstance(applied_annotations, dict):
        applied_annotations.pop(LAST_APPLIED, None)
    # New maps: the rest of the object may still be the stored one's (never changed in place).
    obj["metadata"] = {**meta, "annotations": {
        **annotations, LAST_APPLIED: orjson.dumps(applied).decode()}}
