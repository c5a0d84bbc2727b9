"""The Service rules as a pure function: Services, EndpointSlices and node facts in, nftables out."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from shoal.net.service_rules import NodeFacts, Ruleset, render

ME, OTHER, THIRD = "node-a", "node-b", "node-c"


def svc(name: str = "web", ip: str | None = "10.96.0.20", ns: str = "default",
        **spec: Any) -> dict[str, Any]:
    ports = spec.pop("ports", [{"name": "http", "port": 80, "protocol": "TCP"}])
    s: dict[str, Any] = {"ports": ports, **spec}
    if ip is not None:
        s["clusterIP"] = ip
    return {"metadata": {"name": name, "namespace": ns}, "spec": s}


def ep(ip: str, node: str | None = ME, ready: bool | None = True,
       serving: bool | None = None, terminating: bool | None = None) -> dict[str, Any]:
    conditions = {k: v for k, v in (("ready", ready), ("serving", serving),
                                    ("terminating", terminating)) if v is not None}
    out: dict[str, Any] = {"addresses": [ip], "conditions": conditions}
    if node is not None:
        out["nodeName"] = node
    return out


def slice_(service: str, *endpoints: dict[str, Any], ns: str = "default", port: int = 8080,
           port_name: str = "http", protocol: str = "TCP", name: str | None = None,
           family: str = "IPv4") -> dict[str, Any]:
    return {"metadata": {"name": name or f"{service}-x", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": family,
            "ports": [{"name": port_name, "port": port, "protocol": protocol}],
            "endpoints": list(endpoints)}


def targets(rs: Ruleset, chain: str) -> set[str]:
    """The ip:port a balancing chain can DNAT a new connection to."""
    out = set()
    for rule in rs.chains[chain]:
        for target in re.findall(r"goto (endpoint-\S+?)[,} ]", rule + " "):
            dnat = [r for r in rs.chains[target] if " dnat to " in r]
            out.add(dnat[0].rsplit(" ", 1)[1])
    return out


def chain_for(rs: Ruleset, prefix: str, key: str) -> str:
    found = [c for c in rs.chains if c.startswith(f"{prefix}-") and c.endswith(f"-{key}")]
    assert len(found) == 1, (prefix, key, list(rs.chains))
    return found[0]


def element(rs: Ruleset, map_name: str, key: str) -> str | None:
    """The verdict of ``key`` in a verdict map, with the chain's hash dropped."""
    for e in rs.elements[map_name]:
        k, verdict = e.split(" : ", 1)
        if k == key:
            return re.sub(r"^goto (service|external)-\w{8}-", r"goto \1 ", verdict)
    return None


@dataclass
class Case:
    name: str
    services: list[dict[str, Any]]
    slices: list[dict[str, Any]]
    check: Callable[[Ruleset], None]
    facts: NodeFacts = field(default_factory=lambda: NodeFacts(ME))


def _web_targets(expected: set[str]) -> Callable[[Ruleset], None]:
    def check(rs: Ruleset) -> None:
        assert element(rs, "service-ips", "10.96.0.20 . tcp . 80") == \
            "goto service default/web/tcp/http"
        assert targets(rs, chain_for(rs, "service", "default/web/tcp/http")) == expected
    return check


def _no_rules_for(ip: str) -> Callable[[Ruleset], None]:
    def check(rs: Ruleset) -> None:
        assert not [e for m in rs.elements.values() for e in m if e.startswith(ip)]
        assert not [c for c in rs.chains if c.startswith(("service-", "endpoint-"))
                    and c != "service-endpoints-check"]
        assert ip not in rs.chains["cluster-ips-check"][0]
    return check


def _rejects_without_endpoints(rs: Ruleset) -> None:
    assert element(rs, "service-ips", "10.96.0.20 . tcp . 80") is None
    assert element(rs, "no-endpoint-services", "10.96.0.20 . tcp . 80") == "goto reject-chain"
    assert element(rs, "no-endpoint-nodeports", "tcp . 30080") == "goto reject-chain"


def _drops_when_only_remote(rs: Ruleset) -> None:
    assert element(rs, "service-ips", "10.96.0.20 . tcp . 80") is None
    assert element(rs, "no-endpoint-services", "10.96.0.20 . tcp . 80") == "drop"


