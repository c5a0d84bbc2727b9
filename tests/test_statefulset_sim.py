"""At most one, in the simulator: a StatefulSet's pod never runs on two nodes at once.

Five simulated peers run the real controllers. A StatefulSet of 5 (Parallel, with a claim
template) runs; the peers split 3/2 for longer than the lease grace and the eviction
timeout, so each side believes the other's nodes gone; one peer is killed; each side scales
the set up to 7 (both want the new ordinals); an operator on one side deletes a pod whose
node is on the other side. The kubelets' timeline (what actually runs) is checked at every
change: no ordinal ever has copies on two nodes, during the split or after the heal, and
after the heal every ordinal runs exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import random
from collections import defaultdict
from typing import Any

import pytest

from shoal.control import statefulset
from shoal.mesh import config as mesh_config
from shoal.sim.cluster import NAMESPACE, SimCluster
from shoal.sim.control_plane import ControlCluster
from shoal.sim.loop import VirtualEventLoop
from shoal.sim.loop import run as virtual_run
from shoal.sim.network import LinkFaults
from shoal.sim.timeline import Timeline
from shoal.store.objects import StoreError

SET = {"metadata": {"name": "web"}, "spec": {
    "replicas": 5, "serviceName": "web", "podManagementPolicy": "Parallel",
    "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}},
                 "spec": {"containers": [{"name": "c", "image": "web:1"}]}},
    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
        "accessModes": ["ReadWriteOnce"], "storageClassName": "local-path",
        "resources": {"requests": {"storage": "1Gi"}}}}]}}
LOCAL_PATH = {"metadata": {"name": "local-path"}, "provisioner": "shoal.dev/local-path",
              "volumeBindingMode": "WaitForFirstConsumer"}


class AtMostOnce:
    """Samples the timeline at every change: ordinals running on two nodes."""

    def __init__(self) -> None:
        self.doubles: list[tuple[float, str, list[str]]] = []

    def __call__(self, timeline: Timeline, now: float) -> None:
        nodes: dict[str, set[str]] = defaultdict(set)
        for c in timeline.copies.values():
            if c.labels.get("app") == "web":
                nodes[c.name].add(c.node)
        self.doubles += [(now, name, sorted(where)) for name, where in nodes.items()
                         if len(where) > 1]


def running(timeline: Timeline) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for c in timeline.copies.values():
        if c.labels.get("app") == "web" and c.ready:
            out[c.name].append(c.node)
    return out


async def scenario(seed: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    cluster = SimCluster(5, seed, mesh_config.sim(), loop, LinkFaults(drop=0.01))
    cp = ControlCluster(cluster, pod_eviction_timeout=20.0)
    check = AtMostOnce()
    cp.timeline.listeners.append(check)
    rng = random.Random(f"{seed}:statefulset")
    r = cluster.registry
    sts_kind, pod_kind = r.by_kind("apps/v1", "StatefulSet"), r.by_kind("v1", "Pod")
    sc_kind = r.by_kind("storage.k8s.io/v1", "StorageClass")
    assert sts_kind is not None and pod_kind is not None and sc_kind is not None
    names = list(cluster.nodes)
    await cp.start()
    first = cluster.nodes[names[0]]
    await first.store.create(sc_kind, LOCAL_PATH)
    await first.store.create(sts_kind, SET, NAMESPACE)

    async def until(cond: Any, timeout: float) -> bool:
        end = loop.time() + timeout
        while loop.time() < end:
            if cond():
                return True
            await asyncio.sleep(0.5)
        return False

    settled = await until(lambda: len(running(cp.timeline)) == 5, 120)
    side_a = sorted(rng.sample(names, 3))
    side_b = [n for n in names if n not in side_a]
    cluster.network.partition([[cluster.nodes[n].address for n in side]
                               for side in (side_a, side_b)])
    await asyncio.sleep(rng.uniform(1, 5))
    victim = rng.choice(names)
    await cp.kill(victim)
    for side in (side_a, side_b):
        writer = next(n for n in side if cluster.nodes[n].up)
        store = cluster.nodes[writer].store
        sts = copy.deepcopy(store.get(sts_kind, NAMESPACE, "web"))
        sts["spec"]["replicas"] = 7
        await store.update(sts_kind, sts, NAMESPACE, "web")
    # An operator on side A deletes (gracefully) a pod bound to a node of side B.
    operator = cluster.nodes[next(n for n in side_a if cluster.nodes[n].up)].store
    far = sorted(p["metadata"]["name"] for p in operator.list(pod_kind, NAMESPACE)
                 if (p.get("spec") or {}).get("nodeName") in side_b)
    if far:
        with contextlib.suppress(StoreError):
            await operator.delete(pod_kind, NAMESPACE, far[0])
    await asyncio.sleep(100)  # past the lease grace (40 s) and the eviction timeout (20 s)
    cluster.network.heal()
    await cp.restart(victim)
    converged = await until(lambda: sorted(running(cp.timeline)) == [
        f"web-{i}" for i in range(7)] and all(len(v) == 1 for v in running(cp.timeline).values()),
        300)
    await cp.stop()
    return {"settled": settled, "converged": converged, "doubles": check.doubles, "deleted": far[:1], "sides": (side_a, side_b)}


def test_no_statefulset_pod_runs_twice_across_a_partition_and_a_kill() -> None:
    result = virtual_run(scenario(1))
    assert result["settled"], result
    assert result["doubles"] == [], result
    assert result["converged"], result


def test_the_check_catches_ordinals_created_by_whoever_is_live(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The rule every other controller follows (any live peer acts for what it cannot see):
    # both sides create web-6 and it runs on two nodes at once.
    monkeypatch.setattr(statefulset, "home_candidates",
                        lambda nodes, view, scope, scopes: view.live())
    result = virtual_run(scenario(1))
    assert any(name == "web-6" for _, name, _ in result["doubles"]), result
