"""Label and field selectors: parsing, matching, printing and the errors users see."""

from __future__ import annotations

import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.model.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    field_value,
    format_labels,
    is_label_value,
    is_qualified_name,
)

# --- label selector matching -------------------------------------------------------------

LABEL_MATCH_CASES: list[tuple[str, str, dict[str, str] | None, bool]] = [
    ("equality matches the same value", "app=web", {"app": "web"}, True),
    ("equality rejects another value", "app=web", {"app": "db"}, False),
    ("equality rejects objects lacking the key", "app=web", {}, False),
    ("double equals is equality", "app==web", {"app": "web"}, True),
    ("not-equals matches another value", "app!=web", {"app": "db"}, True),
    ("not-equals rejects the same value", "app!=web", {"app": "web"}, False),
    ("not-equals matches objects lacking the key", "app!=web", {}, True),
    ("in matches any listed value", "env in (dev,qa)", {"env": "qa"}, True),
    ("in rejects an unlisted value", "env in (dev,qa)", {"env": "prod"}, False),
    ("in rejects objects lacking the key", "env in (dev,qa)", {}, False),
    ("notin rejects a listed value", "env notin (prod)", {"env": "prod"}, False),
    ("notin matches an unlisted value", "env notin (prod)", {"env": "dev"}, True),
    ("notin matches objects lacking the key", "env notin (prod)", {}, True),
    ("a bare key requires the key with any value", "tier", {"tier": ""}, True),
    ("a bare key rejects objects lacking it", "tier", {"app": "x"}, False),
    ("a negated key rejects objects having it", "!tier", {"tier": "x"}, False),
    ("a negated key matches objects lacking it", "!tier", {"app": "x"}, True),
    ("an empty value matches an empty label", "app=", {"app": ""}, True),
    ("an empty value does not match a missing label", "app=", {}, False),
    ("commas mean and: all must hold", "app=web,env in (dev)", {"app": "web", "env": "qa"}, False),
    ("commas mean and: matching all", "app=web,env in (dev)", {"app": "web", "env": "dev"}, True),
    ("greater-than compares as integers", "gen>9", {"gen": "10"}, True),
    ("greater-than is strict", "gen>10", {"gen": "10"}, False),
    ("less-than compares as integers", "gen<10", {"gen": "9"}, True),
    ("greater-than rejects a non-integer label", "gen>1", {"gen": "x"}, False),
    ("greater-than rejects objects lacking the key", "gen>1", {}, False),
    ("in and notin are plain words inside parentheses", "x in (in,notin)", {"x": "notin"}, True),
    ("a key may be called in", "in=1", {"in": "1"}, True),
    (
        "whitespace around terms is ignored",
        "  app = web ,  env  ",
        {"app": "web", "env": "x"},
        True,
    ),
    ("the empty selector matches everything", "", {"any": "thing"}, True),
    ("the empty selector matches objects with no labels", "", None, True),
    ("a prefixed key is a key", "example.com/app=web", {"example.com/app": "web"}, True),
    ("an empty value set holds the empty string", "a in ()", {"a": ""}, True),
    ("a leading empty item is the empty string", "a in (,x)", {"a": ""}, True),
]


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [c[1:] for c in LABEL_MATCH_CASES],
    ids=[c[0] for c in LABEL_MATCH_CASES],
)
def test_label_selector_matching(text: str, labels: dict[str, str] | None, expected: bool) -> None:
    assert LabelSelector.parse(text).matches(labels) is expected


# --- label selector errors ---------------------------------------------------------------

QUALIFIED_NAME_HELP = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
    "end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
    "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)

