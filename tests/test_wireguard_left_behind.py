"""A start stops the wireguard-go its data dir's earlier run left, and no other node's
(shoal.net.wireguard.stop_left_behind). Stand-ins whose command line is a daemon's,
``wireguard-go DEVICE``, so no root or tun device is needed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.net import wireguard
from shoal.net.wireguard import interface_name, stop_left_behind


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Started by :func:`start`; killed at the end, whatever the test did."""
    started: dict[str, subprocess.Popen[bytes]] = {}
    yield started
    for proc in started.values():
        proc.kill()
        proc.wait()


def start(daemons: dict[str, subprocess.Popen[bytes]], tmp_path: Path, device: str) -> None:
    """A process whose arguments are ``wireguard-go DEVICE``: Python, running a script
    named after the device."""
    (tmp_path / device).write_text("import time\ntime.sleep(120)\n")
    daemons[device] = subprocess.Popen(["wireguard-go", device], executable=sys.executable,
                                       cwd=tmp_path)
    deadline = time.monotonic() + 10
    while wireguard._daemon_of(device) != [daemons[device].pid]:
        assert time.monotonic() < deadline, "the stand-in did not start"
        time.sleep(0.02)


def record(data_dir: Path, device: str) -> None:
    d = data_dir / wireguard.DIR
    d.mkdir(parents=True, exist_ok=True)
    (d / wireguard.INTERFACE_FILE).write_text(device + "\n")


async def test_the_recorded_devices_wireguard_go_is_stopped_and_another_nodes_is_not(
        tmp_path: Path, daemons: dict[str, subprocess.Popen[bytes]]) -> None:
    ours = interface_name("node-a", tmp_path / "a")
    theirs = interface_name("node-a", tmp_path / "b")  # the same name, another data dir
    start(daemons, tmp_path, ours)
    start(daemons, tmp_path, theirs)
    record(tmp_path / "a", ours)
    assert await stop_left_behind("node-a", tmp_path / "a", keep=None) == ours
    assert daemons[ours].wait(timeout=5) is not None
    assert daemons[theirs].poll() is None
    assert not (tmp_path / "a" / wireguard.DIR / wireguard.INTERFACE_FILE).exists()


async def test_a_start_that_runs_the_same_device_keeps_its_wireguard_go(
        tmp_path: Path, daemons: dict[str, subprocess.Popen[bytes]]) -> None:
    ours = interface_name("node-a", tmp_path / "a")
    start(daemons, tmp_path, ours)
    record(tmp_path / "a", ours)
    assert await stop_left_behind("node-a", tmp_path / "a", keep=ours) is None
    assert daemons[ours].poll() is None


async def test_a_run_older_than_the_record_is_found_by_its_key_and_its_device_name(
        tmp_path: Path, daemons: dict[str, subprocess.Popen[bytes]]) -> None:
    ours = interface_name("node-a", tmp_path / "a")
    start(daemons, tmp_path, ours)
    (tmp_path / "a" / wireguard.DIR).mkdir(parents=True)
    (tmp_path / "a" / wireguard.DIR / "private.key").write_text("k\n")
    assert await stop_left_behind("node-a", tmp_path / "a", keep=None) == ours
    assert daemons[ours].wait(timeout=5) is not None


async def test_a_data_dir_that_never_ran_wireguard_stops_nothing(
        tmp_path: Path, daemons: dict[str, subprocess.Popen[bytes]]) -> None:
    ours = interface_name("node-a", tmp_path / "a")
    start(daemons, tmp_path, ours)  # as if: no key, no record, so not this data dir's
    assert await stop_left_behind("node-a", tmp_path / "a", keep=None) is None
    assert daemons[ours].poll() is None
