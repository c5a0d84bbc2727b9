"""The health port: the API's checks answered by a thread, however busy the loop is."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from shoal.api.health import HealthChecks, HealthServer


@pytest.fixture
def served() -> Iterator[tuple[HealthChecks, str]]:
    checks = HealthChecks()
    server = HealthServer(checks, "127.0.0.1", 0)
    server.poll_interval = 0.02
    port = server.start()
    try:
        yield checks, f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_health_port_answers_as_the_api_port_does(
        served: tuple[HealthChecks, str]) -> None:
    checks, base = served
    assert get(base + "/livez") == (200, "ok")
    assert get(base + "/readyz") == (200, "ok")
    checks.ready["caught-up"] = lambda: "not caught up with the mesh yet"
    status, text = get(base + "/readyz?verbose")
    assert status == 500 and "[-]caught-up failed: not caught up with the mesh yet" in text
    assert get(base + "/livez") == (200, "ok")  # liveness does not run readiness checks
    assert get(base + "/readyz?exclude=caught-up")[0] == 200
    assert get(base + "/readyz/caught-up")[0] == 500
    assert get(base + "/readyz/nope")[0] == 404
    assert get(base + "/api/v1/pods")[0] == 404


def test_readyz_is_answered_while_the_event_loop_thread_computes(
        served: tuple[HealthChecks, str]) -> None:
    _, base = served
    latencies: list[float] = []

    def probe() -> None:
        for _ in range(20):
            t0 = time.monotonic()
            assert get(base + "/readyz")[0] == 200
            latencies.append(time.monotonic() - t0)

    prober = threading.Thread(target=probe)
    prober.start()
    # This thread stands for an event loop busy with requests: pure Python, never idle.
    deadline = time.monotonic() + 10
    while prober.is_alive() and time.monotonic() < deadline:
        sum(i * i for i in range(10_000))
    prober.join()
    assert len(latencies) == 20
    assert sorted(latencies)[-2] < 0.5, latencies  # a few GIL switch intervals, not the loop
