"""Nothing acknowledged is lost: kill -9 during a stream of creates, restart, check."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ShoalProcess, free_port

pytestmark = pytest.mark.slow


def _creator(node: ShoalProcess, prefix: str, acked: list[str], stop: threading.Event) -> None:
    ctx = ssl.create_default_context(cafile=str(node.data_dir / "pki" / "ca.crt"))
    token = (node.data_dir / "pki" / "admin.token").read_text().strip()
    i = 0
    while not stop.is_set():
        name = f"{prefix}-{i}"
        body = json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": name}, "data": {"i": str(i)}}).encode()
        req = urllib.request.Request(
            f"{node.url}/api/v1/namespaces/default/configmaps", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                if r.status == 201:
                    acked.append(name)
        except (urllib.error.URLError, OSError, ConnectionError):
            return  # the node is gone
        i += 1


def test_every_acknowledged_create_survives_kill_9(tmp_path: Path) -> None:
    node = ShoalProcess("node-1", tmp_path / "data", free_port(), tmp_path / "shoal.log")
    node.start()
    acked: list[list[str]] = [[] for _ in range(8)]
    stop = threading.Event()
    threads = [threading.Thread(target=_creator, args=(node, f"c{n}", acked[n], stop))
               for n in range(8)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    node.kill9()
    stop.set()
    for t in threads:
        t.join(timeout=10)
    total = sum(len(a) for a in acked)
    assert total > 50, "the stream was running when the node was killed"
    node.start()
    try:
        names = {o["metadata"]["name"] for o in json.loads(
            node.kubectl("get", "configmaps", "-o", "json").stdout)["items"]}
        missing = [n for a in acked for n in a if n not in names]
        assert missing == [], f"{len(missing)} of {total} acknowledged creates were lost"
        # The restarted node keeps accepting writes on top of what it had.
        node.kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: Namespace\nmetadata:\n  name: after-restart\n")
    finally:
        node.stop()
