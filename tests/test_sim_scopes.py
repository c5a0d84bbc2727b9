"""Seeded chaos runs with scopes: no peer ever holds what is not its own, every scope
converges among its members, and no member loses or revives a write of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.authz.scopes import ScopeMap, ScopeRule
from shoal.mesh import revocation
from shoal.mesh.replication_policy import revoked_rule
from shoal.sim import scenarios, tenants
from shoal.sim.__main__ import main as sim_main
from shoal.sim.checkers import scope_convergence, scope_durability, visibility
from shoal.sim.cluster import AckedWrite
from shoal.store.replica import Replica


def scoped(seed: int, peers: int = 4, scopes: int = 2, **kw: Any) -> scenarios.Report:
    opts = scenarios.Options(
        scenario="chaos", peers=peers, seed=seed, writes=30, partitions=2, kills=1,
        drop=0.05, duplicate=0.05, safety_seconds=15.0, idle_seconds=0, scopes=scopes, **kw,
    )
    return scenarios.run(opts)


def command(seed: int, peers: int, scopes: int) -> str:
    return scenarios.Options(seed=seed, peers=peers, scopes=scopes, writes=30, drop=0.05,
                             duplicate=0.05, safety_seconds=15.0, idle_seconds=0).command()


# -- the run itself ---------------------------------------------------------------------


def test_the_same_scoped_seed_run_twice_gives_the_same_trace() -> None:
    a, b = scoped(4321), scoped(4321)
    assert a.trace == b.trace
    assert a.failures == b.failures
    assert a.converge_seconds == b.converge_seconds
    assert scoped(4322).trace != a.trace


def test_a_seed_with_membership_changes_also_replays_exactly() -> None:
    a = scoped(99, peers=5, scope_changes=3)
    b = scoped(99, peers=5, scope_changes=3)
    assert a.trace == b.trace and a.failures == b.failures
    assert scoped(99, peers=5, scope_changes=0).trace != a.trace


def test_scopes_off_is_the_chaos_run_of_before() -> None:
    plain = scenarios.run(scenarios.Options(
        scenario="chaos", peers=4, seed=7, writes=30, partitions=2, kills=1, drop=0.05,
        duplicate=0.05, safety_seconds=15.0, idle_seconds=0))
    assert scoped(7, scopes=0).trace == plain.trace


def test_the_plan_leaves_every_scope_a_non_member_and_writers_among_its_members() -> None:
    peers = [f"n{i:04d}" for i in range(5)]
    plan = tenants.plan(peers, 3, seed=11)
    assert plan.scopes.names() == ["tenant-0", "tenant-1", "tenant-2"]
    for i, name in enumerate(plan.scopes.names()):
        members = plan.scopes.members(name)
        writers = plan.scopes.writers(name)
        assert members is not None and writers is not None
        assert 2 <= len(members) < len(peers)
        assert writers and writers <= members
        assert plan.scopes.scope_of("secrets", f"team-{i}") == name
        assert plan.writers(f"team-{i}", peers) == sorted(writers)
    assert plan.writers("shared", peers) == peers
    assert tenants.plan(peers, 3, seed=11).objects == plan.objects


@pytest.mark.parametrize("seed", range(200))
def test_scoped_chaos_seeds_keep_scopes_private_and_converge_per_scope(seed: int) -> None:
    peers, count = 3 + seed % 4, 1 + seed % 3
    report = scoped(seed, peers=peers, scopes=count)
    assert report.ok, f"{report.failures[:3]}; reproduce: {command(seed, peers, count)}"
    assert report.scope_leaks == 0
    assert report.acked_writes > 0 and report.visibility_checks > 30


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), peers=st.integers(2, 7), count=st.integers(1, 4),
       drop=st.sampled_from([0.0, 0.1, 0.3]), kills=st.integers(0, 3))
def test_any_seed_scope_count_loss_rate_and_kill_count_keeps_scopes_private(
    seed: int, peers: int, count: int, drop: float, kills: int,
) -> None:
    report = scenarios.run(scenarios.Options(
        scenario="chaos", peers=peers, seed=seed, writes=20, partitions=1, kills=kills,
        drop=drop, duplicate=0.05, safety_seconds=10.0, idle_seconds=0, scopes=count,
    ))
    assert report.ok, report.failures[:3]


def test_a_larger_scoped_cluster_converges_after_chaos() -> None:
    report = scoped(0, peers=20, scopes=4)
    assert report.ok, report.failures[:3]


def visibility_problems(report: scenarios.Report) -> list[str]:
    return [f for f in report.failures if "not its own" in f]  # (checkers.visibility's)


@pytest.mark.parametrize("seed", range(40))
def test_while_members_come_and_go_never_members_stay_blind_and_members_converge(
    seed: int,
) -> None:
    """Members removed and added during the run: the removed writers' earlier writes
    converge (the Scope records its former writers, and a peer leaving a scope hands off
    what it wrote as a writer), and what they wrote after their removal, before they
    learnt of it, is taken out everywhere (``mesh.revocation``). All of seeds 0-299 of
    this run pass (seed 198 failed before revocation: the test below); of 300-599, 411,
    476 and 540 lose a write whose handoff reached no member (docs/semantics.md, Limits)."""
    peers, count = 3 + seed % 4, 1 + seed % 2
    report = scoped(seed, peers=peers, scopes=count, scope_changes=2, liveness_timeout=60.0)
    replay = f"reproduce: {command(seed, peers, count)} --scope-changes 2"
    assert not visibility_problems(report), f"{visibility_problems(report)[:3]}; {replay}"
    assert report.scope_leaks == 0  # removed members dropped the scope by the end
    assert report.ok, f"{report.failures[:3]}; {replay}"


def test_a_write_a_removed_writer_made_before_it_learnt_is_taken_out_by_the_member_that_merged_it(
) -> None:
    """Membership-change seed 198: n0000, cut off, wrote configmaps/team-0/cm-10 after the
    stamp its removal as a writer was recorded under; n0002, a member but no writer,
    merged it before either learnt of the removal; n0003, the only writer left, refuses
    it. Once n0002 learns of the removal it drops the object (no tombstone: nothing was
    deleted), so the members converge and n0002's tombstones are collected. Before, the
    two differed on that object for good and n0002's tombstones waited."""
    report = scoped(198, peers=5, scopes=1, scope_changes=2, liveness_timeout=60.0)
    assert report.ok, report.failures[:3]
    assert report.tombstones_left == 0
    assert report.scope_leaks == 0


