"""A first join retries a seed that does not answer, and a killed join leaves nothing half-made."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shoal.cli import joining
from shoal.mesh import join
from shoal.mesh.pki import NodePKI
from shoal.mesh.transport import TransportError
from tests.conftest import VENV_BIN, ShoalProcess, free_port


def _wait_for(path: Path, text: str, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not {count} times in {path}: {path.read_text()[-2000:]}")


FAKE_TOKEN = "SHOAL1::sha256:" + "ab" * 32 + "::abcdef.0123456789abcdef\n"


def _start_join(data: Path, seed: str, token: Path, log: Path) -> subprocess.Popen[bytes]:
    """``shoal join`` through ``seed``, in a session of its own, logging to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "shoal"), "join", "--name", "joiner", "--data-dir", str(data),
             "--api-port", str(free_port()), "--peer-port", "0", "--join", seed,
             "--token-file", str(token), "--runtime", "process", "--pod-network", "host",
             "--proxy-mode", "none", "--dns-port", "0", "--no-bus"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow  # three servers
def test_a_join_killed_while_its_seed_is_down_leaves_nothing_and_a_rerun_joins(
        tmp_path: Path) -> None:
    seed_port = free_port()
    data = tmp_path / "joiner"
    token = tmp_path / "join.token"
    token.write_text(FAKE_TOKEN)
    log = tmp_path / "first.log"
    first = _start_join(data, f"127.0.0.1:{seed_port}", token, log)
    try:
        # It says so at every attempt, backing off: 1 s, then 2 s.
        _wait_for(log, f"join: cannot reach the seed 127.0.0.1:{seed_port}", 2)
        assert "retrying in 1s" in log.read_text() and "retrying in 2s" in log.read_text()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait()
    # No half-made node: no certificates, no replica (at most an empty staging dir).
    assert not (data / "pki").exists() and not (data / "state.db").exists()

    signer = ShoalProcess("signer", tmp_path / "signer", free_port(), tmp_path / "signer.log")
    signer.start(["--peer-port", str(seed_port)])
    joiner = ShoalProcess("joiner", data, free_port(), tmp_path / "second.log",
                          signer_data_dir=signer.data_dir)
    try:
        token.write_text(subprocess.run(
            [str(VENV_BIN / "shoal"), "token", "create", "--data-dir", str(signer.data_dir)],
            capture_output=True, text=True, check=True, timeout=60).stdout)
        joiner.start(["--join", f"127.0.0.1:{seed_port}", "--token-file", str(token)])
        assert not (data / "pki.joining").exists()
        nodes = joiner.kubectl("get", "nodes", "-o", "name").stdout.split()
        assert "node/joiner" in nodes
    finally:
        joiner.stop()
        signer.stop()


def test_a_join_stopped_while_retrying_removes_the_data_dir_it_made(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    token = tmp_path / "join.token"
    token.write_text(FAKE_TOKEN)
    log = tmp_path / "join.log"
    proc = _start_join(data, f"127.0.0.1:{free_port()}", token, log)
    try:
        _wait_for(log, "join: cannot reach the seed", 1)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "stopped while joining; nothing was kept" in log.read_text()
    assert not data.exists()


async def test_join_timeout_makes_the_last_attempt_at_the_limit_not_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    attempts: list[float] = []

    async def unreachable(*_: object) -> None:
        attempts.append(now[0])
        now[0] += 0.2  # each attempt takes a while to fail
        raise TransportError("connection refused")

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(join, "join_cluster", unreachable)
    with pytest.raises(join.JoinError, match="gave up after 3 attempts in 3s"):
        await joining.join_with_retry(NodePKI(tmp_path / "pki"), "n", ["127.0.0.1"],
                                      "192.0.2.1:7443", "t", give_up_after=3.0,
                                      sleep=sleep, clock=lambda: now[0])
    # 1 s, then a 2 s wait cut to 1.8 s so that the third attempt falls at the limit.
    assert attempts == pytest.approx([0.0, 1.2, 3.0])
    assert not (tmp_path / "pki").exists()
