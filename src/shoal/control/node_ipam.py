"""Pod CIDRs for Nodes, with no coordinator.

Every Node gets one ``/24`` (``NODE_MASK``) of the cluster CIDR (``shoal server
--cluster-cidr``, default 10.42.0.0/16) in ``spec.podCIDR`` and ``spec.podCIDRs``.
The block is chosen from a hash of the node's name, probing past the blocks other
Nodes hold, so a node usually gets the same block on every peer that could
write it. The preferred actor for the node (rendezvous hashing) writes it.

Two nodes that join on two sides of a partition can pick the same block. After
the merge every peer sees the clash and ranks the holders the same way: the older
Node (``creationTimestamp``), then the smaller name, keeps the block; the others
move to a new one (the only time a node's pod CIDR changes; the API still refuses
the change from clients). The node's pod network follows ``spec.podCIDR``. Nodes
whose CIDR lies outside the cluster CIDR (it was changed) keep it.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from shoal.control import events
from shoal.control.controller import Controller
from shoal.control.ownership import PeerView, SinglePeer, should_act
from shoal.control.reassign import reassign
from shoal.store.change_feed import Change
from shoal.store.objects import ObjectStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_CIDR = "10.42.0.0/16"
NODE_MASK = 24
COMPONENT = "node-ipam"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def blocks(cluster_cidr: str) -> list[Network]:
    """The node blocks of the cluster CIDR, in address order."""
    net = ipaddress.ip_network(cluster_cidr, strict=False)
    mask = NODE_MASK if net.version == 4 else 64
    if net.prefixlen > mask:
        raise ValueError(f"the cluster CIDR {cluster_cidr} is smaller than one node's /{mask}")
    return list(net.subnets(new_prefix=mask))


def allocate(name: str, used: set[str], cluster_cidr: str = DEFAULT_CLUSTER_CIDR) -> str | None:
    """The block for node ``name``: its hash's block, or the next free one; None when full."""
    choices = blocks(cluster_cidr)
    start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % len(choices)
    for i in range(len(choices)):
        cidr = str(choices[(start + i) % len(choices)])
        if cidr not in used:
            return cidr
    return None


def pod_cidr(node: Mapping[str, Any]) -> str | None:
    value = (node.get("spec") or {}).get("podCIDR")
    return value if isinstance(value, str) and value else None


def keeper_rank(node: Mapping[str, Any]) -> tuple[str, str]:
    """Sort key among Nodes that hold the same block: the first keeps it."""
    m = node.get("metadata") or {}
    return str(m.get("creationTimestamp") or ""), str(m.get("name"))


def plan(nodes: Iterable[Mapping[str, Any]],
         cluster_cidr: str = DEFAULT_CLUSTER_CIDR) -> dict[str, str | None]:
    """Node name -> the block it should get: every Node without one, and every Node that
    must give its block up to an older holder (None: the range is exhausted).

    A pure function of the set of Nodes: every peer with the same replica plans the same.
    """
    ordered = sorted(nodes, key=keeper_rank)
    used = {c for c in (pod_cidr(n) for n in ordered) if c is not None}
    holders: dict[str, str] = {}
    out: dict[str, str | None] = {}
    for n in ordered:  # oldest first, so the oldest holder of a block keeps it
        name, cidr = str(n["metadata"]["name"]), pod_cidr(n)
        if cidr is None or cidr in holders:
            new = allocate(name, used, cluster_cidr)
            out[name] = new
            if new is not None:
                used.add(new)
                holders[new] = name
        else:
            holders[cidr] = name
    return out


class NodeIpam(Controller):
    name = "node-ipam"

    def __init__(self, store: ObjectStore, view: PeerView | None = None,
                 cluster_cidr: str = DEFAULT_CLUSTER_CIDR, **kw: Any) -> None:
        super().__init__(store, **kw)
        blocks(cluster_cidr)  # fail at start on a bad flag
        self.view = view or SinglePeer(store.replica.node_id)
        self.cluster_cidr = cluster_cidr
        node = store.registry.by_kind("v1", "Node")
        assert node is not None
        self.node_kind = node
        self.writes = 0

    def relevant(self, change: Change) -> bool:
        return change.resource == "nodes" and change.type != "DELETED"

    async def sync(self) -> bool:
        pending = False
        for name, cidr in sorted(plan(self.store.list(self.node_kind), self.cluster_cidr).items()):
            if not should_act(self.view, f"node-ipam/{name}"):
                continue
            node = self.store.find(self.node_kind, None, name)
            if node is None:
                continue
            try:
                await self._assign(node, cidr)
            except StoreError as e:
                log.debug("node %s: pod CIDR not written: %s", name, e)
                pending = True
        return pending

    async def _assign(self, node: dict[str, Any], cidr: str | None) -> None:
        name, old = node["metadata"]["name"], pod_cidr(node)
        if cidr is None:
            msg = f"Node {name} status is now: CIDRNotAvailable"
            log.warning("node %s: no free /%d left in %s", name, NODE_MASK, self.cluster_cidr)
            await events.record(self.store, node, "Normal", "CIDRNotAvailable", msg, COMPONENT)
            return
        new = copy.deepcopy(node)
        new.setdefault("spec", {})["podCIDR"] = cidr
        new["spec"]["podCIDRs"] = [cidr]
        if old is None:
            await self.store.update(self.node_kind, new, None, name)
            self.writes += 1
            log.info("node %s: pod CIDR %s", name, cidr)
            return
        stored = await reassign(self.store, self.node_kind, new)
        self.writes += 1
        msg = (f"Pod CIDR {old} was assigned to this node and to an older node while the "
               f"cluster was partitioned; the older node keeps it, this node moved to {cidr}")
        log.warning("node %s: %s", name, msg)
        await events.record(self.store, stored, "Warning", "PodCIDRReassigned", msg, COMPONENT)
