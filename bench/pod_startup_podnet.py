"""Pod startup with the pod network: create -> Running of runc pods that each get a network.

As ``pod_startup_runc`` (20 busybox pods, created ten at a time, Running seen on a
watch), but the node runs in a network namespace of its own with
``--pod-network cni``: every pod also gets a network namespace, an address from
the node's podCIDR through the CNI plugins (bridge, host-local, portmap,
loopback), and its own resolv.conf and hosts. Goal (issue 8): p99 <= 2 s.
The namespace, and every link and rule the node made in it, go when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.tools.netns import Namespace, NetnsLab

from bench.pod_startup import measure
from bench.pod_startup_runc import RuncNode, _import_image, runc_pod


class PodNetNode(RuncNode):
    """The runc benchmark node inside a namespace, with the CNI pod network."""

    def __init__(self, work: Path, ns: Namespace) -> None:
        super().__init__(work)
        self.url = f"https://{ns.ip}:{self.port}"
        self.argv_prefix = tuple(ns.exec_args([]))
        self.pod_network_args = ("--pod-network", "cni", "--bind", "0.0.0.0",
                                 "--advertise", ns.ip)


def _wait_pod_cidr(node: RuncNode, timeout: float = 30) -> None:
    """The pod CIDR allocator gives the new node its range within a moment."""
    ctx = ssl.create_default_context(cafile=str(node.data / "pki" / "ca.crt"))
    req = urllib.request.Request(f"{node.url}/api/v1/nodes/bench-1",
                                 headers={"Authorization": f"Bearer {node.token}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(req, context=ctx) as r:
            if (json.loads(r.read()).get("spec") or {}).get("podCIDR"):
                return
        time.sleep(0.2)
    raise RuntimeError("the node got no podCIDR")


def run(quick: bool = False) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-podnet-"))
    with NetnsLab() as lab:
        node = PodNetNode(work, lab.add("bench"))
        node.start()
        try:
            imported = _import_image(node)
            _wait_pod_cidr(node)
            result = asyncio.run(measure(node, 10 if quick else 20, runc_pod, settle=1.0))
            result["image_import_s"] = round(imported, 3)
            result["goals"] = {"p99_s": 2.0}
            return result
        finally:
            node.stop()
            for line in Path("/proc/self/mountinfo").read_text().splitlines():
                target = line.split()[4]
                if target.startswith(str(work) + "/"):  # the pods' namespaces
                    subprocess.run(["umount", "-l", target], capture_output=True, check=False)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import sys

    print(json.dumps(run("--quick" in sys.argv), indent=2))
