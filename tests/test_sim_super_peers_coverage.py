"""Coverage by site: in the cluster scope a super-peer keeps no coverage about other
sites' weak peers (their super-peers stand for them), a weak peer serves only its own
row, and every tombstone is still collected, never while a member could send an older
live copy back."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from shoal.crdt.hlc import HybridLogicalClock
from shoal.mesh import config as mesh_config
from shoal.mesh import ring, topology
from shoal.mesh.messages import CoverageRow
from shoal.mesh.tombstones import Coverage
from shoal.mesh.topology import Role
from shoal.sim import scenarios
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


# -- regions: sites whose super-peers stand for each other -------------------------------

REGIONS = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c1": "C"}


def regional(me: str) -> Coverage:
    """A super-peer of ``me``'s region that reads other regions through their aggregates."""
    cov = Coverage(me, HybridLogicalClock(FixedClock()))
    mine = REGIONS[me]
    cov.region_of = lambda p: None if REGIONS.get(p, mine) == mine else REGIONS[p]
    cov.region_members = lambda: (mine, [p for p, r in REGIONS.items() if r == mine and p != me])
    return cov


def test_a_puller_of_another_region_gets_our_row_and_the_regions_aggregates() -> None:
    a1 = regional("a1")
    a1.receive([CoverageRow("a2", 7, {"a1": 5, "b1": 3, "b2": 9, "c1": 4})])
    a1.published({"a2": 6, "b1": 8, "b2": 2, "c1": 1})
    a1.receive([CoverageRow("region:C", 4, {"a1": 2, "b1": 1, "c1": 0})])
    a1.receive([CoverageRow("region:B", 4, {"a1": 2, "c1": 1, "b1": 0, "b2": 0})])
    rows = {r.owner: r.vector for r in a1.since(0, "b1")}
    # Per peer outside A, what both a1 and a2 cover of it; a1 and a2 named as the
    # constituents; C's aggregate relayed, B's not sent back to B.
    assert rows == {"a1": {"a2": 6, "b1": 8, "b2": 2, "c1": 1},
                    "region:A": {"b1": 3, "b2": 2, "c1": 1, "a1": 0, "a2": 0},
                    "region:C": {"a1": 2, "b1": 1, "c1": 0}}
    assert a1.since(a1.revision, "b1") == ()
    # One of our region gets every row of it and the other regions' aggregates.
    assert {r.owner for r in a1.since(0, "a2")} == {"a1", "a2", "region:B", "region:C"}


def test_an_aggregate_is_computed_only_once_every_member_of_the_region_has_a_row() -> None:
    a1 = regional("a1")
    a1.published({"b1": 8})
    assert a1.aggregate() == (None, 0)
    assert [r.owner for r in a1.since(0, "b1")] == ["a1"]


def test_another_regions_aggregate_covers_only_its_constituents_and_is_relayed_in_our_region(
) -> None:
    b1 = regional("b1")
    b1.receive([CoverageRow("region:A", 10, {"b1": 4, "b2": 6, "a1": 0})])
    assert b1.covered_by("a1") == 4  # a constituent: the region covers b1 up to 4
    assert b1.covered_by("a2") == 0  # not named: its coverage is not known
    assert b1.floor(["b2", "a1"]) == 0  # b2's own row is not here yet
    b1.receive([CoverageRow("b2", 3, {"b1": 5})])
    assert b1.floor(["b2", "a1"]) == 4
    cursor = b1.revision
    b1.receive([CoverageRow("region:A", 9, {"b1": 9, "a1": 0})])  # older: ignored
    b1.receive([CoverageRow("region:A", 10, {"b1": 2, "a1": 0})])  # same: the higher stays
    assert b1.covered_by("a1") == 4 and b1.since(cursor, "b2") == ()
    b1.receive([CoverageRow("region:A", 10, {"b1": 4, "b2": 7, "a1": 0})])
    assert [r.vector for r in b1.since(cursor, "b2")] == [{"b1": 4, "b2": 7, "a1": 0}]
    assert b1.since(cursor, "a1") == ()  # a region's own aggregate never goes back to it
    b1.receive([CoverageRow("region:A", 11, {"b1": 1, "a1": 0})])  # newer: it may be lower
    assert b1.covered_by("a1") == 1
    b1.receive([CoverageRow("region:B", 12, {"b1": 50, "a1": 0})])  # ours: we compute it
    assert "B" not in b1.regions


def test_a_weak_puller_gets_only_the_entries_of_our_row_that_concern_it() -> None:
    s = Coverage("s", HybridLogicalClock(FixedClock()))
    s.concerns = lambda puller, peer: peer in (puller, "s2")
    s.published({"w": 3, "s2": 4, "far": 9, "w2": 1})
    rows, _, base = s.about("w", 0)
    assert rows[0].vector == {"w": 3, "s2": 4} and base == 0
    cursor = s.revision
    s.published({"w": 3, "s2": 4, "far": 12, "w2": 1})
    rows, _, base = s.about("w", cursor)
    assert rows[0].vector == {} and base  # the row moved, nothing in it that w reads
    s.published({"w": 5, "s2": 4, "far": 12, "w2": 1})
    rows, _, _ = s.about("w", s.revision - 1)
    assert rows[0].vector == {"w": 5}