@pytest.mark.parametrize("seed", [20, 88, 114, 273, 341, 353])
def test_six_membership_changes_per_run_lose_no_write_a_member_can_keep(seed: int) -> None:
    """Seeds of the membership-change run with 6 edits per run that failed: 20 stopped on
    the harness's Scope edit (a merged Scope naming a writer that is no member); 88 lost
    a write its writer made at about the instant of its removal, expected again once a
    concurrent edit had made it a writer again (now revoked until that edit's stamp,
    ``shoal.dev/writers-since``); 114 lost a writer's create that a revoked create of the
    same name had overwritten on every member (the writer kept the create that lost the
    merge and brings it back); 353 (of 200-399) lost a write whose writer learnt of its
    removal before its re-adding and dropped it, revoked then, without handing it off
    (it now holds it back, and merges it back once the Scope no longer revokes it; the
    harness had counted the write as revoked since the first removal); 273 and 341 (of
    200-399, failing before any of this) lost a valid update handed off in a document
    that also held a revoked deletion of its writer's, which members refused whole (the
    handoff now leaves the revoked change out). Of seeds 0-199,
    38 and 50 still lose writes whose holder was killed during its handoff
    (docs/semantics.md, Limits)."""
    peers, count = 3 + seed % 4, 1 + seed % 2
    report = scoped(seed, peers=peers, scopes=count, scope_changes=6, liveness_timeout=60.0)
    replay = f"reproduce: {command(seed, peers, count)} --scope-changes 6"
    assert not visibility_problems(report), f"{visibility_problems(report)[:3]}; {replay}"
    assert report.scope_leaks == 0
    assert report.ok, f"{report.failures[:3]}; {replay}"


