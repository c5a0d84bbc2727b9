"""Control-plane figures: scheduling throughput, and heal-to-convergence under a 3/2 split.

- ``scheduling``: the real ``Scheduler`` controller on one in-memory ``ObjectStore``
  binds 1,000 pending pods over 100 nodes; wall-clock pods bound per second (each
  bind is a binding write, a status write and an Event, as in the server).
- ``partition_heal``: the ``shoal.sim.workloads`` scenario (5 peers split 3/2, the
  Deployment scaled on both sides, a node killed) over many seeds; virtual seconds
  from the heal until the replicas agree, replica counts are met and exactly the
  desired pods run, each on one node.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

from shoal.control.scheduling import Scheduler
from shoal.model.kinds import KindRegistry
from shoal.sim import workloads
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

ALLOC = {"cpu": "16", "memory": "64Gi", "pods": "110"}


async def _scheduling(pods: int, nodes: int) -> dict[str, Any]:
    reg = KindRegistry()
    replica = Replica(None, "bench")
    store = ObjectStore(replica, reg)
    ns_k, node_k, pod_k = (reg.by_kind("v1", "Namespace"), reg.by_kind("v1", "Node"),
                           reg.by_kind("v1", "Pod"))
    assert ns_k is not None and node_k is not None and pod_k is not None
    try:
        await store.create(ns_k, {"metadata": {"name": "default"}})
        for i in range(nodes):
            name = f"node-{i:03d}"
            n = await store.create(node_k, {"metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"z{i % 3}"}}})
            n["status"] = {"allocatable": ALLOC, "capacity": ALLOC,
                           "conditions": [{"type": "Ready", "status": "True"}]}
            await store.update(node_k, n, None, name, "status")
        for i in range(pods):
            await store.create(pod_k, {"metadata": {"name": f"p-{i:04d}", "labels": {
                "app": f"a{i % 10}"}}, "spec": {"containers": [{"name": "c", "image": "x",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}}, "default")
        scheduler = Scheduler(store)
        start = time.perf_counter()
        passes = 0
        while scheduler.bound < pods and passes < 10:
            await scheduler.sync()
            passes += 1
        seconds = time.perf_counter() - start
        bound = sum(1 for p in store.list(pod_k) if (p.get("spec") or {}).get("nodeName"))
        used = {(p.get("spec") or {}).get("nodeName") for p in store.list(pod_k)}
        return {"pods": pods, "nodes": nodes, "bound": bound, "nodes_used": len(used),
                "passes": passes, "wall_seconds": round(seconds, 3),
                "pods_bound_per_second": round(bound / seconds, 1)}
    finally:
        replica.close()


def _summary(times: list[float]) -> dict[str, float | None]:
    times = sorted(times)
    if not times:
        return {"median": None, "p90": None, "max": None, "min": None}
    return {"median": statistics.median(times),
            "p90": times[min(len(times) - 1, int(0.9 * len(times)))],
            "max": times[-1], "min": times[0]}


def _partition_heal(seeds: int) -> dict[str, Any]:
    # A dead peer that stays dead holds the convergence until its pods count as lost (the
    # 40 s lease grace plus the eviction timeout from its death), so the two cases differ.
    times: dict[str, list[float]] = {"all": [], "victim_returns": [], "victim_stays_dead": []}
    failed: list[int] = []
    wall = time.perf_counter()
    for seed in range(seeds):
        report = workloads.run(workloads.ControlOptions(seed=seed))
        if not report.ok or report.converge_seconds is None:
            failed.append(seed)
            continue
        times["all"].append(report.converge_seconds)
        back = report.plan.get("restart_after_heal")
        times["victim_returns" if back else "victim_stays_dead"].append(report.converge_seconds)
    return {"seeds": seeds, "failed_seeds": failed,
            "pod_eviction_timeout": workloads.ControlOptions().pod_eviction_timeout,
            "heal_to_converge_virtual_seconds": {k: _summary(v) for k, v in times.items()},
            "wall_seconds": round(time.perf_counter() - wall, 2)}


def run(quick: bool) -> dict[str, Any]:
    return {
        "scheduling": asyncio.run(_scheduling(1000, 100)),
        "partition_heal": _partition_heal(10 if quick else 60),
    }


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
