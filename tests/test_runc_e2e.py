"""Real OCI containers end to end: ``shoal server --runtime runc`` driven by real kubectl.

The image is built by the tests from busybox-static (tests/test_images.py) and either
imported with ``shoal image import`` while the node runs, or pushed to Debian's
``docker-registry`` on loopback and pulled. With ``CI=true`` a missing runc,
busybox-static or docker-registry fails these tests instead of skipping them
(``scripts/bootstrap-debian.sh`` installs all three).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port, kubectl_binary
from tests.test_images import Built, busybox_layer, push, registry, require, write_docker_save
from tests.test_runtime_runc import runc_works

pytestmark = pytest.mark.slow

__all__ = ["registry", "runc_works"]  # fixtures, used by name

IMAGE = "shoal.test/busybox:v1"

DEPLOYMENT = """
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {greeting: hello from a configmap}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 10
      volumes:
      - {name: cfg, configMap: {name: web-config}}
      - {name: scratch, emptyDir: {}}
      containers:
      - name: main
        image: %(image)s
        imagePullPolicy: %(policy)s
        command: ["sh", "-c"]
        args:
        - >-
          echo "started in $(pwd) as $(hostname): $(cat /etc/cfg/greeting)";
          touch /tmp/healthy /scratch/mark;
          trap 'echo bye; exit 0' TERM;
          while true; do sleep 0.1; done
        volumeMounts:
        - {name: cfg, mountPath: /etc/cfg}
        - {name: scratch, mountPath: /scratch}
        livenessProbe:
          exec: {command: ["test", "-e", "/tmp/healthy"]}
          periodSeconds: 1
          failureThreshold: 1
