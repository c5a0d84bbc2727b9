"""Coverage by site: in the cluster scope a super-peer keeps no coverage about other
sites' weak peers (their super-peers stand for them), a weak peer serves only its own
row, and every tombstone is still collected, never while a member could send an older
live copy back."""

from __future__ import annotations

import asyncio
import dataclasses

from shoal.crdt.hlc import HybridLogicalClock
from shoal.mesh import config as mesh_config
from shoal.mesh.messages import CoverageRow
from shoal.mesh.tombstones import Coverage
from shoal.mesh.topology import Role
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster


class FixedClock:
    def now(self) -> float:
        return 1_000_000.0


def test_a_peer_that_relays_no_rows_serves_only_its_own() -> None:
    w = Coverage("w", HybridLogicalClock(FixedClock()))
    w.receive([CoverageRow("s1", 5, {"w": 3, "s2": 4})])
    w.published({"s1": 2})
    assert {r.owner for r in w.since(0)} == {"w", "s1"}
    w.relays = False
    assert [r.owner for r in w.since(0)] == ["w"]
    assert w.since(w.revision) == ()


def test_coverage_counts_only_the_peers_it_is_told_to() -> None:
    s = Coverage("s", HybridLogicalClock(FixedClock()))
    s.counts = lambda peer: not peer.startswith("far")
    s.receive([CoverageRow("far-w", 3, {"s": 9}), CoverageRow("t", 4, {"far-w": 7, "u": 2})])
    assert set(s.rows) == {"t"}  # the far weak peer's row is neither kept nor relayed
    assert s.absorb(s.row("t"))
    assert s.vector == {"u": 2}  # nor is the entry about it absorbed


def test_super_peers_keep_no_coverage_of_other_sites_weak_peers_and_everyone_collects() -> None:
    cfg = dataclasses.replace(mesh_config.sim(), gc_interval=2.0, gc_min_age=10.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        layout = Layout(sites=3, supers_per_site=2, weak_per_site=4)
        c = RoleCluster(layout.size, 5, cfg, loop, LinkFaults(), layout=layout)
        await c.start()
        await asyncio.sleep(20)
        weak = c.names(Role.WEAK)
        writers = [weak[0], weak[-1], c.names(Role.SUPER)[0]]
        for i, name in enumerate(writers):
            assert await c.write(c.nodes[name], "create", f"gone-{i}", {"k": "v"})
        await asyncio.sleep(20)
        for i, name in enumerate(writers):
            assert await c.write(c.nodes[name], "delete", f"gone-{i}", {})
        await asyncio.sleep(20)
        assert any(n.replica.tombstones() for n in c.nodes.values())
        await asyncio.sleep(cfg.gc_min_age + 4 * cfg.coverage_publish_interval)
        for name, (role, site) in c.role.items():
            node = c.nodes[name]
            assert node.peer is not None
            cov = node.peer.anti_entropy.coverage.scope("")
            far = {w for w in weak if c.role[w][1] != site}
            if role == Role.SUPER:
                assert not far & set(cov.rows), name
                assert not far & set(cov.vector), name
                for owner, held in cov.rows.items():  # a row is over the backbone and
                    own = {w for w in far if c.role[w][1] == c.role[owner][1]}  # its site
                    assert not (far - own) & set(held.row.vector), (name, owner)
            else:
                assert set(cov.rows) <= {name, *c.names(Role.SUPER, site)}, name
                assert set(cov.vector) <= set(c.names(Role.SUPER, site)), name
        left = {n: len(c.nodes[n].replica.tombstones()) for n in c.nodes}
        assert not any(left.values()), left
        assert sum(len(c.nodes[n].replica.fences) for n in c.nodes) >= len(writers)
        await c.stop()

    virtual_run(main())


def test_our_row_goes_to_the_backbone_without_the_weak_peers_we_stand_for() -> None:
    s = Coverage("s", HybridLogicalClock(FixedClock()))
    s.shared = lambda peer: not peer.startswith("w")
    s.receive([CoverageRow("w1", 3, {"s": 2})])
    s.published({"t": 4, "w1": 3})
    [row] = s.since(0)  # the weak peer's row stays here
    assert row.owner == "s" and row.vector == {"t": 4}
    cursor = s.revision
    s.published({"t": 4, "w1": 5})  # only an entry about a weak peer moved: no news
    assert s.since(cursor) == ()
    rows, _, _ = s.about("w1", cursor)  # the weak peer itself still gets it
    assert rows[0].vector == {"w1": 5}
    s.published({"t": 6, "w1": 5})
    assert [r.vector for r in s.since(cursor)] == [{"t": 6}]
