"""Devices through a real `shoal server` and real kubectl: examples/devices.yaml applied,
a pymodbus PLC and an MQTT sensor on the node, the twins in `kubectl get devices`."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymodbus.server import ModbusTcpServer

from tests.conftest import ShoalProcess
from tests.test_bus_harness import need_nats_server
from tests.test_devices import Plc, _remaining, _utf8, free_port

pytestmark = pytest.mark.slow  # a real shoal server (about 15 s)

MQTT_PORT = free_port()
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "devices.yaml"


class PlcThread:
    """pymodbus's simulated device on a loop of its own (kubectl calls block the test)."""

    def __init__(self, port: int) -> None:
        self.plc = Plc()
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.server: ModbusTcpServer | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self.server = ModbusTcpServer(self.plc.device, address=("127.0.0.1", self.port))
        await self.server.serve_forever()

    def stop(self) -> None:
        if self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(5)
        self.thread.join(5)


def mqtt_publish(port: int, topic: str, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        body = _utf8("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + _utf8("probe")
        s.sendall(bytes([0x10]) + _remaining(len(body)) + body)
        assert s.recv(4) == b"\x20\x02\x00\x00"
        body = _utf8(topic) + payload
        s.sendall(bytes([0x30]) + _remaining(len(body)) + body)
        time.sleep(0.1)  # QoS 0: nothing comes back; let the server read it before closing


def wait_until(check: Any, timeout: float = 20.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShoalProcess]:
    need_nats_server()
    d = tmp_path_factory.mktemp("devices")
    shoal = ShoalProcess("node-1", d / "data", free_port(), d / "shoal.log")
    shoal.start(["--bus-mqtt-port", str(MQTT_PORT)])
    try:
        yield shoal
    finally:
        shoal.stop()


def test_kubectl_drives_a_modbus_register_and_shows_both_twins(node: ShoalProcess) -> None:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    plc = PlcThread(free_port())
    try:
        for doc in docs:
            if doc["kind"] == "Device" and doc["spec"]["protocol"]["protocolName"] == "modbus":
                doc["spec"]["protocol"]["configData"]["port"] = plc.port
        node.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        wait_until(lambda: plc.plc.registers and plc.plc.registers[2] == 20, every=0.05)
        plc.plc.registers[0] = 43  # 21.5 at scale 0.5

        conf = json.loads((node.data_dir / "bus" / "nats-server.json").read_text())
        assert conf["mqtt"]["port"] == MQTT_PORT  # --bus-mqtt-port
        mqtt_port = MQTT_PORT

        def twins() -> str:
            mqtt_publish(mqtt_port, "farm/humidity", b'{"value": 57}')
            return str(node.kubectl("get", "devices", "-o", "wide").stdout)

        table = wait_until(lambda: "humidity=57" in (t := twins()) and "21.5" in t and t)
        print("\n" + table)
        header, *rows = table.splitlines()
        assert header.split() == ["NAME", "MODEL", "NODE", "PROTOCOL", "STATE", "TWINS", "AGE"]
        assert any(r.split()[:5] == ["humidity", "humidity-model", "node-1", "mqtt", "online"]
                   for r in rows)
        assert any("setpoint=20" in r and "temperature=21.5" in r for r in rows)

        # A setpoint patched with kubectl reaches the register within a second of the
        # patch being acknowledged.
        # A strategic merge patch names the property alone: properties merge by name.
        node.kubectl("patch", "device", "thermostat", "-p", json.dumps(
            {"spec": {"properties": [{"name": "setpoint", "desired": {"value": "23"}}]}}))
        acked = time.monotonic()
        wait_until(lambda: plc.plc.registers[2] == 23, timeout=1.0, every=0.005)
        print(f"\npatch acknowledged -> register written: "
              f"{(time.monotonic() - acked) * 1000:.0f} ms")

        # Bad input is a 422 naming the field, and the node goes on serving.
        bad = dict(docs[3], metadata={"name": "zigbee"})
        bad["spec"] = dict(bad["spec"], protocol={"protocolName": "zigbee"})
        r = node.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
        assert r.returncode != 0
        assert 'spec.protocol.protocolName: Unsupported value: "zigbee"' in r.stderr
        wait_until(lambda: "setpoint=23" in node.kubectl("get", "devices", "-o",
                                                          "wide").stdout)
        stored = json.loads(node.kubectl("get", "device", "thermostat", "-o", "json").stdout)
        assert [p["name"] for p in stored["spec"]["properties"]] == ["setpoint", "temperature"]
        assert "deviceModelRef" in node.kubectl("explain", "device.spec").stdout
    finally:
        plc.stop()
