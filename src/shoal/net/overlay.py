"""VXLAN between the peers of a site: every node's pods reach every other node's pods.

The model is flannel's VXLAN backend. Each node has one VXLAN device,
``shoal.vxlan`` (VNI 1, UDP 8472), whose address is the ``.0`` of its own
podCIDR and whose MAC (its VTEP address) is derived from the node name, so no
node has to publish anything beyond what its Node object already says. For
every other node with a podCIDR and an InternalIP this node programs:

- an FDB entry: that node's VTEP MAC is reached at its InternalIP (the underlay);
- a permanent neighbour entry: that node's ``.0`` address is that MAC;
- a route: its podCIDR via its ``.0`` address, ``onlink`` on ``shoal.vxlan``.

A packet from a local pod to a remote pod leaves the pod's veth, crosses
``shoal0``, is routed into ``shoal.vxlan``, encapsulated in UDP to the remote
node's InternalIP, decapsulated there and routed onto its ``shoal0``.

Only nodes of this node's site (the same ``topology.kubernetes.io/zone`` label)
are reached this way; other sites go over WireGuard (``shoal.net.wireguard``).
Everything comes from the Node objects in this node's replica (``spec.podCIDR``,
``status.addresses``, labels), so it works offline and follows nodes as they
come and go. A node that is unreachable keeps its route: a partition is not a deletion,
and the route works again the moment the link does.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from shoal.node.subprocesses import communicate

log = logging.getLogger(__name__)

DEVICE = "shoal.vxlan"
VNI = 1
PORT = 8472
ZONE_LABEL = "topology.kubernetes.io/zone"


def vtep_mac(node_name: str) -> str:
    """A node's VTEP MAC: a locally administered unicast address from its name's hash."""
    h = bytearray(hashlib.sha256(node_name.encode()).digest()[:6])
    h[0] = (h[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in h)


def subnet_zero(pod_cidr: str) -> str:
    """The .0 of a podCIDR: the node's VXLAN address, the next hop other nodes route to."""
    return str(ipaddress.ip_network(pod_cidr, strict=False).network_address)


def node_pod_cidr(node: dict[str, Any]) -> str | None:
    spec = node.get("spec") or {}
    return spec.get("podCIDR") or next(iter(spec.get("podCIDRs") or []), None)


def internal_ip(node: dict[str, Any]) -> str | None:
    for a in (node.get("status") or {}).get("addresses") or []:
        if a.get("type") == "InternalIP" and a.get("address"):
            return str(a["address"])
    return None


@dataclass(frozen=True)
class RemoteNode:
    name: str
    underlay: str  # its InternalIP: where its VXLAN packets go
    pod_cidr: str

    @property
    def mac(self) -> str:
        return vtep_mac(self.name)

    @property
    def gateway(self) -> str:
        return subnet_zero(self.pod_cidr)


def zone(node: dict[str, Any] | None) -> str:
    """The node's site: its ``topology.kubernetes.io/zone`` label ("" without one)."""
    return str((((node or {}).get("metadata") or {}).get("labels") or {}).get(ZONE_LABEL) or "")


def remote_nodes(nodes: Iterable[dict[str, Any]], self_name: str) -> set[RemoteNode]:
    """The other nodes of this node's site that VXLAN reaches (with a podCIDR and an
    InternalIP); other sites' nodes are WireGuard's (``shoal.net.wireguard``)."""
    nodes = list(nodes)
    my_zone = zone(next((n for n in nodes if (n.get("metadata") or {}).get("name") == self_name),
                        None))
    out = set()
    for n in nodes:
        name = str((n.get("metadata") or {}).get("name") or "")
        cidr, ip = node_pod_cidr(n), internal_ip(n)
        if name and name != self_name and cidr and ip and zone(n) == my_zone:
            out.add(RemoteNode(name, ip, cidr))
    return out


