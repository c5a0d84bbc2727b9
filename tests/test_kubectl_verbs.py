"""kubectl cp, proxy and attach on a two-node cluster, driven by real kubectl.

The pod runs on node-b. Each verb is tried through node-a, which reaches the pod over the
peer link, and through node-b, where the pod runs.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port, kubectl_binary
from tests.test_cluster import node_names, wait_for

pytestmark = pytest.mark.slow

HTTP_PORT = free_port()
TALKER = """
import select, sys
while True:
    r, _, _ = select.select([sys.stdin], [], [], 0.3)
    if not r:
        print("tick")
        continue
    line = sys.stdin.readline()
    if not line:
        break
    print("got", line.strip())
    print("err", line.strip(), file=sys.stderr)
"""
MANIFESTS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: box, labels: {{app: box}}}}
spec:
  nodeName: node-b
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo started; exec python3 -m http.server {HTTP_PORT} --bind 127.0.0.1"]
    ports: [{{name: web, containerPort: {HTTP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: box}}
spec:
  selector: {{app: box}}
  ports: [{{name: http, port: 80, targetPort: web}}]
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: node-b
  containers:
  - name: main
    image: busybox
    stdin: true
    stdinOnce: {str(name != "talker-py").lower()}
    command: ["python3", "-u", "-c", {json.dumps(TALKER)}]
""" for name in ("talker", "talker-local", "talker-py"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ShoalProcess]]:
    tmp = tmp_path_factory.mktemp("verbs")
    a = ShoalProcess("node-a", tmp / "a", free_port(), tmp / "a.log")
    a.start()
    nodes = [a]
    try:
        token = subprocess.run(
            [str(VENV_BIN / "shoal"), "token", "create", "--uses", "2", "--data-dir",
             str(a.data_dir)], check=True, capture_output=True, text=True).stdout.strip()
        seed = (a.data_dir / "peer-address").read_text().strip()
        b = ShoalProcess("node-b", tmp / "b", free_port(), tmp / "b.log")
        nodes.append(b)
        b.start(["--join", seed, "--token", token])
        wait_for(lambda: node_names(a) == {"node-a", "node-b"}, 30, "node-a to see node-b")
        a.kubectl("apply", "-f", "-", input=MANIFESTS)

        def ready() -> bool:
            r = a.kubectl("get", "pods", "-o", "json", check=False)
            pods = json.loads(r.stdout)["items"] if r.returncode == 0 else []
            return len(pods) == 4 and all(
                any(c["type"] == "Ready" and c["status"] == "True"
                    for c in p.get("status", {}).get("conditions") or []) for p in pods)

        wait_for(ready, 30, "the pods on node-b to be ready")
        yield nodes
    finally:
        for n in nodes:
            n.stop()


def test_kubectl_cp_copies_a_directory_into_a_pod_and_back(
        cluster: list[ShoalProcess], tmp_path: Path) -> None:
    a, b = cluster
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "note.txt").write_text("hello from the host\n")
    (src / "blob").write_bytes(bytes(range(256)) * 4096)  # 1 MiB, every byte value
    # Into the pod through the other peer, out of it through the pod's own node.
    a.kubectl("cp", str(src), "box:/tmp/w4-copied")
    r = b.kubectl("exec", "box", "--", "cat", "/tmp/w4-copied/sub/note.txt")
    assert r.stdout == "hello from the host\n"
    back = tmp_path / "back"
    b.kubectl("cp", "box:/tmp/w4-copied", str(back))
    assert (back / "blob").read_bytes() == (src / "blob").read_bytes()
    a.kubectl("cp", "box:/tmp/w4-copied/sub/note.txt", str(tmp_path / "one.txt"))
    assert (tmp_path / "one.txt").read_text() == "hello from the host\n"
    a.kubectl("cp", "box:/tmp/w4-not-there", str(tmp_path / "x"), check=False)
    assert not (tmp_path / "x").exists()
    # tar's complaint reaches the client through the other peer with its exit code. (Not
    # asserted on kubectl cp's own output: kubectl exits 0 when the empty archive ends,
    # racing its goroutine that copies tar's stderr; CI once saw nothing printed.)
    missing = a.kubectl("exec", "box", "--", "tar", "cf", "-", "/tmp/w4-not-there",
                        check=False)
    assert missing.returncode != 0
    assert "No such file" in missing.stderr


def test_pods_and_services_proxy_reach_the_pod_from_either_peer(
        cluster: list[ShoalProcess]) -> None:
    a, b = cluster
    for node in (a, b):
        for path in (f"pods/box:{HTTP_PORT}/proxy/", "pods/box:web/proxy/",
                     "services/box:http/proxy/", "services/box/proxy/?a=1"):
            r = node.kubectl("get", "--raw", f"/api/v1/namespaces/default/{path}")
            assert "Directory listing for /" in r.stdout, (node.name, path)
    # The pod answers 404 for a path it does not have: that is passed on, not turned into a 500.
    r = a.kubectl("get", "--raw", "/api/v1/namespaces/default/services/box/proxy/nothere",
                  check=False)
    assert r.returncode != 0 and "NotFound" in r.stderr
    # A port nothing listens on is a 503 from either peer, never a 500.
    for node in (a, b):
        r = node.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/box:1/proxy/",
                         check=False)
        assert "ServiceUnavailable" in r.stderr, (node.name, r.stderr)


