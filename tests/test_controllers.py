"""ReplicaSet and Deployment controllers, in process, with a stand-in kubelet."""

from __future__ import annotations

import copy
import datetime
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from shoal.control.deployment import REVISION, DeploymentController
from shoal.control.ownership import preferred_actor
from shoal.control.replicaset import ReplicaSetController, slot_name
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica

REG = KindRegistry()
NS = REG.by_kind("v1", "Namespace")
POD = REG.by_kind("v1", "Pod")
RS = REG.by_kind("apps/v1", "ReplicaSet")
DEPLOY = REG.by_kind("apps/v1", "Deployment")


def deployment(name: str, replicas: int, image: str = "nginx:1", **strategy: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": image}]}},
        },
    }
    if strategy:
        d["spec"]["strategy"] = strategy
    return d


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    r = Replica(None, "n1")
    s = ObjectStore(r, REG)
    await s.create(NS, {"metadata": {"name": "default"}})
    yield s
    r.close()


async def kubelet(store: ObjectStore, ready: bool = True) -> None:
    """Mark every pending pod Running (and Ready), as a node agent would."""
    now = now_rfc3339(store.replica.wall.now())
    for p in store.list(POD):
        if (p.get("status") or {}).get("phase") == "Running":
            continue
        new = copy.deepcopy(p)
        new["status"] = {"phase": "Running", "startTime": now, "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now}]}
        await store.update(POD, new, "default", p["metadata"]["name"], "status", check_rv=False)


async def settle(store: ObjectStore, rounds: int = 30, ready: bool = True) -> None:
    d, rs = DeploymentController(store), ReplicaSetController(store)
    for _ in range(rounds):
        a = await d.sync()
        b = await rs.sync()
        await kubelet(store, ready)
        # When both are idle, one more pass picks up the status the kubelet wrote.
        if not a and not b and not await d.sync() and not await rs.sync():
            return


def pods(store: ObjectStore) -> list[dict[str, Any]]:
    return [p for p in store.list(POD) if not p["metadata"].get("deletionTimestamp")]


async def test_a_deployment_gets_a_replicaset_and_its_pods(store: ObjectStore) -> None:
    await store.create(DEPLOY, deployment("web", 3), "default")
    await settle(store)
    rss = store.list(RS)
    assert len(rss) == 1
    assert rss[0]["metadata"]["annotations"][REVISION] == "1"
    assert len(pods(store)) == 3
    d = store.get(DEPLOY, "default", "web")
    assert d["status"]["availableReplicas"] == 3
    assert d["status"]["updatedReplicas"] == 3
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"]
    progressing = next(c for c in d["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"


async def test_pod_names_come_from_the_replicaset_uid_and_a_slot(store: ObjectStore) -> None:
    await store.create(DEPLOY, deployment("named", 2), "default")
    await settle(store)
    rs = store.list(RS)[0]["metadata"]
    expected = {slot_name(rs["name"], rs["uid"], i) for i in range(2)}
    assert {p["metadata"]["name"] for p in pods(store)} == expected


async def test_two_slots_whose_names_collide_still_give_every_replica_in_one_pass(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Five-letter suffixes collide about once per hundred 500-pod ReplicaSets; the second
    # slot of a pair was counted as created (AlreadyExists), leaving one pod short a pass.
    from shoal.control import replicaset

    def colliding(owner: str, uid: str, slot: int) -> str:
        return slot_name(owner, uid, 0 if slot == 1 else slot)

    monkeypatch.setattr(replicaset, "slot_name", colliding)
    await store.create(RS, {"metadata": {"name": "web"}, "spec": {
        "replicas": 3, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}, "default")
    await ReplicaSetController(store).sync()
    assert len(pods(store)) == 3


async def test_scaling_down_keeps_the_pods_that_have_run_longest(store: ObjectStore) -> None:
    await store.create(DEPLOY, deployment("trim", 4), "default")
    await settle(store)
    # Make one pod clearly the oldest by backdating its readiness.
    oldest = sorted(pods(store), key=lambda p: p["metadata"]["name"])[-1]
    new = copy.deepcopy(oldest)
    new["status"]["conditions"][0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    await store.update(POD, new, "default", oldest["metadata"]["name"], "status", check_rv=False)
    d = copy.deepcopy(store.get(DEPLOY, "default", "trim"))
    d["spec"]["replicas"] = 1
    await store.update(DEPLOY, d, "default", "trim")
    await settle(store)
    left = pods(store)
    assert [p["metadata"]["name"] for p in left] == [oldest["metadata"]["name"]]


async def test_a_rolling_update_never_drops_below_max_unavailable(store: ObjectStore) -> None:
    await store.create(DEPLOY, deployment("roll", 4, maxSurge=1, maxUnavailable=1,
                                          type="RollingUpdate") | {}, "default")
    d = copy.deepcopy(store.get(DEPLOY, "default", "roll"))
    d["spec"]["strategy"] = {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    await store.update(DEPLOY, d, "default", "roll")
    await settle(store)
    d = copy.deepcopy(store.get(DEPLOY, "default", "roll"))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    await store.update(DEPLOY, d, "default", "roll")
    dc, rc = DeploymentController(store), ReplicaSetController(store)
    lowest = 99
    highest = 0
    for _ in range(40):
        await dc.sync()
        await rc.sync()
        ready = [p for p in pods(store) if (p.get("status") or {}).get("phase") == "Running"]
        lowest = min(lowest, len(ready))
        highest = max(highest, len(pods(store)))
        await kubelet(store)
    images = {p["spec"]["containers"][0]["image"] for p in pods(store)}
    assert images == {"nginx:2"}
    assert len(pods(store)) == 4
    assert lowest >= 3, "maxUnavailable=1 of 4"
    assert highest <= 5, "maxSurge=1 of 4"
    assert {r["metadata"]["annotations"][REVISION] for r in store.list(RS)} == {"1", "2"}


async def test_recreate_stops_the_old_pods_before_starting_new_ones(store: ObjectStore) -> None:
    await store.create(DEPLOY, deployment("re", 2, type="Recreate"), "default")
    await settle(store)
    d = copy.deepcopy(store.get(DEPLOY, "default", "re"))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    await store.update(DEPLOY, d, "default", "re")
    await settle(store)
    assert {p["spec"]["containers"][0]["image"] for p in pods(store)} == {"nginx:2"}
    assert len(pods(store)) == 2


async def test_a_paused_deployment_does_not_roll(store: ObjectStore) -> None:
    await store.create(DEPLOY, deployment("paused", 1), "default")
    await settle(store)
    d = copy.deepcopy(store.get(DEPLOY, "default", "paused"))
    d["spec"]["paused"] = True
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    await store.update(DEPLOY, d, "default", "paused")
    await settle(store)
    assert {p["spec"]["containers"][0]["image"] for p in pods(store)} == {"nginx:1"}


def test_rendezvous_hashing_picks_one_peer_and_moves_only_what_it_must() -> None:
    peers = [f"n{i}" for i in range(5)]
    keys = [f"uid-{i}" for i in range(500)]
    before = {k: preferred_actor(k, peers) for k in keys}
    after = {k: preferred_actor(k, peers[:-1]) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "n4" for k in moved), "only the departed peer's keys move"
    counts = {p: sum(1 for v in before.values() if v == p) for p in peers}
    assert min(counts.values()) > 50, counts


async def _bound_to_a_node_judged_lost(store: ObjectStore, node: str) -> list[str]:
    """Binds every pod to ``node``, taints it unreachable since long ago, lets the
    controllers run; returns the pods' names as bound."""
    from shoal.control.node_lifecycle import UNREACHABLE

    names = sorted(p["metadata"]["name"] for p in pods(store))
    for name in names:
        p = copy.deepcopy(store.get(POD, "default", name))
        p["spec"]["nodeName"] = node
        await store.update(POD, p, "default", name, "binding", check_rv=False)
    node_kind = REG.by_kind("v1", "Node")
    n = copy.deepcopy(store.get(node_kind, None, node))
    n["spec"] = {"taints": [{"key": UNREACHABLE, "effect": "NoExecute",
                             "timeAdded": "2020-01-01T00:00:00Z"}]}
    await store.update(node_kind, n, None, node)
    await settle(store)
    return names


async def test_pods_on_a_lost_node_are_replaced_and_the_trim_keeps_the_originals(
    store: ObjectStore,
) -> None:

    node_kind = REG.by_kind("v1", "Node")
    await store.create(node_kind, {"metadata": {"name": "far"}})
    await store.create(DEPLOY, deployment("edge", 2), "default")
    await settle(store)
    # The far node has been unreachable for longer than the eviction timeout.
    originals = await _bound_to_a_node_judged_lost(store, "far")
    names = sorted(p["metadata"]["name"] for p in pods(store))
    assert len(names) == 4 and set(originals) <= set(names), "replacements, originals kept"
    # It comes back: the replacements (younger) are trimmed, the originals stay.
    n = copy.deepcopy(store.get(node_kind, None, "far"))
    n["spec"] = {}
    await store.update(node_kind, n, None, "far")
    await settle(store)
    assert sorted(p["metadata"]["name"] for p in pods(store)) == originals


async def test_pods_on_a_node_judged_lost_elsewhere_still_count_while_its_lease_is_fresh_here(
    store: ObjectStore,
) -> None:
    # At a heal the far side's verdict on a node of this side merges in before its judge
    # clears it: the node renews its Lease here all along, so its pods are not replaced.
    from shoal.control.node_lifecycle import LEASE_NAMESPACE

    node_kind, lease_kind = REG.by_kind("v1", "Node"), REG.by_kind("coordination.k8s.io/v1",
                                                                    "Lease")
    await store.create(node_kind, {"metadata": {"name": "near"}})
    await store.create(REG.by_kind("v1", "Namespace"), {"metadata": {"name": LEASE_NAMESPACE}})
    renew = datetime.datetime.fromtimestamp(store.replica.wall.now(), datetime.UTC)
    await store.create(lease_kind, {"metadata": {"name": "near"}, "spec": {
        "holderIdentity": "near", "leaseDurationSeconds": 40,
        "renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}}, LEASE_NAMESPACE)
    await store.create(DEPLOY, deployment("home", 2), "default")
    await settle(store)
    originals = await _bound_to_a_node_judged_lost(store, "near")
    assert sorted(p["metadata"]["name"] for p in pods(store)) == originals


async def test_the_scheduler_binds_pending_pods_and_explains_the_ones_it_cannot(
    store: ObjectStore,
) -> None:
    from shoal.control.scheduling import Scheduler

    node_kind = REG.by_kind("v1", "Node")
    alloc = {"cpu": "2", "memory": "4Gi", "pods": "110"}
    await store.create(node_kind, {"metadata": {"name": "small", "labels": {"zone": "a"}}})
    n = copy.deepcopy(store.get(node_kind, None, "small"))
    n["status"] = {"allocatable": alloc, "capacity": alloc,
                   "conditions": [{"type": "Ready", "status": "True"}]}
    await store.update(node_kind, n, None, "small", "status")
    fits = {"metadata": {"name": "fits"}, "spec": {"containers": [
        {"name": "c", "image": "x", "resources": {"requests": {"cpu": "1"}}}]}}
    huge = {"metadata": {"name": "huge"}, "spec": {"containers": [
        {"name": "c", "image": "x", "resources": {"requests": {"cpu": "64"}}}]}}
    await store.create(POD, fits, "default")
    await store.create(POD, huge, "default")
    await Scheduler(store).sync()
    assert store.get(POD, "default", "fits")["spec"]["nodeName"] == "small"
    h = store.get(POD, "default", "huge")
    assert not h["spec"].get("nodeName")
    cond = next(c for c in h["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable"
    assert "Insufficient cpu" in cond["message"]
    events = store.list(REG.by_kind("v1", "Event"), "default")
    assert {e["reason"] for e in events} == {"Scheduled", "FailedScheduling"}


# -- helper e2e: a peer that has just joined schedules only once it holds the live peers' Nodes
async def test_a_peer_that_just_started_schedules_only_once_it_holds_every_live_peers_node(
    store: ObjectStore,
) -> None:
    from shoal.control.scheduling import CATCH_UP, Scheduler
    from tests.tools.stores import FixedView

    node_kind = REG.by_kind("v1", "Node")
    alloc = {"cpu": "2", "memory": "4Gi", "pods": "110"}

    async def add_node(name: str) -> None:
        await store.create(node_kind, {"metadata": {"name": name}})
        n = copy.deepcopy(store.get(node_kind, None, name))
        n["status"] = {"allocatable": alloc, "capacity": alloc,
                       "conditions": [{"type": "Ready", "status": "True"}]}
        await store.update(node_kind, n, None, name, "status")

    pod = await store.create(POD, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "image": "x"}]}}, "default")
    peers = ["here", "there"]
    me = preferred_actor(pod["metadata"]["uid"], peers)
    assert me is not None
    await add_node(me)
    scheduler = Scheduler(store, FixedView(me, peers))
    assert await scheduler.sync() is True  # the other peer's Node has not arrived yet
    assert not store.get(POD, "default", "p")["spec"].get("nodeName")
    await add_node(next(p for p in peers if p != me))
    await scheduler.sync()
    assert store.get(POD, "default", "p")["spec"].get("nodeName") in peers

    # Later than CATCH_UP after start, a live peer without a Node holds nothing up.
    q = await store.create(POD, {"metadata": {"name": "q"}, "spec": {"containers": [
        {"name": "c", "image": "x"}]}}, "default")
    # A nodeless peer that is not q's preferred actor (its uid is random), and the scheduler
    # of the peer that is: else every scheduler here would rightly leave q to another.
    uid = q["metadata"]["uid"]
    nodeless = next(n for n in (f"nodeless-{i}" for i in itertools.count())
                    if preferred_actor(uid, [*peers, n]) != n)
    actor = preferred_actor(uid, [*peers, nodeless])
    assert actor is not None
    late = Scheduler(store, FixedView(actor, [*peers, nodeless]))
    await late.sync()
    assert late._started is not None
    late._started -= CATCH_UP
    await late.sync()
    assert store.get(POD, "default", "q")["spec"].get("nodeName") in peers


def test_a_running_replicaset_controller_replaces_a_lost_nodes_pods_when_its_timeout_ends(
) -> None:
    """An unreachable node writes nothing, so no change announces the moment its eviction
    timeout runs out: the controller schedules a pass for it (before, it waited for its
    30 s resync). Virtual time; the controller's own resync is an hour."""
    import asyncio

    from shoal.control.node_lifecycle import UNREACHABLE
    from shoal.sim.loop import VirtualWallClock
    from shoal.sim.loop import run as virtual_run

    node_kind = REG.by_kind("v1", "Node")

    async def main() -> tuple[int, int, float]:
        loop = asyncio.get_running_loop()
        r = Replica(None, "n1", clock=VirtualWallClock(loop))
        s = ObjectStore(r, REG)
        await s.create(NS, {"metadata": {"name": "default"}})
        await s.create(node_kind, {"metadata": {"name": "far"}})
        await s.create(DEPLOY, deployment("edge", 2), "default")
        await settle(s)
        for name in [p["metadata"]["name"] for p in pods(s)]:
            p = copy.deepcopy(s.get(POD, "default", name))
            p["spec"]["nodeName"] = "far"
            await s.update(POD, p, "default", name, "binding", check_rv=False)
        controller = ReplicaSetController(s, eviction_timeout=8.0, resync=3600.0)
        task = loop.create_task(controller.run())
        await asyncio.sleep(1.0)
        # Judged unreachable now: its pods stop counting 8 s from now.
        tainted = loop.time()
        n = copy.deepcopy(s.get(node_kind, None, "far"))
        n["spec"] = {"taints": [{"key": UNREACHABLE, "effect": "NoExecute",
                                 "timeAdded": now_rfc3339(r.wall.now())}]}
        await s.update(node_kind, n, None, "far")
        await asyncio.sleep(7.5)
        before = len(pods(s))
        while len(pods(s)) == before and loop.time() - tainted < 60:
            await asyncio.sleep(0.05)
        replaced_after = loop.time() - tainted
        after = len(pods(s))
        task.cancel()
        r.close()
        return before, after, replaced_after

    before, after, replaced_after = virtual_run(main())
    assert before == 2, "nothing is replaced before the eviction timeout"
    assert after == 4, "both pods replaced"
    # Virtual seconds: the timeout (timeAdded has whole-second precision) plus the pass.
    assert 7.0 <= replaced_after < 9.5, replaced_after
