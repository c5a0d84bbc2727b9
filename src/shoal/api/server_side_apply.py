"""Server-side apply.

The semantics are structured-merge-diff's (Kubernetes' ``Updater``), over the field sets
of :mod:`shoal.model.field_sets`: **Apply** merges the applied configuration into the live
object; the applier then owns exactly the fields of its configuration. A field it applied
before and no longer applies is removed, unless another manager owns it. A field whose
value the apply changes and another manager owns is a conflict (409), unless ``force``,
which takes it. Every other write (create, PUT, every other patch) records ownership as
:mod:`shoal.model.field_ownership` says.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Any

import orjson

from shoal.model.field_ownership import SERVER_OWNED, Write, compare, granular_map
from shoal.model.field_schema import ASSOCIATIVE, TypeNode
from shoal.model.field_sets import (
    FieldSet,
    Path,
    ancestors,
    field_set,
    list_elements,
    path_string,
    with_named_fields,
)
from shoal.model.managed_fields import APPLY, ManagerKey, Managers, Ownership

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
KUBECTL_APPLIER = "kubectl"
"""The manager name ``kubectl apply --server-side`` uses: it keeps the client-side apply
annotation in step, and may take over what client-side apply set (as Kubernetes)."""


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



def merge(live: Any, config: Any, node: TypeNode) -> Any:
    """The applied configuration merged into the live value under the schema: maps field
    by field, keyed lists and sets element by element, anything atomic replaced."""
    if granular_map(config, node) and granular_map(live, node):
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
    if granular_map(value, node):
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
