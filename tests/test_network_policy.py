"""NetworkPolicy: validation, the nftables rules rendered from a replica, and a real check in namespaces."""

from __future__ import annotations

import asyncio
import copy
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.model.defaults import apply_defaults
from shoal.model.kinds import KindRegistry
from shoal.model.validation import validate
from shoal.net.network_policy import NetworkPolicyEnforcer, NetworkPolicySettings
from shoal.net.network_policy_rules import NodeFacts, render
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools import netns
from tests.tools.stores import ManualClock

KIND = KindRegistry().by_kind("networking.k8s.io/v1", "NetworkPolicy")
FACTS = NodeFacts("n1", dns=("10.42.0.1", 53), dns_service_ip="10.96.0.10")


def pod(ns: str, name: str, ip: str, node: str = "n1", labels: dict[str, str] | None = None,
        ports: tuple[tuple[str, int], ...] = (), host_network: bool = False) -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": name, "labels": labels or {}},
            "spec": {"nodeName": node, "hostNetwork": host_network, "containers": [
                {"name": "c", "ports": [{"name": n, "containerPort": p} for n, p in ports]}]},
            "status": {"podIP": ip, "phase": "Running"}}


def policy(spec: dict[str, Any], ns: str = "default", name: str = "p") -> dict[str, Any]:
    obj = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"namespace": ns, "name": name}, "spec": spec}
    assert KIND is not None
    apply_defaults(KIND, obj)
    return obj


NAMESPACES = [{"metadata": {"name": n, "labels": {"team": t}}}
              for n, t in (("default", "a"), ("other", "b"), ("kube-system", "sys"))]
WEB = pod("default", "web", "10.42.0.5", labels={"app": "web"}, ports=(("http", 8080),))
CLIENT = pod("default", "client", "10.42.1.7", node="n2", labels={"role": "client"})
OTHER = pod("other", "x", "10.42.0.9", labels={"role": "client"})
PODS = [WEB, CLIENT, OTHER]


def chain(ruleset: Any, prefix: str, name: str) -> list[str]:
    [rules] = [r for c, r in ruleset.chains.items() if c.startswith(prefix) and c.endswith(name)]
    return list(rules)


# --- validation -------------------------------------------------------------------------


def test_a_policy_with_bad_ports_peers_and_blocks_is_refused_field_by_field() -> None:
    assert KIND is not None
    obj = policy({"podSelector": {}, "egress": [{
        "ports": [{"port": "http", "endPort": 90}, {"port": 100, "endPort": 90},
                  {"protocol": "ICMP"}, {"endPort": 5}],
        "to": [{}, {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/24", "10.0.0.0/8"]},
                    "podSelector": {}}, {"ipBlock": {"cidr": "nonsense"}}]}],
        "policyTypes": ["Ingress", "Sideways"]})
    causes = {str(c) for c in validate(KIND, obj)}
    assert causes == {
        "spec.egress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is non-numeric",
        "spec.egress[0].ports[1].endPort: Invalid value: 100: must be greater than or equal to `port`",
        'spec.egress[0].ports[2].protocol: Unsupported value: "ICMP": supported values: "TCP", "UDP", "SCTP"',
        "spec.egress[0].ports[3].endPort: Invalid value: 5: may not be specified when `port` is not specified",
        "spec.egress[0].to[0]: Required value: must specify a peer",
        'spec.egress[0].to[1].ipBlock.except[0]: Invalid value: "11.0.0.0/24": must be a strict subset of `cidr`',
        'spec.egress[0].to[1].ipBlock.except[1]: Invalid value: "10.0.0.0/8": must be a strict subset of `cidr`',
        "spec.egress[0].to[1]: Forbidden: may not specify both ipBlock and another peer",
        'spec.egress[0].to[2].ipBlock.cidr: Invalid value: "nonsense": must be a valid CIDR value, '
        "(e.g. 10.9.8.0/24 or 2001:db8::/64)",
        'spec.policyTypes[1]: Unsupported value: "Sideways": supported values: "Ingress", "Egress"',
    }


