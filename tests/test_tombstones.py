"""Tombstone collection: deletions are forgotten once every member holds them, and a peer
that comes back after that cannot resurrect what was deleted."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.crdt.document import Document
from shoal.mesh import config as mesh_config
from shoal.mesh.config import MeshConfig
from shoal.mesh.messages import (
    CoverageRow,
    Pull,
    PullReply,
    ScopeCursor,
    ScopeReply,
    decode,
    encode,
)
from shoal.mesh.tombstones import CoverageBook
from shoal.sim import scenarios
from shoal.sim.checkers import convergence, durability, resurrection, tombstones
from shoal.sim.cluster import NAMESPACE, RESOURCE, SimCluster
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.store.persistence import MemoryPersistence
from shoal.store.replica import Replica

GC = dataclasses.replace(mesh_config.sim(), gc_interval=1.0, gc_min_age=5.0)
# Dead members are forgotten quickly, so that collection stops waiting for them.
FORGETFUL = dataclasses.replace(GC, dead_reclaim_time=20.0)


def kf(_: tuple[str, ...]) -> None:
    return None


def cluster(n: int, seed: int, cfg: MeshConfig, faults: LinkFaults | None = None) -> SimCluster:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    return SimCluster(n, seed, cfg, loop, faults or LinkFaults())


def replicas(c: SimCluster) -> dict[str, Replica]:
    return {n.name: n.replica for n in c.up_nodes()}


def rows(c: SimCluster) -> int:
    """Stored object rows in every running replica (what a disk would hold)."""
    total = 0
    for r in replicas(c).values():
        assert isinstance(r.persistence, MemoryPersistence)
        total += len(r.persistence.rows)
    return total


async def until(cond: Callable[[], bool], timeout: float, step: float = 0.5) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not cond():
        assert loop.time() - start < timeout, "timed out"
        await asyncio.sleep(step)
    return loop.time() - start


def test_coverage_rows_ride_on_pulls_and_are_omitted_when_there_are_none() -> None:
    assert encode(Pull(200, (ScopeCursor("", 5),))) == b'[8,200,[["",5,0]]]'
    assert decode(encode(Pull(200, (ScopeCursor("", 5, 3),)))) == Pull(200, (ScopeCursor("", 5, 3),))
    idle = PullReply((ScopeReply("", 9, False, ()),))
    assert encode(idle) == b'[9,[["",9,0,[]]]]'
    full = PullReply((ScopeReply("", 9, False, (), 4,
                                 (CoverageRow("n1", 77, {"n0": 9, "n2": 3}),)),))
    assert decode(encode(full)) == full


def test_collection_drops_rows_in_sqlite_and_the_fence_survives_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        r = Replica(tmp_path, "n0")
        _, fut = r.put("configmaps", "default", "a", {"metadata": {"name": "a"}, "v": 1}, kf)
        await fut
        _, fut = r.put("configmaps", "default", "a", None, kf)
        await fut
        assert len(r.tombstones()) == 1
        assert r.collect([("configmaps", "default", "a")], now=123.0) == 1
        await asyncio.sleep(0.2)  # the writer thread commits the drop
        rev = r.revision
        r.close()
        again = Replica(tmp_path, "n0")
        assert again.entry("configmaps", "default", "a") is None
        fence = again.fences[("configmaps", "default", "a")]
        assert fence.at == 123.0 and again.revision == rev
        # An older live copy is refused; the collected deletion is still served as a bare
        # tombstone to a peer that has not seen it.
        old = Document.create({"metadata": {"name": "a"}, "v": 0}, 1, "n9")
        assert again.merge("configmaps", "default", "a", old) is None
        [(_, _, _, e)] = again.changed_since(0)
        assert Document.from_bytes(e.doc_bytes or b"").deleted
        assert again.expire_fences(before=124.0) == 1
        again.close()

    asyncio.run(main())


def test_a_coverage_cursor_from_before_a_restart_still_gets_every_row_learnt_after_it() -> None:
    """Coverage revisions never count from 0 again: a puller's cursor from the owner's
    previous life once named a revision of the new one, the rows learnt up to it (the
    owner's own new row among them) were never sent, and its tombstones stayed
    (issue 16, seeds 100298 and 101288)."""

    async def main() -> None:
        replica = Replica(None, "n0")
        book = CoverageBook("n0", replica, replica.hlc)
        cov = book.scope("")
        cov.advance("n1", 3)
        cov.published({"n1": 3})
        for i in range(5):
            cov.receive([CoverageRow(f"n{i + 2}", 10 + i, {"n0": 1})])
        assert book.servable(cov.revision) == 0  # nothing reserved on disk yet
        await asyncio.sleep(0.01)
        cursor = book.servable(cov.revision)
        assert cursor == cov.revision > 0
        # The owner restarts on the same disk, learns its own row and as many others.
        again = CoverageBook("n0", replica, replica.hlc)
        fresh = again.scope("")
        fresh.advance("n1", 9)
        fresh.published({"n1": 9})
        for i in range(8):
            fresh.receive([CoverageRow(f"n{i + 2}", 20 + i, {"n0": 2})])
        sent = fresh.since(cursor)
        assert any(r.owner == "n0" and r.vector == {"n1": 9} for r in sent)
        assert len(sent) == 1 + 8
        # A scope dropped and taken again within a life counts on too.
        cursor = again.servable(fresh.revision)
        again.drop("")
        taken = again.scope("")
        taken.published({"n1": 1})
        assert [r.owner for r in taken.since(cursor)] == ["n0"]

    virtual_run(main())


def test_a_create_after_a_collected_delete_hides_the_old_fields_everywhere() -> None:
    old = Document.create({"metadata": {"name": "a"}, "old": 1}, 10 << 16, "n1")
    deleted = old.copy()
    deleted.delete(20 << 16, "n1")
    fresh = Document.create({"metadata": {"name": "a"}, "new": 2}, 30 << 16, "n2")
    fresh.clear_below(deleted.stamp[0])  # created where only the fence was left
    for a, b in ((fresh, deleted), (deleted, fresh), (fresh, old), (old, fresh)):
        m = a.copy()
        m.merge(b)
        assert m.value() == {"metadata": {"name": "a"}, "new": 2}


@pytest.mark.parametrize("seed", range(4))
def test_deleted_objects_rows_disappear_from_every_replica_once_covered(seed: int) -> None:
    async def main() -> None:
        c = cluster(4, seed, GC, LinkFaults(drop=0.05))
        await c.start()
        nodes = list(c.nodes.values())
        for i in range(6):
            assert await c.write(nodes[i % 4], "create", f"cm-{i}", {"k": str(i)})
        await until(lambda: not convergence.check(replicas(c), limit=1), 60)
        before = rows(c)
        for i in range(4):
            assert await c.write(nodes[(i + 1) % 4], "delete", f"cm-{i}", {})
        await until(lambda: tombstones.held(replicas(c)) == 4 * 4, 60, 0.1)
        assert rows(c) == before  # deletions keep their rows until covered and old
        waited = await until(lambda: tombstones.held(replicas(c)) == 0, 60)
        assert waited >= GC.gc_min_age - 1
        assert rows(c) == before - 4 * 4
        for r in replicas(c).values():
            assert len(r.fences) == 4
            assert r.count(RESOURCE) == 2
        assert not convergence.check(replicas(c))
        for r in replicas(c).values():
            assert durability.check(c.acked, r) == []
        await c.stop()

    virtual_run(main())


def test_collection_waits_for_a_dead_member_until_it_is_forgotten() -> None:
    async def main() -> None:
        c = cluster(4, 11, GC)  # dead members are remembered for an hour
        await c.start()
        a, _, _, w = c.nodes.values()
        await c.write(a, "create", "x", {"k": "1"})
        await until(lambda: not convergence.check(replicas(c), limit=1), 60)
        await c.kill(w.name)
        await c.write(a, "delete", "x", {})
        await asyncio.sleep(60)
        # Every running replica holds the tombstone: the dead peer may still come back.
        assert tombstones.held(replicas(c)) == 3
        await c.restart(w.name)
        await until(lambda: tombstones.held(replicas(c)) == 0, 60)
        assert w.replica.get(RESOURCE, NAMESPACE, "x") is None
        await c.stop()

    virtual_run(main())


@pytest.mark.parametrize("seed", range(4))
def test_a_stale_peer_back_after_collection_does_not_resurrect_deleted_objects(seed: int) -> None:
    async def main() -> None:
        c = cluster(5, seed, FORGETFUL, LinkFaults(drop=0.02, duplicate=0.02))
        await c.start()
        nodes = list(c.nodes.values())
        w = nodes[-1]
        for name in ("gone", "kept", "again"):
            await c.write(nodes[0], "create", name, {"k": "old"})
        await until(lambda: not convergence.check(replicas(c), limit=1), 60)
        await c.kill(w.name)
        await c.write(nodes[1], "delete", "gone", {})
        await c.write(nodes[2], "delete", "again", {})
        await c.write(nodes[0], "update", "kept", {"k": "new"})

        def forgotten_and_collected() -> bool:
            for n in c.up_nodes():
                assert n.peer is not None
                if w.name in n.peer.membership.members:
                    return False
            return tombstones.held(replicas(c)) == 0

        await until(forgotten_and_collected, 300, 1.0)
        # Created again after the collection, without its old fields.
        await c.write(nodes[3], "create", "again", {"fresh": "yes"})
        assert w.replica.get(RESOURCE, NAMESPACE, "gone") is not None  # its stale copy
        await c.restart(w.name)
        await until(lambda: not convergence.check(replicas(c), limit=1), 120)
        await until(lambda: tombstones.held(replicas(c)) == 0, 120)
        for n in c.up_nodes():
            assert n.replica.get(RESOURCE, NAMESPACE, "gone") is None
            kept = n.replica.get(RESOURCE, NAMESPACE, "kept")
            assert kept is not None and kept["data"] == {"k": "new"}
            again = n.replica.get(RESOURCE, NAMESPACE, "again")
            assert again is not None and again["data"] == {"fresh": "yes"}
            assert durability.check(c.acked, n.replica) == []
            assert resurrection.check(c.acked, n.replica) == []
        await c.stop()

    virtual_run(main())


def test_without_fences_the_stale_peer_would_resurrect_the_object() -> None:
    """The control experiment: the fence is what stops the resurrection above."""

    async def main() -> None:
        c = cluster(4, 3, dataclasses.replace(FORGETFUL, fence_ttl=0.0))
        await c.start()
        nodes = list(c.nodes.values())
        w = nodes[-1]
        await c.write(nodes[0], "create", "gone", {"k": "old"})
        await until(lambda: not convergence.check(replicas(c), limit=1), 60)
        await c.kill(w.name)
        await c.write(nodes[1], "delete", "gone", {})

        def collected() -> bool:
            return all(w.name not in (n.peer.membership.members if n.peer else {w.name})
                       for n in c.up_nodes()) and tombstones.held(replicas(c)) == 0

        await until(collected, 300, 1.0)
        await c.restart(w.name)
        await c.write(w, "update", "gone", {"k": "stale"})  # the stale peer writes to it
        await asyncio.sleep(30)
        assert nodes[0].replica.get(RESOURCE, NAMESPACE, "gone") is not None
        await c.stop()

    virtual_run(main())


@pytest.mark.parametrize("seed", range(12))
def test_chaos_with_collection_on_converges_and_collects_everything(seed: int) -> None:
    report = scenarios.run(scenarios.Options(
        scenario="chaos", peers=3 + seed % 4, seed=seed, writes=30, partitions=2, kills=1,
        drop=0.05, duplicate=0.05, safety_seconds=15.0, idle_seconds=0, config=GC,
    ))
    assert report.ok, report.failures
    assert report.tombstones_left == 0
