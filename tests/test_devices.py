"""Devices: a Modbus TCP device and an MQTT sensor served by one node's built-in mappers.

In process: the real ObjectStore, a real nats-server with its MQTT listener (the site's
bus), pymodbus's server as the PLC and a hand-written MQTT 3.1.1 publisher as the sensor.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import socket
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from shoal.bus.nats_config import BusSettings, render
from shoal.bus.site_topology import topology
from shoal.devices.mapper import DEVICES, DeviceWorker, subject
from shoal.devices.modbus import ModbusDriver
from shoal.devices.mqtt import payload_value, subject_of
from shoal.devices.service import DeviceMappers
from shoal.devices.simulator import Thermostat, mqtt_connect, mqtt_publish_packet
from shoal.model.kinds import Kind, KindRegistry
from shoal.store.objects import Invalid, ObjectStore
from shoal.store.replica import Replica
from tests.conftest import free_port
from tests.test_bus_config import NODES, me
from tests.test_bus_harness import need_nats_server

API = "devices.shoal.dev/v1beta1"
NODE = "edge-1"


async def wait_for(check: Any, timeout: float = 5.0, every: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(every)


# --- the site's bus: a nats-server with MQTT on, as the node's would be ---------------------

@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    binary = need_nats_server()
    d = tmp_path_factory.mktemp("bus")
    port, mqtt_port = free_port(), free_port()
    conf = {"server_name": "edge-1", "host": "127.0.0.1", "port": port,
            "jetstream": {"store_dir": str(d / "js")},
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port}}
    (d / "nats.json").write_text(json.dumps(conf))
    proc = subprocess.Popen([binary, "-c", str(d / "nats.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", mqtt_port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}", mqtt_port
    finally:
        proc.terminate()
        proc.wait(5)


class MqttSensor:
    """An MQTT 3.1.1 device publishing at QoS 0: CONNECT, then PUBLISH packets."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        _, self.writer = await mqtt_connect("127.0.0.1", self.port, "sensor-1")

    async def publish(self, topic: str, payload: bytes) -> None:
        assert self.writer is not None
        self.writer.write(mqtt_publish_packet(topic, payload))
        await self.writer.drain()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- the PLC: pymodbus's server ------------------------------------------------------------

class Plc:
    """pymodbus's simulated device: 32 registers that its four tables share."""

    def __init__(self) -> None:
        self.registers: list[int] = []
        self.device = SimDevice(id=1, simdata=[SimData(0, count=32, values=0,
                                                       datatype=DataType.REGISTERS)],
                                action=self._seen)

    async def _seen(self, fc: int, start: int, address: int, count: int,
                    registers: list[int], values: Any) -> None:
        self.registers = registers  # the server's own list: read and set by the test


@pytest.fixture
async def plc() -> AsyncIterator[tuple[int, Plc]]:
    device = Plc()
    port = free_port()
    server = ModbusTcpServer(device.device, address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    await wait_for(lambda: _listening(port))
    yield port, device
    await server.shutdown()
    task.cancel()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def holding(device: Plc, offset: int) -> int:
    return device.registers[offset] if device.registers else -1


# --- the node's store -----------------------------------------------------------------------

@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    replica = Replica(tmp_path / "replica", "p1")
    s = ObjectStore(replica, KindRegistry())
    ns = s.registry.by_kind("v1", "Namespace")
    assert ns is not None
    await s.create(ns, {"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": "default"}})
    yield s
    replica.close()


def kind(store: ObjectStore, name: str) -> Kind:
    k = store.registry.by_kind(API, name)
    assert k is not None
    return k


def model(name: str, **props: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"properties": [{"name": n, **p} for n, p in props.items()]}}


def modbus_device(port: int, desired: str | None = None) -> dict[str, Any]:
    setpoint: dict[str, Any] = {
        "name": "setpoint", "collectCycle": 50, "reportCycle": 200,
        "visitors": {"protocolName": "modbus",
                     "configData": {"register": "HoldingRegister", "offset": 2}}}
    if desired is not None:
        setpoint["desired"] = {"value": desired}
    return {"apiVersion": API, "kind": "Device",
            "metadata": {"name": "plc", "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "thermostat"}, "nodeName": NODE,
                     "protocol": {"protocolName": "modbus",
                                  "configData": {"ip": "127.0.0.1", "port": port}},
                     "properties": [setpoint, {
                         "name": "temperature", "collectCycle": 50, "reportCycle": 200,
                         "visitors": {"configData": {"register": "InputRegister",
                                                     "offset": 0, "scale": 0.5}}}]}}