def _node_port_masquerades_and_balances_over_all(rs: Ruleset) -> None:
    assert element(rs, "service-nodeports", "tcp . 30080") == "goto external default/web/tcp/http"
    external = rs.chains[chain_for(rs, "external", "default/web/tcp/http")]
    assert external[0] == "jump mark-for-masquerade"
    assert external[1].startswith("goto service-")


def _external_local_keeps_the_client_address(rs: Ruleset) -> None:
    chain = chain_for(rs, "external", "default/web/tcp/http")
    assert "jump mark-for-masquerade" not in rs.chains[chain]
    assert targets(rs, chain) == {"10.42.1.10:8080"}
    assert targets(rs, chain_for(rs, "service", "default/web/tcp/http")) == \
        {"10.42.1.10:8080", "10.42.2.10:8080"}


def _affinity(timeout: int) -> Callable[[Ruleset], None]:
    def check(rs: Ruleset) -> None:
        assert len(rs.sets) == 2
        assert all(f"timeout {timeout}s;" in d and "dynamic" in d for d in rs.sets.values())
        service = rs.chains[chain_for(rs, "service", "default/web/tcp/http")]
        assert sum(r.startswith("ip saddr @affinity-") for r in service) == 2
        for s in rs.sets:
            assert any(f"update @{s} {{ ip saddr }}" in r for c in rs.chains.values() for r in c)
    return check


def _dns_to_listener(rs: Ruleset) -> None:
    for proto, name in (("udp", "dns"), ("tcp", "dns-tcp")):
        chain = chain_for(rs, "service", f"kube-system/kube-dns/{proto}/{name}")
        assert rs.chains[chain] == [f"meta l4proto {proto} dnat to 10.42.1.1:53"]
        assert element(rs, "service-ips", f"10.96.0.10 . {proto} . 53") == \
            f"goto service kube-system/kube-dns/{proto}/{name}"


def _dns_redirected(rs: Ruleset) -> None:
    chain = chain_for(rs, "service", "kube-system/kube-dns/udp/dns")
    assert rs.chains[chain] == ["meta l4proto udp redirect to :5353"]


def _dns_to_endpoints(rs: Ruleset) -> None:
    chain = chain_for(rs, "service", "kube-system/kube-dns/udp/dns")
    assert targets(rs, chain) == {"10.42.1.53:53"}


DNS_PORTS = [{"name": "dns", "port": 53, "protocol": "UDP"},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]
NODE_PORT = [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}]

