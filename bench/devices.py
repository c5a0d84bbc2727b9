"""Device figures (issue 15): readings through the MQTT mapper, desired to register.

In process, on loopback: the real ObjectStore (SQLite, fsync per commit), a real
nats-server with its MQTT listener (the site's bus as ``shoal.bus`` renders it), pymodbus's
simulated device, and ``shoal.devices.DeviceMappers`` as a node runs them.

- **readings/s through the MQTT mapper**: N MQTT sensors (one raw MQTT 3.1.1 connection
  each) publish every 10 ms; the mapper collects each at ``collectCycle`` and publishes the
  reading on ``devices.<ns>.<device>.<property>``; a NATS subscriber counts what arrives
  over 5 s. The mapper samples (as KubeEdge's mappers do), so the ceiling is devices x
  1/collectCycle; the figure says how close the node gets and what CPU it takes.
- **desired to register**: the Device's desired value is updated in the store (what the
  API does after a ``kubectl patch``, without HTTP) and the time from that call until the
  holding register holds it is measured, p50/p99 over 100 patches (the register is
  usually written by the time the durable update returns: the committed change wakes the
  worker).
"""

from __future__ import annotations

import asyncio
import copy
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from shoal.bus.supervisor import nats_server_path
from shoal.devices.mapper import DEVICES
from shoal.devices.service import DeviceMappers
from shoal.model.kinds import KindRegistry
from shoal.store.objects import ObjectStore
from shoal.store.replica import Replica

API = "devices.shoal.dev/v1beta1"
NODE = "bench-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _remaining(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