@pytest.mark.parametrize("seed", range(24))
def test_scopes_over_sites_of_weak_peers_behind_super_peers(seed: int) -> None:
    """Weak members' super-peers are made members and writers of the scope (the plan's
    rule: only writers relay, and a weak peer syncs only through its super-peers). Seeds
    0-99 of this run all converge and collect (they were an expected failure while a scope
    held only by super-peers of different sites, --peers 6 --sites 3 --scopes 2 --seed 20,
    and uncollected tombstones, --peers 9 --sites 3 --seed 38, were open)."""
    peers, sites = 6 + seed % 5, 1 + seed % 3
    report = scoped(seed, peers=peers, sites=sites)
    replay = f"reproduce: {command(seed, peers, 2)} --sites {sites}"
    assert not visibility_problems(report), f"{visibility_problems(report)[:3]}; {replay}"
    assert report.ok, f"{report.failures[:3]}; {replay}"


@pytest.mark.parametrize("seed", [7, 24])
def test_a_weak_peer_added_to_a_scope_comes_with_its_sites_super_peers(
        seed: int) -> None:
    """15 peers in 3 sites, 2 scopes, membership changes and a kill: a weak peer whose
    site's super-peers are not members of a scope it holds syncs it with no one (it is
    stranded, ``ReplicationPolicy.stranded``: a weak peer exchanges state only with its
    site's super-peers). The edits add a weak peer with its site's super-peers and
    never remove the last of them, as the plan does, and these runs converge (seeds 7,
    14, 15 and 24 never did when the weak peer was added alone; it then pulled the scope
    back from the writers that pulled it, which no longer happens)."""
    opts = scenarios.Options(scenario="chaos", peers=15, seed=seed, scopes=2, scope_changes=2,
                             kills=1, sites=3, idle_seconds=0)
    report = scenarios.run(opts)
    assert report.ok, f"{report.failures[:3]}; reproduce: {opts.command()}"


@pytest.mark.parametrize("seed", [78, 162])
def test_a_weak_peer_collects_once_its_super_peers_hold_the_deletion(seed: int) -> None:
    """15 peers in 3 sites, 2 scopes, membership changes and a kill: a weak peer collects a
    deletion once its site's super-peers cover it, while a member cut off elsewhere still
    holds an old copy; its super-peers keep the tombstone until that member covers it. The
    checker once called this early (seeds 78, 108, 122, 162, ... of 0-399, every time a
    weak collector); it now judges a weak peer through its super-peers."""
    opts = scenarios.Options(scenario="chaos", peers=15, seed=seed, scopes=2, scope_changes=2,
                             kills=1, sites=3, idle_seconds=0)
    report = scenarios.run(opts)
    assert report.ok, f"{report.failures[:3]}; reproduce: {opts.command()}"


def test_the_command_line_takes_scopes_and_replays_them(capsys: pytest.CaptureFixture[str]) -> None:
    code = sim_main(["--peers", "4", "--seed", "5", "--scopes", "2", "--safety-seconds", "5",
                     "--idle-seconds", "2"])
    captured = capsys.readouterr()
    assert "scopes = 2" in captured.out and '"scope_leaks"' in captured.out
    if code != 0:  # the replay command must bring the scopes back
        assert "--scopes 2" in captured.err


# -- the checkers, on replicas written by hand -------------------------------------------

SCOPES = ScopeMap([r for r in (ScopeRule.parse(o) for o in [
    {"metadata": {"name": "tenant-a"},
     "spec": {"namespaces": ["team-a"], "members": ["n1", "n2"]}},
]) if r is not None])


def _no_keys(_: Any) -> None:
    return None


class Replicas:
    """A few in-memory replicas and the writes that shape them."""

    def __init__(self, *names: str) -> None:
        self.r = {n: Replica(None, n) for n in names}

    async def put(self, on: str, ns: str, name: str, data: dict[str, str] | None,
                  resource: str = "secrets") -> None:
        value = None if data is None else {"metadata": {"name": name, "namespace": ns},
                                           "data": data}
        _, durable = self.r[on].put(resource, ns, name, value, _no_keys)
        await durable

    async def copy(self, src: str, dst: str, ns: str, name: str,
                   resource: str = "secrets") -> None:
        entry = self.r[src].entry(resource, ns, name)
        assert entry is not None
        result = self.r[dst].merge(resource, ns, name, entry.document())
        if result is not None:
            await result[1]

    def get_data(self, on: str, ns: str = "team-a", name: str = "s") -> Any:
        value = self.r[on].get("secrets", ns, name)
        return None if value is None else value.get("data")

    def collect(self, on: str, ns: str, name: str, resource: str = "secrets") -> None:
        assert self.r[on].collect([(resource, ns, name)], now=0.0) == 1


