"""The Service proxy against real nftables, in network namespaces.

One node namespace holds the pod bridge (``shoal0``, 10.42.1.1/24) and the
``ip shoal-services`` table; pod namespaces hang off the bridge with tiny TCP
servers that answer with their name and the address they saw; an ``ext``
namespace on the lab's bridge stands for a machine outside the cluster. The
proxy runs in this process over an in-memory replica and programs the node
namespace through ``ip netns exec``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shoal.model.kinds import KindRegistry
from shoal.net import service_proxy as sp
from shoal.net.service_rules import TABLE
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.netns import Namespace, NetnsLab, _in_ci, require, sh

pytestmark = pytest.mark.slow

NODE = "node-a"
OTHER_NODE = "node-b"
GATEWAY = "10.42.1.1"
POD_PORT = 8080

SERVER = """
import socket, sys
name = sys.argv[1].encode()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(128)
while True:
    c, peer = s.accept()
    try:
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\n" + name + b" " + peer[0].encode())
    finally:
        c.close()
"""

UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
while True:
    data, peer = s.recvfrom(4096)
    s.sendto(b"echo " + data, peer)
"""

# Prints one line of JSON: each request's body (or the error's name) and its seconds.
CLIENT = """
import json, socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(n):
    t0 = time.perf_counter()
    try:
        if sys.argv[4:] == ["udp"]:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(2)
            s.sendto(b"ping", (host, port))
            body = s.recv(4096).decode()
        else:
            s = socket.create_connection((host, port), timeout=2)
            s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            body = data.split(b"\\r\\n\\r\\n", 1)[-1].decode()
        s.close()
    except OSError as e:
        body = type(e).__name__
    out.append([body, time.perf_counter() - t0])
print(json.dumps(out))
"""


