"""Two real `shoal server`s at two sites: the bus wires itself from the replicated Nodes
(the edge dials the hub it learns of), and Streams applied at one site are made at the
sites they name, the hub's sourcing the edge's across the leaf link."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from shoal.bus.site_topology import CLIENT_ANNOTATION
from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_bus_harness import need_nats_server

pytestmark = pytest.mark.slow

STREAMS = """
apiVersion: jetstream.nats.io/v1beta2
kind: Stream
metadata: {name: sensors-farm-a}
spec:
  subjects: ["sensors.farm-a.>"]
  duplicateWindow: 2m
  placement: {site: farm-a}
---
apiVersion: jetstream.nats.io/v1beta2
kind: Stream
metadata: {name: sensors}
spec:
  sources: [{name: sensors-farm-a, domain: farm-a}]
  duplicateWindow: 2m
  placement: {site: cloud}
"""


def wait_until(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert callable(check)
        if check():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


@pytest.fixture
def two_sites(tmp_path: Path) -> Iterator[tuple[ShoalProcess, ShoalProcess]]:
    need_nats_server()
    hub = ShoalProcess("hub-1", tmp_path / "hub", free_port(), tmp_path / "hub.log")
    edge = ShoalProcess("edge-1", tmp_path / "edge", free_port(), tmp_path / "edge.log")
    try:
        hub.start(["--site", "cloud"])
        hub.kubectl("label", "node", "hub-1", "shoal.dev/hub=true")
        token = subprocess.run([str(VENV_BIN / "shoal"), "token", "create", "--data-dir",
                                str(hub.data_dir)], check=True, capture_output=True,
                               text=True).stdout.strip()
        seed = (hub.data_dir / "peer-address").read_text().strip()
        edge.start(["--site", "farm-a", "--join", seed, "--token", token])
        yield hub, edge
    finally:
        edge.stop()
        hub.stop()


def messages(node: ShoalProcess, stream: str) -> int:
    r = node.kubectl("get", "stream", stream, "-o", "json", check=False)
    if r.returncode != 0:
        return -1
    return int((json.loads(r.stdout).get("status") or {}).get("messages", -1))


def test_an_edge_site_streams_into_the_hub_site_declared_once_with_kubectl(
        two_sites: tuple[ShoalProcess, ShoalProcess]) -> None:
    hub, edge = two_sites
    # Declared at the edge; the hub learns of them by replication.
    edge.kubectl("apply", "-f", "-", input=STREAMS)
    wait_until(lambda: messages(edge, "sensors-farm-a") == 0, 60, "the edge's stream")
    wait_until(lambda: messages(hub, "sensors") == 0, 60, "the hub's stream")
    node = json.loads(edge.kubectl("get", "node", "edge-1", "-o", "json").stdout)
    url = "nats://" + node["metadata"]["annotations"][CLIENT_ANNOTATION]
    edge_conf = json.loads((edge.data_dir / "bus" / "nats-server.json").read_text())
    assert edge_conf["jetstream"]["domain"] == "farm-a"
    assert edge_conf["leafnodes"]["remotes"][0]["urls"][0].startswith("tls://")

    async def publish() -> None:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for i in range(100):
                ack = await js.publish("sensors.farm-a.t", b"%d" % i,
                                       headers={"Nats-Msg-Id": f"r{i}"})
                assert ack.domain == "farm-a"
        finally:
            await nc.close()

    asyncio.run(publish())
    # Sourced across the leaf link, then reported by the hub's peer.
    wait_until(lambda: messages(hub, "sensors") == 100, 60, "the hub to hold all 100")
    rows = hub.kubectl("get", "streams", "-o", "wide").stdout.splitlines()
    assert any(r.split()[:2] == ["sensors", "cloud"] and r.split()[2] == "100" for r in rows)
