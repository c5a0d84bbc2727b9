"""A JSON body is checked by a walk of its containers only (orjson already refuses what
JSON cannot hold): the same key count and the same 400 as the full check of any value."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api import bodies
from shoal.api.errors import ApiError

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False,
                                                                            allow_infinity=False)
    | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner,
                                                                max_size=3),
    max_leaves=25)


def _outcome(check: Any, value: Any) -> tuple[str, Any]:
    try:
        return "keys", check(value, "p")
    except ApiError as e:
        return "error", (e.code, e.message)


def _nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for i in range(depth - 1):
        value = {"k": value} if i % 2 else [value]
    return value


@settings(max_examples=300, deadline=None)
@given(_json, st.integers(1, 60), st.booleans())
def test_the_container_walk_agrees_with_the_full_check(value: Any, depth: int,
                                                       wrap: bool) -> None:
    parsed = orjson.loads(orjson.dumps(_nested(depth, value) if wrap else value))
    assert _outcome(bodies._check_orjson_value, parsed) == _outcome(
        bodies.check_json_value, parsed)


@pytest.mark.parametrize("depth", [bodies.MAX_DEPTH, bodies.MAX_DEPTH + 1])
def test_a_json_body_nested_past_the_limit_is_a_400(depth: int) -> None:
    raw = orjson.dumps(_nested(depth, {}))
    if depth > bodies.MAX_DEPTH:
        with pytest.raises(ApiError) as e:
            bodies.parse(raw, "application/json")
        assert e.value.code == 400 and "nested more than" in e.value.message
    else:
        assert bodies.parse(raw, "application/json") == orjson.loads(raw)
