"""A weak peer that is a member of a Scope backs off its idle pulls and is poked as one of
the cluster scope only is (``AntiEntropy.pull_round``, ``_to_poke``): every 4th round
idle, and at its next round once a super-peer of its site holds a change of a scope it
would pull from that super-peer. A change of a scope it is not a member of pokes it not.

One run, recorded once and read by each test: a site of two super-peers and two weak
peers (``weak`` in Scope ``a``, ``other`` in Scope ``b``) and a full peer in another site,
the super-peers and the full peer members and writers of both Scopes."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from shoal.api.scope_status import scope_report
from shoal.authz.scopes import ScopeIndex, ScopeMap, ScopeRule
from shoal.mesh import config as mesh_config
from shoal.mesh.anti_entropy import POKE
from shoal.mesh.messages import tag_of
from shoal.mesh.topology import Role
from shoal.sim import tenants
from shoal.sim.loop import run as virtual_run
from shoal.sim.super_peers import RoleCluster
from tests.test_weak_peer_idle_traffic import renew_forever
from tests.test_weak_peer_poke import mesh_of, started_cluster

LEASES = "kube-node-lease"
RENEW = 10.0
WINDOW = 120.0
PULL = 8
C_IDLE = 76.0
"""Idle seconds before the write in Scope c: picked so that the super-peer that pokes is
not in its turn at the weak peer's next round (without pulling it there, 12 s)."""
INTERVAL = 2 * mesh_config.sim().pull_interval
"""A weak peer's pull interval (``config.for_role``): 4 s in the simulator."""


def _scope(name: str, members: list[str]) -> dict[str, object]:
    return {"apiVersion": tenants.SCOPE_API_VERSION, "kind": "Scope",
            "metadata": {"name": name},
            "spec": {"namespaces": [f"team-{name}"], "members": members}}


