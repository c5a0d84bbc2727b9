"""The three patch types of the Kubernetes API.

* ``application/json-patch+json``: RFC 6902 JSON patch (:func:`apply_json_patch`).
* ``application/merge-patch+json``: RFC 7386 JSON merge patch (:func:`apply_merge_patch`).
* ``application/strategic-merge-patch+json``: Kubernetes strategic merge patch
  (:func:`apply_strategic_merge_patch`), with the semantics of apimachinery's
  ``strategicpatch.StrategicMergeMapPatch`` as the API server runs it (parallel
  deletion lists merged, nulls that match nothing ignored).

Strategic merge patch in brief: maps merge recursively and ``null`` deletes a key;
lists tagged ``patchStrategy:"merge"`` merge by their merge key (see
:mod:`shoal.model.merge_keys`), other lists are replaced. Directives in the patch:

* ``$patch: replace`` in a map replaces the map; ``$patch: delete`` makes it empty.
* in a keyed list, ``{"$patch": "delete", <key>: v}`` removes the element with key ``v``
  and an element ``{"$patch": "replace"}`` replaces the whole list with the others.
* ``$deleteFromPrimitiveList/<field>: [...]`` removes values from a list of primitives.
* ``$setElementOrder/<field>: [...]`` fixes the order of the merged list; ``kubectl
  apply`` and ``kubectl edit`` send it with every change to a merging list.
* ``$retainKeys: [...]`` drops the keys of the map that it does not name (``kubectl
  apply`` sends it for a Deployment's ``strategy`` and for volumes).

Deviations, chosen so that no directive ever ends up stored in an object:
``$patch: merge`` is accepted (a no-op) where apimachinery rejects it, a new map value
that holds ``$patch: replace`` is kept instead of dropped, directives inside a value
that replaces an atomic list are stripped, ``$setElementOrder`` of an atomic list is
ignored, and malformed directives are 400s where apimachinery sometimes answers 500.
Quirks kept on purpose, because clients see them: an element a patch adds to a keyed
list without ``$setElementOrder`` goes first, ``$patch: delete`` on a map leaves an
empty map, and an element holding ``$patch: replace`` replaces its whole list.

No function here mutates its arguments, and results never share containers with them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

import orjson

from shoal.model import merge_keys

__all__ = [
    "MAX_JSON_PATCH_OPERATIONS",
    "PatchError",
    "apply_json_patch",
    "apply_merge_patch",
    "apply_strategic_merge_patch",
    "strategic_merge",
]

# The API server refuses longer JSON patches (413), as Kubernetes does.
MAX_JSON_PATCH_OPERATIONS: Final = 10000
MAX_JSON_PATCH_COPY_BYTES: Final = 3 * 1024 * 1024
"""What a JSON patch's copies may add up to, as the apiserver's JSONPatchMaxCopyBytes: 40
copies of a list into itself would otherwise ask for 2^40 elements."""


class PatchError(Exception):
    """A patch that is malformed (``code`` 400) or that cannot be applied (422)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _malformed(message: str) -> PatchError:
    return PatchError(400, message)


