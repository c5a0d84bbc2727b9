"""The JSONPath subset Kubernetes uses for printer columns and the scale subresource.

Supported, as in ``k8s.io/client-go/util/jsonpath``:

* fields ``.spec.replicas`` (a backslash escapes a dot: ``.metadata.labels.app\\.io/x``),
  and quoted keys ``['key.with.dots']`` or ``["k1","k2"]``;
* indexes ``[0]``, ``[-1]``, unions ``[0,2]`` and slices ``[1:3]``, ``[::2]``;
* wildcards ``.*`` and ``[*]``, and recursive descent ``..name``;
* filters ``[?(@.type=="Ready")]`` with ``== != < <= > >=`` against a string, number
  or boolean literal or another ``@`` path, and existence filters ``[?(@.port)]``.

An optional leading ``$`` and surrounding ``{...}`` are accepted. Missing keys give
no results rather than an error (the ``AllowMissingKeys(true)`` behaviour the API
server uses for printer columns).
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

__all__ = [
    "JSONPath",
    "JSONPathError",
    "compile_path",
    "evaluate",
    "get_first",
    "set_value",
    "to_text",
]


class JSONPathError(ValueError):
    """A path that does not parse, or that :func:`set_value` cannot write through."""


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Keys:
    names: tuple[str, ...]


@dataclass(frozen=True)
class _Wildcard:
    pass


@dataclass(frozen=True)
class _Recursive:
    pass


@dataclass(frozen=True)
class _Indexes:
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class _Slice:
    start: int | None
    stop: int | None
    step: int | None


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Filter:
    left: tuple[_Step, ...]
    op: str  # "exists" for [?(@.x)]
    right: tuple[_Step, ...] | _Literal | None


_Step = _Field | _Keys | _Wildcard | _Recursive | _Indexes | _Slice | _Filter

_FILTER_RE = re.compile(r"^([^!<>=]+)([!<>=]+)(.+?)$", re.DOTALL)
_FILTER_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_INT_RE = re.compile(r"-?[0-9]+")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, msg: str) -> JSONPathError:
        return JSONPathError(f"invalid JSONPath {self.text!r}: {msg}")

    def parse(self, *, relative: bool = False) -> tuple[_Step, ...]:
        text = self.text
        if relative:
            if not text.startswith("@"):
                raise self.error("a filter operand must start with '@'")
            self.pos = 1
        elif text.startswith("$"):
            self.pos = 1
        steps: list[_Step] = []
        if self.pos < len(text) and text[self.pos] not in ".[":
            steps.append(_Field(self._name()))  # a bare first field: "spec.replicas"
        while self.pos < len(text):
            ch = text[self.pos]
            if ch == ".":
                if text.startswith("..", self.pos):
                    steps.append(_Recursive())
                    self.pos += 2
                    if self.pos < len(text) and text[self.pos] == "[":
                        continue
                else:
                    self.pos += 1
                    if self.pos == len(text) and not steps:
                        break  # "." alone is the object itself
                if self.pos < len(text) and text[self.pos] == "*":
                    self.pos += 1
                    steps.append(_Wildcard())
                else:
                    steps.append(_Field(self._name()))
            elif ch == "[":
                steps.append(self._bracket())
            else:
                raise self.error(f"unexpected {ch!r} at {self.pos}")
        return tuple(steps)

    def _name(self) -> str:
        out: list[str] = []
        text = self.text
        while self.pos < len(text) and text[self.pos] not in ".[":
            if text[self.pos] == "\\" and self.pos + 1 < len(text):
                self.pos += 1
            out.append(text[self.pos])
            self.pos += 1
        if not out:
            raise self.error(f"empty field name at {self.pos}")
        return "".join(out)

    def _bracket(self) -> _Step:
        text = self.text
        start = self.pos + 1
        end = self._closing_bracket(start)
        inner = text[start:end].strip()
        self.pos = end + 1
        if not inner:
            raise self.error("empty brackets")
        if inner == "*":
            return _Wildcard()
        if inner.startswith("?"):
            return self._filter(inner)
        if inner[0] in "'\"":
            return _Keys(tuple(self._quoted_list(inner)))
        if ":" in inner:
            parts = [p.strip() for p in inner.split(":")]
            if len(parts) > 3 or any(p and not _INT_RE.fullmatch(p) for p in parts):
                raise self.error(f"bad slice [{inner}]")
            nums = [int(p) if p else None for p in parts] + [None] * (3 - len(parts))
            if nums[2] == 0:
                raise self.error("slice step cannot be zero")
            return _Slice(nums[0], nums[1], nums[2])
        parts = [p.strip() for p in inner.split(",")]
        if not all(_INT_RE.fullmatch(p) for p in parts):
            raise self.error(f"bad index [{inner}]")
        return _Indexes(tuple(int(p) for p in parts))

    def _closing_bracket(self, start: int) -> int:
        quote: str | None = None
        depth = 0
        i = start
        text = self.text
        while i < len(text):
            ch = text[i]
            if quote:
                if ch == "\\":
                    i += 1
                elif ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
            elif ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
            elif ch == "]" and depth == 0:
                return i
            i += 1
        raise self.error("unclosed '['")

    def _quoted_list(self, inner: str) -> list[str]:
        names: list[str] = []
        i = 0
        while i < len(inner):
            quote = inner[i]
            if quote not in "'\"":
                raise self.error(f"expected a quoted key in [{inner}]")
            j = i + 1
            buf: list[str] = []
            while j < len(inner) and inner[j] != quote:
                if inner[j] == "\\" and j + 1 < len(inner):
                    j += 1
                buf.append(inner[j])
                j += 1
            if j >= len(inner):
                raise self.error(f"unterminated string in [{inner}]")
            names.append("".join(buf))
            i = j + 1
            while i < len(inner) and inner[i] == " ":
                i += 1
            if i < len(inner):
                if inner[i] != ",":
                    raise self.error(f"expected ',' in [{inner}]")
                i += 1
                while i < len(inner) and inner[i] == " ":
                    i += 1
        return names

    def _filter(self, inner: str) -> _Filter:
        if not (inner.startswith("?(") and inner.endswith(")")):
            raise self.error(f"bad filter [{inner}]")
        expr = inner[2:-1].strip()
        m = _FILTER_RE.match(expr)
        if m is None:
            return _Filter(_Parser(expr).parse(relative=True), "exists", None)
        left, op, right = m.group(1).strip(), m.group(2), m.group(3).strip()
        if op not in _FILTER_OPS:
            raise self.error(f"unrecognized filter operator {op}")
        return _Filter(_Parser(left).parse(relative=True), op, self._operand(right))

    def _operand(self, text: str) -> tuple[_Step, ...] | _Literal:
        if text.startswith("@"):
            return _Parser(text).parse(relative=True)
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            return _Literal(text[1:-1])
        if text in ("true", "false"):
            return _Literal(text == "true")
        try:
            return _Literal(int(text))
        except ValueError:
            pass
        try:
            return _Literal(float(text))
        except ValueError:
            raise self.error(f"unrecognized filter operand {text!r}") from None


def _kind(value: Any) -> str:
    # bool is an int in Python but not in JSON: keep them apart when comparing.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _compare(op: str, left: Any, right: Any) -> bool:
    kind = _kind(left)
    if kind != _kind(right) or kind == "other":
        return False  # Kubernetes reports incompatible types; for a column that is no match
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if kind == "bool":
        return False
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _descendants(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, dict):
        for v in value.values():
            yield from _descendants(v)
    elif isinstance(value, list):
        for v in value:
            yield from _descendants(v)


def _apply(step: _Step, nodes: list[Any]) -> list[Any]:
    out: list[Any] = []
    if isinstance(step, _Field | _Keys):
        names = (step.name,) if isinstance(step, _Field) else step.names
        for node in nodes:
            if isinstance(node, dict):
                out.extend(node[n] for n in names if n in node)
    elif isinstance(step, _Wildcard):
        for node in nodes:
            if isinstance(node, dict):
                out.extend(node.values())
            elif isinstance(node, list):
                out.extend(node)
    elif isinstance(step, _Recursive):
        for node in nodes:
            out.extend(_descendants(node))
    elif isinstance(step, _Indexes):
        for node in nodes:
            if isinstance(node, list):
                out.extend(node[i] for i in step.indexes if -len(node) <= i < len(node))
    elif isinstance(step, _Slice):
        for node in nodes:
            if isinstance(node, list):
                out.extend(node[step.start : step.stop : step.step])
    else:
        for node in nodes:
            if isinstance(node, list):
                out.extend(item for item in node if _passes(step, item))
    return out


def _passes(f: _Filter, item: Any) -> bool:
    lefts = _run(f.left, item)
    if f.op == "exists":
        return bool(lefts)
    if isinstance(f.right, _Literal):
        rights = [f.right.value]
    else:
        rights = _run(f.right or (), item)
    # Only one value can be compared at a time; anything else does not match.
    if len(lefts) != 1 or len(rights) != 1:
        return False
    return _compare(f.op, lefts[0], rights[0])


def _run(steps: tuple[_Step, ...], obj: Any) -> list[Any]:
    nodes = [obj]
    for step in steps:
        nodes = _apply(step, nodes)
        if not nodes:
            break
    return nodes


@dataclass(frozen=True)
class JSONPath:
    """A parsed path; parse once with :func:`compile_path` and evaluate many times."""

    text: str
    steps: tuple[_Step, ...]

    def evaluate(self, obj: Any) -> list[Any]:
        return _run(self.steps, obj)


@functools.lru_cache(maxsize=512)
def compile_path(path: str) -> JSONPath:
    """Parse ``path``; raise :class:`JSONPathError` if it is not in the subset."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if not text:
        raise JSONPathError(f"invalid JSONPath {path!r}: empty path")
    return JSONPath(path, _Parser(text).parse())