def test_a_region_is_derived_from_the_site_unless_given() -> None:
    base = mesh_config.default()
    tags = dataclasses.replace(base, role="super", site="eu/paris-1").member_tags()
    assert tags["region"] == "eu"
    assert "region" not in dataclasses.replace(base, role="super", site="paris").member_tags()
    given = dataclasses.replace(base, role="super", site="paris", region="eu").member_tags()
    assert given["region"] == "eu"
    weak = dataclasses.replace(base, role="weak", site="eu/paris-1").member_tags()
    assert "region" not in weak  # a weak peer's coverage is read through its super-peers


def test_super_peers_read_other_regions_through_aggregates_and_everyone_collects() -> None:
    # Two ring partners each: a region's peers are not all among them.
    cfg = dataclasses.replace(mesh_config.sim(), gc_interval=2.0, gc_min_age=10.0,
                              pull_partners=2)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        layout = Layout(sites=4, supers_per_site=2, weak_per_site=2, sites_per_region=2)
        c = RoleCluster(layout.size, 3, cfg, loop, LinkFaults(), layout=layout)
        await c.start()
        await asyncio.sleep(20)
        supers, weak = c.names(Role.SUPER), c.names(Role.WEAK)
        writers = [weak[0], weak[-1], supers[0], supers[-1]]
        for i, name in enumerate(writers):
            assert await c.write(c.nodes[name], "create", f"gone-{i}", {"k": "v"})
        await asyncio.sleep(20)
        for i, name in enumerate(writers):
            assert await c.write(c.nodes[name], "delete", f"gone-{i}", {})
        await asyncio.sleep(cfg.gc_min_age + 4 * cfg.coverage_publish_interval)
        left = {n: len(c.nodes[n].replica.tombstones()) for n in c.nodes}
        assert not any(left.values()), left
        region = {n: c.tags(n)["region"] for n in supers}
        for name in supers:
            node = c.nodes[name]
            assert node.peer is not None
            cov = node.peer.anti_entropy.coverage.scope("")
            others = {r for r in region.values() if r != region[name]}
            assert set(cov.regions) == others, name
            ours = [s for s in supers if s != name and region[s] == region[name]]
            # Its region's ring successor among its pull partners (rows stay in a region).
            partners = {p.name for p in node.peer.anti_entropy.partners()}
            assert ring.partners(name, ours, 1)[0] in partners, name
            mate = ours[0]
            relayed = {r.owner for r in cov.since(0, mate)}  # to one of its region
            assert not {o for o in relayed if region.get(o, region[name]) != region[name]}
        await c.stop()

    virtual_run(main())


@pytest.mark.parametrize("seed", [1, 2])
def test_chaos_over_regions_of_sites_converges_collects_and_forgets_nothing_early(
        seed: int) -> None:
    """Partitions, a kill, loss and duplicates over 4 sites in 2 regions: every replica
    converges, every tombstone is collected, none before every holder covered it (the
    chaos run's checkers). A sweep of more seeds is in docs/scale-model.md."""
    opts = scenarios.Options(scenario="chaos", peers=16, seed=seed, sites=4,
                             sites_per_region=2)
    report = scenarios.run(opts)
    assert report.ok, f"{report.failures[:3]}; reproduce: {opts.command()}"
    assert report.tombstones_held and not report.tombstones_left  # deletions, all collected


def test_only_a_full_or_super_peer_with_peers_of_other_regions_has_a_region_apart() -> None:
    @dataclasses.dataclass(frozen=True)
    class T:
        name: str
        tags: dict[str, str]

    def sup(name: str, region: str) -> T:
        return T(name, {"role": "super", "region": region})

    me = sup("a0", "A")
    peers = [sup(f"a{i}", "A") for i in range(1, 4)] + [sup(f"b{i}", "B") for i in range(20)]
    assert {p.name for p in topology.same_region(me, peers)} == {"a1", "a2", "a3"}
    assert topology.same_region(me, peers[:3]) == []  # one region: nothing to add
    assert topology.same_region(T("w", {"role": "weak", "region": "A"}), peers) == []


def test_an_aggregate_that_did_not_change_is_no_news_to_other_regions() -> None:
    a1 = regional("a1")
    a1.receive([CoverageRow("a2", 7, {"b1": 3})])
    a1.published({"b1": 8})
    assert [r.owner for r in a1.since(0, "b1")] == ["a1", "region:A"]
    cursor = a1.revision
    a1.published({"b1": 8, "a2": 9})  # only an entry about our own region moved
    assert [r.owner for r in a1.since(cursor, "b1")] == ["a1"]
    a1.receive([CoverageRow("a2", 8, {"b1": 5})])
    assert [r.vector for r in a1.since(cursor, "b1")][-1] == {"b1": 5, "a1": 0, "a2": 0}
