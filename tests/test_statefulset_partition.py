"""At most one under a real partition: three nodes in their own network namespaces, one cut
off long enough that each side judges the other's nodes unreachable and lost. Both sides
scale the StatefulSet up and one deletes a pod of the other side; no pod name ever runs on
two nodes, checked from both sides' pod lists and from the pods' processes themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ShoalProcess
from tests.test_cluster import wait_for
from tests.test_status_cli import start_three
from tests.tools import netns

pytestmark = pytest.mark.slow

STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  podManagementPolicy: Parallel
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox:1.36
        env:
        - {name: DB_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        - {name: DB_NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
        volumeMounts: [{name: data, mountPath: /nonexistent-shoal-test/data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
"""
FAST = ["--pod-network", "host", "--heartbeat-interval", "1s", "--node-monitor-grace-period", "3s",
        "--pod-eviction-timeout", "1s"]


def processes() -> dict[str, set[str]]:
    """Pod name -> the nodes whose pod processes run it (read from /proc: the truth)."""
    out: dict[str, set[str]] = defaultdict(set)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        pod, node = env.get(b"DB_POD"), env.get(b"DB_NODE")
        if pod and node:
            out[pod.decode()].add(node.decode())
    return out


def pods(node: ShoalProcess) -> dict[str, str] | None:
    """Pod name -> node, as this node's replica sees the pods that are not going."""
    try:
        r = node.kubectl("get", "pods", "-l", "app=db", "-o", "json", check=False, timeout=20)
    except subprocess.TimeoutExpired:  # a loaded machine: no sample this time
        return None
    if r.returncode != 0:
        return None
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "")
            for p in json.loads(r.stdout)["items"]}


def hung(nodes: list[ShoalProcess]) -> None:
    """On a failure: a node whose API no longer answers dumps its threads' stacks into its
    log (faulthandler, on SIGABRT), and the log's end is printed."""
    for n in nodes:
        if pods(n) is None and n.proc is not None and n.proc.poll() is None:
            os.kill(n.proc.pid, signal.SIGABRT)
            time.sleep(1)
            print(f"--- {n.name} did not answer; its log ends:\n",
                  "".join(n.log_path.read_text(errors="replace").splitlines(True)[-60:]))


@pytest.fixture
def lab() -> Iterator[netns.NetnsLab]:
    netns.require(need_iptables=True)
    with netns.NetnsLab() as the_lab:
        yield the_lab


def test_no_statefulset_pod_runs_on_two_nodes_across_a_real_partition(
        lab: netns.NetnsLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONFAULTHANDLER", "1")  # see hung() below
    nodes: list[ShoalProcess] = []
    doubles: list[tuple[float, str, set[str]]] = []

    def sample() -> None:
        for name, where in processes().items():
            if len(where) > 1:
                doubles.append((time.monotonic(), name, where))
        # Both sides' pod lists: a name bound to two nodes at once would run on both.
        views = [v for v in (pods(nodes[0]), pods(nodes[2])) if v]
        for name in set().union(*views):
            where = {v[name] for v in views if v.get(name)}
            if len(where) > 1:
                doubles.append((time.monotonic(), name, where))

    try:
        start_three(lab, tmp_path, nodes, FAST)
        a, _, c = nodes
        wait_for(lambda: len(json.loads(a.kubectl("get", "nodes", "-o", "json").stdout)[
            "items"]) == 3, 30, "three nodes")
        a.kubectl("apply", "-f", "-", input=STS)
        try:
            wait_for(lambda: sorted(processes()) == ["db-0", "db-1", "db-2"], 60, "3 pods running")
        except AssertionError:
            print(a.kubectl("get", "pods", "-o", "wide").stdout, dict(processes()))
            raise

        lab.cut(c.netns, mode="drop")  # c alone; a and b on the other side
        deadline = time.monotonic() + 5  # past the grace (3 s) and the eviction timeout (1 s)
        while time.monotonic() < deadline:
            sample()
            time.sleep(0.5)
        # Each side scales up (both want db-3 and db-4); a deletes a pod that runs on c.
        on_c = sorted(n for n, where in processes().items() if where == {c.name})
        a.kubectl("scale", "statefulset/db", "--replicas=5")
        c.kubectl("scale", "statefulset/db", "--replicas=5")
        if on_c:
            a.kubectl("delete", "pod", on_c[0], "--wait=false")
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            sample()
            time.sleep(0.5)
        if on_c:  # its deletion waits for c's agent: still there, nowhere else
            seen = next(v for v in iter(lambda: pods(a), "") if v is not None)
            assert on_c[0] in seen and processes().get(on_c[0]) == {c.name}, (seen, processes())

        lab.heal(c.netns)
        want = [f"db-{i}" for i in range(5)]

        def converged() -> bool:
            sample()
            running = processes()
            return sorted(running) == want and all(len(w) == 1 for w in running.values()) \
                and all(sorted(pods(n) or {}) == want for n in nodes)

        try:
            wait_for(converged, 90, "db-0..4 each running once, seen alike from every node")
        except AssertionError:
            print("processes:", dict(processes()), "pods:", [pods(n) for n in nodes])
            hung(nodes)
            raise
        assert doubles == [], doubles
    finally:
        for n in nodes:
            n.stop()