def test_defaults_are_kubernetes_policy_types_and_tcp() -> None:
    spec = policy({"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]})["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["egress"][0]["ports"][0]["protocol"] == "TCP"
    assert policy({"podSelector": {}})["spec"]["policyTypes"] == ["Ingress"]


# --- rendering --------------------------------------------------------------------------


def test_a_pod_no_policy_selects_is_not_isolated() -> None:
    rules = render(PODS, NAMESPACES, [policy({"podSelector": {"matchLabels": {"app": "db"}}})],
                   FACTS)
    assert set(rules.chains) == {"forward", "input"}
    assert rules.chains["forward"] == ["ct state established,related accept"]


def test_ingress_allows_selected_pods_of_any_node_on_a_named_port_and_drops_the_rest() -> None:
    rules = render(PODS, NAMESPACES, [policy({
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"port": "http"}]}]})], FACTS)
    # The client of the other node is matched by its pod IP; "x" is in another namespace.
    assert chain(rules, "ingress", "default-web") == [
        "fib saddr type local accept",
        "ip saddr 10.42.1.7 meta l4proto tcp th dport 8080 accept",
        "drop"]
    assert "ip daddr vmap { 10.42.0.5 : jump ingress-" in rules.chains["forward"][-1]
    assert not any(c.startswith("egress") for c in rules.chains)


def test_namespace_selector_ip_block_with_except_and_port_ranges() -> None:
    rules = render(PODS, NAMESPACES, [policy({
        "podSelector": {},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}},
                              {"ipBlock": {"cidr": "192.168.0.0/16",
                                           "except": ["192.168.5.0/24", "192.168.9.0/24"]}}],
                     "ports": [{"protocol": "UDP", "port": 9000, "endPort": 9010}]}]})], FACTS)
    assert chain(rules, "ingress", "default-web") == [
        "fib saddr type local accept",
        "ip saddr 10.42.0.9 meta l4proto udp th dport 9000-9010 accept",
        "ip saddr 192.168.0.0/16 ip saddr != { 192.168.5.0/24, 192.168.9.0/24 } "
        "meta l4proto udp th dport 9000-9010 accept",
        "drop"]
    # A pod of another node is never given chains here: its own node enforces it.
    assert not any(c.endswith("default-client") for c in rules.chains)


def test_an_empty_ingress_list_denies_all_and_an_empty_rule_allows_all() -> None:
    deny = render(PODS, NAMESPACES, [policy({"podSelector": {}, "policyTypes": ["Ingress"]})],
                  FACTS)
    assert chain(deny, "ingress", "default-web") == ["fib saddr type local accept", "drop"]
    both = render(PODS, NAMESPACES, [
        policy({"podSelector": {}, "policyTypes": ["Ingress"]}, name="deny"),
        policy({"podSelector": {}, "ingress": [{}]}, name="allow")], FACTS)
    assert chain(both, "ingress", "default-web") == ["fib saddr type local accept", "accept",
                                                      "drop"]


def test_egress_gets_no_implicit_dns_but_a_rule_to_kube_system_port_53_allows_it() -> None:
    deny = render(PODS, NAMESPACES, [policy({"podSelector": {}, "policyTypes": ["Egress"]})],
                  FACTS)
    assert chain(deny, "egress", "default-web") == ["drop"]
    assert "ip saddr vmap { 10.42.0.5 : jump egress-" in deny.chains["input"][-1]
    dns = render(PODS, NAMESPACES, [policy({"podSelector": {}, "egress": [
        {"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}],
         "ports": [{"protocol": "UDP", "port": 53}]},
        {"to": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]})], FACTS)
    assert chain(dns, "egress", "default-web") == [
        "ip daddr 10.42.1.7 return",
        "ip daddr 10.42.0.1 meta l4proto { tcp, udp } th dport 53 return",
        "drop"]


def test_host_network_and_process_runtime_pods_are_neither_enforced_nor_peers() -> None:
    pods = [pod("default", "h", "10.42.0.20", labels={"app": "web"}, host_network=True),
            pod("default", "proc", "192.168.1.10", labels={"app": "web"})]
    rules = render(pods, NAMESPACES, [policy({"podSelector": {}})], FACTS)
    assert set(rules.chains) == {"forward", "input"}


def test_render_of_100_policies_over_100_pods_is_fast() -> None:
    pods = [pod("default", f"p{i}", f"10.42.{i // 50}.{i % 50 + 2}", node=f"n{i % 2 + 1}",
                labels={"app": f"a{i % 10}", "tier": f"t{i % 3}"}, ports=(("http", 8080),))
            for i in range(100)]
    policies = [policy({"podSelector": {"matchLabels": {"app": f"a{i % 10}"}},
                        "policyTypes": ["Ingress", "Egress"],
                        "ingress": [{"from": [{"podSelector": {"matchLabels": {"tier": f"t{i % 3}"}}}],
                                     "ports": [{"port": "http"}, {"port": 9000 + i}]}],
                        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]},
                       name=f"p{i}") for i in range(100)]
    started = time.perf_counter()
    rules = render(pods, NAMESPACES, policies, FACTS)
    elapsed = time.perf_counter() - started
    assert len([c for c in rules.chains if c.startswith("ingress")]) == 50  # this node's half
    assert len(rules.sets) < 20  # peers are named sets, shared by every chain that uses them
    assert elapsed < 1.0, elapsed  # ~0.07 s on an idle core


