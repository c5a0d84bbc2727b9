"""A micro-measurement of scheduling throughput; it reports, it does not assert a rate."""

from __future__ import annotations

import time

from shoal.control.scheduler import Snapshot, default_profile, schedule
from shoal.control.scheduler.testing import make_node, make_pod

NODES = 100
PODS = 1000


def test_throughput_of_the_default_profile_for_1000_pods_over_100_nodes() -> None:
    zones = [f"zone-{i}" for i in range(4)]
    snap = Snapshot(
        [
            make_node(
                f"node-{i:03}",
                labels={"topology.kubernetes.io/zone": zones[i % 4]},
                allocatable={"cpu": "32", "memory": "64Gi", "pods": 110},
            )
            for i in range(NODES)
        ]
    )
    profile = default_profile()
    pods = [
        make_pod(
            f"web-{i}",
            labels={"app": f"app-{i % 10}"},
            owner=("ReplicaSet", f"rs-{i % 10}"),
            requests={"cpu": "100m", "memory": "128Mi"},
        )
        for i in range(PODS)
    ]
    start = time.perf_counter()
    for pod in pods:
        result = schedule(pod, snap, profile)
        assert result.node_name is not None
        snap.bind(pod, result.node_name)
    elapsed = time.perf_counter() - start
    per_node = sorted(len(n.pods) for n in snap.nodes)
    print(
        f"\nscheduler throughput: {PODS / elapsed:.0f} pods/s "
        f"({PODS} pods over {NODES} nodes in {elapsed:.2f}s, default profile; "
        f"pods per node {per_node[0]}..{per_node[-1]})"
    )
    assert sum(per_node) == PODS
