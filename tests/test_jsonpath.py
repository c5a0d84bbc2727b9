"""The JSONPath subset used by printer columns and the scale subresource."""

from __future__ import annotations

import copy
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.model.jsonpath import (
    JSONPathError,
    compile_path,
    evaluate,
    get_first,
    set_value,
    to_text,
)

OBJ: dict[str, Any] = {
    "metadata": {
        "name": "web",
        "labels": {"app": "web", "example.com/tier": "fe"},
        "annotations": {"a.b.c": "dots"},
    },
    "spec": {
        "replicas": 3,
        "paused": False,
        "containers": [
            {"name": "app", "image": "nginx:1", "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "envoy:2"},
            {"name": "log", "image": "fluent:3", "ports": [{"containerPort": 24224}]},
        ],
    },
    "status": {
        "replicas": 2,
        "conditions": [
            {"type": "Available", "status": "True", "priority": 1},
            {"type": "Ready", "status": "False", "priority": 5},
            {"type": "Progressing", "status": "True", "priority": 3},
        ],
    },
}

CASES: list[tuple[str, str, list[Any]]] = [
    ("a dotted field reads a scalar", ".spec.replicas", [3]),
    ("a false boolean is a result, not a miss", ".spec.paused", [False]),
    ("braces around the path are accepted", "{.spec.replicas}", [3]),
    ("a leading dollar is the root", "$.status.replicas", [2]),
    ("a path may start without a dot", "spec.replicas", [3]),
    ("a lone dot is the whole object", ".", [OBJ]),
    ("a label is a field of the labels map", ".metadata.labels.app", ["web"]),
    ("a quoted key may contain dots", ".metadata.annotations['a.b.c']", ["dots"]),
    ("a double-quoted key works too", '.metadata.labels["example.com/tier"]', ["fe"]),
    ("a backslash escapes a dot in a field", r".metadata.annotations.a\.b\.c", ["dots"]),
    ("a quoted union reads several keys", ".metadata['name','labels'].app", ["web"]),
    ("an index picks one element", ".spec.containers[0].image", ["nginx:1"]),
    ("a negative index counts from the end", ".spec.containers[-1].name", ["log"]),
    ("an out-of-range index selects nothing", ".spec.containers[7].name", []),
    ("an index union picks several", ".spec.containers[0,2].name", ["app", "log"]),
    ("a slice picks a range", ".spec.containers[1:].name", ["sidecar", "log"]),
    ("a slice step skips elements", ".spec.containers[::2].name", ["app", "log"]),
    (
        "a bracket wildcard selects every element",
        ".spec.containers[*].name",
        ["app", "sidecar", "log"],
    ),
    ("a dot wildcard selects every value of a map", ".metadata.labels.*", ["web", "fe"]),
    (
        "a filter selects by equality",
        '.status.conditions[?(@.type=="Ready")].status',
        ["False"],
    ),
    (
        "a filter accepts single quotes",
        ".status.conditions[?(@.type=='Available')].status",
        ["True"],
    ),
    ("a filter selects by inequality", '.status.conditions[?(@.status!="True")].type', ["Ready"]),
    (
        "a filter compares numbers",
        ".status.conditions[?(@.priority>=3)].type",
        ["Ready", "Progressing"],
    ),
    (
        "a filter compares with less-than",
        ".status.conditions[?(@.priority < 3)].type",
        ["Available"],
    ),
    (
        "an existence filter keeps elements that have the field",
        ".spec.containers[?(@.ports)].name",
        ["app", "log"],
    ),
    (
        "a filter can compare two fields of the element",
        ".status.conditions[?(@.priority==@.priority)].type",
        ["Available", "Ready", "Progressing"],
    ),
    (
        "a string never equals a number in a filter",
        '.status.conditions[?(@.priority=="1")].type',
        [],
    ),
    ("recursive descent finds a field at any depth", "..containerPort", [80, 24224]),
    ("recursive descent then an index", ".spec..ports[0].containerPort", [80, 24224]),
    ("a missing field selects nothing", ".spec.missing.deeper", []),
    ("a field of a scalar selects nothing", ".spec.replicas.value", []),
    ("a field of a list selects nothing", ".spec.containers.name", []),
]


@pytest.mark.parametrize(("path", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(path: str, expected: list[Any]) -> None:
    assert evaluate(path, OBJ) == expected


def test_get_first_returns_the_first_result_or_the_default() -> None:
    assert get_first(".spec.containers[*].image", OBJ) == "nginx:1"
    assert get_first(".spec.nothing", OBJ) is None
    assert get_first(".spec.nothing", OBJ, default=0) == 0
    assert get_first(".spec.paused", OBJ, default=True) is False


def test_evaluating_does_not_change_the_object() -> None:
    before = copy.deepcopy(OBJ)
    evaluate("..name", OBJ)
    evaluate('.status.conditions[?(@.type=="Ready")]', OBJ)
    assert before == OBJ


def test_a_compiled_path_is_reusable_across_objects() -> None:
    path = compile_path(".spec.replicas")
    assert path.evaluate({"spec": {"replicas": 1}}) == [1]
    assert path.evaluate({"spec": {"replicas": 5}}) == [5]


BAD_PATHS: list[tuple[str, str]] = [
    ("an empty path", ""),
    ("empty braces", "{}"),
    ("a trailing dot", ".spec."),
    ("a double dot at the end", ".spec.."),
    ("an unclosed bracket", ".spec[0"),
    ("empty brackets", ".spec[]"),
    ("a bare word in brackets", ".spec[name]"),
    ("a zero slice step", ".spec[::0]"),
    ("an unknown filter operator", ".items[?(@.a=<1)]"),
    ("a filter operand that is not a literal or path", ".items[?(@.a==b)]"),
    ("a filter whose left side is not relative", ".items[?(a==1)]"),
    ("an unterminated quoted key", ".spec['a]"),
]


@pytest.mark.parametrize("path", [c[1] for c in BAD_PATHS], ids=[c[0] for c in BAD_PATHS])
def test_paths_outside_the_subset_raise(path: str) -> None:
    with pytest.raises(JSONPathError):
        evaluate(path, OBJ)


def test_jsonpath_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="invalid JSONPath"):
        compile_path(".a.")


# --- set_value ---------------------------------------------------------------------------


def test_set_value_writes_an_existing_field() -> None:
    obj = {"spec": {"replicas": 1}}
    set_value(".spec.replicas", obj, 4)
    assert obj == {"spec": {"replicas": 4}}


def test_set_value_creates_missing_maps_on_the_way() -> None:
    obj: dict[str, Any] = {"metadata": {"name": "x"}}
    set_value(".spec.scale.replicas", obj, 2)
    assert obj == {"metadata": {"name": "x"}, "spec": {"scale": {"replicas": 2}}}


def test_set_value_replaces_a_null_map() -> None:
    obj: dict[str, Any] = {"spec": None}
    set_value(".spec.replicas", obj, 2)
    assert obj == {"spec": {"replicas": 2}}


def test_set_value_writes_through_quoted_keys_and_indexes() -> None:
    obj: dict[str, Any] = {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}
    set_value(".spec.containers[1]['image']", obj, "nginx")
    set_value("{.metadata.labels.app\\.io/x}", obj, "y")
    assert obj["spec"]["containers"][1] == {"name": "b", "image": "nginx"}
    assert obj["metadata"] == {"labels": {"app.io/x": "y"}}


SET_ERRORS: list[tuple[str, str, dict[str, Any]]] = [
    ("a wildcard is not writable", ".spec.containers[*].image", {"spec": {"containers": []}}),
    ("a filter is not writable", ".items[?(@.a==1)].b", {"items": []}),
    ("the root is not writable", ".", {}),
    ("a scalar cannot hold a field", ".spec.replicas.value", {"spec": {"replicas": 1}}),
    (
        "an index past the end is rejected",
        ".spec.containers[3].image",
        {"spec": {"containers": []}},
    ),
    ("a missing list is not invented", ".spec.containers[0].image", {"spec": {}}),
]


@pytest.mark.parametrize(
    ("path", "obj"), [c[1:] for c in SET_ERRORS], ids=[c[0] for c in SET_ERRORS]
)
def test_set_value_rejects_what_it_cannot_write(path: str, obj: dict[str, Any]) -> None:
    before = copy.deepcopy(obj)
    with pytest.raises(JSONPathError):
        set_value(path, obj, 1)
    assert obj == before


KEYS = st.text(alphabet=string.ascii_letters + "_-/", min_size=1, max_size=6)
SCALARS = st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none())


@given(st.lists(KEYS, min_size=1, max_size=5), SCALARS)
def test_a_value_set_at_a_path_reads_back_at_that_path(keys: list[str], value: Any) -> None:
    obj: dict[str, Any] = {}
    path = "." + ".".join(keys)
    set_value(path, obj, value)
    assert evaluate(path, obj) == [value]
    quoted = "".join(f"['{k}']" for k in keys)
    assert evaluate(quoted, obj) == [value]


# --- printing results --------------------------------------------------------------------

TEXT_CASES: list[tuple[str, Any, str]] = [
    ("strings print as they are", "Ready", "Ready"),
    ("integers print in decimal", 42, "42"),
    ("booleans print in lower case", True, "true"),
    ("whole floats drop the fraction", 3.0, "3"),
    ("fractions print shortest", 0.25, "0.25"),
    ("large floats use an exponent as Go does", 1e6, "1e+06"),
    ("small floats use an exponent as Go does", 1.5e-5, "1.5e-05"),
    ("floats below a million print plainly", 123456.0, "123456"),
    ("maps print as compact JSON with sorted keys", {"b": 1, "a": [1, "x"]}, '{"a":[1,"x"],"b":1}'),
    ("null prints as null", None, "null"),
]


@pytest.mark.parametrize(
    ("value", "text"), [c[1:] for c in TEXT_CASES], ids=[c[0] for c in TEXT_CASES]
)
def test_to_text_prints_like_kubectl_jsonpath(value: Any, text: str) -> None:
    assert to_text(value) == text
