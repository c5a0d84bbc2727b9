"""kubectl logs and exec against a peer that is not the pod's node, proxied over the peer link.

Node C advertises a peer address nothing listens on, as a node behind NAT would: nobody
can dial it, and every connection to it is one C opened. Its pod's logs and exec reach
A's clients over those connections.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port, kubectl_binary
from tests.test_cluster import node_names, wait_for

pytestmark = pytest.mark.slow

POD = """
apiVersion: v1
kind: Pod
metadata: {name: ticker}
spec:
  nodeName: node-c
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo start; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; done"]
"""


def start_nat_cluster(tmp: Path) -> list[ShoalProcess]:
    a = ShoalProcess("node-a", tmp / "a", free_port(), tmp / "a.log")
    a.start()
    nodes = [a]
    try:
        token = subprocess.run(
            [str(VENV_BIN / "shoal"), "token", "create", "--uses", "10", "--data-dir", str(a.data_dir)],
            check=True, capture_output=True, text=True).stdout.strip()
        seed = (a.data_dir / "peer-address").read_text().strip()
        for name, extra in (("node-b", []),
                            ("node-c", ["--peer-advertise", f"127.0.0.1:{free_port()}"])):
            n = ShoalProcess(name, tmp / name, free_port(), tmp / f"{name}.log")
            nodes.append(n)
            n.start(["--join", seed, "--token", token, *extra])
    except BaseException:
        for n in nodes:
            n.stop()
        raise
    return nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ShoalProcess]]:
    nodes = start_nat_cluster(tmp_path_factory.mktemp("proxy"))
    try:
        want = {n.name for n in nodes}
        wait_for(lambda: node_names(nodes[0]) == want, 30, "node-a to see every node")
        a = nodes[0]
        a.kubectl("apply", "-f", "-", input=POD)

        def running() -> bool:
            r = a.kubectl("get", "pod", "ticker", "-o", "json", check=False)
            return r.returncode == 0 and json.loads(r.stdout).get("status", {}).get(
                "phase") == "Running"

        wait_for(running, 30, "the pod on node-c to run")
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_logs_through_another_peer(cluster: list[ShoalProcess]) -> None:
    a = cluster[0]
    out = a.kubectl("logs", "ticker").stdout
    assert out.startswith("start\n"), out
    tail = a.kubectl("logs", "ticker", "--tail=2").stdout
    lines = tail.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("tick "), tail
    assert a.kubectl("logs", "ticker", "--since=1h").stdout.startswith("start\n")


def test_logs_follow_sees_new_lines(cluster: list[ShoalProcess]) -> None:
    a = cluster[0]
    last = int(a.kubectl("logs", "ticker", "--tail=1").stdout.split()[-1])
    follow = subprocess.Popen(
        [kubectl_binary(), "--kubeconfig", str(a.kubeconfig), "logs", "-f", "ticker",
         "--tail=1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert follow.stdout is not None
        deadline = time.monotonic() + 10
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = follow.stdout.readline()
            seen.append(line)
            if line.startswith("tick ") and int(line.split()[1]) > last + 1:
                break
        else:
            raise AssertionError(seen)
    finally:
        follow.terminate()
        follow.wait(timeout=10)


def test_exec_through_another_peer(cluster: list[ShoalProcess]) -> None:
    a = cluster[0]
    r = a.kubectl("exec", "ticker", "--", "echo", "hi")
    assert r.stdout == "hi\n"
    r = a.kubectl("exec", "ticker", "--", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3, (r.stdout, r.stderr)
    r = a.kubectl("exec", "-i", "ticker", "--", "cat", input="from stdin\n")
    assert r.stdout == "from stdin\n"
    r = a.kubectl("exec", "ticker", "--", "sh", "-c", "echo oops >&2")
    assert r.stderr == "oops\n"
    big = "x" * 3_000_000 + "\n"  # several flow-control windows each way
    r = a.kubectl("exec", "-i", "ticker", "--", "cat", input=big)
    assert r.stdout == big
    r = a.kubectl("exec", "ticker", "-c", "nope", "--", "true", check=False)
    assert r.returncode != 0 and "not valid" in r.stderr, r.stderr


def test_exec_with_a_terminal_through_another_peer(cluster: list[ShoalProcess]) -> None:
    a = cluster[0]
    cmd = (f"stty cols 100 rows 30; {kubectl_binary()} --kubeconfig {a.kubeconfig} "
           "exec -it ticker -- sh")
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], input="stty size\nexit 7\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 7 and "30 100" in r.stdout, (r.stdout, r.stderr)


def test_proxied_exec_latency(cluster: list[ShoalProcess]) -> None:
    a, _, c = cluster

    def median(node: ShoalProcess) -> float:
        times = []
        for _ in range(8):
            t0 = time.perf_counter()
            node.kubectl("exec", "ticker", "--", "true")
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    local, proxied = median(c), median(a)
    print(f"\nkubectl exec -- true: local {local * 1000:.0f} ms, proxied {proxied * 1000:.0f} ms, "
          f"added {(proxied - local) * 1000:.0f} ms (median of 8)")
    assert proxied - local < 0.5


def test_python_client_port_forward_through_another_peer(cluster: list[ShoalProcess]) -> None:
    import contextlib

    from kubernetes import client, config
    from kubernetes.stream import portforward

    a = cluster[0]
    port = free_port()
    a.kubectl("apply", "-f", "-", input=POD.replace("ticker", "srv").replace(
        '["sh", "-c", "echo start; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; '
        'done"]', f'["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]'))
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(a.kubeconfig), client_configuration=cfg)
    data = b""
    with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # the pod must start and the server listen
            with contextlib.suppress(Exception):
                pf = portforward(core.connect_get_namespaced_pod_portforward, "srv", "default",
                                 ports=str(port))
                sock = pf.socket(port)
                sock.settimeout(5)
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                with contextlib.suppress(OSError):
                    while chunk := sock.recv(65536):
                        data += chunk
                sock.close()
            if data.startswith(b"HTTP/1.0 200"):
                break
            time.sleep(0.3)
    assert data.startswith(b"HTTP/1.0 200"), data


def _kubectl_port_forward(node: ShoalProcess, pod: str, remote: int) -> bytes:
    """Run ``kubectl port-forward`` and fetch / through it (retrying while the pod starts)."""
    import socket

    local = free_port()
    pf = subprocess.Popen(
        [kubectl_binary(), "--kubeconfig", str(node.kubeconfig), "port-forward", pod,
         f"{local}:{remote}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    data = b""
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not data.startswith(b"HTTP/1.0 200"):
            time.sleep(0.3)
            try:
                with socket.create_connection(("127.0.0.1", local), timeout=5) as sock:
                    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
            except OSError:
                data = b""
    finally:
        pf.terminate()
        _, err = pf.communicate(timeout=10)
    assert data.startswith(b"HTTP/1.0 200"), (data, err)
    return data


def test_kubectl_port_forward_locally_and_through_another_peer(
        cluster: list[ShoalProcess]) -> None:
    a, _, c = cluster
    port = free_port()
    a.kubectl("apply", "-f", "-", input=POD.replace("ticker", "pf").replace(
        '["sh", "-c", "echo start; i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.3; '
        'done"]', f'["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]'))
    wait_for(lambda: '"Running"' in c.kubectl("get", "pod", "pf", "-o", "json",
                                              check=False).stdout, 20, "pf to run")
    _kubectl_port_forward(c, "pf", port)  # the pod's own node
    _kubectl_port_forward(a, "pf", port)  # proxied to node-c


def test_an_unreachable_pod_node_is_503_at_once(cluster: list[ShoalProcess]) -> None:
    a, _, c = cluster
    c.stop()
    t0 = time.monotonic()
    r = a.kubectl("logs", "ticker", check=False)
    took = time.monotonic() - t0
    assert r.returncode != 0 and "ServiceUnavailable" in r.stderr, r.stderr
    assert 'node "node-c"' in r.stderr, r.stderr
    r = a.kubectl("exec", "ticker", "--", "true", check=False)
    assert r.returncode != 0 and "unreachable" in r.stderr, r.stderr
    assert took < 5, took
