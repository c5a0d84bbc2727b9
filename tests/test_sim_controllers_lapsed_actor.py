"""Across a cut the near side acts for the far side's objects once their Leases ran out,
not once membership gives the far peers up (``ownership.LeaseAges``).

Five simulated peers with the demo's timers (heartbeat 2 s, grace 6 s, eviction 8 s) run
ReplicaSets of one pod; the network splits 3/2 and a near peer scales up the sets whose
preferred actor is across the cut. Membership holds a far peer alive until it has probed
and suspected it; the new pods must not wait for that. Before the cut and after the heal,
every set has exactly one actor among the five peers at every sample."""

from __future__ import annotations

import asyncio
import copy
import random
from dataclasses import dataclass, field
from typing import Any

from shoal.control import ownership
from shoal.mesh import config as mesh_config
from shoal.sim.cluster import NAMESPACE, SimCluster
from shoal.sim.control_plane import ControlCluster, MeshPeerView
from shoal.sim.kubelet import KubeletTiming
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults

HEARTBEAT, GRACE, EVICTION = 2.0, 6.0, 8.0
SETS = 10


@dataclass
class Found:
    far: list[str] = field(default_factory=list)
    scaled: list[str] = field(default_factory=list)
    """The sets whose preferred actor is across the cut."""
    acted_while_live: set[str] = field(default_factory=set)
    """Of ``scaled``: those a near peer acted for while its membership still listed their
    preferred actor alive."""
    new_pod: set[str] = field(default_factory=set)
    double_actors: list[tuple[str, str, list[str]]] = field(default_factory=list)
    errors: int = 0


def _rs(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"rs{i}"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"set": f"s{i}"}},
        "template": {"metadata": {"labels": {"set": f"s{i}"}}, "spec": {"containers": [
            {"name": "c", "image": "x:1",
             "resources": {"requests": {"cpu": "10m", "memory": "8Mi"}}}]}}}}


async def _scenario(seed: int, found: Found) -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    cluster = SimCluster(5, seed, mesh_config.sim(), loop, LinkFaults(drop=0.01))
    cp = ControlCluster(cluster, EVICTION, KubeletTiming(heartbeat=HEARTBEAT),
                        node_monitor_grace=GRACE)
    await cp.start()
    try:
        names = list(cluster.nodes)
        views = {n: MeshPeerView(cluster.nodes[n], GRACE) for n in names}
        for v in views.values():
            ownership.actors(v)  # as the controllers' views: counting from the start
        rs_k = cluster.registry.by_kind("apps/v1", "ReplicaSet")
        pod_k = cluster.registry.by_kind("v1", "Pod")
        assert rs_k is not None and pod_k is not None
        first = cluster.nodes[names[0]].store
        uids = {}
        for i in range(SETS):
            uids[f"rs{i}"] = (await first.create(rs_k, _rs(i), NAMESPACE))["metadata"]["uid"]

        def single_actors(phase: str) -> None:
            for rs, uid in uids.items():
                acting = [n for n, v in views.items() if ownership.should_act(v, uid)]
                if len(acting) != 1:
                    found.double_actors.append((phase, rs, acting))

        for _ in range(80):  # 8 s: Leases everywhere
            await asyncio.sleep(0.1)
            single_actors("before the cut")
        rng = random.Random(f"{seed}:lapsed")
        near = sorted(rng.sample(names, 3))
        found.far = [n for n in names if n not in near]
        winners = {rs: ownership.preferred_actor(uid, names) for rs, uid in uids.items()}
        found.scaled = sorted(rs for rs, w in winners.items() if w in found.far)
        before = {p["metadata"]["uid"] for n in names
                  for p in cluster.nodes[n].store.list(pod_k, NAMESPACE)}
        cluster.network.partition([[cluster.nodes[n].address for n in side]
                                   for side in (near, found.far)])
        await asyncio.sleep(1.0)
        writer = cluster.nodes[near[0]].store
        for rs in found.scaled:
            obj = copy.deepcopy(writer.get(rs_k, NAMESPACE, rs))
            obj["spec"]["replicas"] = 2
            await writer.update(rs_k, obj, NAMESPACE, rs)
        for _ in range(160):  # up to 16 s of the cut
            await asyncio.sleep(0.1)
            if found.new_pod == set(found.scaled) == found.acted_while_live:
                break
            for rs in found.scaled:
                alive = [n for n in near if winners[rs] in views[n].live()]
                if any(ownership.should_act(views[n], uids[rs]) for n in alive):
                    found.acted_while_live.add(rs)
                label = "s" + rs[2:]
                if any(p["metadata"]["uid"] not in before
                       and (p["metadata"].get("labels") or {}).get("set") == label
                       for n in near for p in cluster.nodes[n].store.list(pod_k, NAMESPACE)):
                    found.new_pod.add(rs)
        cluster.network.heal()
        await asyncio.sleep(GRACE + 4)  # membership back, the renewals merged
        for _ in range(30):
            await asyncio.sleep(0.1)
            single_actors("after the heal")
        found.errors = len(cp.errors.messages)
    finally:
        await cp.stop()


def run(seed: int) -> Found:
    found = Found()
    virtual_run(_scenario(seed, found))
    return found


def test_the_near_side_acts_for_far_objects_while_membership_still_holds_their_actor() -> None:
    found = run(SEED)
    assert found.scaled, "the seed puts some sets' preferred actor across the cut"
    assert found.new_pod == set(found.scaled), found
    assert found.acted_while_live, found
    assert not found.double_actors, found.double_actors[:5]
    assert found.errors == 0


SEED = 4