CASES = [
    Case("a ClusterIP Service balances over every ready endpoint, wherever it runs",
         [svc()], [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER))],
         _web_targets({"10.42.1.10:8080", "10.42.2.10:8080"})),
    Case("endpoints that are not ready are left out",
         [svc()], [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER, ready=False))],
         _web_targets({"10.42.1.10:8080"})),
    Case("an endpoint without conditions counts as ready, as in Kubernetes",
         [svc()], [slice_("web", ep("10.42.1.10", ready=None))],
         _web_targets({"10.42.1.10:8080"})),
    Case("with no ready endpoint, terminating endpoints that still serve are used",
         [svc()], [slice_("web", ep("10.42.1.10", ready=False, serving=True, terminating=True),
                          ep("10.42.2.10", OTHER, ready=False, serving=False))],
         _web_targets({"10.42.1.10:8080"})),
    Case("endpoints of two slices are merged and a repeated address is listed once",
         [svc()], [slice_("web", ep("10.42.1.10"), name="a"),
                   slice_("web", ep("10.42.1.10"), ep("10.42.3.10", THIRD), name="b")],
         _web_targets({"10.42.1.10:8080", "10.42.3.10:8080"})),
    Case("a named port takes each slice's own target port",
         [svc()], [slice_("web", ep("10.42.1.10"), port=8080, name="a"),
                   slice_("web", ep("10.42.2.10", OTHER), port=9090, name="b"),
                   slice_("web", ep("10.42.3.10", THIRD), port_name="metrics", name="c")],
         _web_targets({"10.42.1.10:8080", "10.42.2.10:9090"})),
    Case("IPv6 slices and slices of another Service are ignored",
         [svc()], [slice_("web", ep("10.42.1.10")),
                   slice_("web", ep("fd00::1"), family="IPv6", name="v6"),
                   slice_("other", ep("10.42.9.9"), name="o")],
         _web_targets({"10.42.1.10:8080"})),
    Case("endpoints on an unreachable node drop out at once",
         [svc()], [slice_("web", ep("10.42.2.10", OTHER), ep("10.42.3.10", THIRD))],
         _web_targets({"10.42.3.10:8080"}), NodeFacts(ME, unreachable=frozenset({OTHER}))),
    Case("while some endpoints are unreachable, this node's own are used alone",
         [svc()], [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER),
                          ep("10.42.3.10", THIRD))],
         _web_targets({"10.42.1.10:8080"}), NodeFacts(ME, unreachable=frozenset({OTHER}))),
    Case("an unreachable node whose endpoints were not ready changes nothing",
         [svc()], [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER, ready=False),
                          ep("10.42.3.10", THIRD))],
         _web_targets({"10.42.1.10:8080", "10.42.3.10:8080"}),
         NodeFacts(ME, unreachable=frozenset({OTHER}))),
    Case("a Service with no endpoint rejects on its cluster IP and its node port",
         [svc(type="NodePort", ports=NODE_PORT)], [slice_("web")], _rejects_without_endpoints),
    Case("a Service whose only endpoints are unreachable rejects too",
         [svc(type="NodePort", ports=NODE_PORT)], [slice_("web", ep("10.42.2.10", OTHER))],
         _rejects_without_endpoints, NodeFacts(ME, unreachable=frozenset({OTHER}))),
    Case("internalTrafficPolicy Local keeps only this node's endpoints",
         [svc(internalTrafficPolicy="Local")],
         [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER))],
         _web_targets({"10.42.1.10:8080"})),
    Case("internalTrafficPolicy Local with only other nodes' endpoints drops",
         [svc(internalTrafficPolicy="Local")], [slice_("web", ep("10.42.2.10", OTHER))],
         _drops_when_only_remote),
    Case("a NodePort is masqueraded and goes to the same endpoints as the cluster IP",
         [svc(type="NodePort", ports=NODE_PORT)],
         [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER))],
         _node_port_masquerades_and_balances_over_all),
    Case("externalTrafficPolicy Local keeps the client address and this node's endpoints",
         [svc(type="NodePort", externalTrafficPolicy="Local", ports=NODE_PORT)],
         [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER))],
         _external_local_keeps_the_client_address),
    Case("ClientIP affinity remembers each client's endpoint for the default 10800 s",
         [svc(sessionAffinity="ClientIP")],
         [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER))], _affinity(10800)),
    Case("ClientIP affinity takes its timeout from sessionAffinityConfig",
         [svc(sessionAffinity="ClientIP",
              sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}})],
         [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER))], _affinity(60)),
    Case("a headless Service gets no rules",
         [svc(ip="None")], [slice_("web", ep("10.42.1.10"))], _no_rules_for("10.96.0.20")),
    Case("an ExternalName Service gets no rules",
         [svc(ip=None, type="ExternalName", externalName="example.com")], [],
         _no_rules_for("10.96.0.20")),
    Case("a Service being deleted gets no rules",
         [svc() | {"metadata": {"name": "web", "namespace": "default",
                                "deletionTimestamp": "2026-01-01T00:00:00Z"}}],
         [slice_("web", ep("10.42.1.10"))], _no_rules_for("10.96.0.20")),
    Case("cluster DNS goes to this node's own listener, whatever its endpoints",
         [svc("kube-dns", "10.96.0.10", "kube-system", ports=DNS_PORTS)],
         [slice_("kube-dns", ep("10.42.1.53", OTHER), ns="kube-system", port=53,
                 port_name="dns", protocol="UDP")],
         _dns_to_listener, NodeFacts(ME, dns_listener=("10.42.1.1", 53))),
    Case("a DNS listener on every address is reached by a redirect, not a DNAT to 0.0.0.0",
         [svc("kube-dns", "10.96.0.10", "kube-system", ports=DNS_PORTS)], [],
         _dns_redirected, NodeFacts(ME, dns_listener=("0.0.0.0", 5353))),
    Case("without a DNS listener, cluster DNS goes to its endpoints like any Service",
         [svc("kube-dns", "10.96.0.10", "kube-system", ports=DNS_PORTS)],
         [slice_("kube-dns", ep("10.42.1.53", OTHER), ns="kube-system", port=53,
                 port_name="dns", protocol="UDP")],
         _dns_to_endpoints),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_render(case: Case) -> None:
    case.check(render(case.services, case.slices, case.facts))


