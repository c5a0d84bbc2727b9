"""``kubectl drain`` on a real node: evictions through pods/eviction, held back by a budget.

One server for the module (process runtime). A Deployment of two pods is guarded by a
PodDisruptionBudget; an eviction the budget forbids is 429 with Kubernetes' message,
and drain evicts once the budget allows it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ShoalProcess, free_port

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox, command: ["sh", "-c", "sleep 3600"]}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: web}}
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShoalProcess]:
    d = tmp_path_factory.mktemp("drain")
    n = ShoalProcess("drain-1", d / "data", free_port(), d / "shoal.log")
    n.start()
    try:
        yield n
    finally:
        n.stop()


def until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError("timed out")


def get(node: ShoalProcess, *args: str) -> dict[str, object]:
    return json.loads(node.kubectl("get", *args, "-o", "json").stdout)  # type: ignore[no-any-return]


def pdb_status(node: ShoalProcess) -> dict[str, object]:
    return get(node, "pdb", "web").get("status") or {}  # type: ignore[return-value]


def test_drain_respects_the_budget_then_evicts(node: ShoalProcess) -> None:
    node.kubectl("apply", "-f", "-", input=APP)
    until(lambda: pdb_status(node).get("currentHealthy") == 2)
    st = pdb_status(node)
    assert (st["expectedPods"], st["desiredHealthy"], st["disruptionsAllowed"]) == (2, 2, 0)
    table = node.kubectl("get", "pdb").stdout
    assert table.split("\n")[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE",
                                            "ALLOWED", "DISRUPTIONS", "AGE"]
    assert table.split("\n")[1].split()[:4] == ["web", "2", "N/A", "0"]

    # The budget forbids any eviction: drain keeps retrying and gives up at its timeout.
    r = node.kubectl("drain", "drain-1", "--ignore-daemonsets", "--timeout", "2s", check=False)
    assert r.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in r.stderr
    pods = get(node, "pods", "-l", "app=web")["items"]
    assert len(pods) == 2  # type: ignore[arg-type]
    assert all(not p["metadata"].get("deletionTimestamp") for p in pods)  # type: ignore[index,union-attr]
    assert get(node, "node", "drain-1")["spec"].get("unschedulable") is True  # type: ignore[union-attr]

    # One disruption allowed: drain evicts both pods one at a time (replacements stay
    # pending on the cordoned node, so the second waits for the budget to recover).
    node.kubectl("patch", "pdb", "web", "--type", "merge", "-p", '{"spec":{"minAvailable":1}}')
    until(lambda: pdb_status(node).get("disruptionsAllowed") == 1)
    r = node.kubectl("drain", "drain-1", "--ignore-daemonsets", "--timeout", "3s", check=False)
    assert "evicting pod default/web-" in r.stderr + r.stdout
    assert "evicted" in r.stdout, r.stdout + r.stderr
    until(lambda: pdb_status(node).get("disruptionsAllowed") == 0)
    node.kubectl("uncordon", "drain-1")