def _inapplicable(message: str) -> PatchError:
    return PatchError(422, message)


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (much faster than :func:`copy.deepcopy`)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _json_size(value: Any) -> int:
    """Bytes of a JSON value's encoding (what a copy adds to the document)."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:  # not JSON (nested too deep, say): as large as allowed
        return MAX_JSON_PATCH_COPY_BYTES + 1


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 equals 1.0, but ``true`` is not 1 (Python says it is)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_json_equal(v, b[k]) for k, v in a.items())
        )
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _scalar_key(value: Any) -> tuple[str, Any]:
    """A hashable identity for a list element or merge-key value, with JSON equality."""
    if value is None:
        return ("null", None)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int | float):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    return ("json", json.dumps(value, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------
# RFC 6902 JSON patch

_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")


def _parse_pointer(pointer: Any, field: str) -> list[str]:
    if not isinstance(pointer, str):
        raise _malformed(f"json patch: {field!r} must be a string")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _malformed(f"json patch: {field} {pointer!r} must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    for token in tokens:
        # RFC 6901: "~" is only valid as "~0" or "~1".
        if re.search(r"~(?![01])", token):
            raise _malformed(f"json patch: invalid escape in {field} {pointer!r}")
    return [t.replace("~1", "/").replace("~0", "~") for t in tokens]


def _list_index(container: list[Any], token: str, pointer: str, *, end_ok: bool) -> int:
    """The index a token names in a list; ``end_ok`` allows len(list) (for add)."""
    if not _ARRAY_INDEX.fullmatch(token):
        raise _inapplicable(f"json patch: {token!r} is not an array index in {pointer!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not end_ok):
        raise _inapplicable(f"json patch: index {index} is out of bounds in {pointer!r}")
    return index


def _resolve(doc: Any, tokens: list[str], pointer: str) -> Any:
    value = doc
    for token in tokens:
        if isinstance(value, dict):
            if token not in value:
                raise _inapplicable(f"json patch: path {pointer!r} does not exist")
            value = value[token]
        elif isinstance(value, list):
            value = value[_list_index(value, token, pointer, end_ok=False)]
        else:
            raise _inapplicable(f"json patch: path {pointer!r} does not exist")
    return value


def _add(doc: Any, tokens: list[str], value: Any, pointer: str) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        if last == "-":
            parent.append(value)
        else:
            parent.insert(_list_index(parent, last, pointer, end_ok=True), value)
    else:
        raise _inapplicable(f"json patch: the parent of {pointer!r} is not an object or array")
    return doc


def _remove(doc: Any, tokens: list[str], pointer: str) -> Any:
    """Removes the value at ``tokens`` and returns it."""
    if not tokens:
        raise _inapplicable("json patch: cannot remove the whole document")
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _inapplicable(f"json patch: path {pointer!r} does not exist")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_list_index(parent, last, pointer, end_ok=False))
    raise _inapplicable(f"json patch: path {pointer!r} does not exist")


def _replace(doc: Any, tokens: list[str], value: Any, pointer: str) -> Any:
    if not tokens:
        return value
    parent = _resolve(doc, tokens[:-1], pointer)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _inapplicable(f"json patch: path {pointer!r} does not exist")
        parent[last] = value
    elif isinstance(parent, list):
        parent[_list_index(parent, last, pointer, end_ok=False)] = value
    else:
        raise _inapplicable(f"json patch: path {pointer!r} does not exist")
    return doc


_JsonOp = tuple[str, list[str], str, list[str] | None, str, Any]


def _parse_json_patch(patch: Any) -> list[_JsonOp]:
    """Validates the whole patch before anything is applied, so a bad document is a 400."""
    if not isinstance(patch, list):
        raise _malformed("json patch: the patch must be a JSON array of operations")
    if len(patch) > MAX_JSON_PATCH_OPERATIONS:
        raise PatchError(413, f"json patch: more than {MAX_JSON_PATCH_OPERATIONS} operations")
    ops: list[_JsonOp] = []
    for n, raw in enumerate(patch):
        if not isinstance(raw, dict):
            raise _malformed(f"json patch: operation {n} is not an object")
        op = raw.get("op")
        if op not in ("add", "remove", "replace", "move", "copy", "test"):
            raise _malformed(f"json patch: operation {n} has an unknown op {op!r}")
        if "path" not in raw:
            raise _malformed(f"json patch: operation {n} ({op}) has no path")
        path = raw["path"]
        tokens = _parse_pointer(path, "path")
        from_tokens: list[str] | None = None
        source = ""
        if op in ("move", "copy"):
            if "from" not in raw:
                raise _malformed(f"json patch: operation {n} ({op}) has no from")
            source = raw["from"]
            from_tokens = _parse_pointer(source, "from")
        if op in ("add", "replace", "test") and "value" not in raw:
            raise _malformed(f"json patch: operation {n} ({op}) has no value")
        ops.append((op, tokens, path, from_tokens, source, raw.get("value")))
    return ops


def apply_json_patch(doc: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch; all operations apply or none do."""
    ops = _parse_json_patch(patch)
    result: Any = _copy(doc)
    copied = 0
    for op, tokens, path, from_tokens, source, value in ops:
        if op == "add":
            result = _add(result, tokens, _copy(value), path)
        elif op == "remove":
            _remove(result, tokens, path)
        elif op == "replace":
            result = _replace(result, tokens, _copy(value), path)
        elif op == "test":
            if not _json_equal(_resolve(result, tokens, path), value):
                raise _inapplicable(f"json patch: test of {path!r} failed")
        elif op == "copy":
            assert from_tokens is not None
            original = _resolve(result, from_tokens, source)
            copied += _json_size(original)
            if copied > MAX_JSON_PATCH_COPY_BYTES:
                raise _inapplicable(
                    "json patch: unable to complete the copy, the accumulated size increase "
                    f"of copy is {copied}, exceeding the limit {MAX_JSON_PATCH_COPY_BYTES}")
            result = _add(result, tokens, _copy(original), path)
        else:  # move
            assert from_tokens is not None
            if from_tokens == tokens:
                _resolve(result, from_tokens, source)  # it must still exist
                continue
            if tokens[: len(from_tokens)] == from_tokens:
                raise _inapplicable(f"json patch: cannot move {source!r} into its child {path!r}")
            moved = _remove(result, from_tokens, source)
            result = _add(result, tokens, moved, path)
    if not isinstance(result, dict):
        raise _inapplicable("json patch: the patched document is not a JSON object")
    return result


