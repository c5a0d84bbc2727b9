"""The leaderless control plane under a partition: a Deployment scaled on both sides of a 3/2
split while a node fails, then healed, then rolled.

Phases, all on virtual time and drawn from the seed up front:

1. *Settle*: a Deployment of ``replicas`` pods is created on one peer and runs.
2. *Partition* (safety): the peers split 3/2 for ``partition`` seconds; each side scales
   the Deployment to its own count at its own moment, and one peer (either side) is
   killed, so its pods stop and its Lease lapses. Long splits pass the lease grace and
   the eviction timeout, so each side replaces what it cannot see.
3. *Heal* (liveness): the network heals and, with ``restart_probability``, the dead peer
   comes back. The run waits until the replicas agree, the replica counts are met
   (``checkers.replicas``), and what actually runs is exactly the desired pods, each on
   one node (``checkers.bindings``); the wait is the convergence time. The pods kept are
   the ones that ran longest (``checkers.longest_kept``).
4. *Roll*: in the healed mesh the image changes; ``checkers.availability`` samples the
   timeline at every change and fails on any instant with fewer ready pods than
   ``maxUnavailable`` allows.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.mesh import config as mesh_config
from shoal.sim.checkers import availability, bindings, longest_kept, replicas
from shoal.sim.cluster import NAMESPACE, SimCluster
from shoal.sim.control_plane import ControlCluster, finish_after
from shoal.sim.kubelet import KubeletTiming
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults

APP = "web"
STRATEGIES = [(1, 1), (1, 0), (0, 1), (2, 2), (3, 0), (0, 2)]
"""(maxSurge, maxUnavailable) pairs a seed picks from."""


@dataclass
class ControlOptions:
    seed: int = 0
    peers: int = 5
    replicas: int = 6
    """Replicas before the split."""
    scale_min: int = 2
    scale_max: int = 10
    """Each side scales to a count drawn from [scale_min, scale_max]."""
    partition_min: float = 20.0
    partition_max: float = 120.0
    """Seconds the split lasts (the lease grace is 40 s, the eviction timeout below)."""
    pod_eviction_timeout: float = 20.0
    restart_probability: float = 0.5
    max_surge: int | None = None
    max_unavailable: int | None = None
    """The RollingUpdate bounds; None: drawn from the seed (``STRATEGIES``)."""
    drop: float = 0.01
    converge_timeout: float = 400.0
    roll: bool = True
    kubelet: KubeletTiming = field(default_factory=KubeletTiming)

    def command(self) -> str:
        return f"python -m shoal.sim --scenario control-partition --seed {self.seed}"


@dataclass
class ControlReport:
    options: dict[str, Any]
    failures: list[str] = field(default_factory=list)
    trace: str = ""
    plan: dict[str, Any] = field(default_factory=dict)
    """What the seed chose: sides, victim, scale counts and times."""
    desired: int = 0
    settle_seconds: float | None = None
    converge_seconds: float | None = None
    """Virtual seconds from the heal until the replicas converge (see the module doc)."""
    lost_bindings: int = 0
    """Copies a kubelet stopped because the merge bound their pod elsewhere."""
    uid_restarts: int = 0
    """Copies stopped after the heal because the merge gave their pod the other side's uid
    (the kubelet then starts it again: a restart of a healthy pod)."""
    longest_double_run: float = 0.0
    """Virtual seconds the longest double run after the heal lasted."""
    trimmed_after_heal: int = 0
    """Pods running at the heal that the trim deleted after it (``checkers.longest_kept``)."""
    started_after_heal: int = 0
    """Copies running once converged that started after the heal."""
    rollout_seconds: float | None = None
    lowest_ready_during_rollout: int | None = None
    rollout_floor: int = 0
    controller_errors: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def deployment(replicas: int, surge: int, unavailable: int) -> dict[str, Any]:
    return {
        "metadata": {"name": APP},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": APP}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {"containers": [{"name": "c", "image": "web:1", "resources": {
                    "requests": {"cpu": "100m", "memory": "64Mi"}}}]},
            },
        },
    }


class _Run:
    def __init__(self, opts: ControlOptions, loop: VirtualEventLoop, report: ControlReport) -> None:
        self.opts = opts
        self.loop = loop
        self.report = report
        cluster = SimCluster(opts.peers, opts.seed, mesh_config.sim(), loop,
                             LinkFaults(drop=opts.drop))
        self.cp = ControlCluster(cluster, opts.pod_eviction_timeout, opts.kubelet)
        self.cluster = cluster
        self.rng = random.Random(f"{opts.seed}:control")
        self.deploy_kind = cluster.registry.by_kind("apps/v1", "Deployment")
        self.bindings = bindings.BindingChecker()
        # Its own stream, so that the choice does not shift the rest of the plan.
        surge, unavailable = random.Random(f"{opts.seed}:strategy").choice(STRATEGIES)
        self.surge = surge if opts.max_surge is None else opts.max_surge
        self.unavailable = unavailable if opts.max_unavailable is None else opts.max_unavailable
        report.plan["strategy"] = {"maxSurge": self.surge, "maxUnavailable": self.unavailable}
        self.cp.timeline.listeners.append(self.bindings)
        self.longest = longest_kept.LongestKeptChecker({"app": APP})

    # -- reading the state -----------------------------------------------------------

    def _current_hash(self) -> str | None:
        up = self.cp.up()
        if not up:
            return None
        now = up[0].replica.wall.now()
        counts = replicas.counts(up[0].replica, now, self.opts.pod_eviction_timeout)
        if not counts or counts[0].current_rs is None:
            return None
        return counts[0].current_rs.rsplit("-", 1)[-1]

    def problems(self) -> list[str]:
        """Why the control plane has not converged yet; empty once it has."""
        up = self.cp.up()
        out = replicas.identical({n.name: n.replica for n in up})
        if out:
            return out
        ref = up[0].replica
        # Every replica must count them right: Nodes (and so lost nodes) are not compared above.
        for n in up:
            out += replicas.check(n.replica, n.replica.wall.now(), self.opts.pod_eviction_timeout)
        if out:
            return out
        h = self._current_hash()
        mine = [c for c in self.cp.timeline.copies.values() if c.labels.get("app") == APP]
        ready = {(c.namespace, c.name) for c in mine if c.ready and not c.terminating
                 and c.labels.get("pod-template-hash") == h}
        desired = replicas.counts(ref, ref.wall.now(), self.opts.pod_eviction_timeout)[0].desired
        if len(ready) != desired or len(mine) != desired:
            return [f"{len(ready)} ready copies of the current template and {len(mine)} copies "
                    f"in all run, want {desired}"]
        doubles = self.bindings.doubles(self.cp.timeline)
        if doubles:
            return [f"{len(doubles)} pods run on two nodes"]
        return []

    async def until_converged(self, timeout: float) -> float | None:
        start = self.loop.time()
        while True:
            if not self.problems():
                return self.loop.time() - start
            if self.loop.time() - start >= timeout:
                return None
            await asyncio.sleep(0.25)

    async def _edit(self, node_name: str, change: Callable[[dict[str, Any]], None]) -> None:
        node = self.cluster.nodes[node_name]
        assert self.deploy_kind is not None
        d = copy.deepcopy(node.store.get(self.deploy_kind, NAMESPACE, APP))
        change(d)
        await node.store.update(self.deploy_kind, d, NAMESPACE, APP)

    # -- phases ----------------------------------------------------------------------

    async def run(self) -> None:
        opts, report = self.opts, self.report
        assert self.deploy_kind is not None
        await self.cp.start()
        names = list(self.cluster.nodes)
        for node in self.cluster.nodes.values():
            self.longest.watch(node.replica, self.cp.timeline, self.loop.time)
        first = self.cluster.nodes[names[0]]
        await first.store.create(
            self.deploy_kind, deployment(opts.replicas, self.surge, self.unavailable),
            NAMESPACE)
        report.settle_seconds = await self.until_converged(opts.converge_timeout)
        if report.settle_seconds is None:
            report.failures.append(f"never settled before the split: {self.problems()[:3]}")
            return
        await self.split(names)
        heal_at = self.loop.time()
        report.converge_seconds = await self.until_converged(opts.converge_timeout)
        if report.converge_seconds is None:
            report.failures.append(
                f"no convergence {opts.converge_timeout}s after the heal: {self.problems()[:3]}")
            return
        up = self.cp.up()
        ref = up[0].replica
        for n in up:
            report.failures += replicas.check(n.replica, ref.wall.now(),
                                              opts.pod_eviction_timeout)
        report.failures += self.bindings.check(self.cp.timeline, ref)
        report.failures += self.longest.check(self.cp.timeline)
        report.trimmed_after_heal = len(self.longest.trimmed())
        report.started_after_heal = self.longest.created_after_heal(self.cp.timeline)
        report.longest_double_run = round(self.bindings.longest(self.loop.time()), 3)
        report.lost_bindings = sum(1 for t, e in self.cp.timeline.events
                                   if t >= heal_at and "binding moved" in e)
        report.uid_restarts = sum(1 for t, e in self.cp.timeline.events
                                  if t >= heal_at and "replaced by another uid" in e)
        report.desired = replicas.counts(ref, ref.wall.now(), opts.pod_eviction_timeout)[0].desired
        if opts.roll:
            await self.roll()

    async def split(self, names: list[str]) -> None:
        opts, report, rng = self.opts, self.report, self.rng
        side_a = sorted(rng.sample(names, 3 if len(names) >= 5 else max(1, len(names) // 2)))
        side_b = [n for n in names if n not in side_a]
        length = rng.uniform(opts.partition_min, opts.partition_max)
        victim = rng.choice(names)
        plan: list[tuple[float, str, Callable[[], Awaitable[None]]]] = []
        for side in (side_a, side_b):
            count = rng.randint(opts.scale_min, opts.scale_max)
            at = rng.uniform(0.0, length * 0.6)
            writer = rng.choice(side)

            async def scale(writer: str = writer, side: list[str] = side,
                            count: int = count) -> None:
                # The chosen writer may be the dead peer by now: a live one of its side writes.
                live = [n for n in [writer, *side] if self.cluster.nodes[n].up]
                if live:
                    await self._edit(live[0],
                                     lambda d: d["spec"].__setitem__("replicas", count))
                    self.cluster.network.note(f"{live[0]} scales to {count}")

            plan.append((at, f"{writer} scales to {count}", scale))
        kill_at = rng.uniform(0.0, length * 0.8)
        plan.append((kill_at, f"kill {victim}", lambda: self.cp.kill(victim)))
        restart = rng.random() < opts.restart_probability
        plan.sort(key=lambda p: p[0])
        report.plan |= {"sides": [side_a, side_b], "partition_seconds": round(length, 3),
                       "victim": victim, "restart_after_heal": restart,
                       "events": [(round(t, 3), what) for t, what, _ in plan]}
        self.cluster.network.partition(
            [[self.cluster.nodes[n].address for n in side] for side in (side_a, side_b)])
        self.cluster.network.note("partition 3/2")
        t0 = self.loop.time()
        for t, _, action in plan:
            await asyncio.sleep(max(0.0, t0 + t - self.loop.time()))
            await action()
        await asyncio.sleep(max(0.0, t0 + length - self.loop.time()))
        self.cluster.network.heal()
        self.cluster.network.note("heal")
        self.bindings.since = self.loop.time()
        self.bindings(self.cp.timeline, self.loop.time())
        self.longest.healed(self.cp.timeline, self.loop.time())
        if restart:
            await self.cp.restart(victim)

    async def roll(self) -> None:
        opts, report = self.opts, self.report
        desired = report.desired
        floor = desired - self.unavailable
        report.rollout_floor = floor
        checker = availability.AvailabilityChecker({"app": APP}, floor)
        self.cp.timeline.listeners.append(checker)
        before = self._current_hash()
        checker.active = True
        checker(self.cp.timeline, self.loop.time())
        start = self.loop.time()
        writer = self.rng.choice([n.name for n in self.cp.up()])

        def new_image(d: dict[str, Any]) -> None:
            d["spec"]["template"]["spec"]["containers"][0]["image"] = "web:2"

        await self._edit(writer, new_image)
        self.cluster.network.note(f"{writer} rolls to web:2")
        while True:
            await asyncio.sleep(0.25)
            if self._current_hash() != before and not self.problems():
                report.rollout_seconds = round(self.loop.time() - start, 3)
                break
            if self.loop.time() - start > opts.converge_timeout:
                report.failures.append(f"the rollout did not complete: {self.problems()[:3]}")
                break
        checker.active = False
        report.lowest_ready_during_rollout = checker.lowest
        report.failures += checker.check()


async def execute(opts: ControlOptions, report: ControlReport) -> None:
    """Run the scenario on the running virtual loop, filling ``report``."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    r = _Run(opts, loop, report)
    await finish_after(r.run(), r.cp, report)


def run(opts: ControlOptions) -> ControlReport:
    """One seeded run on a fresh virtual loop: a pure function of ``opts``."""
    report = ControlReport(options=asdict(opts))
    wall = time.perf_counter()
    virtual_run(execute(opts, report))
    report.wall_seconds = round(time.perf_counter() - wall, 3)
    return report
