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


# -- a pod of a scope whose node is no longer a member of the scope ---------------------------

SCOPE = REG.by_kind("shoal.dev/v1alpha1", "Scope")
EVENT = REG.by_kind("v1", "Event")
RS = REG.by_kind("apps/v1", "ReplicaSet")
assert SCOPE is not None and EVENT is not None and RS is not None


def _tenant(members: list[str], writers: list[str] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"namespaces": ["team-a"], "members": members}
    if writers is not None:
        spec["writers"] = writers
    return {"apiVersion": "shoal.dev/v1alpha1", "kind": "Scope",
            "metadata": {"name": "tenant-a"}, "spec": spec}


async def _scoped_store(me: str, clock: ManualClock, writers: list[str] | None = None,
                        ) -> ObjectStore:
    s = ObjectStore(Replica(None, me, clock), REG)
    for ns in ("default", "team-a"):
        await s.create(NS, {"metadata": {"name": ns}})
    for n in ("m1", "m3", "m4"):
        await s.create(NODE, {"metadata": {"name": n}, "status": {
            "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})
    await s.create(SCOPE, _tenant(["m1", "m3", "m4"], writers))
    return s


async def _pod_on(s: ObjectStore, ns: str, name: str, node: str, phase: str = "Running",
                  **meta: Any) -> None:
    await s.create(POD, {"metadata": {"name": name, **meta}, "spec": {
        "containers": [{"name": "c", "image": "x"}]}}, ns)
    p = copy.deepcopy(s.get(POD, ns, name))
    p["spec"]["nodeName"] = node
    await s.update(POD, p, ns, name, "binding", check_rv=False)
    p = copy.deepcopy(s.get(POD, ns, name))
    p["status"] = {"phase": phase}
    await s.update(POD, p, ns, name, "status", check_rv=False)


async def _set_members(s: ObjectStore, members: list[str]) -> None:
    obj = copy.deepcopy(s.get(SCOPE, None, "tenant-a"))
    obj["spec"]["members"] = members
    await s.update(SCOPE, obj, None, "tenant-a")


def _in(s: ObjectStore, ns: str) -> set[str]:
    return {p["metadata"]["name"] for p in s.list(POD, ns)}


async def test_a_scope_pod_on_a_node_removed_from_the_scope_is_failed_and_deleted() -> None:
    from shoal.control.pod_gc import NOT_IN_SCOPE

    clock = ManualClock()
    s = await _scoped_store("m1", clock)
    try:
        await _pod_on(s, "team-a", "lost", "m4")
        await _pod_on(s, "team-a", "held", "m4", finalizers=["example.com/keep"])
        await _pod_on(s, "team-a", "done", "m4", phase="Succeeded")
        await _pod_on(s, "team-a", "stays", "m3")
        await _pod_on(s, "default", "open", "m4")  # the cluster scope: m4 still holds it
        gc = PodGC(s, FixedView("m1", ["m1", "m3", "m4"]), out_of_scope_wait=15.0)
        await gc.sync()
        assert gc.out_of_scope_since == {}, "m4 is a member"
        await _set_members(s, ["m1", "m3"])
        assert gc.relevant(_change_of(s)), "a Scope change wakes PodGC"
        await gc.sync()
        clock.t += 14.0
        await gc.sync()
        assert _in(s, "team-a") == {"lost", "held", "done", "stays"}, "still within the wait"
        clock.t += 2.0
        await gc.sync()
        assert _in(s, "team-a") == {"held", "done", "stays"}
        assert _in(s, "default") == {"open"}
        held = s.get(POD, "team-a", "held")
        assert held["metadata"].get("deletionTimestamp")
        assert (held["status"]["phase"], held["status"]["reason"]) == ("Failed", NOT_IN_SCOPE)
        cond = next(c for c in held["status"]["conditions"] if c["type"] == "DisruptionTarget")
        assert (cond["reason"], cond["message"]) == (
            REASON, "PodGC: node m4 is not a member of scope tenant-a")
        assert s.get(POD, "team-a", "done")["status"]["phase"] == "Succeeded"
        reasons = {(e["involvedObject"]["name"], e["reason"], e["type"])
                   for e in s.list(EVENT, "team-a")}
        assert {("lost", NOT_IN_SCOPE, "Warning"), ("held", NOT_IN_SCOPE, "Warning")} <= reasons
    finally:
        s.replica.close()


def _change_of(s: ObjectStore) -> Any:
    from shoal.store.change_feed import Change

    obj = s.get(SCOPE, None, "tenant-a")
    return Change("MODIFIED", "scopes.shoal.dev", "", "tenant-a", 0, obj, obj)


async def test_a_scope_edit_undone_within_the_wait_keeps_the_pods() -> None:
    clock = ManualClock()
    s = await _scoped_store("m1", clock)
    try:
        await _pod_on(s, "team-a", "web", "m4")
        gc = PodGC(s, FixedView("m1", ["m1", "m3", "m4"]), out_of_scope_wait=15.0)
        await _set_members(s, ["m1", "m3"])
        await gc.sync()
        clock.t += 10.0
        await _set_members(s, ["m1", "m3", "m4"])  # undone: m4 never stopped being a member
        await gc.sync()
        clock.t += 10.0
        await _set_members(s, ["m1", "m3"])  # removed again: the clock starts again
        await gc.sync()
        clock.t += 10.0
        await gc.sync()
        assert _in(s, "team-a") == {"web"}
        clock.t += 6.0
        await gc.sync()
        assert _in(s, "team-a") == set()
    finally:
        s.replica.close()


async def test_only_a_writer_of_the_scope_collects_its_lost_pods() -> None:
    from shoal.control.ownership import preferred_actor

    for me in ("m1", "m3"):
        clock = ManualClock()
        s = await _scoped_store(me, clock, writers=["m1", "m3"])
        try:
            await _pod_on(s, "team-a", "web", "m4")
            await _set_members(s, ["m1", "m3"])
            gc = PodGC(s, FixedView(me, ["m1", "m3", "m4"]), out_of_scope_wait=1.0)
            await gc.sync()
            clock.t += 2.0
            await gc.sync()
            collected = _in(s, "team-a") == set()
            assert collected == (me == preferred_actor("pod-gc/m4", ["m1", "m3"]))
        finally:
            s.replica.close()


async def test_a_replica_set_replaces_its_pods_lost_with_a_node_that_left_the_scope() -> None:
    from shoal.control.replicaset import ReplicaSetController
    from shoal.control.scheduling import Scheduler

    clock = ManualClock()
    s = await _scoped_store("m1", clock)
    try:
        await s.create(RS, {"metadata": {"name": "aw"}, "spec": {
            "replicas": 6, "selector": {"matchLabels": {"app": "aw"}},
            "template": {"metadata": {"labels": {"app": "aw"}},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "team-a")
        alone = FixedView("m1", ["m1"])
        rs, scheduler = ReplicaSetController(s, alone), Scheduler(s, alone)
        scheduler._started = -1e9  # long started: no catch-up wait for other peers' Nodes
        await rs.sync()
        await scheduler.sync()

        def bound() -> list[str]:
            return sorted(p["spec"].get("nodeName") or "" for p in s.list(POD, "team-a")
                          if not p["metadata"].get("deletionTimestamp"))

        assert "m4" in bound(), bound()
        await _set_members(s, ["m1", "m3"])
        gc = PodGC(s, alone, out_of_scope_wait=15.0)
        await gc.sync()
        clock.t += 16.0
        await gc.sync()
        assert gc.deleted > 0 and "m4" not in bound()
        await rs.sync()
        await scheduler.sync()
        assert len(bound()) == 6 and set(bound()) <= {"m1", "m3"}, bound()
    finally:
        s.replica.close()


async def _set_spec(s: ObjectStore, **spec: Any) -> None:
    obj = copy.deepcopy(s.get(SCOPE, None, "tenant-a"))
    obj["spec"] = spec
    await s.update(SCOPE, obj, None, "tenant-a")


async def _watching(s: ObjectStore) -> tuple[PodGC, Any]:
    """m1's PodGC after a pass that finds no pod out of its scope, and a subscription to
    the changes that wake it."""
    gc = PodGC(s, FixedView("m1", ["m1", "m3", "m4"]), out_of_scope_wait=15.0)
    await gc.sync()
    assert gc.out_of_scope_since == {}
    return gc, s.replica.subscribe(gc.relevant)


async def test_a_node_relabelled_out_of_a_member_selector_wakes_pod_gc_and_loses_its_pods(
) -> None:
    """Found in review: only a Node's deletion woke PodGC, so a Node whose labels left a
    Scope's ``memberSelector`` was noticed at the next resync. Its label change (not a
    heartbeat) and the Scope's selector change each wake it now."""
    clock = ManualClock()
    s = await _scoped_store("m1", clock)
    try:
        for n in ("m1", "m3", "m4"):
            node = copy.deepcopy(s.get(NODE, None, n))
            node["metadata"]["labels"] = {"tenant": "a", **({"zone": "x"} if n == "m1" else {})}
            await s.update(NODE, node, None, n)
        await _set_spec(s, namespaces=["team-a"], memberSelector={"matchLabels": {"tenant": "a"}})
        await _pod_on(s, "team-a", "web", "m4")
        await _pod_on(s, "team-a", "api", "m3")
        gc, woken = await _watching(s)  # m3 and m4 match the selector
        try:
            node = copy.deepcopy(s.get(NODE, None, "m4"))
            node["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            await s.update(NODE, node, None, "m4", "status")  # a heartbeat
            assert woken.queue.empty(), "a Node's status alone does not wake PodGC"
            node = copy.deepcopy(s.get(NODE, None, "m4"))
            node["metadata"]["labels"] = {"tenant": "b"}
            await s.update(NODE, node, None, "m4")
            assert woken.queue.qsize() == 1, "m4's labels left the selector"
            await _set_spec(s, namespaces=["team-a"], memberSelector={
                "matchLabels": {"tenant": "a", "zone": "x"}})
            assert woken.queue.qsize() == 2, "the selector now matches m1 only"
        finally:
            woken.close()
        await gc.sync()
        assert set(gc.out_of_scope_since) == {("tenant-a", "m3"), ("tenant-a", "m4")}
        clock.t += 16.0
        await gc.sync()
        assert _in(s, "team-a") == set()
    finally:
        s.replica.close()


async def test_a_namespace_relabelled_into_a_scope_wakes_pod_gc_and_its_pods_move() -> None:
    """The same for a Namespace whose labels bring it into a Scope's ``namespaceSelector``:
    its pods on nodes that are not members of that scope are lost there."""
    clock = ManualClock()
    s = await _scoped_store("m1", clock)
    try:
        await _set_spec(s, namespaceSelector={"matchLabels": {"tenant": "a"}},
                        members=["m1", "m3"])
        await _pod_on(s, "default", "web", "m4")
        gc, woken = await _watching(s)  # default is in the cluster scope
        try:
            ns = copy.deepcopy(s.get(NS, None, "default"))
            ns["metadata"]["labels"] = {"tenant": "a"}
            await s.update(NS, ns, None, "default")
            assert woken.queue.qsize() == 1, "default is now in tenant-a"
        finally:
            woken.close()
        await gc.sync()
        clock.t += 16.0
        await gc.sync()
        assert _in(s, "default") == set()
    finally:
        s.replica.close()
