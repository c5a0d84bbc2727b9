"""Cluster IPs and node ports for Services.

An address is derived from a hash of the Service's namespace and name, then
probed linearly past the ones in use, so two peers that create the same Service
while apart usually pick the same address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Any

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
NODE_PORT_RANGE = range(30000, 32768)


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def allocate_cluster_ip(namespace: str, name: str, used: set[str]) -> str:
    size = SERVICE_CIDR.num_addresses - 2  # not the network nor the broadcast address
    # .1 is the conventional address of the `kubernetes` Service; start probing after it.
    start = _hash(f"{namespace}/{name}") % (size - 1)
    for i in range(size - 1):
        ip = str(SERVICE_CIDR.network_address + 2 + (start + i) % (size - 1))
        if ip not in used:
            return ip
    raise RuntimeError("the service IP range is exhausted")


def allocate_node_port(namespace: str, name: str, port: int, used: set[int]) -> int:
    n = len(NODE_PORT_RANGE)
    start = _hash(f"{namespace}/{name}/{port}") % n
    for i in range(n):
        p = NODE_PORT_RANGE.start + (start + i) % n
        if p not in used:
            return p
    raise RuntimeError("the node port range is exhausted")


def assign(service: dict[str, Any], others: Iterable[dict[str, Any]]) -> None:
    """Fill in spec.clusterIP(s) and node ports that the Service lacks."""
    spec = service.setdefault("spec", {})
    meta = service.get("metadata") or {}
    stype = spec.get("type", "ClusterIP")
    used_ips: set[str] = set()
    used_ports: set[int] = set()
    for o in others:
        ospec = o.get("spec") or {}
        if ospec.get("clusterIP"):
            used_ips.add(ospec["clusterIP"])
        for p in ospec.get("ports") or []:
            if isinstance(p, dict) and isinstance(p.get("nodePort"), int):
                used_ports.add(p["nodePort"])
    if stype != "ExternalName" and not spec.get("clusterIP"):
        ip = allocate_cluster_ip(meta.get("namespace", ""), meta.get("name", ""), used_ips)
        spec["clusterIP"] = ip
        spec["clusterIPs"] = [ip]
    elif spec.get("clusterIP") and not spec.get("clusterIPs"):
        spec["clusterIPs"] = [spec["clusterIP"]]
    if stype in ("NodePort", "LoadBalancer"):
        for p in spec.get("ports") or []:
            if isinstance(p, dict) and not p.get("nodePort"):
                p["nodePort"] = allocate_node_port(meta.get("namespace", ""), meta.get("name", ""),
                                                   int(p.get("port", 0)), used_ports)
                used_ports.add(p["nodePort"])
