"""A simulated cluster with roles: sites of weak peers behind super-peers (``mesh.topology``).

``Layout`` names the roles: ``full`` full peers of no site first, then per site its
super-peers and its weak peers. ``RoleCluster`` is a ``SimCluster`` whose peers run
with those roles and sites, formed with every member's tags known (a cluster that has
been running), so that a weak peer starts with only the super-peers of its site.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from dataclasses import dataclass, field

from shoal.mesh import config as mesh_config
from shoal.mesh.membership import Member
from shoal.mesh.messages import State
from shoal.mesh.peer import MeshPeer
from shoal.mesh.topology import Role, role_of, site_of
from shoal.sim.cluster import NAMESPACE, SimCluster, SimNode


@dataclass(frozen=True, slots=True)
class Layout:
    sites: int = 2
    supers_per_site: int = 2
    weak_per_site: int = 4
    full: int = 0
    sites_per_region: int = 0
    """Sites per region (``--region``): consecutive sites form one; 0: no regions."""

    @property
    def size(self) -> int:
        return self.full + self.sites * (self.supers_per_site + self.weak_per_site)

    def roles(self) -> list[tuple[Role, str]]:
        """(role, site) of each node, in the simulator's node order."""
        out: list[tuple[Role, str]] = [(Role.FULL, "")] * self.full
        for s in range(self.sites):
            site = f"site-{s:03d}"
            out += [(Role.SUPER, site)] * self.supers_per_site
            out += [(Role.WEAK, site)] * self.weak_per_site
        return out

    def region(self, site: str) -> str:
        """The region of a site (``site-NNN``): none without regions or for no site."""
        if not self.sites_per_region or not site:
            return ""
        return f"region-{int(site.rsplit('-', 1)[1]) // self.sites_per_region:03d}"


def tags_of(role: Role, site: str, region: str = "") -> dict[str, str]:
    out = {} if role == Role.FULL else {"role": str(role)}
    if site:
        out["site"] = site
    if region and role != Role.WEAK:  # only full and super-peers read it
        out["region"] = region
    if role == Role.SUPER:
        out["caps"] = "d"  # as mesh_config.member_tags announces
    return out


@dataclass
class RoleCluster(SimCluster):
    layout: Layout = field(default_factory=Layout)

    def __post_init__(self) -> None:
        self.size = self.layout.size
        SimCluster.__post_init__(self)
        self.role: dict[str, tuple[Role, str]] = dict(zip(self.nodes, self.layout.roles(),
                                                          strict=True))

    def tags(self, name: str) -> dict[str, str]:
        role, site = self.role[name]
        return tags_of(role, site, self.layout.region(site))

    def names(self, role: Role, site: str | None = None) -> list[str]:
        return [n for n, (r, s) in self.role.items() if r == role and (site is None or s == site)]

    def _peer(self, node: SimNode) -> MeshPeer:
        role, site = self.role[node.name]
        cfg = mesh_config.for_role(dataclasses.replace(
            self.config, role=str(role), site=site, region=self.layout.region(site)))
        transport = self.network.transport(node.address)
        rng = random.Random(f"{self.seed}:peer:{node.name}:{node.restarts}")
        return MeshPeer(node.name, transport, node.replica, cfg, rng)

    async def start(self, preformed: bool = True) -> None:
        first = next(iter(self.nodes.values()))
        await first.store.create(self.namespace_kind, {"metadata": {"name": NAMESPACE}})
        entry = first.replica.entry("namespaces", "", NAMESPACE)
        assert entry is not None
        for node in self.nodes.values():
            if node is not first:
                node.replica.merge("namespaces", "", NAMESPACE, entry.document().copy())
        everyone = [(n.name, n.address, self.tags(n.name)) for n in self.nodes.values()]
        for node in self.nodes.values():
            node.peer = self._peer(node)
            await node.peer.start()
            if preformed:
                node.peer.membership.add_known(everyone)
        if not preformed:
            seed = self._seeds_for(first.name)[:1] or [first.address]
            for node in self.nodes.values():
                if node is not first and node.peer is not None:
                    await node.peer.join(seed)

    def _seeds_for(self, name: str) -> list[str]:
        """Addresses a (re)starting node joins through: full and super-peers that are up."""
        return [n.address for n in self.up_nodes() if n.name != name
                and self.role[n.name][0] != Role.WEAK]

    def _restart_seeds(self, name: str) -> list[str]:
        role, site = self.role[name]
        if role == Role.WEAK:  # the super-peers of its site, as its saved member list would
            supers = [self.nodes[n].address for n in self.names(Role.SUPER, site)
                      if self.nodes[n].up]
            if supers:
                return supers
        return self._seeds_for(name)

    def members_settled(self) -> bool:
        """Every running full or super-peer sees every running peer alive; every running
        weak peer sees the running super-peers of its site alive, and nothing else."""
        up = {n.name for n in self.up_nodes()}
        for n in self.up_nodes():
            assert n.peer is not None
            alive = {m.name for m in n.peer.members() if m.state == State.ALIVE}
            role, site = self.role[n.name]
            if role == Role.WEAK:
                supers = {s for s in self.names(Role.SUPER, site) if s in up}
                if supers and not supers <= alive:
                    return False
            elif not up <= alive:
                return False
        return True


def weak_view(peer: MeshPeer) -> list[Member]:
    """The members a peer holds other than itself."""
    return [m for m in peer.members() if m.name != peer.name]


def describe(m: Member) -> str:
    return f"{m.name}({role_of(m)}@{site_of(m)}:{m.state.name.lower()})"


async def settle(cluster: RoleCluster, timeout: float, step: float = 0.25) -> float | None:
    """Virtual seconds until ``members_settled`` holds, or None."""
    loop = cluster.loop
    start = loop.time()
    while not cluster.members_settled():
        if loop.time() - start >= timeout:
            return None
        await asyncio.sleep(step)
    return loop.time() - start
