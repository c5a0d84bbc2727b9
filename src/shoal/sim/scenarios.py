"""Simulation runs: a seeded chaos run with a safety and a liveness phase, and the benchmarks.

Every run builds its own virtual loop, so a run is a pure function of its options:
the same options give the same trace hash.

- ``chaos``: writes from every peer while the network loses, duplicates and delays
  messages, partitions come and go and peers are killed and restarted (safety
  phase); then the faults stop and the replicas must converge (liveness phase);
  then the checkers run and the idle traffic is measured. With ``scopes``, Scope
  objects over subsets of the peers are written and spread first, the writes go to
  their namespaces (on their writers) and to unscoped ones (``shoal.sim.tenants``),
  visibility is checked after every step, and convergence, durability and
  resurrection are judged per scope, among its members.
- ``one_write``: a formed, quiet cluster; one write; time until every replica has it.
- ``partition_heal``: both halves write (the same names too, deletes against
  updates) while split; time from the heal until every replica is identical.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shoal.mesh import config as mesh_config
from shoal.mesh.config import MeshConfig
from shoal.mesh.topology import Role
from shoal.sim import tenants as scoped
from shoal.sim.checkers import (
    convergence,
    durability,
    membership,
    resurrection,
    scope_convergence,
    scope_durability,
    tombstones,
    visibility,
    weak_links,
)
from shoal.sim.cluster import NAMESPACE, RESOURCE, SimCluster
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster

log = logging.getLogger("shoal.sim")


def sim_config() -> MeshConfig:
    """The simulator's preset with tombstones collected within seconds, so runs exercise it."""
    return dataclasses.replace(mesh_config.sim(), gc_interval=2.0, gc_min_age=10.0)


@dataclass
class Options:
    peers: int = 5
    seed: int = 0
    scenario: str = "chaos"
    writes: int = 60
    partitions: int = 2
    kills: int = 1
    drop: float = 0.02
    duplicate: float = 0.02
    delay_mean: float = 0.004
    safety_seconds: float = 30.0
    liveness_timeout: float = 300.0
    idle_seconds: float = 20.0
    preformed: bool = True
    scopes: int = 0
    """Scope objects (tenants) in the chaos run; 0: everything in the cluster scope."""
    scope_changes: int = 0
    sites: int = 0
    """Chaos: sites of two super-peers and weak peers each (``shoal.sim.super_peers``),
    about ``peers`` in all; 0: every peer is a full peer."""
    sites_per_region: int = 0
    """With sites: consecutive sites grouped in regions of this many (``--region``); 0:
    no regions."""
    """With scopes: membership edits (a peer added to or removed from a Scope) during
    the faults."""
    torn_commits: bool = False
    """Chaos: peers write to simulated disks (``shoal.sim.disk``): a kill lands during the
    commit of a write, loses what was not committed, and the restart loads from disk."""
    stale_restarts: int = 0
    """Chaos, with disks: how many restarts come back from a backup of the data dir taken
    some seconds before the kill (an older replica)."""
    clock_jumps: int = 0
    """Chaos: how many times one peer's wall clock jumps, forwards or backwards."""
    config: MeshConfig = field(default_factory=sim_config)

    def command(self) -> str:
        """The command line that reproduces this run."""
        return (
            f"python -m shoal.sim --scenario {self.scenario} --peers {self.peers} "
            f"--seed {self.seed} --writes {self.writes} --partitions {self.partitions} "
            f"--kills {self.kills} --drop {self.drop} --duplicate {self.duplicate} "
            f"--safety-seconds {self.safety_seconds}"
            + ("" if self.preformed else " --join")
            + (f" --scopes {self.scopes}" if self.scopes else "")
            + (f" --scope-changes {self.scope_changes}" if self.scope_changes else "")
            + (f" --sites {self.sites}" if self.sites else "")
            + (f" --sites-per-region {self.sites_per_region}" if self.sites_per_region else "")
            + (f" --idle-seconds {self.idle_seconds:g}" if self.idle_seconds != 20.0 else "")
            + (" --torn-commits" if self.torn_commits else "")
            + (f" --stale-restarts {self.stale_restarts}" if self.stale_restarts else "")
            + (f" --clock-jumps {self.clock_jumps}" if self.clock_jumps else "")
        )


