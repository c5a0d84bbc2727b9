"""Cluster IPs and node ports for Services.

An address is derived from a hash of the Service's namespace and name, then
probed linearly past the ones in use, so two peers that create the same Service
while apart usually pick the same address.

Two *different* Services created on two sides of a partition may still pick the
same address (each side probes past only what it can see). After the merge,
:func:`repairs` decides, the same way on every peer, which of them keeps it: a
reserved owner (``default/kubernetes`` for 10.96.0.1, ``kube-system/kube-dns``
for 10.96.0.10), then the older ``creationTimestamp``, then the smaller uid. The
others are given a new address (``shoal.control.service_ip_repair`` writes it).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.model.validation import INVALID, Cause

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/12")
NODE_PORT_RANGE = range(30000, 32768)
KUBERNETES_IP = str(SERVICE_CIDR.network_address + 1)
"""The `default/kubernetes` Service's address, by convention the first of the range."""
DNS_IP = str(SERVICE_CIDR.network_address + 10)
"""The cluster DNS Service's address (`kube-system/kube-dns`), as kubeadm's default."""
RESERVED = {KUBERNETES_IP: ("default", "kubernetes"), DNS_IP: ("kube-system", "kube-dns")}
"""Addresses that only their named Service may hold: never handed out to another one."""


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


def allocate_cluster_ip(namespace: str, name: str, used: set[str]) -> str:
    size = SERVICE_CIDR.num_addresses - 2  # not the network nor the broadcast address
    # .1 is the `kubernetes` Service's; start probing after it.
    start = _hash(f"{namespace}/{name}") % (size - 1)
    for i in range(size - 1):
        ip = str(SERVICE_CIDR.network_address + 2 + (start + i) % (size - 1))
        owner = RESERVED.get(ip)
        if ip not in used and (owner is None or owner == (namespace, name)):
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


def _node_ports(spec: Mapping[str, Any]) -> list[int]:
    return [p["nodePort"] for p in spec.get("ports") or []
            if isinstance(p, dict) and isinstance(p.get("nodePort"), int) and p["nodePort"]]


def _used(others: Iterable[Mapping[str, Any]]) -> tuple[set[str], set[int]]:
    ips: set[str] = set()
    ports: set[int] = set()
    for o in others:
        ospec = o.get("spec") or {}
        if ospec.get("clusterIP") and ospec["clusterIP"] != "None":
            ips.add(ospec["clusterIP"])
        ports.update(_node_ports(ospec))
    return ips, ports


def assign(service: dict[str, Any], others: Iterable[dict[str, Any]]) -> None:
    """Fill in spec.clusterIP(s) and node ports that the Service lacks."""
    spec = service.setdefault("spec", {})
    meta = service.get("metadata") or {}
    stype = spec.get("type", "ClusterIP")
    used_ips, used_ports = _used(others)
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


def clashes(service: Mapping[str, Any], others: Iterable[Mapping[str, Any]]) -> list[Cause]:
    """A new Service's explicit cluster IP or node ports that this replica knows are taken,
    with Kubernetes' messages. (Two sides of a partition cannot see each other's: that is
    what :func:`repairs` is for.)"""
    spec = service.get("spec") or {}
    used_ips, used_ports = _used(others)
    out = []
    ip = spec.get("clusterIP")
    if RESERVED.get(str(ip)) == _key(service):
        used_ips.discard(str(ip))  # the owner always gets it; the repair moves the holder
    if ip and ip != "None" and ip in used_ips:
        out.append(Cause(INVALID, f'Invalid value: []string{{"{ip}"}}: failed to allocate IP '
                                  f"{ip}: provided IP is already allocated", "spec.clusterIPs"))
    for i, p in enumerate(spec.get("ports") or []):
        port = p.get("nodePort") if isinstance(p, dict) else None
        if isinstance(port, int) and port in used_ports:
            out.append(Cause(INVALID, f"Invalid value: {port}: provided port is already "
                                      "allocated", f"spec.ports[{i}].nodePort"))
    return out


# -- after a merge ---------------------------------------------------------------