LABEL_ERROR_CASES: list[tuple[str, str, str]] = [
    (
        "a key starting with a dash names the bad key like the apiserver",
        "-app=web",
        f'unable to parse requirement: <nil>: Invalid value: "-app": {QUALIFIED_NAME_HELP}',
    ),
    (
        "a value with a space is two words",
        "app=a b",
        "found 'b', expected: ',' or 'end of string'",
    ),
    ("a trailing comma needs another term", "app=web,", "found '', expected: identifier after ','"),
    (
        "a leading comma is not a term",
        ",app",
        "found ',', expected: !, identifier, or 'end of string'",
    ),
    (
        "in needs parentheses",
        "env in dev",
        "unable to parse requirement: found 'dev' expected: '('",
    ),
    (
        "an unclosed value set is reported",
        "env in (dev",
        "unable to parse requirement: found '', expected: ',' or ')'",
    ),
    ("a second operator is unexpected", "a=b=c", "found '=', expected: ',' or 'end of string'"),
    (
        "an unknown operator lists the valid ones",
        "a!b",
        "unable to parse requirement: found '!', expected: in, notin, =, ==, !=, gt, lt",
    ),
    (
        "a bad value names its key and index",
        "app=-web",
        'unable to parse requirement: values[0][app]: Invalid value: "-web": a valid label must be '
        "an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
        "and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', "
        "regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    ),
    (
        "greater-than needs an integer",
        "gen>x",
        'unable to parse requirement: values[0]: Invalid value: "x": '
        "for 'Gt', 'Lt' operators, the value must be an integer",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in LABEL_ERROR_CASES], ids=[c[0] for c in LABEL_ERROR_CASES]
)
def test_label_selector_errors_read_like_the_apiserver(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        LabelSelector.parse(text)
    assert str(err.value) == message


def test_a_value_longer_than_63_characters_is_rejected() -> None:
    with pytest.raises(SelectorError, match="must be no more than 63 characters"):
        LabelSelector.parse("app=" + "a" * 64)


def test_a_key_name_longer_than_63_characters_is_rejected() -> None:
    with pytest.raises(SelectorError, match="name part must be no more than 63 characters"):
        LabelSelector.parse("a" * 64)


def test_a_key_prefix_must_be_a_lowercase_dns_subdomain() -> None:
    with pytest.raises(SelectorError, match="prefix part a lowercase RFC 1123 subdomain"):
        LabelSelector.parse("Example.com/app=web")


def test_a_key_with_two_slashes_is_not_a_qualified_name() -> None:
    with pytest.raises(SelectorError, match="a qualified name must consist of"):
        LabelSelector.parse("a/b/c=x")


def test_selector_errors_are_value_errors_so_callers_can_catch_either() -> None:
    with pytest.raises(ValueError):
        LabelSelector.parse("=")


# --- label selector printing and structure -----------------------------------------------

PRINT_CASES: list[tuple[str, str, str]] = [
    ("requirements print sorted by key", "b=1,a=2", "a=2,b=1"),
    ("set values print sorted and without duplicates", "x in (foo,baz,foo)", "x in (baz,foo)"),
    (
        "empty set items print as empty strings",
        "x in (foo,,baz),y,z notin ()",
        "x in (,baz,foo),y,z notin ()",
    ),
    ("double equals keeps its spelling", "a==b", "a==b"),
    ("negation and comparison operators print as written", "!a,b>1,c<2", "!a,b>1,c<2"),
    ("whitespace is dropped", " a = b , c ", "a=b,c"),
    ("the empty selector prints as nothing", "", ""),
]


@pytest.mark.parametrize(
    ("text", "printed"), [c[1:] for c in PRINT_CASES], ids=[c[0] for c in PRINT_CASES]
)
def test_label_selector_prints_canonically(text: str, printed: str) -> None:
    assert str(LabelSelector.parse(text)) == printed


def test_parse_keeps_each_requirement_with_its_operator_and_values() -> None:
    sel = LabelSelector.parse("env notin (prod,qa),!legacy")
    assert sel.requirements == (
        Requirement("env", Operator.NOT_IN, ("prod", "qa")),
        Requirement("legacy", Operator.DOES_NOT_EXIST, ()),
    )


def test_an_empty_string_gives_an_empty_selector_and_a_nil_one_does_not() -> None:
    assert LabelSelector.parse("").empty
    assert LabelSelector.from_api({}).empty
    assert not LabelSelector.from_api(None).empty
    assert not LabelSelector.parse("a").empty


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("app=web,env!=x", "app", "web"),
        ("app in (web)", "app", "web"),
        ("app in (web,db)", "app", None),
        ("app!=web", "app", None),
        ("env=x", "app", None),
    ],
    ids=[
        "equality pins the value",
        "a one-value set pins the value",
        "a two-value set does not pin",
        "not-equals does not pin",
        "another key does not pin",
    ],
)
def test_requires_exact_match_finds_pinned_values_for_indexing(
    text: str, key: str, value: str | None
) -> None:
    assert LabelSelector.parse(text).requires_exact_match(key) == value