@dataclass
class Cluster:
    lab: NetnsLab
    node: Namespace
    ext: Namespace
    pods: dict[str, Namespace]

    def nft(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.node.name, "nft")

    def requests(self, ns: Namespace, host: str, port: int, n: int,
                 udp: bool = False) -> list[tuple[str, float]]:
        args = [sys.executable, "-c", CLIENT, host, str(port), str(n), *(["udp"] if udp else [])]
        r = ns.run(args, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return [(body, seconds) for body, seconds in json.loads(r.stdout)]

    def answers(self, ns: Namespace, host: str, port: int, n: int) -> list[str]:
        """Who answered each of ``n`` new connections (the pod's name, or the error)."""
        return [body.split(" ")[0] for body, _ in self.requests(ns, host, port, n)]


def _add_pod(lab: NetnsLab, node: Namespace, name: str, ip: str) -> Namespace:
    i = len(lab.namespaces)
    pod = Namespace(name=f"{lab.prefix}-{name}", ip=ip, host_if=f"{lab.prefix}v{i}",
                    ns_if="eth0")
    lab.namespaces.append(pod)  # the lab kills its processes and deletes it on close
    sh("ip", "netns", "add", pod.name)
    in_node = ["ip", "netns", "exec", node.name]
    in_pod = ["ip", "netns", "exec", pod.name]
    sh(*in_node, "ip", "link", "add", pod.host_if, "type", "veth", "peer", "name", "eth0",
       "netns", pod.name)
    sh(*in_node, "ip", "link", "set", pod.host_if, "master", "shoal0", "up")
    # As the CNI bridge plugin's hairpinMode: a pod's own packets may come back to it.
    sh(*in_node, "ip", "link", "set", pod.host_if, "type", "bridge_slave", "hairpin", "on")
    sh(*in_pod, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
    sh(*in_pod, "ip", "link", "set", "eth0", "up")
    sh(*in_pod, "ip", "link", "set", "lo", "up")
    sh(*in_pod, "ip", "route", "add", "default", "via", GATEWAY)
    return pod


def _wait_listening(ns: Namespace, port: int) -> None:
    for _ in range(100):
        r = ns.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
        if r.stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {ns.name}:{port}")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    require()
    why = sp.nft_usable()
    if why is not None:
        if _in_ci():
            pytest.fail(f"{why} (CI=true: the bootstrap installs nftables)")
        pytest.skip(why)
    lab = NetnsLab()
    try:
        node, ext = lab.add("node"), lab.add("ext")
        in_node = ["ip", "netns", "exec", node.name]
        sh(*in_node, "ip", "link", "add", "shoal0", "type", "bridge")
        sh(*in_node, "ip", "addr", "add", f"{GATEWAY}/24", "dev", "shoal0")
        sh(*in_node, "ip", "link", "set", "shoal0", "up")
        sh(*in_node, "ip", "route", "add", "default", "via", lab.gateway)
        sh(*in_node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        pods = {name: _add_pod(lab, node, name, f"10.42.1.{10 + i}")
                for i, name in enumerate(["p0", "p1", "p2", "client"])}
        for name in ("p0", "p1", "p2"):
            pods[name].popen([sys.executable, "-c", SERVER, name, str(POD_PORT)])
        node.popen([sys.executable, "-c", UDP_ECHO, GATEWAY, "5353"])
        for name in ("p0", "p1", "p2"):
            _wait_listening(pods[name], POD_PORT)
        yield Cluster(lab, node, ext, pods)
    finally:
        lab.close()


def service(name: str, cluster_ip: str, **spec: Any) -> dict[str, Any]:
    ports = spec.pop("ports", [{"name": "http", "port": 80, "targetPort": POD_PORT}])
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": cluster_ip, "ports": ports, **spec}}


def endpoint_slice(service_name: str, pods: dict[str, str],
                   ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A slice with one ready endpoint per pod: {"10.42.1.10": "node-a", ...}."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{service_name}-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service_name}},
            "addressType": "IPv4",
            "ports": ports or [{"name": "http", "port": POD_PORT, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": True}}
                          for ip, node in pods.items()]}


class Harness:
    """An in-memory replica and a running proxy programming the node namespace."""

    def __init__(self, cluster: Cluster) -> None:
        self.registry = KindRegistry()
        self.store = ObjectStore(Replica(None, NODE), self.registry)
        self.unreachable: set[str] = set()
        self.proxy = sp.ServiceProxy(self.store.replica, NODE, sp.ProxySettings(
            nft=cluster.nft(), membership_poll=0.2,
            dns_listener=lambda: (GATEWAY, 5353),
            is_reachable=lambda node: node not in self.unreachable))

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        api_version = obj["apiVersion"]
        kind = self.registry.by_kind(api_version, obj["kind"])
        assert kind is not None
        return await self.store.create(kind, obj, obj["metadata"].get("namespace"))

    async def replace_slice(self, obj: dict[str, Any]) -> None:
        kind = self.registry.by_kind("discovery.k8s.io/v1", "EndpointSlice")
        assert kind is not None
        current = self.store.find(kind, "default", obj["metadata"]["name"])
        assert current is not None
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        await self.store.update(kind, obj, "default", obj["metadata"]["name"])

    async def applied(self) -> None:
        """Wait until the proxy has applied the replica's current state."""
        await until(self.proxy.up_to_date)


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def harness(cluster: Cluster) -> Any:
    h = Harness(cluster)
    for ns in ("default", "kube-system"):
        await h.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    h.proxy.start()
    await h.applied()
    yield h
    await h.proxy.stop()
    listed = cluster.node.run(["nft", "list", "tables"], capture_output=True, text=True)
    assert TABLE not in listed.stdout  # stop() leaves nothing behind


async def test_a_cluster_ip_answers_from_every_ready_endpoint_for_pods_and_the_host(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("web", "10.96.0.20"))
    await harness.create(endpoint_slice("web", {"10.42.1.10": NODE, "10.42.1.11": NODE,
                                                "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    from_pod = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.20",
                                       80, 40)
    assert set(from_pod) == {"p0", "p1", "p2"}
    from_host = await asyncio.to_thread(cluster.answers, cluster.node, "10.96.0.20", 80, 40)
    assert set(from_host) == {"p0", "p1", "p2"}


async def test_a_pod_reaches_itself_through_its_service_masqueraded_as_the_gateway(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("self", "10.96.0.21"))
    await harness.create(endpoint_slice("self", {"10.42.1.10": NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.requests, cluster.pods["p0"], "10.96.0.21", 80, 3)
    assert [body for body, _ in got] == [f"p0 {GATEWAY}"] * 3


async def test_a_node_port_answers_from_outside_the_cluster_on_the_node_address(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("np", "10.96.0.22", type="NodePort", ports=[
        {"name": "http", "port": 80, "targetPort": POD_PORT, "nodePort": 30080}]))
    await harness.create(endpoint_slice("np", {"10.42.1.10": NODE, "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.ext, cluster.node.ip, 30080, 30)
    assert set(got) == {"p0", "p2"}


async def test_client_ip_affinity_keeps_each_client_on_one_endpoint(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("sticky", "10.96.0.23", sessionAffinity="ClientIP"))
    await harness.create(endpoint_slice("sticky", {"10.42.1.10": NODE, "10.42.1.11": NODE,
                                                   "10.42.1.12": NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.23", 80, 20)
    assert len(set(got)) == 1 and got[0] in ("p0", "p1", "p2")


async def test_internal_traffic_policy_local_uses_only_this_nodes_endpoints(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("local", "10.96.0.24", internalTrafficPolicy="Local"))
    await harness.create(endpoint_slice("local", {"10.42.1.10": NODE,
                                                  "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.24", 80, 20)
    assert set(got) == {"p0"}


async def test_a_service_without_endpoints_refuses_connections_instead_of_hanging(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("empty", "10.96.0.25"))
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.25", 80, 2)
    assert got == ["ConnectionRefusedError"] * 2


async def test_cluster_dns_goes_to_this_nodes_own_listener(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("kube-dns", "10.96.0.10", ports=[
        {"name": "dns", "port": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]) | {
        "metadata": {"name": "kube-dns", "namespace": "kube-system"}})
    await harness.applied()
    got = await asyncio.to_thread(cluster.requests, cluster.pods["client"], "10.96.0.10", 53, 2,
                                  True)
    assert [body for body, _ in got] == ["echo ping"] * 2


async def test_an_unreachable_nodes_endpoints_drop_out_and_return_when_it_is_back(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("part", "10.96.0.26"))
    await harness.create(endpoint_slice("part", {"10.42.1.10": NODE, "10.42.1.12": OTHER_NODE}))
    await harness.applied()
    harness.unreachable.add(OTHER_NODE)
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.26", 80, 20)
    assert set(got) == {"p0"}
    harness.unreachable.clear()
    await harness.applied()
    got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.26", 80, 30)
    assert set(got) == {"p0", "p2"}


async def test_an_endpoint_slice_change_reaches_the_rules_and_the_traffic(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("moving", "10.96.0.27"))
    await harness.create(endpoint_slice("moving", {"10.42.1.10": NODE}))
    await harness.applied()
    delays = []
    for pods in ({"10.42.1.11": NODE}, {"10.42.1.12": NODE}, {"10.42.1.10": NODE}):
        t0 = time.monotonic()
        await harness.replace_slice(endpoint_slice("moving", pods))
        await harness.applied()
        delays.append(time.monotonic() - t0)
        expected = {"10.42.1.10": "p0", "10.42.1.11": "p1", "10.42.1.12": "p2"}[next(iter(pods))]
        got = await asyncio.to_thread(cluster.answers, cluster.pods["client"], "10.96.0.27",
                                      80, 5)
        assert set(got) == {expected}
    print(f"\nEndpointSlice change to rules applied: {[f'{d * 1000:.1f} ms' for d in delays]}")


async def test_request_latency_through_a_cluster_ip_against_the_pod_ip(
        cluster: Cluster, harness: Harness) -> None:
    await harness.create(service("lat", "10.96.0.28"))
    await harness.create(endpoint_slice("lat", {"10.42.1.10": NODE}))
    await harness.applied()
    client = cluster.pods["client"]
    direct = await asyncio.to_thread(cluster.requests, client, "10.42.1.10", POD_PORT, 200)
    via = await asyncio.to_thread(cluster.requests, client, "10.96.0.28", 80, 200)
    assert {b.split(" ")[0] for b, _ in direct} == {"p0"} == {b.split(" ")[0] for b, _ in via}
    d = statistics.median(s for _, s in direct)
    v = statistics.median(s for _, s in via)
    print(f"\nmedian request: pod IP {d * 1e6:.0f} us, cluster IP {v * 1e6:.0f} us, "
          f"ratio {v / d:.2f}")


def test_the_nft_probe_says_why_nftables_is_unusable() -> None:
    assert "missing" in (sp.nft_usable(("shoal-no-such-nft",)) or "")
