"""The document CRDT: a JSON object whose every leaf carries a stamp.

A node is a list ``[stamp, writer, value, children]``:

- ``stamp, writer`` order the node's register; the larger pair wins a merge.
- ``value`` is either a JSON scalar or atomic list (a leaf), or a marker dict:
  ``{"$": "m"}`` a map, ``{"$": "l", "k": KEY, "o": [...]}`` a list merged by
  ``KEY`` whose order is ``o``, ``{"$": "d"}`` a tombstone. ``KEY`` is ``SET`` for a
  list of strings merged as a set (``metadata.finalizers``): each string is its own key,
  so two peers that each add one keep both, and removing the list removes its elements.
- ``children`` maps a field name (or a merge-key value) to a child node. It is
  kept even when the register says the node is a leaf or deleted, so local
  writes only ever add information and merge stays a join.

Merge is a last-writer-wins register per node plus a union of children, so it
is commutative, associative and idempotent. A tombstone dominates every child
write under it (a concurrent update never revives a deleted object), and a
node written back into existence tombstones whatever children it did not name.

The root's map marker may carry ``"x"``, the *cleared* stamp: the newest deletion
of the object that any replica merged (a max register, merged apart from the
root register). Whatever under the root is stamped at or before it is hidden,
at any depth, so fields of a deleted object never show through a later create,
even one made where the old document had already been collected.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson

Path = tuple[str, ...]
KeyFn = Callable[[Path], str | None]
"""Given a field path (list indices dropped), the merge key of the list there, if any."""

Node = list[Any]

S, W, V, C = 0, 1, 2, 3
MAP: dict[str, Any] = {"$": "m"}
DEL: dict[str, Any] = {"$": "d"}
_ABSENT: Any = object()
SET = "$"
"""The merge key of a list of strings that merges as a set (no field name starts with $)."""


def _no_keys(_: Path) -> str | None:
    return None


def _is_deleted(node: Node) -> bool:
    v = node[V]
    return type(v) is dict and v["$"] == "d"


def _elem_key(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _keyed(value: list[Any], key: str | None) -> list[str] | None:
    """The element keys of a list that can merge by ``key``, or None if it must stay atomic."""
    if key is None:
        return None
    if key == SET:
        # An empty set stays a set, so clearing it tombstones its elements.
        if any(type(item) is not str for item in value) or len(set(value)) != len(value):
            return None
        return list(value)
    if not value:
        return None
    keys: list[str] = []
    for item in value:
        if type(item) is not dict or key not in item:
            return None
        keys.append(_elem_key(item[key]))
    if len(set(keys)) != len(keys):
        return None
    return keys


def _new(value: Any, s: int, w: str, path: Path, kf: KeyFn) -> Node:
    if type(value) is dict:
        return _new_map(value, s, w, path, kf)
    if type(value) is list:
        return _new_list(value, s, w, path, kf)
    return [s, w, value, None]


def _new_map(value: dict[str, Any], s: int, w: str, path: Path, kf: KeyFn) -> Node:
    # One loop dispatching on each child's type, scalars inline: every create builds a
    # node per field (issue 11).
    children: dict[str, Node] = {}
    for k, v in value.items():
        t = type(v)
        if t is dict:
            children[k] = _new_map(v, s, w, (*path, k), kf)
        elif t is list:
            children[k] = _new_list(v, s, w, (*path, k), kf)
        else:
            children[k] = [s, w, v, None]
    return [s, w, MAP, children]


def _new_list(value: list[Any], s: int, w: str, path: Path, kf: KeyFn) -> Node:
    key = kf(path)
    keys = _keyed(value, key)
    if keys is None:
        # The document takes ownership of the value (callers hand over fresh objects).
        return [s, w, value, None]
    # A keyed list's elements are maps (a merge key) or strings (a set): never lists.
    return [s, w, {"$": "l", "k": key, "o": keys},
            {k: _new_map(v, s, w, path, kf) if type(v) is dict else [s, w, v, None]
             for k, v in zip(keys, value, strict=True)}]


def _hidden(node: Node, floor: int) -> bool:
    return _is_deleted(node) or (floor > 0 and max_stamp(node) <= floor)


def materialize(node: Node, floor: int = 0) -> Any:
    """The plain JSON value of a node, or ``_ABSENT`` for a tombstone.

    Children stamped at or before ``floor`` throughout are hidden (the cleared stamp)."""
    v = node[V]
    if type(v) is dict:
        tag = v["$"]
        if tag == "m":
            children = node[C] or {}
            return {k: materialize(c, floor) for k, c in children.items() if not _hidden(c, floor)}
        if tag == "l":
            children = node[C] or {}
            out = []
            seen = set()
            for k in v["o"]:
                c = children.get(k)
                if c is not None and not _hidden(c, floor):
                    out.append(materialize(c, floor))
                    seen.add(k)
            # Elements added concurrently elsewhere, not yet in the order we know.
            for k in sorted(children):
                if k not in seen and not _hidden(children[k], floor):
                    out.append(materialize(children[k], floor))
            return out
        return _ABSENT
    return v


def cleared(node: Node) -> int:
    """A root's cleared stamp: its own stamp if deleted, else the marker's ``x``."""
    v = node[V]
    if type(v) is not dict:
        return 0
    if v["$"] == "d":
        return node[S]  # type: ignore[no-any-return]
    x = v.get("x", 0)
    return x if type(x) is int else 0


def _set_cleared(node: Node, x: int) -> bool:
    """Record ``x`` on a live map root (a deleted root's own stamp already covers it)."""
    v = node[V]
    if x <= 0 or type(v) is not dict or v["$"] != "m" or v.get("x", 0) >= x:
        return False
    node[V] = {**v, "x": x}  # markers may be shared (MAP): never change one in place
    return True


def _tombstone(node: Node, s: int, w: str) -> None:
    v = node[V]
    if type(v) is dict and v["$"] == "l" and v["k"] == SET and node[C]:
        # A set's elements die with it: a concurrent add elsewhere revives the list with
        # only what was added, not with what this write removed.
        for child in node[C].values():
            if not _is_deleted(child):
                _tombstone(child, s, w)
    node[S], node[W], node[V] = s, w, DEL


def _assign(node: Node, old: Any, new: Any, s: int, w: str, path: Path, kf: KeyFn) -> None:
    """Make ``node`` (whose current value is ``old``) hold ``new``, stamping only what changes."""
    if type(new) is dict:
        revive = type(old) is not dict
        if revive:
            node[S], node[W], node[V] = s, w, MAP
            old = {}
        children = node[C]
        if children is None:
            children = node[C] = {}
        for k, child in children.items():
            if k not in new and (revive or k in old) and not _is_deleted(child):
                _tombstone(child, s, w)
        for k, nv in new.items():
            child = children.get(k)
            if child is None:
                children[k] = _new(nv, s, w, (*path, k), kf)
            else:
                ov = old.get(k, _ABSENT)
                if revive or ov is _ABSENT or ov != nv:
                    _assign(child, ov, nv, s, w, (*path, k), kf)
        return
    if type(new) is list:
        key = kf(path)
        keys = _keyed(new, key)
        if keys is not None:
            old_by_key: dict[str, Any] = {}
            old_keys = _keyed(old, key) if type(old) is list else None
            reg = node[V]
            was_keyed = type(reg) is dict and reg["$"] == "l" and reg["k"] == key
            if old_keys is not None and was_keyed:
                old_by_key = dict(zip(old_keys, old, strict=True))
                revive = False
            else:
                revive = True
            if revive or old_keys != keys:
                node[S], node[W], node[V] = s, w, {"$": "l", "k": key, "o": keys}
            children = node[C]
            if children is None:
                children = node[C] = {}
            wanted = set(keys)
            for k, child in children.items():
                if k not in wanted and (revive or k in old_by_key) and not _is_deleted(child):
                    _tombstone(child, s, w)
            for k, nv in zip(keys, new, strict=True):
                child = children.get(k)
                if child is None:
                    children[k] = _new(nv, s, w, path, kf)
                else:
                    ov = old_by_key.get(k, _ABSENT)
                    if revive or ov is _ABSENT or ov != nv:
                        _assign(child, ov, nv, s, w, path, kf)
            return
    if old is _ABSENT or type(old) is not type(new) or old != new or type(node[V]) is dict:
        node[S], node[W], node[V] = s, w, new


def merge_nodes(a: Node, b: Node) -> bool:
    """Merge ``b`` into ``a`` in place. Returns whether ``a`` changed."""
    changed = False
    if (b[S], b[W]) > (a[S], a[W]):
        a[S], a[W], a[V] = b[S], b[W], copy.deepcopy(b[V])
        changed = True
    bc = b[C]
    if bc is not None:
        ac = a[C]
        if ac is None:
            # None and {} mean the same; converge on {} so replicas compare equal.
            ac = a[C] = {}
            changed = True
        for k, bchild in bc.items():
            achild = ac.get(k)
            if achild is None:
                ac[k] = copy.deepcopy(bchild)
                changed = True
            elif merge_nodes(achild, bchild):
                changed = True
    return changed


def max_stamp(node: Node) -> int:
    """The newest stamp anywhere in the node."""
    m: int = node[S]
    for c in (node[C] or {}).values():
        cm = max_stamp(c)
        if cm > m:
            m = cm
    return m


class Document:
    """One object's replicated state. ``value()`` is what clients see."""

    __slots__ = ("root",)

    def __init__(self, root: Node) -> None:
        self.root = root

    @classmethod
    def empty(cls) -> Document:
        """A document that has never held a value (it loses every merge)."""
        return cls([0, "", DEL, None])

    @classmethod
    def create(cls, value: dict[str, Any], stamp: int, writer: str, kf: KeyFn = _no_keys) -> Document:
        return cls(_new(value, stamp, writer, (), kf))

    @property
    def deleted(self) -> bool:
        return _is_deleted(self.root)

    @property
    def stamp(self) -> tuple[int, str]:
        return (self.root[S], self.root[W])

    @property
    def cleared(self) -> int:
        """The newest deletion merged into this object; older fields are hidden."""
        return cleared(self.root)

    def clear_below(self, stamp: int) -> bool:
        """Hide everything stamped at or before ``stamp`` (a deletion known only by its
        stamp: a collected tombstone). Returns whether the document changed."""
        return _set_cleared(self.root, stamp)

    def value(self) -> dict[str, Any] | None:
        root = self.root
        v = materialize(root, cleared(root) if not _is_deleted(root) else 0)
        return None if v is _ABSENT else v  # type: ignore[no-any-return,unused-ignore]

    def write(
        self, new: dict[str, Any], stamp: int, writer: str, kf: KeyFn = _no_keys,
        current: dict[str, Any] | None = None,
    ) -> None:
        """Set the whole value; only leaves that differ from the current value get the stamp.

        ``current`` may pass the already materialized value to save recomputing it.
        """
        old = current if current is not None else self.value()
        x = cleared(self.root)
        _assign(self.root, _ABSENT if old is None else old, new, stamp, writer, (), kf)
        _set_cleared(self.root, x)  # a revived root keeps the deletion it replaces

    def delete(self, stamp: int, writer: str) -> None:
        _tombstone(self.root, stamp, writer)

    # -- who wrote a field (the trim tells a node's own status from a peer's mark) --
    def register_at(self, *path: str) -> tuple[int, str] | None:
        """The (stamp, writer) of the register at ``path``: field names, and a keyed list's
        elements by their key's value (``"status", "conditions", "Ready", "status"``).
        None where the document has no such register."""
        node: Node = self.root
        for name in path:
            child = (node[C] or {}).get(name)
            if child is None:
                return None
            node = child
        return (node[S], node[W])

    def writer_at(self, *path: str) -> str | None:
        """The writer of the register at ``path`` (as ``register_at``)."""
        found = self.register_at(*path)
        return None if found is None else found[1]
    # -- end --

    def merge(self, other: Document) -> bool:
        x = max(cleared(self.root), cleared(other.root))
        changed = merge_nodes(self.root, other.root)
        return _set_cleared(self.root, x) or changed

    def max_stamp(self) -> int:
        return max_stamp(self.root)

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.root)

    @classmethod
    def from_bytes(cls, data: bytes) -> Document:
        root = orjson.loads(data)
        if not isinstance(root, list) or len(root) != 4:
            raise ValueError("not a shoal document")
        return cls(root)

    def copy(self) -> Document:
        return Document(copy.deepcopy(self.root))
