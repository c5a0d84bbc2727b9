"""Preemption: a pending pod that fits nowhere evicts the fewest, lowest-priority pods."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shoal.api.priority_admission import PriorityAdmission
from shoal.control.scheduler import Snapshot, default_profile, schedule
from shoal.control.scheduler.plugins.default_preemption import preempt
from shoal.control.scheduler.testing import make_node, make_pod
from shoal.control.scheduling import Scheduler
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
POD, NODE, PC = (REG.by_kind("v1", "Pod"), REG.by_kind("v1", "Node"),
                 REG.by_kind("scheduling.k8s.io/v1", "PriorityClass"))
assert POD is not None and NODE is not None and PC is not None
PROFILE = default_profile()


def pod(name: str, cpu: str, prio: int, node: str | None = None, **spec: Any) -> dict[str, Any]:
    return make_pod(name, requests={"cpu": cpu}, node_name=node, priority=prio, **spec)


def plan(pending: dict[str, Any], nodes: list[dict[str, Any]], bound: list[dict[str, Any]],
         budgets: tuple[dict[str, Any], ...] = ()) -> tuple[str, list[str]] | None:
    snapshot = Snapshot(nodes, bound)
    result = schedule(pending, snapshot, PROFILE)
    assert not result.scheduled
    found = preempt(pending, snapshot, PROFILE, result, budgets)
    return None if found is None else (found.node_name, [v["metadata"]["name"] for v in
                                                          found.victims])


def test_the_node_whose_victims_matter_least_is_chosen_and_only_as_many_as_needed() -> None:
    nodes = [make_node("a", allocatable={"cpu": "2", "pods": 10}),
             make_node("b", allocatable={"cpu": "2", "pods": 10})]
    bound = [pod("a-low", "1", 10, "a"), pod("a-mid", "1", 50, "a"),
             pod("b-mid1", "1", 50, "b"), pod("b-mid2", "1", 50, "b")]
    assert plan(pod("urgent", "1", 100), nodes, bound) == ("a", ["a-low"])
    # Needing both cores of a node: a's pair (10 + 50) beats b's (50 + 50).
    assert plan(pod("big", "2", 100), nodes, bound) == ("a", ["a-mid", "a-low"])


def test_a_node_whose_victims_no_budget_protects_is_preferred() -> None:
    nodes = [make_node("a", allocatable={"cpu": "1", "pods": 10}),
             make_node("b", allocatable={"cpu": "1", "pods": 10})]
    bound = [pod("a-low", "1", 10, "a") | {"metadata": {
        "name": "a-low", "namespace": "default", "uid": "a", "labels": {"app": "db"}}},
        pod("b-mid", "1", 20, "b")]
    assert plan(pod("urgent", "1", 100), nodes, bound) == ("a", ["a-low"])
    budget = {"metadata": {"name": "db", "namespace": "default", "uid": "pdb"},
              "spec": {"selector": {"matchLabels": {"app": "db"}}},
              "status": {"disruptionsAllowed": 0}}
    assert plan(pod("urgent", "1", 100), nodes, bound, (budget,)) == ("b", ["b-mid"])


def test_nothing_is_preempted_for_an_equal_priority_or_a_never_policy() -> None:
    nodes = [make_node("a", allocatable={"cpu": "1", "pods": 10})]
    bound = [pod("there", "1", 100, "a")]
    assert plan(pod("same", "1", 100), nodes, bound) is None
    assert plan(pod("polite", "1", 1000, preemptionPolicy="Never"), nodes, bound) is None


def test_a_node_that_cannot_fit_whatever_leaves_is_not_a_candidate() -> None:
    nodes = [make_node("a", allocatable={"cpu": "1", "pods": 10})]
    assert plan(pod("huge", "2", 100), nodes, [pod("low", "500m", 0, "a")]) is None


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "n1"), REG)
    s.admission.append(PriorityAdmission(s.replica))
    ns = REG.by_kind("v1", "Namespace")
    assert ns is not None
    await s.create(ns, {"metadata": {"name": "default"}})
    yield s
    s.replica.close()


async def one_core_node_and_a_critical_class(store: ObjectStore) -> dict[str, Any]:
    """A ready node with 1 cpu, the class ``critical`` (1000); returns a pod spec asking 800m."""
    assert NODE is not None and PC is not None
    await store.create(NODE, {"metadata": {"name": "pi-1"}})
    node = copy.deepcopy(store.get(NODE, None, "pi-1"))
    alloc = {"cpu": "1", "memory": "4Gi", "pods": "110"}
    node["status"] = {"allocatable": alloc, "capacity": alloc,
                      "conditions": [{"type": "Ready", "status": "True"}]}
    await store.update(NODE, node, None, "pi-1", "status")
    await store.create(PC, {"metadata": {"name": "critical"}, "value": 1000})
    return {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "800m"}}}]}


async def test_the_scheduler_evicts_the_victim_nominates_the_node_then_binds(
        store: ObjectStore) -> None:
    assert POD is not None
    spec = await one_core_node_and_a_critical_class(store)
    await store.create(POD, {"metadata": {"name": "batch"}, "spec": spec}, "default")
    scheduler = Scheduler(store)
    await scheduler.sync()
    assert store.get(POD, "default", "batch")["spec"]["nodeName"] == "pi-1"
    await store.create(POD, {"metadata": {"name": "vital"}, "spec": spec | {
        "priorityClassName": "critical"}}, "default")
    await scheduler.sync()
    victim = store.get(POD, "default", "batch")
    assert victim["metadata"].get("deletionTimestamp")  # graceful: its node stops it
    vital = store.get(POD, "default", "vital")
    assert vital["status"]["nominatedNodeName"] == "pi-1" and "nodeName" not in vital["spec"]
    events = [e for e in store.list(REG.by_kind("v1", "Event"), "default")  # type: ignore[arg-type]
              if e["reason"] == "Preempted"]
    assert events[0]["involvedObject"]["name"] == "batch"
    await scheduler.sync()  # the victim is still leaving: nothing more is evicted
    await store.delete(POD, "default", "batch", grace_period=0)
    await scheduler.sync()
    vital = store.get(POD, "default", "vital")
    assert vital["spec"]["nodeName"] == "pi-1" and "nominatedNodeName" not in vital["status"]


async def test_the_highest_priority_pending_pod_is_scheduled_first(store: ObjectStore) -> None:
    assert POD is not None
    spec = await one_core_node_and_a_critical_class(store)
    await store.create(POD, {"metadata": {"name": "first"}, "spec": spec}, "default")
    await store.create(POD, {"metadata": {"name": "vital"}, "spec": spec | {
        "priorityClassName": "critical"}}, "default")
    await Scheduler(store).sync()
    assert store.get(POD, "default", "vital")["spec"].get("nodeName") == "pi-1"
    assert "nodeName" not in store.get(POD, "default", "first")["spec"]