def mqtt_device() -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Device",
            "metadata": {"name": "sensor", "namespace": "default"},
            "spec": {"deviceModelRef": {"name": "probe"}, "nodeName": NODE,
                     "protocol": {"protocolName": "mqtt"},
                     "properties": [{"name": "humidity", "collectCycle": 20,
                                     "reportCycle": 200,
                                     "visitors": {"configData": {"topic": "farm/h1"}}}]}}


def twins(store: ObjectStore, name: str) -> dict[str, Any]:
    obj = store.replica.get(DEVICES, "default", name) or {}
    return {t["propertyName"]: t for t in (obj.get("status") or {}).get("twins", [])}


def reported(store: ObjectStore, name: str, prop: str) -> str | None:
    return ((twins(store, name).get(prop) or {}).get("reported") or {}).get("value")


async def set_desired(store: ObjectStore, name: str, prop: str, value: str) -> None:
    obj = copy.deepcopy(store.replica.get(DEVICES, "default", name))
    assert obj is not None
    for p in obj["spec"]["properties"]:
        if p["name"] == prop:
            p["desired"] = {"value": value}
    await store.update(kind(store, "Device"), obj, "default", name)


# --- tests ----------------------------------------------------------------------------------

async def test_bad_devices_and_models_are_refused_with_their_fields(store: ObjectStore) -> None:
    with pytest.raises(Invalid) as e:
        await store.create(kind(store, "DeviceModel"), model(
            "m", level={"type": "INT", "minimum": "10", "maximum": "1"},
            mode={"type": "INT", "accessMode": "Sometimes"}))
    fields = {c.field for c in e.value.causes}
    assert fields == {"spec.properties[0].maximum", "spec.properties[1].accessMode"}
    bad = mqtt_device()
    bad["spec"]["protocol"]["protocolName"] = "zigbee"
    with pytest.raises(Invalid) as e:
        await store.create(kind(store, "Device"), bad)
    assert [c.field for c in e.value.causes] == ["spec.protocol.protocolName"]
    bad = modbus_device(502)
    bad["spec"]["properties"][0]["visitors"]["configData"]["register"] = "Flux"
    with pytest.raises(Invalid) as e:
        await store.create(kind(store, "Device"), bad)
    assert "register" in e.value.causes[0].field
    bad = modbus_device(502)
    bad["spec"]["protocol"]["configData"]["port"] = "http"
    bad["spec"]["properties"][1]["visitors"]["configData"].update(limit=0, scale=0)
    with pytest.raises(Invalid) as e:
        await store.create(kind(store, "Device"), bad)
    assert {c.field for c in e.value.causes} == {
        "spec.protocol.configData.port", "spec.properties[1].visitors.configData.limit",
        "spec.properties[1].visitors.configData.scale"}


class BrokenDriver:
    """A driver that fails as a bad configuration would, on every read and write."""

    def __init__(self) -> None:
        self.calls = 0

    async def read(self, prop: str, config: dict[str, Any]) -> str | None:
        self.calls += 1
        raise ValueError("invalid literal for int()")

    async def write(self, prop: str, config: dict[str, Any], value: str) -> None:
        self.calls += 1
        raise TypeError("unsupported operand")

    async def close(self) -> None:
        pass


async def test_a_driver_that_fails_leaves_the_device_offline_and_the_worker_running(
        store: ObjectStore) -> None:
    await store.create(kind(store, "DeviceModel"), model(
        "thermostat", setpoint={"type": "INT"}, temperature={"type": "FLOAT"}))
    await store.create(kind(store, "Device"), modbus_device(502, desired="7"))
    driver = BrokenDriver()
    worker = DeviceWorker(store, "default", "plc", driver, None, tick=0.01)
    task = asyncio.create_task(worker.run())
    try:
        await wait_for(lambda: ((store.replica.get(DEVICES, "default", "plc") or {})
                                .get("status") or {}).get("state") == "offline")
        calls = driver.calls
        await asyncio.sleep(0.1)
        assert not task.done() and driver.calls > calls
    finally:
        task.cancel()