def test_visibility_names_a_non_member_holding_an_object_a_tombstone_or_a_fence() -> None:
    async def main() -> None:
        rs = Replicas("n1", "n2", "n3")
        await rs.put("n1", "team-a", "db-password", {"p": "aGVsbG8="})
        await rs.put("n1", "default", "shared", {"p": "aGVsbG8="})
        await rs.copy("n1", "n2", "team-a", "db-password")
        await rs.copy("n1", "n3", "default", "shared")
        assert visibility.check(rs.r, SCOPES) == []
        assert visibility.leaks(rs.r, SCOPES) == 0

        await rs.copy("n1", "n3", "team-a", "db-password")
        [live] = visibility.check(rs.r, SCOPES)
        assert live.startswith("n3 holds secrets/team-a/db-password of scope tenant-a")

        await rs.put("n3", "team-a", "db-password", None)
        [tomb] = visibility.check(rs.r, SCOPES)
        assert "n3 holds the tombstone of secrets/team-a/db-password" in tomb

        rs.collect("n3", "team-a", "db-password")
        [fence] = visibility.check(rs.r, SCOPES)
        assert "n3 holds the fence of secrets/team-a/db-password" in fence
        assert visibility.leaks(rs.r, SCOPES) == 1

    asyncio.run(main())


def test_scope_convergence_compares_a_scope_only_among_its_members() -> None:
    async def main() -> None:
        rs = Replicas("n1", "n2", "n3")
        await rs.put("n1", "default", "cm", {"k": "v"}, resource="configmaps")
        for n in ("n2", "n3"):
            await rs.copy("n1", n, "default", "cm", resource="configmaps")
        await rs.put("n1", "team-a", "s", {"k": "djE="})
        problems = scope_convergence.check(rs.r, SCOPES)
        assert problems == ["tenant-a: n2 and n1 differ on secrets/team-a/s"]

        await rs.copy("n1", "n2", "team-a", "s")
        assert scope_convergence.check(rs.r, SCOPES) == []  # n3 is no member: not compared

        await rs.put("n3", "default", "cm", {"k": "w"}, resource="configmaps")
        [cluster] = scope_convergence.check(rs.r, SCOPES)
        assert cluster.startswith("the cluster scope: n3 and n1 differ on configmaps/default/cm")

    asyncio.run(main())


def test_forgetting_a_deletion_while_a_member_holds_the_old_copy_is_caught() -> None:
    async def main() -> None:
        rs = Replicas("n1", "n2", "n3")
        await rs.put("n1", "team-a", "s", {"k": "djE="})
        await rs.copy("n1", "n2", "team-a", "s")
        await rs.put("n1", "team-a", "s", None)
        rs.collect("n1", "team-a", "s")
        [early] = scope_durability.forgotten_early(rs.r, SCOPES)
        assert early.startswith("n1 collected the deletion of secrets/team-a/s while n2")

        await rs.put("n2", "team-a", "s", None)  # n3 is no member: it never counts
        assert scope_durability.forgotten_early(rs.r, SCOPES) == []

    asyncio.run(main())


