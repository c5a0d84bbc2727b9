"""The cluster DNS record index: names and records from Services, EndpointSlices and Pods."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.net.dns_records import (
    PODS,
    SERVICES,
    SLICES,
    DnsIndex,
    NameRecords,
    Srv,
    service_names,
)
from shoal.node.dns_config import search_path

D = "cluster.local"


def svc(name: str, ns: str = "default", cluster_ip: str | None = "10.96.0.20",
        ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"ports": ports if ports is not None else
                         [{"name": "http", "port": 80, "protocol": "TCP"}], **spec}
    if cluster_ip is not None:
        s["clusterIP"] = cluster_ip
        s.setdefault("clusterIPs", [cluster_ip])
    return {"metadata": {"name": name, "namespace": ns}, "spec": s}


def endpoint(ip: str, ready: bool | None = True, hostname: str | None = None) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip]}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    if hostname:
        ep["hostname"] = hostname
    return ep


def eslice(service: str, endpoints: list[dict[str, Any]], name: str = "",
           ports: list[dict[str, Any]] | None = None, ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name or f"{service}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "http", "port": 8080,
                                                       "protocol": "TCP"}]}


def pod(name: str, ip: str | None, ns: str = "default") -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running"}
    if ip:
        status.update(podIP=ip, podIPs=[{"ip": ip}])
    return {"metadata": {"name": name, "namespace": ns}, "status": status}


HEADLESS = svc("db", cluster_ip="None")
HEADLESS_SLICE = eslice("db", [endpoint("10.42.0.5", hostname="db-0"), endpoint("10.42.1.7"),
                               endpoint("10.42.2.9", ready=False)])

CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]], dict[str, NameRecords]]] = [
    ("a ClusterIP Service has an A record for its clusterIP and SRV for its named port",
     svc("web"), [],
     {f"web.default.svc.{D}": NameRecords(a=["10.96.0.20"],
                                          srv=[Srv(0, 100, 80, f"web.default.svc.{D}")]),
      f"_http._tcp.web.default.svc.{D}": NameRecords(
          srv=[Srv(0, 100, 80, f"web.default.svc.{D}")])}),
    ("an unnamed port gets no _port._proto name but stays in the service name's SRV set",
     svc("one", ports=[{"port": 53, "protocol": "UDP"}]), [],
     {f"one.default.svc.{D}": NameRecords(a=["10.96.0.20"],
                                          srv=[Srv(0, 100, 53, f"one.default.svc.{D}")])}),
    ("a dual-stack Service has A and AAAA records",
     svc("dual", clusterIPs=["10.96.0.20", "fd00::20"]), [],
     {f"dual.default.svc.{D}": NameRecords(a=["10.96.0.20"], aaaa=["fd00::20"],
                                           srv=[Srv(0, 100, 80, f"dual.default.svc.{D}")]),
      f"_http._tcp.dual.default.svc.{D}": NameRecords(
          srv=[Srv(0, 100, 80, f"dual.default.svc.{D}")])}),
    ("a headless Service answers with its ready endpoints, each under its hostname or dashed IP",
     HEADLESS, [HEADLESS_SLICE],
     {f"db.default.svc.{D}": NameRecords(
         a=["10.42.0.5", "10.42.1.7"],
         srv=[Srv(0, 50, 8080, f"10-42-1-7.db.default.svc.{D}"),
              Srv(0, 50, 8080, f"db-0.db.default.svc.{D}")]),
      f"db-0.db.default.svc.{D}": NameRecords(a=["10.42.0.5"]),
      f"10-42-1-7.db.default.svc.{D}": NameRecords(a=["10.42.1.7"]),
      f"_http._tcp.db.default.svc.{D}": NameRecords(
          srv=[Srv(0, 50, 8080, f"10-42-1-7.db.default.svc.{D}"),
               Srv(0, 50, 8080, f"db-0.db.default.svc.{D}")])}),
    ("a headless Service with no ready endpoint exists with no address",
     HEADLESS, [eslice("db", [endpoint("10.42.0.5", ready=False)])],
     {f"db.default.svc.{D}": NameRecords()}),
    ("an endpoint without a ready condition counts as ready, as Kubernetes reads it",
     HEADLESS, [eslice("db", [endpoint("10.42.0.5", ready=None)], ports=[])],
     {f"db.default.svc.{D}": NameRecords(a=["10.42.0.5"]),
      f"10-42-0-5.db.default.svc.{D}": NameRecords(a=["10.42.0.5"])}),
    ("an ExternalName Service is a CNAME to its external name",
     svc("ext", cluster_ip=None, type="ExternalName", externalName="Example.ORG."), [],
     {f"ext.default.svc.{D}": NameRecords(cname="example.org")}),
]


@pytest.mark.parametrize(("service", "slices", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_service_names(service: dict[str, Any], slices: list[dict[str, Any]],
                       expected: dict[str, NameRecords]) -> None:
    assert service_names(service, slices, D) == expected


def index_with(*objs: tuple[str, dict[str, Any]]) -> DnsIndex:
    index = DnsIndex(D)
    for resource, obj in objs:
        index.apply(resource, obj["metadata"]["namespace"], obj["metadata"]["name"], obj)
    return index


def test_a_slice_written_before_its_service_counts_once_the_service_arrives() -> None:
    index = index_with((SLICES, HEADLESS_SLICE))
    assert index.lookup(f"db.default.svc.{D}") is None
    index.apply(SERVICES, "default", "db", HEADLESS)
    found = index.lookup(f"db.default.svc.{D}")
    assert found is not None and found.a == ["10.42.0.5", "10.42.1.7"]


def test_deleting_a_service_removes_every_name_it_had() -> None:
    index = index_with((SERVICES, HEADLESS), (SLICES, HEADLESS_SLICE))
    index.apply(SERVICES, "default", "db", None)
    for name in (f"db.default.svc.{D}", f"db-0.db.default.svc.{D}",
                 f"_http._tcp.db.default.svc.{D}", f"default.svc.{D}"):
        assert index.lookup(name) is None, name


def test_names_between_a_record_and_the_zone_exist_without_records() -> None:
    index = index_with((SERVICES, svc("web")))
    for name in (f"_tcp.web.default.svc.{D}", f"default.svc.{D}", f"svc.{D}", D):
        assert index.lookup(name) == NameRecords(), name
    assert index.lookup(f"other.svc.{D}") is None
    assert index.lookup(f"web.other.svc.{D}") is None


def test_a_pod_name_resolves_only_if_a_pod_in_that_namespace_has_the_address() -> None:
    index = index_with((PODS, pod("p", "10.42.0.7")))
    found = index.lookup(f"10-42-0-7.default.pod.{D}")
    assert found is not None and found.a == ["10.42.0.7"]
    assert index.lookup(f"10-42-0-7.other.pod.{D}") is None
    assert index.lookup(f"10-42-0-8.default.pod.{D}") is None
    assert index.lookup(f"not-an-ip.default.pod.{D}") is None
    index.apply(PODS, "default", "p", None)
    assert index.lookup(f"10-42-0-7.default.pod.{D}") is None


def test_pod_writes_that_keep_the_address_leave_the_generation_alone() -> None:
    index = index_with((PODS, pod("p", "10.42.0.7")))
    before = index.generation
    again = pod("p", "10.42.0.7")
    again["status"]["phase"] = "Succeeded"
    index.apply(PODS, "default", "p", again)
    index.apply(SERVICES, "default", "web", svc("web"))
    after_service = index.generation
    index.apply(SERVICES, "default", "web", svc("web"))
    assert (before, after_service) != (index.generation, index.generation)
    assert index.generation == after_service


def test_a_slice_moving_to_another_service_leaves_the_first_one() -> None:
    index = index_with((SERVICES, HEADLESS), (SERVICES, svc("db2", cluster_ip="None")),
                       (SLICES, HEADLESS_SLICE))
    moved = eslice("db2", HEADLESS_SLICE["endpoints"], name=HEADLESS_SLICE["metadata"]["name"])
    index.apply(SLICES, "default", moved["metadata"]["name"], moved)
    assert index.lookup(f"db.default.svc.{D}") == NameRecords()
    found = index.lookup(f"db2.default.svc.{D}")
    assert found is not None and found.a == ["10.42.0.5", "10.42.1.7"]


def test_names_outside_the_cluster_domain_are_not_in_the_zone() -> None:
    index = DnsIndex("cluster.local.")
    assert index.in_zone("cluster.local") and index.in_zone("a.svc.cluster.local")
    assert not index.in_zone("example.org") and not index.in_zone("notcluster.local")


def test_a_malformed_merged_object_is_skipped_and_the_others_still_answer() -> None:
    index = index_with((SERVICES, svc("web")))
    index.apply(SERVICES, "default", "odd", {"metadata": {"name": "odd"},
                                             "spec": {"clusterIPs": 7}})
    found = index.lookup(f"web.default.svc.{D}")
    assert found is not None and found.a == ["10.96.0.20"]


def test_the_search_path_tries_the_pods_namespace_first() -> None:
    assert search_path("shop", "edge.local") == ["shop.svc.edge.local", "svc.edge.local",
                                                 "edge.local"]
