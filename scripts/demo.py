"""`make demo`: start a Shoal node on loopback, deploy the sample app, and show it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"shoal server exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"shoal server did not start:\n{log.read_text()}")


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m", flush=True)


def run(cmd: list[str], kubeconfig: Path) -> None:
    shown = " ".join(["kubectl", *cmd])
    print(f"$ {shown}", flush=True)
    subprocess.run([str(BIN / "kubectl"), "--kubeconfig", str(kubeconfig), *cmd], check=False)


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="shoal-demo-"))
    data = work / "node-1"
    port = free_port(6443)
    log = work / "node-1.log"
    step(f"starting node-1 (data in {data}, API on https://127.0.0.1:{port})")
    with open(log, "wb") as lf:
        proc = subprocess.Popen(
            [str(BIN / "shoal"), "server", "--name", "node-1", "--data-dir", str(data),
             "--api-port", str(port)],
            stdout=lf, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        url = f"https://127.0.0.1:{port}"
        wait_ready(url, proc, log)
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_bytes(subprocess.run(
            [str(BIN / "shoal"), "kubeconfig", "--data-dir", str(data), "--server", url],
            check=True, capture_output=True).stdout)
        print(f"kubeconfig: {kubeconfig}")
        print(f"try:        {BIN / 'kubectl'} --kubeconfig {kubeconfig} get all -A")
        step("the node serves the Kubernetes API")
        run(["get", "nodes", "-o", "wide"], kubeconfig)
        run(["get", "namespaces"], kubeconfig)
        step("deploying the sample app")
        run(["apply", "-f", str(ROOT / "examples" / "app.yaml")], kubeconfig)
        run(["get", "deployments,services,configmaps", "-l", "app=hello"], kubeconfig)
        step("scaling, labelling and reading it back")
        run(["scale", "deployment/hello", "--replicas=5"], kubeconfig)
        run(["label", "deployment/hello", "tier=edge"], kubeconfig)
        run(["get", "deployment", "hello", "-o",
             "jsonpath={.metadata.name} replicas={.spec.replicas} "
             "labels={.metadata.labels} generation={.metadata.generation}{\"\\n\"}"], kubeconfig)
        step("kill -9 the node, start it again: every acknowledged write is still there")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        print(f"node-1 (pid {proc.pid}) killed with SIGKILL")
        with open(log, "ab") as lf:
            proc = subprocess.Popen(
                [str(BIN / "shoal"), "server", "--name", "node-1", "--data-dir", str(data),
                 "--api-port", str(port)],
                stdout=lf, stderr=subprocess.STDOUT, start_new_session=True,
            )
        wait_ready(url, proc, log)
        run(["get", "deployment", "hello", "-o",
             "jsonpath={.metadata.name} replicas={.spec.replicas} labels={.metadata.labels}"
             "{\"\\n\"}"], kubeconfig)
        print("\nThe pods themselves are scheduled and run once the controllers and the node "
              "agent land (issues 4 and 5); this node stores and serves the objects today.")
        if sys.stdin.isatty() and os.environ.get("CI") is None:
            step("node-1 keeps running; press Ctrl-C to stop it")
            with contextlib.suppress(KeyboardInterrupt):
                proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        if os.environ.get("SHOAL_DEMO_KEEP") is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
