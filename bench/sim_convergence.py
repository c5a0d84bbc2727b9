"""Simulator figures: convergence after one write and after a partition heals, idle traffic.

Everything runs on virtual time (``shoal.sim``): the real mesh, store and CRDT code,
N peers in one process. ``rounds`` counts anti-entropy rounds (pull intervals);
bytes are payload bytes sent per node (no TLS or TCP framing).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from shoal.mesh import config as mesh_config
from shoal.sim import scenarios

SEED = 1


def _figures(report: scenarios.Report) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "failures": report.failures[:3],
        "converge_virtual_seconds": report.converge_seconds,
        "rounds": report.rounds,
        "members_converge_virtual_seconds": report.members_converge_seconds,
        "bytes_per_node": round(report.bytes_per_node, 1),
        "idle_bytes_per_node_per_second": round(report.idle_bytes_per_node_per_second, 2),
        "idle_kbit_per_node": round(report.idle_kbit_per_node, 3),
        "wall_seconds": round(report.wall_seconds, 2),
    }


def run(quick: bool) -> dict[str, Any]:
    sizes = [10, 100] if quick else [10, 100, 1000]
    # Tombstone collection gossips every peer's coverage vector to every peer (O(N²)
    # numbers per node after writes): it is measured apart, at the sizes it is meant for.
    mesh_only = dataclasses.replace(mesh_config.sim(), gc_interval=0.0)
    out: dict[str, Any] = {"seed": SEED, "one_write": {}, "partition_heal": {},
                           "one_write_with_tombstone_collection": {}}
    for n in sizes:
        out["one_write"][str(n)] = _figures(scenarios.run(scenarios.Options(
            scenario="one-write", peers=n, seed=SEED, drop=0.0, idle_seconds=30.0,
            config=mesh_only,
        )))
        # At 1,000 peers a partition long enough for the halves to declare each other
        # dead costs the simulator minutes (N² suspicions); 15 s is below the minimum
        # suspicion timeout there, so it measures data convergence alone.
        split = 60.0 if n < 1000 else 15.0
        fig = _figures(scenarios.run(scenarios.Options(
            scenario="partition-heal", peers=n, seed=SEED, writes=20, drop=0.0,
            duplicate=0.0, safety_seconds=split, idle_seconds=0.0, liveness_timeout=600.0,
            config=mesh_only,
        )))
        fig["partition_seconds"] = split
        out["partition_heal"][str(n)] = fig
    for n in (10, 100):
        out["one_write_with_tombstone_collection"][str(n)] = _figures(scenarios.run(
            scenarios.Options(scenario="one-write", peers=n, seed=SEED, drop=0.0,
                              idle_seconds=30.0, config=mesh_config.sim())))
    out["goals"] = {"rounds_at_1000": 12, "idle_kbit_per_node": 0.25}
    return out


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
