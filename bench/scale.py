"""Scale with super-peers: the simulator at 100, 1,000 and 10,000 peers.

Every site has 2 super-peers and 98 weak peers (``--sync-via super``), so N peers are
N/100 sites; the super-peers run SWIM and replicate among themselves, the weak peers
only with their site's two; sites are grouped in regions of 5 (``SITES_PER_REGION``,
coverage by region). Everything runs on virtual time (``shoal.sim``): the real
membership, replication, replica and CRDT code, one process. Per size:

- ``idle``: bytes per node per second, in and out (payload bytes: no TLS or TCP
  framing), over a quiet minute (once coverage too has settled:
  ``until_coverage_quiet``), weak and super-peers apart;
- ``one_write``: rounds (pull intervals) until one write on a weak peer is on every
  replica;
- ``after_burst``: 100 writes on random weak peers within a second, then bytes per node
  per second over the next minute, and when the burst was everywhere;
- ``idle_with_leases`` (up to ``--leases-max`` peers): the idle minute again, with every
  peer renewing its node Lease as ``shoal server`` does, every 10 s, a weak peer every 30 s
  (the figures above have no heartbeats);
- ``memory``: resident memory added per simulated peer (RSS after start and a first
  settling minute, less before, over N);
- ``heal`` (1,000 by default): half the sites cut from the other half for long enough
  to declare each other dead, writes on both sides, then the heal: seconds until every
  member list is settled (full and super-peers see everyone alive, weak peers their
  super-peers) and until the replicas are identical.

``python -m bench.scale [--sizes=100,1000] [--heal=1000] [--collection=100]
[--sites-per-region=5] [--site=100] [--quiet-max=900] [--leases-max=1000] [--tracemalloc]
[--output=FILE]``
runs it alone (``--site=5``: sites of 2 super-peers and 3 weak peers, so 500 peers have
as many super-peers and regions as 10,000 have; ``--quiet-max=0``: the idle minute right
after the settle, without waiting for coverage to be quiet, as before 685ef75); ``--tracemalloc`` lists where the
memory of the largest size goes. Sizes run with tombstone collection off (the mesh
alone); ``--collection`` sizes run again with it on (100, 1,000 and 10,000 by default).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import math
import multiprocessing
import os
import random
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from shoal.mesh import config as mesh_config
from shoal.mesh.config import MeshConfig
from shoal.mesh.messages import MEMBERSHIP_TAGS, TAG, Pull, PullReply, Push
from shoal.mesh.replication_policy import NODE_LEASE_NAMESPACE as NODE_LEASES
from shoal.mesh.topology import Role
from shoal.node.node_status import WEAK_HEARTBEAT_SECONDS, lease_seconds
from shoal.sim.checkers import convergence
from shoal.sim.cluster import NAMESPACE, RESOURCE
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster
from shoal.store.objects import StoreError

SEED = 1
SITE = 100  # peers per site: 2 super-peers and 98 weak peers (``--site``)
SITES_PER_REGION = 5
"""Sites per region (``--region``): 10 super-peers each. ``--sites-per-region=0`` runs
without regions (every super-peer's coverage over the whole backbone, as before)."""
IDLE_SECONDS = 60.0
BURST_WRITES = 100
LEASES_MAX = 1000
"""Sizes up to this one (``--leases-max``) also measure ``idle_with_leases``: every peer
renewing its node Lease as a kubelet does. Larger ones would spend their wall time on
N/10 renewals a virtual second."""
LEASE_RENEW_SECONDS = 10.0  # the kubelet's: a quarter of the 40 s leaseDurationSeconds
WEAK_RENEW_SECONDS = WEAK_HEARTBEAT_SECONDS  # a weak peer's default (``shoal server``)


def layout_for(n: int, sites_per_region: int | None = None) -> Layout:
    sites = max(1, n // SITE)
    return Layout(sites=sites, supers_per_site=2, weak_per_site=max(1, n // sites - 2),
                  sites_per_region=SITES_PER_REGION if sites_per_region is None
                  else sites_per_region)


def config() -> MeshConfig:
    """The production timers (``mesh_config.default()``), tombstone collection included."""
    return mesh_config.default()


def settle_seconds(cfg: MeshConfig, layout: Layout) -> float:
    """Virtual seconds from the start until the cluster is quiet: every pull partner
    asked, every weak peer pulled once by each super-peer, and the coverage that moved
    published."""
    partners = cfg.pull_interval * (cfg.pull_partners + 1)
    weak_cycle = cfg.pull_interval * (layout.weak_per_site + 1)
    return max(partners, weak_cycle) + cfg.coverage_publish_interval + cfg.pull_interval


class CoverageFlow:
    """Counts the bytes of coverage rows and entries in pull answers (a network observer):
    what moves until every row and aggregate has reached every peer that reads it."""

    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self, src: str, dst: str, payload: bytes) -> None:
        if not payload.startswith(b"[9,"):
            return  # not a pull answer
        for part in orjson.loads(payload)[1]:
            if len(part) > 5 and (part[5] or (len(part) > 6 and part[6])):
                self.bytes += len(orjson.dumps(part[4:]))


QUIET_MAX_SECONDS = 900.0


async def until_coverage_quiet(cluster: RoleCluster, cfg: MeshConfig) -> float:
    """Virtual seconds waited until a window of ``coverage_publish_interval`` plus two pull
    intervals carried no coverage row or entry (at most ``QUIET_MAX_SECONDS``). After the
    start, rows and regions' aggregated rows keep moving for minutes: each first pull moves
    a cursor, each cursor moved is published at most every 30 s and absorbed transitively,
    and every aggregate that changed reaches every other region (at 200 super-peers in 20
    regions, ~4 virtual minutes, most of the idle minute the settle above measured)."""
    if cfg.gc_interval <= 0 or QUIET_MAX_SECONDS <= 0:
        return 0.0  # no collection (nothing publishes coverage), or not waited for
    window = cfg.coverage_publish_interval + 2 * cfg.pull_interval
    flow = CoverageFlow()
    cluster.network.observers.append(flow)
    waited = 0.0
    try:
        while waited < QUIET_MAX_SECONDS:
            flow.bytes = 0
            await asyncio.sleep(window)
            waited += window
            if not flow.bytes:
                break
    finally:
        cluster.network.observers.remove(flow)
    return waited


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _traffic(cluster: RoleCluster, seconds: float) -> dict[str, Any]:
    """Bytes per node per second, in and out, since the counters were reset."""
    net = cluster.network
    out: dict[str, Any] = {}
    for role in (Role.WEAK, Role.SUPER):
        rates = sorted(
            (net.bytes_sent[cluster.nodes[n].address] + net.bytes_received[cluster.nodes[n].address])
            / seconds for n in cluster.names(role) if cluster.nodes[n].up)
        if not rates:
            continue
        mean = sum(rates) / len(rates)
        out[str(role)] = {
            "bytes_per_second_mean": round(mean, 2),
            "bytes_per_second_p99": round(rates[min(len(rates) - 1, int(len(rates) * 0.99))], 2),
            "bytes_per_second_max": round(rates[-1], 2),
            "kbit_per_second_mean": round(mean * 8 / 1000, 3),
        }
        sent = sum(net.messages_sent[cluster.nodes[n].address] for n in cluster.names(role))
        out[str(role)]["messages_sent_per_node_per_second"] = round(
            sent / len(rates) / seconds, 3)
    return out




class SuperPeerBytes:
    """Where the super-peers' bytes go: every message sent to or by a super-peer, by kind
    (push, pull request, pull answer, coverage, membership) and by whom it is exchanged
    with (its site's weak peers, the other super-peers of its site, of its region, of other
    regions). A pull answer's documents count as ``pull answer``, its coverage rows and
    entries as ``coverage``. Counts one side of a message per super-peer at its ends, as
    ``_traffic`` does (in + out)."""

    def __init__(self, cluster: RoleCluster) -> None:
        self.where: dict[str, tuple[Role, str, str]] = {
            node.address: (role, site, cluster.layout.region(site))
            for node, (role, site) in zip(cluster.nodes.values(), cluster.role.values(),
                                          strict=True)}
        self.supers = len(cluster.names(Role.SUPER))
        self.bytes: Counter[tuple[str, str]] = Counter()
        self.docs: Counter[tuple[str, str]] = Counter()
        """Document copies, by kind and partner (pushes and pull answers)."""

    def _partner(self, me: tuple[Role, str, str], other: tuple[Role, str, str]) -> str:
        if other[0] == Role.WEAK:
            return "weak peers of its site" if other[1] == me[1] else "weak peers elsewhere"
        if other[1] == me[1]:
            return "super-peers of its site"
        if other[2] == me[2]:
            return "super-peers of its region"
        return "super-peers of other regions"

    def __call__(self, src: str, dst: str, payload: bytes) -> None:
        a, b = self.where.get(src), self.where.get(dst)
        if a is None or b is None or Role.SUPER not in (a[0], b[0]):
            return
        parts: list[tuple[str, int, int]] = []  # (kind, bytes, documents)
        body = orjson.loads(payload)
        tag = body[0] if isinstance(body, list) and body else -1
        if tag == TAG[Push]:
            parts.append(("push", len(payload), len(body[2])))
        elif tag == TAG[Pull]:
            parts.append(("pull request", len(payload), 0))
        elif tag == TAG[PullReply]:
            coverage = docs = 0
            for part in body[1]:
                docs += len(part[3])
                if len(part) > 4:
                    coverage += len(orjson.dumps(part[4:]))
            parts += [("pull answer", len(payload) - coverage, docs), ("coverage", coverage, 0)]
        elif tag in MEMBERSHIP_TAGS:
            parts.append(("membership", len(payload), 0))
        else:
            parts.append(("other", len(payload), 0))
        for me, other in ((a, b), (b, a)):
            if me[0] != Role.SUPER:
                continue
            partner = self._partner(me, other)
            for kind, n, docs in parts:
                if n:
                    self.bytes[kind, partner] += n
                if docs:
                    self.docs[kind, partner] += docs

    def report(self, seconds: float, writes: int = 0) -> dict[str, Any]:
        """kbit/s per super-peer (in + out) by kind and partner; with ``writes``, document
        copies per write per super-peer too."""
        per = 8 / 1000 / seconds / max(1, self.supers)

        def table(keys: Callable[[tuple[str, str]], str]) -> dict[str, float]:
            out: Counter[str] = Counter()
            for k, n in self.bytes.items():
                out[keys(k)] += n
            return {k: round(v * per, 2) for k, v in sorted(out.items(), key=lambda x: -x[1])}

        out: dict[str, Any] = {
            "kbit_per_second_per_super_peer": round(sum(self.bytes.values()) * per, 2),
            "by_kind": table(lambda k: k[0]),
            "by_partner": table(lambda k: k[1]),
            "by_kind_and_partner": table(lambda k: f"{k[0]} / {k[1]}"),
        }
        if writes:
            out["document_copies_per_write_per_super_peer"] = {
                f"{kind} / {partner}": round(n / writes / max(1, self.supers), 2)
                for (kind, partner), n in sorted(self.docs.items(), key=lambda x: -x[1])}
        return out


async def _until(loop: VirtualEventLoop, cond: Any, timeout: float, step: float) -> float | None:
    start = loop.time()
    while not cond():
        if loop.time() - start >= timeout:
            return None
        await asyncio.sleep(step)
    return loop.time() - start


def _everywhere(cluster: RoleCluster, name: str) -> Any:
    want: list[Any] = []

    def check() -> bool:
        for node in cluster.nodes.values():
            e = node.replica.entry(RESOURCE, NAMESPACE, name)
            if e is None or e.value is None:
                return False
            if not want:
                want.append(e.document().root)
            elif e.document().root != want[0]:
                return False
        return True

    return check


async def _size(n: int, cfg: MeshConfig, report: dict[str, Any], trace: bool) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    layout = layout_for(n)
    gc.collect()
    rss0 = _rss()
    wall = time.perf_counter()
    if trace:
        tracemalloc.start(1)
    cluster = RoleCluster(layout.size, SEED, cfg, loop, LinkFaults(), layout=layout)
    rng = random.Random(f"{SEED}:bench")
    await cluster.start()
    report["peers"] = layout.size
    report["layout"] = dataclasses.asdict(layout)
    report["start_wall_seconds"] = round(time.perf_counter() - wall, 1)
    # Settle: every pull partner asked once, every weak peer pulled once by each of its
    # super-peers (one per round, ``ReplicationPolicy.weak_pulls``: the first of those
    # pulls carries the weak peer's state and row from scratch, a one-time cost), and
    # the coverage that this moves published.
    report["settle_virtual_seconds"] = settle = settle_seconds(cfg, layout)
    await asyncio.sleep(settle)
    gc.collect()
    rss1 = _rss()
    report["memory"] = {"rss_bytes_per_peer": round((rss1 - rss0) / layout.size),
                        "rss_total_mib": round((rss1 - rss0) / 2**20, 1)}
    if trace:
        snap = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snap.statistics("filename")
        total = sum(s.size for s in stats)
        report["memory"]["tracemalloc_bytes_per_peer"] = round(total / layout.size)
        report["memory"]["top_files"] = [
            {"file": s.traceback[0].filename.split("/src/")[-1], "mib": round(s.size / 2**20, 1),
             "bytes_per_peer": round(s.size / layout.size)} for s in stats[:12]]
        by_line = snap.statistics("lineno")
        report["memory"]["top_lines"] = [
            {"where": f"{s.traceback[0].filename.split('/src/')[-1]}:{s.traceback[0].lineno}",
             "mib": round(s.size / 2**20, 1)} for s in by_line[:15]]
        del snap, stats, by_line
    # The idle minute is one in which coverage has settled too (``until_coverage_quiet``).
    t = time.perf_counter()
    report["coverage_quiet_after_virtual_seconds"] = round(
        settle + await until_coverage_quiet(cluster, cfg), 1)
    report["coverage_quiet_wall_seconds"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    cluster.network.reset_counters()
    where = SuperPeerBytes(cluster)
    cluster.network.observers.append(where)
    await asyncio.sleep(IDLE_SECONDS)
    cluster.network.observers.remove(where)
    report["idle"] = _traffic(cluster, IDLE_SECONDS)
    report["idle"]["super_peer_bytes"] = where.report(IDLE_SECONDS)
    report["idle"]["wall_seconds"] = round(time.perf_counter() - t, 1)
    # One write on a weak peer.
    weak = cluster.names(Role.WEAK)
    writer = cluster.nodes[rng.choice(weak)]
    cluster.network.reset_counters()
    assert await cluster.write(writer, "create", "one", {"k": "v"})
    took = await _until(loop, _everywhere(cluster, "one"), 300.0, 0.05)
    report["one_write"] = {
        "writer": writer.name,
        "converge_virtual_seconds": None if took is None else round(took, 2),
        "rounds": None if took is None else max(1, math.ceil(took / cfg.pull_interval)),
    }
    # A burst of writes, then the minute after it.
    await asyncio.sleep(10)
    cluster.network.reset_counters()
    where = SuperPeerBytes(cluster)
    cluster.network.observers.append(where)
    start = loop.time()
    names = []
    for i in range(BURST_WRITES):
        node = cluster.nodes[rng.choice(weak)]
        name = f"burst-{i}"
        names.append(name)
        await cluster.write(node, "create", name, {"k": str(i)})
        await asyncio.sleep(1.0 / BURST_WRITES)
    await asyncio.sleep(max(0.0, start + 60.0 - loop.time()))
    cluster.network.observers.remove(where)
    report["after_burst"] = _traffic(cluster, loop.time() - start)
    report["after_burst"]["super_peer_bytes"] = where.report(loop.time() - start, BURST_WRITES)
    last = _everywhere(cluster, names[-1])
    everywhere_at = await _until(
        loop, lambda: last() and all(_everywhere(cluster, x)() for x in names[:1]), 240.0, 0.5)
    report["after_burst"]["writes"] = BURST_WRITES
    report["after_burst"]["everywhere_after_virtual_seconds"] = (
        None if everywhere_at is None else round(loop.time() - start, 1))
    if layout.size <= LEASES_MAX:
        report["idle_with_leases"] = await _idle_with_leases(cluster, rng)
    report["wall_seconds"] = round(time.perf_counter() - wall, 1)
    report["virtual_seconds"] = round(loop.time(), 1)
    await cluster.stop()


def _lease(name: str, renew: str, every: float) -> dict[str, Any]:
    """A node's Lease as the kubelet writes it (owned by its Node), renewed ``every``
    seconds."""
    return {"metadata": {"name": name, "namespace": NODE_LEASES, "ownerReferences": [{
                "apiVersion": "v1", "kind": "Node", "name": name,
                "uid": f"{name}-0000-4000-8000-000000000000"}]},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": lease_seconds(every),
                     "renewTime": renew}}


async def _idle_with_leases(cluster: RoleCluster, rng: random.Random) -> dict[str, Any]:
    """The idle minute again, with every peer renewing its node Lease as a real node does
    (at a random phase: a weak peer every 30 s, the others every 10 s): the simulator's other
    figures have no heartbeats.
    Leases are held near their node (``ReplicationPolicy.withheld``): a weak peer holds its
    own only, a super-peer its own, its site's weak nodes' and its region's super-peers',
    a full peer every one; a node pushes each renewal to each of its holders itself
    (``from_its_node``), to those that do not pull it as a checked delta."""
    loop = asyncio.get_running_loop()
    kind = cluster.registry.by_kind("coordination.k8s.io/v1", "Lease")
    first = next(iter(cluster.nodes.values()))
    await first.store.create(cluster.namespace_kind, {"metadata": {"name": NODE_LEASES}})
    await asyncio.sleep(30.0)  # the namespace everywhere

    def stamp() -> str:
        return f"2026-01-01T00:{int(loop.time()) // 60 % 60:02d}:{loop.time() % 60:09.6f}Z"

    async def renew(node: Any) -> None:
        every = (WEAK_RENEW_SECONDS if cluster.role[node.name][0] == Role.WEAK
                 else LEASE_RENEW_SECONDS)
        await asyncio.sleep(rng.uniform(0, every))
        while True:
            obj = node.store.find(kind, NODE_LEASES, node.name)
            try:
                if obj is None:
                    await node.store.create(kind, _lease(node.name, stamp(), every),
                                            NODE_LEASES)
                else:
                    new = {**obj, "spec": {**obj["spec"], "renewTime": stamp()}}
                    await node.store.update(kind, new, NODE_LEASES, node.name)
            except StoreError:
                cluster.write_errors += 1
            await asyncio.sleep(every)

    tasks = [loop.create_task(renew(node)) for node in cluster.nodes.values() if node.up]
    await asyncio.sleep(3 * WEAK_RENEW_SECONDS)  # every Lease created and renewed twice
    cluster.network.reset_counters()
    where = SuperPeerBytes(cluster)
    cluster.network.observers.append(where)
    await asyncio.sleep(IDLE_SECONDS)
    cluster.network.observers.remove(where)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    out = _traffic(cluster, IDLE_SECONDS)
    out["super_peer_bytes"] = where.report(IDLE_SECONDS)
    weak = cluster.names(Role.WEAK)[0]
    entry = cluster.nodes[weak].replica.entry(kind.resource, NODE_LEASES, weak)
    out["lease_document_bytes"] = None if entry is None else len(entry.document().to_bytes())
    out["renew_seconds"] = LEASE_RENEW_SECONDS
    out["weak_renew_seconds"] = WEAK_RENEW_SECONDS
    return out


async def _heal(n: int, cfg: MeshConfig, split: float, report: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    layout = layout_for(n)
    wall = time.perf_counter()
    cluster = RoleCluster(layout.size, SEED, cfg, loop, LinkFaults(), layout=layout)
    rng = random.Random(f"{SEED}:heal")
    await cluster.start()
    await asyncio.sleep(cfg.pull_interval * (cfg.pull_partners + 1))
    sites = sorted({s for _, s in cluster.role.values()})
    left = set(sites[: max(1, len(sites) // 2)])
    a = [node for node in cluster.nodes.values() if cluster.role[node.name][1] in left]
    b = [node for node in cluster.nodes.values() if cluster.role[node.name][1] not in left]
    if not b:  # one site: cut its weak peers in half instead
        a, b = a[: len(a) // 2], a[len(a) // 2:]
    cluster.network.partition([[x.address for x in a], [x.address for x in b]])
    cluster.network.note("partition")
    for side in (a, b):
        for i in range(10):
            await cluster.write(rng.choice(side), "create", f"cm-{i}", {"side": side[0].name})
    await asyncio.sleep(split)
    # Both sides hold the other dead (or at least not alive) now.
    probe = next(x for x in a if cluster.role[x.name][0] == Role.SUPER)
    assert probe.peer is not None
    gone = sum(1 for m in probe.peer.members() if m.name in {x.name for x in b}
               and m.state.name != "ALIVE")
    cluster.network.heal()
    cluster.network.note("heal")
    cluster.network.reset_counters()
    settle_start = loop.time()
    members = await _until(loop, cluster.members_settled, 600.0, 0.5)
    data = await _until(loop, lambda: not convergence.check(
        {x.name: x.replica for x in cluster.up_nodes()}, limit=1), 600.0, 0.5)
    report.update({
        "peers": layout.size,
        "partition_seconds": split,
        "other_side_not_alive_at_heal": f"{gone}/{len(b)}",
        "members_settle_virtual_seconds": members,
        "replicas_identical_virtual_seconds": data,
        "traffic_after_heal": _traffic(cluster, max(1e-9, loop.time() - settle_start)),
        "wall_seconds": round(time.perf_counter() - wall, 1),
    })
    await cluster.stop()


def measure(n: int, cfg: MeshConfig | None = None, trace: bool = False) -> dict[str, Any]:
    report: dict[str, Any] = {}
    virtual_run(_size(n, cfg or config(), report, trace))
    gc.collect()
    return report


def isolated(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` in a forked child: each size's RSS delta starts from a small process,
    not from the arenas an earlier size left behind."""
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(fn, args)  # type: ignore[no-any-return]


def heal(n: int, split: float = 120.0, cfg: MeshConfig | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {}
    virtual_run(_heal(n, cfg or config(), split, report))
    gc.collect()
    return report


def mesh_only() -> MeshConfig:
    """The production timers with tombstone collection off: membership and replication
    alone (collection publishes coverage vectors, measured apart)."""
    return dataclasses.replace(config(), gc_interval=0.0)


def run(quick: bool, sizes: list[int] | None = None, heal_at: list[int] | None = None,
        trace: bool = False, collection_at: list[int] | None = None) -> dict[str, Any]:
    sizes = sizes if sizes is not None else ([100, 1000] if quick else [100, 1000, 10000])
    heal_at = heal_at if heal_at is not None else ([100] if quick else [1000])
    collection_at = collection_at if collection_at is not None else (
        [100] if quick else [100, 1000, 10000])
    out: dict[str, Any] = {
        "seed": SEED, "site": f"2 super-peers + {SITE - 2} weak peers",
        "sites_per_region": SITES_PER_REGION,
        "config": "mesh_config.default() with gc_interval=0 (mesh alone); weak peers "
                  "mesh_config.for_role (pull every 4 s, every 16 s idle; probe every 8 s); "
                  "measured once quiet "
                  "(settle_seconds: every weak peer pulled once by its super-peers)",
        "sizes": {}, "with_tombstone_collection": {}, "heal": {}}
    for n in sizes:
        print(f"-- scale: {n} peers", flush=True)
        out["sizes"][str(n)] = isolated(measure, n, mesh_only(), trace and n == max(sizes))
        print(json.dumps(out["sizes"][str(n)]), flush=True)
    for n in collection_at:
        print(f"-- scale: {n} peers with tombstone collection", flush=True)
        out["with_tombstone_collection"][str(n)] = isolated(measure, n, config())
        print(json.dumps(out["with_tombstone_collection"][str(n)]), flush=True)
    for n in heal_at:
        print(f"-- scale: heal at {n} peers", flush=True)
        out["heal"][str(n)] = isolated(heal, n, 120.0, mesh_only())
        print(json.dumps(out["heal"][str(n)]), flush=True)
    out["goals"] = {"idle_kbit_per_weak_peer": 0.25, "rounds_at_10000": 12,
                    "members_settle_seconds_at_1000": 30, "per_node_traffic": "flat in N"}
    return out


def _arg(name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in sys.argv if a.startswith(f"--{name}=")), None)


if __name__ == "__main__":
    def ints(name: str) -> list[int] | None:
        text = _arg(name)
        return None if text is None else [int(x) for x in text.split(",") if x]

    regions = _arg("sites-per-region")
    if regions is not None:
        SITES_PER_REGION = int(regions)
    site = _arg("site")
    if site is not None:
        SITE = int(site)
    leases = _arg("leases-max")
    if leases is not None:
        LEASES_MAX = int(leases)
    quiet = _arg("quiet-max")
    if quiet is not None:
        QUIET_MAX_SECONDS = float(quiet)
    result = run("--quick" in sys.argv, ints("sizes"), ints("heal"), "--tracemalloc" in sys.argv,
                 ints("collection"))
    print(json.dumps(result, indent=2))
    out = _arg("output")
    if out:
        with open(out, "w") as f:
            f.write(json.dumps(result, indent=2) + "\n")