# --- metav1.LabelSelector ----------------------------------------------------------------


def test_a_nil_api_selector_matches_nothing() -> None:
    assert not LabelSelector.from_api(None).matches({})
    assert not LabelSelector.from_api(None).matches({"app": "web"})


def test_an_empty_api_selector_matches_everything() -> None:
    assert LabelSelector.from_api({}).matches({"app": "web"})
    assert LabelSelector.from_api({"matchLabels": {}, "matchExpressions": []}).matches(None)


API_CASES: list[tuple[str, dict[str, Any], dict[str, str], bool]] = [
    ("match labels must all be equal", {"matchLabels": {"a": "1", "b": "2"}}, {"a": "1"}, False),
    ("match labels match a superset", {"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    (
        "In selects listed values",
        {"matchExpressions": [{"key": "env", "operator": "In", "values": ["qa", "dev"]}]},
        {"env": "dev"},
        True,
    ),
    (
        "NotIn matches objects without the key",
        {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]},
        {},
        True,
    ),
    (
        "Exists needs the key",
        {"matchExpressions": [{"key": "env", "operator": "Exists"}]},
        {"app": "x"},
        False,
    ),
    (
        "DoesNotExist rejects the key",
        {"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]},
        {"env": ""},
        False,
    ),
    (
        "labels and expressions combine with and",
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "In", "values": ["dev"]}],
        },
        {"app": "web", "env": "prod"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("sel", "labels", "expected"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_api_selectors_match_like_kubernetes(
    sel: dict[str, Any], labels: dict[str, str], expected: bool
) -> None:
    assert LabelSelector.from_api(sel).matches(labels) is expected


def test_api_selector_prints_in_string_syntax() -> None:
    sel = LabelSelector.from_api(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["qa", "dev"]}],
        }
    )
    assert str(sel) == "app=web,env notin (dev,qa)"


API_ERROR_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "an unknown operator is named",
        {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
        '"Gt" is not a valid label selector operator',
    ),
    (
        "In needs values",
        {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
        "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty",
    ),
    (
        "Exists takes no values",
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        'values: Invalid value: []string{"x"}: values set must be empty for exists and does not exist',
    ),
    (
        "a bad key is reported on the key",
        {"matchLabels": {"-a": "x"}},
        f'key: Invalid value: "-a": {QUALIFIED_NAME_HELP}',
    ),
    ("match labels must be strings", {"matchLabels": {"a": 1}}, "matchLabels must map"),
    ("expressions must be a list", {"matchExpressions": {"key": "a"}}, "matchExpressions must be"),
]


@pytest.mark.parametrize(
    ("sel", "message"), [c[1:] for c in API_ERROR_CASES], ids=[c[0] for c in API_ERROR_CASES]
)
def test_invalid_api_selectors_raise_selector_errors(sel: dict[str, Any], message: str) -> None:
    with pytest.raises(SelectorError) as err:
        LabelSelector.from_api(sel)
    assert str(err.value).startswith(message)


