"""The pods of an unreachable node are marked not ready, and leave the Services' ready endpoints."""

from __future__ import annotations

import copy

from shoal.control.endpoints import EndpointsController
from shoal.control.node_lifecycle import (
    LEASE_NAMESPACE,
    NODE_NOT_READY,
    NODE_NOT_READY_MESSAGE,
    NodeLifecycle,
)
from shoal.control.ownership import SinglePeer
from shoal.control.pod_state import is_ready
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.test_controller_endpoints import add_pod, service
from tests.tools.stores import ManualClock, heal

REG = KindRegistry()
POD, NODE, NS = REG.by_kind("v1", "Pod"), REG.by_kind("v1", "Node"), REG.by_kind("v1", "Namespace")
LEASE, EVENT = REG.by_kind("coordination.k8s.io/v1", "Lease"), REG.by_kind("v1", "Event")
SVC, EP = REG.by_kind("v1", "Service"), REG.by_kind("v1", "Endpoints")
SLICE = REG.by_kind("discovery.k8s.io/v1", "EndpointSlice")
assert POD and NODE and NS and LEASE and EVENT and SVC and EP and SLICE


async def renew(s: ObjectStore, node: str) -> None:
    spec = {"holderIdentity": node, "renewTime": now_rfc3339(s.replica.wall.now())}
    lease = s.find(LEASE, LEASE_NAMESPACE, node)
    if lease is None:
        await s.create(LEASE, {"metadata": {"name": node}, "spec": spec}, LEASE_NAMESPACE)
    else:
        new = copy.deepcopy(lease)
        new["spec"] = spec
        await s.update(LEASE, new, LEASE_NAMESPACE, node)


async def cluster(clock: ManualClock, name: str) -> ObjectStore:
    s = ObjectStore(Replica(None, name, clock), REG)
    for ns in ("default", LEASE_NAMESPACE):
        await s.create(NS, {"metadata": {"name": ns}})
    for n, zone in (("judge", "z1"), ("far", "z2")):
        await s.create(NODE, {"metadata": {"name": n,
                                           "labels": {"topology.kubernetes.io/zone": zone}}})
        await renew(s, n)
    await s.create(SVC, service("web"), "default")
    await add_pod(s, "web-near", "web", "10.42.1.5", ready=True, node="judge")
    await add_pod(s, "web-far", "web", "10.42.2.5", ready=True, node="far")
    return s


async def test_a_node_whose_lease_runs_out_has_its_pods_marked_not_ready_with_an_event() -> None:
    clock = ManualClock()
    s = await cluster(clock, "judge")
    try:
        lifecycle = NodeLifecycle(s, SinglePeer("judge"), grace=40.0)
        await lifecycle.sync()
        assert is_ready(s.get(POD, "default", "web-far"))
        clock.t += 41.0  # "far" renews no more; the judge renews its own lease
        await renew(s, "judge")
        await lifecycle.sync()
        far, near = s.get(POD, "default", "web-far"), s.get(POD, "default", "web-near")
        assert not is_ready(far) and is_ready(near)
        ready = next(c for c in far["status"]["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "False"
        assert ready["lastTransitionTime"] == now_rfc3339(clock.t)
        [event] = [e for e in s.list(EVENT, "default") if e["reason"] == NODE_NOT_READY]
        assert (event["type"], event["message"]) == ("Warning", NODE_NOT_READY_MESSAGE)
        assert event["involvedObject"]["name"] == "web-far"
        # A second pass writes nothing more: the event is not repeated.
        await lifecycle.sync()
        assert lifecycle.pods_marked == 1
        await EndpointsController(s).sync()
        [subset] = s.get(EP, "default", "web")["subsets"]
        assert [(a["targetRef"]["name"], a["nodeName"]) for a in subset["addresses"]] == [
            ("web-near", "judge")]
        assert [(a["targetRef"]["name"], a["nodeName"]) for a in subset["notReadyAddresses"]] == [
            ("web-far", "far")]
        [sl] = [x for x in s.list(SLICE, "default")]
        by_pod = {e["targetRef"]["name"]: e for e in sl["endpoints"]}
        assert by_pod["web-far"]["conditions"]["ready"] is False
        assert by_pod["web-near"]["conditions"]["ready"] is True
        assert {(k, e["nodeName"], e["zone"]) for k, e in by_pod.items()} == {
            ("web-near", "judge", "z1"), ("web-far", "far", "z2")}
    finally:
        s.replica.close()


async def test_a_node_never_marks_its_own_pods_not_ready() -> None:
    clock = ManualClock()
    s = await cluster(clock, "far")
    try:
        clock.t += 100.0  # cut off from everyone: its own view of its own lease is stale
        await NodeLifecycle(s, SinglePeer("far"), grace=40.0).sync()
        assert is_ready(s.get(POD, "default", "web-far"))
    finally:
        s.replica.close()


async def test_after_the_heal_the_agents_newer_status_wins_over_the_not_ready_mark() -> None:
    clock = ManualClock()
    judge, far = await cluster(clock, "judge"), ObjectStore(Replica(None, "far", clock), REG)
    try:
        await heal(judge, far)
        lifecycle = NodeLifecycle(judge, SinglePeer("judge"), grace=40.0)
        await lifecycle.sync()
        clock.t += 41.0  # partition: far keeps running its pod and renewing its lease alone
        await renew(far, "far")
        await renew(judge, "judge")
        await lifecycle.sync()
        assert not is_ready(judge.get(POD, "default", "web-far"))
        clock.t += 1.0
        await heal(judge, far)
        # The agent on "far" sees its pod's status replaced and writes what it knows again
        # (shoal.node.agent: "a merge replaced the status this node wrote").
        pod = copy.deepcopy(far.get(POD, "default", "web-far"))
        assert not is_ready(pod)
        for c in pod["status"]["conditions"]:
            if c["type"] == "Ready":
                c["status"] = "True"
        await far.update(POD, pod, "default", "web-far", "status", check_rv=False)
        await heal(judge, far)
        marked = lifecycle.pods_marked
        await lifecycle.sync()  # the lease is fresh again: nothing more is marked
        assert lifecycle.pods_marked == marked
        for s in (judge, far):
            assert is_ready(s.get(POD, "default", "web-far"))
    finally:
        judge.replica.close()
        far.replica.close()


async def test_a_peer_that_starts_with_a_stale_replica_judges_nobody_before_the_grace_period(
) -> None:
    clock = ManualClock()
    s = await cluster(clock, "judge")
    try:
        clock.t += 3600.0  # the replica was saved an hour ago; no lease is fresh in it
        lifecycle = NodeLifecycle(s, SinglePeer("judge"), grace=40.0)
        await lifecycle.sync()
        assert is_ready(s.get(POD, "default", "web-far"))
        assert not (s.get(NODE, None, "far").get("spec") or {}).get("taints")
        clock.t += 41.0  # watched for the grace period with no renewal arriving
        await lifecycle.sync()
        assert not is_ready(s.get(POD, "default", "web-far"))
    finally:
        s.replica.close()
