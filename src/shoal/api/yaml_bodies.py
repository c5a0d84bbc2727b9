"""YAML request bodies, read as Kubernetes reads them (sigs.k8s.io/yaml over go-yaml v2).

Imported by :func:`shoal.api.bodies.parse` on the first YAML body only: PyYAML is 2.6 MB of
a node's memory, and kubectl, client-go and Helm send JSON or protobuf (issue 11)."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable
from typing import Any

import yaml

from shoal.api.bodies import go_quote
from shoal.api.errors import ApiError

# -- plain scalars as Kubernetes reads them ---------------------------------------------
#
# kubectl and the apiserver turn YAML into JSON with sigs.k8s.io/yaml, over go-yaml v2,
# whose resolve.go types a plain (unquoted) scalar its own way, neither YAML 1.1 (PyYAML's
# resolvers) nor 1.2: no base 60 (``1:20`` is a string, PyYAML's 80), ``0o17``, ``08`` and
# ``1e3`` are numbers (strings for PyYAML), ``y``/``n`` are booleans as ``yes``/``on`` are,
# ``=`` is a string (PyYAML's value tag, which no safe constructor knows), and a number
# goes through JSON on the way, so ``1.0`` arrives as the integer 1. Timestamps stay the
# strings they were written as (go-yaml rewrites them in RFC 3339).

_STR, _INT, _FLOAT = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float"))
_BOOL, _NULL, _MERGE = (f"tag:yaml.org,2002:{t}" for t in ("bool", "null", "merge"))
_GO_WORDS: dict[str, tuple[str, Any]] = {
    **dict.fromkeys(["y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On",
                     "ON"], (_BOOL, True)),
    **dict.fromkeys(["n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off",
                     "OFF"], (_BOOL, False)),
    **dict.fromkeys(["", "~", "null", "Null", "NULL"], (_NULL, None)),
    **dict.fromkeys([".nan", ".NaN", ".NAN"], (_FLOAT, math.nan)),
    **dict.fromkeys([".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"], (_FLOAT, math.inf)),
    **dict.fromkeys(["-.inf", "-.Inf", "-.INF"], (_FLOAT, -math.inf)),
    "<<": (_MERGE, "<<"),
}
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)\Z")
"""Go's ``strconv.ParseInt(s, 0, 64)`` syntax (after go-yaml drops every ``_``)."""
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?\Z")
"""go-yaml's ``yamlStyleFloat``."""
_GO_DOT_FLOAT = re.compile(r"\.[0-9]+(?:[eE][-+]?[0-9]+)?\Z")
"""What Go's ``ParseFloat`` takes of a scalar that starts with a dot."""
_NUMBER_START = frozenset("+-0123456789")


def _go_int(plain: str) -> int:
    digits = plain.lstrip("+-")
    if len(digits) > 1 and digits[0] == "0":
        n = int(digits, 0) if digits[1] in "xXoObB" else int(digits, 8)
    else:
        n = int(digits)  # ValueError past 4,300 digits: a 400, as before
    return -n if plain[0] == "-" else n


def _go_float(text: str) -> tuple[str, Any] | None:
    f = float(text)
    if not math.isfinite(f):
        return None  # Go's ParseFloat: out of range
    # JSON on the way: Go writes an integral float64 under 1e21 as an integer.
    return (_INT, int(f)) if f.is_integer() and abs(f) < 1e21 else (_FLOAT, f)


def go_scalar(value: str) -> tuple[str, Any]:
    """The tag and value go-yaml v2 (``resolve``) gives the plain scalar ``value``."""
    word = _GO_WORDS.get(value)
    if word is not None:
        return word
    first = value[0]
    if first == ".":
        if _GO_DOT_FLOAT.match(value):
            return _go_float(value) or (_STR, value)
        return _STR, value
    if first not in _NUMBER_START:
        return _STR, value
    plain = value.replace("_", "")
    is_int = _GO_INT.match(plain) is not None
    if is_int and len(plain) < 80:
        n = _go_int(plain)
        # ParseInt's int64, else ParseUint's uint64 (which takes no sign).
        if -(2**63) <= n < 2**63 or (n < 2**64 and plain[0] not in "+-"):
            return _INT, n
    if _GO_FLOAT.match(plain):
        number = _go_float(plain)
        if number is not None:
            return number
    if is_int and plain[0] not in "+-":
        return _INT, _go_int(plain)  # a big.Int (refused later: out of range)
    return _STR, value