def test_a_label_set_selector_matches_exactly_its_pairs() -> None:
    sel = LabelSelector.from_set({"app": "web", "tier": "fe"})
    assert str(sel) == "app=web,tier=fe"
    assert sel.matches({"app": "web", "tier": "fe", "x": "y"})
    assert not sel.matches({"app": "web"})
    assert LabelSelector.from_set(None).empty


@pytest.mark.parametrize(
    ("labels", "text"),
    [({"b": "2", "a": "1"}, "a=1,b=2"), ({}, "<none>"), (None, "<none>")],
    ids=["pairs sort by key", "no labels print as none", "missing labels print as none"],
)
def test_format_labels_prints_like_kubectl(labels: dict[str, str] | None, text: str) -> None:
    assert format_labels(labels) == text


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("app", True),
        ("example.com/app", True),
        ("a_b.c-d", True),
        ("", False),
        ("/a", False),
        ("a/", False),
    ],
)
def test_qualified_names(value: str, valid: bool) -> None:
    assert (is_qualified_name(value) == []) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [("", True), ("v1.2_3-x", True), ("-x", False), ("x" * 63, True), ("x" * 64, False)],
)
def test_label_values(value: str, valid: bool) -> None:
    assert (is_label_value(value) == []) is valid


# --- hypothesis: printing and parsing agree ----------------------------------------------


def _edged(edge: str, middle: str, max_size: int) -> st.SearchStrategy[str]:
    """Words that start and end with a character of ``edge``, ``middle`` characters inside."""
    single = st.sampled_from(edge)
    longer = st.builds(
        lambda a, m, b: a + m + b, single, st.text(alphabet=middle, max_size=max_size), single
    )
    return st.one_of(single, longer)


ALNUM = string.ascii_letters + string.digits
LOWER_ALNUM = string.ascii_lowercase + string.digits
NAMES = _edged(ALNUM, ALNUM + "_.-", 10)
PREFIXES = st.lists(_edged(LOWER_ALNUM, LOWER_ALNUM + "-", 6), min_size=1, max_size=3).map(".".join)
KEYS = st.one_of(NAMES, st.builds(lambda p, n: f"{p}/{n}", PREFIXES, NAMES))
VALUES = st.one_of(st.just(""), NAMES)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(KEYS)
    op = draw(st.sampled_from(list(Operator)))
    if op in (Operator.IN, Operator.NOT_IN):
        values = sorted(draw(st.sets(VALUES, min_size=1, max_size=3)))
    elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        values = []
    elif op in (Operator.GREATER_THAN, Operator.LESS_THAN):
        values = [str(draw(st.integers(min_value=0, max_value=10**6)))]
    else:
        values = [draw(VALUES)]
    return Requirement.create(key, op, values)


@given(st.lists(requirements(), max_size=5))
def test_parsing_a_printed_selector_gives_the_same_selector(reqs: list[Requirement]) -> None:
    sel = LabelSelector(tuple(sorted(reqs, key=lambda r: r.key)))
    assert LabelSelector.parse(str(sel)) == sel


@given(st.dictionaries(KEYS, VALUES, max_size=5))
def test_a_set_selector_matches_its_own_labels(labels: dict[str, str]) -> None:
    assert LabelSelector.from_set(labels).matches(labels)
    assert LabelSelector.parse(str(LabelSelector.from_set(labels))).matches(labels)


@given(st.lists(requirements(), min_size=1, max_size=4), st.dictionaries(KEYS, VALUES, max_size=4))
def test_negating_notin_and_in_splits_every_label_set(
    reqs: list[Requirement], labels: dict[str, str]
) -> None:
    # For any requirement, "in" and "notin" over the same values disagree on every object.
    for r in reqs:
        if r.operator in (Operator.IN, Operator.NOT_IN):
            yes = Requirement(r.key, Operator.IN, r.values).matches(labels)
            no = Requirement(r.key, Operator.NOT_IN, r.values).matches(labels)
            assert yes != no


