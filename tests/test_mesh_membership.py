"""SWIM membership on the simulated network: joining, failure detection, refutation, garbage."""

from __future__ import annotations

import asyncio
import random

import pytest

from shoal.mesh import config as mesh_config
from shoal.mesh.broadcast import BroadcastQueue
from shoal.mesh.config import MeshConfig
from shoal.mesh.messages import Ping, State, Update, encode
from shoal.mesh.peer import MeshPeer
from shoal.mesh.ring import partners
from shoal.sim.loop import VirtualWallClock
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults, SimNetwork
from shoal.store.replica import Replica

CFG = mesh_config.sim()


async def start_peers(n: int, seed: int, faults: LinkFaults | None = None,
                      cfg: MeshConfig = CFG) -> tuple[SimNetwork, list[MeshPeer]]:
    loop = asyncio.get_running_loop()
    net = SimNetwork(random.Random(seed), faults)
    peers = []
    for i in range(n):
        name = f"p{i}"
        replica = Replica(None, name, clock=VirtualWallClock(loop))  # type: ignore[arg-type]
        peer = MeshPeer(name, net.transport(f"{name}:1"), replica, cfg, random.Random(f"{seed}{i}"))
        await peer.start()
        peers.append(peer)
    return net, peers


def view(peer: MeshPeer) -> dict[str, State]:
    return {m.name: m.state for m in peer.members()}


async def wait_for(cond: object, timeout: float, step: float = 0.1) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not cond():  # type: ignore[operator]
        if loop.time() - start > timeout:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)
    return loop.time() - start


@pytest.mark.parametrize("seed", range(4))
def test_peers_that_join_through_one_seed_all_see_each_other_alive(seed: int) -> None:
    async def main() -> None:
        _, peers = await start_peers(6, seed, LinkFaults(drop=0.05))
        for p in peers[1:]:
            await p.join([peers[0].address])
        everyone = {p.name for p in peers}

        def formed() -> bool:
            return all({n for n, s in view(p).items() if s == State.ALIVE} == everyone
                       for p in peers)

        await wait_for(formed, 30.0)
        # The joins were spread by gossip, and /metrics counts its rounds and messages.
        rounds = sum(p.membership.gossip_rounds for p in peers)
        assert 0 < rounds <= sum(p.membership.gossip_messages for p in peers)

    virtual_run(main())


@pytest.mark.parametrize("seed", range(4))
def test_a_dead_peer_is_declared_dead_by_everyone_within_the_suspicion_bound(seed: int) -> None:
    async def main() -> None:
        _, peers = await start_peers(8, seed)
        for p in peers[1:]:
            await p.join([peers[0].address])
        await asyncio.sleep(10)
        victim, rest = peers[-1], peers[:-1]
        await victim.stop()
        # Someone probes it within a few probe intervals; the suspicion then lasts at
        # most the upper bound; gossip spreads the verdict in a few more rounds.
        _, high = CFG.suspicion_bounds(len(peers))
        bound = high + 4 * CFG.probe_interval
        took = await wait_for(lambda: all(view(p)[victim.name] == State.DEAD for p in rest), bound)
        assert took <= bound
        for p in rest:  # and nobody else was taken for dead
            assert all(s == State.ALIVE for n, s in view(p).items() if n != victim.name)

    virtual_run(main())


def test_a_suspected_peer_that_answers_refutes_with_a_higher_incarnation() -> None:
    async def main() -> None:
        _, peers = await start_peers(5, 1)
        for p in peers[1:]:
            await p.join([peers[0].address])
        await asyncio.sleep(5)
        target = peers[2]
        before = target.membership.incarnation
        peers[0].membership.apply(Update(State.SUSPECT, target.name, target.address, before, "p0"))
        assert view(peers[0])[target.name] == State.SUSPECT
        await wait_for(lambda: target.membership.incarnation > before, 10.0)
        await wait_for(lambda: all(view(p)[target.name] == State.ALIVE for p in peers), 10.0)
        # Long after the suspicion would have expired, it is still alive everywhere.
        await asyncio.sleep(CFG.suspicion_bounds(5)[1] + 5)
        assert all(view(p)[target.name] == State.ALIVE for p in peers)

    virtual_run(main())


def test_a_restarted_peer_moves_past_its_old_incarnation_and_is_alive_again() -> None:
    async def main() -> None:
        net, peers = await start_peers(4, 2)
        for p in peers[1:]:
            await p.join([peers[0].address])
        await asyncio.sleep(3)
        old = peers[3]
        await old.stop()
        await wait_for(lambda: all(view(p)["p3"] == State.DEAD for p in peers[:3]), 120.0)
        again = MeshPeer("p3", net.transport("p3:1"), old.replica, CFG, random.Random(9))
        await again.start()
        assert await again.join([peers[0].address]) == 1
        await wait_for(lambda: all(view(p)["p3"] == State.ALIVE for p in peers[:3]), 30.0)
        assert again.membership.incarnation > 0

    virtual_run(main())


def test_garbage_is_dropped_and_counted_and_the_peer_keeps_working() -> None:
    async def main() -> None:
        net, peers = await start_peers(2, 3)
        await peers[1].join([peers[0].address])
        junk = net.transport("junk:1")
        for payload in (b"\x00garbage", b"[42]", b'[0, 1, "x"]', b"{}"):
            await junk.send(peers[0].address, payload)
        await asyncio.sleep(1)
        assert peers[0].garbage == 4
        answer = await junk.request(peers[0].address, encode(Ping("p0")), 1.0)
        assert answer.startswith(b"[1,")
        assert net.handler_errors == 0

    virtual_run(main())


def test_the_broadcast_queue_sends_the_least_sent_first_and_retires_after_the_limit() -> None:
    q = BroadcastQueue(lambda: 2)
    q.queue(Update(State.ALIVE, "a", "a:1", 1))
    q.queue(Update(State.ALIVE, "b", "b:1", 1))
    assert [u.name for u in q.take(1)] == ["a"]
    assert [u.name for u in q.take(1)] == ["b"]
    q.queue(Update(State.SUSPECT, "a", "a:1", 1, "x"))  # replaces the queued one, count reset
    assert [u.state for u in q.take(5)] == [State.SUSPECT, State.ALIVE]
    assert [u.name for u in q.take(5)] == ["a"]
    assert q.take(5) == ()


def test_config_formulas_follow_memberlist() -> None:
    cfg = MeshConfig()
    assert cfg.retransmit_limit(9) == cfg.retransmit_mult * 1
    assert cfg.retransmit_limit(1000) == cfg.retransmit_mult * 4
    low, high = cfg.suspicion_bounds(100)
    assert low == pytest.approx(cfg.suspicion_mult * 2 * cfg.probe_interval)
    assert high == pytest.approx(low * cfg.suspicion_max_timeout_mult)
    assert mesh_config.wan().probe_interval > mesh_config.lan().probe_interval


def test_pull_partners_include_the_ring_successor_so_everyone_is_pulled_from() -> None:
    names = [f"n{i}" for i in range(200)]
    chosen = {n: partners(n, names, 8) for n in names}
    assert all(len(c) == 8 and n not in c for n, c in chosen.items())
    pulled_from = {p for c in chosen.values() for p in c}
    assert pulled_from == set(names)