class _JsonYamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """YAML as Kubernetes reads it (``go_scalar``): converted to JSON, so timestamps stay
    strings. libyaml's parser when PyYAML has it: a 3 MiB body holds the event loop 4x
    less (13.4 s -> 3.4 s of CPU for 300,000 keys), and it bounds nesting itself."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[str] = []
        """go-yaml's words for each key a mapping repeats (``line 3: key "a" already set in
        map``); the value kept is the last, as without strict decoding."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return go_scalar(value)[0]
        return super().resolve(kind, value, implicit)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """As sigs.k8s.io/yaml, an integer or boolean key becomes its JSON text (``1:``
        is "1", ``yes:`` and ``y:`` are "true"); a null or float key is refused later."""
        if not isinstance(node, yaml.MappingNode):
            return super().construct_mapping(node, deep)
        own = sum(1 for k, _ in node.value if k.tag != _MERGE)
        self.flatten_mapping(node)  # merge keys (<<), as SafeConstructor does
        first_own = len(node.value) - own  # the merged pairs come first
        mapping: dict[Any, Any] = {}
        own_keys: set[Any] = set()
        for i, (key_node, value_node) in enumerate(node.value):
            # Converted one by one: 1 and true would be one Python key.
            key = _json_key(self.construct_object(key_node, deep=deep))
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    "found unhashable key", key_node.start_mark)
            if i >= first_own:  # a key may override a merged one, not one of its own
                if key in own_keys:
                    self.duplicate_keys.append(
                        f"line {value_node.start_mark.line + 1}: key {go_quote(key)} "
                        "already set in map")
                own_keys.add(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _json_key(key: Any) -> Any:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key) if isinstance(key, int) else key


def _construct(tags: tuple[str, ...]) -> Any:
    """A constructor for ``!!int``, ``!!float`` or ``!!bool`` scalars, implicit or
    explicit (``!!float 1``), that types the scalar as go-yaml does."""
    def construct(loader: Any, node: Any) -> Any:
        value = loader.construct_scalar(node)
        tag, out = go_scalar(value) if value else (_NULL, None)
        if tag not in tags:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot decode !!{tag.rsplit(':', 1)[1]} `{value:.40}` as a "
                f"!!{node.tag.rsplit(':', 1)[1]}", node.start_mark)
        return out
    return construct


_JsonYamlLoader.add_constructor(_INT, _construct((_INT,)))
_JsonYamlLoader.add_constructor(_FLOAT, _construct((_INT, _FLOAT)))
_JsonYamlLoader.add_constructor(_BOOL, _construct((_BOOL,)))
_JsonYamlLoader.add_constructor(
    "tag:yaml.org,2002:timestamp",
    lambda loader, node: loader.construct_scalar(node),  # type: ignore[arg-type]
)


def load_yaml(raw: bytes) -> tuple[Any, list[str]]:
    """The JSON value of a YAML body, and go-yaml's words for the keys it repeated; a
    malformed body is a 400."""
    loader = _JsonYamlLoader(raw)  # a SafeLoader; yaml.load, keeping the loader
    try:
        value = loader.get_single_data()
    except yaml.YAMLError as e:
        raise ApiError(400, f"error converting YAML to JSON: {e}") from e
    except RecursionError as e:
        raise ApiError(400, "error converting YAML to JSON: the document is nested too "
                       "deeply") from e
    except ValueError as e:  # an integer of more than 4,300 digits (Python's limit)
        raise ApiError(400, f"error converting YAML to JSON: {e}") from e
    finally:
        loader.dispose()
    return value, loader.duplicate_keys