async def _mqtt_sensor(port: int, topic: str, stop: asyncio.Event, every: float) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = _utf8("MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + _utf8(topic)
    writer.write(bytes([0x10]) + _remaining(len(body)) + body)
    await reader.readexactly(4)
    i = 0
    while not stop.is_set():
        body = _utf8(topic) + str(i % 100).encode()
        writer.write(bytes([0x30]) + _remaining(len(body)) + body)
        await writer.drain()
        i += 1
        await asyncio.sleep(every)
    writer.close()


async def _store(work: Path) -> tuple[ObjectStore, Replica]:
    replica = Replica(work / "replica", "p1")
    store = ObjectStore(replica, KindRegistry())
    ns = store.registry.by_kind("v1", "Namespace")
    assert ns is not None
    await store.create(ns, {"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "default"}})
    return store, replica


def _kind(store: ObjectStore, name: str) -> Any:
    k = store.registry.by_kind(API, name)
    assert k is not None
    return k


async def _mqtt_readings(store: ObjectStore, nats_url: str, mqtt_port: int, devices: int,
                         collect_ms: int, seconds: float) -> dict[str, Any]:
    await store.create(_kind(store, "DeviceModel"), {
        "apiVersion": API, "kind": "DeviceModel", "metadata": {"name": "probe"},
        "spec": {"properties": [{"name": "level", "type": "INT"}]}}, "default")
    for i in range(devices):
        await store.create(_kind(store, "Device"), {
            "apiVersion": API, "kind": "Device", "metadata": {"name": f"s{i}"},
            "spec": {"deviceModelRef": {"name": "probe"}, "nodeName": NODE,
                     "protocol": {"protocolName": "mqtt"},
                     "properties": [{"name": "level", "collectCycle": collect_ms,
                                     "reportCycle": 10000,
                                     "visitors": {"configData": {"topic": f"bench/s{i}"}}}]}},
            "default")
    count = 0
    consumer = await nats.connect(nats_url)

    async def got(msg: Any) -> None:
        nonlocal count
        count += 1

    await consumer.subscribe("devices.default.>", cb=got)
    mappers = DeviceMappers(store, NODE, lambda: nats_url)
    mappers.start()
    stop = asyncio.Event()
    sensors = [asyncio.create_task(_mqtt_sensor(mqtt_port, f"bench/s{i}", stop, 0.01))
               for i in range(devices)]
    await asyncio.sleep(3.0)  # every worker started and subscribed
    start_count, t0 = count, time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.sleep(seconds)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    got_count, elapsed = count - start_count, time.monotonic() - t0
    stop.set()
    await asyncio.gather(*sensors, return_exceptions=True)
    await mappers.stop()
    await consumer.close()
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    ceiling = devices * 1000 / collect_ms
    return {"devices": devices, "collect_cycle_ms": collect_ms,
            "readings_per_s": round(got_count / elapsed, 1),
            "ceiling_per_s": ceiling,
            "cpu_share_of_one_core": round(cpu / elapsed, 2),
            "note": "bench process CPU: mapper, store, sensors and subscriber together"}


async def _patch_to_register(store: ObjectStore, patches: int) -> dict[str, Any]:
    registers: list[int] = []

    async def seen(fc: int, start: int, address: int, count: int, regs: list[int],
                   values: Any) -> None:
        nonlocal registers
        registers = regs

    port = _free_port()
    server = ModbusTcpServer(SimDevice(id=1, simdata=[SimData(0, count=8, values=0,
                                                              datatype=DataType.REGISTERS)],
                                       action=seen), address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    await asyncio.sleep(0.3)
    await store.create(_kind(store, "DeviceModel"), {
        "apiVersion": API, "kind": "DeviceModel", "metadata": {"name": "valve"},
        "spec": {"properties": [{"name": "setpoint", "type": "INT"}]}}, "default")
    await store.create(_kind(store, "Device"), {
        "apiVersion": API, "kind": "Device", "metadata": {"name": "plc"},
        "spec": {"deviceModelRef": {"name": "valve"}, "nodeName": NODE,
                 "protocol": {"protocolName": "modbus",
                              "configData": {"ip": "127.0.0.1", "port": port}},
                 "properties": [{"name": "setpoint", "collectCycle": 1000,
                                 "reportCycle": 10000,
                                 "visitors": {"configData": {"register": "HoldingRegister",
                                                             "offset": 1}}}]}}, "default")
    mappers = DeviceMappers(store, NODE, lambda: None)
    mappers.start()
    await asyncio.sleep(1.0)
    kind = _kind(store, "Device")
    latencies: list[float] = []
    commits: list[float] = []
    for i in range(patches):
        value = 100 + i
        obj = copy.deepcopy(store.replica.get(DEVICES, "default", "plc"))
        assert obj is not None
        obj["spec"]["properties"][0]["desired"] = {"value": str(value)}
        asked = time.monotonic()
        await store.update(kind, obj, "default", "plc")
        acked = time.monotonic()
        commits.append((acked - asked) * 1000)
        while not (len(registers) > 1 and registers[1] == value):
            await asyncio.sleep(0.001)
            if time.monotonic() - acked > 5:
                raise RuntimeError(f"register never got {value}")
        latencies.append((time.monotonic() - asked) * 1000)
    await mappers.stop()
    await server.shutdown()  # type: ignore[no-untyped-call]
    serving.cancel()
    latencies.sort()
    return {"patches": patches, "p50_ms": round(statistics.median(latencies), 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 1),
            "max_ms": round(latencies[-1], 1),
            "commit_p50_ms": round(statistics.median(commits), 1),
            "from": "the store's update of desired called (what the API does for a "
                    "kubectl patch) to the holding register written; the update returns "
                    "once the commit is durable, and the change wakes the device's worker"}


async def _run(work: Path, quick: bool) -> dict[str, Any]:
    binary = nats_server_path()
    assert binary is not None
    port, mqtt_port = _free_port(), _free_port()
    conf = {"server_name": NODE, "host": "127.0.0.1", "port": port,
            "jetstream": {"store_dir": str(work / "js")},
            "mqtt": {"host": "127.0.0.1", "port": mqtt_port}}
    (work / "nats.json").write_text(json.dumps(conf))
    proc = subprocess.Popen([binary, "-c", str(work / "nats.json")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", mqtt_port), timeout=0.2).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        store, replica = await _store(work / "a")
        try:
            readings = await _mqtt_readings(store, f"nats://127.0.0.1:{port}", mqtt_port,
                                            devices=20 if quick else 100, collect_ms=100,
                                            seconds=3.0 if quick else 10.0)
        finally:
            replica.close()
        store, replica = await _store(work / "b")
        try:
            patch = await _patch_to_register(store, 20 if quick else 100)
        finally:
            replica.close()
    finally:
        proc.terminate()
        proc.wait(5)
    return {"mqtt_readings": readings, "desired_to_register": patch}


def run(quick: bool = False) -> dict[str, Any]:
    if nats_server_path() is None:
        return {"error": "nats-server is not installed (scripts/bootstrap-debian.sh)"}
    with tempfile.TemporaryDirectory(prefix="shoal-bench-devices-") as tmp:
        return asyncio.run(_run(Path(tmp), quick))


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
