"""A peer frozen for 60 s (``kill -STOP``, then ``kill -CONT``) does not write the healthy
nodes NotReady when it resumes.

Three simulated peers with the trial's timers (heartbeat 2 s, grace 6 s) run a Deployment
with pods on every node. One peer is frozen for 60 s of virtual time: none of its code runs
(``FreezableEventLoop``) and what is sent to it is lost, while its clocks go on. When it
resumes, every other node's Lease in its replica is 60 s old, and until a pull brings the
renewals it missed (its links may come back after it: a resumed VM's network) they look run
out. Before ``loop_stalls`` it
judged them unreachable at once, and its verdicts (Ready=Unknown, the unreachable taint, the
pods marked not ready) spread to every peer. The frozen node itself is rightly judged by the
others meanwhile, and is Ready again after it resumes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from shoal.control.node_lifecycle import UNREACHABLE
from shoal.mesh import config as mesh_config
from shoal.sim.checkers import endpoints as endpoint_checks
from shoal.sim.cluster import NAMESPACE, SimCluster
from shoal.sim.control_plane import ControlCluster
from shoal.sim.kubelet import KubeletTiming
from shoal.sim.loop import FreezableEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.workloads import deployment

HEARTBEAT, GRACE, EVICTION = 2.0, 6.0, 300.0
FREEZE = 60.0


@dataclass
class Found:
    frozen: str = ""
    judged_healthy: list[tuple[float, str, str]] = field(default_factory=list)
    """(seconds after the thaw, peer, node): a healthy node seen unreachable somewhere."""
    frozen_judged: bool = False
    """The others judged the frozen node unreachable during the freeze."""
    frozen_back: bool = False
    not_ready_marks: int = 0
    stalls: int = 0
    trace: str = ""
    errors: int = 0


def _unreachable(store: Any, node: str) -> bool:
    kind = store.registry.by_kind("v1", "Node")
    obj = store.find(kind, None, node) or {}
    return any(t.get("key") == UNREACHABLE for t in (obj.get("spec") or {}).get("taints") or []) \
        or any(c.get("type") == "Ready" and c.get("status") == "Unknown"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def _scenario(seed: int, links_after: float, found: Found) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, FreezableEventLoop)
    cluster = SimCluster(3, seed, mesh_config.sim(), loop, LinkFaults(drop=0.0))
    cp = ControlCluster(cluster, EVICTION, KubeletTiming(heartbeat=HEARTBEAT),
                        node_monitor_grace=GRACE)
    await cp.start()
    try:
        names = list(cluster.nodes)
        deploy = cluster.registry.by_kind("apps/v1", "Deployment")
        assert deploy is not None
        await cluster.nodes[names[0]].store.create(deploy, deployment(6, 1, 0), NAMESPACE)
        await asyncio.sleep(20.0)  # settled: pods on every node, Leases everywhere
        found.frozen = frozen = names[-1]
        healthy = [n for n in names if n != frozen]
        cluster.freeze(frozen)
        for _ in range(int(FREEZE)):
            await asyncio.sleep(1.0)
            found.frozen_judged |= all(_unreachable(cluster.nodes[n].store, frozen)
                                       for n in healthy)
        thawed = loop.time()
        cluster.thaw(frozen, links_after)
        for _ in range(300):  # 30 s after the thaw
            await asyncio.sleep(0.1)
            for peer in names:
                for node in healthy:
                    if _unreachable(cluster.nodes[peer].store, node):
                        found.judged_healthy.append((round(loop.time() - thawed, 1), peer, node))
        found.frozen_back = not any(_unreachable(cluster.nodes[n].store, frozen) for n in names)
        found.not_ready_marks = max(endpoint_checks.not_ready_marks(cluster.nodes[n].store,
                                                                    exclude=frozen)
                                    for n in names)
        found.stalls = cp.stalls[frozen].stalls
        found.errors = len(cp.errors.messages)
        found.trace = cluster.network.trace_hash
    finally:
        await cp.stop()


def run(seed: int, links_after: float = 0.0) -> Found:
    found = Found()
    virtual_run(_scenario(seed, links_after, found), freezable=True)
    return found


# links-2s-later is the case the stall rule is for (it fails without it); links-at-once is
# a control: the resumed peer's first pull wins the race, so no flap either way, and only
# the stall's detection (``stalls == 1``) depends on the change there.
@pytest.mark.parametrize("links_after", [0.0, 2.0], ids=["links-at-once", "links-2s-later"])
def test_a_peer_that_resumes_from_a_freeze_does_not_judge_the_healthy_nodes(
    links_after: float,
) -> None:
    found = run(SEED, links_after)
    assert found.frozen_judged, "the others judge the frozen node while it stands still"
    assert found.judged_healthy == [], found.judged_healthy[:5]
    assert found.not_ready_marks == 0
    assert found.stalls == 1
    assert found.frozen_back
    assert found.errors == 0


def test_a_freeze_is_deterministic() -> None:
    assert run(SEED, 2.0).trace == run(SEED, 2.0).trace


def test_a_thaw_brings_back_only_the_links_the_freeze_took_down() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, FreezableEventLoop)
        cluster = SimCluster(3, SEED, mesh_config.sim(), loop)
        net = cluster.network
        a, b, c = (n.address for n in cluster.nodes.values())
        name_a, name_b, _ = cluster.nodes
        net.clog(a, b)  # the scenario's own cut, from before the freeze
        cluster.freeze(name_a)
        cluster.freeze(name_b)
        assert not net.reachable(a, c) and not net.reachable(c, b)
        cluster.thaw(name_a, links_after=1.0)
        assert not net.reachable(a, c), "the links come back links_after later"
        await asyncio.sleep(1.5)
        assert net.reachable(a, c) and net.reachable(c, a)
        assert not net.reachable(a, b), "the scenario's cut stays"
        assert not net.reachable(c, b), "a peer still frozen stays cut off"
        cluster.thaw(name_b)
        assert net.reachable(b, c) and not net.reachable(b, a)
        await cluster.stop()

    virtual_run(main(), freezable=True)


SEED = 0