async def test_a_value_the_property_cannot_take_is_refused_and_the_device_stays_online(
        store: ObjectStore, plc: tuple[int, Plc]) -> None:
    """No bounds in the model, so only the register can say no: 70000 does not fit 16 bits,
    'warm' is not a number; a property the model does not declare is not served. Each is
    said in the status while the device stays online and its other properties are served."""
    port, device = plc
    await store.create(kind(store, "DeviceModel"), model(
        "thermostat", setpoint={"type": "INT"}, temperature={"type": "FLOAT"}))
    dev = modbus_device(port, desired="70000")
    dev["spec"]["properties"].append({"name": "valve", "visitors": {"configData": {
        "register": "CoilRegister", "offset": 3}}})
    await store.create(kind(store, "Device"), dev)
    driver = ModbusDriver("127.0.0.1", port)
    worker = DeviceWorker(store, "default", "plc", driver, None, tick=0.01)
    task = asyncio.create_task(worker.run())

    def status() -> dict[str, Any]:
        return (store.replica.get(DEVICES, "default", "plc") or {}).get("status") or {}

    try:
        await wait_for(lambda: "16-bit" in status().get("message", ""))
        assert status()["state"] == "online"
        assert "property 'valve' is not in DeviceModel 'thermostat'" in status()["message"]
        assert set(twins(store, "plc")) == {"setpoint", "temperature"}
        assert reported(store, "plc", "setpoint") == "0"  # read, never written
        await set_desired(store, "plc", "setpoint", "warm")
        await wait_for(lambda: "'warm' is not a number" in status().get("message", ""))
        assert status()["state"] == "online" and holding(device, 2) == 0
        await set_desired(store, "plc", "setpoint", "12")
        await wait_for(lambda: holding(device, 2) == 12)
        await wait_for(lambda: "setpoint" not in status().get("message", ""))
        # Refused again, then tried again when where it goes changes: at scale 10 it fits.
        await set_desired(store, "plc", "setpoint", "70000")
        await wait_for(lambda: "16-bit" in status().get("message", ""))
        obj = copy.deepcopy(store.replica.get(DEVICES, "default", "plc"))
        assert obj is not None
        obj["spec"]["properties"][0]["visitors"]["configData"]["scale"] = 10
        await store.update(kind(store, "Device"), obj, "default", "plc")
        await wait_for(lambda: holding(device, 2) == 7000)
        assert not task.done()
    finally:
        task.cancel()


