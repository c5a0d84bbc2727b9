"""Controllers and the scheduler in a scope: only its writers act, only its members run pods."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shoal.authz.scopes import CLUSTER, EMPTY, ScopeMap, ScopeRule
from shoal.control.garbage_collector import GarbageCollector
from shoal.control.namespace_lifecycle import NamespaceLifecycle
from shoal.control.ownership import actors, preferred_actor, should_act
from shoal.control.replicaset import ReplicaSetController
from shoal.control.scheduler import Snapshot, default_profile, schedule
from shoal.control.scheduler.plugins.scope_membership import ERR_REASON_NOT_MEMBER
from shoal.control.scheduling import Scheduler
from shoal.control.service_accounts import ServiceAccountsController
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import FixedView

REG = KindRegistry()
NS = REG.by_kind("v1", "Namespace")
POD = REG.by_kind("v1", "Pod")
NODE = REG.by_kind("v1", "Node")
CM = REG.by_kind("v1", "ConfigMap")
SA = REG.by_kind("v1", "ServiceAccount")
RS = REG.by_kind("apps/v1", "ReplicaSet")
SCOPE = REG.by_kind("shoal.dev/v1alpha1", "Scope")
assert None not in (NS, POD, NODE, CM, SA, RS, SCOPE)
PEERS = ["n1", "n2", "n3", "n4", "n5"]


def scope(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shoal.dev/v1alpha1", "kind": "Scope", "metadata": {"name": name},
            "spec": spec}


def scope_map(*objs: dict[str, Any]) -> ScopeMap:
    return ScopeMap([r for r in (ScopeRule.parse(o) for o in objs) if r is not None])


TENANT = scope_map(scope("tenant-a", namespaces=["team-a"], members=["n1", "n2", "n3"],
                         writers=["n1", "n2"]))


# -- ownership -----------------------------------------------------------------------------


def test_in_the_cluster_scope_every_live_peer_takes_part_as_before() -> None:
    for key in (f"uid-{i}" for i in range(50)):
        acting = [p for p in PEERS if should_act(FixedView(p, PEERS), key, CLUSTER, TENANT)]
        assert acting == [preferred_actor(key, PEERS)]
        assert acting == [p for p in PEERS if should_act(FixedView(p, PEERS), key)]


def test_a_scope_object_has_exactly_one_actor_among_its_live_writers() -> None:
    chosen = set()
    for key in (f"uid-{i}" for i in range(60)):
        acting = [p for p in PEERS
                  if should_act(FixedView(p, PEERS), key, "tenant-a", TENANT)]
        assert len(acting) == 1 and acting[0] in {"n1", "n2"}
        chosen.add(acting[0])
    assert chosen == {"n1", "n2"}, "the rendezvous spreads the work over the writers"


def test_a_member_that_is_not_a_writer_and_a_peer_outside_never_act() -> None:
    for p in ("n3", "n4"):
        assert actors(FixedView(p, PEERS), "tenant-a", TENANT) == []
        assert not any(should_act(FixedView(p, [p]), f"k{i}", "tenant-a", TENANT)
                       for i in range(20)), "not even when it is alone"


def test_a_writer_acts_for_everything_when_the_other_writers_are_unreachable() -> None:
    cut_off = FixedView("n2", ["n2", "n3", "n4"])
    assert actors(cut_off, "tenant-a", TENANT) == ["n2"]
    assert all(should_act(cut_off, f"k{i}", "tenant-a", TENANT) for i in range(20))


def test_a_scope_that_is_gone_has_no_actor() -> None:
    assert not any(should_act(FixedView(p, PEERS), "k", "gone", TENANT) for p in PEERS)
    assert actors(FixedView("n1", PEERS), "tenant-a", EMPTY) == []


# -- the scheduler plugin ------------------------------------------------------------------


def _node(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}


def _pod(ns: str, name: str = "p") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "uid": f"uid-{ns}-{name}"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}


def test_a_pod_of_a_scope_is_scheduled_only_onto_its_members() -> None:
    snap = Snapshot([_node(p) for p in PEERS], scopes=TENANT)
    profile = default_profile()
    for i in range(20):
        result = schedule(_pod("team-a", f"p{i}"), snap, profile)
        assert result.node_name in {"n1", "n2", "n3"}
        assert set(result.statuses) == {"n4", "n5"}
        assert all(s.reasons == (ERR_REASON_NOT_MEMBER,) for s in result.statuses.values())
    spread = {schedule(_pod("team-b", f"p{i}"), snap, profile).node_name for i in range(30)}
    assert spread == set(PEERS), "a pod of the cluster scope may go anywhere"


def test_a_pod_of_a_scope_with_no_member_node_is_unschedulable_with_kubernetes_words() -> None:
    snap = Snapshot([_node("n4"), _node("n5")], scopes=TENANT)
    result = schedule(_pod("team-a"), snap, default_profile())
    assert result.node_name is None
    assert result.message.startswith(
        "0/2 nodes are available: 2 node(s) were not members of the pod's scope. preemption:")


# -- controllers in process ----------------------------------------------------------------


async def _store(node: str) -> ObjectStore:
    s = ObjectStore(Replica(None, node), REG)
    assert NS is not None and SCOPE is not None and NODE is not None
    for ns in ("team-a", "default"):
        await s.create(NS, {"metadata": {"name": ns}})
    for p in PEERS:
        await s.create(NODE, _node(p))
    await s.create(SCOPE, scope("tenant-a", namespaces=["team-a"], members=["n1", "n2", "n3"],
                                writers=["n1", "n2"]))
    return s


def _replica_set(name: str, replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


async def test_a_replica_set_in_a_scope_gets_its_pods_on_members_only() -> None:
    s = await _store("n1")
    try:
        assert RS is not None and POD is not None
        await s.create(RS, _replica_set("web", 6), "team-a")
        alone = FixedView("n1", ["n1"])
        await ReplicaSetController(s, alone).sync()
        scheduler = Scheduler(s, alone)
        scheduler._started = -1e9  # long started: no catch-up wait for other peers' Nodes
        await scheduler.sync()
        pods = s.list(POD, "team-a")
        assert len(pods) == 6
        assert {p["spec"].get("nodeName") for p in pods} <= {"n1", "n2", "n3"}
        assert all(p["spec"].get("nodeName") for p in pods)
    finally:
        s.replica.close()


async def test_controllers_on_a_member_that_is_not_a_writer_write_nothing_in_the_scope() -> None:
    s = await _store("n3")
    try:
        assert RS is not None and POD is not None and SA is not None and CM is not None
        await s.create(RS, _replica_set("web", 3), "team-a")
        await s.create(RS, _replica_set("web", 2), "default")
        view = FixedView("n3", ["n3"])
        rs = ReplicaSetController(s, view)
        await rs.sync()
        assert s.list(POD, "team-a") == [], "its creates would be refused by the scope"
        assert len(s.list(POD, "default")) == 2, "the cluster scope is as before"
        accounts = ServiceAccountsController(s, b"-----BEGIN CERTIFICATE-----\n", view)
        await accounts.sync()
        assert s.find(SA, "team-a", "default") is None
        assert s.find(SA, "default", "default") is not None
        # An orphan in the scope stays for the scope's writers to collect.
        orphan = {"metadata": {"name": "orphan", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "gone-uid"}]}}
        await s.create(CM, copy.deepcopy(orphan), "team-a")
        await s.create(CM, copy.deepcopy(orphan), "default")
        gc = GarbageCollector(s)
        await gc.sync()
        gc._missing = {k: v - 1e6 for k, v in gc._missing.items()}
        await gc.sync()
        assert s.find(CM, "team-a", "orphan") is not None
        assert s.find(CM, "default", "orphan") is None
    finally:
        s.replica.close()


async def test_a_namespace_of_a_scope_is_emptied_and_finalized_only_by_its_writers() -> None:
    for node, emptied in (("n4", False), ("n1", True)):
        s = await _store(node)
        try:
            assert CM is not None and NS is not None
            await s.create(CM, {"metadata": {"name": "c"}}, "team-a")
            await s.delete(NS, None, "team-a")
            lifecycle = NamespaceLifecycle(s)
            for _ in range(3):
                await lifecycle.sync()
            assert (s.find(CM, "team-a", "c") is None) == emptied
            assert (s.find(NS, None, "team-a") is None) == emptied
        finally:
            s.replica.close()


async def test_a_daemon_set_in_a_scope_runs_on_its_members_and_leaves_a_node_that_leaves() -> None:
    from shoal.control.daemonset import DaemonSetController, target_node

    ds_kind = REG.by_kind("apps/v1", "DaemonSet")
    s = await _store("n1")
    try:
        assert ds_kind is not None and POD is not None and SCOPE is not None
        await s.create(ds_kind, {"metadata": {"name": "agent"}, "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                         "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "team-a")
        controller = DaemonSetController(s, FixedView("n1", ["n1"]))

        def targets() -> set[str]:
            return {target_node(p) or "" for p in s.list(POD, "team-a")}

        await controller.sync()
        assert targets() == {"n1", "n2", "n3"}
        smaller = copy.deepcopy(s.get(SCOPE, None, "tenant-a"))
        smaller["spec"]["members"] = ["n1", "n2"]
        await s.update(SCOPE, smaller, None, "tenant-a")
        await controller.sync()
        assert targets() == {"n1", "n2"}
    finally:
        s.replica.close()


async def _running_pod(s: ObjectStore, ns: str, name: str, node: str) -> None:
    assert POD is not None
    await s.create(POD, _pod(ns, name), ns)
    p = copy.deepcopy(s.get(POD, ns, name))
    p["spec"]["nodeName"] = node
    await s.update(POD, p, ns, name, "binding", check_rv=False)
    p = copy.deepcopy(s.get(POD, ns, name))
    p["status"] = {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    await s.update(POD, p, ns, name, "status", check_rv=False)


async def test_a_scope_pod_on_an_unreachable_node_is_marked_by_one_live_writer_only() -> None:
    from shoal.control.node_lifecycle import LEASE_NAMESPACE, NodeLifecycle
    from shoal.control.pod_state import is_ready
    from tests.test_controller_node_lifecycle_pods import renew
    from tests.tools.stores import ManualClock

    live = ["n1", "n2", "n4", "n5"]  # n3 (a member, not a writer) has gone quiet
    marked: dict[str, tuple[bool, bool]] = {}
    for judge in live:
        clock = ManualClock()
        s = ObjectStore(Replica(None, judge, clock), REG)
        try:
            assert NS is not None and NODE is not None and SCOPE is not None and POD is not None
            for ns in ("team-a", "default", LEASE_NAMESPACE):
                await s.create(NS, {"metadata": {"name": ns}})
            for p in PEERS:
                await s.create(NODE, _node(p))
                await renew(s, p)
            await s.create(SCOPE, scope("tenant-a", namespaces=["team-a"],
                                        members=["n1", "n2", "n3"], writers=["n1", "n2"]))
            await _running_pod(s, "team-a", "scoped", "n3")
            await _running_pod(s, "default", "open", "n3")
            lifecycle = NodeLifecycle(s, FixedView(judge, live), grace=40.0)
            await lifecycle.sync()
            clock.t += 41.0
            for p in live:
                await renew(s, p)
            await lifecycle.sync()
            marked[judge] = (not is_ready(s.get(POD, "team-a", "scoped")),
                             not is_ready(s.get(POD, "default", "open")))
        finally:
            s.replica.close()
    scoped = [j for j, (m, _) in marked.items() if m]
    opened = [j for j, (_, m) in marked.items() if m]
    assert len(scoped) == 1 and scoped[0] in {"n1", "n2"}
    assert opened == [preferred_actor("node/n3", live)], "the cluster scope as before"


# -- in the simulator, over the real mesh ----------------------------------------------------


async def _scoped_deployment(store: ObjectStore, name: str, replicas: int,
                             **spec: Any) -> None:
    """Namespace team-a in Scope tenant-a (``spec``), then a Deployment there, 40 s on."""
    import asyncio

    deploy = REG.by_kind("apps/v1", "Deployment")
    assert deploy is not None and NS is not None and SCOPE is not None
    await store.create(NS, {"metadata": {"name": "team-a"}})
    await store.create(SCOPE, scope("tenant-a", namespaces=["team-a"], **spec))
    await asyncio.sleep(15.0)  # the Scope reaches every peer
    labels = {"app": name}
    await store.create(deploy, {"metadata": {"name": name}, "spec": {
        "replicas": replicas, "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels},
                     "spec": {"containers": [{"name": "c", "image": f"{name}:1"}]}}}},
        "team-a")
    await asyncio.sleep(40.0)


def _simulate(seed: int, split: bool) -> dict[str, Any]:
    """A Deployment of 4 in a scope of 3 of 5 simulated peers (2 writers); with ``split``,
    the writers are cut off from the other member and the two outsiders for 60 s while
    the Deployment is scaled to 5, then healed."""
    import asyncio

    from shoal.mesh import config as mesh_config
    from shoal.sim.cluster import SimCluster
    from shoal.sim.control_plane import ControlCluster
    from shoal.sim.loop import run as virtual_run

    members, writers = ["n0000", "n0001", "n0002"], ["n0000", "n0001"]
    deploy = REG.by_kind("apps/v1", "Deployment")
    assert deploy is not None and NS is not None and SCOPE is not None and POD is not None
    found: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cluster = SimCluster(5, seed, mesh_config.sim(), loop)  # type: ignore[arg-type]
        cp = ControlCluster(cluster)
        await cp.start()
        try:
            first = cluster.nodes["n0000"]
            await _scoped_deployment(first.store, "web", 4, members=members, writers=writers)
            def on_n0002() -> list[str]:
                return sorted(c.name for c in cp.timeline.copies.values()
                              if c.namespace == "team-a" and c.node == "n0002"
                              and not c.terminating)

            if split:
                found["before_split"] = on_n0002()
                net = cluster.network
                net.partition([[cluster.nodes[n].address for n in writers],
                               [cluster.nodes[n].address for n in ("n0002", "n0003", "n0004")]])
                d = copy.deepcopy(first.store.get(deploy, "team-a", "web"))
                d["spec"]["replicas"] = 5
                await first.store.update(deploy, d, "team-a", "web")
                await asyncio.sleep(60.0)
                found["cut_off_running"] = on_n0002()
                net.heal()
                await asyncio.sleep(90.0)
            found["running"] = sorted(c.node for c in cp.timeline.copies.values()
                                      if c.namespace == "team-a" and not c.terminating)
            found["bound"] = {n.name: sorted((p["spec"].get("nodeName") or "")
                                             for p in n.store.list(POD, "team-a"))
                              for n in cluster.nodes.values()}
            found["refused"] = {n.name: n.peer.anti_entropy.docs_refused
                                for n in cluster.nodes.values() if n.peer is not None}
            found["errors"] = list(cp.errors.messages)
        finally:
            await cp.stop()

    virtual_run(main())
    return found


def test_in_the_simulator_a_scoped_deployment_runs_on_members_and_no_write_is_refused() -> None:
    found = _simulate(11, split=False)
    members = {"n0000", "n0001", "n0002"}
    assert len(found["running"]) == 4 and set(found["running"]) <= members
    for name in members:
        assert len(found["bound"][name]) == 4 and set(found["bound"][name]) <= members
    assert found["bound"]["n0003"] == [] and found["bound"]["n0004"] == []
    assert sum(found["refused"].values()) == 0, found["refused"]
    assert found["errors"] == []


@pytest.mark.parametrize("seed", range(3))
def test_in_the_simulator_a_member_cut_off_from_the_writers_keeps_its_pods_and_merges(
    seed: int,
) -> None:
    found = _simulate(seed, split=True)
    members = {"n0000", "n0001", "n0002"}
    # The member cut off from the writers keeps running what it ran, and starts nothing new.
    assert found["cut_off_running"] == found["before_split"]
    assert len(found["running"]) == 5 and set(found["running"]) <= members, found["running"]
    for name in members:
        assert len(found["bound"][name]) == 5, found["bound"]
    assert found["bound"]["n0003"] == [] and found["bound"]["n0004"] == []
    assert sum(found["refused"].values()) == 0, found["refused"]
    assert found["errors"] == []

async def test_orphaning_drops_the_owner_from_dependents_each_peer_may_write() -> None:
    from shoal.store.objects import ORPHAN

    for node, finished in (("n3", False), ("n1", True)):
        s = await _store(node)
        try:
            assert CM is not None
            owner = await s.create(CM, {"metadata": {"name": "owner",
                                                     "finalizers": [ORPHAN]}}, "default")
            ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                   "uid": owner["metadata"]["uid"]}
            for ns in ("default", "team-a"):
                await s.create(CM, {"metadata": {"name": "dep", "ownerReferences": [ref]}}, ns)
            await s.delete(CM, "default", "owner")
            gc = GarbageCollector(s)
            for _ in range(3):
                await gc.sync()
            refs = {ns: (s.get(CM, ns, "dep") or {}).get("metadata", {}).get("ownerReferences")
                    for ns in ("default", "team-a")}
            assert refs["default"] is None, "the cluster scope's dependent is orphaned"
            assert (refs["team-a"] is None) == finished
            assert (s.find(CM, "default", "owner") is None) == finished
        finally:
            s.replica.close()


def test_in_the_simulator_pods_on_a_member_removed_from_the_scope_are_replaced() -> None:
    """Issue 10's trial: a Deployment of 6 in a scope of 4 peers; one member is removed
    from the scope. Its pods stop there and are replaced on the members (PodGC), instead of
    staying Running on it in every writer's replica."""
    import asyncio

    from shoal.mesh import config as mesh_config
    from shoal.sim.cluster import SimCluster
    from shoal.sim.control_plane import ControlCluster
    from shoal.sim.loop import run as virtual_run

    members = ["n0000", "n0001", "n0002", "n0003"]
    assert SCOPE is not None
    found: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        cluster = SimCluster(5, 7, mesh_config.sim(), loop)  # type: ignore[arg-type]
        cp = ControlCluster(cluster)
        await cp.start()
        try:
            first = cluster.nodes["n0000"]
            await _scoped_deployment(first.store, "aw", 6, members=members)

            def running() -> list[str]:
                return sorted(c.node for c in cp.timeline.copies.values()
                              if c.namespace == "team-a" and not c.terminating)

            found["before"] = running()
            # The member with most of the pods leaves the scope.
            gone = max(members, key=found["before"].count)
            found["gone"] = gone
            s = copy.deepcopy(first.store.get(SCOPE, None, "tenant-a"))
            s["spec"]["members"] = [m for m in members if m != gone]
            await first.store.update(SCOPE, s, None, "tenant-a")
            await asyncio.sleep(60.0)
            found["after"] = running()
            found["bound"] = {n: sorted((p["spec"].get("nodeName") or "")
                                        for p in cluster.nodes[n].store.list(POD, "team-a"))
                              for n in members}
            found["errors"] = list(cp.errors.messages)
        finally:
            await cp.stop()

    virtual_run(main())
    gone, kept = found["gone"], set(members) - {found["gone"]}
    assert found["before"].count(gone) >= 1 and len(found["before"]) == 6, found["before"]
    assert len(found["after"]) == 6 and set(found["after"]) <= kept, found["after"]
    for n in kept:
        assert len(found["bound"][n]) == 6 and set(found["bound"][n]) <= kept, found["bound"]
    assert found["bound"][gone] == [], "it dropped the scope's objects"
    assert found["errors"] == []
