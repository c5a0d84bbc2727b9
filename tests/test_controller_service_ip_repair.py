"""Cluster IPs and node ports chosen on two sides of a partition are never shared after the merge."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shoal.control.ownership import SinglePeer
from shoal.control.service_ip_repair import IP_CLASH, PORT_CLASH, ServiceIpRepair
from shoal.model.kinds import KindRegistry
from shoal.store import service_ips
from shoal.store.objects import Invalid, ObjectStore
from shoal.store.replica import Replica
from tests.tools.stores import heal

REG = KindRegistry()
SVC = REG.by_kind("v1", "Service")
EVENT = REG.by_kind("v1", "Event")
NS = REG.by_kind("v1", "Namespace")
assert SVC is not None and EVENT is not None and NS is not None


def service(name: str, ip: str | None = None, node_port: int | None = None,
            namespace: str = "default") -> dict[str, Any]:
    port: dict[str, Any] = {"name": "web", "port": 80}
    spec: dict[str, Any] = {"selector": {"app": name}, "ports": [port]}
    if ip:
        spec["clusterIP"] = ip
    if node_port:
        spec["type"] = "NodePort"
        port["nodePort"] = node_port
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


async def _store(name: str) -> ObjectStore:
    s = ObjectStore(Replica(None, name), REG)
    for ns in ("default", "kube-system"):
        await s.create(NS, {"metadata": {"name": ns}})
    return s


def test_the_allocator_never_hands_out_the_dns_address_to_another_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A Service whose name hashes onto 10.96.0.10 (.2 + 8) probes past it ...
    monkeypatch.setattr(service_ips, "_hash", lambda key: 8)
    assert service_ips.allocate_cluster_ip("default", "web", set()) == "10.96.0.11"
    # ... and past everything in use; kube-dns itself may have it.
    assert service_ips.allocate_cluster_ip("kube-system", "kube-dns", set()) == service_ips.DNS_IP
    # 10.96.0.1 is never a probe's start: it stays the `kubernetes` Service's.
    monkeypatch.setattr(service_ips, "_hash", lambda key: -1)
    assert service_ips.allocate_cluster_ip("default", "web", set()) != service_ips.KUBERNETES_IP


async def test_two_services_given_one_cluster_ip_apart_end_with_two_after_the_merge() -> None:
    a, b = await _store("pa"), await _store("pb")
    try:
        await heal(a, b)
        await a.create(SVC, service("older", "10.96.5.5"), "default")
        await b.create(SVC, service("younger", "10.96.5.5"), "default")
        await heal(a, b)
        # creationTimestamp, then uid, decide; every peer runs the repair.
        ranks = sorted(a.list(SVC, "default"), key=service_ips.keeper_rank)
        keeper, mover = ranks[0]["metadata"]["name"], ranks[1]["metadata"]["name"]
        await ServiceIpRepair(a, SinglePeer("pa")).sync()
        await ServiceIpRepair(b, SinglePeer("pb")).sync()
        await heal(a, b)
        for s in (a, b):
            kept, moved = s.get(SVC, "default", keeper), s.get(SVC, "default", mover)
            assert kept["spec"]["clusterIP"] == "10.96.5.5"
            assert moved["spec"]["clusterIP"] != "10.96.5.5"
            assert moved["spec"]["clusterIPs"] == [moved["spec"]["clusterIP"]]
        warnings = [e for e in a.list(EVENT, "default") if e["reason"] == IP_CLASH]
        assert [(e["type"], e["involvedObject"]["name"]) for e in warnings] == [("Warning", mover)]
        assert f"default/{keeper} keeps it" in warnings[0]["message"]
        assert service_ips.repairs(a.list(SVC)) == []  # nothing left to repair
    finally:
        a.replica.close()
        b.replica.close()


async def test_a_node_port_chosen_on_both_sides_stays_with_the_older_service() -> None:
    a, b = await _store("pa"), await _store("pb")
    try:
        await heal(a, b)
        await a.create(SVC, service("left", node_port=30080), "default")
        await b.create(SVC, service("right", node_port=30080), "default")
        await heal(a, b)
        ranks = sorted(a.list(SVC, "default"), key=service_ips.keeper_rank)
        keeper, mover = ranks[0]["metadata"]["name"], ranks[1]["metadata"]["name"]
        await ServiceIpRepair(a, SinglePeer("pa")).sync()
        await heal(a, b)
        assert b.get(SVC, "default", keeper)["spec"]["ports"][0]["nodePort"] == 30080
        moved = b.get(SVC, "default", mover)["spec"]["ports"][0]["nodePort"]
        assert moved != 30080 and moved in service_ips.NODE_PORT_RANGE
        assert [e["involvedObject"]["name"] for e in b.list(EVENT, "default")
                if e["reason"] == PORT_CLASH] == [mover]
    finally:
        a.replica.close()
        b.replica.close()


async def test_kube_dns_keeps_its_address_against_an_older_service_that_held_it() -> None:
    s = await _store("p")
    try:
        # A user asked for the address before kube-dns existed; kube-dns may still take it.
        await s.create(SVC, service("squatter", service_ips.DNS_IP), "default")
        await s.create(SVC, service("kube-dns", service_ips.DNS_IP, namespace="kube-system"),
                       "kube-system")
        await ServiceIpRepair(s, SinglePeer("p")).sync()
        assert s.get(SVC, "kube-system", "kube-dns")["spec"]["clusterIP"] == service_ips.DNS_IP
        assert s.get(SVC, "default", "squatter")["spec"]["clusterIP"] not in (
            service_ips.DNS_IP, service_ips.KUBERNETES_IP)
    finally:
        s.replica.close()


def test_the_repair_plan_does_not_depend_on_the_order_services_are_listed() -> None:
    svcs = [{"metadata": {"name": f"s{i}", "namespace": "default", "uid": f"u{i}",
                          "creationTimestamp": f"2026-01-0{1 + i % 3}T00:00:00Z"},
             "spec": {"clusterIP": f"10.96.1.{i % 2}", "type": "NodePort",
                      "ports": [{"port": 80, "nodePort": 30000 + i % 3}]}} for i in range(7)]
    plan = service_ips.repairs(svcs)
    assert service_ips.repairs(list(reversed(svcs))) == plan
    after = copy.deepcopy(svcs)
    by_uid = {r.uid: r for r in plan}
    for s in after:
        if s["metadata"]["uid"] in by_uid:
            service_ips.apply(s, by_uid[s["metadata"]["uid"]])
    assert len({s["spec"]["clusterIP"] for s in after}) == len(after)
    assert len({s["spec"]["ports"][0]["nodePort"] for s in after}) == len(after)
    assert service_ips.repairs(after) == []


async def test_an_address_or_node_port_this_replica_knows_is_taken_is_refused_as_kubernetes_does(
) -> None:
    s = await _store("p")
    try:
        await s.create(SVC, service("web", "10.96.7.7", node_port=30080), "default")
        for clash, text in (
            (service("a", "10.96.7.7"), 'spec.clusterIPs: Invalid value: []string{"10.96.7.7"}: '
                                        "failed to allocate IP 10.96.7.7: provided IP is "
                                        "already allocated"),
            (service("b", node_port=30080), "spec.ports[0].nodePort: Invalid value: 30080: "
                                            "provided port is already allocated"),
        ):
            with pytest.raises(Invalid) as e:
                await s.create(SVC, clash, "default")
            assert text in str(e.value)
    finally:
        s.replica.close()
