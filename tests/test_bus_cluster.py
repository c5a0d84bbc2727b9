"""Two real `shoal server`s at two sites, each in its own network namespace: the bus wires
itself from the replicated Nodes (the edge dials the hub it learns of), Streams applied
once at the edge are made at the sites they name, and messages published at the edge
while its uplink is cut (iptables) reach the hub's sourced stream after the heal."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from tests.conftest import VENV_BIN, ShoalProcess, free_port
from tests.test_bus_harness import need_nats_server
from tests.tools import netns

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

# Run inside the edge's namespace (reachable while it is cut off): publish with acks.
PUBLISH = """
import asyncio, sys, nats
async def main(first, count):
    nc = await nats.connect("nats://127.0.0.1:4222")
    js = nc.jetstream()
    acked = 0
    for i in range(first, first + count):
        ack = await js.publish("sensors.farm-a.t", b"%d" % i, headers={"Nats-Msg-Id": f"m{i}"})
        assert ack.domain == "farm-a", ack
        acked += 1
    await nc.close()
    print(acked)
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
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
def lab() -> Iterator[netns.NetnsLab]:
    netns.require(need_iptables=True)
    need_nats_server()
    with netns.NetnsLab() as the_lab:
        yield the_lab


def status_messages(node: ShoalProcess, stream: str) -> int:
    r = node.kubectl("get", "stream", stream, "-o", "json", check=False)
    if r.returncode != 0:
        return -1
    return int((json.loads(r.stdout).get("status") or {}).get("messages", -1))


def test_an_edge_site_streams_into_the_hub_across_a_cut_uplink(
        lab: netns.NetnsLab, tmp_path: Path) -> None:
    hub_ns, edge_ns = lab.add("hub"), lab.add("edge")
    hub = ShoalProcess("hub-1", tmp_path / "hub", free_port(), tmp_path / "hub.log",
                       netns=hub_ns, host=hub_ns.ip)
    edge = ShoalProcess("edge-1", tmp_path / "edge", free_port(), tmp_path / "edge.log",
                        netns=edge_ns, host=edge_ns.ip)
    try:
        hub.start(["--peer-port", "7443", "--site", "cloud"])
        hub.kubectl("label", "node", "hub-1", "shoal.dev/hub=true")
        token = subprocess.run([str(VENV_BIN / "shoal"), "token", "create", "--data-dir",
                                str(hub.data_dir)], check=True, capture_output=True,
                               text=True).stdout.strip()
        edge.start(["--peer-port", "7443", "--site", "farm-a", "--join",
                    f"{hub_ns.ip}:7443", "--token", token])
        # Declared once, at the edge; the hub learns of them by replication.
        edge.kubectl("apply", "-f", "-", input=STREAMS)
        wait_until(lambda: status_messages(edge, "sensors-farm-a") == 0, 60, "edge stream")
        wait_until(lambda: status_messages(hub, "sensors") == 0, 60, "hub stream")
        edge_conf = json.loads((edge.data_dir / "bus" / "nats-server.json").read_text())
        assert edge_conf["jetstream"]["domain"] == "farm-a"
        assert edge_conf["leafnodes"]["remotes"][0]["urls"] == [f"tls://{hub_ns.ip}:7422"]

        def publish(first: int, count: int) -> int:
            r = edge_ns.run([str(VENV_BIN / "python"), "-c", PUBLISH, str(first), str(count)],
                            capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            return int(r.stdout.strip())

        async def hub_holds() -> int:
            nc = await nats.connect(f"nats://{hub_ns.ip}:4222")
            try:
                return int((await nc.jsm().stream_info("sensors")).state.messages or 0)
            finally:
                await nc.close()

        assert publish(0, 10) == 10
        wait_until(lambda: asyncio.run(hub_holds()) == 10, 60, "the first 10 at the hub")

        lab.cut(edge_ns, "drop")  # the uplink goes: iptables drops everything
        assert publish(10, 1000) == 1000  # acknowledged, stored at the edge
        edge_log = edge.data_dir / "bus" / "nats-server.log"
        closed_before = edge_log.read_text().count("Leafnode connection closed")
        # Until the edge gives the link up (missed pings), so the heal is a reconnection.
        wait_until(lambda: edge_log.read_text().count("Leafnode connection closed")
                   > closed_before, 30, "the edge to drop its leaf link")
        assert asyncio.run(hub_holds()) == 10
        lab.heal(edge_ns)
        healed = time.monotonic()
        wait_until(lambda: asyncio.run(hub_holds()) == 1010, 90, "all 1010 at the hub")
        print(f"the hub held all 1010 {time.monotonic() - healed:.1f} s after the heal")
        wait_until(lambda: status_messages(hub, "sensors") == 1010, 60,
                   "kubectl at the hub to report 1010")
    finally:
        edge.stop()
        hub.stop()