# --------------------------------------------------------------------------------------
# RFC 7386 JSON merge patch


def _merge_patch_into(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            current = target.get(key)
            if not isinstance(current, dict):
                current = target[key] = {}
            _merge_patch_into(current, value)
        else:
            target[key] = _copy(value)


def apply_merge_patch(doc: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply an RFC 7386 JSON merge patch: objects merge, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        raise _malformed("merge patch: the patch must be a JSON object")
    result: dict[str, Any] = _copy(doc)
    _merge_patch_into(result, patch)
    return result


# --------------------------------------------------------------------------------------
# Kubernetes strategic merge patch

_DIRECTIVE: Final = "$patch"
_RETAIN_KEYS: Final = "$retainKeys"
_SET_ELEMENT_ORDER: Final = "$setElementOrder/"
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList/"

Path = tuple[str, ...]
# Given the path of a list: its merge key and whether it merges at all.
ListLookup = Callable[[Path], tuple[str | None, bool]]


class _Omit:
    """The value of a new field that the patch deletes: the field is not created."""


_OMIT: Final = _Omit()
_MISSING: Final[Any] = object()


def _is_directive_key(key: str) -> bool:
    return key in (_DIRECTIVE, _RETAIN_KEYS) or key.startswith(
        (_SET_ELEMENT_ORDER, _DELETE_FROM_PRIMITIVE_LIST)
    )


def _strip(value: Any) -> Any:
    """A copy of a value that replaces an atomic list, without directives or null fields."""
    if isinstance(value, dict):
        if value.get(_DIRECTIVE) == "delete":
            return _OMIT
        return {
            k: _strip(v) for k, v in value.items() if v is not None and not _is_directive_key(k)
        }
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, dict) and _DIRECTIVE in item and len(item) == 1:
                continue  # a bare list marker such as {"$patch": "replace"}
            stripped = _strip(item)
            if stripped is not _OMIT:
                out.append(stripped)
        return out
    return value


class _StrategicMerge:
    """One strategic merge: ``original`` values are owned (mutated), patch values are not."""

    def __init__(self, lookup: ListLookup) -> None:
        self.lookup = lookup

    # -- maps ------------------------------------------------------------------------

    def merge_map(
        self, original: dict[str, Any], patch: dict[str, Any], path: Path
    ) -> dict[str, Any]:
        if _DIRECTIVE in patch:
            directive = patch[_DIRECTIVE]
            rest = {k: v for k, v in patch.items() if k != _DIRECTIVE}
            if directive == "replace":
                return self.merge_map({}, rest, path)
            if directive == "delete":
                # As in Kubernetes: the map becomes empty, its key stays.
                return {}
            if directive != "merge":
                raise _malformed(
                    f"strategic merge patch: unknown $patch directive {directive!r} at {_fmt(path)}"
                )
            patch = rest
        else:
            patch = dict(patch)  # processed keys are popped from this copy

        if _RETAIN_KEYS in patch:
            self._retain_keys(original, patch, patch.pop(_RETAIN_KEYS), path)

        # $setElementOrder first: it merges its list too, and removes it from the patch.
        for key in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
            field = key[len(_SET_ELEMENT_ORDER) :]
            if not field:
                raise _malformed(f"strategic merge patch: {key!r} names no field at {_fmt(path)}")
            self._set_element_order(original, patch, field, patch.pop(key), path)

        for key, value in patch.items():
            field, deleting = key, False
            if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
                field, deleting = key[len(_DELETE_FROM_PRIMITIVE_LIST) :], True
                if not field or not (value is None or isinstance(value, list)):
                    raise _malformed(
                        f"strategic merge patch: {key!r} at {_fmt(path)} must name a field "
                        "and hold a list"
                    )
            if value is None:
                original.pop(field, None)
                continue
            sub = (*path, field)
            if field not in original:
                if not deleting:
                    fresh = self.fresh(value, sub)
                    if fresh is not _OMIT:
                        original[field] = fresh
                continue
            current = original[field]
            if isinstance(current, dict) and isinstance(value, dict):
                original[field] = self.merge_map(current, value, sub)
            elif isinstance(current, list) and isinstance(value, list):
                original[field] = self.merge_list(current, value, sub, deleting=deleting)
            elif not deleting:
                fresh = self.fresh(value, sub)
                if fresh is _OMIT:
                    del original[field]
                else:
                    original[field] = fresh
        return original

    def fresh(self, value: Any, path: Path) -> Any:
        """A patch value with nothing to merge into, with its directives applied."""
        if isinstance(value, dict):
            if value.get(_DIRECTIVE) == "delete":
                return _OMIT
            return self.merge_map({}, value, path)
        if isinstance(value, list):
            return self.merge_list([], value, path, deleting=False)
        return value

    def _retain_keys(
        self, original: dict[str, Any], patch: dict[str, Any], retain: Any, path: Path
    ) -> None:
        if not isinstance(retain, list):
            raise _malformed(f"strategic merge patch: $retainKeys at {_fmt(path)} is not a list")
        keep = {k for k in retain if isinstance(k, str)}
        for key, value in patch.items():
            if value is None or key.startswith((_SET_ELEMENT_ORDER, _DELETE_FROM_PRIMITIVE_LIST)):
                continue
            if key not in keep:
                raise _malformed(
                    f"strategic merge patch: {key!r} at {_fmt(path)} is not in $retainKeys"
                )
        for key in [k for k in original if k not in keep]:
            del original[key]

    # -- lists -----------------------------------------------------------------------

    def merge_list(
        self,
        original: list[Any],
        patch: list[Any],
        path: Path,
        *,
        deleting: bool,
        live_order: list[Any] | None = None,
    ) -> list[Any]:
        """Merges a list patch; ``live_order`` receives the order $setElementOrder sorts by."""
        merge_key, merging = self.lookup(path)
        if not merging and not deleting:
            stripped: list[Any] = _strip(patch)
            return stripped
        if not original and not patch:
            return original
        replace, items, markers = _split_list_patch(patch, path)
        elements = original + items
        if not elements:
            return []  # only markers, and nothing for them to act on
        if any(isinstance(e, list) for e in elements):
            raise _inapplicable(f"strategic merge patch: lists of lists at {_fmt(path)}")
        maps = [isinstance(e, dict) for e in elements]
        if any(maps) and not all(maps):
            raise _inapplicable(
                f"strategic merge patch: mixed maps and values in the list at {_fmt(path)}"
            )
        if not maps[0]:
            if markers:
                raise _malformed(
                    f"strategic merge patch: $patch elements in a list of values at {_fmt(path)}"
                )
            if deleting:
                gone = {_scalar_key(v) for v in items}
                return [v for v in original if _scalar_key(v) not in gone]
            if replace:
                return _dedupe([_copy(v) for v in items])
            return _merge_primitives(original, items)
        if deleting:
            raise _malformed(
                f"strategic merge patch: $deleteFromPrimitiveList at {_fmt(path)} "
                "names a list of maps"
            )
        if merge_key is None:
            raise _inapplicable(f"strategic merge patch: the list at {_fmt(path)} has no merge key")
        return self._merge_maps(original, items, markers, replace, merge_key, path, live_order)

    def _merge_maps(
        self,
        original: list[Any],
        items: list[dict[str, Any]],
        markers: list[dict[str, Any]],
        replace: bool,
        key: str,
        path: Path,
        live_order: list[Any] | None,
    ) -> list[Any]:
        live_length = len(original)
        for marker in markers:  # only deletions are left here
            if key not in marker:
                raise _malformed(
                    f"strategic merge patch: a $patch: delete element at {_fmt(path)} "
                    f"has no merge key {key!r}"
                )
            gone = _scalar_key(marker[key])
            original = [e for e in original if _element_key(e, key) != gone]
        for item in items:
            if key not in item:
                raise _malformed(
                    f"strategic merge patch: an element at {_fmt(path)} has no merge key {key!r}"
                )
        deleted = live_length - len(original)
        if replace:
            if live_order is not None:
                live_order.extend(original)
            original = []
        server_order = list(original)
        merged = list(original)
        position: dict[tuple[str, Any], int] = {}
        for n, element in enumerate(merged):
            position.setdefault(_element_key(element, key), n)
        for item in items:
            wanted = _scalar_key(item[key])
            n = position.get(wanted, -1)
            if n >= 0:
                merged[n] = self.merge_map(merged[n], item, path)
            else:
                position[wanted] = len(merged)
                merged.append(self.merge_map({}, item, path))
        if replace:
            return merged
        if live_order is not None:
            # apimachinery deletes and appends in place in the live list's backing array,
            # and $setElementOrder then sorts by that array: the first `deleted` new
            # elements take the slots the deletions freed. Reproduced for identical order.
            live_order.extend(merged[: len(server_order) + deleted])
        return _order(merged, [_scalar_key(i[key]) for i in items], server_order, key)

    def _set_element_order(
        self,
        original: dict[str, Any],
        patch: dict[str, Any],
        field: str,
        order: Any,
        path: Path,
    ) -> None:
        sub = (*path, field)
        if not isinstance(order, list):
            raise _malformed(
                f"strategic merge patch: $setElementOrder/{field} at {_fmt(path)} is not a list"
            )
        patch_list: Any = patch.pop(field, _MISSING)
        if patch_list is not _MISSING and not isinstance(patch_list, list):
            raise _malformed(
                f"strategic merge patch: {field!r} at {_fmt(path)} must be a list, as "
                f"$setElementOrder/{field} says"
            )
        current: Any = original.get(field, _MISSING)
        found_original = isinstance(current, list)
        merge_key, merging = self.lookup(sub)
        if merging and isinstance(patch_list, list):
            _check_order(patch_list, order, merge_key, sub)

        if patch_list is _MISSING:
            if not found_original:
                return
            merged: list[Any] = current
        elif found_original:
            live_order: list[Any] = []
            merged = self.merge_list(
                current, patch_list, sub, deleting=False, live_order=live_order
            )
            # Lists of values (and lists replaced whole) keep the live order as it was.
            current = live_order or list(current)
        else:
            merged = self.fresh(patch_list, sub)
        if merging and merged:
            server_order: list[Any] = current if found_original else []
            if isinstance(merged[0], dict) and merge_key is not None:
                wanted = []
                for entry in order:
                    if not isinstance(entry, dict) or merge_key not in entry:
                        raise _malformed(
                            f"strategic merge patch: $setElementOrder/{field} at {_fmt(path)} "
                            f"needs the merge key {merge_key!r} in every element"
                        )
                    wanted.append(_scalar_key(entry[merge_key]))
                merged = _order(merged, wanted, server_order, merge_key)
            elif not isinstance(merged[0], dict | list):
                merged = _order(merged, [_scalar_key(o) for o in order], server_order, None)
        original[field] = merged


def _split_list_patch(patch: list[Any], path: Path) -> tuple[bool, list[Any], list[dict[str, Any]]]:
    """Splits a list patch into (replace?, plain elements, ``$patch: delete`` elements)."""
    replace = False
    items: list[Any] = []
    deletions: list[dict[str, Any]] = []
    for element in patch:
        if not isinstance(element, dict) or _DIRECTIVE not in element:
            items.append(element)
            continue
        directive = element[_DIRECTIVE]
        if directive == "delete":
            deletions.append(element)
        elif directive == "replace":
            # Kubernetes reads this as "replace the whole list", whatever else it holds.
            replace = True
        elif directive == "merge":
            if len(element) > 1:
                items.append(element)  # merge_map drops the marker
        else:
            raise _malformed(
                f"strategic merge patch: unknown $patch directive {directive!r} in the list "
                f"at {_fmt(path)}"
            )
    return replace, items, deletions


def _element_key(element: Any, key: str) -> tuple[str, Any]:
    if isinstance(element, dict) and key in element:
        return _scalar_key(element[key])
    # An element without its merge key matches nothing, not even another one.
    return ("missing", id(element))


def _dedupe(values: list[Any]) -> list[Any]:
    seen: set[tuple[str, Any]] = set()
    out = []
    for v in values:
        k = _scalar_key(v)
        if k not in seen:
            seen.add(k)
            out.append(v)
    return out


def _merge_primitives(original: list[Any], patch: list[Any]) -> list[Any]:
    merged = _dedupe(original + [_copy(v) for v in patch])
    return _order(merged, [_scalar_key(v) for v in patch], original, None)


def _order(
    merged: list[Any], wanted: list[tuple[str, Any]], server: list[Any], key: str | None
) -> list[Any]:
    """Orders a merged list as apimachinery does.

    The elements the patch names (``wanted``: the patch list or ``$setElementOrder``) come
    in that order. The server-only elements keep their order in the live list, and each
    one goes before the first patch element that the live list has after it. So a new
    element without ``$setElementOrder`` lands before the existing ones, as in Kubernetes.
    """

    def identity(element: Any) -> tuple[str, Any]:
        return _scalar_key(element) if key is None else _element_key(element, key)

    wanted_at: dict[tuple[str, Any], int] = {}
    for n, k in enumerate(wanted):
        wanted_at.setdefault(k, n)
    server_at: dict[tuple[str, Any], int] = {}
    for n, element in enumerate(server):
        server_at.setdefault(identity(element), n)

    def at(index: dict[tuple[str, Any], int], element: Any) -> int:
        return index.get(identity(element), len(index))

    patched = sorted(
        (e for e in merged if identity(e) in wanted_at), key=lambda e: at(wanted_at, e)
    )
    server_only = sorted(
        (e for e in merged if identity(e) not in wanted_at), key=lambda e: at(server_at, e)
    )
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) and j < len(patched):
        left = server_at.get(identity(server_only[i]))
        right = server_at.get(identity(patched[j]))
        if left is not None and right is not None and left < right:
            out.append(server_only[i])
            i += 1
        else:
            out.append(patched[j])
            j += 1
    out.extend(server_only[i:])
    out.extend(patched[j:])
    return out


