"""The kube-dns Service every node makes sure exists."""

from __future__ import annotations

import logging

import pytest

from shoal.model.kinds import KindRegistry
from shoal.net.dns_service import ensure_kube_dns
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

REG = KindRegistry()
NS, SVC = REG.by_kind("v1", "Namespace"), REG.by_kind("v1", "Service")


async def make_store(node: str) -> ObjectStore:
    assert NS is not None
    store = ObjectStore(Replica(None, node), REG)
    await store.create(NS, {"metadata": {"name": "kube-system"}})
    await store.create(NS, {"metadata": {"name": "default"}})
    return store


async def test_kube_dns_is_created_once_with_the_cluster_dns_address_and_ports() -> None:
    assert SVC is not None
    store = await make_store("n1")
    await ensure_kube_dns(store)
    first = store.get(SVC, "kube-system", "kube-dns")
    await ensure_kube_dns(store)
    again = store.get(SVC, "kube-system", "kube-dns")
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again["spec"]["clusterIP"] == "10.96.0.10"
    assert again["metadata"]["labels"]["k8s-app"] == "kube-dns"
    assert [(p["name"], p["protocol"], p["port"]) for p in again["spec"]["ports"]] == [
        ("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]
    assert "selector" not in again["spec"]


async def test_two_peers_creating_it_while_apart_merge_into_the_same_service() -> None:
    assert SVC is not None
    a, b = await make_store("a"), await make_store("b")
    await ensure_kube_dns(a)
    await ensure_kube_dns(b)
    for (ns, name), entry in a.replica.iter_entries("services"):
        result = b.replica.merge("services", ns, name, entry.document())
        if result is not None:
            await result[1]
    merged = b.get(SVC, "kube-system", "kube-dns")
    assert merged["spec"]["clusterIP"] == "10.96.0.10"
    assert len(merged["spec"]["ports"]) == 2
    assert len(b.list(SVC, "kube-system")) == 1


async def test_an_address_taken_by_another_service_is_reported_not_shared(
        caplog: pytest.LogCaptureFixture) -> None:
    assert SVC is not None
    store = await make_store("n1")
    await store.create(SVC, {"metadata": {"name": "squatter"}, "spec": {
        "clusterIP": "10.96.0.10", "ports": [{"port": 53}]}}, "default")
    with caplog.at_level(logging.ERROR, logger="shoal.net.dns_service"):
        await ensure_kube_dns(store)
    assert store.find(SVC, "kube-system", "kube-dns") is None
    assert "taken by Service default/squatter" in caplog.text
