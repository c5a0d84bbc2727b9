"""PodDisruptionBudget: validation and the status the disruption controller writes."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.control.disruption import DELETION_TIMEOUT, DisruptionController
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import Invalid, ObjectStore, now_rfc3339
from shoal.store.replica import Replica

REG = KindRegistry()


def kind(api_version: str, name: str) -> Kind:
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


POD, PDB, RS = kind("v1", "Pod"), kind("policy/v1", "PodDisruptionBudget"), \
    kind("apps/v1", "ReplicaSet")


class Clock:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def now(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(clock: Clock) -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1", clock=clock), REG)
    await s.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


def budget(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, **spec}}


async def pods(store: ObjectStore, n: int, ready: int, owner: dict[str, Any] | None = None,
               ) -> list[str]:
    names = []
    for i in range(n):
        meta: dict[str, Any] = {"name": f"web-{i}", "labels": {"app": "web"}}
        if owner is not None:
            meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                        "name": owner["metadata"]["name"],
                                        "uid": owner["metadata"]["uid"], "controller": True}]
        await store.create(POD, {"metadata": meta, "spec": {"containers": [
            {"name": "c", "image": "x"}]}}, "default")
        if i < ready:
            pod = copy.deepcopy(store.get(POD, "default", meta["name"]))
            pod["status"] = {"phase": "Running",
                             "conditions": [{"type": "Ready", "status": "True"}]}
            await store.update(POD, pod, "default", meta["name"], "status")
        names.append(meta["name"])
    return names


async def status(store: ObjectStore) -> dict[str, Any]:
    await DisruptionController(store).sync()
    return store.get(PDB, "default", "web")["status"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("spec", "detail"), [
    ({"minAvailable": 1, "maxUnavailable": 1}, "cannot be both set"),
    ({"minAvailable": -1}, "greater than or equal to 0"),
    ({"maxUnavailable": "120%"}, "must not be greater than 100%"),
    ({"minAvailable": "half"}, "a valid percent string"),
    ({"unhealthyPodEvictionPolicy": "Never"}, "supported values"),
])
async def test_a_bad_budget_is_refused(store: ObjectStore, spec: dict[str, Any],
                                       detail: str) -> None:
    with pytest.raises(Invalid) as e:
        await store.create(PDB, budget(**spec), "default")
    assert detail in str(e.value)


async def test_min_available_as_a_number_counts_the_matching_pods(store: ObjectStore) -> None:
    await pods(store, 3, ready=2)
    pdb = await store.create(PDB, budget(minAvailable=1), "default")
    st = await status(store)
    assert {k: st[k] for k in ("expectedPods", "desiredHealthy", "currentHealthy",
                               "disruptionsAllowed", "observedGeneration")} == {
        "expectedPods": 3, "desiredHealthy": 1, "currentHealthy": 2, "disruptionsAllowed": 1,
        "observedGeneration": pdb["metadata"]["generation"]}
    assert st["conditions"][0]["type"] == "DisruptionAllowed"


async def test_a_budget_without_pods_allows_nothing(store: ObjectStore) -> None:
    await store.create(PDB, budget(maxUnavailable=1), "default")
    st = await status(store)
    assert (st["expectedPods"], st["disruptionsAllowed"]) == (0, 0)
    assert st["conditions"][0]["reason"] == "InsufficientPods"


async def test_a_percentage_over_pods_with_no_controller_fails_safe(store: ObjectStore) -> None:
    await pods(store, 2, ready=2)
    await store.create(PDB, budget(minAvailable="50%"), "default")
    st = await status(store)
    assert st["disruptionsAllowed"] == 0
    assert st["conditions"][0]["reason"] == "SyncFailed"


async def test_max_unavailable_is_read_against_the_controllers_replicas(
        store: ObjectStore) -> None:
    rs = await store.create(RS, {"metadata": {"name": "web"}, "spec": {
        "replicas": 5, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "default")
    await pods(store, 4, ready=4, owner=rs)
    await store.create(PDB, budget(maxUnavailable="40%"), "default")
    st = await status(store)
    assert (st["expectedPods"], st["desiredHealthy"], st["currentHealthy"],
            st["disruptionsAllowed"]) == (5, 3, 4, 1)


async def test_an_evicted_pod_counts_as_disrupted_until_deleted_or_two_minutes_pass(
        store: ObjectStore, clock: Clock) -> None:
    names = await pods(store, 3, ready=3)
    await store.create(PDB, budget(minAvailable=1), "default")
    await status(store)
    pdb = copy.deepcopy(store.get(PDB, "default", "web"))
    pdb["status"]["disruptedPods"] = {names[0]: now_rfc3339(clock.t)}
    await store.update(PDB, pdb, "default", "web", "status")
    st = await status(store)
    assert (st["currentHealthy"], st["disruptionsAllowed"]) == (2, 1)
    clock.t += DELETION_TIMEOUT + 1
    st = await status(store)
    assert (st["currentHealthy"], st["disruptionsAllowed"]) == (3, 2)
    assert "disruptedPods" not in st


async def merge(src: ObjectStore, dst: ObjectStore) -> None:
    """Hand every document of ``src`` to ``dst``, as anti-entropy would."""
    for resource in src.replica.resources():
        for (ns, name), entry in src.replica.iter_entries(resource):
            result = dst.replica.merge(resource, ns, name, entry.document())
            if result is not None:
                await result[1]


async def test_two_sides_of_a_partition_each_spend_the_budget_they_see(
        store: ObjectStore, clock: Clock) -> None:
    from shoal.api.errors import ApiError
    from shoal.api.eviction import evict

    names = await pods(store, 5, ready=5)
    await store.create(PDB, budget(minAvailable=3), "default")
    assert (await status(store))["disruptionsAllowed"] == 2
    other = ObjectStore(Replica(None, "n2", clock=clock), REG)
    await merge(store, other)
    evicted: dict[str, list[str]] = {"n1": [], "n2": []}
    # Cut off from each other, each side evicts until its own copy of the budget says no.
    for side, order in ((store, names), (other, list(reversed(names)))):
        for name in order:
            pod = side.find(POD, "default", name)
            if pod is None:
                continue
            try:
                await evict(side, pod)
            except ApiError as e:
                assert e.code == 429
                break
            evicted[side.replica.node_id].append(name)
    assert [len(v) for v in evicted.values()] == [2, 2]  # each side: d = 2, no more
    await merge(store, other)
    await merge(other, store)
    st = await status(store)
    # Over-evicted by the partition (4 of 5 gone, 3 wanted), and the status says so.
    assert (st["currentHealthy"], st["desiredHealthy"], st["disruptionsAllowed"]) == (1, 3, 0)
    assert st["conditions"][0]["reason"] == "InsufficientPods"
    other.replica.close()