def _check_order(
    patch_list: list[Any], order: list[Any], merge_key: str | None, path: Path
) -> None:
    """The patch list must be a subsequence of ``$setElementOrder`` (deletions aside)."""
    if not patch_list or not order:
        return

    def identity(element: Any) -> tuple[str, Any]:
        if merge_key is not None and isinstance(element, dict):
            if merge_key not in element:
                raise _malformed(
                    f"strategic merge patch: an element at {_fmt(path)} has no merge key "
                    f"{merge_key!r}"
                )
            return _scalar_key(element[merge_key])
        return _scalar_key(element)

    p = 0
    for entry in order:
        while (
            p < len(patch_list)
            and isinstance(patch_list[p], dict)
            and (_DIRECTIVE in patch_list[p])
        ):
            p += 1
        if p == len(patch_list):
            return
        if identity(patch_list[p]) == identity(entry):
            p += 1
    while p < len(patch_list) and isinstance(patch_list[p], dict) and (_DIRECTIVE in patch_list[p]):
        p += 1
    if p < len(patch_list):
        raise _malformed(
            f"strategic merge patch: the order of the list at {_fmt(path)} does not match "
            "its $setElementOrder"
        )


def _fmt(path: Path) -> str:
    return "." + ".".join(path) if path else "the root"


