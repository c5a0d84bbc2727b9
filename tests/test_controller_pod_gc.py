"""PodGC: `kubectl delete node` takes the node's pods with it, after a quarantine."""

from __future__ import annotations

import copy
from typing import Any

from shoal.control.ownership import SinglePeer
from shoal.control.pod_gc import MESSAGE, REASON, PodGC
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import FixedView, ManualClock

REG = KindRegistry()
POD, NODE, NS = REG.by_kind("v1", "Pod"), REG.by_kind("v1", "Node"), REG.by_kind("v1", "Namespace")
assert POD is not None and NODE is not None and NS is not None


async def _store(clock: ManualClock) -> ObjectStore:
    s = ObjectStore(Replica(None, "p", clock), REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    return s


async def bound_pod(s: ObjectStore, name: str, node: str, **meta: Any) -> None:
    await s.create(POD, {"metadata": {"name": name, **meta}, "spec": {
        "containers": [{"name": "c", "image": "x"}]}}, "default")
    p = copy.deepcopy(s.get(POD, "default", name))
    p["spec"]["nodeName"] = node
    await s.update(POD, p, "default", name, "binding", check_rv=False)


def names(s: ObjectStore) -> set[str]:
    return {p["metadata"]["name"] for p in s.list(POD, "default")}


async def test_the_pods_of_a_deleted_node_go_after_the_quarantine_and_others_stay() -> None:
    clock = ManualClock()
    s = await _store(clock)
    try:
        for n in ("gone", "here"):
            await s.create(NODE, {"metadata": {"name": n}})
        await bound_pod(s, "orphan", "gone")
        await bound_pod(s, "kept", "here")
        await s.create(POD, {"metadata": {"name": "pending"}, "spec": {
            "containers": [{"name": "c", "image": "x"}]}}, "default")
        await s.delete(NODE, None, "gone")
        gc = PodGC(s, SinglePeer("p"), quarantine=40.0)
        await gc.sync()
        assert names(s) == {"orphan", "kept", "pending"}  # the quarantine has just begun
        clock.t += 39.0
        await gc.sync()
        assert "orphan" in names(s)
        clock.t += 2.0
        await gc.sync()
        assert names(s) == {"kept", "pending"}
        assert gc.deleted == 1
    finally:
        s.replica.close()


async def test_a_node_this_replica_never_held_gets_a_longer_wait_than_a_deleted_one() -> None:
    clock = ManualClock()
    s = await _store(clock)
    try:
        await s.create(NODE, {"metadata": {"name": "deleted"}})
        await bound_pod(s, "of-deleted", "deleted")
        await s.delete(NODE, None, "deleted")
        await bound_pod(s, "of-unknown", "not-here-yet")  # e.g. a peer's first pull
        gc = PodGC(s, SinglePeer("p"), quarantine=40.0, never_seen_wait=300.0)
        await gc.sync()
        clock.t += 41.0
        await gc.sync()
        assert names(s) == {"of-unknown"}
        clock.t += 260.0
        await gc.sync()
        assert names(s) == set()
    finally:
        s.replica.close()


async def test_a_pod_whose_node_has_not_arrived_yet_is_not_deleted_when_the_node_comes() -> None:
    clock = ManualClock()
    s = await _store(clock)
    try:
        await bound_pod(s, "early", "late-node")  # the pod replicated before its Node
        gc = PodGC(s, SinglePeer("p"), quarantine=40.0)
        await gc.sync()
        clock.t += 30.0
        await s.create(NODE, {"metadata": {"name": "late-node"}})
        await gc.sync()
        clock.t += 30.0  # 60 s after the pod was first seen: the node's arrival reset the clock
        await gc.sync()
        assert names(s) == {"early"}
        assert gc.missing_since == {}
    finally:
        s.replica.close()


async def test_a_node_deleted_and_registered_again_within_the_quarantine_keeps_its_pods() -> None:
    clock = ManualClock()
    s = await _store(clock)
    try:
        await s.create(NODE, {"metadata": {"name": "n"}})
        await bound_pod(s, "web", "n")
        gc = PodGC(s, SinglePeer("p"), quarantine=40.0)
        await s.delete(NODE, None, "n")
        await gc.sync()
        clock.t += 10.0  # the node's next heartbeat registers it again
        await s.create(NODE, {"metadata": {"name": "n"}})
        await gc.sync()
        clock.t += 60.0
        await gc.sync()
        assert names(s) == {"web"}
    finally:
        s.replica.close()


async def test_a_pod_kept_by_a_finalizer_is_marked_failed_with_the_podgc_condition() -> None:
    clock = ManualClock()
    s = await _store(clock)
    try:
        await bound_pod(s, "held", "ghost", finalizers=["example.com/keep"])
        gc = PodGC(s, SinglePeer("p"), quarantine=5.0, never_seen_wait=5.0)
        await gc.sync()
        clock.t += 6.0
        await gc.sync()
        pod = s.get(POD, "default", "held")
        assert pod["metadata"].get("deletionTimestamp")
        assert pod["status"]["phase"] == "Failed"
        cond = next(c for c in pod["status"]["conditions"] if c["type"] == "DisruptionTarget")
        assert (cond["status"], cond["reason"], cond["message"]) == ("True", REASON, MESSAGE)
    finally:
        s.replica.close()


async def test_only_the_preferred_actor_collects_while_it_is_reachable() -> None:
    from shoal.control.ownership import preferred_actor

    peers = ["p1", "p2", "p3"]
    actor = preferred_actor("pod-gc/ghost", peers)
    bystander = next(p for p in peers if p != actor)
    clock = ManualClock()
    s = await _store(clock)
    try:
        await bound_pod(s, "orphan", "ghost")
        gc = PodGC(s, FixedView(bystander, peers), quarantine=1.0, never_seen_wait=1.0)
        await gc.sync()
        clock.t += 2.0
        await gc.sync()
        assert names(s) == {"orphan"}  # the actor is alive: it is its job
        gc.view = FixedView(bystander, [p for p in peers if p != actor])
        await gc.sync()
        assert names(s) == set()  # the actor is unreachable: anyone acts
    finally:
        s.replica.close()
