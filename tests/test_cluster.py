"""Several real ``shoal server`` processes on loopback form one cluster with no leader."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port, kubectl_binary

pytestmark = pytest.mark.slow


def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_cluster(tmp: Path, n: int) -> list[ShoalProcess]:
    first = ShoalProcess("node-a", tmp / "a", free_port(), tmp / "a.log")
    first.start()
    nodes = [first]
    token = subprocess.run(
        [str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir", str(first.data_dir)],
        check=True, capture_output=True, text=True).stdout.strip()
    seed = (first.data_dir / "peer-address").read_text().strip()
    for i in range(1, n):
        name = f"node-{chr(ord('a') + i)}"
        node = ShoalProcess(name, tmp / name, free_port(), tmp / f"{name}.log")
        node.start(["--join", seed, "--token", token])
        nodes.append(node)
    return nodes


def node_names(node: ShoalProcess) -> set[str]:
    r = node.kubectl("get", "nodes", "-o", "json", check=False)
    if r.returncode != 0:
        return set()
    return {i["metadata"]["name"] for i in json.loads(r.stdout)["items"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ShoalProcess]]:
    nodes = start_cluster(tmp_path_factory.mktemp("cluster"), 3)
    try:
        want = {n.name for n in nodes}
        for n in nodes:
            wait_for(lambda n=n: node_names(n) == want, 30, f"{n.name} to see every node")
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_every_peer_lists_every_node(cluster: list[ShoalProcess]) -> None:
    for n in cluster:
        out = n.kubectl("get", "nodes").stdout
        assert all(m.name in out for m in cluster)


def test_a_write_on_one_peer_reaches_a_watch_on_another(cluster: list[ShoalProcess]) -> None:
    a, _, c = cluster
    proc = subprocess.Popen(
        [kubectl_binary(), "--kubeconfig", str(c.kubeconfig), "get", "configmaps", "-w",
         "-o", "name"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        a.kubectl("create", "configmap", "from-a", "--from-literal=k=v")
        lines: list[str] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if "from-a" in line:
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout=15)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert any("configmap/from-a" in line for line in lines), lines


def test_the_same_kubeconfig_works_against_every_peer(cluster: list[ShoalProcess]) -> None:
    a = cluster[0]
    for n in cluster[1:]:
        r = subprocess.run(
            [kubectl_binary(), "--kubeconfig", str(a.kubeconfig), "--server", n.url,
             "get", "namespaces"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "kube-system" in r.stdout


def test_writes_on_every_peer_converge_to_identical_replicas(cluster: list[ShoalProcess]) -> None:
    for i, n in enumerate(cluster):
        n.kubectl("apply", "-f", "-", input=(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: shared\n"
            f"  labels:\n    from-{n.name}: 'yes'\ndata:\n  k{i}: v{i}\n"))

    def views() -> list[str]:
        out = []
        for n in cluster:
            r = n.kubectl("get", "configmap", "shared", "-o", "json", check=False)
            if r.returncode != 0:
                return ["missing"]
            obj = json.loads(r.stdout)
            out.append(json.dumps({"labels": obj["metadata"].get("labels"),
                                   "data": obj.get("data"), "uid": obj["metadata"]["uid"]},
                                  sort_keys=True))
        return out

    wait_for(lambda: len(set(views())) == 1, 20, "the replicas to agree")
    merged = json.loads(views()[0])
    assert len(merged["labels"]) >= 1


def test_a_peer_killed_during_a_write_stream_converges_after_restart(
    cluster: list[ShoalProcess],
) -> None:
    a, b, _ = cluster
    for i in range(20):
        a.kubectl("create", "configmap", f"stream-{i}")
        if i == 8:
            b.kill9()
    b.start()
    want = {f"stream-{i}" for i in range(20)}

    def b_has_all() -> bool:
        r = b.kubectl("get", "configmaps", "-o", "json", check=False)
        if r.returncode != 0:
            return False
        return want <= {i["metadata"]["name"] for i in json.loads(r.stdout)["items"]}

    wait_for(b_has_all, 30, "the restarted peer to catch up")


def test_a_deployment_spreads_over_the_peers_and_runs(cluster: list[ShoalProcess]) -> None:
    a, b, c = cluster
    a.kubectl("create", "deployment", "spread", "--image=busybox:1.36", "--replicas=6",
              "--", "sh", "-c", "while true; do sleep 1; done")
    a.kubectl("rollout", "status", "deployment/spread", "--timeout=60s", timeout=90)
    pods = json.loads(c.kubectl("get", "pods", "-l", "app=spread", "-o", "json").stdout)["items"]
    assert len(pods) == 6
    assert all(p["status"]["phase"] == "Running" for p in pods)
    per_node: dict[str, int] = {}
    for p in pods:
        per_node[p["spec"]["nodeName"]] = per_node.get(p["spec"]["nodeName"], 0) + 1
    assert per_node == {a.name: 2, b.name: 2, c.name: 2}, per_node


def test_a_restarted_peer_rejoins_from_its_saved_member_list_when_its_seed_is_down(
    tmp_path: Path,
) -> None:
    a, b, c = start_cluster(tmp_path, 3)
    try:
        names = {a.name, b.name, c.name}
        wait_for(lambda: node_names(c) == names, 30, "c to see everyone")
        time.sleep(1.5)  # the member list is saved a second after it changes
        a.stop()  # a was c's only seed
        c.stop()
        c.start()
        b.kubectl("create", "configmap", "after-restart")
        wait_for(lambda: "after-restart" in c.kubectl("get", "configmaps").stdout, 30,
                 "c to replicate from b without its seed")
    finally:
        for n in (a, b, c):
            n.stop()


def test_a_deployment_survives_kill_9_of_a_peer_and_trims_back_when_it_returns(
    tmp_path: Path,
) -> None:
    fast = ["--heartbeat-interval", "1s", "--node-monitor-grace-period", "3s",
            "--pod-eviction-timeout", "3s"]
    first = ShoalProcess("node-a", tmp_path / "a", free_port(), tmp_path / "a.log")
    first.start(fast)
    token = subprocess.run([str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir",
                            str(first.data_dir)], check=True, capture_output=True,
                           text=True).stdout.strip()
    seed = (first.data_dir / "peer-address").read_text().strip()
    nodes = [first]
    for name in ("node-b", "node-c"):
        n = ShoalProcess(name, tmp_path / name, free_port(), tmp_path / f"{name}.log")
        n.start([*fast, "--join", seed, "--token", token])
        nodes.append(n)
    a, _, c = nodes
    try:
        wait_for(lambda: node_names(a) == {"node-a", "node-b", "node-c"}, 30, "membership")

        def running() -> dict[str, list[str]]:
            r = a.kubectl("get", "pods", "-l", "app=ten", "-o", "json", check=False)
            out: dict[str, list[str]] = {}
            for p in json.loads(r.stdout or '{"items": []}')["items"]:
                if p["metadata"].get("deletionTimestamp"):
                    continue
                if (p.get("status") or {}).get("phase") == "Running":
                    out.setdefault(p["spec"]["nodeName"], []).append(p["metadata"]["name"])
            return out

        a.kubectl("create", "deployment", "ten", "--image=busybox:1.36", "--replicas=10",
                  "--", "sh", "-c", "while true; do sleep 1; done")
        wait_for(lambda: sum(map(len, running().values())) == 10, 60, "10 running pods")
        before = running()
        assert set(before) == {"node-a", "node-b", "node-c"}
        survivors = before["node-a"] + before["node-b"]
        c.kill9()
        wait_for(lambda: sum(len(v) for k, v in running().items() if k != "node-c") == 10, 60,
                 "replacements on the surviving peers")
        c.start(fast)
        wait_for(lambda: "NotReady" not in a.kubectl("get", "nodes").stdout, 30, "c Ready again")

        def settled() -> bool:
            r = running()
            total = sum(map(len, r.values()))
            pods = json.loads(a.kubectl("get", "pods", "-l", "app=ten", "-o", "json").stdout)
            return total == 10 and len(pods["items"]) == 10

        wait_for(settled, 60, "the trim back to 10")
        after = [n for v in running().values() for n in v]
        assert set(survivors) <= set(after), "the pods that never stopped were kept"
    finally:
        for n in nodes:
            n.stop()
