"""The document CRDT: per-leaf stamps, keyed lists, tombstones, and the merge laws."""

from __future__ import annotations

import copy
import itertools
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.crdt.document import SET, Document, Path


def containers_by_name(path: Path) -> str | None:
    return "name" if path and path[-1] == "containers" else None


def with_finalizer_set(path: Path) -> str | None:
    return SET if path == ("metadata", "finalizers") else containers_by_name(path)


POD = {
    "metadata": {"name": "web", "labels": {"app": "web"}},
    "spec": {"containers": [{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "busybox"}]},
}


def test_a_created_document_reads_back_its_value() -> None:
    d = Document.create(POD, 10, "n1", containers_by_name)
    assert d.value() == POD


def test_a_write_only_stamps_the_leaves_it_changes() -> None:
    d = Document.create(POD, 10, "n1", containers_by_name)
    new = copy.deepcopy(POD)
    new["metadata"]["labels"]["tier"] = "front"
    d.write(new, 20, "n1", containers_by_name)
    root = d.root
    assert root[3]["metadata"][3]["labels"][3]["tier"][0] == 20
    assert root[3]["metadata"][3]["labels"][3]["app"][0] == 10
    assert d.value() == new


def test_a_register_reads_as_the_stamp_and_writer_of_its_last_change() -> None:
    d = Document.create(POD, 10, "n1", containers_by_name)
    new = copy.deepcopy(POD)
    new["spec"]["containers"][1]["image"] = "busybox:2"
    d.write(new, 20, "n2", containers_by_name)
    assert d.register_at("spec", "containers", "b", "image") == (20, "n2")
    assert d.register_at("spec", "containers", "a", "image") == (10, "n1")
    assert d.writer_at("spec", "containers", "b", "image") == "n2"
    assert d.register_at("spec", "containers", "c") is None
    assert d.writer_at("status") is None


def test_spec_and_status_written_concurrently_both_survive() -> None:
    base = Document.create(POD, 10, "n1", containers_by_name)
    user, agent = base.copy(), base.copy()
    u = copy.deepcopy(POD)
    u["spec"]["containers"][0]["image"] = "nginx:2"
    user.write(u, 20, "n1", containers_by_name)
    a = copy.deepcopy(POD)
    a["status"] = {"phase": "Running"}
    agent.write(a, 21, "n2", containers_by_name)
    user.merge(agent)
    v = user.value()
    assert v is not None
    assert v["spec"]["containers"][0]["image"] == "nginx:2"
    assert v["status"] == {"phase": "Running"}


def test_containers_added_concurrently_on_two_peers_merge_by_name() -> None:
    base = Document.create(POD, 10, "n1", containers_by_name)
    x, y = base.copy(), base.copy()
    vx = copy.deepcopy(POD)
    vx["spec"]["containers"].append({"name": "c", "image": "redis"})
    x.write(vx, 20, "n1", containers_by_name)
    vy = copy.deepcopy(POD)
    vy["spec"]["containers"].append({"name": "d", "image": "memcached"})
    y.write(vy, 21, "n2", containers_by_name)
    x.merge(y)
    v = x.value()
    assert v is not None
    assert [c["name"] for c in v["spec"]["containers"]] in (["a", "b", "d", "c"], ["a", "b", "c", "d"])


def _finalized(*finalizers: str) -> dict[str, Any]:
    return {"metadata": {"name": "c", "finalizers": list(finalizers)}, "data": {}}


def test_finalizers_added_concurrently_on_two_peers_are_both_kept() -> None:
    base = Document.create(_finalized(), 10, "n1", with_finalizer_set)
    x, y = base.copy(), base.copy()
    x.write(_finalized("a.example/x"), 20, "n1", with_finalizer_set)
    y.write(_finalized("b.example/y"), 21, "n2", with_finalizer_set)
    x.merge(y)
    y.merge(x)
    assert x.value() == y.value()
    assert sorted(x.value()["metadata"]["finalizers"]) == ["a.example/x", "b.example/y"]  # type: ignore[index]


def test_a_finalizer_removed_on_one_peer_stays_removed_when_another_adds_one() -> None:
    base = Document.create(_finalized("a.example/x"), 10, "n1", with_finalizer_set)
    x, y = base.copy(), base.copy()
    x.write(_finalized(), 20, "n1", with_finalizer_set)  # controller x is done
    y.write(_finalized("a.example/x", "b.example/y"), 21, "n2", with_finalizer_set)
    x.merge(y)
    assert x.value()["metadata"]["finalizers"] == ["b.example/y"]  # type: ignore[index]


def test_a_finalizer_list_dropped_on_one_peer_is_not_revived_by_a_concurrent_add() -> None:
    base = Document.create(_finalized("a.example/x"), 10, "n1", with_finalizer_set)
    x, y = base.copy(), base.copy()
    x.write({"metadata": {"name": "c"}, "data": {}}, 20, "n1", with_finalizer_set)
    y.write(_finalized("a.example/x", "b.example/y"), 21, "n2", with_finalizer_set)
    y.merge(x)
    assert y.value()["metadata"]["finalizers"] == ["b.example/y"]  # type: ignore[index]


def test_a_deletion_is_not_undone_by_a_concurrent_update() -> None:
    base = Document.create(POD, 10, "n1", containers_by_name)
    deleter, updater = base.copy(), base.copy()
    deleter.delete(20, "n1")
    u = copy.deepcopy(POD)
    u["metadata"]["labels"]["x"] = "y"
    updater.write(u, 30, "n2", containers_by_name)
    deleter.merge(updater)
    updater.merge(base)
    assert deleter.value() is None
    # And in the other direction.
    updater.merge(deleter)
    assert updater.value() is None


