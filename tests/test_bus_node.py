"""The bus in a real `shoal server`: kubectl declares streams, the node's nats-server holds
them, pods learn where it is, nothing is left behind when the node dies, and a second
peer on the host starts its nats-server once."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import nats
import pytest

from shoal.bus.site_topology import CLIENT_ANNOTATION, CLUSTER_ANNOTATION
from shoal.mesh.join_tokens import create_token
from shoal.mesh.pki import NodePKI
from tests.conftest import ShoalProcess, free_port
from tests.test_bus_harness import need_nats_server

pytestmark = pytest.mark.slow

STREAM = """
apiVersion: jetstream.nats.io/v1beta2
kind: Stream
metadata: {name: sensors}
spec:
  subjects: ["sensors.>"]
  maxAge: 24h
  duplicateWindow: 2m
  placement: {site: farm-a}
---
apiVersion: jetstream.nats.io/v1beta2
kind: Consumer
metadata: {name: aggregator}
spec: {streamName: sensors, ackPolicy: explicit}
"""

POD = """
apiVersion: v1
kind: Pod
metadata: {name: sensor}
spec:
  restartPolicy: Never
  containers:
  - {name: c, image: busybox, command: ["sh", "-c", "echo bus=$NATS_URL"]}
"""


def wait_until(check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert callable(check)
        if check():
            return
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.3)


def test_streams_from_kubectl_live_in_the_nodes_jetstream(shoal: ShoalProcess) -> None:
    need_nats_server()
    shoal.kubectl("label", "node", shoal.name, "topology.kubernetes.io/zone=farm-a")
    bad = shoal.kubectl("apply", "-f", "-", check=False, input=STREAM.replace(
        '["sensors.>"]', '["sensors.>.x"]'))
    assert bad.returncode != 0 and "should match" in bad.stderr
    shoal.kubectl("apply", "-f", "-", input=STREAM)
    # Updates are checked as creates are: a bad subject, limits that contradict each other.
    for patch in ('{"spec": {"subjects": ["sensors.>.x"]}}', '{"spec": {"maxAge": "1m"}}'):
        bad = shoal.kubectl("patch", "stream", "sensors", "--type", "merge", "-p", patch,
                            check=False)
        assert bad.returncode != 0 and "is invalid" in bad.stderr, bad.stderr

    def ready() -> bool:
        out = shoal.kubectl("get", "streams", "-o", "wide").stdout
        return "True" in out and "farm-a" in out
    wait_until(ready)
    node = json.loads(shoal.kubectl("get", "node", shoal.name, "-o", "json").stdout)
    url = "nats://" + node["metadata"]["annotations"][CLIENT_ANNOTATION]

    async def publish() -> str | None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            ack = None
            for i in range(3):
                ack = await js.publish("sensors.farm-a.t", b"%d" % i)
            return ack.domain if ack else None
        finally:
            await nc.close()
    assert asyncio.run(publish()) == "farm-a"

    def three_held() -> bool:
        rows = shoal.kubectl("get", "streams").stdout.splitlines()
        return rows[0].split() == ["NAME", "SUBJECTS", "MESSAGES", "LAG", "HUB", "LAG", "AGE"] \
            and rows[1].split()[2] == "3"
    wait_until(three_held)
    consumers = shoal.kubectl("get", "consumers").stdout.splitlines()
    assert consumers[1].split()[:3] == ["aggregator", "sensors", "3"]  # 3 pending


def test_pods_get_the_bus_url_and_the_bus_dies_with_the_node(shoal: ShoalProcess) -> None:
    need_nats_server()
    shoal.kubectl("apply", "-f", "-", input=POD)

    def logged() -> bool:
        r = shoal.kubectl("logs", "sensor", check=False)
        return r.returncode == 0 and "bus=nats://" in r.stdout
    wait_until(logged)
    pid = int((shoal.data_dir / "bus" / "nats-server.pid").read_text())
    assert Path(f"/proc/{pid}").exists()
    shoal.kill9()

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text().split()
        return stat[2] == "Z"  # killed, waiting for init to reap it
    wait_until(gone, timeout=10)


def bus_routes(node: ShoalProcess) -> list[str]:
    try:
        conf = json.loads((node.data_dir / "bus" / "nats-server.json").read_text())
    except (OSError, ValueError):
        return []
    return list((conf.get("cluster") or {}).get("routes") or [])


def test_a_second_peer_on_the_host_starts_its_nats_server_once(tmp_path: Path) -> None:
    """It waits for its replica to hold its site's Nodes (no standalone start, then a
    restart into the cluster) and leaves the ports the first peer announced to it (the
    first one's cluster port is free until it has a peer: the second took it and lost it
    to the first, two failed starts and a move)."""
    need_nats_server()
    a = ShoalProcess("node-a", tmp_path / "a", free_port(), tmp_path / "a.log")
    a.start()
    b = ShoalProcess("node-b", tmp_path / "b", free_port(), tmp_path / "b.log",
                     env={"SHOAL_TOKEN": str(create_token(NodePKI(a.data_dir / "pki")))})
    try:
        b.start(["--join", (a.data_dir / "peer-address").read_text().strip()])
        wait_until(lambda: bool(bus_routes(a)) and bool(bus_routes(b)))
        time.sleep(3)  # three polls of its bus: a late restart would show by now
        node_a = json.loads(b.kubectl("get", "node", "node-a", "-o", "json").stdout)
        a_cluster = node_a["metadata"]["annotations"][CLUSTER_ANNOTATION]
        assert bus_routes(b) == [f"nats-route://{a_cluster}"]
        starts = (b.data_dir / "bus" / "nats-server.log").read_text().count(
            "Starting nats-server")
        assert starts == 1, b.log_path.read_text()
        assert "restarting nats-server" not in b.log_path.read_text()
    finally:
        b.stop()
        a.stop()