def test_a_weak_peer_forgets_a_deletion_once_its_super_peers_hold_it() -> None:
    """Its super-peers stand for it: a far member's old copy reaches it only through them,
    and they read it as deleted (docs/semantics.md, "Coverage by site")."""
    site = ScopeMap([r for r in (ScopeRule.parse(o) for o in [
        {"metadata": {"name": "tenant-a"},
         "spec": {"namespaces": ["team-a"], "members": ["w", "s1", "s2", "far"]}},
    ]) if r is not None])
    via = {"w": ["s1", "s2"]}

    async def main() -> None:
        rs = Replicas("w", "s1", "s2", "far")
        await rs.put("far", "team-a", "s", {"k": "djE="})
        for n in ("w", "s1", "s2"):
            await rs.copy("far", n, "team-a", "s")
        await rs.put("w", "team-a", "s", None)
        await rs.copy("w", "s1", "team-a", "s")
        rs.collect("w", "team-a", "s")
        [early] = scope_durability.forgotten_early(rs.r, site, via=via)
        assert early.startswith("w collected the deletion of secrets/team-a/s while")

        await rs.copy("s1", "s2", "team-a", "s")  # the far copy is still live
        assert scope_durability.forgotten_early(rs.r, site, via=via) == []
        # Without the layout, the same replicas count as an early collection.
        assert scope_durability.forgotten_early(rs.r, site) != []

        rs.collect("s1", "team-a", "s")  # a super-peer is judged on its own
        [by_super] = scope_durability.forgotten_early(rs.r, site, via=via)
        assert by_super.startswith("s1 collected the deletion of secrets/team-a/s while far")

    asyncio.run(main())


def test_each_member_must_keep_the_acknowledged_writes_of_its_scopes() -> None:
    async def main() -> None:
        rs = Replicas("n1", "n2", "n3")
        await rs.put("n1", "team-a", "s", {"k": "djE="})
        entry = rs.r["n1"].entry("secrets", "team-a", "s")
        assert entry is not None
        acked = [AckedWrite("n1", "create", "s", entry.document().copy(), 1.0,
                            "secrets", "team-a")]
        [missing] = scope_durability.check(acked, rs.r, SCOPES)
        assert missing == "on n2: create of secrets/team-a/s on n1 at 1.000s is missing"

        await rs.copy("n1", "n2", "team-a", "s")  # n3 lacks it, and is no member
        assert scope_durability.check(acked, rs.r, SCOPES) == []

        await rs.put("n1", "team-a", "s", None)  # deleted before n2 heard: reads the same
        rs.r["n2"] = Replica(None, "n2")
        assert scope_durability.check(acked, rs.r, SCOPES) == []

    asyncio.run(main())


def _snapshot(rs: Replicas, on: str, op: str, at: float) -> AckedWrite:
    entry = rs.r[on].entry("secrets", "team-a", "s")
    assert entry is not None
    return AckedWrite(on, op, "s", entry.document().copy(), at, "secrets", "team-a")


def test_a_value_a_revoked_change_overwrote_on_every_member_need_not_be_kept() -> None:
    """The documented limit (docs/semantics.md, Limits: "A value that a revoked change
    overwrote on every member that held it is lost"), as the scoped soak met it at seed
    2166: n0006 created secrets/team-0/secret-2; n0010, removed as a writer by an edit it
    had not learnt of, updated its data.k0; every member merged that before learning, and
    taking the revoked register out left k0 absent everywhere. The checker exempts that
    value, and only it: another field lost, or k0 lost while a member still holds it, is
    still a loss."""
    async def main() -> None:
        rs = Replicas("n1", "n2", "n3")
        await rs.put("n1", "team-a", "s", {"k0": "djE=", "k1": "djE="})
        create = _snapshot(rs, "n1", "create", 1.0)
        for n in ("n2", "n3"):
            await rs.copy("n1", n, "team-a", "s")
        removal = create.snapshot.max_stamp()  # n3 is no writer from right after the create
        removed = ScopeMap([r for r in (ScopeRule.parse(o) for o in [
            {"metadata": {"name": "tenant-a",
                          "annotations": {"writer-until.shoal.dev/n3": str(removal)}},
             "spec": {"namespaces": ["team-a"], "members": ["n1", "n2"]}},
        ]) if r is not None])
        await rs.put("n3", "team-a", "s", {"k0": "djI=", "k1": "djE="})
        overwrite = _snapshot(rs, "n3", "update", 2.0)
        assert overwrite.snapshot.max_stamp() > removal  # revoked
        before = _snapshot(rs, "n2", "create", 1.0).snapshot  # the create, k0 included
        for n in ("n1", "n2"):
            await rs.copy("n3", n, "team-a", "s")
        acked = [create, overwrite]
        rule = revoked_rule(removed.revoked_after("tenant-a"), "secrets", "team-a", "s",
                            None, False)

        async def strip(on: str, also: Callable[[tuple[str, ...]], bool] = lambda p: False
                        ) -> None:  # as every member does once it learns of the removal
            entry = rs.r[on].entry("secrets", "team-a", "s")
            assert entry is not None
            kept = revocation.strip(entry.document(),
                                    lambda p, w, s: rule(p, w, s) or also(p))
            assert kept is not None
            await rs.r[on].replace("secrets", "team-a", "s", kept)[1]

        for n in ("n1", "n2"):
            await strip(n)
        assert rs.get_data("n1") == rs.get_data("n2") == {"k1": "djE="}  # k0 gone everywhere
        assert scope_durability.check(acked, rs.r, removed) == []
        # Without the record of the removal the same replicas lose the create's k0.
        assert scope_durability.check(acked[:1], rs.r, SCOPES) == [
            "on n1: create of secrets/team-a/s on n1 at 1.000s was lost",
            "on n2: create of secrets/team-a/s on n1 at 1.000s was lost"]

        # A member that never merged the overwrite keeps k0: the others must get it back.
        await rs.r["n2"].replace("secrets", "team-a", "s", before)[1]
        assert scope_durability.check(acked, rs.r, removed) == [
            "on n1: create of secrets/team-a/s on n1 at 1.000s was lost"]

        # A field the revoked change did not overwrite is a loss as before.
        await rs.copy("n3", "n2", "team-a", "s")
        await strip("n2", lambda p: p == ("data", "k1"))
        assert scope_durability.check(acked, rs.r, removed) == [  # both snapshots held k1
            "on n2: create of secrets/team-a/s on n1 at 1.000s was lost",
            "on n2: update of secrets/team-a/s on n3 at 2.000s was lost"]

    asyncio.run(main())


