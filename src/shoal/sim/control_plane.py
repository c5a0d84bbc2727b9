"""Every simulated peer runs the real controllers and a simulated kubelet, as ``shoal server`` does.

Each peer gets ``shoal.control.manager.controllers(store, view, pod_eviction_timeout,
node_monitor_grace)``
as tasks on the virtual loop, with a ``PeerView`` backed by its own ``MeshPeer``
(this peer plus the members its membership believes alive), and a ``SimKubelet``.
Killing a peer stops its controllers, its kubelet (and so its pods) and its mesh
peer; restarting brings all three back over the same replica. On a ``FreezableEventLoop``
a peer can also stand still and resume (``SimCluster.freeze``, ``thaw``), and each peer runs
its stall detector (``shoal.control.loop_stalls``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol

from shoal.control import manager
from shoal.control.loop_stalls import LoopStalls
from shoal.control.ownership import LeaseAges
from shoal.mesh.topology import LeaseHolders, WeakNames
from shoal.sim.cluster import SimCluster, SimNode
from shoal.sim.kubelet import KubeletTiming, SimKubelet
from shoal.sim.loop import FreezableEventLoop, as_process
from shoal.sim.timeline import Timeline


class MeshPeerView:
    """``shoal.control.ownership.PeerView`` over one simulated peer's membership, its
    replica's node Leases (``lapsed``) and its stalls (``resumed``)."""

    def __init__(self, node: SimNode, grace: float = 40.0,
                 stalls: LoopStalls | None = None) -> None:
        self._node = node
        self._weak = WeakNames()
        self._stalls = stalls
        self._leases = LeaseAges(node.store, grace, self.resumed)
        self._holders = LeaseHolders()

    @property
    def name(self) -> str:
        return self._node.name

    def live(self) -> list[str]:
        peer = self._node.peer
        others = [m.name for m in peer.live_peers()] if peer is not None else []
        return [self.name, *others]

    def weak(self) -> list[str]:
        """The members whose role is weak (``ownership.weak_peers``)."""
        return self._weak.of(self._node.peer)

    def lapsed(self) -> frozenset[str]:
        """The live peers whose node Lease ran out (``ownership.lapsed_peers``)."""
        return self._leases.lapsed(self.live())

    def holds_lease(self, peer: str, node: str) -> bool:
        """Whether ``peer`` holds ``node``'s Lease (``ownership.lease_actors``)."""
        return self._holders.holds(self._node.peer, peer, node)

    def resumed(self) -> float:
        """When this peer last resumed from standing still (``ownership.resumed_at``)."""
        return self._stalls.check() if self._stalls is not None else -math.inf


class _ErrorCounter(logging.Handler):
    """Counts the controllers' ``sync failed`` reports: a crash is a finding, not noise."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage() + (f": {record.exc_info[1]!r}"
                                                    if record.exc_info else ""))


@dataclass
class ControlCluster:
    """A ``SimCluster`` whose peers also schedule, control and run pods."""

    cluster: SimCluster
    pod_eviction_timeout: float = 20.0
    timing: KubeletTiming = field(default_factory=KubeletTiming)
    node_monitor_grace: float = 40.0

    def __post_init__(self) -> None:
        self.timeline = Timeline()
        self.kubelets: dict[str, SimKubelet] = {}
        self.stalls: dict[str, LoopStalls] = {}
        """Each peer's stall detector (``shoal.control.loop_stalls``), on a
        ``FreezableEventLoop`` only."""
        self._tasks: dict[str, list[asyncio.Task[None]]] = {}
        self.errors = _ErrorCounter()
        # Every kubelet event goes into the run's trace, so determinism covers it.
        self.timeline.listeners.append(
            lambda tl, _now: self.cluster.network.note(tl.events[-1][1]))

    async def start(self) -> None:
        logging.getLogger("shoal.control").addHandler(self.errors)
        await self.cluster.start(preformed=True)
        for name in self.cluster.nodes:
            await self._start_node(name)

    async def _start_node(self, name: str) -> None:
        with as_process(name):  # its tasks are its process's (``SimCluster.freeze``)
            await self._start_node_tasks(name)

    async def _start_node_tasks(self, name: str) -> None:
        node = self.cluster.nodes[name]
        rng = random.Random(f"{self.cluster.seed}:kubelet:{name}:{node.restarts}")
        kubelet = SimKubelet(node.store, name, node.address, self.timeline, rng, self.timing)
        self.kubelets[name] = kubelet
        await kubelet.start()
        loop = asyncio.get_running_loop()
        # A peer stands still only on a loop that can freeze it (virtual time does not pass
        # while code runs): elsewhere its stall detector's ticks would only move the order
        # of simultaneous timers, and with it the runs that seeds were chosen for.
        stalls = None
        ticker = []
        if isinstance(loop, FreezableEventLoop):
            stalls = self.stalls[name] = LoopStalls(node.replica.wall)
            ticker = [loop.create_task(stalls.run(), name=f"{name}:loop-stalls")]
        view = MeshPeerView(node, self.node_monitor_grace, stalls)
        self._tasks[name] = [*ticker, *(
            loop.create_task(c.run(), name=f"{name}:{c.name}")
            for c in manager.controllers(node.store, view, self.pod_eviction_timeout,
                                         self.node_monitor_grace))]

    async def _stop_node(self, name: str) -> None:
        tasks = self._tasks.pop(name, [])
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        kubelet = self.kubelets.pop(name, None)
        if kubelet is not None:
            await kubelet.stop()

    async def kill(self, name: str) -> None:
        await self._stop_node(name)
        await self.cluster.kill(name)

    async def restart(self, name: str) -> None:
        await self.cluster.restart(name)
        await self._start_node(name)

    async def stop(self) -> None:
        for name in list(self._tasks):
            await self._stop_node(name)
        await self.cluster.stop()
        logging.getLogger("shoal.control").removeHandler(self.errors)

    def up(self) -> list[SimNode]:
        return self.cluster.up_nodes()


class ScenarioReport(Protocol):
    """The fields every control-plane scenario's report shares."""

    failures: list[str]
    trace: str
    controller_errors: int
    virtual_seconds: float


async def finish_after(body: Awaitable[None], cp: ControlCluster,
                       report: ScenarioReport) -> None:
    """Run a scenario's body, then (whatever happened) record the controllers' errors, the
    trace (network and timeline, what determinism is judged by), and stop the peers."""
    try:
        await body
    finally:
        report.controller_errors = len(cp.errors.messages)
        if cp.errors.messages:
            report.failures.append(f"controllers raised: {cp.errors.messages[:2]}")
        report.trace = hashlib.sha256(
            (cp.cluster.network.trace_hash + repr(cp.timeline.events)).encode()).hexdigest()
        report.virtual_seconds = round(asyncio.get_running_loop().time(), 3)
        await cp.stop()
