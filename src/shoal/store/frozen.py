"""Read-only dicts and lists: the replica's objects as callers may see them.

A stored object is shared by every reader (as a Kubernetes informer's cache is),
so changing one in place would change the replica's memory without a write: the
disk, the peers and the resourceVersion would not know, and a write refused after
the change would leave it anyway. ``freeze`` makes a deep read-only copy whose
changes raise ``TypeError``; ``copy.deepcopy`` and ``thaw`` give a plain, writable
copy back. They are dict and list subclasses, so reads, ``==``, ``isinstance`` and
``orjson.dumps`` work unchanged.
"""

from __future__ import annotations

from typing import Any, NoReturn

MESSAGE = "a stored object is read-only: copy it (copy.deepcopy) before changing it"


def _refuse(*_: Any, **__: Any) -> NoReturn:
    raise TypeError(MESSAGE)


class FrozenDict(dict[str, Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return thaw(self)

    def __reduce__(self) -> Any:
        return dict, (thaw(self),)


class FrozenList(list[Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = _refuse
    append = extend = insert = remove = pop = clear = sort = reverse = _refuse
    __iadd__ = __imul__ = _refuse

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return thaw(self)

    def __reduce__(self) -> Any:
        return list, (thaw(self),)


def freeze(value: Any) -> Any:
    """A deep read-only copy of a JSON-like value (dicts and lists; leaves are shared)."""
    if isinstance(value, dict):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList([freeze(v) for v in value])
    return value


def thaw(value: Any) -> Any:
    """A deep writable copy (plain dicts and lists) of a frozen or plain value."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value
