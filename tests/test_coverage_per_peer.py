"""Coverage sent per peer: a weak peer is sent its partners' whole rows and, of every
other row, only the entry about itself; its tombstones are still collected, never early."""

from __future__ import annotations

import asyncio
import dataclasses

from shoal.crdt.hlc import HybridLogicalClock
from shoal.mesh import config as mesh_config
from shoal.mesh.messages import (
    CoverageRow,
    Pull,
    PullReply,
    ScopeCursor,
    ScopeReply,
    decode,
    encode,
)
from shoal.mesh.tombstones import Coverage
from shoal.mesh.topology import Role
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster


class FixedClock:
    def now(self) -> float:
        return 1_000_000.0


def coverage(me: str) -> Coverage:
    return Coverage(me, HybridLogicalClock(FixedClock()))


def test_a_puller_that_relays_no_rows_gets_our_row_and_only_the_entries_about_it() -> None:
    s = coverage("s")
    s.advance("w", 7)
    s.published({"w": 7, "x": 3})
    s.receive([CoverageRow("x", 10, {"w": 5, "y": 9}), CoverageRow("y", 11, {"x": 2})])
    rows, entries, base = s.about("w", 0)
    assert [r.owner for r in rows] == ["s"]
    assert rows[0].vector == {"w": 7, "x": 3}
    assert base == 0  # no cursor: the whole row
    # y's row does not cover w: it tells w nothing.
    assert entries == (("x", 10, 5),)
    # Nothing learnt since: nothing sent.
    assert s.about("w", s.revision) == ((), (), 0)


def test_a_partners_row_travels_as_its_changes_and_only_onto_the_row_they_start_from() -> None:
    s, w = coverage("s"), coverage("w")
    s.published({"a": 1, "b": 2, "c": 3})
    rows, _, base = s.about("w", 0)
    w.receive(rows)
    cursor = s.revision
    s.published({"a": 1, "b": 5, "c": 3})
    rows, _, base = s.about("w", cursor)
    assert rows[0].vector == {"b": 5}
    assert base == w.rows["s"].row.version
    assert w.receive_delta(rows[0], base)
    assert w.rows["s"].row.vector == {"a": 1, "b": 5, "c": 3}
    assert w.rows["s"].row.version == s.rows["s"].row.version
    # A base we do not hold (the row came from another life): refused, whole row next.
    stale = coverage("v")
    stale.receive([CoverageRow("s", 1, {"a": 9, "b": 9, "c": 9})])
    assert not stale.receive_delta(rows[0], base)
    assert stale.rows["s"].row.vector == {"a": 9, "b": 9, "c": 9}
    # No cursor (a first pull, or a restarted puller): the whole row.
    rows, _, base = s.about("w", 0)
    assert base == 0 and rows[0].vector == {"a": 1, "b": 5, "c": 3}


def test_entries_about_us_feed_the_collection_floor_newest_version_first() -> None:
    w = coverage("w")
    w.receive_about_me([("x", 10, 5), ("s", 4, 8)])
    assert w.floor(["x", "s"]) == 5
    w.receive_about_me([("x", 9, 50)])  # an older row of x's: ignored
    assert w.floor(["x", "s"]) == 5
    w.receive([CoverageRow("x", 12, {"w": 6})])  # a whole row counts too
    assert w.floor(["x", "s"]) == 6
    assert w.floor(["x", "s", "z"]) == 0  # no word from z: nothing collected
    before = w.revision
    w.receive_about_me([("s", 20, 9)])
    assert w.revision == before  # entries are never served on, so nothing to announce


def test_the_about_me_request_and_its_entries_survive_the_wire() -> None:
    pull = Pull(10, (ScopeCursor("", 3, 4, True), ScopeCursor("t", 1, 2)))
    assert decode(encode(pull)) == pull
    reply = PullReply((ScopeReply("", 9, False, (), 5, (CoverageRow("s", 3, {"w": 1}),),
                                  (("x", 10, 5),)),))
    assert decode(encode(reply)) == reply
    delta = PullReply((ScopeReply("", 9, False, (), 5, (CoverageRow("s", 3, {"w": 1}),), (),
                                  2),))
    assert decode(encode(delta)) == delta


def test_weak_peers_hold_whole_rows_of_their_partners_only_and_still_collect() -> None:
    cfg = dataclasses.replace(mesh_config.sim(), gc_interval=2.0, gc_min_age=10.0)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualEventLoop)
        layout = Layout(sites=3, supers_per_site=2, weak_per_site=5)
        c = RoleCluster(layout.size, 3, cfg, loop, LinkFaults(), layout=layout)
        await c.start()
        await asyncio.sleep(20)
        weak = c.names(Role.WEAK)
        for i, name in enumerate(weak[:4]):
            assert await c.write(c.nodes[name], "create", f"gone-{i}", {"k": "v"})
        await asyncio.sleep(20)
        for i, name in enumerate(weak[:4]):
            assert await c.write(c.nodes[name], "delete", f"gone-{i}", {})
        await asyncio.sleep(20)
        assert any(n.replica.tombstones() for n in c.nodes.values())
        # Super-peers pull each of their weak peers in turn, so every row reaches the
        # backbone and every peer, weak or super, collects.
        await asyncio.sleep(cfg.gc_min_age + 4 * cfg.coverage_publish_interval)
        for name in weak:
            node = c.nodes[name]
            assert node.peer is not None
            cov = node.peer.anti_entropy.coverage.scope("")
            site = c.role[name][1]
            supers = c.names(Role.SUPER, site)
            assert set(cov.rows) <= {name, *supers}, (name, sorted(cov.rows))
            assert {s for s in supers if cov.covered_by(s) > 0} == set(supers), name
        left = {n: len(c.nodes[n].replica.tombstones()) for n in c.nodes}
        assert not any(left.values()), left
        await c.stop()

    virtual_run(main())
