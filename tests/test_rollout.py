"""kubectl rollout against a real node: status, history, undo, pause, resume, restart."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ShoalProcess

pytestmark = pytest.mark.slow

DEPLOY = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: roll
spec:
  replicas: 3
  strategy:
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  selector:
    matchLabels: {app: roll}
  template:
    metadata:
      labels: {app: roll}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: busybox:1.36
          command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
"""


def image(node: ShoalProcess) -> str:
    d = json.loads(node.kubectl("get", "deployment", "roll", "-o", "json").stdout)
    return str(d["spec"]["template"]["spec"]["containers"][0]["image"])


def running_images(node: ShoalProcess) -> set[str]:
    pods = json.loads(node.kubectl("get", "pods", "-l", "app=roll", "-o", "json").stdout)["items"]
    return {p["spec"]["containers"][0]["image"] for p in pods
            if not p["metadata"].get("deletionTimestamp")}


def test_a_rolling_update_completes_and_can_be_undone_paused_and_restarted(
    shoal: ShoalProcess,
) -> None:
    shoal.kubectl("apply", "-f", "-", input=DEPLOY)
    out = shoal.kubectl("rollout", "status", "deployment/roll", "--timeout=60s", timeout=90).stdout
    assert 'deployment "roll" successfully rolled out' in out
    shoal.kubectl("set", "image", "deployment/roll", "main=busybox:1.37")
    out = shoal.kubectl("rollout", "status", "deployment/roll", "--timeout=60s", timeout=90).stdout
    assert "successfully rolled out" in out
    assert running_images(shoal) == {"busybox:1.37"}
    history = shoal.kubectl("rollout", "history", "deployment/roll").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    shoal.kubectl("rollout", "undo", "deployment/roll")
    shoal.kubectl("rollout", "status", "deployment/roll", "--timeout=60s", timeout=90)
    assert image(shoal) == "busybox:1.36"
    assert running_images(shoal) == {"busybox:1.36"}
    shoal.kubectl("rollout", "pause", "deployment/roll")
    shoal.kubectl("set", "image", "deployment/roll", "main=busybox:1.38")
    assert running_images(shoal) == {"busybox:1.36"}, "a paused deployment does not roll"
    shoal.kubectl("rollout", "resume", "deployment/roll")
    shoal.kubectl("rollout", "status", "deployment/roll", "--timeout=60s", timeout=90)
    assert running_images(shoal) == {"busybox:1.38"}
    shoal.kubectl("rollout", "restart", "deployment/roll")
    out = shoal.kubectl("rollout", "status", "deployment/roll", "--timeout=60s", timeout=90).stdout
    assert "successfully rolled out" in out
