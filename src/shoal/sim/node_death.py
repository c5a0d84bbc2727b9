"""A node killed (kill -9) behind a Service: how long until its pods leave every endpoint list.

Phases, on virtual time, drawn from the seed:

1. *Settle*: a Deployment of ``replicas`` pods and a Service selecting them; every
   peer's Endpoints and EndpointSlices list every pod, ready, with its node name
   and an address from its node's pod CIDR (``shoal.control.node_ipam``).
2. *Kill*: a peer that runs some of the pods is killed at a random moment of its
   heartbeat cycle. The run measures, on every live peer, when the last of the
   victim's pods stops being a ready endpoint (Endpoints ``addresses`` and
   EndpointSlice ``ready``) and reports the latest: ``leave_seconds``. The checker
   (``checkers.endpoints``) fails the run if that exceeds the lease grace plus the
   time a write takes to reach every peer.
3. Then, as the seed chooses, either the victim comes back (``restart``): every peer
   must end with exactly the pods that run ready as ready endpoints; or its Node
   is deleted (``delete_node``, as ``kubectl delete node``): PodGC must remove
   every pod bound to it from every replica.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.mesh import config as mesh_config
from shoal.sim.checkers import endpoints as endpoint_checks
from shoal.sim.cluster import NAMESPACE, SimCluster
from shoal.sim.control_plane import ControlCluster, finish_after
from shoal.sim.kubelet import KubeletTiming
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.workloads import APP, deployment

PROPAGATION_SLACK = 3.0
"""Seconds a write may take to reach every live peer (push, then pulls) in the sim preset."""


@dataclass
class DeathOptions:
    seed: int = 0
    peers: int = 5
    replicas: int = 10
    node_monitor_grace: float = 40.0
    """As ``shoal server --node-monitor-grace-period``."""
    pod_eviction_timeout: float = 300.0
    """As ``shoal server``'s default: nothing is replaced during the measurement."""
    heartbeat: float = 10.0
    """As ``shoal server --heartbeat-interval``."""
    after: str = "restart"
    """What follows the kill: ``restart``, ``delete_node`` or ``nothing``."""
    drop: float = 0.01
    timeout: float = 400.0

    def command(self) -> str:
        return f"python -m shoal.sim --scenario node-death --seed {self.seed}"