def evaluate(path: str, obj: Any) -> list[Any]:
    """Every value ``path`` selects in ``obj``, in document order; ``[]`` if none."""
    return compile_path(path).evaluate(obj)


def get_first(path: str, obj: Any, default: Any = None) -> Any:
    """The first value ``path`` selects in ``obj``, or ``default``."""
    found = evaluate(path, obj)
    return found[0] if found else default


def set_value(path: str, obj: MutableMapping[str, Any], value: Any) -> None:
    """Write ``value`` at a simple path (fields, quoted keys, list indexes).

    Missing maps on the way are created, as the scale subresource needs when it
    writes ``.spec.replicas`` into an object that has no ``spec`` yet.
    """
    steps = compile_path(path).steps
    if not steps:
        raise JSONPathError(f"cannot set the root of {path!r}")
    keys: list[str | int] = []
    for step in steps:
        if isinstance(step, _Field):
            keys.append(step.name)
        elif isinstance(step, _Keys) and len(step.names) == 1:
            keys.append(step.names[0])
        elif isinstance(step, _Indexes) and len(step.indexes) == 1:
            keys.append(step.indexes[0])
        else:
            raise JSONPathError(
                f"cannot set through {path!r}: only fields and indexes are writable"
            )
    cur: Any = obj
    for key, nxt in itertools.pairwise(keys):
        if isinstance(key, int):
            if not isinstance(cur, list) or not -len(cur) <= key < len(cur):
                raise JSONPathError(f"cannot set {path!r}: index {key} is out of range")
            cur = cur[key]
            continue
        if not isinstance(cur, MutableMapping):
            raise JSONPathError(f"cannot set {path!r}: {key!r} is not inside an object")
        if cur.get(key) is None:
            if isinstance(nxt, int):
                raise JSONPathError(f"cannot set {path!r}: list {key!r} does not exist")
            cur[key] = {}
        cur = cur[key]
    last = keys[-1]
    if isinstance(last, int):
        if not isinstance(cur, list) or not -len(cur) <= last < len(cur):
            raise JSONPathError(f"cannot set {path!r}: index {last} is out of range")
        cur[last] = value
    elif isinstance(cur, MutableMapping):
        cur[last] = value
    else:
        raise JSONPathError(f"cannot set {path!r}: {last!r} is not inside an object")


def _go_float(value: float) -> str:
    # fmt.Sprint of a float64 (%g, shortest digits): exponent form below 1e-4 and from 1e6.
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
    if value == 0:
        return "0"
    dec = Decimal(repr(value)).normalize()
    sign, digits, exp = dec.as_tuple()
    assert isinstance(exp, int)
    sci = len(digits) + exp - 1
    if sci < -4 or sci >= 6:
        mant = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        return f"{'-' if sign else ''}{mant}e{'-' if sci < 0 else '+'}{abs(sci):02d}"
    return format(dec, "f")


def to_text(value: Any) -> str:
    """Print one result as ``kubectl -o jsonpath`` does (and string printer columns)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