@pytest.mark.parametrize("seed", [622, 750, 2166])
def test_the_scoped_soak_seeds_that_met_the_revoked_overwrite_limit_pass(seed: int) -> None:
    """15 peers in 3 sites, 2 scopes, 2 membership edits, a kill (``scripts/soak.py``'s
    scoped mix): an edit made on a weak peer cut off from its site's super-peers removed a
    writer, which kept writing for seconds; its update overwrote a valid create's field on
    every member, and taking it out left the field absent. The checkers flagged these as
    lost (seeds 622 and 750 of 400-808, 2166 of 2000-2749); they are the documented limit,
    now exempt (``scope_durability._lost_to_revoked``)."""
    opts = scenarios.Options(scenario="chaos", peers=15, seed=seed, scopes=2, scope_changes=2,
                             kills=1, sites=3, idle_seconds=0)
    report = scenarios.run(opts)
    assert report.ok, f"{report.failures[:3]}; reproduce: {opts.command()}"


def test_the_scoped_soak_seed_that_lost_a_deletion_to_a_revoked_re_create_passes() -> None:
    """Seed 1956 of the scoped mix: n0001 deleted secrets/team-1/secret-6 while a writer,
    was removed from tenant-1 by an edit on a peer cut off from it, and created the
    secret again before it learnt; taking that create out dropped the object, and n0006,
    which had never seen the deletion, brought n0000's older create back to every member.
    The deletion now stays (``revocation.strip``; the scenario on purpose is in
    tests/test_scopes_former_writers.py)."""
    opts = scenarios.Options(scenario="chaos", peers=15, seed=1956, scopes=2, scope_changes=2,
                             kills=1, sites=3, idle_seconds=0)
    report = scenarios.run(opts)
    assert report.ok, f"{report.failures[:3]}; reproduce: {opts.command()}"


def test_a_deletion_is_not_collected_while_a_member_that_was_cut_off_still_holds_it() -> None:
    """Regression seed: with sites, membership changes and a kill, n0004 once collected
    the deletion of secrets/shared/secret-2 while n0012, a member, still held a live copy
    (fixed by holding the cursor back on a refused document and by super-peers pulling
    every weak peer)."""
    report = scenarios.run(scenarios.Options(scenario="chaos", peers=15, seed=23, sites=3,
                                             scopes=2, scope_changes=2, kills=1))
    assert not visibility_problems(report)
    assert report.ok, report.failures[:3]