@dataclass
class Report:
    options: dict[str, Any]
    trace: str = ""
    failures: list[str] = field(default_factory=list)
    converge_seconds: float | None = None
    """Virtual seconds from the end of the faults (or from the write) to identical replicas."""
    rounds: int | None = None
    """Anti-entropy rounds (pull intervals) those seconds span."""
    members_converge_seconds: float | None = None
    bytes_per_node: float = 0.0
    """Bytes sent per node over the whole run."""
    messages_per_node: float = 0.0
    idle_bytes_per_node_per_second: float = 0.0
    idle_kbit_per_node: float = 0.0
    acked_writes: int = 0
    refused_writes: int = 0
    virtual_seconds: float = 0.0
    wall_seconds: float = 0.0
    garbage: int = 0
    handler_errors: int = 0
    tombstones_held: int | None = None
    """Tombstone documents in all replicas once converged (with collection on)."""
    tombstones_left: int | None = None
    """... once the collection had time to run: 0 unless a tombstone is stuck."""
    fences: int | None = None
    """Fences (collected tombstones' stamps) in all replicas at the end."""
    gc_seconds: float | None = None
    """Virtual seconds from convergence until no replica held a tombstone."""
    scope_leaks: int | None = None
    """With scopes: (peer, object) pairs held by a non-member at the end (0 unless leaked)."""
    visibility_checks: int = 0
    """With scopes: how many times every replica was checked for foreign objects."""
    writes_torn: int = 0
    """With disks: queued writes (local writes, merges, cursors) that kills tore."""
    writes_lost_to_restores: int = 0
    """Acknowledged writes only their peer held when an older backup replaced its disk
    (not expected to survive)."""

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


async def _until(loop: VirtualEventLoop, cond: Callable[[], bool], timeout: float,
                 step: float) -> float | None:
    """Virtual seconds until ``cond()`` holds (checked every ``step``), or None on timeout."""
    start = loop.time()
    while True:
        if cond():
            return loop.time() - start
        if loop.time() - start >= timeout:
            return None
        await asyncio.sleep(step)


def _rounds(seconds: float | None, cfg: MeshConfig) -> int | None:
    return None if seconds is None else max(1, math.ceil(seconds / cfg.pull_interval))


def _converged(cluster: SimCluster, tenants: scoped.Tenants | None = None) -> bool:
    replicas = {n.name: n.replica for n in cluster.up_nodes()}
    if tenants is not None:
        truth = tenants.truth(replicas)
        handoffs = {n.name: n.peer.anti_entropy.handing_off()
                    for n in cluster.up_nodes() if n.peer is not None}
        return not (scope_convergence.check(replicas, truth, limit=1)
                    or scope_convergence.handoffs_pending(handoffs, replicas, truth))
    return not convergence.check(replicas, limit=1)


class _ScopeWatch:
    """The per-step checks of a scoped run: visibility and early forgetting, on every
    replica (a killed peer's too: its disk keeps what it held). Only the first failing
    step is reported, with when and after what."""

    def __init__(self, cluster: SimCluster, tenants: scoped.Tenants, report: Report) -> None:
        self.cluster, self.tenants, self.report = cluster, tenants, report
        self.failed = False
        self.via: dict[str, list[str]] | None = None
        """Per weak peer, its site's super-peers (None: no super-peers in this run)."""
        if isinstance(cluster, RoleCluster):
            self.via = {n: cluster.names(Role.SUPER, site)
                        for n, (role, site) in cluster.role.items() if role == Role.WEAK}

    def step(self, after: str) -> None:
        if self.failed:
            return
        replicas = {n.name: n.replica for n in self.cluster.nodes.values()}
        t = self.tenants
        self.report.visibility_checks += 1
        # While membership changes, a peer may hold a scope it was ever a member of (it
        # drops it once it learns it left); one never named must never hold anything.
        problems = (visibility.check(replicas, t.ever_map(), limit=3)
                    + scope_durability.forgotten_early(
                        replicas, None if t.changes else t.scopes, limit=3, via=self.via))
        if problems:
            self.failed = True
            at = self.cluster.loop.time()
            self.report.failures += [f"at {at:.3f}s after {after}: {p}" for p in problems]


