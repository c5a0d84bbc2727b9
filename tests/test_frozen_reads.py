"""Stored objects are read-only for callers when reads are frozen (as tests run them):
a caller that changes one in place fails at once instead of changing memory unseen."""

from __future__ import annotations

import copy
import pickle

import orjson
import pytest

from shoal.model.kinds import KindRegistry
from shoal.store.frozen import FrozenDict, freeze, thaw
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica


@pytest.fixture
async def store() -> ObjectStore:
    s = ObjectStore(Replica(None, "n1"), KindRegistry())
    s.freeze_reads = True
    await s.create(s.registry.by_kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    return s


async def test_changing_a_read_object_in_place_fails_and_the_replica_keeps_its_value(
        store: ObjectStore) -> None:
    cm = store.registry.by_kind("v1", "ConfigMap")
    await store.create(cm, {"metadata": {"name": "c"}, "data": {"k": "v"}}, "default")
    got = store.get(cm, "default", "c")
    with pytest.raises(TypeError, match="read-only"):
        got["data"]["k"] = "changed"
    with pytest.raises(TypeError):
        got["metadata"].setdefault("labels", {})
    with pytest.raises(TypeError):
        store.list(cm)[0]["data"].update(k="changed")
    assert store.replica.get("configmaps", "default", "c")["data"] == {"k": "v"}  # type: ignore[index]


async def test_a_deep_copy_of_a_read_object_is_writable_and_updates_as_usual(
        store: ObjectStore) -> None:
    cm = store.registry.by_kind("v1", "ConfigMap")
    await store.create(cm, {"metadata": {"name": "c"}, "data": {"k": "v"}}, "default")
    mine = copy.deepcopy(store.get(cm, "default", "c"))
    assert type(mine) is dict and type(mine["data"]) is dict
    mine["data"]["k"] = "w"
    await store.update(cm, mine, "default", "c")
    assert store.get(cm, "default", "c")["data"] == {"k": "w"}


def test_a_frozen_value_reads_serializes_and_pickles_as_the_plain_one() -> None:
    plain = {"a": [1, {"b": None}], "c": {"d": "e"}}
    frozen = freeze(plain)
    assert isinstance(frozen, FrozenDict) and frozen == plain
    assert orjson.dumps(frozen) == orjson.dumps(plain)
    assert pickle.loads(pickle.dumps(frozen)) == plain
    assert thaw(frozen) == plain and type(thaw(frozen)["a"]) is list
    with pytest.raises(TypeError):
        frozen["a"].append(2)