def _key(svc: Mapping[str, Any]) -> tuple[str, str]:
    m = svc.get("metadata") or {}
    return str(m.get("namespace", "")), str(m.get("name", ""))


def keeper_rank(svc: Mapping[str, Any], ip: str | None = None) -> tuple[int, str, str]:
    """Sort key among Services that share an address: the first keeps it."""
    m = svc.get("metadata") or {}
    reserved_owner = ip is not None and RESERVED.get(ip) == _key(svc)
    return (0 if reserved_owner else 1, str(m.get("creationTimestamp") or ""), str(m.get("uid")))


@dataclass
class Repair:
    """What one Service must give up, and what it gets instead."""

    namespace: str
    name: str
    uid: str
    cluster_ip: tuple[str, str] | None = None
    """(the address it shared, its new address)."""
    node_ports: dict[int, int] = field(default_factory=dict)
    """Shared node port -> its new node port."""
    keepers: dict[str, str] = field(default_factory=dict)
    """The address or port it lost -> ``namespace/name`` of the Service that keeps it."""


def repairs(services: Iterable[Mapping[str, Any]]) -> list[Repair]:
    """The Services that must move off a cluster IP or node port another Service also holds.

    A pure function of the set of Services (not of their order), so every peer that
    holds the same replica decides the same. New addresses are chosen past every
    address in use, including those given out earlier in the same call.
    """
    svcs = sorted(services, key=lambda s: (_key(s), str((s.get("metadata") or {}).get("uid"))))
    used_ips, used_ports = _used(svcs)
    by_ip: dict[str, list[Mapping[str, Any]]] = {}
    by_port: dict[int, list[Mapping[str, Any]]] = {}
    for s in svcs:
        spec = s.get("spec") or {}
        ip = spec.get("clusterIP")
        if ip and ip != "None" and spec.get("type") != "ExternalName":
            by_ip.setdefault(str(ip), []).append(s)
        for port in set(_node_ports(spec)):  # one Service may use a port for TCP and UDP
            by_port.setdefault(port, []).append(s)
    out: dict[str, Repair] = {}

    def repair_of(s: Mapping[str, Any]) -> Repair:
        ns, name = _key(s)
        uid = str((s.get("metadata") or {}).get("uid"))
        return out.setdefault(uid, Repair(ns, name, uid))

    for ip, holders in sorted(by_ip.items()):
        if len(holders) < 2:
            continue
        holders = sorted(holders, key=lambda s: keeper_rank(s, ip))
        keeper = "/".join(_key(holders[0]))
        for s in holders[1:]:
            r = repair_of(s)
            new = allocate_cluster_ip(r.namespace, r.name, used_ips)
            used_ips.add(new)
            r.cluster_ip = (ip, new)
            r.keepers[ip] = keeper
    for port, holders in sorted(by_port.items()):
        if len(holders) < 2:
            continue
        holders = sorted(holders, key=keeper_rank)
        keeper = "/".join(_key(holders[0]))
        for s in holders[1:]:
            r = repair_of(s)
            new_port = allocate_node_port(r.namespace, r.name, port, used_ports)
            used_ports.add(new_port)
            r.node_ports[port] = new_port
            r.keepers[str(port)] = keeper
    return sorted(out.values(), key=lambda r: (r.namespace, r.name, r.uid))


def apply(service: dict[str, Any], repair: Repair) -> None:
    """Rewrite ``service`` (a copy) to the addresses ``repair`` gives it."""
    spec = service.setdefault("spec", {})
    if repair.cluster_ip is not None and spec.get("clusterIP") == repair.cluster_ip[0]:
        spec["clusterIP"] = repair.cluster_ip[1]
        spec["clusterIPs"] = [repair.cluster_ip[1], *[
            ip for ip in spec.get("clusterIPs") or [] if ip != repair.cluster_ip[0]]]
    for p in spec.get("ports") or []:
        if isinstance(p, dict) and p.get("nodePort") in repair.node_ports:
            p["nodePort"] = repair.node_ports[p["nodePort"]]