async def _measure_idle(cluster: SimCluster, seconds: float, report: Report) -> None:
    """Bytes sent per node per second once quiet: after one full cycle of pull partners,
    so that catching up lagging cursors is not counted as idle traffic."""
    cfg = cluster.config
    await asyncio.sleep(cfg.pull_interval * (cfg.pull_partners + 1))
    cluster.network.reset_counters()
    await asyncio.sleep(seconds)
    total = sum(cluster.network.bytes_sent.values())
    n = max(1, len(cluster.up_nodes()))
    report.idle_bytes_per_node_per_second = total / n / seconds if seconds else 0.0
    report.idle_kbit_per_node = report.idle_bytes_per_node_per_second * 8 / 1000


def _finish(cluster: SimCluster, report: Report, run_bytes: float, run_messages: float) -> None:
    n = len(cluster.nodes)
    report.bytes_per_node = run_bytes / n
    report.messages_per_node = run_messages / n
    report.acked_writes = len(cluster.acked)
    report.refused_writes = cluster.write_errors
    report.trace = cluster.network.trace_hash
    report.garbage = sum(
        n.peer.garbage + n.peer.anti_entropy.garbage for n in cluster.up_nodes() if n.peer
    )
    report.writes_torn = sum(d.torn for d in cluster.disk.values())
    report.writes_lost_to_restores = len(cluster.lost_to_restores)
    report.handler_errors = cluster.network.handler_errors
    if report.handler_errors:
        report.failures.append(f"{report.handler_errors} message handlers raised")


