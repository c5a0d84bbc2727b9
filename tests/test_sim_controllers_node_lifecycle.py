"""Node lifecycle clears the taint of a node that is its own preferred actor."""

from __future__ import annotations

import copy

from shoal.control.node_lifecycle import LEASE_NAMESPACE, UNREACHABLE, NodeLifecycle
from shoal.control.ownership import preferred_actor
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica
from tests.tools.stores import FixedView

REG = KindRegistry()


async def test_a_node_that_is_its_own_preferred_actor_still_gets_its_taint_cleared() -> None:
    peers = [f"n{i}" for i in range(5)]
    # A node the rendezvous hash would pick to judge itself (which it never does).
    node = next(p for p in peers if preferred_actor(f"node/{p}", peers) == p)
    judge = preferred_actor(f"node/{node}", [p for p in peers if p != node])
    assert judge is not None
    replica = Replica(None, judge)
    store = ObjectStore(replica, REG)
    try:
        ns, node_k = REG.by_kind("v1", "Namespace"), REG.by_kind("v1", "Node")
        lease_k = REG.by_kind("coordination.k8s.io/v1", "Lease")
        assert ns is not None and node_k is not None and lease_k is not None
        await store.create(ns, {"metadata": {"name": LEASE_NAMESPACE}})
        await store.create(node_k, {"metadata": {"name": node}, "spec": {"taints": [
            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": "2020-01-01T00:00:00Z"}]}})
        renew = now_rfc3339(replica.wall.now()).replace("Z", ".000000Z")
        await store.create(lease_k, {"metadata": {"name": node}, "spec": {
            "holderIdentity": node, "renewTime": renew}}, LEASE_NAMESPACE)
        # Every other peer defers to the judge; the judge must act although the node is live.
        for p in peers:
            if p not in (node, judge):
                assert not NodeLifecycle(store, FixedView(p, peers))._acts_for(node)
        await NodeLifecycle(store, FixedView(judge, peers)).sync()
        after = copy.deepcopy(store.get(node_k, None, node))
        assert not (after.get("spec") or {}).get("taints")
    finally:
        replica.close()
