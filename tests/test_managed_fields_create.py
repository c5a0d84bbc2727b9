"""A create's managed-fields entry, built straight from the object
(``field_ownership.created_fields_v1``, remembered per template), is the one the general
path gives: the object's members through ``update`` against nothing, then FieldsV1, byte
for byte, on random objects of typed, custom and untyped kinds (issue 11: the general path
was most of a create's managed-fields time)."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.model import field_schema, managed_fields
from shoal.model.field_ownership import Write, created_entries, update
from shoal.model.kinds import Kind
from tests.test_server_side_apply_field_sets import CONFIGMAP, DEPLOYMENT, WIDGET

POD = Kind("", "v1", "Pod", "pods", "pod", True, has_status=True)
SERVICE = Kind("", "v1", "Service", "services", "service", True, has_status=True)
UNTYPED = Kind("example.com", "v1", "Thing", "things", "thing", True, crd_version={"name": "v1"})
KINDS = [CONFIGMAP, DEPLOYMENT, POD, SERVICE, WIDGET, UNTYPED]
NOW = "2026-01-01T00:00:00Z"

# Field names the kinds above declare (and some they do not), so that the objects reach
# structs, maps, keyed lists, sets and atomic lists.
keys = st.sampled_from([
    "metadata", "name", "namespace", "uid", "generation", "labels", "annotations",
    "finalizers", "ownerReferences", "managedFields", "apiVersion", "kind", "spec", "status",
    "data", "template", "containers", "ports", "containerPort", "protocol", "env", "value",
    "args", "image", "selector", "tags", "free", "open", "known", "x", "replicas",
    "conditions", "type", "port", "volumes", "emptyDir", "a", "b"])
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2, 3), st.sampled_from(["a", "b", "TCP"]))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)),
    max_leaves=25)
objects = st.dictionaries(keys, values, max_size=6)


def _general(new: dict[str, Any], kind: Kind, write: Write) -> list[dict[str, Any]]:
    root = field_schema.for_kind(kind)
    owners = update(None, new, {}, root, write)
    return managed_fields.encode(managed_fields.cap_updates(owners, write.now))


def _direct(new: dict[str, Any], kind: Kind, write: Write) -> list[dict[str, Any]]:
    return created_entries(new, field_schema.for_kind(kind), write)  # what tracker records


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(KINDS), objects)
def test_a_creates_entry_is_the_general_paths_byte_for_byte(kind: Kind,
                                                            obj: dict[str, Any]) -> None:
    write = Write("m", kind.api_version, NOW, "", kind.has_status)
    assert orjson.dumps(_direct(obj, kind, write)) == orjson.dumps(_general(obj, kind, write))
    # Another object that differs only in the server's metadata (a ReplicaSet's next pod)
    # gets the tree remembered for the first: it must be its own tree too.
    other = _renamed(obj)
    assert orjson.dumps(_direct(other, kind, write)) == \
        orjson.dumps(_general(other, kind, write))


def _renamed(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return obj
    return {**obj, "metadata": {**meta, "name": "next", "uid": "u-2", "generation": 7,
                                "resourceVersion": "9", "creationTimestamp": NOW}}


def test_a_pod_as_a_node_stores_it() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default", "uid": "u", "generation": 1,
                        "creationTimestamp": NOW, "labels": {"app": "bench"}},
           "spec": {"schedulerName": "s", "containers": [
               {"name": "c", "image": "busybox", "command": ["sleep", "1"],
                "ports": [{"containerPort": 80}, {"containerPort": 80, "protocol": "UDP"}],
                "resources": {"requests": {"cpu": "10m"}},
                "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run"}]}],
                    "volumes": [{"name": "kube-api-access-x", "projected": {"sources": []}}],
                    "tolerations": [{"key": "k", "operator": "Exists"}],
                    "securityContext": {}},
           "status": {"phase": "Pending"}}
    write = Write("kubectl", "v1", NOW, "", True)
    direct = _direct(pod, POD, write)
    assert orjson.dumps(direct) == orjson.dumps(_general(pod, POD, write))
    tree = direct[0]["fieldsV1"]
    assert "f:status" not in tree and "f:name" not in tree["f:metadata"]
    assert tree["f:metadata"] == {"f:labels": {"f:app": {}}}  # a struct's field: no "."
    assert 'k:{"containerPort":80,"protocol":"UDP"}' in \
        tree["f:spec"]["f:containers"]['k:{"name":"c"}']["f:ports"]
    assert tree["f:spec"]["f:securityContext"] == {}  # an empty struct is a member itself


def test_a_custom_resources_sets_keyed_lists_and_kept_unknown_fields() -> None:
    widget = {"apiVersion": "example.com/v1", "kind": "Widget",
              "metadata": {"name": "w", "finalizers": ["z", "a"], "labels": {}},
              "spec": {"ports": [{"name": "web", "port": 80}, {"name": "api", "port": 81}],
                       "tags": ["b", "a"], "args": ["x"], "selector": {"k": "v"},
                       "free": {"deep": {"x": 1}}, "open": {"known": {"x": 1}, "extra": {"y": 2}}}}
    write = Write("m", "example.com/v1", NOW)
    direct = _direct(widget, WIDGET, write)
    assert orjson.dumps(direct) == orjson.dumps(_general(widget, WIDGET, write))
    spec = direct[0]["fieldsV1"]["f:spec"]
    assert list(spec["f:tags"]) == ['v:"a"', 'v:"b"']
    assert spec["f:open"]["f:extra"] == {".": {}, "f:y": {}}  # kept, undeclared: owned itself


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(KINDS), objects, st.dictionaries(keys, values, max_size=3))
def test_a_remembered_specs_entry_is_the_general_paths_and_its_own(
        kind: Kind, obj: dict[str, Any], metadata: dict[str, Any]) -> None:
    """The second object with a spec takes the spec's part from the memo: still the general
    path's entry byte for byte, whatever else the object holds."""
    write = Write("m", kind.api_version, NOW, "", kind.has_status)
    first = _direct(obj, kind, write)
    other = {**obj, "metadata": metadata}
    second = _direct(other, kind, write)
    assert orjson.dumps(second) == orjson.dumps(_general(other, kind, write))
    assert orjson.dumps(_direct(obj, kind, write)) == orjson.dumps(first)


def test_the_pods_of_one_template_share_one_remembered_spec_tree() -> None:
    write = Write("kube-controller-manager", "v1", NOW, "", True)
    spec = {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}
    entries = [_direct({"metadata": {"name": f"web-{i}"}, "spec": spec}, POD, write)
               for i in range(3)]
    assert field_schema.for_kind(POD).spec_trees().get(orjson.dumps(spec)) is not None
    assert entries[0] == entries[1] == entries[2]
    # One tree for all (stored objects are read-only): no copy per pod.
    assert entries[1][0]["fieldsV1"]["f:spec"] is entries[2][0]["fieldsV1"]["f:spec"]


def test_objects_without_a_spec_are_not_remembered_whole() -> None:
    # A ConfigMap's (or Secret's) data never repeats across objects: remembered, it would
    # only hold values in memory and push out the templates' trees.
    write = Write("m", "v1", NOW, "", False)
    memo = field_schema.for_kind(CONFIGMAP).object_trees()
    for i in range(3):
        entry = _direct({"metadata": {"name": f"cm-{i}"}, "data": {"k": f"secret-{i}"}},
                        CONFIGMAP, write)
        assert "f:data" in entry[0]["fieldsV1"]
    assert not memo._results
