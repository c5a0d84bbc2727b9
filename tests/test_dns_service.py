"""The node's cluster DNS: the kube-dns Service it makes sure exists, and where it listens."""

from __future__ import annotations

import logging
from pathlib import Path

import dns.asyncquery as dns_query
import dns.message as dns_message
import pytest

from shoal.model.kinds import KindRegistry
from shoal.net.cluster_dns import ClusterDns, DnsSettings, pod_gateway
from shoal.net.dns_service import ensure_kube_dns
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.conftest import free_port

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


async def test_the_listener_moves_to_the_pod_gateway_once_the_node_has_a_pod_cidr(
        tmp_path: Path) -> None:
    store = await make_store("n1")
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    port = free_port()
    gateway: list[str | None] = [None]
    dns = ClusterDns(store, DnsSettings(port=port, resolv_conf=tmp_path / "resolv.conf",
                                        placement_interval=3600),
                     gateway=lambda: gateway[0])
    await dns.start()
    try:
        assert dns.listener() == ("127.0.0.1", port)
        gateway[0] = pod_gateway("127.0.2.0/24")  # loopback stands in for the pod bridge
        await dns.place()
        if dns.listener() is None:
            pytest.skip("port 53 on 127.0.2.1 is taken here")
        assert dns.listener() == ("127.0.2.1", 53)
        reply = await dns_query.udp(dns_message.make_query("kube-dns.kube-system.svc.cluster.local",
                                                     "A"), "127.0.2.1", port=53, timeout=2)
        assert [rd.to_text() for rrset in reply.answer for rd in rrset] == ["10.96.0.10"]
    finally:
        await dns.stop()


def test_port_zero_turns_cluster_dns_off_even_with_a_pod_network() -> None:
    dns = ClusterDns(ObjectStore(Replica(None, "n1"), REG), DnsSettings(port=0),
                     gateway=lambda: "10.42.0.1")
    assert dns.wanted() is None


def test_the_gateway_is_the_first_address_of_the_pod_cidr() -> None:
    assert pod_gateway("10.42.7.0/24") == "10.42.7.1"
    assert pod_gateway(None) is None and pod_gateway("garbage") is None