"""


def shoal_cli(*args: str) -> str:
    r = subprocess.run([str(VENV_BIN / "shoal"), *args], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def pods(node: ShoalProcess, selector: str = "app=web") -> list[dict[str, Any]]:
    out = node.kubectl("get", "pods", "-l", selector, "-o", "json").stdout
    return list(json.loads(out)["items"])


def running(p: dict[str, Any]) -> bool:
    st = p.get("status") or {}
    cs = (st.get("containerStatuses") or [{}])[0]
    return bool(st.get("phase") == "Running" and "running" in (cs.get("state") or {})
                and not p["metadata"].get("deletionTimestamp"))


def wait_pod(node: ShoalProcess, pred: Callable[[dict[str, Any]], bool], timeout: float = 20,
             selector: str = "app=web") -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        seen = pods(node, selector)
        for p in seen:
            if pred(p):
                return p
        time.sleep(0.1)
    raise AssertionError("timed out: " + json.dumps([p.get("status") for p in seen], indent=1)
                         + "\n" + node.log_path.read_text()[-3000:])


def runc_containers(node: ShoalProcess) -> list[str]:
    runc = require("runc", "runc")
    out = subprocess.run([runc, "--root", str(node.data_dir / "runc" / "state"), "list", "-q"],
                         capture_output=True, text=True, check=False).stdout
    return out.split()


@pytest.fixture
def runc_node(tmp_path: Path, runc_works: str) -> Iterator[ShoalProcess]:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start(["--runtime", "runc"])
    try:
        yield node
    finally:
        node.stop()


def test_a_deployment_runs_as_runc_containers_with_logs_exec_liveness_and_graceful_delete(
        tmp_path: Path, runc_node: ShoalProcess) -> None:
    node = runc_node
    archive = tmp_path / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], IMAGE)
    assert f"imported {IMAGE}" in shoal_cli("image", "import", "--data-dir",
                                            str(node.data_dir), str(archive))
    digest = dict(line.split("\t") for line in shoal_cli(
        "image", "ls", "--data-dir", str(node.data_dir)).splitlines())[IMAGE]

    t0 = time.monotonic()
    node.kubectl("apply", "-f", "-", input=DEPLOYMENT % {"image": IMAGE, "policy": "Never"})
    pod = wait_pod(node, running)
    print(f"\nFIGURE runc e2e: apply Deployment to pod Running {time.monotonic() - t0:.2f} s")
    name = pod["metadata"]["name"]
    cs = pod["status"]["containerStatuses"][0]
    assert cs["containerID"].startswith("runc://")
    assert cs["image"] == IMAGE
    assert cs["imageID"] == f"shoal.test/busybox@{digest}"
    assert "Running" in node.kubectl("get", "pods").stdout

    # The image's WorkingDir (no workingDir in the spec), the pod's hostname, the volumes.
    deadline = time.monotonic() + 5
    while not (logs := node.kubectl("logs", name).stdout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logs == f"started in /tmp as {name}: hello from a configmap\n"

    assert node.kubectl("exec", name, "--", "cat", "/proc/1/cmdline").stdout.startswith("sh\0")
    assert node.kubectl("exec", name, "--", "ls", "/scratch").stdout == "mark\n"
    r = node.kubectl("exec", name, "--", "sh", "-c", "echo ro > /etc/cfg/x", check=False)
    assert r.returncode != 0  # a configMap volume is read-only
    r = node.kubectl("exec", name, "--", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3
    r = node.kubectl("exec", "-i", name, "--", "cat", input="from stdin\n")
    assert r.stdout == "from stdin\n"
    # The host's files are not visible: the container has its own root.
    r = node.kubectl("exec", name, "--", "test", "-e", str(node.data_dir), check=False)
    assert r.returncode == 1

    # The liveness probe fails once the file is gone: the container is restarted.
    t0 = time.monotonic()
    node.kubectl("exec", name, "--", "busybox", "rm", "/tmp/healthy")
    pod = wait_pod(node, lambda p: p["metadata"]["name"] == name and running(p) and p["status"][
        "containerStatuses"][0]["restartCount"] == 1)
    print(f"FIGURE runc e2e: liveness failure to restarted and Running "
          f"{time.monotonic() - t0:.2f} s")
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert "failed liveness probe" in last["message"]
    assert last["exitCode"] == 0  # it heard SIGTERM and said bye
    assert node.kubectl("logs", name, "--previous").stdout.endswith("bye\n")
    assert len(runc_containers(node)) == 1

    # kubectl delete: SIGTERM, the trap runs, the container is gone well inside the grace.
    follow = subprocess.Popen(
        [kubectl_binary(), "--kubeconfig", str(node.kubeconfig), "logs", "-f", name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    t0 = time.monotonic()
    node.kubectl("delete", "deployment", "web")
    node.kubectl("delete", "pod", name, "--wait=true", check=False)
    took = time.monotonic() - t0
    out, _ = follow.communicate(timeout=15)
    print(f"FIGURE runc e2e: kubectl delete to container gone {took:.2f} s")
    assert out.endswith("bye\n"), out
    assert took < 5
    deadline = time.monotonic() + 10
    while (pods(node) or runc_containers(node)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pods(node) == [] and runc_containers(node) == []
    assert list((node.data_dir / "runc" / "bundles").iterdir()) == []


def test_a_pod_pulls_its_image_from_a_loopback_registry_if_not_present(
        runc_node: ShoalProcess, registry: str) -> None:
    node = runc_node
    img = Built([busybox_layer()], gzip_layers=True, cmd=["sh", "-c", "echo from the image cmd; "
                                                             "exec sleep 60"])
    push(registry, "shoal/e2e", "v1", img)
    image = f"{registry}/shoal/e2e:v1"
    t0 = time.monotonic()
    node.kubectl("run", "pulled", f"--image={image}", "--image-pull-policy=IfNotPresent",
                 "--labels=app=pulled")
    pod = wait_pod(node, running, selector="app=pulled")
    print(f"\nFIGURE runc e2e: kubectl run to Running, with a registry pull "
          f"{time.monotonic() - t0:.2f} s")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["imageID"] == f"{registry}/shoal/e2e@{img.digest}"
    deadline = time.monotonic() + 5
    while not (logs := node.kubectl("logs", "pulled").stdout) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logs == "from the image cmd\n"  # no command: the image's Cmd ran
    node.kubectl("delete", "pod", "pulled", "--grace-period=1")


POD_ON = """
apiVersion: v1
kind: Pod
metadata: {name: %(name)s, labels: {app: %(name)s}}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: "%(image)s", imagePullPolicy: IfNotPresent}
"""


def start_registry(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A docker-registry of the test's own, so the test can stop it."""
    import urllib.request

    exe = require("docker-registry", "docker-registry")
    port = free_port()
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {root / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(root / "config.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("docker-registry did not start")
            time.sleep(0.05)


def test_a_second_node_starts_a_pod_from_its_peers_blobs_when_the_registry_is_gone(
        tmp_path: Path, runc_works: str) -> None:
    reg_proc, reg = start_registry(tmp_path)
    # Two layers, one large, so blobs go in more than one chunk over the peer link.
    big = b"".join(i.to_bytes(4, "little") for i in range(3 << 20))  # 12 MiB, incompressible-ish
    from shoal.node.images import layer_tar

    img = Built([busybox_layer(), layer_tar([("data/big", big, 0o644)])],
                cmd=["sh", "-c", "wc -c < /data/big; exec sleep 60"])
    push(reg, "shoal/p2p", "v1", img)
    image = f"{reg}/shoal/p2p:v1"
    a = ShoalProcess("node-a", tmp_path / "a", free_port(), tmp_path / "a.log")
    b = ShoalProcess("node-b", tmp_path / "b", free_port(), tmp_path / "b.log")
    try:
        a.start(["--runtime", "runc"])
        token = shoal_cli("token", "create", "--data-dir", str(a.data_dir)).strip()
        seed = (a.data_dir / "peer-address").read_text().strip()
        b.start(["--runtime", "runc", "--join", seed, "--token", token])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            seen = [{n["metadata"]["name"] for n in json.loads(
                x.kubectl("get", "nodes", "-o", "json").stdout)["items"]} for x in (a, b)]
            if all(s == {"node-a", "node-b"} for s in seen):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the nodes do not see each other: {seen}")

        a.kubectl("apply", "-f", "-", input=POD_ON % {"name": "first", "node": "node-a",
                                                      "image": image})
        wait_pod(a, running, selector="app=first")
        reg_proc.terminate()
        reg_proc.wait(10)

        t0 = time.monotonic()
        a.kubectl("apply", "-f", "-", input=POD_ON % {"name": "second", "node": "node-b",
                                                      "image": image})
        pod = wait_pod(a, running, selector="app=second", timeout=30)
        took = time.monotonic() - t0
        print(f"\nFIGURE runc e2e: pod on a second node Running from its peer's blobs "
              f"({(len(big) >> 20)} MiB layer, registry stopped) {took:.2f} s")
        assert pod["status"]["containerStatuses"][0]["imageID"] == \
            f"{reg}/shoal/p2p@{img.digest}"
        deadline = time.monotonic() + 5
        while not (logs := b.kubectl("logs", "second").stdout) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert logs == f"{len(big)}\n"
        log_b = b.log_path.read_text()
        assert "from peer node-a" in log_b and "manifest" in log_b
        for name in ("first", "second"):
            a.kubectl("delete", "pod", name, "--grace-period=1", "--wait=false")
    finally:
        if reg_proc.poll() is None:
            reg_proc.kill()
            reg_proc.wait()
        b.stop()
        a.stop()