@dataclass
class DeathReport:
    options: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    trace: str = ""
    victim: str = ""
    victim_pods: int = 0
    since_heartbeat: float = 0.0
    """Seconds between the victim's last Lease renewal and the kill."""
    leave_seconds: float | None = None
    """Virtual seconds from the kill until no live peer lists a victim pod as ready."""
    per_peer: dict[str, float] = field(default_factory=dict)
    back_seconds: float | None = None
    """After ``restart``: seconds from the restart until every peer's ready endpoints are
    exactly the ready copies; after ``delete_node``: from the deletion until no replica
    holds a pod bound to the victim."""
    spurious_not_ready: int = 0
    """NodeNotReady events on pods of nodes that never died (a lease judged stale wrongly)."""
    controller_errors: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def service() -> dict[str, Any]:
    return {"metadata": {"name": APP}, "spec": {
        "selector": {"app": APP}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


class _Run:
    def __init__(self, opts: DeathOptions, loop: VirtualEventLoop, report: DeathReport) -> None:
        self.opts, self.loop, self.report = opts, loop, report
        cluster = SimCluster(opts.peers, opts.seed, mesh_config.sim(), loop,
                             LinkFaults(drop=opts.drop))
        timing = KubeletTiming(heartbeat=opts.heartbeat)
        self.cp = ControlCluster(cluster, opts.pod_eviction_timeout, timing,
                                 node_monitor_grace=opts.node_monitor_grace)
        self.cluster = cluster
        self.rng = random.Random(f"{opts.seed}:node-death")
        r = cluster.registry
        self.kinds = {k: r.by_kind(v, k) for v, k in (
            ("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Node"), ("v1", "Pod"))}

    async def until(self, done: Any, timeout: float) -> float | None:
        start = self.loop.time()
        while not done():
            if self.loop.time() - start >= timeout:
                return None
            await asyncio.sleep(0.1)
        return self.loop.time() - start

    def ready_copies(self) -> set[tuple[str, str]]:
        return {(c.node, c.name) for c in self.cp.timeline.copies.values()
                if c.labels.get("app") == APP and c.ready and not c.terminating}

    def settled(self) -> bool:
        want = self.ready_copies()
        if len(want) != self.opts.replicas:
            return False
        return all(endpoint_checks.ready_endpoints(n.store, NAMESPACE, APP) == want
                   for n in self.cp.up())

    async def run(self) -> None:
        opts, report = self.opts, self.report
        await self.cp.start()
        first = next(iter(self.cluster.nodes.values()))
        deploy, svc = self.kinds["Deployment"], self.kinds["Service"]
        assert deploy is not None and svc is not None
        await first.store.create(deploy, deployment(opts.replicas, 1, 0), NAMESPACE)
        await first.store.create(svc, service(), NAMESPACE)
        if await self.until(self.settled, opts.timeout) is None:
            report.failures.append("never settled: not every peer listed every pod ready")
            return
        for n in self.cp.up():
            report.failures += endpoint_checks.check_nodes_and_ips(n.store, NAMESPACE, APP)
        hosts = sorted({node for node, _ in self.ready_copies()})
        victim = self.rng.choice(hosts)
        report.victim = victim
        report.victim_pods = sum(1 for node, _ in self.ready_copies() if node == victim)
        # Kill at a random moment of the victim's heartbeat cycle.
        await asyncio.sleep(self.rng.uniform(0.0, opts.heartbeat))
        own = self.cluster.nodes[victim].store
        report.since_heartbeat = round(own.replica.wall.now()
                                       - endpoint_checks.last_renewal(own, victim), 3)
        killed_at = self.loop.time()
        await self.cp.kill(victim)
        watch = endpoint_checks.LeaveWatch(victim, NAMESPACE, APP)
        left = await self.until(lambda: watch.sample(self.cp.up(), self.loop.time()),
                                opts.timeout)
        if left is None:
            report.failures.append(f"{victim}'s pods were still ready endpoints "
                                   f"{opts.timeout}s after the kill")
            return
        report.leave_seconds = round(left, 3)
        report.per_peer = {k: round(v - killed_at, 3) for k, v in sorted(watch.left_at.items())}
        bound = opts.node_monitor_grace + PROPAGATION_SLACK
        if left > bound:
            report.failures.append(f"{victim}'s pods left the endpoints {left:.1f}s after the "
                                   f"kill, over the grace period plus propagation ({bound}s)")
        report.spurious_not_ready = endpoint_checks.not_ready_marks(
            self.cp.up()[0].store, exclude=victim)
        if report.spurious_not_ready:
            report.failures.append(f"{report.spurious_not_ready} pods of live nodes were marked "
                                   "not ready")
        if opts.after == "restart":
            await self.cp.restart(victim)
            report.back_seconds = await self.until(self.settled, opts.timeout)
            if report.back_seconds is None:
                report.failures.append("after the restart the endpoints never matched the "
                                       "ready pods on every peer")
        elif opts.after == "delete_node":
            node_kind = self.kinds["Node"]
            assert node_kind is not None
            await self.cp.up()[0].store.delete(node_kind, None, victim)
            report.back_seconds = await self.until(
                lambda: not any(endpoint_checks.pods_on(n.store, victim) for n in self.cp.up()),
                opts.timeout)
            if report.back_seconds is None:
                report.failures.append(f"pods bound to the deleted node {victim} remain")


async def execute(opts: DeathOptions, report: DeathReport) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    r = _Run(opts, loop, report)
    await finish_after(r.run(), r.cp, report)


def run(opts: DeathOptions) -> DeathReport:
    """One seeded run on a fresh virtual loop: a pure function of ``opts``."""
    report = DeathReport(options=asdict(opts))
    wall = time.perf_counter()
    virtual_run(execute(opts, report))
    report.wall_seconds = round(time.perf_counter() - wall, 3)
    return report
