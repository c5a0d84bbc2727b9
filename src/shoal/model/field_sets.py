"""Sets of field paths, the algebra of server-side apply (structured-merge-diff's fieldpath).

A path is a tuple of elements spelled as in ``metadata.managedFields[].fieldsV1``:
``f:name`` a field of a struct or an entry of a map, ``k:{"name":"nginx"}`` the element of
a keyed list with those key values, ``v:"x"`` an element of a set, ``i:0`` an element by
index. A field set is a frozenset of paths; a path in it is a *member* (owned itself), and
its ancestors are there only to reach it. Union, intersection and difference are the
frozenset's own operators; this module adds the set of an object under a schema, FieldsV1
(de)serialization, the named-field closure, and the printed form of a path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from shoal.model.field_schema import (
    ASSOCIATIVE,
    ATOMIC,
    KEY_DEFAULTS,
    LIST,
    MAP,
    SET,
    STRUCT,
    UNKNOWN_FIELD,
    UNTYPED,
    TypeNode,
)

Path = tuple[str, ...]
FieldSet = frozenset[Path]
EMPTY: FieldSet = frozenset()
MEMBER_MARK = "."
"""In FieldsV1, the marker of a path that is a member and also has members below it."""


def field_element(name: str) -> str:
    return "f:" + name


def key_element(keys: Mapping[str, Any]) -> str:
    return "k:" + orjson.dumps(dict(sorted(keys.items()))).decode()


def value_element(value: Any) -> str:
    return "v:" + orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def index_element(i: int) -> str:
    return f"i:{i}"


def item_key(item: Any, keys: tuple[str, ...]) -> str | None:
    """The path element of a keyed list's element (None: it lacks a key, or one is not a scalar)."""
    if not isinstance(item, dict):
        return None
    found: dict[str, Any] = {}
    for k in keys:
        v = item.get(k, KEY_DEFAULTS.get(k))
        if v is None or isinstance(v, (dict, list)):
            return None
        found[k] = v
    return key_element(found)


def list_elements(items: list[Any], node: TypeNode) -> list[str] | None:
    """The path elements of a granular list's items, or None when it is owned whole: an atomic
    list, or a keyed list whose items lack a key or repeat one (kept as one value then)."""
    if node.shape != LIST or node.list_type == ATOMIC:
        return None
    if node.list_type == SET:
        out = [value_element(x) for x in items]
    else:
        found = [item_key(x, node.keys) for x in items]
        if any(e is None for e in found):
            return None
        out = [e for e in found if e is not None]
    return out if len(set(out)) == len(out) else None


# -- the fields of an object ---------------------------------------------------------------


class Member(NamedTuple):
    """What is at a member path: a leaf (a scalar, or something owned whole) and its value,
    or an inner member (a keyed list's element, a map entry holding a map). A tuple: an
    object's walk makes one per field (issue 11)."""

    leaf: bool
    value: Any = None


INNER = Member(False)


def members(obj: Any, node: TypeNode) -> dict[Path, Member]:
    """Every member path of ``obj`` under ``node``, as structured-merge-diff's ToFieldSet:
    leaves, list elements and map entries; a struct's field only when it is empty or null."""
    out: dict[Path, Member] = {}
    _walk(obj, node, (), out)
    return out


def field_set(obj: Any, node: TypeNode) -> FieldSet:
    return frozenset(members(obj, node))


_new_tuple = tuple.__new__
"""Makes a leaf's Member without NamedTuple's own ``__new__``, which is Python code."""


def _walk(value: Any, node: TypeNode, path: Path, out: dict[Path, Member]) -> None:
    if isinstance(value, dict) and node.shape in (STRUCT, MAP, UNTYPED) and not node.atomic:
        field = node.field
        for k, v in value.items():
            p = (*path, "f:" + k)
            if not isinstance(v, (dict, list)):  # a scalar: a leaf whatever its type says
                out[p] = _new_tuple(Member, (True, v))
                continue
            child = field(k)
            if child is UNKNOWN_FIELD:
                out[p] = _new_tuple(Member, (True, v))
                continue
            _walk(v, child, p, out)
            if v is None or v == {}:
                out[p] = Member(True, v)
            elif (node.shape != STRUCT or not child.declared) and p not in out:
                out[p] = INNER  # a map's entry is owned itself, a struct's field is not
        return
    if isinstance(value, list):
        elements = list_elements(value, node)
        if elements is not None:
            elem = node.element()
            for e, item in zip(elements, value, strict=True):
                p = (*path, e)
                if node.list_type == ASSOCIATIVE:
                    _walk(item, elem, p, out)
                    out[p] = INNER
                else:
                    out[p] = Member(True, item)
            return
    if path:
        out[path] = Member(True, value)


