"""Super-peers on the simulated network: weak peers hold and talk to their site's
super-peers only, keep syncing when one dies, and merge after being cut off."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import orjson
import pytest

from shoal.mesh import config as mesh_config
from shoal.mesh.messages import State
from shoal.mesh.topology import Role
from shoal.sim.checkers import convergence
from shoal.sim.cluster import NAMESPACE, RESOURCE
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.super_peers import Layout, RoleCluster, settle

CFG = mesh_config.sim()


def cluster(layout: Layout, seed: int, faults: LinkFaults | None = None) -> RoleCluster:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    return RoleCluster(layout.size, seed, CFG, loop, faults or LinkFaults(), layout=layout)


MEMBERSHIP = {0, 1, 2, 3, 4, 5, 6, 10}  # message tags of messages.py (not replication)


def record_pairs(c: RoleCluster) -> Counter[tuple[str, str]]:
    """Count every membership message by (sender, receiver) name from now on."""
    pairs: Counter[tuple[str, str]] = Counter()
    transmit = c.network.transmit

    def counting(src: str, dst: str, payload: bytes, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if orjson.loads(payload)[0] in MEMBERSHIP:
            pairs[(src.split(":")[0], dst.split(":")[0])] += 1
        transmit(src, dst, payload, *args, **kwargs)

    c.network.transmit = counting  # type: ignore[method-assign]
    return pairs


def names(c: RoleCluster, name: str) -> dict[str, State]:
    node = c.nodes[name]
    assert node.peer is not None
    return {m.name: m.state for m in node.peer.members()}


async def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.25) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not cond():
        assert loop.time() - start < timeout, "condition not met in time"
        await asyncio.sleep(step)
    return loop.time() - start


def holds(c: RoleCluster, name: str, obj: str, value: str | None = None) -> bool:
    got = c.nodes[name].replica.get(RESOURCE, NAMESPACE, obj)
    return got is not None and (value is None or got["data"].get("k") == value)


@pytest.mark.parametrize("seed", range(3))
def test_weak_peers_hold_and_talk_to_the_super_peers_of_their_site_only(seed: int) -> None:
    async def main() -> None:
        c = cluster(Layout(sites=3, supers_per_site=2, weak_per_site=6, full=2), seed,
                    LinkFaults(drop=0.01))
        await c.start()
        pairs = record_pairs(c)
        await asyncio.sleep(90)
        everyone = set(c.nodes)
        for name, (role, site) in c.role.items():
            view = names(c, name)
            if role == Role.WEAK:
                assert set(view) == {name, *c.names(Role.SUPER, site)}
            else:
                assert set(view) == everyone
            assert all(s == State.ALIVE for s in view.values()), (name, view)
        for (src, dst), _ in pairs.items():
            for weak, other in ((src, dst), (dst, src)):
                if c.role[weak][0] == Role.WEAK:
                    assert other in c.names(Role.SUPER, c.role[weak][1]), (src, dst)
        await c.stop()

    virtual_run(main())


def test_a_weak_peers_membership_traffic_does_not_grow_with_the_cluster() -> None:
    async def per_weak_peer(sites: int) -> float:
        c = cluster(Layout(sites=sites, supers_per_site=2, weak_per_site=8), 7)
        await c.start()
        await asyncio.sleep(40)
        weak = {c.nodes[n].address for n in c.names(Role.WEAK)}
        sent = Counter[str]()
        transmit = c.network.transmit

        def counting(src: str, dst: str, payload: bytes, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            if orjson.loads(payload)[0] in MEMBERSHIP:
                for a in (src, dst):
                    if a in weak:
                        sent[a] += len(payload)
            transmit(src, dst, payload, *args, **kwargs)

        c.network.transmit = counting  # type: ignore[method-assign]
        await asyncio.sleep(120)
        await c.stop()
        return sum(sent.values()) / len(weak) / 120

    async def main() -> None:
        small, large = await per_weak_peer(2), await per_weak_peer(12)
        assert large < small * 1.2, (small, large)
        assert large * 8 / 1000 < 0.25  # kbit/s, in and out: within the idle budget

    virtual_run(main())


@pytest.mark.parametrize("seed", range(3))
def test_a_weak_peer_keeps_syncing_through_its_second_super_peer_when_one_dies(seed: int) -> None:
    async def main() -> None:
        c = cluster(Layout(sites=2, supers_per_site=2, weak_per_site=3, full=1), seed)
        await c.start()
        full = c.names(Role.FULL)[0]
        s1, s2 = c.names(Role.SUPER, "site-000")
        weak = c.names(Role.WEAK, "site-000")[0]
        far = c.names(Role.WEAK, "site-001")[0]
        await asyncio.sleep(10)
        assert await c.write(c.nodes[full], "create", "before", {"k": "1"})
        await wait_for(lambda: holds(c, weak, "before"), 30)
        await c.kill(s1)
        await wait_for(lambda: names(c, weak)[s1] == State.DEAD, 120)
        assert await c.write(c.nodes[full], "create", "after", {"k": "2"})
        assert await c.write(c.nodes[weak], "create", "from-weak", {"k": "3"})
        await wait_for(lambda: holds(c, weak, "after") and holds(c, far, "from-weak")
                       and holds(c, full, "from-weak"), 30)
        # Its own liveness still reaches everyone through the surviving super-peer.
        await asyncio.sleep(60)
        for other in (full, s2, far):
            if other != far:
                assert names(c, other)[weak] == State.ALIVE
        await c.stop()

    virtual_run(main())


@pytest.mark.parametrize("seed", range(3))
def test_a_cut_off_weak_peer_keeps_its_state_and_writes_and_merges_after_the_heal(
    seed: int,
) -> None:
    async def main() -> None:
        c = cluster(Layout(sites=2, supers_per_site=2, weak_per_site=3), seed)
        await c.start()
        weak = c.names(Role.WEAK, "site-001")[1]
        other = c.names(Role.WEAK, "site-000")[0]
        assert await c.write(c.nodes[other], "create", "shared", {"k": "1"})
        await wait_for(lambda: holds(c, weak, "shared"), 30)
        rest = [n.address for n in c.nodes.values() if n.name != weak]
        c.network.partition([[c.nodes[weak].address], rest])
        await asyncio.sleep(60)  # long enough for both sides to declare the other dead
        assert all(s != State.ALIVE for n, s in names(c, weak).items() if n != weak)
        # Cut off, it still reads and writes what it holds.
        assert holds(c, weak, "shared")
        assert await c.write(c.nodes[weak], "update", "shared", {"k": "weak"})
        assert await c.write(c.nodes[weak], "create", "offline", {"k": "w"})
        assert await c.write(c.nodes[other], "create", "meanwhile", {"k": "m"})
        c.network.heal()
        await wait_for(lambda: not convergence.check(
            {n.name: n.replica for n in c.up_nodes()}, limit=1), 60)
        assert holds(c, other, "offline") and holds(c, weak, "meanwhile")
        assert await settle(c, 60) is not None
        await c.stop()

    virtual_run(main())


def test_a_dead_weak_peer_is_declared_dead_everywhere_by_its_super_peers_word() -> None:
    async def main() -> None:
        c = cluster(Layout(sites=2, supers_per_site=2, weak_per_site=3, full=2), 4)
        await c.start()
        await asyncio.sleep(10)
        victim = c.names(Role.WEAK, "site-000")[2]
        await c.kill(victim)
        _, high = CFG.suspicion_bounds(c.size)
        others = [n for n, (r, _) in c.role.items() if r != Role.WEAK]
        await wait_for(lambda: all(names(c, n)[victim] == State.DEAD for n in others),
                       high + 10 * CFG.probe_interval)
        await c.restart(victim)
        await wait_for(lambda: all(names(c, n)[victim] == State.ALIVE for n in others), 60)
        await c.stop()

    virtual_run(main())


def test_a_weak_peer_whose_site_lost_its_super_peers_falls_back_to_another_site() -> None:
    async def main() -> None:
        c = cluster(Layout(sites=2, supers_per_site=2, weak_per_site=2), 5)
        await c.start()
        weak = c.names(Role.WEAK, "site-000")[0]
        far_supers = set(c.names(Role.SUPER, "site-001"))
        await asyncio.sleep(10)
        for s in c.names(Role.SUPER, "site-000"):
            await c.kill(s)
        await wait_for(lambda: bool(far_supers & {n for n, s in names(c, weak).items()
                                                  if s == State.ALIVE}), 180)
        writer = c.names(Role.WEAK, "site-001")[0]
        assert await c.write(c.nodes[writer], "create", "across", {"k": "1"})
        await wait_for(lambda: holds(c, weak, "across"), 30)
        # Once its own super-peers are back, the stand-ins are forgotten again.
        for s in c.names(Role.SUPER, "site-000"):
            await c.restart(s)
        await wait_for(lambda: set(names(c, weak)) == {weak, *c.names(Role.SUPER, "site-000")},
                       120)
        await c.stop()

    virtual_run(main())


def test_peers_without_roles_announce_no_tags_and_contact_everyone() -> None:
    async def main() -> None:
        c = cluster(Layout(sites=0, full=5), 6)
        await c.start()
        await asyncio.sleep(20)
        for node in c.nodes.values():
            assert node.peer is not None
            ms = node.peer.membership
            assert all(u.tags == () for u in ms.snapshot())
            assert all(ms.contacts(m) for m in ms.members.values())
        await c.stop()

    virtual_run(main())


def test_the_scale_benchmark_runs_at_20_peers() -> None:
    from bench import scale

    got = scale.measure(20, scale.mesh_only())
    assert got["peers"] == 20 and got["one_write"]["rounds"] is not None
    assert got["idle"]["weak"]["bytes_per_second_mean"] > 0
    # The super-peers' bytes sorted by kind and partner add up to what they moved.
    where = got["after_burst"]["super_peer_bytes"]
    assert where["kbit_per_second_per_super_peer"] == pytest.approx(
        got["after_burst"]["super"]["kbit_per_second_mean"], rel=0.01)
    assert set(where["by_partner"]) <= {"weak peers of its site", "super-peers of its site"}
    assert where["by_kind"]["pull answer"] > 0 and where["by_kind"]["push"] > 0
    healed = scale.heal(20, split=30.0, cfg=scale.mesh_only())
    assert healed["members_settle_virtual_seconds"] is not None
