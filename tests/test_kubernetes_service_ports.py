"""The ``kubernetes`` Service: each node is an endpoint on its own API port, and a peer never
replaces the Service the cluster has (its uid, its targetPort)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from shoal.control.kubernetes_service import API_PORT_ANNOTATION, KubernetesService, _https
from shoal.model.kinds import KindRegistry
from shoal.node.node_status import NodeStatusReporter
from shoal.store.objects import ObjectStore, now_rfc3339
from shoal.store.replica import Replica

REG = KindRegistry()


def kind(api_version: str, name: str):  # type: ignore[no-untyped-def]
    k = REG.by_kind(api_version, name)
    assert k is not None
    return k


@pytest.fixture
async def store() -> AsyncIterator[ObjectStore]:
    s = ObjectStore(Replica(None, "p1"), REG)
    for ns in ("default", "kube-node-lease"):
        await s.create(kind("v1", "Namespace"), {"metadata": {"name": ns}})
    yield s
    await asyncio.sleep(0)
    s.replica.close()


async def _node(store: ObjectStore, name: str, ip: str, port: int | None) -> None:
    meta: dict[str, object] = {"name": name}
    if port is not None:
        meta["annotations"] = {API_PORT_ANNOTATION: str(port)}
    await store.create(kind("v1", "Node"), {"metadata": meta, "status": {
        "addresses": [{"type": "InternalIP", "address": ip}]}})
    await store.create(kind("coordination.k8s.io/v1", "Lease"), {
        "metadata": {"name": name},
        "spec": {"renewTime": now_rfc3339(store.replica.wall.now())}}, "kube-node-lease")


async def test_peers_on_one_host_are_each_an_endpoint_on_their_own_api_port(
        store: ObjectStore) -> None:
    # Three peers on loopback, as in the README's "More peers": one address, three ports.
    for name, port in (("pi-1", 6443), ("pi-2", 6444), ("pi-3", 6445)):
        await _node(store, name, "127.0.0.1", port)
    await KubernetesService(store, 6444).sync()
    ep = store.get(kind("v1", "Endpoints"), "default", "kubernetes")
    assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}], "ports": _https(p)}
                             for p in (6443, 6444, 6445)]
    slices = {s["metadata"]["name"]: s for s in store.list(
        kind("discovery.k8s.io/v1", "EndpointSlice"), "default")}
    assert {n: (s["ports"], [e["addresses"] for e in s["endpoints"]])
            for n, s in slices.items()} == {
        "kubernetes": (_https(6443), [["127.0.0.1"]]),
        "kubernetes-6444": (_https(6444), [["127.0.0.1"]]),
        "kubernetes-6445": (_https(6445), [["127.0.0.1"]]),
    }
    assert all(s["metadata"]["labels"]["kubernetes.io/service-name"] == "kubernetes"
               for s in slices.values())


async def test_a_port_no_node_serves_any_more_loses_its_slice(store: ObjectStore) -> None:
    await _node(store, "pi-1", "127.0.0.1", 6443)
    await _node(store, "pi-2", "127.0.0.1", 6444)
    service = KubernetesService(store, 6443)
    await service.sync()
    await store.delete(kind("v1", "Node"), None, "pi-2")
    await service.sync()
    names = [s["metadata"]["name"] for s in store.list(
        kind("discovery.k8s.io/v1", "EndpointSlice"), "default")]
    assert names == ["kubernetes"]


async def test_a_node_that_does_not_say_its_port_is_listed_on_the_writers(
        store: ObjectStore) -> None:
    await _node(store, "a", "10.0.0.1", None)
    await _node(store, "b", "10.0.0.2", 6443)
    await KubernetesService(store, 6443).sync()
    ep = store.get(kind("v1", "Endpoints"), "default", "kubernetes")
    assert ep["subsets"] == [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}],
                              "ports": _https(6443)}]


async def test_a_peer_does_not_rewrite_the_service_the_cluster_has(store: ObjectStore) -> None:
    await _node(store, "pi-1", "127.0.0.1", 6443)
    await KubernetesService(store, 6443).sync()
    svc = store.get(kind("v1", "Service"), "default", "kubernetes")
    await _node(store, "pi-2", "127.0.0.1", 6444)
    await KubernetesService(store, 6444).sync()  # another peer, on another port
    after = store.get(kind("v1", "Service"), "default", "kubernetes")
    assert after["metadata"]["uid"] == svc["metadata"]["uid"]
    assert after["spec"]["ports"] == svc["spec"]["ports"]
    assert after["spec"]["ports"][0]["targetPort"] == 6443


async def test_a_node_says_on_which_port_it_serves_the_api() -> None:
    s = ObjectStore(Replica(None, "pi-2"), REG)
    reporter = NodeStatusReporter(s, "pi-2", "127.0.0.1", api_port=6444)
    await reporter.register()
    node = s.get(kind("v1", "Node"), None, "pi-2")
    assert node["metadata"]["annotations"][API_PORT_ANNOTATION] == "6444"
    await asyncio.sleep(0)
    s.replica.close()


async def test_a_peer_that_may_not_create_yet_leaves_the_missing_service_alone(
        store: ObjectStore) -> None:
    # A joiner caught up as cut off (no pull completed): its create would replace the
    # cluster's Service in the merge.
    await _node(store, "pi-2", "127.0.0.1", 6444)
    await KubernetesService(store, 6444, may_create=lambda: False).sync()
    assert store.find(kind("v1", "Service"), "default", "kubernetes") is None
    assert store.find(kind("discovery.k8s.io/v1", "EndpointSlice"), "default",
                      "kubernetes") is not None


class _ResumedView:
    """A peer alone in its view that has just resumed from standing still."""

    def __init__(self, name: str, at: float) -> None:
        self.name, self._at = name, at

    def live(self) -> list[str]:
        return [self.name]

    def resumed(self) -> float:
        return self._at


async def test_a_peer_that_has_just_resumed_keeps_the_nodes_whose_renewals_it_missed(
        store: ObjectStore) -> None:
    await _node(store, "pi-1", "127.0.0.1", 6443)
    await _node(store, "pi-2", "127.0.0.2", 6443)
    store.replica.wall = _Later(store.replica.wall, 60.0)  # it stood still for 60 s
    now = store.replica.wall.now()
    assert KubernetesService(store, 6443).endpoints() == []
    view = _ResumedView("pi-1", now)
    assert KubernetesService(store, 6443, view).endpoints() == [
        ("127.0.0.1", 6443), ("127.0.0.2", 6443)]


class _Later:
    def __init__(self, clock: object, by: float) -> None:
        self._clock, self._by = clock, by

    def now(self) -> float:
        return self._clock.now() + self._by  # type: ignore[attr-defined]
