"""kubectl top nodes and kubectl top pods from any peer (metrics.k8s.io)."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_cluster import wait_for

# Starts real `shoal server` processes: run one at a time (make test), not on xdist workers.
pytestmark = pytest.mark.slow

SPIN = """
apiVersion: v1
kind: Pod
metadata: {name: spin, labels: {app: spin}}
spec:
  nodeName: node-1
  containers:
  - name: busy
    image: busybox
    command: ["sh", "-c", "while :; do :; done"]
"""


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ShoalProcess, ShoalProcess]]:
    d = tmp_path_factory.mktemp("top")
    first = ShoalProcess("node-1", d / "n1", free_port(), d / "n1.log")
    second = ShoalProcess("node-2", d / "n2", free_port(), d / "n2.log")
    try:
        first.start()
        token = subprocess.run(
            [str(VENV_BIN / "shoal"), "token", "create", "--data-dir", str(first.data_dir)],
            check=True, capture_output=True, text=True).stdout.strip()
        peer = (first.data_dir / "peer-address").read_text().strip()
        second.start(["--join", peer, "--token", token])
        wait_for(lambda: len(json.loads(second.kubectl("get", "nodes", "-o", "json").stdout)
                             ["items"]) == 2, 30, "both nodes")
        yield first, second
    finally:
        second.stop()
        first.stop()


def test_discovery_lists_the_metrics_group(pair: tuple[ShoalProcess, ShoalProcess]) -> None:
    _, second = pair
    out = second.kubectl("api-resources", "--api-group=metrics.k8s.io", "-o", "name").stdout
    assert set(out.split()) == {"nodes.metrics.k8s.io", "pods.metrics.k8s.io"}


def test_kubectl_top_nodes_shows_every_node_from_either_peer(
        pair: tuple[ShoalProcess, ShoalProcess]) -> None:
    for node in pair:
        def both(node: ShoalProcess = node) -> bool:
            r = node.kubectl("top", "nodes", "--no-headers", check=False)
            # kubectl lists a node it got no figures for as <unknown>: a peer that has just
            # joined is not reachable for its report yet, and a miss is cached for seconds.
            return r.returncode == 0 and {line.split()[0] for line in r.stdout.splitlines()} \
                == {"node-1", "node-2"} and "<unknown>" not in r.stdout
        wait_for(both, 30, f"kubectl top nodes on {node.name}")
    one = pair[0].kubectl("top", "node", "node-2", "--no-headers").stdout.split()
    assert one[0] == "node-2" and one[1].endswith("m") and one[3].endswith("Mi")


def test_kubectl_top_pods_on_another_peer_reads_the_pods_node(
        pair: tuple[ShoalProcess, ShoalProcess]) -> None:
    first, second = pair
    second.kubectl("apply", "-f", "-", input=SPIN)
    try:
        def busy() -> bool:
            r = second.kubectl("top", "pods", "-l", "app=spin", "--containers", "--no-headers",
                               check=False)
            if r.returncode != 0 or not r.stdout.strip():
                return False
            pod, container, cpu, _memory = r.stdout.split()[:4]
            return pod == "spin" and container == "busy" and cpu.endswith("m") \
                and int(cpu[:-1]) >= 100  # a spinning shell uses most of a core
        wait_for(busy, 60, "kubectl top pods on node-2 to show node-1's busy pod")
        everywhere = second.kubectl("top", "pods", "-A", "--no-headers").stdout
        assert any(line.split()[:2] == ["default", "spin"] for line in everywhere.splitlines())
        raw = json.loads(second.kubectl(
            "get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/spin").stdout)
        assert raw["kind"] == "PodMetrics" and raw["containers"][0]["name"] == "busy"
        missing = second.kubectl("get", "--raw",
                                 "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
                                 check=False)
        assert missing.returncode != 0 and "NotFound" in missing.stderr + missing.stdout
        metrics = first.kubectl("get", "--raw", "/metrics").stdout
        starts = [line for line in metrics.splitlines()
                  if line.startswith("shoal_pod_container_starts_total ")]
        assert starts and float(starts[0].split()[1]) >= 1, "node-1 counted the start"
    finally:
        first.kubectl("delete", "pod", "spin", "--grace-period=0", "--force", check=False)



def _get(node: ShoalProcess, path: str, token: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    req = urllib.request.Request(node.url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def test_the_view_role_may_read_pod_metrics_as_with_metrics_server(
        pair: tuple[ShoalProcess, ShoalProcess]) -> None:
    first, _ = pair
    first.kubectl("create", "serviceaccount", "viewer")
    token = first.kubectl("create", "token", "viewer").stdout.strip()
    path = "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"
    assert _get(first, path, token) == 403
    first.kubectl("create", "rolebinding", "viewer", "--clusterrole=view",
                  "--serviceaccount=default:viewer")
    wait_for(lambda: _get(first, path, token) == 200, 15, "view to include pod metrics")
    assert _get(first, "/apis/metrics.k8s.io/v1beta1/nodes", token) == 403, \
        "a namespace's view does not reach cluster-scoped node metrics"
