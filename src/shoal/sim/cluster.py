"""A simulated cluster: N real peers (replica, object store, mesh) on one simulated network.

Each node has an in-memory ``Replica`` on its own skewed virtual wall clock and an
``ObjectStore``, so writes go through the real object semantics. A node can be
killed (its tasks stop, its transport detaches, its replica is kept as a disk
would be) and restarted (a new ``MeshPeer`` on the same replica, rejoining
through live peers). The workload writes ConfigMaps from a small pool of names,
so that creates, updates and deletes of the same names collide across nodes;
every acknowledged write is recorded for the checkers.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shoal.authz.scopes import RecordFormerWriters
from shoal.crdt.document import Document
from shoal.mesh.config import MeshConfig
from shoal.mesh.messages import State
from shoal.mesh.peer import MeshPeer
from shoal.model.kinds import Kind, KindRegistry
from shoal.sim.checkers import cursors
from shoal.sim.disk import SimDisk
from shoal.sim.loop import FreezableEventLoop, VirtualEventLoop, VirtualWallClock, as_process
from shoal.sim.network import LinkFaults, SimNetwork
from shoal.store.objects import ObjectStore, StoreError
from shoal.store.replica import Replica

log = logging.getLogger(__name__)

NAMESPACE = "default"
RESOURCE = "configmaps"


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """A write the store acknowledged, with the document right after it."""

    node: str
    op: str  # create, update or delete
    name: str
    snapshot: Document
    at: float  # virtual seconds
    resource: str = RESOURCE
    namespace: str = NAMESPACE


@dataclass(slots=True)
class SimNode:
    name: str
    address: str
    replica: Replica
    store: ObjectStore
    peer: MeshPeer | None = None
    restarts: int = 0
    known: list[tuple[str, str, Mapping[str, str]]] = field(default_factory=list)
    """The members it knew when killed: what a real peer persists to rejoin without seeds."""

    @property
    def up(self) -> bool:
        return self.peer is not None


@dataclass
class SimCluster:
    size: int
    seed: int
    config: MeshConfig
    loop: VirtualEventLoop
    faults: LinkFaults = field(default_factory=LinkFaults)
    clock_skew: float = 0.05
    """Each node's wall clock is off by up to this many seconds (either way)."""
    name_pool: int = 12
    disks: bool = False
    """Each node writes to a ``SimDisk``: commits take time, a kill tears the one in
    progress, and a restart loads a new replica from what the disk holds."""

    def __post_init__(self) -> None:
        self.rng = random.Random(f"{self.seed}:cluster")
        self.network = SimNetwork(random.Random(f"{self.seed}:network"), self.faults)
        self.registry = KindRegistry()
        cm = self.registry.by_kind("v1", "ConfigMap")
        ns = self.registry.by_kind("v1", "Namespace")
        secret = self.registry.by_kind("v1", "Secret")
        assert cm is not None and ns is not None and secret is not None
        self.configmap: Kind = cm
        self.secret: Kind = secret
        self.namespace_kind: Kind = ns
        self.nodes: dict[str, SimNode] = {}
        self.disk: dict[str, SimDisk] = {}
        self.clocks: dict[str, VirtualWallClock] = {}
        for i in range(self.size):
            name = f"n{i:04d}"
            skew = self.rng.uniform(-self.clock_skew, self.clock_skew)
            self.clocks[name] = VirtualWallClock(self.loop, skew)
            if self.disks:
                self.disk[name] = SimDisk(random.Random(f"{self.seed}:disk:{name}"))
            replica, store = self._open(name)
            self.nodes[name] = SimNode(name, f"{name}:7443", replica, store)
        self.acked: list[AckedWrite] = []
        self.write_errors = 0
        self.torn_writes = 0
        """Local writes a kill tore (never acknowledged)."""
        self.backups: dict[str, tuple[SimDisk, float]] = {}
        self.restored: set[str] = set()
        self.lost_to_restores: list[AckedWrite] = []
        """Acknowledged writes only their peer held when an older backup replaced its disk."""
        self._abandoned: list[asyncio.Task[bool]] = []
        self.claims_beyond_disk: list[str] = []
        """Claims peers held over a crashed peer's revisions that its disk did not have."""

    def _open(self, name: str) -> tuple[Replica, ObjectStore]:
        """The node's replica (from its disk, when it has one) and object store."""
        replica = Replica(None, name, clock=self.clocks[name], persistence=self.disk.get(name))
        store = ObjectStore(replica, self.registry, rng=random.Random(f"{self.seed}:store:{name}"))
        store.update_admission.append(RecordFormerWriters(replica, replica.hlc.now))
        return replica, store

    # -- lifecycle -------------------------------------------------------------------

    def _peer(self, node: SimNode) -> MeshPeer:
        transport = self.network.transport(node.address)
        rng = random.Random(f"{self.seed}:peer:{node.name}:{node.restarts}")
        return MeshPeer(node.name, transport, node.replica, self.config, rng)

    async def start(self, preformed: bool = True) -> None:
        """Create the ``default`` namespace everywhere, start every peer and form the cluster.

        ``preformed`` gives every peer the full member list at once (a cluster that has
        been running); otherwise each peer joins through the first one."""
        first = next(iter(self.nodes.values()))
        await first.store.create(self.namespace_kind, {"metadata": {"name": NAMESPACE}})
        entry = first.replica.entry("namespaces", "", NAMESPACE)
        assert entry is not None
        for node in self.nodes.values():
            if node is not first:
                node.replica.merge("namespaces", "", NAMESPACE, entry.document().copy())
        everyone = [(n.name, n.address) for n in self.nodes.values()]
        for node in self.nodes.values():
            node.peer = self._peer(node)
            with as_process(node.name):  # its tasks are its process's (``freeze``)
                await node.peer.start()
            if preformed:
                node.peer.membership.add_known(everyone)
        if not preformed:
            for node in self.nodes.values():
                if node is not first and node.peer is not None:
                    await node.peer.join([first.address])

    async def kill(self, name: str, mid_write: random.Random | None = None) -> None:
        """Stop ``name`` at once. With disks, what it had not committed is lost; with
        ``mid_write``, the kill lands during the commit of a write it was making."""
        node = self.nodes[name]
        if node.peer is None:
            return
        self.network.note(f"kill {name}")
        disk = self.disk.get(name)
        if disk is not None:
            if mid_write is not None:
                # A slow commit (a loaded disk): the node keeps serving meanwhile.
                disk.stall()
                await self._start_a_write(node, mid_write)
                await asyncio.sleep(mid_write.uniform(0.2, 1.5))
            torn = disk.crash()
            disk.dead = True
            self.network.note(f"{name} lost {torn} queued writes")
            self._check_claims(name, disk.revision())
        peer, node.peer = node.peer, None
        node.known = [(m.name, m.address, m.tags) for m in peer.members()
                      if m.state != State.LEFT]
        await peer.stop()

    def _forget_lost_to_restore(self, name: str, since: float) -> None:
        """The writes ``name`` acknowledged after its backup that no other replica holds
        are gone with the restore: no checker may expect them (docs/semantics.md)."""
        from shoal.sim.checkers import durability  # it imports this module

        others = [n.replica for n in self.nodes.values() if n.name != name]
        for w in self.acked:
            if (w.node == name and w.at >= since and w not in self.lost_to_restores
                    and all(durability.check([w], r) for r in others)):
                self.lost_to_restores.append(w)
                self.network.note(f"{w.op} of {w.name} on {name} lost to the restore")

    def must_keep(self) -> list[AckedWrite]:
        """The acknowledged writes no restore took away (a write that only the restored
        peer held may still come back from a message in flight: resurrection checks
        count it as written)."""
        lost = {id(w) for w in self.lost_to_restores}
        return [w for w in self.acked if id(w) not in lost]

    def not_undone(self) -> list[AckedWrite]:
        """What the resurrection checks go by: every acknowledged write but the deletions
        a restore took away (their objects are live again, rightly)."""
        lost = {id(w) for w in self.lost_to_restores if w.op == "delete"}
        return [w for w in self.acked if id(w) not in lost]

    def _check_claims(self, name: str, committed: int) -> None:
        if name in self.restored:
            return
        at = self.loop.time()
        for n in self.up_nodes():
            if n.name != name and n.peer is not None:
                self.claims_beyond_disk += [
                    f"at {at:.3f}s: {p}" for p in cursors.beyond(
                        n.name, n.peer.anti_entropy, name, committed)]

    async def _start_a_write(self, node: SimNode, rng: random.Random) -> None:
        """Queue a local write and return before its commit (it is never acknowledged if
        the node dies first)."""
        before = len(self.acked)
        name = f"cm-{rng.randrange(self.name_pool)}"
        op = "update" if node.replica.get(RESOURCE, NAMESPACE, name) is not None else "create"
        task = self.loop.create_task(self.write(node, op, name, {"torn": str(rng.random())}))
        await asyncio.sleep(0)  # the write is queued on the disk now
        if task.done() or len(self.acked) != before:
            return
        self.torn_writes += 1
        self._abandoned.append(task)  # its client is never answered

    async def back_up(self, name: str) -> None:
        """Copy ``name``'s data dir as it is committed now (kept for one restart)."""
        self.network.note(f"back up {name}")
        self.backups[name] = (self.disk[name].backup(), self.loop.time())

    async def jump_clock(self, name: str, seconds: float) -> None:
        """``name``'s wall clock jumps by ``seconds`` (backwards if negative)."""
        self.network.note(f"clock of {name} jumps {seconds:+.3f}s")
        self.clocks[name].skew += seconds

    async def restart(self, name: str, from_backup: bool = False) -> None:
        node = self.nodes[name]
        if node.peer is not None:
            return
        self.network.note(f"restart {name}" + (" from a backup" if from_backup else ""))
        node.restarts += 1
        disk = self.disk.get(name)
        if disk is not None:
            # A new process: the replica is what the disk holds.
            backup = self.backups.pop(name, None) if from_backup else None
            if backup is not None:
                disk.restore(backup[0])
                self._forget_lost_to_restore(name, backup[1])
                # Peers legitimately hold claims past the backup now: their cursors are
                # of the life the backup was taken in, and this peer's next life takes them
                # as at most the backup's revision (shoal.mesh.anti_entropy, lives).
                self.restored.add(name)
            disk.dead = False
            node.replica, node.store = self._open(name)
        else:
            # The replica kept in memory stands for a disk that kept everything: the new
            # life starts where the last one ended.
            node.replica.loaded_revision = node.replica.revision
        node.peer = self._peer(node)
        with as_process(name):
            await node.peer.start()
        node.peer.membership.add_known(node.known)
        seeds = self._restart_seeds(name)
        await node.peer.join(self.rng.sample(seeds, min(3, len(seeds))))

    def freeze(self, name: str) -> None:
        """``name`` stands still, as under ``kill -STOP``: none of its code runs (its loop must
        be a ``FreezableEventLoop``), and what is sent to it is lost, as once its socket
        buffers fill and its peers' requests time out. Its clocks go on."""
        assert isinstance(self.loop, FreezableEventLoop), "freezing needs a FreezableEventLoop"
        self.network.note(f"freeze {name}")
        self.loop.freeze(name)
        self.network.cut_off(self.nodes[name].address)

    def thaw(self, name: str, links_after: float = 0.0) -> None:
        """``name`` runs again (``kill -CONT``), with its memory as the freeze left it. Its
        links come back ``links_after`` seconds later: a resumed VM's or a woken device's
        network comes back after its processes, and its peers closed their connections to
        it meanwhile. The links a scenario cut itself stay cut."""
        assert isinstance(self.loop, FreezableEventLoop)
        self.network.note(f"thaw {name}")
        self.loop.thaw(name)
        if links_after > 0:
            self.loop.call_later(links_after, self._reconnect, name)
        else:
            self._reconnect(name)

    def _reconnect(self, name: str) -> None:
        self.network.note(f"reconnect {name}")
        self.network.reconnect(self.nodes[name].address)

    def _restart_seeds(self, name: str) -> list[str]:
        """Addresses a restarting node may join through (three are picked at random)."""
        return [n.address for n in self.up_nodes() if n.name != name]

    async def stop(self) -> None:
        for node in self.nodes.values():
            if node.peer is not None:
                await node.peer.stop()
                node.peer = None
            node.replica.close()

    def up_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up]

    def members_converged(self) -> bool:
        """Every running peer sees every other running peer alive."""
        up = {n.name for n in self.up_nodes()}
        for n in self.up_nodes():
            assert n.peer is not None
            alive = {m.name for m in n.peer.members() if m.state == State.ALIVE}
            if not up <= alive:
                return False
        return True

    # -- workload --------------------------------------------------------------------

    async def write(self, node: SimNode, op: str, name: str, data: dict[str, str],
                    kind: Kind | None = None, namespace: str = NAMESPACE) -> bool:
        """Apply one operation through the node's object store; records it if acknowledged.

        ``kind`` defaults to ConfigMap; its ``data`` map is what ``data`` updates."""
        store = node.store
        kind = kind or self.configmap
        try:
            if op == "create":
                await store.create(kind, {"metadata": {"name": name}, "data": data}, namespace)
            elif op == "update":
                obj = store.find(kind, namespace, name)
                if obj is None:
                    return False
                new: dict[str, Any] = copy.deepcopy(obj)
                new.setdefault("data", {}).update(data)
                await store.update(kind, new, namespace, name)
            else:
                await store.delete(kind, namespace, name)
        except StoreError:
            self.write_errors += 1
            self.network.note(f"{node.name} {op} {_where(kind, namespace)}{name} refused")
            return False
        entry = node.replica.entry(kind.resource, namespace, name)
        assert entry is not None
        now = self.loop.time()
        self.acked.append(AckedWrite(node.name, op, name, entry.document().copy(), now,
                                     kind.resource, namespace))
        self.network.note(f"{node.name} {op} {_where(kind, namespace)}{name} ok")
        return True

    async def random_write(self, rng: random.Random) -> bool:
        up = self.up_nodes()
        if not up:
            return False
        node = rng.choice(up)
        name = f"cm-{rng.randrange(self.name_pool)}"
        exists = node.replica.get(RESOURCE, NAMESPACE, name) is not None
        roll = rng.random()
        op = "create" if not exists else ("update" if roll < 0.7 else "delete")
        data = {f"k{rng.randrange(4)}": str(rng.randrange(1_000_000))}
        return await self.write(node, op, name, data)


def _where(kind: Kind, namespace: str) -> str:
    """How a write's target is named in the trace: as before for default ConfigMaps, so
    the traces of unscoped runs do not change."""
    if kind.resource == RESOURCE and namespace == NAMESPACE:
        return ""
    return f"{kind.resource}/{namespace}/"
