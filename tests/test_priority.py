"""PriorityClass: the object's rules, the Priority admission and the built-in classes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.api.priority_admission import PriorityAdmission
from shoal.control.priority_classes import ensure_system_priority_classes
from shoal.model.kinds import KindRegistry
from shoal.store.objects import Forbidden, Invalid, ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
POD, PC, NS = (REG.by_kind("v1", "Pod"), REG.by_kind("scheduling.k8s.io/v1", "PriorityClass"),
               REG.by_kind("v1", "Namespace"))
assert POD is not None and PC is not None and NS is not None


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1"), REG)
    s.admission.append(PriorityAdmission(s.replica))
    await s.create(NS, {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


def pod(name: str = "p", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "x"}], **spec}}


def pc(name: str, value: int, **more: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "value": value, **more}


async def test_a_pods_class_sets_its_priority_and_preemption_policy(store: ObjectStore) -> None:
    await store.create(PC, pc("high", 1000, preemptionPolicy="Never"))
    made = await store.create(POD, pod(priorityClassName="high"), "default")
    assert (made["spec"]["priority"], made["spec"]["preemptionPolicy"]) == (1000, "Never")


async def test_the_built_in_classes_exist_and_resolve(store: ObjectStore) -> None:
    made = await store.create(POD, pod(priorityClassName="system-node-critical"), "default")
    assert made["spec"]["priority"] == 2_000_001_000
    await ensure_system_priority_classes(store)
    await ensure_system_priority_classes(store)  # a second peer's start changes nothing
    assert sorted(p["metadata"]["name"] for p in store.list(PC)) == [
        "system-cluster-critical", "system-node-critical"]


async def test_the_global_default_applies_to_pods_naming_no_class(store: ObjectStore) -> None:
    plain = await store.create(POD, pod("before"), "default")
    assert plain["spec"]["priority"] == 0 and "priorityClassName" not in plain["spec"]
    await store.create(PC, pc("normal", 100, globalDefault=True))
    made = await store.create(POD, pod("after"), "default")
    assert (made["spec"]["priorityClassName"], made["spec"]["priority"]) == ("normal", 100)
    with pytest.raises(Forbidden, match="PriorityClass normal is already marked as default"):
        await store.create(PC, pc("other", 5, globalDefault=True))


@pytest.mark.parametrize(("spec", "message"), [
    ({"priorityClassName": "nope"}, "no PriorityClass with name nope was found"),
    ({"priorityClassName": "high", "priority": 7},
     "the integer value of priority (7) must not be provided in pod spec; priority admission "
     "controller computed 1000 from the given PriorityClass name"),
])
async def test_a_pod_with_an_unknown_class_or_its_own_priority_is_forbidden(
        store: ObjectStore, spec: dict[str, Any], message: str) -> None:
    await store.create(PC, pc("high", 1000))
    with pytest.raises(Forbidden) as e:
        await store.create(POD, pod(**spec), "default")
    assert e.value.message == f'pods "p" is forbidden: {message}'


@pytest.mark.parametrize(("obj", "field"), [
    (pc("system-mine", 10), "metadata.name"),
    (pc("huge", 1_000_000_001), "value"),
    ({"metadata": {"name": "none"}}, "value"),
    (pc("odd", 1, preemptionPolicy="Sometimes"), "preemptionPolicy"),
])
async def test_a_bad_priority_class_is_a_422(store: ObjectStore, obj: dict[str, Any],
                                             field: str) -> None:
    with pytest.raises(Invalid) as e:
        await store.create(PC, obj)
    assert field in [c.field for c in e.value.causes]


async def test_a_class_value_cannot_change(store: ObjectStore) -> None:
    made = await store.create(PC, pc("high", 1000))
    with pytest.raises(Invalid, match="may not be changed in an update"):
        await store.update(PC, made | {"value": 5}, None, "high")