async def run_ip(*args: str, tool: str = "ip") -> str | None:
    """None on success, else the error output."""
    proc = await asyncio.create_subprocess_exec(
        tool, *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await communicate(proc)
    return None if proc.returncode == 0 else err.decode(errors="replace").strip()


async def device_local_ip() -> str | None:
    """The underlay address of an existing ``shoal.vxlan``, or None when there is none."""
    proc = await asyncio.create_subprocess_exec(
        "ip", "-d", "-j", "link", "show", DEVICE, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await communicate(proc)
    if proc.returncode != 0:
        return None
    try:
        links = json.loads(out)
        local = links[0]["linkinfo"]["info_data"].get("local")
    except (ValueError, LookupError, TypeError, AttributeError):
        return None
    return str(local) if local is not None else None


class Overlay:
    """Keeps ``shoal.vxlan`` and its per-node entries equal to the replica's Node objects."""

    def __init__(self, node_name: str, local_ip: str,
                 nodes: Callable[[], list[dict[str, Any]]]) -> None:
        self.node_name = node_name
        self.local_ip = local_ip
        self.nodes = nodes
        self.programmed: set[RemoteNode] = set()
        self.local_cidr: str | None = None

    def forget(self) -> None:
        """Re-assert every entry on the next sync (something may have flushed them)."""
        self.programmed = set()

    async def sync(self) -> None:
        nodes = self.nodes()
        me = next((n for n in nodes if (n.get("metadata") or {}).get("name") == self.node_name),
                  None)
        await self._device(node_pod_cidr(me) if me is not None else None)
        want = remote_nodes(nodes, self.node_name)
        for r in sorted(self.programmed - want, key=lambda r: r.name):
            await self._remove(r)
        for r in sorted(want - self.programmed, key=lambda r: r.name):
            if err := await self._add(r):
                log.warning("overlay: route to node %s (%s via %s) failed: %s", r.name,
                            r.pod_cidr, r.underlay, err)
                want.discard(r)
            elif r.name not in {p.name for p in self.programmed}:
                log.info("overlay: pods of node %s (%s) via %s", r.name, r.pod_cidr, r.underlay)
        self.programmed = want

    async def _device(self, local_cidr: str | None) -> None:
        local = await device_local_ip()
        if local is not None and local != self.local_ip:
            # Left by an earlier start with another address (--bind changed): its packets
            # would leave from the old underlay address, so make it afresh.
            log.info("overlay: %s had underlay %s; recreating it on %s", DEVICE, local,
                     self.local_ip)
            await run_ip("link", "del", DEVICE)
            self.programmed = set()
        if await run_ip("link", "show", DEVICE) is not None:
            err = await run_ip("link", "add", DEVICE, "type", "vxlan", "id", str(VNI),
                               "dstport", str(PORT), "local", self.local_ip, "nolearning")
            if err is not None:
                raise RuntimeError(f"cannot create {DEVICE}: {err}")
            await run_ip("link", "set", DEVICE, "address", vtep_mac(self.node_name))
            self.local_cidr = None
            log.info("overlay: %s up (VNI %d, UDP %d, underlay %s)", DEVICE, VNI, PORT,
                     self.local_ip)
        await run_ip("link", "set", DEVICE, "up")
        if local_cidr != self.local_cidr:
            await run_ip("addr", "flush", "dev", DEVICE)
            if local_cidr:
                await run_ip("addr", "add", f"{subnet_zero(local_cidr)}/32", "dev", DEVICE)
            self.local_cidr = local_cidr

    async def _add(self, r: RemoteNode) -> str | None:
        return (await run_ip("fdb", "replace", r.mac, "dev", DEVICE, "dst", r.underlay, "self",
                             "permanent", tool="bridge")
                or await run_ip("neigh", "replace", r.gateway, "lladdr", r.mac, "dev", DEVICE,
                                "nud", "permanent")
                or await run_ip("route", "replace", r.pod_cidr, "via", r.gateway, "dev", DEVICE,
                                "onlink"))

    async def _remove(self, r: RemoteNode) -> None:
        log.info("overlay: node %s (%s) gone", r.name, r.pod_cidr)
        await run_ip("route", "del", r.pod_cidr, "via", r.gateway, "dev", DEVICE)
        await run_ip("neigh", "del", r.gateway, "dev", DEVICE)
        await run_ip("fdb", "del", r.mac, "dev", DEVICE, "dst", r.underlay, "self",
                     tool="bridge")