def test_an_object_created_again_after_deletion_has_only_its_new_fields() -> None:
    d = Document.create(POD, 10, "n1", containers_by_name)
    d.delete(20, "n1")
    fresh = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "z", "image": "x"}]}}
    d.write(fresh, 30, "n1", containers_by_name)
    assert d.value() == fresh


def test_a_document_survives_serialisation() -> None:
    d = Document.create(POD, 10, "n1", containers_by_name)
    assert Document.from_bytes(d.to_bytes()).value() == POD


# -- merge laws ----------------------------------------------------------------

leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["a", "b", "c"]))
small_obj: st.SearchStrategy[Any] = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(["x", "y", "z"]), inner, max_size=3),
        st.lists(st.fixed_dictionaries({"name": st.sampled_from(["p", "q", "r"]), "v": inner}),
                 max_size=3).map(lambda xs: xs).filter(
            lambda xs: len({x["name"] for x in xs}) == len(xs)),
    ),
    max_leaves=8,
)
finalizer_sets = st.lists(st.sampled_from(["f/a", "f/b", "f/c"]), unique=True, max_size=3)
objects = st.fixed_dictionaries({"spec": st.dictionaries(
    st.sampled_from(["containers", "a", "b"]), small_obj, max_size=3)},
    optional={"metadata": st.fixed_dictionaries({}, optional={"finalizers": finalizer_sets})})

# An operation is (writer, value or None for delete).
ops = st.lists(st.tuples(st.sampled_from(["n1", "n2", "n3"]), st.one_of(st.none(), objects)),
               min_size=1, max_size=6)


def _replicas(history: list[tuple[str, Any]]) -> list[Document]:
    """Each op is applied on its writer's replica, which has seen only its own earlier ops."""
    docs = {n: Document.empty() for n in ("n1", "n2", "n3")}
    out = []
    for stamp, (writer, value) in enumerate(history, start=1):
        d = docs[writer]
        if value is None:
            if d.value() is not None:
                d.delete(stamp, writer)
        else:
            d.write(value, stamp, writer, with_finalizer_set)
        out.append(d.copy())
    return out


def _merged(docs: list[Document]) -> Document:
    acc = Document.empty()
    for d in docs:
        acc.merge(d)
    return acc


@settings(max_examples=200, deadline=None)
@given(ops)
def test_merge_is_commutative(history: list[tuple[str, Any]]) -> None:
    states = _replicas(history)
    for a, b in itertools.combinations(states, 2):
        ab, ba = a.copy(), b.copy()
        ab.merge(b)
        ba.merge(a)
        assert ab.root == ba.root


@settings(max_examples=200, deadline=None)
@given(ops)
def test_merge_is_associative(history: list[tuple[str, Any]]) -> None:
    states = _replicas(history)
    for a, b, c in itertools.combinations(states, 3):
        left = a.copy()
        left.merge(b)
        left.merge(c)
        bc = b.copy()
        bc.merge(c)
        right = a.copy()
        right.merge(bc)
        assert left.root == right.root


@settings(max_examples=200, deadline=None)
@given(ops)
def test_merge_is_idempotent(history: list[tuple[str, Any]]) -> None:
    for s in _replicas(history):
        twice = s.copy()
        assert not twice.merge(s)
        assert twice.root == s.root


@settings(max_examples=100, deadline=None)
@given(ops, st.randoms(use_true_random=False))
def test_any_delivery_order_with_duplicates_converges(history: list[tuple[str, Any]], rnd: Any) -> None:
    states = _replicas(history)
    deliveries = states + rnd.sample(states, k=min(len(states), 3))
    rnd.shuffle(deliveries)
    a = _merged(deliveries)
    b = _merged(list(reversed(states)))
    assert a.root == b.root
    assert a.value() == b.value()


def _reference_node(value: Any, s: int, w: str, path: Path, kf: Any) -> list[Any]:
    """A created document's node as the module's docstring defines it, written plainly."""
    if isinstance(value, dict):
        return [s, w, {"$": "m"}, {k: _reference_node(v, s, w, (*path, k), kf)
                                   for k, v in value.items()}]
    if isinstance(value, list):
        key = kf(path)
        if key == SET:
            keys = value if all(isinstance(v, str) for v in value) \
                and len(set(value)) == len(value) else None
        elif key is None or not value or not all(isinstance(v, dict) and key in v
                                                 for v in value):
            keys = None
        else:
            keys = [v[key] if isinstance(v[key], str) else orjson.dumps(v[key]).decode()
                    for v in value]
            keys = keys if len(set(keys)) == len(keys) else None
        if keys is not None:
            return [s, w, {"$": "l", "k": key, "o": list(keys)},
                    {k: _reference_node(v, s, w, path, kf) for k, v in zip(keys, value, strict=True)}]
    return [s, w, value, None]


def _keyed_paths(path: Path) -> str | None:
    if path and path[-1] == "tags":
        return SET
    return "name" if path and path[-1] in ("containers", "items") else None


_scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["a", "b", "c"])
_names = st.sampled_from(["containers", "items", "tags", "name", "x"])
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_names, inner, max_size=4), max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_names, _json, max_size=5))
def test_a_created_document_is_one_node_per_field_and_keyed_element(
        value: dict[str, Any]) -> None:
    want = _reference_node(copy.deepcopy(value), 7, "n1", (), _keyed_paths)
    got = Document.create(copy.deepcopy(value), 7, "n1", _keyed_paths)
    assert got.root == want
    assert got.to_bytes() == orjson.dumps(want)