async def test_the_simulated_thermostat_follows_its_setpoint_and_prints_each_write(
        capsys: pytest.CaptureFixture[str]) -> None:
    """shoal.devices.simulator's PLC, read and written through the mapper's Modbus driver."""
    plc = Thermostat(setpoint=20, temperature=19.0)
    port = free_port()
    server = ModbusTcpServer(plc.device, address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    driver = ModbusDriver("127.0.0.1", port)
    try:
        await wait_for(lambda: _listening(port))
        temperature = {"register": "InputRegister", "offset": 0, "scale": 0.5}
        assert await driver.read("temperature", temperature) == "19"
        await driver.write("setpoint", {"register": "HoldingRegister", "offset": 2}, "18")
        assert json.loads(capsys.readouterr().out.splitlines()[-1])["values"] == [18]
        plc.drift()
        plc.drift()
        plc.drift()  # half a degree each, then it holds at the setpoint
        assert await driver.read("temperature", temperature) == "18"
    finally:
        await driver.close()
        await server.shutdown()  # type: ignore[no-untyped-call]
        serving.cancel()


def test_a_peers_bus_listens_for_mqtt_devices_where_it_binds(tmp_path: Path) -> None:
    """In a site of three or more peers, MQTT's session streams are kept on three, so an
    MQTT device still connects with one peer down (nats-server's own choice was two)."""
    with_mqtt = BusSettings("farm-1", tmp_path, bind="10.0.0.1", mqtt_port=1883)
    farm_of_two = topology(me(NODES[3]), NODES)
    assert render(with_mqtt, farm_of_two)["mqtt"] == {"host": "10.0.0.1", "port": 1883}
    hub_of_three = topology(me(NODES[0]), NODES)
    assert render(with_mqtt, hub_of_three)["mqtt"]["stream_replicas"] == 3
    assert "mqtt" not in render(BusSettings("hub-1", tmp_path), hub_of_three)


def test_mqtt_topics_become_the_subjects_nats_server_delivers_them_on() -> None:
    assert subject_of("farm/h1") == "farm.h1"
    assert subject_of("farm/+/t/#") == "farm.*.t.>"
    assert payload_value(b'{"value": 41.5}') == "41.5"
    assert payload_value(b"17") == "17"
    assert subject("default", "plc.1", "set point") == "devices.default.plc_1.set_point"


async def test_readings_reach_the_bus_setpoints_reach_the_register_and_twins_converge(
        store: ObjectStore, plc: tuple[int, Plc],
        bus: tuple[str, int]) -> None:
    port, device = plc
    nats_url, mqtt_port = bus
    await store.create(kind(store, "DeviceModel"), model(
        "thermostat", setpoint={"type": "INT", "accessMode": "ReadWrite", "minimum": "5",
                                "maximum": "30"},
        temperature={"type": "FLOAT", "accessMode": "ReadOnly"}))
    await store.create(kind(store, "DeviceModel"), model("probe", humidity={"type": "INT"}))
    await store.create(kind(store, "Device"), modbus_device(port, desired="20"))
    await store.create(kind(store, "Device"), mqtt_device())

    consumer = await nats.connect(nats_url)
    seen: dict[str, list[tuple[dict[str, Any], float]]] = {}

    async def got(msg: Any) -> None:
        seen.setdefault(msg.subject, []).append((json.loads(msg.data), time.time()))

    await consumer.subscribe("devices.>", cb=got)
    mappers = DeviceMappers(store, NODE, lambda: nats_url, poll=0.05, tick=0.01)
    mappers.start()
    sensor = MqttSensor(mqtt_port)
    try:
        # The desired value the Device was created with is written first.
        await wait_for(lambda: holding(device, 2) == 20)
        device.registers[0] = 43  # input register 0: 21.5 degrees at scale 0.5
        await wait_for(lambda: any(m["value"] == "21.5" for m, _ in
                                   seen.get("devices.default.plc.temperature", [])))

        await sensor.connect()
        # The mapper subscribes on its first collect, once its bus connection is up:
        # publish until a reading arrives (QoS 0 before the subscription is lost).
        for _ in range(50):
            sent_at = time.time()
            await sensor.publish("farm/h1", b"63")
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: "devices.default.sensor.humidity" in seen, timeout=0.1)
                break
        humidity = seen["devices.default.sensor.humidity"]
        assert humidity[0][0]["value"] == "63"
        mqtt_latency = humidity[0][1] - sent_at

        # A patch of desired reaches the register within a second, each time.
        latencies = []
        for value in ("21", "22", "23", "24", "25"):
            start = time.monotonic()
            await set_desired(store, "plc", "setpoint", value)
            await wait_for(lambda v=int(value): holding(device, 2) == v, timeout=1.0,
                           every=0.002)
            latencies.append(time.monotonic() - start)
        assert max(latencies) < 1.0

        # Twins: reported from the device, observedDesired what was applied, desired
        # untouched in spec.
        await wait_for(lambda: reported(store, "plc", "setpoint") == "25"
                       and reported(store, "sensor", "humidity") == "63")
        plc_twins = twins(store, "plc")
        assert plc_twins["temperature"]["reported"]["value"] == "21.5"
        assert plc_twins["setpoint"]["observedDesired"]["value"] == "25"
        obj = store.replica.get(DEVICES, "default", "plc") or {}
        assert obj["status"]["state"] == "online" and obj["status"]["lastOnlineTime"]
        assert obj["spec"]["properties"][0]["desired"]["value"] == "25"

        # Out of the model's range: not written, and the status says why.
        await set_desired(store, "plc", "setpoint", "99")
        await wait_for(lambda: "above the maximum" in (
            (store.replica.get(DEVICES, "default", "plc") or {}).get("status") or {}
        ).get("message", ""))
        assert holding(device, 2) == 25

        # The twin is written at reportCycle, not at every reading.
        worker = mappers.workers[("default", "plc")][0]
        assert worker.readings > 2 * worker.status_writes
        print(f"\npatch-to-register p50 {statistics.median(latencies) * 1000:.1f} ms, "
              f"max {max(latencies) * 1000:.1f} ms; MQTT publish-to-bus "
              f"{mqtt_latency * 1000:.1f} ms; {worker.readings} readings, "
              f"{worker.status_writes} twin writes")
    finally:
        sensor.close()
        await mappers.stop()
        await consumer.close()


async def test_a_device_whose_model_is_missing_or_unreachable_says_so(
        store: ObjectStore) -> None:
    await store.create(kind(store, "Device"), modbus_device(free_port()))
    # The bus is down too: Modbus devices do not wait for it.
    dead_bus = f"nats://127.0.0.1:{free_port()}"
    mappers = DeviceMappers(store, NODE, lambda: dead_bus, poll=0.05, tick=0.01)
    mappers.start()
    try:
        def status() -> dict[str, Any]:
            return (store.replica.get(DEVICES, "default", "plc") or {}).get("status") or {}

        await wait_for(lambda: "not found" in status().get("message", ""))
        assert status()["state"] == "unknown"
        await store.create(kind(store, "DeviceModel"), model(
            "thermostat", setpoint={"type": "INT"}, temperature={"type": "FLOAT"}))
        await wait_for(lambda: status().get("state") == "offline")  # nothing listens there
        assert "not found" not in status().get("message", "")
    finally:
        await mappers.stop()
