"""A node in a network namespace for the Service proxy: a pod bridge, pods with servers, a client.

:func:`build` makes one node namespace holding the pod bridge (``shoal0``,
10.42.1.1/24) where the ``ip shoal-services`` table goes, pod namespaces on
the bridge with tiny TCP servers that answer with their name and the address
they saw, and an ``ext`` namespace on the lab's bridge that stands for a
machine outside the cluster. ``ProxyHarness`` runs a real ``ServiceProxy``
over an in-memory replica in this process and programs the node namespace
through ``ip netns exec``. Used by tests/test_service_proxy.py and
bench/service_proxy.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoal.model.kinds import KindRegistry
from shoal.net import service_proxy as sp
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica
from tests.tools.netns import Namespace, NetnsLab, sh

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


def add_pod(lab: NetnsLab, node: Namespace, name: str, ip: str) -> Namespace:
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


def wait_listening(ns: Namespace, port: int) -> None:
    for _ in range(100):
        r = ns.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True)
        if r.stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {ns.name}:{port}")



def build(lab: NetnsLab, pods: tuple[str, ...] = ("p0", "p1", "p2")) -> Cluster:
    """The node, ``ext``, pods with servers (10.42.1.10 up) and a ``client`` pod, in ``lab``."""
    node, ext = lab.add("node"), lab.add("ext")
    in_node = ["ip", "netns", "exec", node.name]
    sh(*in_node, "ip", "link", "add", "shoal0", "type", "bridge")
    sh(*in_node, "ip", "addr", "add", f"{GATEWAY}/24", "dev", "shoal0")
    sh(*in_node, "ip", "link", "set", "shoal0", "up")
    sh(*in_node, "ip", "route", "add", "default", "via", lab.gateway)
    sh(*in_node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    made = {name: add_pod(lab, node, name, f"10.42.1.{10 + i}")
            for i, name in enumerate([*pods, "client"])}
    for name in pods:
        made[name].popen([sys.executable, "-c", SERVER, name, str(POD_PORT)])
    node.popen([sys.executable, "-c", UDP_ECHO, GATEWAY, "5353"])
    for name in pods:
        wait_listening(made[name], POD_PORT)
    return Cluster(lab, node, ext, made)

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


class ProxyHarness:
    """An in-memory replica and a running proxy programming the node namespace."""

    def __init__(self, cluster: Cluster) -> None:
        self.registry = KindRegistry()
        self.store = ObjectStore(Replica(None, NODE), self.registry)
        self.unreachable: set[str] = set()
        self.proxy = sp.ServiceProxy(self.store.replica, NODE, sp.ProxySettings(
            nft=cluster.nft(), membership_poll=0.2,
            forwarding=None,  # the proxy runs here, its rules in the node namespace
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
