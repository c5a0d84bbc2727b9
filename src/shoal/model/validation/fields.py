"""Field paths (``spec.containers[0].image``) and lenient reads of decoded JSON values."""

from __future__ import annotations

from typing import Any

from shoal.model.validation.causes import _Errors


def _c(path: str, *names: str) -> str:
    for name in names:
        path = f"{path}.{name}" if path else name
    return path


def _i(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _k(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _d(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> list[tuple[int, dict[str, Any]]]:
    return [(i, item) for i, item in enumerate(_l(value)) if isinstance(item, dict)]


def _s(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    # A JSON integer past 64 bits arrives as a float (orjson): not an integer Kubernetes
    # can hold, and a stored one broke its controller on every pass.
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                      and -(2.0**63) <= value < 2.0**63)


def _as_int(value: Any) -> int | None:
    return int(value) if _is_int(value) else None


def _int_field(e: _Errors, d: dict[str, Any], key: str, path: str) -> int | None:
    """``d[key]`` as an int, or None when absent; a non-integer is reported."""
    value = d.get(key)
    if value is None:
        return None
    if _is_int(value):
        return int(value)
    e.type_invalid(_c(path, key), value, "must be of type integer")
    return None


def _nonneg(e: _Errors, d: dict[str, Any], key: str, path: str) -> int | None:
    value = _int_field(e, d, key, path)
    if value is not None and value < 0:
        e.invalid(_c(path, key), value, "must be greater than or equal to 0")
    return value