# --- field selectors ---------------------------------------------------------------------

POD = {
    "metadata": {"name": "web-1", "namespace": "default"},
    "spec": {"nodeName": "pi-1", "restartPolicy": "Always"},
    "status": {"phase": "Running"},
}
UNSCHEDULED = {"metadata": {"name": "web-2", "namespace": "default"}, "spec": {}}
NODE = {"metadata": {"name": "pi-1"}, "spec": {"unschedulable": True}}
EVENT = {
    "metadata": {"name": "e1", "namespace": "default"},
    "involvedObject": {"kind": "Pod", "name": "web-1", "uid": "u-1"},
    "reason": "Started",
    "type": "Normal",
    "source": {"component": "kubelet"},
}
NEW_EVENT = {"metadata": {"name": "e2"}, "reportingController": "shoal/scheduler"}

FIELD_CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("a name selects that object", "metadata.name=web-1", POD, True),
    ("a name rejects other objects", "metadata.name=web-2", POD, False),
    ("double equals is equality", "metadata.name==web-1", POD, True),
    ("not-equals rejects the value", "metadata.namespace!=default", POD, False),
    ("a node name selects pods bound to it", "spec.nodeName=pi-1", POD, True),
    ("an empty node name selects unscheduled pods", "spec.nodeName=", UNSCHEDULED, True),
    ("an empty node name rejects scheduled pods", "spec.nodeName=", POD, False),
    ("not-equals empty selects scheduled pods", "spec.nodeName!=", POD, True),
    ("terms combine with and", "status.phase=Running,spec.nodeName=pi-2", POD, False),
    ("booleans compare as true and false", "spec.unschedulable=true", NODE, True),
    ("an unset unschedulable reads as false", "spec.unschedulable=false", {"spec": {}}, True),
    (
        "events select on the involved object",
        "involvedObject.name=web-1,involvedObject.uid=u-1",
        EVENT,
        True,
    ),
    ("events select on type and reason", "type=Normal,reason=Started", EVENT, True),
    ("an event source is its component", "source=kubelet", EVENT, True),
    (
        "a new-style event source is its reporting controller",
        "source=shoal/scheduler",
        NEW_EVENT,
        True,
    ),
    (
        "reportingComponent reads reportingController",
        "reportingComponent=shoal/scheduler",
        NEW_EVENT,
        True,
    ),
    (
        "a job's successful count reads status.succeeded",
        "status.successful=2",
        {"status": {"succeeded": 2}},
        True,
    ),
    ("a job with no successes reads as zero", "status.successful=0", {"status": {}}, True),
    (
        "an escaped comma is part of the value",
        r"metadata.name=a\,b",
        {"metadata": {"name": "a,b"}},
        True,
    ),
    ("the empty selector matches everything", "", POD, True),
]


@pytest.mark.parametrize(
    ("text", "obj", "expected"), [c[1:] for c in FIELD_CASES], ids=[c[0] for c in FIELD_CASES]
)
def test_field_selector_matching(text: str, obj: dict[str, Any], expected: bool) -> None:
    assert FieldSelector.parse(text).matches(obj) is expected


