"""Pods on a real ``shoal server`` with the process runtime, driven by real kubectl.

Decision recorded here and in docs/api-coverage.md: the process runtime's pods do
not outlive a kill -9 of their node. Their output pipes lead to the dead agent, so
the restarted agent kills whatever is left (it finds them by a marker in their
environment) and starts the pods again from its local replica, counting a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import ShoalProcess, kubectl_binary

pytestmark = pytest.mark.slow

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: node-1
  terminationGracePeriodSeconds: {grace}
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "{script}"]
"""


def apply_pod(node: ShoalProcess, name: str, script: str, grace: int = 5) -> None:
    node.kubectl("apply", "-f", "-", input=POD.format(name=name, script=script, grace=grace))


def get_pod(node: ShoalProcess, name: str) -> dict[str, Any]:
    return dict(json.loads(node.kubectl("get", "pod", name, "-o", "json").stdout))


def wait_for(node: ShoalProcess, name: str, pred: Any, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pod = get_pod(node, name)
        if pred(pod):
            return pod
        time.sleep(0.1)
    raise AssertionError(f"timed out: {json.dumps(pod.get('status'), indent=1)}")


def running_ready(pod: dict[str, Any]) -> bool:
    st = pod.get("status") or {}
    return st.get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions") or [])


def test_pod_runs_logs_exec_and_graceful_delete(shoal: ShoalProcess) -> None:
    apply_pod(shoal, "web", "echo started; trap 'echo bye; exit 0' TERM; "
                            "while true; do sleep 0.1; done")
    t0 = time.monotonic()
    pod = wait_for(shoal, "web", running_ready)
    assert time.monotonic() - t0 < 5
    assert pod["status"]["podIP"] == "127.0.0.1"
    assert "Running" in shoal.kubectl("get", "pod", "web").stdout

    assert shoal.kubectl("logs", "web").stdout == "started\n"
    assert shoal.kubectl("logs", "web", "-c", "main", "--tail=1", "--timestamps").stdout \
        .endswith("Z started\n")
    assert shoal.kubectl("logs", "web", "--since=1h").stdout == "started\n"

    r = shoal.kubectl("exec", "web", "--", "echo", "hi")
    assert r.stdout == "hi\n"
    r = shoal.kubectl("exec", "web", "--", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3, (r.stdout, r.stderr)
    r = shoal.kubectl("exec", "-i", "web", "--", "cat", input="from stdin\n")
    assert r.stdout == "from stdin\n"
    r = shoal.kubectl("exec", "web", "--", "sh", "-c", "echo oops >&2")
    assert r.stderr == "oops\n"
    # Interactive with a terminal (script gives kubectl one): resize and exit code get through.
    cmd = f"stty cols 100 rows 30; {kubectl_binary()} --kubeconfig {shoal.kubeconfig} exec -it web -- sh"
    r = subprocess.run(["script", "-qec", cmd, "/dev/null"], input="stty size\nexit 7\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 7 and "30 100" in r.stdout, (r.stdout, r.stderr)

    # kubectl logs -f follows until the container ends: start it, then delete the pod.
    follow = subprocess.Popen(
        [kubectl_binary(), "--kubeconfig", str(shoal.kubeconfig), "logs", "-f", "web"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    shoal.kubectl("delete", "pod", "web", "--wait=true")
    assert time.monotonic() - t0 < 5
    out, _ = follow.communicate(timeout=10)
    assert out == "started\nbye\n"
    r = shoal.kubectl("get", "pod", "web", check=False)
    assert "NotFound" in r.stderr


def test_delete_waits_for_the_grace_period(shoal: ShoalProcess) -> None:
    shoal.kubectl("apply", "-f", "-", input=POD.format(name="away", script="true", grace=1)
                  .replace("nodeName: node-1", "nodeName: node-2"))
    r = shoal.kubectl("logs", "away", check=False)
    assert r.returncode != 0 and 'runs on node "node-2"' in r.stderr, r.stderr
    shoal.kubectl("delete", "pod", "away", "--wait=false")  # no such node: deleted at once
    assert "NotFound" in shoal.kubectl("get", "pod", "away", check=False).stderr
    apply_pod(shoal, "stubborn", "trap '' TERM; while true; do sleep 0.1; done", grace=2)
    wait_for(shoal, "stubborn", running_ready)
    t0 = time.monotonic()
    shoal.kubectl("delete", "pod", "stubborn")
    took = time.monotonic() - t0
    assert 1.8 <= took < 6, took
    apply_pod(shoal, "forced", "trap '' TERM; while true; do sleep 0.1; done", grace=30)
    wait_for(shoal, "forced", running_ready)
    t0 = time.monotonic()
    shoal.kubectl("delete", "pod", "forced", "--force", "--grace-period=0")
    assert time.monotonic() - t0 < 3


def test_offline_reboot_brings_the_pod_back(shoal: ShoalProcess) -> None:
    apply_pod(shoal, "survivor", "echo up; sleep 60")
    pod = wait_for(shoal, "survivor", running_ready)
    first_id = pod["status"]["containerStatuses"][0]["containerID"]
    pids = _pids_of(shoal)
    assert pids
    shoal.kill9()
    t0 = time.monotonic()
    shoal.start()
    pod = wait_for(shoal, "survivor", lambda p: running_ready(p) and p["status"][
        "containerStatuses"][0]["containerID"] != first_id)
    assert time.monotonic() - t0 < 10
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 1
    for pid in pids:  # the old processes were killed by the restarted agent
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
    assert shoal.kubectl("logs", "survivor").stdout == "up\n"
    assert shoal.kubectl("logs", "survivor", "--previous").stdout == "up\n"


def _pids_of(node: ShoalProcess) -> list[int]:
    # --- at rest: pods carry an opaque marker, not the data dir ---
    from shoal.node.runtime_process import MARKER_ENV, node_marker

    marker = f"{MARKER_ENV}={node_marker(node.data_dir)}".encode()
    # --- end at rest ---
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    out.append(int(pid))
        except OSError:
            continue
    return out


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except OSError:
        return True


def test_python_client_exec_with_a_tty_and_port_forward(shoal: ShoalProcess) -> None:
    from kubernetes import client, config
    from kubernetes.stream import portforward, stream

    from tests.conftest import free_port

    port = free_port()
    apply_pod(shoal, "srv", f"exec python3 -m http.server {port} --bind 127.0.0.1")
    wait_for(shoal, "srv", running_ready)
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(shoal.kubeconfig), client_configuration=cfg)
    with client.ApiClient(cfg) as api:
        core = client.CoreV1Api(api)
        out = stream(core.connect_get_namespaced_pod_exec, "srv", "default",
                     command=["sh", "-c", "tty; echo $TERM"], stdin=False, stdout=True,
                     stderr=True, tty=True)
        assert out.splitlines()[0].startswith("/dev/pts/"), out
        deadline = time.monotonic() + 5
        while True:  # the server needs a moment to listen
            pf = portforward(core.connect_get_namespaced_pod_portforward, "srv", "default",
                             ports=str(port))
            sock = pf.socket(port)
            sock.settimeout(5)
            data = b""
            with contextlib.suppress(OSError):  # not listening yet: the forward closes
                sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
                while chunk := sock.recv(65536):
                    data += chunk
            sock.close()
            if data.startswith(b"HTTP/1.0 200") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert data.startswith(b"HTTP/1.0 200"), (data, pf.error(port))
