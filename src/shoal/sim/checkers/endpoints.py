"""What each peer's Endpoints and EndpointSlices route to, judged against what runs.

A Service routes to the *ready* endpoints of its peer's own replica (the nodes'
Service rules are programmed from it). This checker reads them as
(node, pod) pairs, from v1 Endpoints ``addresses`` and from EndpointSlice
endpoints with ``conditions.ready``; the two must agree. It also watches, after a
node dies, the moment each live peer stops routing to that node's pods.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from shoal.control.endpoints import SERVICE_NAME_LABEL
from shoal.control.node_lifecycle import NODE_NOT_READY
from shoal.control.pod_state import parse_time
from shoal.sim.cluster import SimNode
from shoal.store.objects import ObjectStore


def _kind(store: ObjectStore, api_version: str, kind: str) -> Any:
    k = store.registry.by_kind(api_version, kind)
    assert k is not None
    return k


def endpoints_ready(store: ObjectStore, namespace: str, service: str) -> set[tuple[str, str]]:
    ep = store.find(_kind(store, "v1", "Endpoints"), namespace, service) or {}
    return {(str(a.get("nodeName")), str(a["targetRef"]["name"]))
            for s in ep.get("subsets") or [] for a in s.get("addresses") or []}


def slices_ready(store: ObjectStore, namespace: str, service: str) -> set[tuple[str, str]]:
    out = set()
    for sl in store.list(_kind(store, "discovery.k8s.io/v1", "EndpointSlice"), namespace):
        if (sl["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) != service:
            continue
        for e in sl.get("endpoints") or []:
            if (e.get("conditions") or {}).get("ready"):
                out.add((str(e.get("nodeName")), str(e["targetRef"]["name"])))
    return out


def ready_endpoints(store: ObjectStore, namespace: str, service: str) -> set[tuple[str, str]]:
    """(node, pod) of the ready endpoints, when Endpoints and EndpointSlices agree on them."""
    ep = endpoints_ready(store, namespace, service)
    return ep if ep == slices_ready(store, namespace, service) else set()


def check_nodes_and_ips(store: ObjectStore, namespace: str, service: str) -> list[str]:
    """Every endpoint names its node, and its address lies in that node's pod CIDR."""
    out = []
    nodes = {n["metadata"]["name"]: n for n in store.list(_kind(store, "v1", "Node"))}
    for sl in store.list(_kind(store, "discovery.k8s.io/v1", "EndpointSlice"), namespace):
        if (sl["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) != service:
            continue
        for e in sl.get("endpoints") or []:
            node = nodes.get(str(e.get("nodeName")))
            cidr = ((node or {}).get("spec") or {}).get("podCIDR")
            if node is None or not cidr:
                out.append(f"{store.replica.node_id}: endpoint {e.get('targetRef')} has no "
                           f"node with a pod CIDR ({e.get('nodeName')})")
            elif ipaddress.ip_address(e["addresses"][0]) not in ipaddress.ip_network(cidr):
                out.append(f"{store.replica.node_id}: {e['addresses'][0]} is outside "
                           f"{e.get('nodeName')}'s {cidr}")
    cidrs = [(n.get("spec") or {}).get("podCIDR") for n in nodes.values()]
    if len(set(cidrs)) != len(cidrs):
        out.append(f"{store.replica.node_id}: two nodes share a pod CIDR: {sorted(map(str, cidrs))}")
    return out


def last_renewal(store: ObjectStore, node: str) -> float:
    lease = store.find(_kind(store, "coordination.k8s.io/v1", "Lease"), "kube-node-lease", node)
    renew = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
    return renew if renew is not None else 0.0


def not_ready_marks(store: ObjectStore, exclude: str) -> int:
    """NodeNotReady events on pods that the replica binds to a node other than ``exclude``."""
    pods = {(p["metadata"].get("namespace"), p["metadata"]["name"]): (p.get("spec") or {}).get(
        "nodeName") for p in store.list(_kind(store, "v1", "Pod"))}
    return sum(1 for e in store.list(_kind(store, "v1", "Event"))
               if e.get("reason") == NODE_NOT_READY and pods.get(
                   (e["involvedObject"].get("namespace"), e["involvedObject"].get("name")),
                   exclude) != exclude)


def pods_on(store: ObjectStore, node: str) -> list[str]:
    return [p["metadata"]["name"] for p in store.list(_kind(store, "v1", "Pod"))
            if (p.get("spec") or {}).get("nodeName") == node]


@dataclass
class LeaveWatch:
    """When each live peer stopped listing the dead node's pods as ready endpoints."""

    node: str
    namespace: str
    service: str
    left_at: dict[str, float] = field(default_factory=dict)

    def sample(self, peers: list[SimNode], now: float) -> bool:
        """Record the peers that no longer route to the node; True once none does."""
        done = True
        for p in peers:
            routed = endpoints_ready(p.store, self.namespace, self.service) | slices_ready(
                p.store, self.namespace, self.service)
            if any(node == self.node for node, _ in routed):
                self.left_at.pop(p.name, None)  # back again: only a lasting leave counts
                done = False
            else:
                self.left_at.setdefault(p.name, now)
        return done
