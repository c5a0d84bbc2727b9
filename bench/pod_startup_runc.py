"""Pod startup with the runc runtime: create -> Running latency of real OCI containers.

One ``shoal server --runtime runc`` on loopback, a busybox-static image imported with
``shoal image import`` (built as the tests build it), and 20 pods (``sleep``,
imagePullPolicy Never) created through the API ten at a time while a watch notes when
each first reports phase Running. Each start is an overlay mount of the unpacked image,
a bundle and ``runc run``. Goal (issue 5): p99 <= 2 s.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.api_single_node import BIN, Node
from bench.pod_startup import measure

IMAGE = "shoal.bench/busybox:v1"


class RuncNode(Node):
    """The benchmark's node, running pods with runc."""

    # pod network: the host's network by default, so nothing is left on the machine;
    # bench/pod_startup_podnet.py runs one in a network namespace with --pod-network cni.
    argv_prefix: tuple[str, ...] = ()
    pod_network_args: tuple[str, ...] = ("--pod-network", "host")

    def start(self) -> None:
        log = open(self.work / "shoal.log", "wb")  # noqa: SIM115 - kept for the process's life
        self.proc = subprocess.Popen(
            [*self.argv_prefix, str(BIN / "shoal"), "server", "--name", "bench-1",
             "--data-dir", str(self.data), "--api-port", str(self.port), "--log-level",
             "warning", "--runtime", "runc", "--peer-port", "0", *self.pod_network_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        import urllib.request

        for _ in range(300):
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", context=ctx, timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("shoal did not start: " + (self.work / "shoal.log").read_text()[-2000:])


def _import_image(node: Node) -> float:
    """Build the busybox-static image as the tests do and import it; returns seconds."""
    from tests.test_images import busybox_layer, write_docker_save

    archive = node.work / "busybox.tar"
    write_docker_save(archive, [busybox_layer()], IMAGE)
    t0 = time.monotonic()
    subprocess.run([str(BIN / "shoal"), "image", "import", "--data-dir", str(node.data),
                    str(archive)], check=True, capture_output=True)
    return time.monotonic() - t0


def runc_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": "bench-1", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sleep", "3600"]}]}}


def run(quick: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-runc-"))
    node = RuncNode(work)
    node.start()
    try:
        imported = _import_image(node)
        result = asyncio.run(measure(node, 10 if quick else 20, runc_pod, settle=1.0))
        result["image_import_s"] = round(imported, 3)
        result["goals"] = {"p99_s": 2.0}
        return result
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