# -- FieldsV1 ------------------------------------------------------------------------------

_ORDER = {"f": 0, "k": 1, "v": 2, "i": 3}
_PLAIN_ORDER = frozenset(".fkv")
"""Elements whose plain string order is already _ORDER's ("." < "f:" < "k:" < "v:")."""


def to_fields_v1(fields: Iterable[Path]) -> dict[str, Any]:
    """The FieldsV1 tree of a set: each member a ``{}``, with ``"."`` when it has children."""
    tree: dict[str, Any] = {}
    member_nodes: list[dict[str, Any]] = []
    for path in fields:
        node = tree
        for e in path:
            node = node.setdefault(e, {})
        member_nodes.append(node)
    for node in member_nodes:
        if node and MEMBER_MARK not in node:
            node[MEMBER_MARK] = {}
    return _sorted(tree)


def _sorted(node: dict[str, Any]) -> dict[str, Any]:
    if len(node) <= 1 and MEMBER_MARK in node:
        return {}  # a member whose children all went: a leaf
    keys = sorted(node)
    if not all(e[:1] in _PLAIN_ORDER for e in keys):
        keys.sort(key=lambda e: (-1, e) if e == MEMBER_MARK else (_ORDER.get(e[:1], 4), e))
    return {k: _sorted(node[k]) if node[k] else {} for k in keys}


def from_fields_v1(tree: Any) -> FieldSet:
    """The set a FieldsV1 tree stands for (ValueError when it is not one)."""
    if not isinstance(tree, dict):
        raise ValueError("fieldsV1 must be an object")
    out: set[Path] = set()

    def walk(node: dict[str, Any], path: Path) -> None:
        if not node and path:
            out.add(path)
        for e, child in node.items():
            if e == MEMBER_MARK:
                if path:
                    out.add(path)
                continue
            if not isinstance(child, dict) or e[:2] not in ("f:", "k:", "v:", "i:"):
                raise ValueError(f"invalid path element {e!r}")
            walk(child, (*path, e))

    walk(tree, ())
    return frozenset(out)


# -- closures and printing -----------------------------------------------------------------


def with_named_fields(fields: Iterable[Path], root: TypeNode) -> FieldSet:
    """``fields`` plus every struct field on the way to one of them (structured-merge-diff's
    EnsureNamedFieldsAreMembers): owning ``spec.replicas`` is owning that ``spec`` is there,
    while owning a label is not owning ``labels``' other keys."""
    out = set(fields)
    for path in list(out):
        node = root
        for i, e in enumerate(path):
            if e.startswith("f:"):
                name = e[2:]
                if node.declares(name):
                    out.add(path[:i + 1])
                node = node.field(name)
            else:
                node = node.element()
    return frozenset(out)


def descendants_of(fields: Iterable[Path], prefix: Path) -> FieldSet:
    """The members of ``fields`` strictly below ``prefix``."""
    n = len(prefix)
    return frozenset(p for p in fields if len(p) > n and p[:n] == prefix)


def ancestors(fields: Iterable[Path]) -> frozenset[Path]:
    """Every proper prefix of the paths of ``fields`` (the root included)."""
    return frozenset(p[:i] for p in fields for i in range(len(p)))


def _go_string(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return orjson.dumps(value).decode()
    if isinstance(value, list):
        return "[" + ",".join(_go_string(x) for x in value) + "]"
    if isinstance(value, dict):
        return "{" + ";".join(f"{k}={_go_string(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)


def element_string(e: str) -> str:
    body = e[2:]
    if e.startswith("f:"):
        return "." + body
    if e.startswith("k:"):
        keys = orjson.loads(body)
        return "[" + ",".join(f"{k}={_go_string(v)}" for k, v in keys.items()) + "]"
    if e.startswith("v:"):
        return f"[={_go_string(orjson.loads(body))}]"
    return f"[{body}]"


def path_string(path: Path) -> str:
    """A path as Kubernetes prints it: ``.spec.containers[name="nginx"].image``."""
    return "".join(element_string(e) for e in path)


def shape_of(root: TypeNode, path: Path) -> TypeNode:
    """The schema node at ``path``."""
    node = root
    for e in path:
        node = node.field(e[2:]) if e.startswith("f:") else node.element()
    return node

