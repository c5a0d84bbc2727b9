"""Which peers a node routes Service traffic to, across a partition and its heal.

On the simulated network, in virtual time: ``MeshPeer.routable`` must turn False on
both sides of a cut well before SWIM declares anyone dead on the cut-off side (whose
suspicions nobody confirms and whose timers Lifeguard stretches), must never drop a
healthy peer on a lossy network, and must come back soon after the heal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from shoal.mesh import config as mesh_config
from shoal.mesh.config import MeshConfig
from shoal.mesh.messages import Ack, Ping, State, Update
from shoal.mesh.peer import MeshPeer
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults, SimNetwork
from tests.test_mesh_membership import CFG, start_peers, view, wait_for


async def formed(n: int, seed: int, faults: LinkFaults | None = None,
                 cfg: MeshConfig = CFG) -> tuple[SimNetwork, list[MeshPeer]]:
    net, peers = await start_peers(n, seed, faults, cfg)
    for p in peers[1:]:
        await p.join([peers[0].address])
    await asyncio.sleep(10)
    return net, peers


def routes_to_none_of(peer: MeshPeer, others: list[MeshPeer]) -> Callable[[], bool]:
    return lambda: not any(peer.routable(o.name) for o in others)


def routes_to_all_of(peer: MeshPeer, others: list[MeshPeer]) -> Callable[[], bool]:
    return lambda: all(peer.routable(o.name) for o in others)


@pytest.mark.parametrize("seed", range(4))
def test_a_cut_off_peer_stops_routing_to_the_others_before_it_declares_them_dead(
        seed: int) -> None:
    async def main() -> None:
        net, peers = await formed(3, seed)
        cut, rest = peers[2], peers[:2]
        net.partition([[p.address for p in rest], [cut.address]])
        await wait_for(routes_to_none_of(cut, rest), 60.0)
        # It has not declared them dead (nobody confirms its suspicions): routing did
        # not wait for that, nor for the Lease grace.
        assert {view(cut)[p.name] for p in rest} == {State.SUSPECT}
        # The healthy side drops it too, and keeps routing among itself.
        for p in rest:
            await wait_for(routes_to_none_of(p, [cut]), 60.0)
            assert routes_to_all_of(p, [q for q in rest if q is not p])()

    virtual_run(main())


@pytest.mark.parametrize("seed", range(8))
def test_both_sides_route_to_each_other_again_soon_after_a_heal(seed: int) -> None:
    async def main() -> None:
        cfg = mesh_config.default()  # the real reconnect interval (10 s), not the sim's
        net, peers = await formed(4, seed, cfg=cfg)
        cut, rest = peers[3], peers[:3]
        net.partition([[p.address for p in rest], [cut.address]])
        await wait_for(lambda: all(view(p)[cut.name] == State.DEAD for p in rest), 120.0)
        await asyncio.sleep(5)
        net.heal()
        # Virtual time, so the bound is exact. Without the reconnect of recently dead
        # members every probe interval it took up to the reconnect interval and more
        # (18 s on seed 3), since a dead member is never probed.
        bound = 3 * cfg.probe_interval
        await wait_for(routes_to_all_of(cut, rest), bound)
        for p in rest:
            await wait_for(routes_to_all_of(p, [cut]), bound)

    virtual_run(main())


@pytest.mark.parametrize("seed", range(4))
def test_a_returning_peers_stale_death_verdicts_are_refuted_instead_of_routed_on(
        seed: int) -> None:
    async def main() -> None:
        net, peers = await formed(4, seed, cfg=mesh_config.default())
        cut, rest = peers[3], peers[:3]
        net.partition([[p.address for p in rest], [cut.address]])
        # Long enough for the cut-off peer to hold every other one dead.
        await wait_for(lambda: all(view(cut)[p.name] == State.DEAD for p in rest), 300.0)
        net.heal()
        # Its state, exchanged on reconnect, says the others are dead at the incarnations
        # they have. Taken as deaths, that put healthy peers out of the others' routing
        # for about a second on every seed; taken as suspicions, they refute. What is
        # left: the verdicts its gossip queue still holds (it had nobody to send them
        # to), at most two samples here, shorter than the proxy's 1 s poll.
        out: dict[tuple[str, str], int] = {}
        for _ in range(200):  # twenty virtual seconds, sampled every 0.1 s
            await asyncio.sleep(0.1)
            for p in rest:
                for o in rest:
                    if o is not p and not p.routable(o.name):
                        out[p.name, o.name] = out.get((p.name, o.name), 0) + 1
        assert max(out.values(), default=0) <= 2, out
        assert all(routes_to_all_of(p, [o for o in peers if o is not p])() for p in peers)

    virtual_run(main())


@pytest.mark.parametrize("seed", range(3))
def test_a_lossy_network_never_takes_a_healthy_peer_out_of_routing(seed: int) -> None:
    async def main() -> None:
        _, peers = await formed(5, seed, LinkFaults(drop=0.05))
        dropped: set[tuple[str, str]] = set()
        for _ in range(1200):  # two virtual minutes, sampled every 0.1 s
            await asyncio.sleep(0.1)
            dropped |= {(p.name, o.name) for p in peers for o in peers
                        if o is not p and not p.routable(o.name)}
        assert not dropped

    virtual_run(main())


def test_a_peer_held_dead_is_told_so_in_the_ack_to_its_ping_and_refutes() -> None:
    async def main() -> None:
        _, peers = await formed(2, 7)
        a, b = peers
        incarnation = b.membership.incarnation
        a.membership.apply(Update(State.DEAD, b.name, b.address, incarnation, a.name))
        reply = await a.membership.handle(Ping(a.name, ()), b.address)
        assert isinstance(reply, Ack)
        assert Update(State.DEAD, b.name, b.address, incarnation, a.name) in reply.updates
        # b, hearing it, refutes with a higher incarnation, and a takes it back at once.
        b.membership.apply_all(reply.updates)
        assert b.membership.incarnation > incarnation
        await wait_for(lambda: view(a)[b.name] == State.ALIVE, 2.0)
        # Nobody else is told about b: the ack to another sender carries no such news.
        other = await a.membership.handle(Ping(a.name, ()), "elsewhere:1")
        assert isinstance(other, Ack) and all(u.name != b.name or u.state == State.ALIVE
                                              for u in other.updates)

    virtual_run(main())


def test_a_probe_of_a_suspect_carries_the_suspicion_so_the_suspect_refutes_in_its_ack() -> None:
    async def main() -> None:
        _, peers = await formed(2, 5)
        a, b = peers
        incarnation = b.membership.incarnation
        a.membership.apply(Update(State.SUSPECT, b.name, b.address, incarnation, "elsewhere"))
        a.membership.broadcasts.clear()  # as if the gossip was spent while b was cut off
        assert await a.membership.probe(a.membership.members[b.name])
        # b heard of the suspicion only through the ping, and its refutation came back
        # in the ack: a holds it alive again, at once.
        assert b.membership.incarnation > incarnation
        assert view(a)[b.name] == State.ALIVE

    virtual_run(main())
