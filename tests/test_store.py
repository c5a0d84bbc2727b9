"""The replica and the object semantics, in process: revisions, restarts, status, deletion."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.control.garbage_collector import GarbageCollector
from shoal.control.namespace_lifecycle import NamespaceLifecycle
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.change_feed import ChangeFeed, Expired
from shoal.store.objects import AlreadyExists, Conflict, Forbidden, Invalid, NotFound, ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()


def kind(api_version: str, k: str) -> Kind:
    found = REG.by_kind(api_version, k)
    assert found is not None
    return found


NS = kind("v1", "Namespace")
CM = kind("v1", "ConfigMap")
POD = kind("v1", "Pod")
DEPLOY = kind("apps/v1", "Deployment")
RS = kind("apps/v1", "ReplicaSet")


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}},
        },
    }


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    replica = Replica(tmp_path / "data", "n1")
    s = ObjectStore(replica, REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    yield s
    replica.close()


async def test_each_write_takes_the_next_revision_and_it_is_the_resource_version(
    store: ObjectStore,
) -> None:
    a = await store.create(CM, {"metadata": {"name": "a"}, "data": {"k": "1"}}, "default")
    b = await store.create(CM, {"metadata": {"name": "b"}}, "default")
    assert int(b["metadata"]["resourceVersion"]) == int(a["metadata"]["resourceVersion"]) + 1
    assert store.replica.revision == int(b["metadata"]["resourceVersion"])


async def test_a_restarted_replica_has_every_object_and_continues_its_revision(tmp_path: Path) -> None:
    r = Replica(tmp_path / "d", "n1")
    s = ObjectStore(r, REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    made = await s.create(CM, {"metadata": {"name": "kept"}, "data": {"k": "v"}}, "default")
    await s.delete(CM, "default", "kept")
    await s.create(CM, {"metadata": {"name": "kept"}, "data": {"k": "again"}}, "default")
    rev = r.revision
    r.close()
    r2 = Replica(tmp_path / "d", "n1")
    s2 = ObjectStore(r2, REG)
    assert s2.get(CM, "default", "kept")["data"] == {"k": "again"}
    assert s2.get(CM, "default", "kept")["metadata"]["uid"] != made["metadata"]["uid"]
    assert r2.revision == rev
    nxt = await s2.create(CM, {"metadata": {"name": "next"}}, "default")
    assert int(nxt["metadata"]["resourceVersion"]) == rev + 1
    r2.close()


async def test_creating_an_existing_name_is_already_exists(store: ObjectStore) -> None:
    await store.create(CM, {"metadata": {"name": "dup"}}, "default")
    with pytest.raises(AlreadyExists):
        await store.create(CM, {"metadata": {"name": "dup"}}, "default")


async def test_generate_name_gives_a_fresh_name_with_the_prefix(store: ObjectStore) -> None:
    a = await store.create(CM, {"metadata": {"generateName": "web-"}}, "default")
    b = await store.create(CM, {"metadata": {"generateName": "web-"}}, "default")
    assert a["metadata"]["name"].startswith("web-") and a["metadata"]["name"] != b["metadata"]["name"]


async def test_creating_in_a_missing_namespace_is_not_found(store: ObjectStore) -> None:
    with pytest.raises(NotFound):
        await store.create(CM, {"metadata": {"name": "x"}}, "nowhere")


async def test_generation_moves_on_spec_changes_only(store: ObjectStore) -> None:
    d = copy.deepcopy(await store.create(DEPLOY, deployment("web"), "default"))
    assert d["metadata"]["generation"] == 1
    d["metadata"]["labels"] = {"x": "y"}
    d = copy.deepcopy(await store.update(DEPLOY, d, "default", "web"))
    assert d["metadata"]["generation"] == 1
    d["spec"]["replicas"] = 3
    d = await store.update(DEPLOY, d, "default", "web")
    assert d["metadata"]["generation"] == 2


async def test_an_update_that_changes_nothing_keeps_the_resource_version(store: ObjectStore) -> None:
    d = await store.create(DEPLOY, deployment("same"), "default")
    again = await store.update(DEPLOY, d, "default", "same")
    assert again["metadata"]["resourceVersion"] == d["metadata"]["resourceVersion"]


async def test_a_stale_resource_version_is_a_conflict(store: ObjectStore) -> None:
    d = await store.create(DEPLOY, deployment("race"), "default")
    d2 = dict(d, spec={**d["spec"], "replicas": 2})
    await store.update(DEPLOY, d2, "default", "race")
    d3 = dict(d, spec={**d["spec"], "replicas": 5})
    with pytest.raises(Conflict):
        await store.update(DEPLOY, d3, "default", "race")
    assert store.get(DEPLOY, "default", "race")["spec"]["replicas"] == 2


async def test_status_and_spec_are_written_through_their_own_paths(store: ObjectStore) -> None:
    d = await store.create(DEPLOY, deployment("split"), "default")
    with_status = dict(d, status={"replicas": 7})
    after_main = await store.update(DEPLOY, with_status, "default", "split")
    assert "status" not in after_main or after_main["status"].get("replicas") != 7
    after_status = await store.update(DEPLOY, with_status, "default", "split", "status")
    assert after_status["status"] == {"replicas": 7}
    changed_spec = dict(after_status, spec={**after_status["spec"], "replicas": 9})
    after = await store.update(DEPLOY, changed_spec, "default", "split", "status")
    assert after["spec"]["replicas"] == 1, "the status subresource ignores spec changes"


async def test_a_status_write_shares_the_spec_with_the_version_before_and_copies_the_status(
        store: ObjectStore) -> None:
    d = await store.create(DEPLOY, deployment("shared"), "default")
    condition = {"type": "Available", "status": "True"}
    status: dict[str, Any] = {"replicas": 3, "conditions": [condition]}
    after = await store.update(DEPLOY, dict(d, status=status), "default", "shared", "status")
    assert after["spec"] is d["spec"], "one copy of the spec for both versions"
    condition["status"] = "False"  # the caller's dict, changed after the write
    assert after["status"]["conditions"][0]["status"] == "True"
    assert after["metadata"] is not d["metadata"]
    changed = copy.deepcopy(after)
    changed["spec"]["replicas"] = 5
    newest = await store.update(DEPLOY, changed, "default", "shared")
    assert newest["spec"]["replicas"] == 5 and after["spec"]["replicas"] == 1
    assert d["spec"]["replicas"] == 1, "the older version is unchanged"


async def test_an_invalid_object_is_rejected_and_nothing_is_stored(store: ObjectStore) -> None:
    bad = deployment("bad")
    del bad["spec"]["template"]["spec"]["containers"][0]["image"]
    rev = store.replica.revision
    with pytest.raises(Invalid) as e:
        await store.create(DEPLOY, bad, "default")
    assert any(c.field == "spec.template.spec.containers[0].image" for c in e.value.causes)
    assert store.replica.revision == rev
    assert store.find(DEPLOY, "default", "bad") is None


async def test_finalizers_hold_an_object_until_they_are_removed(store: ObjectStore) -> None:
    await store.create(CM, {"metadata": {"name": "held", "finalizers": ["example.com/x"]}}, "default")
    obj, gone = await store.delete(CM, "default", "held")
    assert not gone and obj["metadata"]["deletionTimestamp"]
    obj = copy.deepcopy(obj)
    obj["metadata"]["finalizers"] = []
    await store.update(CM, obj, "default", "held")
    assert store.find(CM, "default", "held") is None


def _owned(name: str, owner: dict[str, Any]) -> dict[str, Any]:
    rs = deployment(name)
    rs["metadata"]["ownerReferences"] = [{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    return rs


async def _settle(ctrl: Any, rounds: int = 10) -> None:
    for _ in range(rounds):
        if not await ctrl.sync():
            return
        await asyncio.sleep(0)


async def test_background_deletion_collects_the_dependents(store: ObjectStore) -> None:
    owner = await store.create(DEPLOY, deployment("own-bg"), "default")
    await store.create(RS, _owned("own-bg-rs", owner), "default")
    _, gone = await store.delete(DEPLOY, "default", "own-bg", propagation="Background")
    assert gone
    await _settle(GarbageCollector(store))
    assert store.find(RS, "default", "own-bg-rs") is None


async def test_foreground_deletion_removes_dependents_before_the_owner(store: ObjectStore) -> None:
    owner = await store.create(DEPLOY, deployment("own-fg"), "default")
    await store.create(RS, _owned("own-fg-rs", owner), "default")
    _, gone = await store.delete(DEPLOY, "default", "own-fg", propagation="Foreground")
    assert not gone
    assert store.find(DEPLOY, "default", "own-fg") is not None
    await _settle(GarbageCollector(store))
    assert store.find(RS, "default", "own-fg-rs") is None
    assert store.find(DEPLOY, "default", "own-fg") is None


async def test_orphan_deletion_keeps_the_dependents_without_their_owner(store: ObjectStore) -> None:
    owner = await store.create(DEPLOY, deployment("own-or"), "default")
    await store.create(RS, _owned("own-or-rs", owner), "default")
    await store.delete(DEPLOY, "default", "own-or", propagation="Orphan")
    await _settle(GarbageCollector(store))
    assert store.find(DEPLOY, "default", "own-or") is None
    rs = store.get(RS, "default", "own-or-rs")
    assert not rs["metadata"].get("ownerReferences")


async def test_a_terminating_namespace_is_emptied_then_removed(store: ObjectStore) -> None:
    await store.create(NS, {"metadata": {"name": "tmp"}})
    await store.create(CM, {"metadata": {"name": "c"}}, "tmp")
    _, gone = await store.delete(NS, None, "tmp")
    assert not gone
    assert store.get(NS, None, "tmp")["status"]["phase"] == "Terminating"
    with pytest.raises(Forbidden):
        await store.create(CM, {"metadata": {"name": "late"}}, "tmp")
    await _settle(NamespaceLifecycle(store))
    assert store.find(CM, "tmp", "c") is None
    assert store.find(NS, None, "tmp") is None


async def test_watchers_hear_of_changes_only_once_they_are_durable_and_in_order(
    store: ObjectStore,
) -> None:
    sub = store.replica.subscribe(lambda c: c.resource == "configmaps")
    made = await asyncio.gather(*[
        store.create(CM, {"metadata": {"name": f"w{i}"}}, "default") for i in range(20)])
    seen = [sub.queue.get_nowait() for _ in range(20)]
    assert [c.rv for c in seen] == sorted(int(m["metadata"]["resourceVersion"]) for m in made)
    sub.close()


def test_a_change_feed_lets_go_of_changes_older_than_its_history_beyond_the_last_few() -> None:
    from shoal.store.change_feed import Change

    now = [0.0]
    feed = ChangeFeed(history_seconds=300, min_kept=2, clock=lambda: now[0])
    for rv in range(1, 5):
        feed.publish(Change("ADDED", "configmaps", "default", f"c{rv}", rv, {"v": rv}, None))
    now[0] = 200.0
    feed.publish(Change("ADDED", "configmaps", "default", "c5", 5, {}, None))
    assert [c.rv for c in feed.since(0, lambda c: True)] == [1, 2, 3, 4, 5], "all recent"
    now[0] = 301.0
    assert [c.rv for c in feed.since(3, lambda c: True)] == [4, 5]
    with pytest.raises(Expired):
        feed.since(2, lambda c: True)  # changes 1 to 3 were let go (4 is one of the last 2)
    now[0] = 10_000.0
    feed.publish(Change("MODIFIED", "configmaps", "default", "c5", 6, {}, {}))
    assert feed.oldest_rv == 4 and [c.rv for c in feed.since(4, lambda c: True)] == [5, 6]


def test_a_change_feed_that_dropped_old_changes_refuses_a_watch_from_before_them() -> None:
    from shoal.store.change_feed import Change

    feed = ChangeFeed(capacity=3)
    for rv in range(1, 6):
        feed.publish(Change("ADDED", "configmaps", "default", f"c{rv}", rv, {}, None))
    with pytest.raises(Expired):
        feed.since(1, lambda c: True)
    assert [c.rv for c in feed.since(3, lambda c: True)] == [4, 5]