# --- a real check: three namespaces, nft in the middle one --------------------------------

SERVER = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"ok"); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""
CONNECT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.7) as s:
        print(s.recv(2).decode())
except OSError as e:
    print(type(e).__name__)
"""


class _Router:
    """A "node" namespace routing between a "pod" (10.42.0.5) and a "client" (10.42.1.7)."""

    def __init__(self) -> None:
        tag = f"np{os.getpid() % 100000}"
        self.node, self.pod, self.client = (f"{tag}{x}" for x in ("n", "p", "c"))
        self.procs: list[subprocess.Popen[str]] = []
        for ns in (self.node, self.pod, self.client):
            netns.sh("ip", "netns", "add", ns)
        for ns, host_addr, addr in ((self.pod, "10.42.0.1", "10.42.0.5"),
                                    (self.client, "10.42.1.1", "10.42.1.7")):
            outer, inner = f"{ns}o", f"{ns}i"
            netns.sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            netns.sh("ip", "link", "set", outer, "netns", self.node)
            netns.sh("ip", "link", "set", inner, "netns", ns)
            netns.sh(*self.ex(self.node), "ip", "addr", "add", f"{host_addr}/24", "dev", outer)
            netns.sh(*self.ex(self.node), "ip", "link", "set", outer, "up")
            netns.sh(*self.ex(ns), "ip", "addr", "add", f"{addr}/24", "dev", inner)
            netns.sh(*self.ex(ns), "ip", "link", "set", inner, "up")
            netns.sh(*self.ex(ns), "ip", "route", "add", "default", "via", host_addr)
        netns.sh(*self.ex(self.node), "sysctl", "-qw", "net.ipv4.ip_forward=1")

    @staticmethod
    def ex(ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def serve(self, ns: str, *ports: int) -> None:
        proc = subprocess.Popen([*self.ex(ns), sys.executable, "-c", SERVER, *map(str, ports)],
                                stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def connect(self, ns: str, host: str, port: int) -> str:
        return netns.sh(*self.ex(ns), sys.executable, "-c", CONNECT, host, str(port)).stdout.strip()

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in (self.node, self.pod, self.client):
            netns.sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def router() -> Iterator[_Router]:
    netns.require()
    if shutil.which("nft") is None:
        if netns._in_ci():
            pytest.fail("nft is missing (CI=true: the bootstrap installs nftables)")
        pytest.skip("nft is missing")
    r = _Router()
    try:
        yield r
    finally:
        r.close()


def test_in_real_namespaces_a_denied_connection_fails_and_an_allowed_one_works(
    router: _Router,
) -> None:
    router.serve(router.pod, 8080, 9090)
    router.serve(router.client, 7000)
    assert router.connect(router.client, "10.42.0.5", 9090) == "ok"  # no policy yet
    rules = render(PODS, NAMESPACES, [policy({
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"port": "http"}]}]})], FACTS)
    applied = subprocess.run([*router.ex(router.node), "nft", "-f", "-"], input=rules.text(),
                             capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert router.connect(router.client, "10.42.0.5", 8080) == "ok"  # allowed (and its replies)
    assert router.connect(router.client, "10.42.0.5", 9090) == "TimeoutError"  # port not allowed
    assert router.connect(router.pod, "10.42.1.7", 7000) == "TimeoutError"  # egress denied
    # Replacing the table is atomic and idempotent.
    again = subprocess.run([*router.ex(router.node), "nft", "-f", "-"], input=rules.text(),
                           capture_output=True, text=True)
    assert again.returncode == 0, again.stderr


# --- the enforcer, in process, on a replica (nft -c checks what it would apply) -----------


def _nft_check_usable() -> None:
    if shutil.which("nft") is None or os.geteuid() != 0:
        if netns._in_ci():
            pytest.fail("nft and root are needed (CI=true: the bootstrap installs nftables)")
        pytest.skip("nft and root are needed")


REGISTRY = KindRegistry()


def kind(api_version: str, name: str) -> Any:
    k = REGISTRY.by_kind(api_version, name)
    assert k is not None
    return k


async def side(peer: str, pods: list[dict[str, Any]]) -> ObjectStore:
    """One peer's store holding ``pods`` (created, then given their status)."""
    store = ObjectStore(Replica(None, peer, clock=ManualClock()), REGISTRY)
    await store.create(kind("v1", "Namespace"), {"metadata": {"name": "default"}})
    for p in pods:
        obj = copy.deepcopy(p)
        obj["spec"]["containers"][0]["image"] = "busybox"
        created = await store.create(kind("v1", "Pod"), obj)
        created["status"] = p["status"]
        await store.update(kind("v1", "Pod"), created, "default", p["metadata"]["name"],
                           subresource="status")
    return store