async def _reached(c: RoleCluster, name: str, namespace: str, obj: str,
                   timeout: float) -> float | None:
    """Seconds until ``name`` holds ConfigMap ``obj`` (None: not within ``timeout``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while loop.time() - start < timeout:
        if c.nodes[name].replica.get("configmaps", namespace, obj) is not None:
            return loop.time() - start
        await asyncio.sleep(0.1)
    return None


@functools.cache
def scoped_run() -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        c = await started_cluster()
        weak, other = c.names(Role.WEAK, "site-000")
        supers = c.names(Role.SUPER, "site-000")
        full = c.names(Role.FULL)[0]
        objects = [_scope("a", [full, *supers, weak]), _scope("b", [full, *supers, other])]
        t = tenants.Tenants(objects, ScopeMap([r for r in map(ScopeRule.parse, objects) if r]),
                            ["team-a", "team-b"])
        await tenants.create(c, t)
        await c.nodes[weak].store.create(c.namespace_kind, {"metadata": {"name": LEASES}})
        renewals = renew_forever(c.nodes[weak], RENEW)
        while not tenants.everywhere(c, t):
            await asyncio.sleep(1)
        await c.write(c.nodes[full], "create", "first", {"k": "v"}, namespace="team-a")
        out["first_after"] = await _reached(c, weak, "team-a", "first", 60)
        await asyncio.sleep(60)  # settled: the first renewals and the Scopes everywhere
        name_of = {n.address: n.name for n in c.nodes.values()}
        pulls: list[tuple[str, str, float]] = []
        pokes: list[tuple[str, str, float]] = []
        sent = [0]

        def observe(src: str, dst: str, payload: bytes) -> None:
            s, d = name_of.get(src, src), name_of.get(dst, dst)
            if weak in (s, d):
                sent[0] += len(payload)
            if payload == POKE:
                pokes.append((s, d, loop.time()))
            elif s == weak and tag_of(payload) == PULL:
                pulls.append((s, d, loop.time()))

        c.network.observers.append(observe)
        held = c.nodes[weak].replica
        ae = mesh_of(c, weak)
        unknown: list[tuple[float, str, str]] = []
        late: list[tuple[float, str, float, float]] = []
        for _ in range(int(WINDOW)):  # idle but for its renewals; its status read each second
            report = scope_report(weak, held, ScopeIndex(held).current(), ae.scope_status)
            unknown += [(loop.time(), r["scope"], r["unknownWhy"]) for r in report["scopes"]
                        if r.get("unknownWhy")]
            a = next(r for r in report["scopes"] if r["scope"] == "a")["replication"]
            late += [(loop.time(), name, p["answered"], a["pull_cycle"])
                     for name, p in a["partners"].items()
                     if p.get("answered", 0) > 2 * a["pull_cycle"]]
            await asyncio.sleep(1)
        out["idle_unknown"], out["idle_late"] = unknown, late
        out["idle_pulls"] = len(pulls)
        out["idle_kbit_s"] = sent[0] * 8 / 1000 / WINDOW
        out["idle_pokes"] = [p for p in pokes if p[1] == weak]
        out["idle_back_off"] = mesh_of(c, weak)._idle_pulls
        report = scope_report(weak, held, ScopeIndex(held).current(), ae.scope_status)
        out["idle_rows"] = {r["scope"]: r for r in report["scopes"]}
        # A write in Scope b, which the weak peer is not a member of: its super-peers poke
        # the weak peer that is.
        start = loop.time()
        await c.write(c.nodes[full], "create", "in-b", {"k": "v"}, namespace="team-b")
        out["b_reached_other"] = await _reached(c, other, "team-b", "in-b", 30)
        await asyncio.sleep(20)
        out["b_pokes"] = [p for p in pokes if p[2] >= start]
        # A write in Scope a while it is backed off.
        out["a_back_off"] = mesh_of(c, weak)._idle_pulls
        start = loop.time()
        await c.write(c.nodes[full], "create", "in-a", {"k": "v"}, namespace="team-a")
        out["a_reached"] = await _reached(c, weak, "team-a", "in-a", 30)
        out["a_pokes"] = [p for p in pokes if p[2] >= start and p[1] == weak]
        # Scope c, whose only member among the super-peers of its site is the one that is
        # not its source: that one pokes it, and is pulled at its next round.
        source = mesh_of(c, weak)._cluster_source
        assert source in supers
        [mate] = [s for s in supers if s != source]
        more = [_scope("c", [full, mate, weak])]
        await tenants.create(c, tenants.Tenants(
            more, ScopeMap([r for r in map(ScopeRule.parse, more) if r]), ["team-c"]))
        while c.nodes[weak].replica.get("namespaces", "", "team-c") is None:
            await asyncio.sleep(1)
        await asyncio.sleep(C_IDLE)
        out["c_back_off"] = mesh_of(c, weak)._idle_pulls
        start = loop.time()
        await c.write(c.nodes[full], "create", "in-c", {"k": "v"}, namespace="team-c")
        out["c_reached"] = await _reached(c, weak, "team-c", "in-c", 30)
        out["c_pokes"] = [p for p in pokes if p[2] >= start and p[1] == weak]
        out.update(weak=weak, other=other, supers=supers, source=source, mate=mate)
        renewals.cancel()
        await c.stop()

    virtual_run(main())
    return out


def test_an_idle_weak_peer_in_a_scope_pulls_every_4th_round() -> None:
    run = scoped_run()
    assert run["first_after"] is not None
    # Every 4th round of 4 s once nothing comes (16 s), its source each time and the other
    # super-peer every other time: 11 pulls in 120 s, where it pulled every round (45).
    rounds = WINDOW / (4 * INTERVAL)
    assert run["idle_pulls"] <= 1.5 * rounds + 1, run["idle_pulls"]
    assert run["idle_back_off"] >= 2
    assert run["idle_pokes"] == []  # its own renewals poke it not


def test_its_scopes_status_holds_while_it_is_backed_off() -> None:
    # Each super-peer it pulls the Scope from answered within 2 pull cycles, the window of
    # "writers unreachable as every super-peer that answered says": read against its 4 s
    # rounds (a cycle of 8 s), its other super-peer's answers, every 32 s, were past it.
    assert scoped_run()["idle_late"] == [], scoped_run()["idle_late"][:3]
    assert scoped_run()["idle_unknown"] == []
    rows = scoped_run()["idle_rows"]
    # Both super-peers' answers count (their last one is within 2 pull cycles), and
    # "no partner has answered a pull of it" is not read into a back-off.
    assert rows["a"]["behind"] == 0 and "unknownWhy" not in rows["a"], rows["a"]
    assert rows[""]["behind"] == 0 and "unknownWhy" not in rows[""], rows[""]
    assert sorted(rows["a"]["replication"]["partners"]) == scoped_run()["supers"]


def test_a_write_in_its_scope_reaches_it_within_two_pull_intervals_thanks_to_a_poke() -> None:
    run = scoped_run()
    assert run["a_back_off"] >= 2  # backed off when the write came
    assert run["a_reached"] is not None and run["a_reached"] <= 2 * INTERVAL, run
    # One poke: both super-peers are members of a, so the source pokes and the other not.
    assert [src for src, _, _ in run["a_pokes"]] == [run["source"]], run["a_pokes"]


def test_a_super_peer_that_is_not_its_source_pokes_it_for_a_scope_the_source_is_not_in(
) -> None:
    run = scoped_run()
    assert run["c_back_off"] >= 2
    # At its next round, from the super-peer that poked it, out of its turn (12 s else).
    assert run["c_reached"] is not None and run["c_reached"] <= INTERVAL + 1, run
    assert [src for src, _, _ in run["c_pokes"]] == [run["mate"]], run["c_pokes"]


def test_a_write_in_a_scope_it_is_not_a_member_of_pokes_it_not() -> None:
    run = scoped_run()
    assert run["b_reached_other"] is not None
    poked = [dst for _, dst, _ in run["b_pokes"]]
    assert run["weak"] not in poked, run["b_pokes"]
    assert run["other"] in poked, run["b_pokes"]  # the member of b is
