"""Pokes (issue 10): an idle weak peer pulls every 4th round (16 s), so its source
super-peer tells it when its next pull would bring something (``AntiEntropy._to_poke``),
and it then pulls at its next round. Its own Lease renewals, echoed into the super-peer,
poke nobody: idle, nothing is sent."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from shoal.mesh import config as mesh_config
from shoal.mesh.anti_entropy import POKE, AntiEntropy
from shoal.mesh.messages import Push, decode
from shoal.mesh.topology import Role
from shoal.sim.cluster import NAMESPACE, RESOURCE
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster
from tests.test_weak_peer_idle_traffic import renew_forever

LEASES = "kube-node-lease"
RENEW = 30.0


def mesh_of(c: RoleCluster, name: str) -> AntiEntropy:
    peer = c.nodes[name].peer
    assert peer is not None
    return peer.anti_entropy


async def started_cluster() -> RoleCluster:
    """Two sites of two super-peers and two weak peers each, and a full peer (seed 5)."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    layout = Layout(sites=2, supers_per_site=2, weak_per_site=2, full=1)
    c = RoleCluster(layout.size, 5, mesh_config.sim(), loop, LinkFaults(), layout=layout)
    await c.start()
    return c


@functools.cache
def poke_run() -> dict[str, Any]:
    out: dict[str, Any] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        c = await started_cluster()
        weak, other = c.names(Role.WEAK, "site-000")
        await c.nodes[weak].store.create(c.namespace_kind, {"metadata": {"name": LEASES}})
        task = renew_forever(c.nodes[weak], RENEW)
        await asyncio.sleep(90)  # settled: the namespace and the first renewals everywhere
        name_of = {n.address: n.name for n in c.nodes.values()}
        pokes: list[tuple[str, str, float]] = []

        def observe(src: str, dst: str, payload: bytes) -> None:
            if payload == POKE:
                pokes.append((name_of.get(src, src), name_of.get(dst, dst), loop.time()))

        c.network.observers.append(observe)
        await asyncio.sleep(4 * RENEW)  # idle but for its renewals (and the namespace's)
        out["idle_pokes"] = list(pokes)
        out["idle_back_off"] = mesh_of(c, weak)._idle_pulls
        # A write elsewhere (the full peer, another site) while the weak peer is backed off.
        full = c.names(Role.FULL)[0]
        start = loop.time()
        await c.write(c.nodes[full], "create", "poked", {"k": "v"})
        reached: float | None = None
        while loop.time() - start < 30:
            if c.nodes[weak].replica.get(RESOURCE, NAMESPACE, "poked") is not None:
                reached = loop.time() - start
                break
            await asyncio.sleep(0.1)
        out["reached_after"] = reached
        out["pokes_after_write"] = [p for p in pokes if p[2] >= start]
        out["weak"], out["other"] = weak, other
        out["supers"] = c.names(Role.SUPER, "site-000")
        out["received"] = mesh_of(c, weak).pokes_received
        # Pokes from anyone but a super-peer of its site are dropped.
        mesh = mesh_of(c, weak)
        mesh._idle_pulls = 3
        foreign = c.names(Role.SUPER, "site-001")[0]
        for sender in (foreign, other, full, None):
            await mesh.handle("somewhere", Push(0, ()), sender)
        out["foreign"] = (mesh._idle_pulls, mesh.pokes_received - out["received"])
        await mesh.handle("somewhere", Push(0, ()), out["supers"][1])
        out["own"] = (mesh._idle_pulls, mesh.pokes_received - out["received"])
        task.cancel()
        await c.stop()

    virtual_run(main())
    return out


def test_a_poke_is_an_empty_push_that_older_peers_merge_as_nothing() -> None:
    msg = decode(POKE)
    assert isinstance(msg, Push) and msg.docs == () and msg.answers is None
    assert len(POKE) <= 8


def test_its_own_lease_renewals_poke_no_weak_peer() -> None:
    run = poke_run()
    assert run["idle_pokes"] == []
    assert run["idle_back_off"] >= 2  # it was backed off when the write came


def test_a_write_elsewhere_reaches_an_idle_weak_peer_within_two_pull_intervals() -> None:
    run = poke_run()
    interval = 2 * mesh_config.sim().pull_interval  # a weak peer's (``config.for_role``)
    assert run["reached_after"] is not None and run["reached_after"] <= 2 * interval, run
    poked = {dst for _, dst, _ in run["pokes_after_write"]}
    assert {run["weak"], run["other"]} <= poked, run["pokes_after_write"]
    # One source each: each weak peer of the site is poked once, by one of its super-peers.
    ours = [p for p in run["pokes_after_write"] if p[1] in (run["weak"], run["other"])]
    assert len(ours) == 2 and all(src in run["supers"] for src, _, _ in ours), ours
    assert run["received"] >= 1


def test_a_poke_from_anyone_but_a_super_peer_of_its_site_is_dropped() -> None:
    run = poke_run()
    assert run["foreign"] == (3, 0)
    assert run["own"] == (0, 1)