FIELD_ERROR_CASES: list[tuple[str, str, str]] = [
    (
        "a term needs an operator",
        "metadata.name",
        "invalid selector: 'metadata.name'; can't understand 'metadata.name'",
    ),
    (
        "an unescaped equals sign in a value is rejected",
        "a=b=c",
        "invalid field selector: unescaped character in value: =",
    ),
    (
        "an unknown escape is rejected",
        r"a=b\q",
        r"invalid field selector: invalid escape sequence: \q",
    ),
    (
        "a trailing backslash is rejected",
        "a=b\\",
        "invalid field selector: invalid escape sequence: \\",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [c[1:] for c in FIELD_ERROR_CASES], ids=[c[0] for c in FIELD_ERROR_CASES]
)
def test_field_selector_errors_read_like_the_apiserver(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as err:
        FieldSelector.parse(text)
    assert str(err.value) == message


def test_field_selector_exposes_requirements_for_indexing() -> None:
    sel = FieldSelector.parse("spec.nodeName==pi-1,metadata.namespace!=kube-system")
    # Terms sort by their text, as Kubernetes sorts them; == reads as =.
    assert sel.requirements == (
        FieldRequirement("metadata.namespace", "!=", "kube-system"),
        FieldRequirement("spec.nodeName", "=", "pi-1"),
    )
    assert sel.requires_exact_match("spec.nodeName") == "pi-1"
    assert sel.requires_exact_match("metadata.namespace") is None
    assert str(sel) == "metadata.namespace!=kube-system,spec.nodeName=pi-1"


def test_empty_field_selectors_are_empty_and_others_are_not() -> None:
    assert FieldSelector.parse("").empty
    assert FieldSelector.parse(",").empty
    assert not FieldSelector.parse("a=b").empty


@pytest.mark.parametrize(
    ("kind", "text", "supported"),
    [
        ("Pod", "spec.nodeName=x,status.phase=Running", True),
        ("Pod", "spec.nodeNameX=x", False),
        ("Secret", "type=Opaque", True),
        ("ConfigMap", "metadata.name=a", True),
        ("ConfigMap", "data.x=a", False),
        ("Widget", "metadata.namespace=a", True),
    ],
    ids=[
        "pods select on node and phase",
        "a misspelt pod field is not supported",
        "secrets select on type",
        "every kind selects on its name",
        "config maps do not select on data",
        "custom resources select on their namespace",
    ],
)
def test_unsupported_field_labels_are_rejected(kind: str, text: str, supported: bool) -> None:
    sel = FieldSelector.parse(text)
    if supported:
        sel.check_supported(kind)
    else:
        with pytest.raises(SelectorError, match=r"^field label not supported: "):
            sel.check_supported(kind)


@pytest.mark.parametrize(
    ("obj", "label", "value"),
    [
        ({"spec": {"replicas": 3}}, "spec.replicas", "3"),
        ({"spec": {"hostNetwork": False}}, "spec.hostNetwork", "false"),
        ({"spec": {"x": {"y": 1}}}, "spec.x", ""),
        ({"spec": "scalar"}, "spec.nodeName", ""),
    ],
    ids=[
        "integers print in decimal",
        "booleans print in lower case",
        "maps are not selectable",
        "a path through a scalar is missing",
    ],
)
def test_field_values_are_the_strings_kubernetes_compares(
    obj: dict[str, Any], label: str, value: str
) -> None:
    assert field_value(obj, label) == value


FIELD_VALUES = st.text(alphabet="ab,=\\! .-", max_size=6)
FIELD_NAMES = st.lists(
    st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=5), min_size=1, max_size=3
).map(".".join)


@given(st.lists(st.tuples(FIELD_NAMES, st.sampled_from(["=", "!="]), FIELD_VALUES), max_size=4))
def test_printed_field_selectors_parse_back_to_the_same_terms(
    terms: list[tuple[str, str, str]],
) -> None:
    text = ",".join(str(FieldRequirement(f, op, v)) for f, op, v in terms)
    sel = FieldSelector.parse(text)
    assert sorted((r.field, r.operator, r.value) for r in sel.requirements) == sorted(terms)
    assert FieldSelector.parse(str(sel)) == sel


@given(FIELD_NAMES, FIELD_VALUES)
def test_a_field_equality_selects_exactly_the_objects_with_that_value(
    name: str, value: str
) -> None:
    obj: dict[str, Any] = {}
    cur = obj
    parts = name.split(".")
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value
    assert FieldSelector((FieldRequirement(name, "=", value),)).matches(obj)
    assert not FieldSelector((FieldRequirement(name, "!=", value),)).matches(obj)
