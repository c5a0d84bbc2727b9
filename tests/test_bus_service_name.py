"""The ``nats`` Service: pods reach their own node's bus by name (kube-system/nats, with
``internalTrafficPolicy: Local`` and one EndpointSlice per bus peer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shoal.bus import cluster_service
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    replica = Replica(tmp_path / "replica", "p1")
    s = ObjectStore(replica, KindRegistry())
    yield s
    replica.close()


async def test_each_bus_peer_is_the_local_endpoint_of_one_nats_service(
        store: ObjectStore) -> None:
    reg = store.registry
    ns_kind, node_kind = reg.by_kind("v1", "Namespace"), reg.by_kind("v1", "Node")
    assert ns_kind and node_kind
    # No namespace yet: nothing written, try again later.
    assert not await cluster_service.publish(store, "edge-1", "10.0.0.5", 4222)
    await store.create(ns_kind, {"metadata": {"name": "kube-system"}})
    for name in ("edge-1", "edge-2"):
        await store.create(node_kind, {"metadata": {"name": name}})
    assert await cluster_service.publish(store, "edge-1", "10.0.0.5", 4222)
    assert await cluster_service.publish(store, "edge-2", "10.0.0.6", 14222)
    svc = store.replica.get("services", "kube-system", "nats")
    assert svc is not None
    assert svc["spec"]["internalTrafficPolicy"] == "Local"
    assert svc["spec"]["clusterIP"].startswith("10.")
    assert svc["spec"]["ports"] == [{"name": "client", "port": 4222, "protocol": "TCP",
                                     "targetPort": 4222}]
    slices = {s["metadata"]["name"]: s for s in store.replica.list(
        "endpointslices.discovery.k8s.io", "kube-system")}
    assert set(slices) == {"nats-edge-1", "nats-edge-2"}
    two = slices["nats-edge-2"]
    assert two["endpoints"] == [{"addresses": ["10.0.0.6"], "nodeName": "edge-2",
                                 "conditions": {"ready": True, "serving": True}}]
    assert two["ports"][0]["port"] == 14222  # a node whose default port was taken
    assert two["metadata"]["labels"]["kubernetes.io/service-name"] == "nats"
    assert two["metadata"]["ownerReferences"][0]["kind"] == "Node"
    # Unchanged: not written again. Its server down: not ready.
    rv = two["metadata"]["resourceVersion"]
    assert await cluster_service.publish(store, "edge-2", "10.0.0.6", 14222)
    assert store.replica.get("endpointslices.discovery.k8s.io", "kube-system",
                             "nats-edge-2")["metadata"]["resourceVersion"] == rv  # type: ignore[index]
    assert await cluster_service.publish(store, "edge-2", "10.0.0.6", 14222, ready=False)
    now = store.replica.get("endpointslices.discovery.k8s.io", "kube-system", "nats-edge-2")
    assert now is not None and now["endpoints"][0]["conditions"]["ready"] is False


async def test_a_peer_not_caught_up_writes_its_endpoint_but_not_the_service(
        store: ObjectStore) -> None:
    # A joiner's replica lacks the Service at first; its create would be the later one and
    # replace the cluster's (its uid) in the merge.
    reg = store.registry
    ns_kind, node_kind = reg.by_kind("v1", "Namespace"), reg.by_kind("v1", "Node")
    assert ns_kind and node_kind
    await store.create(ns_kind, {"metadata": {"name": "kube-system"}})
    await store.create(node_kind, {"metadata": {"name": "edge-3"}})
    assert not await cluster_service.publish(store, "edge-3", "10.0.0.7", 4222,
                                             create_service=False)
    assert store.replica.get("services", "kube-system", "nats") is None
    assert store.replica.get("endpointslices.discovery.k8s.io", "kube-system",
                             "nats-edge-3") is not None
    assert await cluster_service.publish(store, "edge-3", "10.0.0.7", 4222)
    assert store.replica.get("services", "kube-system", "nats") is not None
