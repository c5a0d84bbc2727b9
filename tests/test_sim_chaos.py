"""Seeded chaos runs: every seed keeps the invariants, and a seed replays exactly."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.sim import scenarios
from shoal.sim.__main__ import main as sim_main


def chaos(seed: int, peers: int = 4, **kw: object) -> scenarios.Report:
    opts = scenarios.Options(
        scenario="chaos", peers=peers, seed=seed, writes=30, partitions=2, kills=1,
        drop=0.05, duplicate=0.05, safety_seconds=15.0, idle_seconds=0, **kw,  # type: ignore[arg-type]
    )
    return scenarios.run(opts)


def test_the_same_seed_run_twice_gives_the_same_trace() -> None:
    a, b = chaos(1234), chaos(1234)
    assert a.trace == b.trace
    assert a.to_dict()["converge_seconds"] == b.to_dict()["converge_seconds"]
    assert chaos(1235).trace != a.trace


def test_debug_output_does_not_shift_the_run(caplog: pytest.LogCaptureFixture) -> None:
    quiet = chaos(99)
    caplog.set_level(logging.INFO, logger="shoal.sim")
    loud = chaos(99)
    assert any("sees" in r.message for r in caplog.records)
    assert loud.trace == quiet.trace


@pytest.mark.parametrize("seed", range(200))
def test_chaos_seeds_converge_without_losing_or_resurrecting_writes(seed: int) -> None:
    report = chaos(seed, peers=3 + seed % 4)
    assert report.ok, f"{report.failures}; reproduce: {scenarios.Options(seed=seed).command()}"
    assert report.acked_writes > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), peers=st.integers(2, 7),
       drop=st.sampled_from([0.0, 0.1, 0.3]), kills=st.integers(0, 3))
def test_any_seed_loss_rate_and_kill_count_keeps_the_invariants(
    seed: int, peers: int, drop: float, kills: int,
) -> None:
    report = scenarios.run(scenarios.Options(
        scenario="chaos", peers=peers, seed=seed, writes=20, partitions=1, kills=kills,
        drop=drop, duplicate=0.05, safety_seconds=10.0, idle_seconds=0,
    ))
    assert report.ok, report.failures


def test_joining_instead_of_starting_formed_also_converges() -> None:
    report = chaos(77, peers=6, preformed=False)
    assert report.ok, report.failures


@pytest.mark.parametrize("seed", range(2))
def test_a_larger_cluster_converges_after_chaos(seed: int) -> None:
    report = chaos(seed, peers=40)
    assert report.ok, report.failures


def test_the_command_line_prints_parameters_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert sim_main(["--peers", "3", "--seed", "5", "--safety-seconds", "5", "--idle-seconds", "2"]) == 0
    out = capsys.readouterr().out
    assert "seed = 5" in out and "config.probe_interval" in out and '"converge_seconds"' in out