def _lookup_for(group: str, kind: str) -> ListLookup:
    if not merge_keys.known_kind(group, kind):
        return _atomic_lists

    def lookup(path: Path) -> tuple[str | None, bool]:
        key = merge_keys.list_merge_key(group, kind, path)
        if key is not None:
            return key, True
        return None, merge_keys.is_merging_primitive_list(group, kind, path)

    return lookup


def _atomic_lists(path: Path) -> tuple[str | None, bool]:
    return None, False


def strategic_merge(doc: dict[str, Any], patch: Any, lookup: ListLookup) -> dict[str, Any]:
    """A strategic merge patch with the list metadata given by ``lookup`` (for tests and CRDs)."""
    if not isinstance(patch, dict):
        raise _malformed("strategic merge patch: the patch must be a JSON object")
    return _StrategicMerge(lookup).merge_map(_copy(doc), patch, ())


def apply_strategic_merge_patch(
    doc: dict[str, Any], patch: Any, group: str, kind: str
) -> dict[str, Any]:
    """Apply a Kubernetes strategic merge patch to an object of ``group``/``kind``.

    For a kind without strategic metadata (a custom resource) every list is atomic, which
    makes this a JSON merge patch that also understands the directives. Kubernetes itself
    refuses strategic patches to custom resources (415); that choice is the caller's.
    """
    return strategic_merge(doc, patch, _lookup_for(group, kind))