def test_a_cluster_ip_is_masqueraded_only_for_clients_outside_the_pod_cidr() -> None:
    rs = render([svc()], [slice_("web", ep("10.42.1.10"))], NodeFacts(ME))
    rules = rs.chains[chain_for(rs, "service", "default/web/tcp/http")]
    assert rules[0] == ("ip daddr 10.96.0.20 tcp dport 80 ip saddr != 10.42.0.0/16 "
                        "jump mark-for-masquerade")
    endpoint = next(c for c in rs.chains if c.startswith("endpoint-"))
    assert rs.chains[endpoint][0] == "ip saddr 10.42.1.10 jump mark-for-masquerade"  # hairpin


def test_unknown_ports_of_a_cluster_ip_are_rejected_and_unallocated_addresses_dropped() -> None:
    rs = render([svc(), svc("b", "10.96.0.3")], [], NodeFacts(ME))
    assert rs.chains["cluster-ips-check"] == [
        "ip daddr { 10.96.0.3, 10.96.0.20 } meta l4proto tcp reject with tcp reset",
        "ip daddr { 10.96.0.3, 10.96.0.20 } reject",
        "ip daddr 10.96.0.0/12 drop"]


def test_a_tcp_connection_to_a_service_without_endpoints_is_reset_and_udp_gets_icmp() -> None:
    # The kernel rate-limits ICMP (about one per second per source): with a bare reject,
    # most TCP clients would wait for their timeout instead of being refused at once.
    rs = render([svc()], [slice_("web")], NodeFacts(ME))
    assert element(rs, "no-endpoint-services", "10.96.0.20 . tcp . 80") == "goto reject-chain"
    assert rs.chains["reject-chain"] == ["meta l4proto tcp reject with tcp reset", "reject"]


def test_the_rules_do_not_depend_on_the_order_of_their_input() -> None:
    services = [svc(), svc("b", "10.96.0.3", sessionAffinity="ClientIP")]
    slices = [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER)),
              slice_("b", ep("10.42.3.10", THIRD))]
    one = render(services, slices, NodeFacts(ME)).text()
    assert render(services[::-1], slices[::-1], NodeFacts(ME)).text() == one


def test_a_first_transaction_replaces_the_table_and_later_ones_change_only_what_differs() -> None:
    before = render([svc(sessionAffinity="ClientIP"), svc("other", "10.96.0.3")],
                    [slice_("web", ep("10.42.1.10"), ep("10.42.2.10", OTHER)),
                     slice_("other", ep("10.42.3.10", THIRD))], NodeFacts(ME))
    after = render([svc(sessionAffinity="ClientIP"), svc("other", "10.96.0.3")],
                   [slice_("web", ep("10.42.1.10")), slice_("other", ep("10.42.3.10", THIRD))],
                   NodeFacts(ME))
    first = before.script(None).splitlines()
    assert first[:3] == ["add table ip shoal-services", "delete table ip shoal-services",
                         "add table ip shoal-services"]
    update = after.script(before).splitlines()
    assert "delete table ip shoal-services" not in update
    gone = [c for c in before.chains if c not in after.chains]
    assert len(gone) == 1 and "10.42.2.10" in gone[0]
    stale_set = next(s for s in before.sets if s not in after.sets)
    assert update[-3:] == [f"flush chain ip shoal-services {gone[0]}",
                           f"delete chain ip shoal-services {gone[0]}",
                           f"delete set ip shoal-services {stale_set}"]
    web = chain_for(after, "service", "default/web/tcp/http")
    assert f"flush chain ip shoal-services {web}" in update
    untouched = [chain_for(after, "service", "default/other/tcp/http"), "services"]
    assert not [line for line in update if any(c in line.split() for c in untouched)]
    kept = next(iter(after.sets))
    assert not [line for line in update  # a client keeps its endpoint across updates
                if line.startswith(("add set", "flush set", "delete set")) and kept in line]
    assert not [line for line in update if "element" in line]  # the cluster IP's entry stays


def test_a_changed_map_entry_is_deleted_by_its_key_and_added_again() -> None:
    before = render([svc()], [slice_("web", ep("10.42.1.10"))], NodeFacts(ME))
    after = render([svc()], [slice_("web")], NodeFacts(ME))
    update = after.script(before).splitlines()
    assert "delete element ip shoal-services service-ips { 10.96.0.20 . tcp . 80 }" in update
    assert ("add element ip shoal-services no-endpoint-services "
            "{ 10.96.0.20 . tcp . 80 : goto reject-chain }") in update