def test_kubectl_proxy_forwards_to_a_service_on_another_node(
        cluster: list[ShoalProcess]) -> None:
    a = cluster[0]
    port = free_port()
    proc = subprocess.Popen([kubectl_binary(), "--kubeconfig", str(a.kubeconfig), "proxy",
                             f"--port={port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/namespaces/default/services/box:http/proxy/"
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    body = resp.read().decode()
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert resp.status == 200 and "Directory listing for /" in body
    finally:
        proc.kill()
        proc.wait()


def test_kubectl_attach_follows_the_output_through_either_peer(
        cluster: list[ShoalProcess]) -> None:
    for node in cluster:
        proc = subprocess.Popen([kubectl_binary(), "--kubeconfig", str(node.kubeconfig),
                                 "attach", "talker-py"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "tick\n", node.name  # written after it attached
        finally:
            proc.kill()
            proc.wait()
    # Detaching leaves the container running.
    pod = json.loads(cluster[0].kubectl("get", "pod", "talker-py", "-o", "json").stdout)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_kubectl_attach_i_feeds_the_container_stdin_locally_and_through_another_peer(
        cluster: list[ShoalProcess]) -> None:
    a, b = cluster
    for node, pod in ((a, "talker"), (b, "talker-local")):
        r = node.kubectl("attach", "-i", pod, input="hello\nworld\n", timeout=30)
        lines = [x for x in r.stdout.splitlines() if x != "tick"]
        assert lines == ["got hello", "got world"], (node.name, r.stdout)
        assert "err hello" in r.stderr and "err world" in r.stderr
    # stdinOnce: the session's end closed the container's stdin, so it exited (and restarts).
    wait_for(lambda: json.loads(a.kubectl("get", "pod", "talker", "-o", "json").stdout)[
        "status"]["containerStatuses"][0]["restartCount"] >= 1, 10, "talker to restart")


def test_kubectl_debug_adds_an_ephemeral_container_that_runs_once(
        cluster: list[ShoalProcess]) -> None:
    a, b = cluster
    a.kubectl("debug", "box", "--image=busybox", "-c", "dbg", "--",
              "sh", "-c", "echo debugging; sleep 0.5")

    def ended() -> bool:
        pod = json.loads(b.kubectl("get", "pod", "box", "-o", "json").stdout)
        st = (pod["status"].get("ephemeralContainerStatuses") or [{}])[0]
        return "terminated" in (st.get("state") or {})

    wait_for(ended, 15, "the ephemeral container to run and exit")
    assert a.kubectl("logs", "box", "-c", "dbg").stdout == "debugging\n"
    pod = json.loads(a.kubectl("get", "pod", "box", "-o", "json").stdout)
    st = pod["status"]["ephemeralContainerStatuses"][0]
    assert st["name"] == "dbg" and st["state"]["terminated"]["exitCode"] == 0
    assert st["restartCount"] == 0  # never restarted, unlike the pod's containers
    # Interactive, through the peer the pod does not run on: kubectl attaches to it.
    r = a.kubectl("debug", "-i", "box", "--image=busybox", "-c", "dbg2", "--",
                  "sh", "-c", "read l; echo got $l", input="line1\n", timeout=40)
    assert "got line1" in r.stdout
    # Ephemeral containers may be added, never removed.
    patch = json.dumps([{"op": "remove", "path": "/spec/ephemeralContainers/0"}])
    r = a.kubectl("patch", "pod", "box", "--subresource=ephemeralcontainers", "--type=json",
                  "-p", patch, check=False)
    assert r.returncode != 0 and "may not be removed" in r.stderr


def test_the_python_client_attaches_with_text_stdin_and_proxies_to_a_service(
        cluster: list[ShoalProcess]) -> None:
    from kubernetes import client, config
    from kubernetes.stream import stream

    cfg = client.Configuration()
    config.load_kube_config(config_file=str(cluster[0].kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        resp = stream(core.connect_get_namespaced_pod_attach, "talker-py", "default",
                      stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False)
        try:
            resp.write_stdin("from python\n")  # a text frame
            out = ""
            deadline = time.monotonic() + 10
            while "got from python" not in out and time.monotonic() < deadline:
                resp.update(timeout=1)
                out += resp.read_stdout()
            assert "got from python" in out
        finally:
            resp.close()
        body = core.connect_get_namespaced_service_proxy_with_path("box:http", "default",
                                                                   path="")
        assert "Directory listing for /" in body