def enforcer_of(store: ObjectStore, node: str) -> NetworkPolicyEnforcer:
    return NetworkPolicyEnforcer(store.replica, node, NetworkPolicySettings(
        nft=("nft", "-c"), debounce=0.0, dns_listener=lambda: ("10.42.0.1", 53),
        bridge_filtering=False))


def ingress_chains(enforcer: NetworkPolicyEnforcer) -> list[str]:
    assert enforcer.applied is not None
    return [c for c in enforcer.applied.chains if c.startswith("ingress")]


async def test_the_enforcer_renders_what_its_replica_holds_and_follows_changes() -> None:
    _nft_check_usable()
    store = await side("n1", [WEB, CLIENT])
    enforcer = enforcer_of(store, "n1")
    try:
        enforcer.start()
        await _until(lambda: enforcer.applies == 1)
        await store.create(kind("networking.k8s.io/v1", "NetworkPolicy"), policy({
            "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"]}))
        await _until(lambda: enforcer.applies == 2)
        # The client runs on n2: not enforced here.
        assert ingress_chains(enforcer) == ["ingress-ZJ2HFEHH-default-web"]
        assert enforcer.last_apply_seconds is not None
    finally:
        await enforcer.stop()
        store.replica.close()


async def test_a_policy_created_on_one_side_of_a_partition_applies_on_the_other_after_the_merge(
) -> None:
    _nft_check_usable()
    web2 = pod("default", "web2", "10.42.1.5", node="n2", labels={"app": "web"})
    a, b = await side("a", [WEB, web2]), await side("b", [WEB, web2])
    on_a, on_b = enforcer_of(a, "n1"), enforcer_of(b, "n2")
    try:
        on_a.start()
        on_b.start()
        await a.create(kind("networking.k8s.io/v1", "NetworkPolicy"), policy({
            "podSelector": {"matchLabels": {"app": "web"}}}))
        await _until(lambda: on_a.applied is not None and len(ingress_chains(on_a)) == 1)
        await _until(lambda: on_b.applies == 1)
        assert ingress_chains(on_b) == []  # the other side does not know the policy yet
        for resource in a.replica.resources():  # the merge, as anti-entropy hands it over
            for (ns, name), entry in a.replica.iter_entries(resource):
                merged = b.replica.merge(resource, ns, name, entry.document())
                if merged is not None:
                    await merged[1]
        await _until(lambda: len(ingress_chains(on_b)) == 1)
        assert ingress_chains(on_b)[0].endswith("default-web2")
    finally:
        for e in (on_a, on_b):
            await e.stop()
        for s in (a, b):
            s.replica.close()


def test_nft_accepts_overlapping_excepts_and_two_pods_with_one_address() -> None:
    _nft_check_usable()
    stale = pod("default", "old-web", "10.42.0.5", labels={"app": "web"})  # same IP as web
    rules = render([*PODS, stale], NAMESPACES, [policy({"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "10.1.2.0/24"]}},
        {"ipBlock": {"cidr": "0.0.0.0/0"}}]}]})], FACTS)
    assert "ip saddr 10.0.0.0/8 ip saddr != 10.1.0.0/16 accept" in chain(rules, "ingress", "web")
    assert rules.chains["forward"][-1].count("10.42.0.5 :") == 1
    checked = subprocess.run(["nft", "-c", "-f", "-"], input=rules.text(), capture_output=True,
                             text=True)
    assert checked.returncode == 0, checked.stderr


async def _until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
