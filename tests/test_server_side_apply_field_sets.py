"""The laws of server-side apply's field sets and of apply itself, with hypothesis: FieldsV1
round-trips, the named-field closure is a closure, an applier owns exactly what it applies,
applying twice changes nothing, and what only the applier owned goes when it stops applying
it; plus the schema's topology (keyed lists, sets, atomic lists, CRD list and map types)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.api.server_side_apply import apply, merge
from shoal.model import field_schema, managed_fields
from shoal.model.field_ownership import Write, update
from shoal.model.field_sets import (
    field_set,
    from_fields_v1,
    path_string,
    to_fields_v1,
    with_named_fields,
)
from shoal.model.kinds import Kind
from shoal.model.managed_fields import ManagerKey, Ownership

CONFIGMAP = Kind("", "v1", "ConfigMap", "configmaps", "configmap", True)
DEPLOYMENT = Kind("apps", "v1", "Deployment", "deployments", "deployment", True, has_status=True)
WIDGET_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"spec": {
    "type": "object", "properties": {
        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                  "x-kubernetes-list-map-keys": ["name"],
                  "items": {"type": "object", "properties": {
                      "name": {"type": "string"}, "port": {"type": "integer"}}}},
        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                 "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "selector": {"type": "object", "x-kubernetes-map-type": "atomic",
                     "additionalProperties": {"type": "string"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"known": {"type": "object", "properties": {
                     "x": {"type": "integer"}}}}}}}}}
WIDGET = Kind("example.com", "v1", "Widget", "widgets", "widget", True,
              crd_version={"name": "v1", "schema": {"openAPIV3Schema": WIDGET_SCHEMA}})
NOW = "2026-01-01T00:00:00Z"

names = st.sampled_from(["a", "b", "c", "d"])
elements = st.one_of(
    names.map(lambda n: f"f:{n}"),
    names.map(lambda n: f'k:{{"name":"{n}"}}'),
    names.map(lambda n: f'v:"{n}"'),
    st.integers(0, 3).map(lambda i: f"i:{i}"),
)
paths = st.lists(elements, min_size=1, max_size=4).map(tuple)
field_sets = st.frozensets(paths, max_size=12)
data = st.dictionaries(names, st.sampled_from(["1", "2", "3"]), max_size=4)


def _cm(d: dict[str, str], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x"}
    if labels is not None:
        meta["labels"] = labels
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    if d:  # (an empty map would be a member itself, as in structured-merge-diff)
        obj["data"] = d
    return obj


def _write(manager: str) -> Write:
    return Write(manager, "v1", NOW)


@settings(max_examples=60)
@given(field_sets)
def test_fields_v1_round_trips_any_set(s: frozenset[tuple[str, ...]]) -> None:
    assert from_fields_v1(to_fields_v1(s)) == s


@settings(max_examples=60)
@given(field_sets, field_sets)
def test_the_named_field_closure_is_extensive_monotone_and_idempotent(
        a: frozenset[tuple[str, ...]], b: frozenset[tuple[str, ...]]) -> None:
    root = field_schema.for_kind(DEPLOYMENT)
    ca = with_named_fields(a, root)
    assert a <= ca
    assert with_named_fields(ca, root) == ca
    assert ca <= with_named_fields(a | b, root)


@settings(max_examples=40)
@given(data, data)
def test_a_merge_holds_every_field_of_the_applied_config(live: dict[str, str],
                                                         applied: dict[str, str]) -> None:
    root = field_schema.for_kind(CONFIGMAP)
    merged = merge(_cm(live), _cm(applied), root)
    assert field_set(_cm(applied), root) <= field_set(merged, root)
    assert merged.get("data", {}) == {**live, **applied}


@settings(max_examples=40)
@given(data, data, data)
def test_apply_owns_exactly_its_config_is_idempotent_and_prunes_what_only_it_owned(
        first: dict[str, str], second: dict[str, str], other: dict[str, str]) -> None:
    root = field_schema.for_kind(CONFIGMAP)
    obj, owners = apply(None, _cm(other), {}, root, _write("other"))
    obj, owners = apply(obj, _cm(first), owners, root, _write("me"), force=True)
    obj, owners = apply(obj, _cm(second), owners, root, _write("me"), force=True)
    mine = owners.get(ManagerKey.of("me", "Apply", "v1"))
    assert (mine.fields if mine else set()) == {("f:data", f"f:{k}") for k in second}
    again, owners_again = apply(obj, _cm(second), owners, root, _write("me"))
    assert again == obj and owners_again == owners
    theirs = owners.get(ManagerKey.of("other", "Apply", "v1"))
    kept = {p[1][2:] for p in theirs.fields} if theirs else set()
    assert set(obj.get("data", {})) == set(second) | kept  # the rest of first went


@settings(max_examples=40)
@given(data, data)
def test_an_update_owns_what_it_changed_and_no_one_owns_what_it_removed(
        before: dict[str, str], after: dict[str, str]) -> None:
    root = field_schema.for_kind(CONFIGMAP)
    old = _cm(before)
    owners = {ManagerKey.of("me", "Apply", "v1"): Ownership(field_set(old, root) - {
        ("f:apiVersion",), ("f:kind",), ("f:metadata", "f:name")}, "v1", NOW)}
    out = update(old, _cm(after), owners, root, Write("editor", "v1", NOW))
    changed = {("f:data", f"f:{k}") for k, v in after.items() if before.get(k) != v}
    editor = out.get(ManagerKey.of("editor", "Update", "v1"))
    assert (editor.fields if editor else set()) == changed
    for own in out.values():
        assert all(p[1][2:] in after for p in own.fields if p[0] == "f:data")


def test_managers_round_trip_through_their_entries() -> None:
    owners = {ManagerKey.of("a", "Apply", "v1"): Ownership(frozenset({("f:data", "f:x")}), "v1",
                                                          NOW),
              ManagerKey.of("b", "Update", "v1", "status"): Ownership(
                  frozenset({("f:status", "f:y")}), "v1", NOW)}
    entries = managed_fields.encode(owners)
    assert [e["operation"] for e in entries] == ["Apply", "Update"]
    assert entries[1]["subresource"] == "status"
    assert managed_fields.decode(entries) == owners


def test_a_pod_templates_lists_follow_their_merge_keys() -> None:
    root = field_schema.for_kind(DEPLOYMENT)
    obj = {"spec": {"template": {"metadata": {"finalizers": ["x"]}, "spec": {
        "containers": [{"name": "c", "args": ["-v"], "ports": [{"containerPort": 80}],
                        "env": [{"name": "E", "value": "1"}]}]}}}}
    paths = {path_string(p) for p in field_set(obj, root)}
    assert ".spec.template.metadata.finalizers[=\"x\"]" in paths  # a set
    assert '.spec.template.spec.containers[name="c"].args' in paths  # atomic
    assert '.spec.template.spec.containers[name="c"].ports[containerPort=80,protocol="TCP"]' \
        in paths
    assert '.spec.template.spec.containers[name="c"].env[name="E"].value' in paths


def test_a_custom_resource_follows_its_schemas_list_and_map_types() -> None:
    root = field_schema.for_kind(WIDGET)
    obj = {"metadata": {"finalizers": ["f"]},
           "spec": {"ports": [{"name": "web", "port": 80}], "tags": ["a", "b"],
                    "args": ["x"], "selector": {"k": "v"}, "free": {"deep": {"x": 1}},
                    "open": {"known": {"x": 1}, "extra": {"y": 2}}}}
    paths = {path_string(p) for p in field_set(obj, root)}
    assert paths == {'.metadata.finalizers[="f"]', '.spec.ports[name="web"]', '.spec.ports[name="web"].name',
                     '.spec.ports[name="web"].port', '.spec.tags[="a"]', '.spec.tags[="b"]',
                     ".spec.args", ".spec.selector", ".spec.free.deep", ".spec.free.deep.x",
                     # a declared field is reached, an undeclared one kept is owned itself
                     ".spec.open.known.x", ".spec.open.extra", ".spec.open.extra.y"}
    # Keyed elements merge by key; a set's elements are added; atomic values are replaced.
    merged = merge(obj, {"spec": {"ports": [{"name": "api", "port": 81}], "tags": ["c"],
                                  "args": ["y"], "selector": {"j": "w"}}}, root)
    assert [p["name"] for p in merged["spec"]["ports"]] == ["web", "api"]
    assert merged["spec"]["tags"] == ["a", "b", "c"]
    assert merged["spec"]["args"] == ["y"] and merged["spec"]["selector"] == {"j": "w"}