async def _chaos(opts: Options, loop: VirtualEventLoop, report: Report) -> None:
    cfg = opts.config
    faults = LinkFaults(drop=opts.drop, duplicate=opts.duplicate, delay_mean=opts.delay_mean)
    cluster: SimCluster
    settled: Callable[[], bool]
    disks = opts.torn_commits or opts.stale_restarts > 0
    if opts.sites:
        layout = Layout(sites=opts.sites, supers_per_site=2,
                        weak_per_site=max(1, opts.peers // opts.sites - 2),
                        sites_per_region=opts.sites_per_region)
        cluster = RoleCluster(0, opts.seed, cfg, loop, faults, layout=layout, disks=disks)
        settled = cluster.members_settled
        links = weak_links.WeakLinkChecker(cluster.role)
        cluster.network.observers.append(links.observe)
    else:
        cluster = SimCluster(opts.peers, opts.seed, cfg, loop, faults, disks=disks)
        settled = cluster.members_converged
        links = None
    rng = random.Random(f"{opts.seed}:workload")
    await cluster.start(preformed=opts.preformed)
    names = list(cluster.nodes)
    tenants: scoped.Tenants | None = None
    watch: _ScopeWatch | None = None
    if opts.scopes:
        supers = None
        if isinstance(cluster, RoleCluster):
            supers = {n: cluster.names(Role.SUPER, site) for n, (role, site)
                      in cluster.role.items() if role == Role.WEAK}
        tenants = scoped.plan(names, opts.scopes, opts.seed, supers)
        await scoped.create(cluster, tenants)
        chosen = tenants
        spread = await _until(loop, lambda: scoped.everywhere(cluster, chosen),
                              opts.liveness_timeout, 0.25)
        if spread is None:
            report.failures.append("the Scope objects did not reach every peer")
        watch = _ScopeWatch(cluster, tenants, report)
        watch.step("the scopes spread")

    def write() -> Awaitable[bool]:
        if tenants is not None:
            return scoped.random_write(cluster, tenants, rng)
        return cluster.random_write(rng)

    # -- safety: writes and faults on a schedule drawn up front ---------------------------
    events: list[tuple[float, int, str, Callable[[], Awaitable[Any]]]] = []
    seq = 0

    def at(t: float, what: str, action: Callable[[], Awaitable[Any]]) -> None:
        nonlocal seq
        seq += 1
        events.append((t, seq, what, action))

    for _ in range(opts.writes):
        at(rng.uniform(0, opts.safety_seconds), "write", write)
    for _ in range(opts.partitions):
        start = rng.uniform(0, opts.safety_seconds * 0.8)
        length = rng.uniform(2.0, opts.safety_seconds * 0.5)
        side = set(rng.sample(names, rng.randint(1, max(1, len(names) // 2))))
        groups = [sorted(f"{n}:7443" for n in side),
                  sorted(f"{n}:7443" for n in names if n not in side)]

        def cut(groups: list[list[str]] = groups) -> Awaitable[None]:
            cluster.network.partition(groups)
            cluster.network.note(f"partition {len(groups[0])}/{len(groups[1])}")
            return asyncio.sleep(0)

        def heal() -> Awaitable[None]:
            cluster.network.heal()
            cluster.network.note("heal")
            return asyncio.sleep(0)

        at(start, "partition", cut)
        at(min(start + length, opts.safety_seconds), "heal", heal)
    # The new faults draw from their own streams, so runs without them are unchanged.
    torn = random.Random(f"{opts.seed}:torn") if opts.torn_commits else None
    stale = random.Random(f"{opts.seed}:stale")
    for i in range(opts.kills):
        victim = rng.choice(names)
        start = rng.uniform(0, opts.safety_seconds * 0.8)
        at(start, "kill", lambda v=victim: cluster.kill(v, torn))  # type: ignore[misc]
        back = start + rng.uniform(1.0, 10.0)
        if i < opts.stale_restarts:
            # A backup taken up to 10 s before the kill (at least at the start).
            taken = max(0.0, start - stale.uniform(0.5, 10.0))
            at(taken, "backup", lambda v=victim: cluster.back_up(v))  # type: ignore[misc]
            at(back, "restart from backup",
               lambda v=victim: cluster.restart(v, from_backup=True))  # type: ignore[misc]
        else:
            at(back, "restart", lambda v=victim: cluster.restart(v))  # type: ignore[misc]
    jumps = random.Random(f"{opts.seed}:clock-jumps")
    for _ in range(opts.clock_jumps):
        who = jumps.choice(names)
        when = jumps.uniform(0, opts.safety_seconds)
        by = jumps.choice([-1, 1]) * jumps.uniform(1.0, 600.0)
        at(when, "clock jump", lambda w=who, b=by: cluster.jump_clock(w, b))  # type: ignore[misc]
    if tenants is not None:
        edits = random.Random(f"{opts.seed}:scope-changes")
        for _ in range(opts.scope_changes):
            at(edits.uniform(0, opts.safety_seconds), "scope change",
               lambda t=tenants: scoped.change_members(cluster, t, edits))  # type: ignore[misc]
    events.sort(key=lambda e: (e[0], e[1]))
    # Debug output draws from its own stream, so turning it on never changes the run.
    debug_rng = random.Random(f"{opts.seed}:debug")
    t0 = loop.time()
    for t, _, what, action in events:
        await asyncio.sleep(max(0.0, t0 + t - loop.time()))
        await action()
        if watch is not None:
            watch.step(what)
        if what != "write" and log.isEnabledFor(logging.INFO):
            up = cluster.up_nodes()
            if up:
                n = debug_rng.choice(up)
                live = len(n.peer.live_peers()) if n.peer else 0
                log.info("%.3fs %s; %s sees %d live, revision %d", loop.time(), what, n.name,
                         live, n.replica.revision)
    await asyncio.sleep(max(0.0, t0 + opts.safety_seconds - loop.time()))
    # -- liveness: no more faults; everyone must converge ----------------------------
    cluster.network.heal()
    cluster.network.note("liveness")
    for name in names:
        await cluster.restart(name)
    report.converge_seconds = await _until(loop, lambda: _converged(cluster, tenants),
                                           opts.liveness_timeout, 0.25)
    report.rounds = _rounds(report.converge_seconds, cfg)
    report.members_converge_seconds = await _until(loop, settled, opts.liveness_timeout, 0.25)
    run_bytes = sum(cluster.network.bytes_sent.values())
    run_messages = sum(cluster.network.messages_sent.values())
    replicas = {n.name: n.replica for n in cluster.up_nodes()}
    final = cluster.nodes[names[0]].replica
    if report.converge_seconds is None:
        report.failures += [f"no convergence within {opts.liveness_timeout}s"]
        report.failures += (convergence.check(replicas) if tenants is None
                            else scope_convergence.check(replicas, tenants.truth(replicas)))
    report.failures += cluster.claims_beyond_disk[:5]
    if tenants is None:
        report.failures += durability.check(cluster.must_keep(), final)
        report.failures += resurrection.check(cluster.not_undone(), final)
    else:
        truth = tenants.truth(replicas)
        report.failures += scope_durability.check(cluster.must_keep(), replicas, truth,
                                                  exempt=tenants.exempt(truth))
    if watch is not None:
        watch.step("convergence")
    if report.members_converge_seconds is None:
        report.failures += (membership.check(n.peer for n in cluster.up_nodes() if n.peer)
                            if not opts.sites else ["the member lists did not settle"])
    if cfg.gc_interval > 0 and cfg.gc_min_age <= opts.liveness_timeout:
        # (With production horizons a run would wait an hour of virtual time.)
        await _collect(cluster, opts, report, tenants)
        if watch is not None:
            watch.step("tombstone collection")
    await _measure_idle(cluster, opts.idle_seconds, report)
    if tenants is not None:
        assert watch is not None
        watch.step("the idle phase")
        # Now exactly: a peer removed from a scope has dropped it.
        truth = tenants.truth(replicas)
        report.failures += [f"at the end: {p}" for p in visibility.check(replicas, truth)]
        report.scope_leaks = visibility.leaks(replicas, truth)
    if links is not None:
        report.failures += links.check()
    _finish(cluster, report, run_bytes, run_messages)
    await cluster.stop()


async def _collect(cluster: SimCluster, opts: Options, report: Report,
                   tenants: scoped.Tenants | None = None) -> None:
    """Tombstone collection: every tombstone goes within its horizon, and the replicas
    still agree, lose nothing and revive nothing once they are gone."""
    cfg = cluster.config
    loop = cluster.loop
    replicas = {n.name: n.replica for n in cluster.up_nodes()}
    report.tombstones_held = tombstones.held(replicas)
    # Rows are published at most every coverage_publish_interval, and a collection can
    # wait on two rounds of them (a member's row, then the rows that absorbed it): a
    # short liveness timeout must not cut that (issue 10's membership-change seeds 110,
    # 166 and 199 collected everything in 74-82 s against a window of 70).
    window = cfg.gc_min_age + max(opts.liveness_timeout, 4 * cfg.coverage_publish_interval)
    report.gc_seconds = await _until(loop, lambda: tombstones.held(replicas) == 0,
                                     window, cfg.gc_interval)
    report.tombstones_left = tombstones.held(replicas)
    report.fences = sum(len(r.fences) for r in replicas.values())
    if report.gc_seconds is None:
        report.failures += tombstones.check(replicas)
    if tenants is not None:
        report.failures += [f"after collection: {p}" for p in
                            scope_convergence.check(replicas, tenants.truth(replicas))
                            + scope_durability.check(
                                cluster.must_keep(), replicas, tenants.truth(replicas),
                                exempt=tenants.exempt(tenants.truth(replicas)))]
        return
    report.failures += convergence.check(replicas)
    for name, replica in replicas.items():
        report.failures += [f"after collection on {name}: {p}"
                            for p in durability.check(cluster.must_keep(), replica)
                            + resurrection.check(cluster.not_undone(), replica)]


async def _one_write(opts: Options, loop: VirtualEventLoop, report: Report) -> None:
    cfg = opts.config
    cluster = SimCluster(opts.peers, opts.seed, cfg, loop,
                         LinkFaults(drop=opts.drop, delay_mean=opts.delay_mean))
    await cluster.start(preformed=True)
    await asyncio.sleep(2 * cfg.pull_interval)  # let the start-up pulls settle
    await _measure_idle(cluster, opts.idle_seconds, report)
    cluster.network.reset_counters()
    writer = next(iter(cluster.nodes.values()))
    await cluster.write(writer, "create", "one", {"k": "v"})
    entry = writer.replica.entry(RESOURCE, NAMESPACE, "one")
    assert entry is not None
    want = entry.document().root

    def everywhere() -> bool:
        for n in cluster.nodes.values():
            e = n.replica.entry(RESOURCE, NAMESPACE, "one")
            if e is None or e.document().root != want:
                return False
        return True

    report.converge_seconds = await _until(loop, everywhere, opts.liveness_timeout, 0.01)
    report.rounds = _rounds(report.converge_seconds, cfg)
    if report.converge_seconds is None:
        report.failures.append("the write did not reach every replica")
    _finish(cluster, report, sum(cluster.network.bytes_sent.values()),
            sum(cluster.network.messages_sent.values()))
    await cluster.stop()


async def _partition_heal(opts: Options, loop: VirtualEventLoop, report: Report) -> None:
    cfg = opts.config
    cluster = SimCluster(opts.peers, opts.seed, cfg, loop,
                         LinkFaults(drop=opts.drop, duplicate=opts.duplicate,
                                    delay_mean=opts.delay_mean))
    rng = random.Random(f"{opts.seed}:workload")
    await cluster.start(preformed=True)
    nodes = list(cluster.nodes.values())
    half = len(nodes) // 2
    a, b = nodes[:half], nodes[half:]
    # Objects both sides know before the split: one will be deleted on one side and
    # updated on the other.
    for i in range(3):
        await cluster.write(a[0], "create", f"cm-{i}", {"before": "split"})
    await _until(loop, lambda: _converged(cluster), opts.liveness_timeout, 0.25)
    cluster.network.partition([[n.address for n in a], [n.address for n in b]])
    cluster.network.note("partition")
    for side, other in ((a, "a"), (b, "b")):
        for i in range(max(1, opts.writes // 2)):
            node = rng.choice(side)
            await cluster.write(node, "create", f"cm-{3 + i % 6}", {"side": other})
            await asyncio.sleep(rng.uniform(0, 0.2))
    await cluster.write(a[0], "delete", "cm-0", {})
    await cluster.write(b[-1], "update", "cm-0", {"side": "b"})
    await cluster.write(b[-1], "delete", "cm-1", {})
    await cluster.write(a[-1], "update", "cm-1", {"side": "a"})
    await asyncio.sleep(opts.safety_seconds)  # long enough for the halves to declare each other dead
    cluster.network.heal()
    cluster.network.note("heal")
    cluster.network.reset_counters()
    report.converge_seconds = await _until(loop, lambda: _converged(cluster),
                                           opts.liveness_timeout, 0.1)
    report.rounds = _rounds(report.converge_seconds, cfg)
    report.members_converge_seconds = await _until(loop, cluster.members_converged,
                                                   opts.liveness_timeout, 0.25)
    final = nodes[0].replica
    if report.converge_seconds is None:
        report.failures.append(f"no convergence within {opts.liveness_timeout}s after the heal")
    report.failures += durability.check(cluster.must_keep(), final)
    report.failures += resurrection.check(cluster.not_undone(), final)
    for gone in ("cm-0", "cm-1"):
        if final.get(RESOURCE, NAMESPACE, gone) is not None:
            report.failures.append(f"{gone} was deleted and updated concurrently and came back")
    _finish(cluster, report, sum(cluster.network.bytes_sent.values()),
            sum(cluster.network.messages_sent.values()))
    await cluster.stop()


async def _restored_writer(opts: Options, loop: VirtualEventLoop, report: Report) -> None:
    """A peer restored from an older backup of its data dir writes at once.

    Its partners hold pull cursors for it past the revision the backup restores (they
    pulled the ``writes`` creates it made after the backup), and pushes are off, so only
    pulls can carry its new creates. Its revision counter went back: the revisions it hands
    out again fall at or below those cursors, and a pull that trusted them skipped the new
    writes for good (issue 16). Every replica must hold them within the liveness window."""
    cfg = dataclasses.replace(opts.config, push_fanout=0)
    cluster = SimCluster(opts.peers, opts.seed, cfg, loop,
                         LinkFaults(drop=opts.drop, duplicate=opts.duplicate,
                                    delay_mean=opts.delay_mean), disks=True)
    rng = random.Random(f"{opts.seed}:workload")
    await cluster.start(preformed=True)
    nodes = list(cluster.nodes.values())
    restored = nodes[0]
    await asyncio.sleep(2 * cfg.pull_interval)
    await cluster.back_up(restored.name)
    await asyncio.sleep(rng.uniform(0, cfg.pull_interval))
    for i in range(opts.writes):
        await cluster.write(restored, "create", f"before-{i}", {"k": str(rng.randrange(1000))})

    def cursors_past_backup() -> bool:
        top = restored.replica.durable_revision
        return all(n.peer is not None and n.peer.anti_entropy.cursors.get(
            (restored.name, ""), 0) >= top for n in nodes[1:])

    if await _until(loop, cursors_past_backup, opts.liveness_timeout, 0.25) is None:
        report.failures.append("the partners' cursors never reached the restored peer's "
                               "revision before the restore")
    await cluster.kill(restored.name)
    await asyncio.sleep(rng.uniform(0.5, 3.0))
    await cluster.restart(restored.name, from_backup=True)
    first = len(cluster.acked)
    await asyncio.gather(*(cluster.write(restored, "create", f"after-{i}",
                                         {"k": str(rng.randrange(1000))})
                           for i in range(opts.writes)))
    after = cluster.acked[first:]
    if len(after) != opts.writes:
        report.failures.append(f"only {len(after)} of {opts.writes} writes were acknowledged")

    def everywhere() -> bool:
        return (all(not durability.check(after, n.replica, limit=1) for n in nodes)
                and _converged(cluster))

    report.converge_seconds = await _until(loop, everywhere, opts.liveness_timeout, 0.25)
    report.rounds = _rounds(report.converge_seconds, cfg)
    for n in nodes:
        report.failures += [f"on {n.name}: {p}" for p in durability.check(after, n.replica)]
    replicas = {n.name: n.replica for n in nodes}
    report.failures += convergence.check(replicas)
    report.failures += durability.check(cluster.must_keep(), restored.replica)
    _finish(cluster, report, sum(cluster.network.bytes_sent.values()),
            sum(cluster.network.messages_sent.values()))
    await cluster.stop()


# -- the control plane under a 3/2 split (issue 4): shoal.sim.workloads --
async def _control_partition(opts: Options, loop: VirtualEventLoop, report: Report) -> None:
    from shoal.sim import workloads  # only this scenario needs the controllers

    ctl = workloads.ControlReport(options={})
    await workloads.execute(
        workloads.ControlOptions(seed=opts.seed, peers=opts.peers, drop=opts.drop), ctl)
    report.failures += ctl.failures
    report.converge_seconds = ctl.converge_seconds
    report.trace = ctl.trace
    report.options["control"] = {k: v for k, v in ctl.to_dict().items()
                                 if k not in ("options", "failures", "trace")}
# -- end control plane --


async def _node_death(opts: Options, loop: VirtualEventLoop, report: Report) -> None:
    """A node killed behind a Service (shoal.sim.node_death)."""
    from shoal.sim import node_death

    death = node_death.DeathReport(options={})
    await node_death.execute(node_death.DeathOptions(seed=opts.seed, peers=opts.peers,
                                                     drop=opts.drop), death)
    report.failures += death.failures
    report.trace = death.trace
    report.options["control"] = {k: v for k, v in asdict(death).items()
                                 if k not in ("options", "failures", "trace")}


SCENARIOS: dict[str, Callable[[Options, VirtualEventLoop, Report], Awaitable[None]]] = {
    "chaos": _chaos,
    "one-write": _one_write,
    "partition-heal": _partition_heal,
    "control-partition": _control_partition,
    "node-death": _node_death,
    "restored-writer": _restored_writer,
}


def run(opts: Options) -> Report:
    """Run one simulation to completion on a fresh virtual loop."""
    report = Report(options={k: v for k, v in asdict(opts).items() if k != "config"})
    report.options["config"] = asdict(opts.config)
    wall = time.perf_counter()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        await SCENARIOS[opts.scenario](opts, loop, report)
        report.virtual_seconds = loop.time()

    virtual_run(main())
    report.wall_seconds = time.perf_counter() - wall
    return report
