"""Footprint of one node: RSS idle and with 100 pods, time to serve, installed size.

One ``shoal server`` on loopback (process runtime). *Start to serving* is the time
from spawning the process to the first 200 from ``/readyz``, and the CPU time the
process used until then (steadier than wall time on a shared machine). RSS is the server
process's (pods are separate processes), idle a few seconds after start (with
its USS: what is not shared with other processes, such as library code), then
with 100 ``sleep`` pods Running (created through the API as in ``pod_startup``).

The installed size is that of a fresh venv holding only Shoal's runtime
dependencies (``pip install .`` of the commit, not of the working tree), with the
biggest entries named. It is built once per run under ``/tmp`` and its own
``shoal`` is the one measured, so the figures are those of a user's install, not
of the dev venv.
Goals (issue 11): RSS <= 60 MB with 100 pods; no ``kubernetes`` client installed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

from bench.api_single_node import Node, _free_port
from bench.pod_startup import measure

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
IDLE_SETTLE_S = 3.0


class FreshNode(Node):
    """A node started from a given ``shoal`` executable, timed until it serves."""

    def __init__(self, work: Path, shoal: Path) -> None:
        super().__init__(work)
        self.shoal = shoal
        self.start_to_serving_s = 0.0
        self.start_cpu_s = 0.0

    def start(self) -> None:
        log = open(self.work / "shoal.log", "wb")  # noqa: SIM115 - kept for the process's life
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [str(self.shoal), "server", "--name", "bench-1", "--data-dir", str(self.data),
             "--api-port", str(self.port), "--peer-port", str(_free_port()),
             "--log-level", "warning", "--runtime", "process", "--proxy-mode", "none"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            # Not the caller's PYTHONPATH: with src on it, the node ran the working tree's
            # code instead of the --ref commit installed in the fresh venv.
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, cwd=self.work,
        )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        deadline = t0 + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.work / "shoal.log").read_text()[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=1):
                    self.start_to_serving_s = time.monotonic() - t0
                    cpu = psutil.Process(self.proc.pid).cpu_times()
                    self.start_cpu_s = cpu.user + cpu.system
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("shoal did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p):
                total += os.stat(p).st_size
    return total


def fresh_venv(where: Path, ref: str) -> Path:
    """A venv with ``pip install .`` of commit ``ref`` (runtime dependencies only).

    The commit, not the working tree, so that work in progress does not break the install.
    Returns the venv's bin dir.
    """
    source = where / "src"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "venv", str(where / "venv")], check=True)
    pip = [str(where / "venv" / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(source)], check=True, capture_output=True)
    return where / "venv" / "bin"


def installed_size(venv: Path) -> dict[str, Any]:
    """Size of the venv's site-packages, pip and setuptools left out, and the biggest entries."""
    site = next((venv / "lib").glob("python3*/site-packages"))
    sizes: dict[str, int] = {}
    for entry in site.iterdir():
        if entry.name.startswith(("pip", "setuptools", "pkg_resources", "_distutils_hack",
                                  "distutils-")):
            continue
        sizes[entry.name] = _dir_size(entry) if entry.is_dir() else entry.stat().st_size
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:8]
    return {
        "site_packages_mb": round(sum(sizes.values()) / 1e6, 1),
        "biggest_mb": {name: round(size / 1e6, 1) for name, size in top},
        "kubernetes_installed": (site / "kubernetes").exists(),
        "k8s_proto_or_protobuf_installed": (site / "k8s").exists() or (site / "google").exists(),
    }


_DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"""


def kubectl_works(node: FreshNode) -> dict[str, bool]:
    """Real kubectl against the fresh install: apply (server-side validation), get, explain,
    and a typo refused under Strict, all from the generated schemas."""
    kubectl = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    if kubectl is None:
        return {}
    config = node.work / "kubeconfig"
    made = subprocess.run([str(node.shoal), "kubeconfig", "--data-dir", str(node.data),
                           "--server", node.url], capture_output=True, text=True, check=True)
    config.write_text(made.stdout)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kubectl, "--kubeconfig", str(config), *args], input=stdin,
                              capture_output=True, text=True, timeout=60)

    typo = _DEPLOYMENT.replace("replicas: 1", "replicas: 1\n  replicaz: 2")
    refused = run("apply", "-f", "-", stdin=typo)
    return {
        "apply": run("apply", "-f", "-", stdin=_DEPLOYMENT).returncode == 0,
        "get": run("get", "deployment", "web", "-o", "name").stdout.strip()
        == "deployment.apps/web",
        "explain": "DeploymentSpec" in run("explain", "deployment.spec").stdout,
        "strict_typo_refused": refused.returncode != 0
        and 'unknown field "spec.replicaz"' in refused.stderr,
    }


def measure_node(shoal: Path, pods: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-footprint-"))
    node = FreshNode(work, shoal)
    try:
        node.start()
        time.sleep(IDLE_SETTLE_S)
        idle = node.rss_mb()
        assert node.proc is not None
        idle_uss = psutil.Process(node.proc.pid).memory_full_info().uss / 1e6
        loaded = asyncio.run(measure(node, pods))
        works = kubectl_works(node)
        return {
            "kubectl_works": works,
            "start_to_serving_s": round(node.start_to_serving_s, 2),
            "start_cpu_s": round(node.start_cpu_s, 2),
            "rss_idle_mb": round(idle, 1),
            "uss_idle_mb": round(idle_uss, 1),
            "rss_with_pods_mb": loaded["server_rss_with_pods_mb"],
            "pods": pods,
        }
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(quick: bool = False, ref: str = "HEAD") -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-venv-"))
    try:
        bin_dir = fresh_venv(work, ref)
        result: dict[str, Any] = {"commit": _commit(ref), "installed": installed_size(bin_dir.parent)}
        result.update(measure_node(bin_dir / "shoal", 20 if quick else 100))
        result["goals"] = {"rss_with_100_pods_mb": 60, "kubernetes_installed": False}
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _commit(ref: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", ref], check=True,
                          capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    import json

    # python -m bench.footprint [--quick] [--ref=COMMIT]: the figures of another commit.
    ref = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--ref=")), "HEAD")
    print(json.dumps(run("--quick" in sys.argv, ref), indent=2))
