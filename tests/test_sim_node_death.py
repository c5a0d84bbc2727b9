"""A node killed behind a Service, on five simulated peers: its pods leave every peer's endpoint
lists within the lease grace period, and come back (restart) or are collected (delete node).

``python -m shoal.sim --scenario node-death --seed N`` replays one seed.
"""

from __future__ import annotations

import os

import pytest

from shoal.sim import node_death

SEEDS = int(os.environ.get("SHOAL_SIM_SEEDS", "8"))


def run(seed: int, **kw: object) -> node_death.DeathReport:
    return node_death.run(node_death.DeathOptions(seed=seed, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(SEEDS))
def test_a_killed_nodes_pods_leave_every_endpoint_list_within_the_grace_period(seed: int) -> None:
    after = ("restart", "delete_node")[seed % 2]
    report = run(seed, after=after)
    assert report.ok, (f"{report.failures}; reproduce: "
                       f"{node_death.DeathOptions(seed=seed).command()}")
    assert report.victim_pods >= 1
    assert report.leave_seconds is not None
    # Judged by the Lease: never before the grace period has run from the last renewal.
    assert report.leave_seconds >= 40.0 - report.since_heartbeat - 1.0
    assert set(report.per_peer) == {f"n{i:04d}" for i in range(5)} - {report.victim}
    assert report.back_seconds is not None  # restarted: all back; deleted: all collected
    assert report.spurious_not_ready == 0


def test_a_shorter_grace_and_heartbeat_take_the_pods_out_sooner() -> None:
    report = run(3, node_monitor_grace=20.0, heartbeat=5.0, after="nothing")
    assert report.ok, report.failures
    assert report.leave_seconds is not None and report.leave_seconds <= 20.0 + \
        node_death.PROPAGATION_SLACK


def test_the_same_seed_run_twice_gives_the_same_trace() -> None:
    a, b = run(77), run(77)
    assert a.trace == b.trace
    assert (a.victim, a.leave_seconds, a.per_peer) == (b.victim, b.leave_seconds, b.per_peer)
    assert run(78).trace != a.trace
